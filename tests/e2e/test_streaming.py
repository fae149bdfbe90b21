"""Server-Sent Events and NDJSON end to end, read with a real SSE client
(sseclient-py over http.client) and once as raw bytes: the documented
Request methods response_stream(), send_event(), send_chunk(),
response_stream_end(), response_ndjson(), send_ndjson(); streams outliving
the pool timeout; on_disconnect() told to the owning worker only, and sends
after a disconnect dropped quietly."""
import http.client
import json
import os
import re
import socket
import time

import sseclient

import uhttp.workers as _workers
from uhttp.workers.testing import TestServer

APP = 'stream_sse'
POOL_TIMEOUT = 2      # both pools of the app


class SseStream:
    """One streamed GET read through http.client and sseclient."""

    def __init__(self, server, path, timeout=10):
        self.conn = http.client.HTTPConnection('127.0.0.1', server.port,
                                               timeout=timeout)
        self.conn.request('GET', path, headers={'Accept': 'text/event-stream'})
        self.response = self.conn.getresponse()
        self.headers = {k.lower(): v for k, v in self.response.getheaders()}
        self.cookies = [v for k, v in self.response.getheaders()
                        if k.lower() == 'set-cookie']
        self.client = sseclient.SSEClient(self.response)
        self.events = self.client.events()

    def next_event(self):
        return next(self.events)

    def close(self):
        self.response.close()
        self.conn.close()


def cookie_map(values):
    result = {}
    for value in values:
        name, _, rest = value.split(';', 1)[0].partition('=')
        result[name.strip()] = rest.strip()
    return result


def pending(server):
    return server.get('/_status').json['pending']


def errors_in(log):
    return re.findall(r'^.*\b(?:ERROR|CRITICAL)\b.*$', log, re.MULTILINE)


# -- the wire format ------------------------------------------------------------

EXPECTED_SCRIPT = [
    # (event name, id, data, retry) as an SSE client dispatches them
    ('message', None, 'plain text', None),
    ('json', '7', {'a': 1, 'b': [1, 2], 'c': 'ü'}, None),
    ('list', '8', [1, 'two', None], None),
    ('multi', '9', 'line one\nline two\nline three', '2500'),
    ('empty-data', None, '', None),
    ('utf8', None, 'grüße 🌍', None),
    ('raw', None, 'from chunk', None),
    ('message', None, 'split across chunks', None),
    ('end', '10', 'bye', None),
]


def test_sse_client_reads_every_event(module_server):
    stream = SseStream(module_server, '/a/script')
    try:
        assert stream.response.status == 200
        assert stream.headers['content-type'].startswith('text/event-stream')
        assert stream.headers['cache-control'] == 'no-cache'
        assert stream.headers['x-stream'] == 'script'
        assert cookie_map(stream.cookies) == {'flavour': 'mint'}
        start = time.monotonic()
        received = list(stream.events)  # ends at EOF: response_stream_end()
        assert time.monotonic() - start < 8
    finally:
        stream.close()
    assert len(received) == len(EXPECTED_SCRIPT), [str(e) for e in received]
    for event, (name, event_id, data, retry) in zip(received, EXPECTED_SCRIPT):
        assert event.event == name
        assert event.id == event_id, (name, event.id)
        assert event.retry == retry, (name, event.retry)
        if isinstance(data, str):
            assert event.data == data, (name, event.data)
        else:
            assert json.loads(event.data) == data, (name, event.data)


def _parse_sse_blocks(body):
    """[(fields other than data as a dict, [data values])] per event block."""
    assert body.endswith(b'\n\n'), body[-40:]
    blocks = []
    for block in body[:-2].split(b'\n\n'):
        fields = {}
        data = []
        for line in block.decode('utf-8').split('\n'):
            name, sep, value = line.partition(':')
            assert sep, f"line without a colon: {line!r}"
            if value.startswith(' '):
                value = value[1:]
            if name == 'data':
                data.append(value)
            else:
                assert name not in fields, f"{name} twice in {block!r}"
                fields[name] = value
        blocks.append((fields, data))
    return blocks


def read_to_eof(sock, what, timeout=10):
    """Everything `sock` receives until the server closes it; an
    AssertionError saying `what` (and the last bytes) after `timeout`."""
    raw = b''
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        chunk = sock.recv(65536)
        if not chunk:
            return raw
        raw += chunk
    raise AssertionError(f"{what}: {raw[-200:]!r}")


