"""Overload (tests/hardening/test_hard_overload.py): max_pending from
HARD_MAX_PENDING (default 20000), max_waiting_clients from HARD_MAX_CLIENTS
(default 40000), access_log when HARD_ACCESS_LOG is set, an open file limit
of HARD_NOFILE (soft and hard) when set, a fast route and a slow one."""
import os
import time

import uhttp.workers as _workers
from status_app import StatusDispatcher


class FastWorker(_workers.Worker):
    @_workers.api('/api/n/{n:int}', 'GET')
    def number(self, request):
        return {'n': request.path_params['n']}

    @_workers.api('/api/slow', 'GET')
    def slow(self, request):
        time.sleep(float((request.query or {}).get('s', '2')))
        return {'slow': True}

    @_workers.api('/api/probe', 'GET')
    def probe(self, request):
        return {'ok': True}


class App(StatusDispatcher):
    """Serves /probe and /_status (status_app.py)."""


if __name__ == '__main__':
    if os.environ.get('HARD_NOFILE'):
        import resource
        limit = int(os.environ['HARD_NOFILE'])
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))
    App(port=0, address='127.0.0.1',
        max_pending=int(os.environ.get('HARD_MAX_PENDING', '20000')),
        max_waiting_clients=int(os.environ.get('HARD_MAX_CLIENTS', '40000')),
        access_log=bool(os.environ.get('HARD_ACCESS_LOG')),
        pools=[_workers.WorkerPool(FastWorker, num_workers=2, routes=['/api/**'],
                                   queue_warning=0)]).run()
