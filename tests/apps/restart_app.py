"""A user app as the README shows it, with defaults: a 1-worker pool whose
`crash` handler kills its worker (after setup() succeeded and it served),
and a pool whose setup() always fails (back-off territory)."""

import os
import resource

import uhttp.workers as _workers
from status_app import StatusDispatcher


class ItemWorker(_workers.Worker):
    def setup(self):
        self.items = {}

    @_workers.api('/api/pid', 'GET')
    def pid(self, request):
        return {'pid': os.getpid()}

    @_workers.api('/api/crash', 'GET')
    def crash(self, request):
        os._exit(1)


class BrokenWorker(_workers.Worker):
    def setup(self):
        raise RuntimeError('cannot reach the database')

    @_workers.api('/broken/name', 'GET')
    def name(self, request):
        return {'name': 'never served'}


if __name__ == '__main__':
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    StatusDispatcher(port=0, address='127.0.0.1', pools=[
        _workers.WorkerPool(ItemWorker, routes=['/api/**']),
        _workers.WorkerPool(BrokenWorker, routes=['/broken/**']),
    ]).run()