def test_sse_raw_bytes_on_the_wire(module_server):
    server = module_server
    sock = socket.create_connection(('127.0.0.1', server.port), timeout=10)
    try:
        sock.sendall(b'GET /a/script HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n')
        # the server closes the stream: EOF after the last event
        raw = read_to_eof(sock, 'no EOF after the stream ended')
    finally:
        sock.close()
    head, _, body = raw.partition(b'\r\n\r\n')
    lines = head.decode('latin-1').split('\r\n')
    assert lines[0].startswith('HTTP/1.1 200')
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(':')
        headers.setdefault(name.strip().lower(), []).append(value.strip())
    assert headers['content-type'][0].startswith('text/event-stream')
    assert headers['cache-control'] == ['no-cache']
    assert 'content-length' not in headers
    assert cookie_map(headers['set-cookie']) == {'flavour': 'mint'}
    if headers.get('transfer-encoding') == ['chunked']:
        decoded = b''
        while True:
            size_line, _, body = body.partition(b'\r\n')
            size = int(size_line.split(b';')[0], 16)
            if size == 0:
                break
            decoded += body[:size]
            body = body[size + 2:]
        body = decoded

    # exact bytes where the format leaves no choice
    assert body.startswith(b'data: plain text\n\n')
    assert b'data: line one\ndata: line two\ndata: line three\n' in body
    assert b'\nretry: 2500\n' in body
    assert b'\n\nretry: 1000\n\n' in body
    assert b'\n\nevent: raw\ndata: from chunk\n\n' in body  # send_chunk as is
    assert b'\n\ndata: split across chunks\n\n' in body
    assert body.endswith(b'data: bye\n\n')
    assert b'\r' not in body
    assert 'event: utf8\ndata: grüße 🌍\n\n'.encode() in body

    blocks = _parse_sse_blocks(body)
    expected = [
        ({}, ['plain text']),
        ({'id': '7', 'event': 'json'}, None),
        ({'id': '8', 'event': 'list'}, ['[1, "two", null]']),
        ({'id': '9', 'event': 'multi', 'retry': '2500'},
         ['line one', 'line two', 'line three']),
        ({'event': 'empty-data'}, ['']),
        ({'event': 'utf8'}, ['grüße 🌍']),
        ({'retry': '1000'}, []),
        ({'event': 'raw'}, ['from chunk']),
        ({}, ['split across chunks']),
        ({'id': '10', 'event': 'end'}, ['bye']),
    ]
    assert len(blocks) == len(expected), blocks
    for (fields, data), (want_fields, want_data) in zip(blocks, expected):
        assert fields == want_fields
        if want_data is None:  # JSON: one line, any spacing
            assert len(data) == 1
            assert json.loads(data[0]) == {'a': 1, 'b': [1, 2], 'c': 'ü'}
        elif fields.get('event') == 'list':
            assert len(data) == 1 and json.loads(data[0]) == [1, 'two', None]
        else:
            assert data == want_data


def test_response_stream_with_other_content_type(module_server):
    conn = module_server.connection()
    try:
        conn.request('GET', '/a/plain-stream')
        response = conn.getresponse()
        assert response.status == 200
        assert response.getheader('content-type') == 'text/plain; charset=utf-8'
        assert response.getheader('cache-control') == 'no-cache'
        assert response.getheader('x-stream') == 'plain'
        body = response.read()  # up to EOF
    finally:
        conn.close()
    # everything sent before response_stream_end() arrives, then EOF
    assert body == b''.join(f'line {index}\n'.encode() for index in range(5)) + (
        b''.join(bytes([97 + index]) * 16384 for index in range(10)))


def test_stream_headers_in_any_case_replace_the_defaults(module_server):
    """Header names are case-insensitive: 'Cache-Control' and 'Content-Type'
    given to response_stream() are the stream's only ones."""
    raw = module_server.raw(b'GET /a/own-headers HTTP/1.1\r\nHost: x\r\n\r\n',
                            timeout=10)
    head, _, body = raw.partition(b'\r\n\r\n')
    headers = {}
    for line in head.decode('latin-1').split('\r\n')[1:]:
        name, _, value = line.partition(':')
        headers.setdefault(name.strip().lower(), []).append(value.strip())
    assert body == b'event: done\ndata: own headers\n\n'
    assert headers['x-accel-buffering'] == ['no']
    assert headers['cache-control'] == ['no-store'], head
    assert headers['content-type'] == ['text/event-stream; charset=utf-8'], head


