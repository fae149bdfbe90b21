"""A dispatcher whose remote pool (GaugeWorker, served through Redis by
`uhttp-workers worker remote_gauges:GaugeWorker`) declares a gauge that
each worker sets to its pid.

Usage: remote_gauges.py REDIS_URL
"""
import os
import sys

import uhttp.workers as _workers
from status_app import StatusDispatcher


class GaugeWorker(_workers.Worker):
    @_workers.api('/api/gauge', 'GET')
    def gauge(self, request):
        self.metrics['holder'].set(os.getpid())
        return {'pid': os.getpid()}


if __name__ == '__main__':
    StatusDispatcher(port=0, address='127.0.0.1', metrics_path='/metrics',
                     pools=[_workers.WorkerPool(
                         GaugeWorker, broker=sys.argv[1], num_workers=0,
                         routes=['/api/**'], stuck_timeout=3,
                         heartbeat_interval=0.25,
                         metrics=[_workers.Gauge('holder', 'pid of a worker')])
                     ]).run()
