"""WebSocket echo and a small JSON route on uhttp-workers (benchmarks/ws.py).

    python ws_uhttp_workers_app.py PORT WORKERS
"""
import sys

import uhttp.workers as _workers


class EchoWorker(_workers.Worker):
    @_workers.websocket('/ws/echo')
    def echo(self, ws):
        ws.accept()

    def on_ws_message(self, ws, message):
        ws.send(message)

    @_workers.api('/api/hello', 'GET')
    def hello(self, request):
        return {'hello': 'world'}


if __name__ == '__main__':
    port, workers = int(sys.argv[1]), int(sys.argv[2])
    _workers.Dispatcher(
        port=port, address='127.0.0.1', log_level=_workers.LOG_WARNING,
        max_waiting_clients=16000,
        pools=[_workers.WorkerPool(EchoWorker, num_workers=workers,
                                   routes=['/ws/**', '/api/**'])]).run()
