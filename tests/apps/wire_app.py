"""Every kind of answer the server gives, for the HTTP/1.1 wire checks
(tests/e2e/test_wire_h11.py): worker results of each type, statuses
with and without bodies, Response objects with cookies, RejectRequest,
a deferred answer, a 504, SSE and NDJSON streams (plain and chunked),
FileResponse, static files, sync handlers and their streams, /metrics
and the dashboard, handlers that give the server's own headers,
WebSocket routes (/ws/accept, /ws/reject, /ws/nothing) and a chunked
stream whose worker dies after one event (/api/cut).

argv[1]: a directory with static/ (served at /static/) and big.bin.
Short timeouts: a pool request 1 s (504), a request's head and body 3 s
(408); 4 KiB limits on heads (431) and bodies (413).
"""
import os
import sys
import threading
import time

import uhttp.workers as _workers

ROOT = sys.argv[1]


class WireWorker(_workers.Worker):
    def setup(self):
        self.waiting = []

    @_workers.api('/api/json', 'GET')
    def json(self, request):
        return {'ok': True}

    @_workers.api('/api/text', 'GET')
    def text(self, request):
        return 'hello'

    @_workers.api('/api/bytes', 'GET')
    def raw(self, request):
        return b'\x00\x01\x02'

    @_workers.api('/api/none', 'GET')
    def none(self, request):
        return None

    @_workers.api('/api/status/{code:int}')
    def status(self, request):
        code = request.path_params['code']
        return {'code': code}, code, {'X-Code': str(code)}

    @_workers.api('/api/empty/{code:int}')
    def empty(self, request):
        return None, request.path_params['code']

    @_workers.api('/api/headers/{kind}')
    def headers(self, request):
        kind = request.path_params['kind']
        given = {'length': {'Content-Length': '999'},
                 'te': {'Transfer-Encoding': 'chunked'},
                 'close': {'Connection': 'close'},
                 'keep': {'Connection': 'keep-alive'},
                 'date': {'Date': 'Mon, 01 Jan 2024 00:00:00 GMT'},
                 'type': [('content-type', 'text/plain'),
                          ('Content-Type', 'text/csv')]}[kind]
        status = int(request.query['status']) if request.query else 200
        return 'body', status, given

    @_workers.api('/api/redirect', 'GET')
    def redirect(self, request):
        return None, 301, {'Location': '/api/json'}

    @_workers.api('/api/cookies', 'GET')
    def cookies(self, request):
        return _workers.Response(None, data={'c': 1}, status=201,
                                 headers={'X-A': '1'},
                                 cookies={'a': '1', 'b': '2'})

    @_workers.api('/api/reject', 'GET')
    def reject(self, request):
        raise _workers.RejectRequest({'no': 1}, 409)

    @_workers.api('/api/boom', 'GET')
    def boom(self, request):
        raise ValueError('boom')

    @_workers.api('/api/slow', 'GET')
    def slow(self, request):
        time.sleep(3)
        return {'late': True}

    @_workers.api('/api/deferred', 'GET')
    def deferred(self, request):
        threading.Timer(0.1, request.respond,
                        kwargs={'data': {'deferred': True}}).start()
        return _workers.DEFERRED

    @_workers.api('/api/echo', 'POST')
    def echo(self, request):
        data = request.data
        if isinstance(data, (bytes, bytearray, memoryview)):
            data = {'len': len(data)}
        return {'data': data, 'headers': request.headers}

    @_workers.api('/api/sse', 'GET')
    def sse(self, request):
        chunked = request.query and request.query.get('chunked')
        request.response_stream(
            headers={'Transfer-Encoding': 'chunked'} if chunked else None)
        for n in range(3):
            request.send_event(data={'n': n}, event='tick', event_id=str(n))
        request.response_stream_end()
        return _workers.DEFERRED

    @_workers.api('/api/ndjson', 'GET')
    def ndjson(self, request):
        chunked = request.query and request.query.get('chunked')
        request.response_ndjson(
            headers={'Transfer-Encoding': 'chunked'} if chunked else None)
        for n in range(3):
            request.send_ndjson({'n': n})
        request.response_stream_end()
        return _workers.DEFERRED

    @_workers.api('/api/cut', 'GET')
    def cut(self, request):
        request.response_stream(headers={'Transfer-Encoding': 'chunked'})
        request.send_event(data='first')
        time.sleep(0.2)
        os._exit(3)   # the worker dies mid-stream

    @_workers.websocket('/ws/{how}')
    def ws(self, ws):
        how = ws.path_params['how']
        if how == 'accept':
            ws.accept()
        elif how == 'reject':
            ws.reject({'error': 'no'}, status=409)

    @_workers.api('/api/file', 'GET')
    def file(self, request):
        return _workers.FileResponse(os.path.join(ROOT, 'big.bin'),
                                     download_name='big.bin')


class App(_workers.Dispatcher):
    @_workers.sync('/sync/json')
    def sync_json(self, client, path_params):
        client.respond({'sync': True})

    @_workers.sync('/sync/204')
    def sync_204(self, client, path_params):
        client.respond(None, status=204)

    @_workers.sync('/sync/304')
    def sync_304(self, client, path_params):
        client.respond(None, status=304, headers={'ETag': '"x"'})

    @_workers.sync('/sync/headers/{kind}')
    def sync_headers(self, client, path_params):
        kind = path_params['kind']
        given = {'length': {'Content-Length': '999'},
                 'te': {'Transfer-Encoding': 'chunked'},
                 'close': {'Connection': 'close'},
                 'keep': {'Connection': 'keep-alive'},
                 'date': {'Date': 'Mon, 01 Jan 2024 00:00:00 GMT'},
                 'type': [('content-type', 'text/plain'),
                          ('Content-Type', 'text/csv')]}[kind]
        status = int(client.query['status']) if client.query else 200
        client.respond('body', status=status, headers=given)

    @_workers.sync('/sync/stream')
    def sync_stream(self, client, path_params):
        chunked = client.query and client.query.get('chunked')
        client.response_stream(
            'application/x-ndjson',
            headers={'Transfer-Encoding': 'chunked'} if chunked else None)
        for n in range(3):
            client.send_chunk(b'{"n": %d}\n' % n)
        client.response_stream_end()

    @_workers.sync('/sync/reject')
    def sync_reject(self, client, path_params):
        raise _workers.RejectRequest({'no': 2}, 401)

    @_workers.sync('/sync/cookie')
    def sync_cookie(self, client, path_params):
        client.respond('c', cookies={'s': 'v'}, headers=[('X-B', '1'), ('x-b', '2')])


if __name__ == '__main__':
    App(port=0, address='127.0.0.1', request_timeout=3, keep_alive_timeout=5,
        static_routes={'/static/': os.path.join(ROOT, 'static')},
        metrics_path='/metrics', dashboard_path='/_dashboard',
        max_content_length=4096, max_headers_length=4096,
        pools=[_workers.WorkerPool(WireWorker, num_workers=2, timeout=1,
                                   routes=['/api/**', '/ws/**'])]).run()