def test_ndjson_stream(module_server):
    conn = module_server.connection()
    try:
        conn.request('GET', '/a/ndjson')
        response = conn.getresponse()
        assert response.status == 200
        assert response.getheader('content-type').startswith(
            'application/x-ndjson')
        assert response.getheader('x-stream') == 'ndjson'
        assert 'format=ndjson' in response.getheader('set-cookie')
        body = response.read()  # the stream ends with EOF
    finally:
        conn.close()
    assert body.endswith(b'\n')
    lines = body.split(b'\n')[:-1]
    assert [json.loads(line) for line in lines] == [
        {'i': 0}, [1, 2, 3], 'text\nwith newline', 42, 2.5, None, True,
        {'nested': {'k': ['v', {'x': None}]}}]


# -- live streams ------------------------------------------------------------------

def test_stream_headers_cookies_and_published_events(module_server):
    server = module_server
    stream = SseStream(server, '/a/events')
    try:
        assert stream.response.status == 200
        assert stream.headers['content-type'].startswith('text/event-stream')
        assert stream.headers['cache-control'] == 'no-cache'
        assert stream.headers['x-stream'] == 'events'
        assert stream.headers['x-pool'] == 'PoolA'
        assert cookie_map(stream.cookies) == {'session': 'xyz', 'pool': 'a'}
        hello = stream.next_event()
        assert hello.event == 'hello' and hello.id == '0'
        request_id = json.loads(hello.data)['request_id']
        assert json.loads(hello.data)['pool'] == 'PoolA'

        for number in range(3):
            reply = server.post('/a/publish', json_body={
                'data': {'n': number, 'text': 'two\nlines'}, 'event': 'update',
                'id': f'u{number}'})
            assert reply.status == 200
            assert reply.json['sent'][str(request_id)] is True
            event = stream.next_event()
            assert event.event == 'update'
            assert event.id == f'u{number}'
            assert json.loads(event.data) == {'n': number, 'text': 'two\nlines'}
        reply = server.post('/a/publish', json_body={
            'data': 'first\nsecond', 'event': 'text'})
        event = stream.next_event()
        assert (event.event, event.data) == ('text', 'first\nsecond')
        big = 'x' * 300000 + 'end'
        server.post('/a/publish', json_body={'data': big, 'event': 'big'})
        event = stream.next_event()
        assert event.event == 'big' and event.data == big
    finally:
        stream.close()
    server.wait_until(lambda: request_id in server.get('/a/info').json[
        'disconnected'], timeout=10, what='on_disconnect for the stream')


def test_deferred_request_turned_into_a_stream_later(module_server):
    server = module_server
    conn = http.client.HTTPConnection('127.0.0.1', server.port, timeout=10)
    response = None
    try:
        conn.request('GET', '/a/later')
        server.wait_until(
            lambda: server.post('/a/start-later').status == 200,
            timeout=10, what='the deferred request to reach the worker')
        response = conn.getresponse()
        assert response.status == 200
        assert response.getheader('content-type').startswith('text/event-stream')
        assert response.getheader('x-stream') == 'later'
        events = sseclient.SSEClient(response).events()
        first = next(events)
        assert first.event == 'started-later'
        request_id = json.loads(first.data)['request_id']
        # now exempt from the timeout: still open well after it
        time.sleep(POOL_TIMEOUT + 0.5)
        reply = server.post('/a/publish', json_body={'data': 'after timeout',
                                                     'event': 'late-ok'})
        assert reply.json['sent'][str(request_id)] is True
        event = next(events)
        assert (event.event, event.data) == ('late-ok', 'after timeout')
    finally:
        if response is not None:
            response.close()  # it owns the socket once the stream started
        conn.close()
    server.wait_until(lambda: request_id in server.get('/a/info').json[
        'disconnected'], timeout=10, what='on_disconnect')


