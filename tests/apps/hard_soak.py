"""Soak target (tests/soak/test_soak.py): keep-alive request load plus SSE
subscribers that come and go while events are published.

Pool /api/stream/** (one worker) holds the subscribers and publishes to
them; pool /api/** (two workers) answers /api/n/<n>. Sync routes /probe
and /_status (pending table, streams, connections).
"""
import uhttp.workers as _workers
from status_app import StatusDispatcher


class StreamWorker(_workers.Worker):
    def setup(self):
        self.subscribers = {}
        self.published = 0

    @_workers.api('/api/stream/sse', 'GET')
    def sse(self, request):
        request.response_stream()
        request.send_event(data={'hello': request.request_id}, event='hello')
        self.subscribers[request.request_id] = request
        return _workers.DEFERRED

    @_workers.api('/api/stream/publish', 'POST')
    def publish(self, request):
        self.published += 1
        sent = 0
        for subscriber in list(self.subscribers.values()):
            if subscriber.send_event(data=request.data, event='news',
                                     event_id=str(self.published)):
                sent += 1
        return {'sent': sent, 'published': self.published}

    @_workers.api('/api/stream/subs', 'GET')
    def subs(self, request):
        return {'subscribers': len(self.subscribers)}

    def on_disconnect(self, request_id):
        self.subscribers.pop(request_id, None)


class NumberWorker(_workers.Worker):
    @_workers.api('/api/n/{n:int}', 'GET')
    def number(self, request):
        return {'n': request.path_params['n']}


class App(StatusDispatcher):
    """Serves /probe and /_status (status_app.py)."""


if __name__ == '__main__':
    App(port=0, address='127.0.0.1', pools=[
        _workers.WorkerPool(StreamWorker, num_workers=1, routes=['/api/stream/**']),
        _workers.WorkerPool(NumberWorker, num_workers=2, routes=['/api/**']),
    ]).run()
