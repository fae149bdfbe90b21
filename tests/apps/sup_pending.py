"""Supervision app: max_pending and queue_warning with one slow worker,
and a fast pool beside it (max_pending is the dispatcher's, shared).

Environment: SUP_MAX_PENDING (default 3), SUP_QUEUE_WARNING (default 100).
"""
import os
import time

import uhttp.workers as _workers
from status_app import StatusDispatcher


class SlowWorker(_workers.Worker):
    @_workers.api('/api/sleep/{s:float}', 'GET')
    def sleep(self, request):
        time.sleep(request.path_params['s'])
        return {'pid': os.getpid(), 'request_id': request.request_id}


class FastWorker(_workers.Worker):
    @_workers.api('/fast/pid', 'GET')
    def pid(self, request):
        return {'pid': os.getpid()}


class App(StatusDispatcher):
    """Serves /probe and /_status (status_app.py)."""


if __name__ == '__main__':
    App(port=0, address='127.0.0.1',
        max_pending=int(os.environ.get('SUP_MAX_PENDING', '3')),
        pools=[
            _workers.WorkerPool(
                SlowWorker, num_workers=1, routes=['/api/**'], timeout=30,
                stuck_timeout=30, heartbeat_interval=0.2,
                queue_warning=int(os.environ.get('SUP_QUEUE_WARNING', '100'))),
            _workers.WorkerPool(FastWorker, num_workers=1, routes=['/fast/**']),
        ]).run()
