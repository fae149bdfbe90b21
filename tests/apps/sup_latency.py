"""Supervision app: one worker holds any number of DEFERRED requests open
(/hold/**), another answers at once (/fast/**)."""

import uhttp.workers as _workers
from status_app import StatusDispatcher


class HoldWorker(_workers.Worker):
    def setup(self):
        self.held = {}

    @_workers.api('/hold/{n:int}', 'GET')
    def hold(self, request):
        self.held[request.request_id] = request
        return _workers.DEFERRED

    def on_disconnect(self, request_id):
        self.held.pop(request_id, None)


class FastWorker(_workers.Worker):
    @_workers.api('/fast/ping', 'GET')
    def ping(self, request):
        return {'pong': True}


class App(StatusDispatcher):
    """Serves /probe and /_status (status_app.py)."""


if __name__ == '__main__':
    App(port=0, address='127.0.0.1', max_pending=2000, pools=[
        _workers.WorkerPool(HoldWorker, num_workers=1, routes=['/hold/**'],
                            timeout=300, stuck_timeout=60,
                            heartbeat_interval=0.2),
        _workers.WorkerPool(FastWorker, num_workers=1, routes=['/fast/**'],
                            timeout=30, stuck_timeout=60,
                            heartbeat_interval=0.2),
    ]).run()
