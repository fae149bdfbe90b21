"""WebSocket edge cases (tests/e2e/test_websocket_edges.py): one worker,
so that the worker's state (/api/state) follows its WebSockets in order.

/ws/echo accepts and echoes ('close' closes 4000 'bye', 'close none'
closes 4001 with reason None); /ws/later decides nothing, keeping `ws`
for /api/accept_later; /ws/badreject rejects with a bad status, catches
the error and returns; /ws/attr sets an attribute of its own on `ws`.
"""
import uhttp.workers as _workers
from status_app import StatusDispatcher


class EdgeWorker(_workers.Worker):
    def setup(self):
        self.sockets = {}
        self.closed = []
        self.later = None
        self.errors = []

    @_workers.websocket('/ws/echo')
    def echo(self, ws):
        ws.accept()
        self.sockets[ws.request_id] = ws

    @_workers.websocket('/ws/later')
    def later(self, ws):
        self.later = ws   # no decision: 403

    @_workers.websocket('/ws/badreject')
    def badreject(self, ws):
        try:
            ws.reject({'error': 'odd'}, status=99)
        except ValueError as err:
            self.errors.append(type(err).__name__)

    @_workers.websocket('/ws/attr')
    def attr(self, ws):
        ws.user = 'alice'
        ws.accept()
        ws.send(f'user {ws.user}')

    @_workers.api('/api/accept_later', 'GET')
    def accept_later(self, request):
        ws = self.later
        try:
            accepted = ws.accept()
        except RuntimeError as err:
            accepted = f'RuntimeError: {err}'
        return {'accept': accepted, 'is_open': ws.is_open,
                'send': ws.send('late')}

    @_workers.api('/api/state', 'GET')
    def state(self, request):
        return {'open': sorted(rid for rid, ws in self.sockets.items()
                               if ws.is_open),
                'closed': self.closed, 'errors': self.errors}

    def on_ws_message(self, ws, message):
        if message == 'close':
            ws.close(4000, 'bye')
        elif message == 'close none':
            ws.close(4001, None)
        else:
            ws.send(message)

    def on_ws_close(self, ws, code, reason):
        self.sockets.pop(ws.request_id, None)
        self.closed.append([ws.request_id, ws.path, code, reason])


class App(StatusDispatcher):
    """Serves /probe and /_status (status_app.py)."""


if __name__ == '__main__':
    App(port=0, address='127.0.0.1', ws_ping_interval=0, pools=[
        _workers.WorkerPool(EdgeWorker, num_workers=1, timeout=10,
                            routes=['/ws/**', '/api/**'],
                            heartbeat_interval=0.25),
    ]).run()
