"""Pool policies: no live worker (503 + Retry-After), recovery_interval,
sticky degraded, permanent_failure_exitcode (parked workers).

Pools:
  /broken/**  BrokenWorker: setup() always fails (restart back-off grows)
  /flaky/**   FlakyWorker: max_restarts=2, recovery_interval=2
  /sticky/**  StickyWorker: max_restarts=2, no recovery_interval
  /park/**    ParkWorker x2: permanent_failure_exitcode=42, max_restarts=2
  /ok/**      HealthyWorker x2
GET /_status: every pool's status() plus pool.alive_count / parked_count.
"""
import os
import signal

import uhttp.workers as _workers


class BrokenWorker(_workers.Worker):
    def setup(self):
        raise RuntimeError('setup always fails')

    @_workers.api('/broken/ping', 'GET')
    def ping(self, request):
        return {'unreachable': True}


class _Dying(_workers.Worker):
    def _ping(self, request):
        return {'pid': os.getpid()}

    def _die(self, request):
        os.kill(os.getpid(), signal.SIGKILL)


class FlakyWorker(_Dying):
    @_workers.api('/flaky/ping', 'GET')
    def ping(self, request):
        return self._ping(request)

    @_workers.api('/flaky/die', 'GET')
    def die(self, request):
        self._die(request)


class StickyWorker(_Dying):
    @_workers.api('/sticky/ping', 'GET')
    def ping(self, request):
        return self._ping(request)

    @_workers.api('/sticky/die', 'GET')
    def die(self, request):
        self._die(request)


class ParkWorker(_workers.Worker):
    @_workers.api('/park/ping', 'GET')
    def ping(self, request):
        return {'pid': os.getpid()}

    @_workers.api('/park/exit/{code:int}', 'GET')
    def exit_with(self, request):
        os._exit(request.path_params['code'])


class HealthyWorker(_workers.Worker):
    @_workers.api('/ok/ping', 'GET')
    def ping(self, request):
        return {'pid': os.getpid()}


class PolicyDispatcher(_workers.Dispatcher):
    @_workers.sync('/_status')
    def status(self, client, path_params):
        client.respond({
            'pools': {pool.name: pool.status() for pool in self._pools},
            'alive': {pool.name: pool.alive_count for pool in self._pools},
            'parked': {pool.name: pool.parked_count for pool in self._pools},
        })


if __name__ == '__main__':
    PolicyDispatcher(port=0, address='127.0.0.1', pools=[
        _workers.WorkerPool(BrokenWorker, routes=['/broken/**'],
                            max_restarts=1000),
        _workers.WorkerPool(FlakyWorker, routes=['/flaky/**'], max_restarts=2,
                            restart_window=60, recovery_interval=2),
        _workers.WorkerPool(StickyWorker, routes=['/sticky/**'], max_restarts=2,
                            restart_window=60),
        _workers.WorkerPool(ParkWorker, num_workers=2, routes=['/park/**'],
                            max_restarts=2, restart_window=60,
                            permanent_failure_exitcode=42),
        _workers.WorkerPool(HealthyWorker, num_workers=2, routes=['/ok/**']),
    ]).run()
