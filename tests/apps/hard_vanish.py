"""Clients that vanish mid-request or mid-stream
(tests/hardening/test_hard_vanish.py).

Pool /api/stream/** (one worker) keeps SSE and NDJSON subscribers fed from
on_idle() every 0.1 s and forgets them in on_disconnect(); pool /api/**
(two workers) has echo, slow and big routes. /_status shows the
dispatcher's pending table, open streams and connections.
"""
import time

import uhttp.workers as _workers
from status_app import StatusDispatcher


class StreamWorker(_workers.Worker):
    def setup(self):
        self.subscribers = {}
        self.disconnects = 0
        self.tick = 0

    @_workers.api('/api/stream/sse', 'GET')
    def sse(self, request):
        request.response_stream()
        request.send_event(data={'hello': request.request_id}, event='hello')
        self.subscribers[request.request_id] = (request, 'sse')
        return _workers.DEFERRED

    @_workers.api('/api/stream/ndjson', 'GET')
    def ndjson(self, request):
        request.response_ndjson()
        request.send_ndjson({'hello': request.request_id})
        self.subscribers[request.request_id] = (request, 'ndjson')
        return _workers.DEFERRED

    @_workers.api('/api/stream/subs', 'GET')
    def subs(self, request):
        return {'subscribers': len(self.subscribers),
                'disconnects': self.disconnects}

    def on_idle(self):
        self.tick += 1
        for request, kind in list(self.subscribers.values()):
            if kind == 'ndjson':
                request.send_ndjson({'tick': self.tick})
            else:
                request.send_event(data={'tick': self.tick}, event='tick')

    def on_disconnect(self, request_id):
        self.disconnects += 1
        self.subscribers.pop(request_id, None)


class WorkWorker(_workers.Worker):
    def setup(self):
        self.big = b'z' * (2 * 1024 * 1024)

    @_workers.api('/api/echo', 'POST')
    def echo(self, request):
        data = request.data
        return {'size': len(data) if isinstance(data, (bytes, bytearray)) else None}

    @_workers.api('/api/slow', 'GET')
    def slow(self, request):
        time.sleep(0.3)
        return {'slow': True}

    @_workers.api('/api/big', 'GET')
    def big_answer(self, request):
        return self.big

    @_workers.api('/api/probe', 'GET')
    def probe(self, request):
        return {'ok': True}


class App(StatusDispatcher):
    """Serves /probe and /_status (status_app.py)."""


if __name__ == '__main__':
    App(port=0, address='127.0.0.1', pools=[
        _workers.WorkerPool(StreamWorker, num_workers=1, routes=['/api/stream/**'],
                            heartbeat_interval=0.1),
        _workers.WorkerPool(WorkWorker, num_workers=2, routes=['/api/**']),
    ]).run()
