"""Zero-downtime operations: a pool configured from the environment
(RETIRE_WORKERS, RETIRE_MAX_REQUESTS, RETIRE_JITTER, RETIRE_RSS_MB,
RETIRE_TIMEOUT, RETIRE_MAX_RESTARTS; setup() fails while the file RETIRE_FAIL_FLAG exists;
teardown() takes RETIRE_TEARDOWN seconds),
handlers that are fast, slow, deferred, streaming and leaking, and sync
routes to reload and resize."""

import os
import time

import uhttp.workers as _workers
from status_app import StatusDispatcher


def number(name, default=None, kind=int):
    value = os.environ.get(name)
    return default if value in (None, '') else kind(value)


class ItemWorker(_workers.Worker):
    def setup(self):
        flag = os.environ.get('RETIRE_FAIL_FLAG')
        if flag and os.path.exists(flag):  # a replacement that cannot start
            raise RuntimeError('the database is unreachable')
        self.leak = []
        self.waiting = []
        self.streams = {}

    @_workers.api('/api/pid', 'GET')
    def pid(self, request):
        return {'pid': os.getpid(), 'worker': self.worker_id}

    @_workers.api('/api/slow/{s:float}', 'GET')
    def slow(self, request):
        time.sleep(request.path_params['s'])
        return {'pid': os.getpid(), 'slept': request.path_params['s']}

    @_workers.api('/api/later/{s:float}', 'GET')
    def later(self, request):
        self.waiting.append((time.monotonic() + request.path_params['s'],
                             request))
        return _workers.DEFERRED

    @_workers.api('/api/leak/{mb:int}', 'GET')
    def grow(self, request):
        self.leak.append(bytearray(request.path_params['mb'] * 1024 * 1024))
        for block in self.leak:
            block[::4096] = b'x' * len(block[::4096])   # really resident
        return {'pid': os.getpid(), 'held_mb': len(self.leak) *
                request.path_params['mb']}

    @_workers.api('/api/stream/{n:int}', 'GET')
    def stream(self, request):
        request.response_stream()
        self.streams[request.request_id] = [request, request.path_params['n']]
        return _workers.DEFERRED

    def on_idle(self):
        now = time.monotonic()
        for due, request in list(self.waiting):
            if due <= now:
                self.waiting.remove((due, request))
                request.respond({'pid': os.getpid(), 'deferred': True})
        for request_id, entry in list(self.streams.items()):
            request, left = entry
            request.send_event(data={'pid': os.getpid(), 'left': left})
            entry[1] -= 1
            if entry[1] <= 0:
                request.response_stream_end()
                del self.streams[request_id]

    def on_disconnect(self, request_id):
        self.streams.pop(request_id, None)

    def teardown(self):
        time.sleep(number('RETIRE_TEARDOWN', 0, float))  # slow to stop


class App(StatusDispatcher):
    @_workers.sync('/_reload', 'POST')
    def do_reload(self, client, path_params):
        _workers.Dispatcher.reload(self)
        client.respond({'reloading': True})

    @_workers.sync('/_resize/{n:int}', 'POST')
    def do_resize(self, client, path_params):
        self._pools[0].resize(path_params['n'])
        client.respond({'workers': path_params['n']})


if __name__ == '__main__':
    App(port=0, address='127.0.0.1', pools=[_workers.WorkerPool(
        ItemWorker, num_workers=number('RETIRE_WORKERS', 2),
        routes=['/api/**'], heartbeat_interval=0.1, timeout=20,
        max_requests=number('RETIRE_MAX_REQUESTS'),
        max_restarts=number('RETIRE_MAX_RESTARTS', 10),
        max_requests_jitter=number('RETIRE_JITTER', 0),
        max_worker_rss_mb=number('RETIRE_RSS_MB', None, float),
        retire_timeout=number('RETIRE_TIMEOUT', 30, float),
        log_level=_workers.LOG_INFO)]).run()
