"""Supervision app: request timeouts (504) and keep_alive(), for plain and
DEFERRED requests.

KeepWorker (/api/**): timeout=1, stuck_timeout=1.5.
NoKeepWorker (/nk/**): defers and never calls keep_alive(); it records
on_disconnect() calls. PausedWorker (/pz/**): /pz/pause pauses it.
"""
import os
import time

import uhttp.workers as _workers
from status_app import StatusDispatcher


class KeepWorker(_workers.Worker):
    def setup(self):
        self.waiting = []   # (due, request)

    @_workers.api('/api/sleep/{s:float}', 'GET')
    def sleep(self, request):
        time.sleep(request.path_params['s'])
        return {'pid': os.getpid(), 'request_id': request.request_id}

    @_workers.api('/api/busy_keepalive/{s:float}', 'GET')
    def busy_keepalive(self, request):
        end = time.monotonic() + request.path_params['s']
        while time.monotonic() < end:
            time.sleep(0.05)
            self.keep_alive()
        return {'pid': os.getpid(), 'request_id': request.request_id}

    @_workers.api('/api/deferred/{s:float}', 'GET')
    def deferred(self, request):
        self.waiting.append((time.monotonic() + request.path_params['s'],
                              request))
        return _workers.DEFERRED

    def on_idle(self):
        if not self.waiting:
            return
        self.keep_alive()
        now = time.monotonic()
        due = [item for item in self.waiting if item[0] <= now]
        self.waiting = [item for item in self.waiting if item[0] > now]
        for _, request in due:
            request.respond({'pid': os.getpid(), 'deferred': True,
                             'request_id': request.request_id})


class NoKeepWorker(_workers.Worker):
    def setup(self):
        self.held = {}
        self.disconnected = []

    @_workers.api('/nk/deferred', 'GET')
    def deferred(self, request):
        self.held[request.request_id] = request
        return _workers.DEFERRED

    @_workers.api('/nk/disconnected', 'GET')
    def disconnected_ids(self, request):
        return {'disconnected': self.disconnected}

    def on_disconnect(self, request_id):
        self.held.pop(request_id, None)
        self.disconnected.append(request_id)


class PausedWorker(_workers.Worker):
    @_workers.api('/pz/pause', 'GET')
    def pause_it(self, request):
        self.pause()
        return {'paused': os.getpid()}

    @_workers.api('/pz/ok', 'GET')
    def ok(self, request):
        return {'pid': os.getpid()}


class App(StatusDispatcher):
    """Serves /probe and /_status (status_app.py); /block/{s} holds the
    dispatcher's loop for s seconds (a sync handler that blocks)."""

    @_workers.sync('/block/{s:float}')
    def block(self, client, path_params):
        time.sleep(path_params['s'])
        client.respond({'blocked': path_params['s']})


if __name__ == '__main__':
    App(port=0, address='127.0.0.1', pools=[
        _workers.WorkerPool(
            KeepWorker, num_workers=1, routes=['/api/**'], timeout=1,
            stuck_timeout=1.5, heartbeat_interval=0.2),
        _workers.WorkerPool(
            NoKeepWorker, num_workers=1, routes=['/nk/**'], timeout=1,
            stuck_timeout=10, heartbeat_interval=0.2),
        _workers.WorkerPool(
            PausedWorker, num_workers=1, routes=['/pz/**'], timeout=1),
    ]).run()
