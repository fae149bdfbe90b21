"""A worker that floods its streams, behind a dispatcher with a small
send buffer (max_send_buffer_size=64 KiB): a client that never reads must
be dropped instead of growing the dispatcher's memory."""
import uhttp.workers as _workers
from status_app import StatusDispatcher


class FloodWorker(_workers.Worker):
    def setup(self):
        self.subscribers = {}
        self.disconnected = []
        self.pushed = 0

    @_workers.api('/events', 'GET')
    def events(self, request):
        request.response_stream()
        self.subscribers[request.request_id] = request
        request.send_event(data={'request_id': request.request_id},
                           event='hello')
        return _workers.DEFERRED

    @_workers.api('/flood', 'POST')
    def flood(self, request):
        """Send `mb` MiB of `size`-byte events to every subscriber."""
        spec = request.data or {}
        size = int(spec.get('size', 256 * 1024))
        total = int(spec.get('mb', 40)) * 1024 * 1024
        payload = 'x' * size
        sent = refused = 0
        for _ in range(total // size):
            for subscriber in list(self.subscribers.values()):
                if subscriber.send_event(data=payload, event='blob'):
                    sent += 1
                    self.pushed += size
                else:
                    refused += 1
        return {'sent': sent, 'refused': refused, 'pushed': self.pushed}

    @_workers.api('/info', 'GET')
    def info(self, request):
        return {'subscribers': sorted(self.subscribers),
                'disconnected': self.disconnected, 'pushed': self.pushed}

    def on_disconnect(self, request_id):
        self.disconnected.append(request_id)
        self.subscribers.pop(request_id, None)


class App(StatusDispatcher):
    """Serves /probe and /_status (status_app.py)."""


if __name__ == '__main__':
    App(port=0, address='127.0.0.1', max_send_buffer_size=64 * 1024, pools=[
        _workers.WorkerPool(FloodWorker, num_workers=1, timeout=5,
                            heartbeat_interval=0.25),
    ]).run()
