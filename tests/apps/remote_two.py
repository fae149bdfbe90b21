"""A dispatcher with two remote pools on one Redis database (ItemWorker
of remote_app.py and ReportWorker), served by their worker commands.

Usage: remote_two.py REDIS_URL
"""
import os
import sys

import uhttp.workers as _workers
from remote_app import ItemWorker
from status_app import StatusDispatcher


class ReportWorker(_workers.Worker):
    @_workers.api('/reports/pid', 'GET')
    def pid(self, request):
        return {'pid': os.getpid(), 'tag': (request.query or {}).get('tag')}


if __name__ == '__main__':
    url = sys.argv[1]
    StatusDispatcher(port=0, address='127.0.0.1', pools=[
        _workers.WorkerPool(ItemWorker, broker=url, num_workers=0,
                            routes=['/api/**'], timeout=3,
                            heartbeat_interval=0.25),
        _workers.WorkerPool(ReportWorker, broker=url, num_workers=0,
                            routes=['/reports/**'], timeout=3,
                            heartbeat_interval=0.25),
    ]).run()
