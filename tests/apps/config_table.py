"""Every Dispatcher and WorkerPool parameter of the configuration table,
for tests/e2e/test_config.py.

Each pool shows one parameter; routes are '/<area>/...' and one worker
class serves them all:
  DefaultWorker   WorkerPool(DefaultWorker): every default, the fallback pool
  ExplicitWorker  every parameter given with its default value, plus kwargs
  ExactWorker     routes=['/exact/status'] (an exact route)
  MultiWorker     num_workers=3
  FastTimeout     timeout=0.5
  StuckWorker     stuck_timeout=1, heartbeat_interval=0.2
  BeatWorker      heartbeat_interval=0.1
  DegradeWorker   max_restarts=2
  WindowWorker    max_restarts=2, restart_window=0.3
  QWarnWorker     queue_warning=2
  QSilentWorker   queue_warning=0
"""
import os
import time

import uhttp.workers as _workers
from status_app import StatusDispatcher


class BaseWorker(_workers.Worker):
    def setup(self):
        self.idle_calls = 0

    def on_idle(self):
        self.idle_calls += 1

    def _me(self, request):
        return {'pool': type(self).__name__, 'worker': self.worker_id,
                'pid': os.getpid(), 'path': request.path}

    @_workers.api('/{area}/whoami')
    def whoami(self, request):
        return dict(self._me(request), kwargs=self.kwargs)

    @_workers.api('/{area}/sleep/{ms:int}')
    def sleep(self, request):
        time.sleep(request.path_params['ms'] / 1000.0)
        return self._me(request)

    @_workers.api('/{area}/idle')
    def idle(self, request):
        return {'idle_calls': self.idle_calls, 'now': time.monotonic()}


class DefaultWorker(BaseWorker):
    @_workers.api('/exact/status/x')
    def below_exact(self, request):
        return self._me(request)

    @_workers.api('/exact')
    def above_exact(self, request):
        return self._me(request)


class ExplicitWorker(BaseWorker):
    pass


class ExactWorker(BaseWorker):
    @_workers.api('/exact/status')
    def exact(self, request):
        return self._me(request)


class MultiWorker(BaseWorker):
    pass


class FastTimeout(BaseWorker):
    pass


class StuckWorker(BaseWorker):
    pass


class BeatWorker(BaseWorker):
    pass


class DegradeWorker(BaseWorker):
    pass


class WindowWorker(BaseWorker):
    pass


class QWarnWorker(BaseWorker):
    pass


class QSilentWorker(BaseWorker):
    pass


class TableApp(StatusDispatcher):
    """Serves /probe and /_status (status_app.py)."""


if __name__ == '__main__':
    pools = [
        _workers.WorkerPool(DefaultWorker),
        _workers.WorkerPool(
            ExplicitWorker, num_workers=1, routes=['/explicit/**'], timeout=30,
            stuck_timeout=60, heartbeat_interval=1,
            log_level=_workers.LOG_WARNING, max_restarts=10,
            restart_window=300, queue_warning=100, color='blue', size=3),
        _workers.WorkerPool(ExactWorker, routes=['/exact/status']),
        _workers.WorkerPool(MultiWorker, num_workers=3, routes=['/multi/**']),
        _workers.WorkerPool(FastTimeout, routes=['/fast/**'], timeout=0.5),
        _workers.WorkerPool(StuckWorker, routes=['/stuck/**'], stuck_timeout=1,
                            heartbeat_interval=0.2),
        _workers.WorkerPool(BeatWorker, routes=['/beat/**'],
                            heartbeat_interval=0.1),
        _workers.WorkerPool(DegradeWorker, routes=['/degrade/**'],
                            max_restarts=2),
        _workers.WorkerPool(WindowWorker, routes=['/window/**'],
                            max_restarts=2, restart_window=0.3),
        _workers.WorkerPool(QWarnWorker, routes=['/qwarn/**'], queue_warning=2),
        _workers.WorkerPool(QSilentWorker, routes=['/qsilent/**'],
                            queue_warning=0),
    ]
    TableApp(port=0, address='127.0.0.1', pools=pools, static_routes={},
             shutdown_timeout=10, max_pending=1000, ssl_context=None).run()
