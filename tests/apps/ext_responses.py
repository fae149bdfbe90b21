"""Response shapes (3-tuples, Response objects, request.respond), CR/LF
refusal, RejectRequest from handlers, NDJSON streams and remote_address.

Environment:
  EXT_TRUSTED=1   construct the Dispatcher with trusted_proxies=['127.0.0.1']
"""
import os

import uhttp.workers as _workers
from status_app import StatusDispatcher

EVIL_VALUE = 'v\r\nX-Injected: yes'
EVIL_NAME = 'X-Injected: yes\r\nX-Evil'
BYTES_VALUE = b'caf\xe9'            # Latin-1 bytes, not UTF-8
BYTES_UTF8 = 'na\u00efve'.encode('utf-8')
TEXT_VALUE = 'na\u00efve'


class RespWorker(_workers.Worker):
    def setup(self):
        self.later = []

    def on_idle(self):
        later, self.later = self.later, []
        for request, kwargs in later:
            request.respond(**kwargs)

    # -- well-formed answers ------------------------------------------------

    @_workers.api('/r/tuple3', 'GET')
    def tuple3(self, request):
        return {'shape': 'tuple3'}, 201, {'X-Custom': 'yes', 'X-Number': 7}

    @_workers.api('/r/tuple2', 'GET')
    def tuple2(self, request):
        return {'shape': 'tuple2'}, 202

    @_workers.api('/r/object', 'GET')
    def response_object(self, request):
        return _workers.Response(
            None, data={'shape': 'object'}, status=202,
            headers={'X-Obj': 'from-object'},
            cookies={'sid': 'abc123', 'gone': None})

    @_workers.api('/r/object-text', 'GET')
    def response_object_text(self, request):
        return _workers.Response(
            None, data='plain words', status=200,
            headers={'Content-Type': 'text/plain; charset=UTF-8'})

    @_workers.api('/r/respond-now', 'GET')
    def respond_now(self, request):
        request.respond(data={'shape': 'respond-now'}, status=203,
                        headers={'X-Resp': 'now'}, cookies={'rc': 'one'})
        return _workers.DEFERRED

    @_workers.api('/r/respond-later', 'GET')
    def respond_later(self, request):
        self.later.append((request, {
            'data': {'shape': 'respond-later', 'id': request.request_id},
            'status': 207, 'headers': {'X-Resp': 'later'},
            'cookies': {'lc': 'two', 'old': None}}))
        return _workers.DEFERRED

    # -- CR/LF in headers and cookies -------------------------------------------

    # header values given as bytes go out as those bytes; text as UTF-8
    @_workers.api('/r/bytes-headers', 'GET')
    def bytes_headers(self, request):
        return {'shape': 'bytes'}, 200, {
            'X-Latin': BYTES_VALUE, 'X-Text': TEXT_VALUE,
            'X-Raw': bytearray(BYTES_UTF8)}

    @_workers.api('/r/bytes-respond', 'GET')
    def bytes_respond(self, request):
        request.respond(data='ok', headers=[('X-Latin', BYTES_VALUE),
                                            ('X-Latin', b'second')])

    @_workers.api('/r/bad/unencodable', 'GET')
    def unencodable(self, request):
        return {'never': 'sent'}, 200, {'X-Half': 'a\ud800b'}

    @_workers.api('/r/bad/tuple-value', 'GET')
    def bad_tuple_value(self, request):
        return {'never': 'sent'}, 200, {'X-Evil': EVIL_VALUE}

    @_workers.api('/r/bad/tuple-name', 'GET')
    def bad_tuple_name(self, request):
        return {'never': 'sent'}, 200, {EVIL_NAME: 'v'}

    @_workers.api('/r/bad/object-header', 'GET')
    def bad_object_header(self, request):
        return _workers.Response(None, data={'never': 'sent'},
                                 headers={'X-Evil': 'v\nX-Injected: yes'})

    @_workers.api('/r/bad/object-cookie', 'GET')
    def bad_object_cookie(self, request):
        return _workers.Response(None, data={'never': 'sent'},
                                 cookies={'c': EVIL_VALUE})

    @_workers.api('/r/bad/respond-header', 'GET')
    def bad_respond_header(self, request):
        request.respond(data={'never': 'sent'}, headers={'X-Evil': EVIL_VALUE})
        return _workers.DEFERRED

    @_workers.api('/r/bad/respond-cookie', 'GET')
    def bad_respond_cookie(self, request):
        request.respond(data={'never': 'sent'}, cookies={'c': EVIL_VALUE})
        return _workers.DEFERRED

    @_workers.api('/r/bad/respond-later', 'GET')
    def bad_respond_later(self, request):
        self.later.append((request, {'data': {'never': 'sent'},
                                     'headers': {EVIL_NAME: 'v'}}))
        return _workers.DEFERRED

    # -- RejectRequest from a handler --------------------------------------------

    @_workers.api('/r/reject', 'GET')
    def reject(self, request):
        raise _workers.RejectRequest({'why': 'nope'}, 409)

    @_workers.api('/r/reject-default', 'POST')
    def reject_default(self, request):
        raise _workers.RejectRequest()

    # -- client address ---------------------------------------------------------

    @_workers.api('/r/remote', 'GET')
    def remote(self, request):
        return {'remote': request.remote_address}


