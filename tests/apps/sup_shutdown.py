"""Supervision app: graceful shutdown and orphan checks.

Environment: SUP_WORKERS (default 4), SUP_SHUTDOWN_TIMEOUT (default 10),
SUP_MARKER_DIR (teardown() writes teardown-<pid> there).
"""
import os
import tempfile
import time

import uhttp.workers as _workers
from status_app import StatusDispatcher


class NapWorker(_workers.Worker):
    @_workers.api('/api/sleep/{s:float}', 'GET')
    def sleep(self, request):
        time.sleep(request.path_params['s'])
        return {'pid': os.getpid(), 'request_id': request.request_id}

    @_workers.api('/api/spin', 'GET')
    def spin(self, request):
        while True:
            pass

    @_workers.api('/api/size', 'POST')
    def size(self, request):
        return {'size': len(request.data or b'')}

    @_workers.api('/api/file/{mib:int}', 'GET')
    def file(self, request):
        handle = tempfile.TemporaryFile()
        handle.write(b'\x5a' * (request.path_params['mib'] << 20))
        return _workers.FileResponse(handle)

    def teardown(self):
        marker_dir = os.environ.get('SUP_MARKER_DIR')
        if marker_dir:
            path = os.path.join(marker_dir, f'teardown-{os.getpid()}')
            with open(path, 'w', encoding='utf-8') as file:
                file.write(str(self.worker_id))


class App(StatusDispatcher):
    """Serves /probe and /_status (status_app.py)."""


if __name__ == '__main__':
    App(port=0, address='127.0.0.1',
        shutdown_timeout=float(os.environ.get('SUP_SHUTDOWN_TIMEOUT', '10')),
        pools=[
            _workers.WorkerPool(
                NapWorker, num_workers=int(os.environ.get('SUP_WORKERS', '4')),
                routes=['/api/**'], timeout=30, stuck_timeout=60,
                heartbeat_interval=0.2),
        ]).run()