def test_stream_outlives_the_pool_timeout(module_server):
    server = module_server
    stream = SseStream(server, '/a/ticker', timeout=10)
    try:
        hello = stream.next_event()
        request_id = json.loads(hello.data)['request_id']
        start = time.monotonic()
        ticks = []
        while time.monotonic() - start < POOL_TIMEOUT * 2 + 0.5:
            event = stream.next_event()
            assert event.event == 'tick'
            ticks.append((time.monotonic() - start, json.loads(event.data)))
        # ticks kept coming well after the request timeout had passed
        late = [tick for at, tick in ticks if at > POOL_TIMEOUT + 1.0]
        assert len(late) >= 2, ticks
        numbers = [tick['tick'] for _, tick in ticks]
        assert numbers == list(range(numbers[0], numbers[0] + len(numbers)))
        assert pending(server) >= 1
        assert not re.search(rf'request {request_id}\b.*timed out', server.log())
    finally:
        stream.close()
    server.wait_until(lambda: request_id in server.get('/a/info').json[
        'disconnected'], timeout=10, what='on_disconnect for the ticker')
    assert request_id not in server.get('/a/info').json['tickers']


def test_disconnect_is_told_to_the_owner_only(module_server):
    server = module_server
    log_before = len(server.log())
    stream_a = SseStream(server, '/a/events')
    stream_b = SseStream(server, '/b/events')
    try:
        id_a = json.loads(stream_a.next_event().data)['request_id']
        hello_b = json.loads(stream_b.next_event().data)
        id_b = hello_b['request_id']
        assert hello_b['pool'] == 'PoolB'
        assert id_a != id_b
        assert pending(server) >= 2

        stream_a.close()
        info_a = server.wait_until(
            lambda: (lambda info: info if id_a in info['disconnected'] else None)(
                server.get('/a/info').json),
            timeout=10, what="PoolA's on_disconnect")
        assert info_a['disconnected'].count(id_a) == 1
        assert id_a not in info_a['subscribers']

        # the other pool's worker was not told anything
        info_b = server.get('/b/info').json
        assert info_b['disconnected'] == []
        assert info_b['subscribers'] == [id_b]

        # sends to the gone stream are dropped quietly; the worker goes on
        for _ in range(3):
            reply = server.post(f'/a/send/{id_a}')
            assert reply.status == 200
            assert reply.json == {'send_event': False, 'send_chunk': False,
                                  'is_open': False}
        assert server.get('/a/info').status == 200
        reply = server.post('/b/publish', json_body={'data': 'still here',
                                                     'event': 'b-only'})
        assert reply.json['sent'] == {str(id_b): True}
        event = stream_b.next_event()
        assert (event.event, event.data) == ('b-only', 'still here')
        assert server.get('/b/info').json['disconnected'] == []
    finally:
        stream_a.close()
        stream_b.close()
    server.wait_until(lambda: id_b in server.get('/b/info').json[
        'disconnected'], timeout=10, what="PoolB's on_disconnect")
    assert server.get('/b/info').json['disconnected'] == [id_b]
    assert id_b not in server.get('/a/info').json['disconnected']
    server.wait_until(lambda: pending(server) == 0, timeout=10,
                      what='pending back to 0')
    assert errors_in(server.log()[log_before:]) == []


def test_pending_returns_to_zero_after_many_disconnects(module_server):
    server = module_server
    streams = [SseStream(server, '/a/events') for _ in range(20)]
    try:
        ids = [json.loads(s.next_event().data)['request_id'] for s in streams]
        assert pending(server) >= 20
    finally:
        for stream in streams:
            stream.close()
    server.wait_until(lambda: pending(server) == 0, timeout=10,
                      what='pending back to 0')
    info = server.wait_until(
        lambda: (lambda info: info if set(ids) <= set(info['disconnected'])
                 else None)(server.get('/a/info').json),
        timeout=10, what='on_disconnect for all 20')
    assert not set(ids) & set(info['subscribers'])


def test_head_on_a_stream_gets_its_head_and_no_events(module_server):
    # HEAD is served by the GET route, its body dropped: for a stream, the
    # head is the whole answer and the worker is told the client is gone
    server = module_server
    sock = socket.create_connection(('127.0.0.1', server.port), timeout=10)
    try:
        sock.sendall(b'HEAD /a/events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n')
        raw = read_to_eof(sock, 'HEAD on a stream never ended')
    finally:
        sock.close()
    head, _, body = raw.partition(b'\r\n\r\n')
    assert head.startswith(b'HTTP/1.1 200') and b'text/event-stream' in head
    assert body == b''
    server.wait_until(lambda: pending(server) == 0, timeout=10,
                      what='pending back to 0')
    reply = server.post('/a/publish', json_body={'data': 'x', 'event': 'e'})
    assert reply.status == 200


