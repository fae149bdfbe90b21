"""Dispatcher hooks: do_check_sync, on_request_accepted, on_pending_removed,
on_worker_died, on_forward (with Worker.forward).

Environment:
  EXT_RECORD  file that on_pending_removed() appends one JSON line to per
              call: {"id": request_id, "reason": reason, "path": path}
  EXT_GATE    file whose existence releases GET /sink/block

GET /_ctl?name=value sets a switch (see `Switches`); GET /_state reports
what the hooks saw. Pools:
  /h/**     HookWorker, 2 workers, timeout 30
  /slow/**  SlowWorker, 1 worker, timeout 1 (for 504s)
  /c/**     CrashWorker, 1 worker, timeout 30 (dies on demand)
  /fw/**    ForwardWorker, 1 worker (forwards to /sink)
  /sink/**  SinkWorker, 1 worker
"""
import json
import os
import signal
import time

import uhttp.workers as _workers

RECORD = os.environ.get('EXT_RECORD')
GATE = os.environ.get('EXT_GATE')


class HookWorker(_workers.Worker):
    def setup(self):
        self.streams = {}

    @_workers.api('/h/echo')
    def echo(self, request):
        return {'context': request.context, 'request_id': request.request_id,
                'pid': os.getpid()}

    @_workers.api('/h/hang', 'GET')
    def hang(self, request):
        return _workers.DEFERRED

    @_workers.api('/h/stream-end', 'GET')
    def stream_end(self, request):
        request.response_ndjson()
        request.send_ndjson({'id': request.request_id})
        request.response_stream_end()
        return _workers.DEFERRED

    @_workers.api('/h/stream-open', 'GET')
    def stream_open(self, request):
        request.response_ndjson()
        request.send_ndjson({'id': request.request_id})
        self.streams[request.request_id] = request
        return _workers.DEFERRED

    def on_disconnect(self, request_id):
        self.streams.pop(request_id, None)

    @_workers.api('/h/die', 'GET')
    def die(self, request):
        os.kill(os.getpid(), signal.SIGKILL)


class SlowWorker(_workers.Worker):
    @_workers.api('/slow/never', 'GET')
    def never(self, request):
        return _workers.DEFERRED


class CrashWorker(_workers.Worker):
    def setup(self):
        self.streams = {}

    @_workers.api('/c/ok', 'GET')
    def ok(self, request):
        return {'pid': os.getpid()}

    @_workers.api('/c/hold', 'GET')
    def hold(self, request):
        return _workers.DEFERRED

    @_workers.api('/c/stream', 'GET')
    def stream(self, request):
        request.response_ndjson()
        request.send_ndjson({'id': request.request_id})
        self.streams[request.request_id] = request
        return _workers.DEFERRED

    @_workers.api('/c/die', 'GET')
    def die(self, request):
        os.kill(os.getpid(), signal.SIGKILL)


class ForwardWorker(_workers.Worker):
    @_workers.api('/fw/send', 'POST')
    def send(self, request):
        self.forward('/sink/save', {'payload': request.data, 'pid': os.getpid()})
        return {'sent': True}

    @_workers.api('/fw/alias', 'POST')
    def alias(self, request):
        self.forward('/alias/anything', {'payload': request.data})
        return {'sent': True}

    @_workers.api('/fw/burst', 'POST')
    def burst(self, request):
        count = request.data['n']
        start = time.monotonic()
        for index in range(count):
            self.forward('/sink/save', {'burst': index})
        return {'sent': count, 'seconds': time.monotonic() - start}


class SinkWorker(_workers.Worker):
    def setup(self):
        self.saved = []

    @_workers.api('/sink/save', 'POST')
    def save(self, request):
        self.saved.append({'request_id': request.request_id,
                           'data': request.data})
        return {'saved': len(self.saved)}

    @_workers.api('/sink/list', 'GET')
    def list_saved(self, request):
        return {'saved': self.saved}

    @_workers.api('/sink/block', 'GET')
    def block(self, request):
        deadline = time.monotonic() + 20
        while not os.path.exists(GATE) and time.monotonic() < deadline:
            time.sleep(0.02)
        return {'released': os.path.exists(GATE)}


