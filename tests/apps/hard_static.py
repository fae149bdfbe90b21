"""Static mounts under attack (tests/hardening/test_hard_static.py).

HARD_STATIC_ROOT is mounted at '/static/' (falls through when a file is
missing) and at '/auth/' (authoritative: a miss is a 404 here). A pool
serves /api/** only, so nothing else answers for the mounts' prefixes.
"""
import os

import uhttp.workers as _workers
from status_app import StatusDispatcher


class ProbeWorker(_workers.Worker):
    @_workers.api('/api/probe', 'GET')
    def probe(self, request):
        return {'ok': True}


class App(StatusDispatcher):
    """Serves /probe and /_status (status_app.py)."""


if __name__ == '__main__':
    root = os.environ['HARD_STATIC_ROOT']
    App(port=0, address='127.0.0.1',
        static_routes={'/static/': root,
                       '/auth/': {'path': root, 'authoritative': True}},
        pools=[_workers.WorkerPool(ProbeWorker, routes=['/api/**'])]).run()
