"""Slow clients (tests/hardening/test_hard_slow.py): slowloris senders and
readers that never read a 5 MB answer. send_timeout=2 so that stalled
readers are dropped; other HTTP timeouts are the defaults."""
import uhttp.workers as _workers
from status_app import StatusDispatcher

BIG = 5 * 1024 * 1024


class BigWorker(_workers.Worker):
    def setup(self):
        self.payload = bytes(range(256)) * (BIG // 256)

    @_workers.api('/api/big', 'GET')
    def big(self, request):
        return self.payload

    @_workers.api('/api/probe', 'GET')
    def probe(self, request):
        return {'ok': True}


class App(StatusDispatcher):
    """Serves /probe and /_status (status_app.py)."""


if __name__ == '__main__':
    App(port=0, address='127.0.0.1', send_timeout=2, pools=[
        _workers.WorkerPool(BigWorker, num_workers=2, routes=['/api/**'])]).run()
