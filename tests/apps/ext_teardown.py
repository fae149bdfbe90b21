"""Worker.teardown(): each worker appends '<pid>' to
$EXT_MARKERS/teardown-<pid> when it stops (and 'setup' lines when it starts).

Environment:
  EXT_MARKERS           directory for the marker files (required)
  EXT_TEARDOWN_RAISE=1  teardown() raises after writing its marker
  EXT_IGNORE_SIGTERM=1  setup() ignores SIGTERM, so a worker whose dispatcher
                        dies can only notice it by its pipe closing
  EXT_HEARTBEAT         the pool's heartbeat_interval (default 1)
"""
import os
import signal

import uhttp.workers as _workers
from status_app import StatusDispatcher

MARKERS = os.environ['EXT_MARKERS']


def _mark(kind, pid):
    with open(os.path.join(MARKERS, f'{kind}-{pid}'), 'a',
              encoding='utf-8') as file:
        file.write(f'{pid}\n')


class TearWorker(_workers.Worker):
    def setup(self):
        if os.environ.get('EXT_IGNORE_SIGTERM') == '1':
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        _mark('setup', os.getpid())

    def teardown(self):
        _mark('teardown', os.getpid())
        if os.environ.get('EXT_TEARDOWN_RAISE') == '1':
            raise RuntimeError('teardown exploded')

    @_workers.api('/t/pid', 'GET')
    def which(self, request):
        return {'pid': os.getpid()}


class TearDispatcher(StatusDispatcher):
    """Serves /probe and /_status (status_app.py)."""


if __name__ == '__main__':
    TearDispatcher(port=0, address='127.0.0.1', shutdown_timeout=2, pools=[
        _workers.WorkerPool(
            TearWorker, num_workers=2, routes=['/t/**'],
            heartbeat_interval=float(os.environ.get('EXT_HEARTBEAT', '1')),
            stuck_timeout=120),
    ]).run()
