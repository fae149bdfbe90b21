"""Scheduling app: one pool of workers serving a fast route and a slow one.

/api/fast answers at once; /api/slow/{s:float} sleeps s seconds. Every
handler appends the request's token (x-token header, else its request id)
to runs-<pid>.log in SCHED_RUN_DIR when that is set, so that a test can
check that no request ran twice.

Environment: SCHED_WORKERS (default 2), SCHED_RUN_DIR, SCHED_WINDOW (pins
the pool's window instead of letting it adapt to the handlers' times).
"""
import os
import time

import uhttp.workers as _workers
from status_app import StatusDispatcher


class MixedWorker(_workers.Worker):
    def setup(self):
        self.runs = None
        directory = os.environ.get('SCHED_RUN_DIR')
        if directory:
            self.runs = open(os.path.join(directory, f'runs-{os.getpid()}.log'),
                             'a', encoding='ascii', buffering=1)

    def _record(self, request):
        token = request.headers.get('x-token') or str(request.request_id)
        if self.runs is not None:
            self.runs.write(token + '\n')
        return {'pid': os.getpid(), 'token': token}

    @_workers.api('/api/fast', 'GET')
    def fast(self, request):
        return self._record(request)

    @_workers.api('/api/slow/{s:float}', 'GET')
    def slow(self, request):
        reply = self._record(request)
        time.sleep(request.path_params['s'])
        return reply


class PinnedPool(_workers.WorkerPool):
    """A pool whose window stays at `window` (load on the test machine
    cannot shrink it)."""

    def __init__(self, *args, window, **kwargs):
        super().__init__(*args, **kwargs)
        self.scheduler.window = window
        self.scheduler.update_window = lambda: None


class App(StatusDispatcher):
    """Serves /probe and /_status (status_app.py)."""


if __name__ == '__main__':
    options = dict(num_workers=int(os.environ.get('SCHED_WORKERS', '2')),
                   routes=['/api/**'], timeout=30, stuck_timeout=30,
                   heartbeat_interval=0.2, max_restarts=1000)
    if os.environ.get('SCHED_WINDOW'):
        pool = PinnedPool(MixedWorker, window=int(os.environ['SCHED_WINDOW']),
                          **options)
    else:
        pool = _workers.WorkerPool(MixedWorker, **options)
    App(port=0, address='127.0.0.1', max_pending=5000, pools=[pool]).run()