class HookDispatcher(_workers.Dispatcher):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.switches = {'removed': 'ok', 'died': 'default', 'forward': 'ok'}
        self.paths = {}
        self.accepted = []
        self.died = []
        self.forwards = []
        self.guarded_calls = 0

    # -- hooks -------------------------------------------------------------

    def do_check_sync(self, client):
        if not client.path.startswith('/guarded/'):
            return
        token = client.headers.get('x-token')
        if token is None:
            client.respond({'error': 'no token'}, status=401)
            raise _workers.RejectRequest()
        if token == 'bad':
            raise _workers.RejectRequest({'error': 'bad token'}, 403)
        if token == 'boom':
            raise RuntimeError('do_check_sync exploded')

    def on_request_accepted(self, request_id, client, pool):
        self.paths[request_id] = client.path
        self.accepted.append({'id': request_id, 'path': client.path})
        del self.accepted[:-100]
        if client.headers.get('x-ctx') == 'raise':
            raise RuntimeError('on_request_accepted exploded')
        return {'rid': request_id, 'pool': pool.name,
                'user': client.headers.get('x-user')}

    def on_pending_removed(self, request_id, pending, reason):
        line = json.dumps({'id': request_id, 'reason': reason,
                           'path': self.paths.pop(request_id, None)})
        with open(RECORD, 'a', encoding='utf-8') as file:
            file.write(line + '\n')
        if self.switches['removed'] == 'raise':
            raise RuntimeError('on_pending_removed exploded')

    def on_worker_died(self, pool, worker_id, reason, exitcode, victims):
        mode = self.switches['died']
        self.died.append({
            'pool': pool.name, 'worker_id': worker_id, 'reason': reason,
            'exitcode': exitcode, 'mode': mode,
            'victims': sorted(request_id for request_id, _ in victims),
            'victim_pools': sorted({pending.pool.name for _, pending in victims}),
        })
        if mode == 'raise':
            raise RuntimeError('on_worker_died exploded')
        if mode == 'custom':
            for request_id, pending in victims:
                pending.client.respond(
                    {'custom': 'worker gone', 'request_id': request_id},
                    status=503)
            return
        super().on_worker_died(pool, worker_id, reason, exitcode, victims)

    def on_forward(self, route, data):
        self.forwards.append({'route': route, 'data': data})
        del self.forwards[:-20]
        if self.switches['forward'] == 'raise':
            raise RuntimeError('on_forward exploded')
        if route.startswith('/alias/'):
            route = '/sink/save'
        super().on_forward(route, data)

    # -- sync routes ---------------------------------------------------------

    @_workers.sync('/guarded/info')
    def guarded(self, client, path_params):
        self.guarded_calls += 1
        client.respond({'guarded': True, 'calls': self.guarded_calls})

    @_workers.sync('/open/info')
    def open_info(self, client, path_params):
        client.respond({'open': True})

    @_workers.sync('/_ctl')
    def control(self, client, path_params):
        for name, value in (client.query or {}).items():
            if name in self.switches:
                self.switches[name] = value
        client.respond(self.switches)

    @_workers.sync('/_state')
    def state(self, client, path_params):
        client.respond({
            'pending': len(self._pending),
            'pending_ids': sorted(self._pending),
            'accepted': self.accepted,
            'died': self.died,
            'forwards': self.forwards,
            'guarded_calls': self.guarded_calls,
            'pools': [pool.status() for pool in self._pools],
        })


if __name__ == '__main__':
    HookDispatcher(
        port=0, address='127.0.0.1', max_pending=30, shutdown_timeout=1,
        pools=[
            _workers.WorkerPool(HookWorker, num_workers=2, routes=['/h/**'],
                                max_restarts=100),
            _workers.WorkerPool(SlowWorker, num_workers=1, routes=['/slow/**'],
                                timeout=1),
            _workers.WorkerPool(CrashWorker, num_workers=1, routes=['/c/**'],
                                max_restarts=100),
            _workers.WorkerPool(ForwardWorker, num_workers=1, routes=['/fw/**']),
            _workers.WorkerPool(SinkWorker, num_workers=1, routes=['/sink/**']),
        ]).run()