class StreamWorker(_workers.Worker):
    """One worker: NDJSON streams (pool timeout is 1 s)."""

    def setup(self):
        self.slow_streams = {}  # request_id -> [request, sent, total]
        self.open = {}          # request_id -> request
        self.disconnected = []

    def on_idle(self):
        for request_id, entry in list(self.slow_streams.items()):
            request, sent, total = entry
            request.send_ndjson({'tick': sent})
            entry[1] = sent + 1
            if entry[1] >= total:
                request.response_stream_end()
                del self.slow_streams[request_id]

    def on_disconnect(self, request_id):
        self.disconnected.append(request_id)
        self.open.pop(request_id, None)
        self.slow_streams.pop(request_id, None)

    @_workers.api('/st/ndjson', 'GET')
    def ndjson(self, request):
        count = int((request.query or {}).get('n', 3))
        request.response_ndjson(headers={'X-Stream': 'nd'},
                                cookies={'stream': 'yes'})
        for index in range(count):
            request.send_ndjson({'i': index, 'text': 'line\nbreak'})
        request.send_ndjson([1, 2, 3])
        request.send_ndjson('tail')
        request.response_stream_end()
        return _workers.DEFERRED

    @_workers.api('/st/bytes-headers', 'GET')
    def bytes_stream(self, request):
        request.response_ndjson(headers={'X-Latin': BYTES_VALUE})
        request.send_ndjson({'one': 1})
        request.response_stream_end()
        return _workers.DEFERRED

    @_workers.api('/st/slow', 'GET')
    def slow(self, request):
        total = int((request.query or {}).get('n', 8))
        request.response_ndjson()
        request.send_ndjson({'start': request.request_id})
        self.slow_streams[request.request_id] = [request, 0, total]
        return _workers.DEFERRED

    @_workers.api('/st/open', 'GET')
    def open_stream(self, request):
        request.response_ndjson()
        request.send_ndjson({'hello': request.request_id})
        self.open[request.request_id] = request
        return _workers.DEFERRED

    @_workers.api('/st/state', 'GET')
    def state(self, request):
        return {'disconnected': self.disconnected, 'open': sorted(self.open)}


class RespDispatcher(StatusDispatcher):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.responses = []

    def on_response(self, response, pending):
        self.responses.append({
            'response_id': response.request_id,
            'pending_id': pending.request_id,
            'status': response.status,
            'path': pending.client.path,
        })
        del self.responses[:-50]

    @_workers.sync('/s/ok')
    def sync_ok(self, client, path_params):
        client.respond({'sync': True}, status=200, headers={'X-Sync': '1'},
                       cookies={'sc': 'sync-cookie'})

    @_workers.sync('/s/bytes-headers')
    def sync_bytes(self, client, path_params):
        client.respond({'sync': True}, headers={'X-Latin': BYTES_VALUE,
                                                'X-Text': TEXT_VALUE})

    @_workers.sync('/s/bad-unencodable')
    def sync_unencodable(self, client, path_params):
        client.respond({'never': 'sent'}, headers={'X-Half': 'a\ud800b'})

    @_workers.sync('/s/bad-value')
    def sync_bad_value(self, client, path_params):
        client.respond({'never': 'sent'}, headers={'X-Evil': EVIL_VALUE})

    @_workers.sync('/s/bad-name')
    def sync_bad_name(self, client, path_params):
        client.respond({'never': 'sent'}, headers={EVIL_NAME: 'v'})

    @_workers.sync('/s/bad-cookie')
    def sync_bad_cookie(self, client, path_params):
        client.respond({'never': 'sent'}, cookies={'c': EVIL_VALUE})

    @_workers.sync('/_responses')
    def seen(self, client, path_params):
        client.respond({'responses': self.responses})



if __name__ == '__main__':
    extra = {}
    if os.environ.get('EXT_TRUSTED') == '1':
        extra['trusted_proxies'] = ['127.0.0.1']
    RespDispatcher(port=0, address='127.0.0.1', pools=[
        _workers.WorkerPool(RespWorker, num_workers=2, routes=['/r/**'],
                            heartbeat_interval=0.1, timeout=10),
        _workers.WorkerPool(StreamWorker, num_workers=1, routes=['/st/**'],
                            heartbeat_interval=0.2, timeout=1),
    ], **extra).run()
