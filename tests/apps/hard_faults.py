"""Exceptions in every hook and handler, results that cannot be sent
(tests/hardening/test_hard_faults.py).

Pool /w/** (FaultWorker, 2 workers) has a route per fault; pool /setup/**
(SetupWorker, 2 workers) has a worker 1 whose setup() always raises.
Dispatcher hooks raise when a request asks for it (header X-Boom, a path,
a response header) or when armed through a sync route. HARD_FAULTS_STATIC
is mounted at /files/ (on_static_served always raises).
"""
import hashlib
import os
import time

import uhttp.workers as _workers
from status_app import StatusDispatcher

HUGE = 20 * 1024 * 1024


class Unsendable:
    def __repr__(self):
        return '<Unsendable>'


class FaultWorker(_workers.Worker):
    def setup(self):
        self.idle_faults = 0
        self.subscribers = {}
        self.pipes = []
        self.configs = 0

    # -- plain answers ------------------------------------------------------

    @_workers.api('/w/ok', 'GET')
    def ok(self, request):
        return {'ok': True, 'worker': self.worker_id, 'pid': os.getpid()}

    @_workers.api('/w/huge', 'GET')
    def huge(self, request):
        block = hashlib.sha256(b'seed').digest() * 2048  # 64 KiB
        data = bytearray(block * (HUGE // len(block)))
        data[12345] ^= 0xFF
        data[-1] ^= 0x55
        data = bytes(data)
        return data, 200, {'X-Sha256': hashlib.sha256(data).hexdigest()}

    @_workers.api('/w/on-response', 'GET')
    def for_on_response(self, request):
        return {'ok': True}, 200, {'X-Boom': 'on_response'}

    @_workers.api('/w/removed-raise', 'GET')
    def for_on_removed(self, request):
        return {'ok': True}

    @_workers.api('/w/accepted-raise', 'GET')
    def for_on_accepted(self, request):
        return {'ok': True, 'context': request.context}

    @_workers.api('/w/context-unsendable', 'GET')
    def for_context(self, request):
        return {'ok': True, 'context': repr(request.context)}

    # -- raising ------------------------------------------------------------

    @_workers.api('/w/raise', 'GET')
    def raise_(self, request):
        raise RuntimeError('boom-handler')

    @_workers.api('/w/raise-named/{name}', 'GET')
    def raise_named(self, request):
        raise ValueError('boom-named')

    @_workers.api('/w/check-raise', 'GET')
    def check_raise(self, request):
        return {'unreachable': True}

    @_workers.api('/w/error-hook-raise', 'GET')
    def error_hook_raise(self, request):
        raise ValueError('first failure')

    def do_check(self, request):
        if request.path == '/w/check-raise':
            raise RuntimeError('boom-worker-do-check')
        return None

    def on_request_error(self, request, err):
        if request.path == '/w/error-hook-raise':
            raise RuntimeError('boom-on-request-error')
        return super().on_request_error(request, err)

    @_workers.api('/w/die', 'GET')
    def die(self, request):
        os._exit(7)

    # -- results that cannot be sent ----------------------------------------

    @_workers.api('/w/result/{kind}', 'GET')
    def bad_result(self, request):
        kind = request.path_params['kind']
        if kind == 'set':
            return {1, 2, 3}
        if kind == 'lambda':
            return lambda: None
        if kind == 'object':
            return Unsendable()
        if kind == 'nested-object':
            return {'a': [1, {'b': Unsendable()}]}
        if kind == 'tuple-key':
            return {(1, 2): 'x'}
        if kind == 'circular':
            data = {}
            data['self'] = data
            return data
        if kind == 'generator':
            return (index for index in range(3))
        if kind == 'set-with-status':
            return {1}, 201
        if kind == 'response-set':
            return _workers.Response(data={1, 2})
        if kind == 'response-bad-status':
            return _workers.Response(data={'a': 1}, status=1000)
        if kind == 'bad-status':
            return {'a': 1}, 99
        if kind == 'bad-headers':
            return {'a': 1}, 200, 42
        if kind == 'deferred-set':
            request.respond({1, 2})
            return _workers.DEFERRED
        if kind == 'deferred-lambda':
            request.respond(lambda: None)
            return _workers.DEFERRED
        if kind == 'ndjson-object':
            request.response_ndjson()
            request.send_ndjson({'first': True})
            try:
                request.send_ndjson(Unsendable())
            finally:
                request.response_stream_end()
            return _workers.DEFERRED
        raise KeyError(kind)

    # -- hooks without a request ----------------------------------------------

    @_workers.api('/w/arm-idle', 'GET')
    def arm_idle(self, request):
        self.idle_faults = 3
        return {'armed': self.worker_id}

    def on_idle(self):
        if self.idle_faults > 0:
            self.idle_faults -= 1
            raise RuntimeError(f'boom-worker-on-idle-{self.worker_id}')

    def on_config(self, config):
        self.configs += 1
        if config.get('boom'):
            raise RuntimeError('boom-on-config')

    @_workers.api('/w/configs', 'GET')
    def configs_seen(self, request):
        return {'configs': self.configs, 'worker': self.worker_id}

    @_workers.api('/w/sse', 'GET')
    def sse(self, request):
        request.response_stream()
        request.send_event(data='hello', event='hello')
        self.subscribers[request.request_id] = request
        return _workers.DEFERRED

    @_workers.api('/w/subs', 'GET')
    def subs(self, request):
        return {'subscribers': len(self.subscribers)}

    def on_disconnect(self, request_id):
        self.subscribers.pop(request_id, None)
        raise RuntimeError('boom-on-disconnect')

    @_workers.api('/w/fd-reader', 'GET')
    def fd_reader(self, request):
        read_fd, write_fd = os.pipe()
        self.pipes.append((read_fd, write_fd))

        def callback(fd):
            os.read(fd, 1)
            raise RuntimeError('boom-worker-fd-reader')

        self.register_reader(read_fd, callback)
        os.write(write_fd, b'x')
        return {'registered': read_fd}

    @_workers.api('/w/fd-writer', 'GET')
    def fd_writer(self, request):
        read_fd, write_fd = os.pipe()
        self.pipes.append((read_fd, write_fd))

        def callback(fd):
            self.unregister_writer(fd)
            raise RuntimeError('boom-worker-fd-writer')

        self.register_writer(write_fd, callback)
        return {'registered': write_fd}

    @_workers.api('/w/forward', 'GET')
    def forward_boom(self, request):
        self.forward('/boom/forward', {'a': 1})
        return {'forwarded': True}

    @_workers.api('/w/forward-unpicklable', 'GET')
    def forward_unpicklable(self, request):
        self.forward('/w/ok', lambda: None)
        return {'forwarded': True}

    @_workers.api('/w/log-marker', 'GET')
    def log_marker(self, request):
        self.log.error('BOOM-LOG marker from worker %d', self.worker_id)
        return {'logged': True}


class SetupWorker(_workers.Worker):
    def setup(self):
        if self.worker_id == 1:
            raise RuntimeError('boom-setup-worker-1')

    @_workers.api('/setup/ok', 'GET')
    def ok(self, request):
        return {'worker': self.worker_id}


class App(StatusDispatcher):
    SELECT_TIMEOUT = 0.25

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.idle_faults = 0
        self.log_raise_until = 0.0
        self.pipes = []

    def do_check(self, client):
        if client.headers.get('x-boom') == 'do_check':
            raise RuntimeError('boom-dispatcher-do-check')

    def do_check_sync(self, client):
        if client.headers.get('x-boom') == 'do_check_sync':
            raise RuntimeError('boom-do-check-sync')

    def on_request_accepted(self, request_id, client, pool):
        if client.path == '/w/accepted-raise':
            raise RuntimeError('boom-on-request-accepted')
        if client.path == '/w/context-unsendable':
            return lambda: None
        return {'path': client.path}

    def on_response(self, response, pending):
        if response.headers.get('X-Boom') == 'on_response':
            raise RuntimeError('boom-on-response')

    def on_pending_removed(self, request_id, pending, reason):
        if isinstance(pending.context, dict) and (
                pending.context.get('path') == '/w/removed-raise'):
            raise RuntimeError('boom-on-pending-removed')

    def on_static_served(self, client, file_path, status):
        raise RuntimeError('boom-on-static-served')

    def on_idle(self):
        if self.idle_faults > 0:
            self.idle_faults -= 1
            raise RuntimeError('boom-dispatcher-on-idle')

    def on_forward(self, route, data):
        if route.startswith('/boom'):
            raise RuntimeError('boom-on-forward')
        return super().on_forward(route, data)

    def on_worker_died(self, pool, worker_id, reason, exitcode, victims):
        if exitcode == 7:
            raise RuntimeError('boom-on-worker-died')
        return super().on_worker_died(pool, worker_id, reason, exitcode, victims)

    def on_log(self, name, level, message):
        if 'BOOM-LOG' in message or time.monotonic() < self.log_raise_until:
            raise RuntimeError('boom-on-log')
        super().on_log(name, level, message)

    @_workers.sync('/s/raise')
    def sync_raise(self, client, path_params):
        raise RuntimeError('boom-sync-handler')

    @_workers.sync('/s/no-answer')
    def sync_no_answer(self, client, path_params):
        return None

    @_workers.sync('/s/ok')
    def sync_ok(self, client, path_params):
        client.respond({'ok': True})


    @_workers.sync('/s/arm-idle')
    def arm_idle(self, client, path_params):
        self.idle_faults = 2
        client.respond({'armed': True})

    @_workers.sync('/s/arm-log')
    def arm_log(self, client, path_params):
        self.log_raise_until = time.monotonic() + 1.5
        client.respond({'armed': True})

    @_workers.sync('/s/config')
    def send_config(self, client, path_params):
        boom = (client.query or {}).get('boom') == '1'
        for pool in self._pools:
            if pool.name == 'FaultWorker':
                pool.send_config({'boom': boom, 'at': time.time()})
        client.respond({'sent': True})

    @_workers.sync('/s/fd-reader')
    def fd_reader(self, client, path_params):
        read_fd, write_fd = os.pipe()
        self.pipes.append((read_fd, write_fd))

        def callback(fd):
            os.read(fd, 1)
            raise RuntimeError('boom-dispatcher-fd-reader')

        self.register_reader(read_fd, callback)
        os.write(write_fd, b'x')
        client.respond({'registered': read_fd})

    @_workers.sync('/_status')
    def status(self, client, path_params):
        client.respond({
            'pending': len(self._pending),
            'pools': {pool.name: [w['alive'] for w in pool.status()['workers']]
                      for pool in self._pools}})


if __name__ == '__main__':
    App(port=0, address='127.0.0.1',
        static_routes={'/files/': os.environ['HARD_FAULTS_STATIC']},
        pools=[
            _workers.WorkerPool(FaultWorker, num_workers=2, routes=['/w/**'],
                                heartbeat_interval=0.2, log_level=_workers.LOG_INFO),
            _workers.WorkerPool(SetupWorker, num_workers=2, routes=['/setup/**'],
                                max_restarts=1000, heartbeat_interval=0.2),
        ]).run()
