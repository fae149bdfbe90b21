"""Target of the malformed-HTTP and fuzz tests (tests/hardening).

One pool on /api/** (2 workers) that echoes what it received, a sequence
route for pipelining order, sync routes /probe, /sync/echo and /_status.
Short request/keep-alive timeouts so that half-sent requests end quickly
(408 or close).
"""
import time

import uhttp.workers as _workers
from status_app import StatusDispatcher


def _plain(value):
    """Request data as JSON-safe values."""
    if isinstance(value, (bytes, bytearray)):
        return {'bytes': bytes(value).decode('latin-1')}
    return value


class EchoWorker(_workers.Worker):
    @_workers.api('/api/echo')
    def echo(self, request):
        return {'method': request.method, 'path': request.path,
                'query': request.query, 'headers': request.headers,
                'data': _plain(request.data)}

    @_workers.api('/api/seq/{n:int}')
    def seq(self, request):
        return {'n': request.path_params['n'], 'method': request.method,
                'data': _plain(request.data)}

    @_workers.api('/api/path/{rest:path}')
    def path(self, request):
        return {'path': request.path, 'rest': request.path_params['rest'],
                'query': request.query}

    @_workers.api('/api/ratio/{x:float}', 'GET')
    def ratio(self, request):
        return {'x': request.path_params['x']}

    @_workers.api('/api/probe', 'GET')
    def probe(self, request):
        return {'ok': True, 'worker': self.worker_id}

    @_workers.api('/api/slow', 'GET')
    def slow(self, request):
        time.sleep(0.3)
        return {'slow': True}


class App(StatusDispatcher):
    @_workers.sync('/sync/echo')
    def sync_echo(self, client, path_params):
        body = client.body
        client.respond({'method': client.method, 'path': client.path,
                        'query': client.query, 'headers': client.headers,
                        'body': None if body is None else
                        bytes(body).decode('latin-1')})



if __name__ == '__main__':
    App(port=0, address='127.0.0.1', request_timeout=2, keep_alive_timeout=3,
        pools=[_workers.WorkerPool(EchoWorker, num_workers=2,
                                   routes=['/api/**'])]).run()
