"""User metrics given values out of range, /metrics scraped with odd
Accept headers, and a dashboard_path that holds '</script>'
(tests/e2e/test_metrics_values.py).

GET /api/{metric}/{value} records `value` (a name in VALUES) on `metric`
(a name in METRICS) and answers {'ok': true}, or {'refused': message}
with the MetricError the call raised.

Environment:
  METRICS_DASHBOARD_PATH   the Dispatcher's dashboard_path (default /_dash)
"""

import math
import os

import uhttp.workers as _workers

VALUES = {'one': 1, 'half': 0.5, 'big': 10 ** 400, 'huge': 1e308,
          'inf': math.inf, 'ninf': -math.inf, 'nan': math.nan, 'neg': -0.5,
          'negone': -1, 'ntwo': -2.0}
METRICS = {'counter': ('bytes_total', 'inc'), 'gauge': ('depth', 'set'),
           'gauge_inc': ('depth', 'inc'), 'gauge_dec': ('depth', 'dec'),
           'histogram': ('lat', 'observe'), 'deltas': ('delta', 'observe')}


class ValuesWorker(_workers.Worker):
    @_workers.api('/api/{metric}/{value}', 'GET')
    def record(self, request):
        name, method = METRICS[request.path_params['metric']]
        value = VALUES[request.path_params['value']]
        try:
            getattr(self.metrics[name], method)(value)
        except _workers.MetricError as err:
            return {'refused': str(err)}
        return {'ok': True}


class App(_workers.Dispatcher):
    @_workers.sync('/probe')
    def probe(self, client, path_params):
        client.respond({'ok': True})


if __name__ == '__main__':
    App(port=0, address='127.0.0.1', pools=[
        _workers.WorkerPool(ValuesWorker, num_workers=1, routes=['/api/**'],
                            heartbeat_interval=0.2, metrics=[
            _workers.Counter('bytes_total', 'Bytes'),
            _workers.Gauge('depth', 'Depth'),
            _workers.Histogram('lat', 'Latency', buckets=(0.1, 1.0)),
            _workers.Histogram('delta', 'Signed', buckets=(-1.0, 0.0, 1.0))])],
        metrics_path='/metrics',
        dashboard_path=os.environ.get('METRICS_DASHBOARD_PATH', '/_dash'),
        access_log='{method} {path} {status} {bytes}').run()