class FailingStreams(_workers.Worker):
    @_workers.api('/events/raise', 'GET')
    def events_raise(self, request):
        request.response_stream()
        request.send_event(data='first')
        raise RuntimeError('the database went away mid-stream')

    @_workers.api('/events/bad', 'GET')
    def events_bad(self, request):
        request.response_stream()
        request.send_event(data={'when': {1, 2}})    # not JSON: raises
        return _workers.DEFERRED

    @_workers.api('/events/returns', 'GET')
    def events_returns(self, request):
        request.response_stream()
        request.send_event(data='only')
        return {'done': True}

    @_workers.api('/events/unstarted', 'GET')
    def events_unstarted(self, request):
        request.send_event(data='no stream yet')   # response_stream() missed
        return _workers.DEFERRED

    @_workers.api('/events/badhead', 'GET')
    def events_badhead(self, request):
        request.response_stream(headers={'X-Note': 'a\r\nInjected: 1'})
        return _workers.DEFERRED

    @_workers.api('/events/forgotten', 'GET')
    def events_forgotten(self, request):
        request.response_stream()
        request.send_event(data='still open')   # no DEFERRED, no end


def test_sending_on_a_stream_never_started_is_a_500_at_once():
    pool = _workers.WorkerPool(FailingStreams, num_workers=1,
                               routes=['/events/**'], timeout=30)
    with TestServer(_workers.Dispatcher, [pool]) as server:
        began = time.monotonic()
        reply = server.get('/events/unstarted')
        assert reply.status == 500                # not a 504 after 30 s
        assert time.monotonic() - began < 10
        deadline = time.monotonic() + 5
        while 'send_event() on request' not in server.log_text():
            assert time.monotonic() < deadline, server.log_text()
            time.sleep(0.05)
        assert 'before response_stream()' in server.log_text()
        assert server.get('/events/unstarted').status == 500  # still serving


def test_a_stream_whose_head_cannot_be_sent_is_a_500_like_any_other():
    # its 500 had no body and no content type, unlike the JSON error of
    # every other answer a worker cannot send
    pool = _workers.WorkerPool(FailingStreams, num_workers=1,
                               routes=['/events/**'])
    with TestServer(_workers.Dispatcher, [pool]) as server:
        reply = server.get('/events/badhead')
        assert reply.status == 500
        assert reply.headers['content-type'] == 'application/json'
        assert reply.json() == {'error': 'Internal Server Error'}
        assert 'Injected' not in reply.headers
        deadline = time.monotonic() + 5   # the log is read beside the reply
        while "header 'X-Note' contains CR or LF" not in server.log_text():
            assert time.monotonic() < deadline, server.log_text()
            time.sleep(0.05)
        assert server.status()['streams'] == 0


def test_a_stream_whose_handler_returns_none_stays_open_with_a_warning():
    pool = _workers.WorkerPool(FailingStreams, num_workers=1,
                               routes=['/events/**'], timeout=1)
    with TestServer(_workers.Dispatcher, [pool]) as server:
        with socket.create_connection(('127.0.0.1', server.port),
                                      timeout=5) as sock:
            sock.sendall(b'GET /events/forgotten HTTP/1.1\r\nHost: x\r\n\r\n')
            got = b''
            while b'data: still open' not in got:
                chunk = sock.recv(4096)
                assert chunk, got      # open: not ended under the client
                got += chunk
            deadline = time.monotonic() + 5
            while 'the stream stays open until response_stream_end()' not in (
                    server.log_text()):
                assert time.monotonic() < deadline, server.log_text()
                time.sleep(0.05)
            text = server.log_text()
            assert 'FailingStreams.events_forgotten returned None' in text
            assert server.status()['streams'] == 1


