"""Deferred responses answered later: by another request's handler, by
on_idle(), by the callback of a pipe or a socketpair the worker writes to
itself; one never answered (504 after the pool timeout) and one kept alive
with keep_alive() past the timeout.

Pools:
  DeferWorker  one worker, routes /api/**, timeout 3 s, heartbeat 0.2 s
  KeepWorker   one worker, routes /keep/**, timeout 2 s, heartbeat 0.2 s
"""
import os
import socket
import time

import uhttp.workers as _workers
from status_app import StatusDispatcher


class DeferWorker(_workers.Worker):
    def setup(self):
        self.waiting = {}       # key -> request, answered by /api/complete
        self.idle_waiting = {}  # key -> request, answered by on_idle()
        self.fd_waiting = {}    # key -> request, answered by a fd callback
        self.disconnected = []
        self.idle_calls = 0
        self.pipe_r, self.pipe_w = os.pipe()
        os.set_blocking(self.pipe_r, False)
        self.register_reader(self.pipe_r, self.on_pipe)
        self.sock_a, self.sock_b = socket.socketpair()
        self.sock_b.setblocking(False)
        self.register_reader(self.sock_b, self.on_socket)

    # -- answered by another request ---------------------------------------

    @_workers.api('/api/wait/{key}', 'GET')
    def wait(self, request):
        self.waiting[request.path_params['key']] = request
        return _workers.DEFERRED

    @_workers.api('/api/complete/{key}', 'POST')
    def complete(self, request):
        key = request.path_params['key']
        target = self.waiting.pop(key, None)
        if target is None:
            return {'error': 'unknown key', 'key': key}, 404
        spec = request.data or {}
        sent = target.respond(
            data=spec.get('data'), status=spec.get('status', 200),
            headers=spec.get('headers'), cookies=spec.get('cookies'))
        result = {'completed': key, 'sent': sent}
        if spec.get('twice'):
            result['again'] = target.respond(data='second answer')
        return result

    @_workers.api('/api/ping', 'GET')
    def ping(self, request):
        return {'worker': self.worker_id, 'pid': self.pid,
                'waiting': sorted(self.waiting),
                'ids': {key: req.request_id for key, req in self.waiting.items()},
                'idle_calls': self.idle_calls,
                'disconnected': self.disconnected}

    # -- answered from on_idle() -------------------------------------------

    @_workers.api('/api/via-idle/{key}', 'GET')
    def via_idle(self, request):
        self.idle_waiting[request.path_params['key']] = (request, self.idle_calls)
        return _workers.DEFERRED

    def on_idle(self):
        self.idle_calls += 1
        for key, (request, calls) in list(self.idle_waiting.items()):
            del self.idle_waiting[key]
            request.respond(
                data={'by': 'on_idle', 'key': key,
                      'idle_calls_before': calls,
                      'idle_calls_now': self.idle_calls},
                status=202, headers={'X-Answered-By': 'on_idle'})

    # -- answered from fd callbacks ----------------------------------------

    @_workers.api('/api/via-pipe/{key}', 'GET')
    def via_pipe(self, request):
        key = request.path_params['key']
        self.fd_waiting[key] = request
        os.write(self.pipe_w, key.encode() + b'\n')
        return _workers.DEFERRED

    @_workers.api('/api/via-socket/{key}', 'GET')
    def via_socket(self, request):
        key = request.path_params['key']
        self.fd_waiting[key] = request
        self.sock_a.sendall(key.encode() + b'\n')
        return _workers.DEFERRED

    def _answer_lines(self, data, source):
        for line in data.decode().split('\n'):
            if not line:
                continue
            request = self.fd_waiting.pop(line, None)
            if request is not None:
                request.respond(data={'by': source, 'key': line},
                                cookies={'source': source})

    def on_pipe(self, fd):
        try:
            data = os.read(fd, 4096)
        except BlockingIOError:
            return
        self._answer_lines(data, 'pipe')

    def on_socket(self, sock):
        try:
            data = sock.recv(4096)
        except BlockingIOError:
            return
        self._answer_lines(data, 'socketpair')

    # -- never answered ----------------------------------------------------

    @_workers.api('/api/forgotten/{key}', 'GET')
    def forgotten(self, request):
        self.waiting[request.path_params['key']] = request
        return _workers.DEFERRED

    def on_disconnect(self, request_id):
        self.disconnected.append(request_id)


class KeepWorker(_workers.Worker):
    """Answers /keep/slow after `secs`, calling keep_alive() meanwhile."""

    def setup(self):
        self.kept = []

    @_workers.api('/keep/slow', 'GET')
    def slow(self, request):
        secs = float((request.query or {}).get('secs', '4'))
        self.kept.append((request, time.monotonic(), secs))
        return _workers.DEFERRED

    @_workers.api('/keep/busy', 'GET')
    def busy(self, request):
        """Blocks the worker for `secs`, calling keep_alive() meanwhile."""
        secs = float((request.query or {}).get('secs', '3'))
        start = time.monotonic()
        while time.monotonic() - start < secs:
            time.sleep(0.05)
            self.keep_alive()
        return {'by': 'busy', 'waited': round(time.monotonic() - start, 3)}

    def on_idle(self):
        now = time.monotonic()
        for item in list(self.kept):
            request, started, secs = item
            if now - started >= secs:
                self.kept.remove(item)
                request.respond(data={'by': 'keep_alive',
                                      'waited': round(now - started, 3)})
        if self.kept:
            self.keep_alive()


class App(StatusDispatcher):
    """Serves /probe and /_status (status_app.py)."""


if __name__ == '__main__':
    App(port=0, address='127.0.0.1', pools=[
        _workers.WorkerPool(DeferWorker, num_workers=1, routes=['/api/**'],
                            timeout=3, heartbeat_interval=0.2),
        _workers.WorkerPool(KeepWorker, num_workers=1, routes=['/keep/**'],
                            timeout=2, heartbeat_interval=0.2),
    ]).run()
