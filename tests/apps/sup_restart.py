"""Supervision app: restart counting, degraded pools, setup() failures.

Environment: SUP_MAX_RESTARTS (default 3), SUP_RESTART_WINDOW (default 60),
SUP_SETUP_FAIL=1 makes every worker's setup() raise.
"""
import os

import uhttp.workers as _workers
from status_app import StatusDispatcher


class FlakyWorker(_workers.Worker):
    def setup(self):
        if os.environ.get('SUP_SETUP_FAIL') == '1':
            raise RuntimeError('setup exploded on purpose')

    @_workers.api('/api/ok', 'GET')
    def ok(self, request):
        return {'pid': os.getpid()}

    @_workers.api('/api/die', 'GET')
    def die(self, request):
        os._exit(1)


class App(StatusDispatcher):
    """Serves /probe and /_status (status_app.py)."""


if __name__ == '__main__':
    App(port=0, address='127.0.0.1', pools=[
        _workers.WorkerPool(
            FlakyWorker, num_workers=1, routes=['/api/**'], timeout=10,
            stuck_timeout=5, heartbeat_interval=0.2,
            max_restarts=int(os.environ.get('SUP_MAX_RESTARTS', '3')),
            restart_window=float(os.environ.get('SUP_RESTART_WINDOW', '60'))),
    ]).run()
