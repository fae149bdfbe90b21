"""uhttp-workers under benchmark: a 2-worker API pool and a 1-worker SSE pool.

/json, /cpu and /echo go to the API pool. /sse/events and /sse/publish go
to a pool of ONE worker, so that a publish reaches the worker holding every
subscriber (SSE the documented way: response_stream(), keep the request,
return DEFERRED, send_event() on publish).

    python benchmarks/apps/uhttp_workers_app.py --port 8080
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import uhttp.workers as _workers  # noqa: E402

import common  # noqa: E402


class ApiWorker(_workers.Worker):
    @_workers.api(common.PATH_JSON, 'GET')
    def json(self, request):
        return common.JSON_BODY

    @_workers.api(common.PATH_CPU, 'GET')
    def cpu(self, request):
        return common.burn_cpu()

    @_workers.api(common.PATH_ECHO, 'POST')
    def echo(self, request):
        data = request.data
        if data is None:
            return b''
        # bytes, or a spooled body (a SpooledBytes: its file goes back
        # whole), or a JSON body that comes back as JSON
        return data


class SseWorker(_workers.Worker):
    def setup(self):
        self.subscribers = {}

    @_workers.api(common.PATH_EVENTS, 'GET')
    def events(self, request):
        request.response_stream()
        self.subscribers[request.request_id] = request
        return _workers.DEFERRED

    @_workers.api(common.PATH_PUBLISH, 'POST')
    def publish(self, request):
        data = request.data
        if isinstance(data, (bytes, bytearray)):
            data = bytes(data).decode('utf-8')
        sent = 0
        for subscriber in list(self.subscribers.values()):
            if subscriber.send_event(data=data, event=common.SSE_EVENT):
                sent += 1
        return {'subscribers': sent}

    def on_disconnect(self, request_id):
        self.subscribers.pop(request_id, None)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--host', default='127.0.0.1')
    parser.add_argument('--port', type=int, default=8080)
    parser.add_argument('--workers', type=int, default=2)
    parser.add_argument('--max-pending', type=int, default=1000)
    parser.add_argument('--max-waiting-clients', type=int, default=None)
    parser.add_argument('--spool-threshold', type=int, default=None,
                        help='Dispatcher spool_threshold (default 256 KiB)')
    parser.add_argument('--metrics', action='store_true',
                        help='serve /metrics (and count every request)')
    parser.add_argument('--access-log', action='store_true',
                        help='one access log line per request')
    args = parser.parse_args()
    http_options = {}
    if args.metrics:
        http_options['metrics_path'] = '/metrics'
    if args.access_log:
        http_options['access_log'] = True
    if args.spool_threshold is not None:
        http_options['spool_threshold'] = args.spool_threshold
    if args.max_waiting_clients:
        http_options['max_waiting_clients'] = args.max_waiting_clients
    dispatcher = _workers.Dispatcher(
        port=args.port, address=args.host, max_pending=args.max_pending,
        log_level=_workers.LOG_INFO if args.access_log else _workers.LOG_WARNING,
        pools=[
            _workers.WorkerPool(SseWorker, num_workers=1, routes=['/sse/**']),
            _workers.WorkerPool(
                ApiWorker, num_workers=args.workers,
                routes=[common.PATH_JSON, common.PATH_CPU, common.PATH_ECHO]),
        ],
        **http_options)
    dispatcher.run()


if __name__ == '__main__':
    main()