def test_a_stream_whose_handler_fails_is_ended():
    """A handler that raises after starting its stream (itself, or in
    send_event) cannot go on with it: the stream ends, the error is
    logged, and nothing is left open; a value returned instead of DEFERRED
    is dropped with a warning."""
    pool = _workers.WorkerPool(FailingStreams, num_workers=1,
                               routes=['/events/**'], timeout=1)
    with TestServer(_workers.Dispatcher, [pool]) as server:
        for path in ('/events/raise', '/events/bad'):
            data = read_stream(server.port, path)   # ended: EOF, not a hang
            assert data.startswith(b'HTTP/1.1 200'), data
            if path == '/events/raise':
                assert b'data: first' in data
        status = server.status()
        assert status['streams'] == 0 and status['pending'] == 0
        assert 'the database went away mid-stream' in server.log_text()
        assert 'not JSON serializable' in server.log_text()
        with socket.create_connection(('127.0.0.1', server.port),
                                      timeout=5) as sock:
            sock.sendall(b'GET /events/returns HTTP/1.1\r\nHost: x\r\n\r\n')
            deadline = time.monotonic() + 5
            while 'the value is dropped' not in server.log_text():
                assert time.monotonic() < deadline, server.log_text()
                time.sleep(0.05)


def read_stream(port, path):
    with socket.create_connection(('127.0.0.1', port), timeout=5) as sock:
        sock.sendall(f'GET {path} HTTP/1.1\r\nHost: x\r\n\r\n'.encode())
        return read_to_eof(sock, path)


# a WebSocket upgrade of /ws (the key is RFC 6455's example)
UPGRADE = (b'GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n'
           b'Connection: Upgrade\r\nSec-WebSocket-Key: '
           b'dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n')


class FailingSocket(_workers.Worker):
    @_workers.websocket('/ws')
    def chat(self, ws):
        ws.accept()
        raise RuntimeError('failed after accept')


def test_a_websocket_whose_handler_fails_after_accept_is_closed():
    pool = _workers.WorkerPool(FailingSocket, num_workers=1, routes=['/ws'])
    with TestServer(_workers.Dispatcher, [pool]) as server:
        with socket.create_connection(('127.0.0.1', server.port),
                                      timeout=5) as sock:
            sock.sendall(UPGRADE)
            data = read_to_eof(sock, 'the closed WebSocket')
        head, _, frames = data.partition(b'\r\n\r\n')
        assert head.startswith(b'HTTP/1.1 101')
        assert frames[:4] == b'\x88\x02\x03\xf3'   # close, 1011
        assert server.status()['websockets'] == 0


class HeaderSocket(_workers.Worker):
    @_workers.websocket('/ws')
    def chat(self, ws):
        ws.accept(headers={'X-User': 'snow \u2603', 'Sec-WebSocket-Accept':
                           'bogus', 'Connection': 'close',
                           'Content-Length': '5'})


def test_websocket_accept_headers_cannot_replace_the_handshake():
    pool = _workers.WorkerPool(HeaderSocket, num_workers=1, routes=['/ws'])
    with TestServer(_workers.Dispatcher, [pool]) as server:
        with socket.create_connection(('127.0.0.1', server.port),
                                      timeout=5) as sock:
            sock.sendall(UPGRADE)
            head = b''
            while b'\r\n\r\n' not in head:
                chunk = sock.recv(4096)
                assert chunk, head
                head += chunk
        lines = head.partition(b'\r\n\r\n')[0].lower().split(b'\r\n')
        assert lines[0].startswith(b'http/1.1 101')
        assert [line for line in lines if line.startswith(
            b'sec-websocket-accept')] == [
                b'sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo=']
        assert b'connection: upgrade' in lines
        assert not [line for line in lines if line.startswith(
            (b'content-length', b'connection: close'))]
        assert 'x-user: snow \u2603'.encode() in lines


# -- chunked streams: a stream cut short can be told from a whole one ----------

class Exports(_workers.Worker):
    @_workers.api('/export', 'GET')
    def export(self, request):
        chunked = request.query is None or 'plain' not in request.query
        request.response_ndjson(headers={'Transfer-Encoding': 'chunked'}
                                if chunked else None)
        for index in range(3):
            request.send_ndjson({'row': index})
        if request.query and 'die' in request.query:
            os._exit(1)                        # the worker dies mid-export
        request.send_chunk(b'')                # nothing: no chunk, no end
        request.send_chunk('tail\n')
        request.response_stream_end()
        return _workers.DEFERRED

    @_workers.api('/events', 'GET')
    def events(self, request):
        request.response_stream(headers=[('transfer-encoding', 'Chunked')])
        request.send_event(data={'n': 1}, event='tick')
        request.response_stream_end()
        return _workers.DEFERRED


ROWS = b'{"row": 0}\n{"row": 1}\n{"row": 2}\n'


