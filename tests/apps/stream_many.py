"""One worker holding many SSE subscribers; one publish reaches them all."""
import uhttp.workers as _workers
from status_app import StatusDispatcher


class HubWorker(_workers.Worker):
    def setup(self):
        self.subscribers = {}
        self.disconnects = 0

    @_workers.api('/events', 'GET')
    def events(self, request):
        request.response_stream()
        self.subscribers[request.request_id] = request
        return _workers.DEFERRED

    @_workers.api('/count', 'GET')
    def count(self, request):
        return {'subscribers': len(self.subscribers),
                'disconnects': self.disconnects, 'worker': self.worker_id}

    @_workers.api('/publish', 'POST')
    def publish(self, request):
        spec = request.data or {}
        sent = failed = 0
        for subscriber in list(self.subscribers.values()):
            if subscriber.send_event(data=spec.get('data'), event='news',
                                     event_id=spec.get('id')):
                sent += 1
            else:
                failed += 1
        return {'sent': sent, 'failed': failed}

    def on_disconnect(self, request_id):
        self.disconnects += 1
        self.subscribers.pop(request_id, None)


class App(StatusDispatcher):
    """Serves /probe and /_status (status_app.py)."""


if __name__ == '__main__':
    App(port=0, address='127.0.0.1', max_pending=2000, pools=[
        _workers.WorkerPool(HubWorker, num_workers=1, timeout=10,
                            heartbeat_interval=0.5),
    ]).run()
