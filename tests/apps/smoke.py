"""Smallest app: one pool, one sync route; used by the harness's own tests."""
import uhttp.workers as _workers
from status_app import StatusDispatcher


class EchoWorker(_workers.Worker):
    @_workers.api('/api/echo', 'POST')
    def echo(self, request):
        return {'data': request.data}

    @_workers.api('/api/hello', 'GET')
    def hello(self, request):
        return {'hello': 'world', 'worker': self.worker_id}


class App(StatusDispatcher):
    """Serves /probe and /_status (status_app.py)."""


if __name__ == '__main__':
    App(port=0, address='127.0.0.1', pools=[
        _workers.WorkerPool(EchoWorker, num_workers=2, routes=['/api/**']),
    ]).run()