def exchange(server, request):
    """Everything the server sends back to `request` until it closes."""
    with socket.create_connection(('127.0.0.1', server.port),
                                  timeout=10) as sock:
        sock.sendall(request)
        return read_to_eof(sock, request)


def unchunk(body):
    """A chunked body decoded, and whether its last chunk came."""
    decoded = b''
    while body:
        size_line, _, body = body.partition(b'\r\n')
        size = int(size_line, 16)
        if size == 0:
            return decoded, body == b'\r\n'
        assert body[size:size + 2] == b'\r\n', body
        decoded += body[:size]
        body = body[size + 2:]
    return decoded, False


def test_a_stream_that_asks_for_chunks_is_chunked_and_ends_whole():
    pool = _workers.WorkerPool(Exports, num_workers=1)
    with TestServer(_workers.Dispatcher, [pool]) as server:
        raw = exchange(server, b'GET /export HTTP/1.1\r\nHost: x\r\n\r\n')
        head, _, body = raw.partition(b'\r\n\r\n')
        assert b'\r\ntransfer-encoding: chunked\r\n' in head.lower(), head
        assert b'content-length' not in head.lower()
        assert unchunk(body) == (ROWS + b'tail\n', True)
        # what HTTP clients read of it
        conn = http.client.HTTPConnection('127.0.0.1', server.port,
                                          timeout=10)
        conn.request('GET', '/events')
        reply = conn.getresponse()
        assert reply.getheader('transfer-encoding') == 'chunked'
        assert reply.read() == b'event: tick\ndata: {"n": 1}\n\n'
        conn.close()


def test_a_chunked_stream_whose_worker_dies_lacks_its_last_chunk():
    pool = _workers.WorkerPool(Exports, num_workers=1)
    with TestServer(_workers.Dispatcher, [pool]) as server:
        raw = exchange(server,
                       b'GET /export?die=1 HTTP/1.1\r\nHost: x\r\n\r\n')
        _, _, body = raw.partition(b'\r\n\r\n')
        assert unchunk(body) == (ROWS, False)
        conn = http.client.HTTPConnection('127.0.0.1', server.port,
                                          timeout=10)
        conn.request('GET', '/export?die=1')
        reply = conn.getresponse()
        try:
            reply.read()
        except http.client.IncompleteRead as err:
            assert err.partial == ROWS
        else:
            raise AssertionError('a cut stream was read as a whole one')
        finally:
            conn.close()


def test_streams_without_chunks_and_to_http_1_0_end_with_the_connection():
    pool = _workers.WorkerPool(Exports, num_workers=1)
    with TestServer(_workers.Dispatcher, [pool]) as server:
        for request in (b'GET /export?plain=1 HTTP/1.1\r\nHost: x\r\n\r\n',
                        b'GET /export HTTP/1.0\r\n\r\n'):
            raw = exchange(server, request)
            head, _, body = raw.partition(b'\r\n\r\n')
            assert b'transfer-encoding' not in head.lower(), head
            assert body == ROWS + b'tail\n'
        raw = exchange(server, b'HEAD /export HTTP/1.1\r\nHost: x\r\n\r\n')
        assert raw.endswith(b'\r\n\r\n') and b'row' not in raw


class SyncStreams(_workers.Dispatcher):
    @_workers.sync('/sync/export')
    def export(self, client, path_params):
        client.response_stream('application/x-ndjson',
                               headers={'Transfer-Encoding': 'chunked'})
        for index in range(3):
            client.send_ndjson({'row': index})
        client.send_event(data='tail', event='end')
        client.response_stream_end()


def test_a_sync_handlers_stream_asks_for_chunks_as_a_workers_does():
    # the header used to go out as given over an unframed body: a body no
    # HTTP client could read
    with TestServer(SyncStreams, []) as server:
        raw = exchange(server, b'GET /sync/export HTTP/1.1\r\nHost: x\r\n\r\n')
        head, _, body = raw.partition(b'\r\n\r\n')
        assert head.lower().count(b'transfer-encoding: chunked') == 1, head
        assert b'content-type: application/x-ndjson' in head.lower()
        assert unchunk(body) == (ROWS + b'event: end\ndata: tail\n\n', True)
        raw = exchange(server, b'GET /sync/export HTTP/1.0\r\n\r\n')
        head, _, body = raw.partition(b'\r\n\r\n')
        assert b'transfer-encoding' not in head.lower()
        assert body == ROWS + b'event: end\ndata: tail\n\n'
