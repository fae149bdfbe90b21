"""HTTP/1.1 wire conformance of every kind of answer, read by h11 (a strict
HTTP/1.1 implementation of its own) as the client: worker results of each
type and status, Response objects, RejectRequest, deferred answers, 504s,
streams, FileResponse and static files with ranges and validators, sync
handlers, /metrics and the dashboard, refusals of the HTTP layer; each
as GET and HEAD, one after another and pipelined on one connection."""
import h11
import pytest

from harness import AppServer
from wire_util import Wire, head_problems, serialized

TARGETS = [
    '/api/json', '/api/text', '/api/bytes', '/api/none',
    '/api/status/201', '/api/status/202', '/api/status/204',
    '/api/status/205', '/api/status/304', '/api/status/404',
    '/api/status/500', '/api/status/503', '/api/empty/204', '/api/empty/304',
    '/api/empty/100', '/api/redirect', '/api/cookies', '/api/reject',
    '/api/boom', '/api/slow', '/api/deferred', '/api/file', '/api/nothing',
    '/nothing', '/sync/json', '/sync/204', '/sync/304', '/sync/reject',
    '/sync/cookie', '/static/a.txt', '/static/docs', '/static/docs/',
    '/static/missing', '/metrics', '/_dashboard', '/_dashboard/data',
    # the server's own headers given by the handler: one of each is sent
    '/api/headers/length', '/api/headers/te', '/api/headers/date',
    '/api/headers/length?status=204', '/api/headers/te?status=304',
    '/sync/headers/length', '/sync/headers/te', '/sync/headers/date',
    '/sync/headers/length?status=204', '/sync/headers/te?status=304',
]
RANGED = ('/api/file', '/static/a.txt')
LIMIT = 4096   # the app's max_headers_length


@pytest.fixture(scope='module')
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp('wire')
    (root / 'static' / 'docs').mkdir(parents=True)
    (root / 'static' / 'a.txt').write_bytes(b'0123456789' * 100)
    (root / 'static' / 'docs' / 'index.html').write_bytes(b'<h1>docs</h1>')
    (root / 'big.bin').write_bytes(bytes(range(256)) * 40)
    app = AppServer('wire_app', [root])
    try:
        app.start()
        yield app
    finally:
        app.cleanup()


@pytest.fixture
def wire(server):
    opened = []

    def connect():
        opened.append(Wire(server.port))
        return opened[-1]

    yield connect
    for one in opened:
        one.close()


def answer(wire, method, target, headers=()):
    wire.request(method, target, headers)
    status, head, body, _ = wire.response()
    assert head_problems(status, head, method, body) == [], (target, head)
    return status, dict(head), body


@pytest.mark.parametrize('method', ['GET', 'HEAD'])
@pytest.mark.parametrize('target', TARGETS)
def test_answer_parses_and_the_connection_goes_on(wire, method, target):
    client = wire()
    status, head, body = answer(client, method, target)
    assert head['connection'] == 'keep-alive'
    # framed right: the next answer on the connection parses too
    assert answer(client, 'GET', '/api/json')[0] == 200
    assert not client.closes(0.2)


@pytest.mark.parametrize('method', ['GET', 'HEAD'])
@pytest.mark.parametrize('target', RANGED)
def test_ranges_and_validators(wire, method, target):
    client = wire()
    etag = answer(client, 'GET', target)[1]['etag']
    for headers, status in (([('Range', 'bytes=1-3')], 206),
                            ([('Range', 'bytes=999999-')], 416),
                            ([('If-None-Match', etag)], 304)):
        got, head, body = answer(client, method, target, headers)
        assert got == status
        if status == 206 and method == 'GET':
            assert len(body) == 3
    assert not client.closes(0.2)


@pytest.mark.parametrize('method', ['GET', 'HEAD'])
@pytest.mark.parametrize('target', ['/api/sse', '/api/sse?chunked=1',
                                    '/api/ndjson', '/api/ndjson?chunked=1'])
def test_streams_end_with_their_connection(wire, method, target):
    client = wire()
    status, head, body = answer(client, method, target)
    assert status == 200 and head['connection'] == 'close'
    chunked = 'chunked' in target and method == 'GET'
    assert (head.get('transfer-encoding') == 'chunked') is chunked
    if method == 'GET':
        assert body.count(b'\n') >= 3
    assert client.closes()


@pytest.mark.parametrize('method', ['GET', 'HEAD'])
@pytest.mark.parametrize('target', ['/sync/stream', '/sync/stream?chunked=1'])
def test_a_sync_handlers_stream_is_framed_as_a_workers(wire, method, target):
    client = wire()
    status, head, body = answer(client, method, target)
    assert status == 200 and head['connection'] == 'close'
    chunked = 'chunked' in target and method == 'GET'
    assert (head.get('transfer-encoding') == 'chunked') is chunked
    assert body == (b'{"n": 0}\n{"n": 1}\n{"n": 2}\n' if method == 'GET'
                    else b'')
    assert client.closes()


def test_head_of_the_dashboards_events_is_only_a_head(wire):
    client = wire()
    status, head, body = answer(client, 'HEAD', '/_dashboard/events')
    assert status == 200
    assert client.closes(5)     # and no event before the close


@pytest.mark.parametrize('methods', [('GET',), ('HEAD',), ('GET', 'HEAD')])
def test_pipelined_answers_keep_their_order_and_framing(server, methods):
    sequence = [(method, target) for target in TARGETS for method in methods]
    raw = b''.join(serialized(method, target) for method, target in sequence)
    client = Wire(server.port)
    try:
        client.sock.sendall(raw)
        for method, target in sequence:
            client.track(method, target)
            status, head, body, _ = client.response()
            assert head_problems(status, head, method, body) == [], target
        assert not client.closes(0.2)
    finally:
        client.close()


@pytest.mark.parametrize('request_head, closes', [
    (b'GET /api/json HTTP/1.0\r\n\r\n', True),
    (b'GET /api/json HTTP/1.0\r\nConnection: keep-alive\r\n\r\n', False),
    (b'GET /api/json HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n', True),
    (b'GET /static/a.txt HTTP/1.0\r\nConnection: keep-alive\r\n\r\n', False),
    (b'GET /api/sse?chunked=1 HTTP/1.0\r\n\r\n', True),
])
def test_connection_state_follows_the_request(wire, request_head, closes):
    client = wire()
    client.request('GET', '/', raw=request_head)
    status, head, body, _ = client.response()
    assert status == 200
    assert 'transfer-encoding' not in dict(head) or b'HTTP/1.1' in request_head
    assert client.closes(1.0) is closes


def test_expect_continue_then_the_answer(wire):
    client = wire()
    client.request('POST', '/api/echo', raw=(
        b'POST /api/echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json'
        b'\r\nContent-Length: 7\r\nExpect: 100-continue\r\n\r\n'))
    # h11 tracks a GET; the 100 arrives before the body is sent
    client.sock.sendall(b'{"a":1}')
    status, head, body, informational = client.response()
    assert informational == [100] and status == 200
    assert not client.closes(0.2)


@pytest.mark.parametrize('request_head', [
    b'HEAD /api/json HTTP/1.1\r\nHost: x\r\nX-Long: %s\r\n\r\n' % (b'a' * LIMIT),
    b'HEAD /api/json?%s HTTP/1.1\r\nHost: x\r\n\r\n' % (b'a' * LIMIT),
    b'HEAD /api/json HTTP/1.1\r\nHost: x\r\nX-Long: %s' % (b'a' * LIMIT),
])
def test_a_head_request_refused_431_gets_no_body(wire, request_head):
    client = wire()
    client.request('HEAD', '/api/json', raw=request_head)
    status, head, body, _ = client.response()
    assert status == 431
    assert client.closes()      # and no byte of a body before the close


def test_a_head_request_timed_out_408_gets_no_body(wire):
    client = wire()
    client.request('HEAD', '/api/json',
                   raw=b'HEAD /api/json HTTP/1.1\r\nHost: x\r\n')
    status, head, body, _ = client.response()
    assert status == 408
    assert client.closes()


@pytest.mark.parametrize('request_head, status', [
    (b'HEAD /api/json HTTP/1.1\r\nHost: x\r\nContent-Length: 99999\r\n\r\n', 413),
    (b'HEAD /api/json HTTP/1.1\r\nHost: x\r\nX: 1\r\n folded\r\n\r\n', 400),
    (b'HEAD /api/json HTTP/1.1\r\n\r\n', 400),
    (b'HEAD /api/json HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n', 501),
    (b'HEAD /api/json HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n', 400),
    (b'HEAD /api/json HTTP/1.2\r\nHost: x\r\n\r\n', 505),
])
def test_head_refusals_carry_no_body(wire, request_head, status):
    client = wire()
    client.request('HEAD', '/api/json', raw=request_head)
    assert client.response()[0] == status
    assert client.closes()


@pytest.mark.parametrize('request_head, status', [
    (b'GET http://wire/api/json?a=1 HTTP/1.1\r\nHost: wire\r\n\r\n', 200),
    (b'OPTIONS /api/json HTTP/1.1\r\nHost: x\r\n\r\n', 405),
    (b'GET /api/json HTTP/1.1\r\nHost: x\r\nX-Long: %s\r\n\r\n'
     % (b'a' * (LIMIT - 60)), 200),
    (b'POST /api/echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n'
     b'\r\n3\r\nabc\r\n0\r\nX-Trailer: 1\r\n\r\n', 200),
])
def test_odd_but_valid_requests(wire, request_head, status):
    client = wire()
    client.request('GET', '/', raw=request_head)
    got, head, body, _ = client.response()
    assert got == status
    assert answer(client, 'GET', '/api/json')[0] == 200


KEY = 'dGhlIHNhbXBsZSBub25jZQ=='
UPGRADE = [('Connection', 'Upgrade'), ('Upgrade', 'websocket'),
           ('Sec-WebSocket-Version', '13'), ('Sec-WebSocket-Key', KEY)]


@pytest.mark.parametrize('method', ['GET', 'HEAD'])
@pytest.mark.parametrize('target, headers', [
    ('/ws/accept', []),                        # a plain request: 426
    ('/ws/reject', UPGRADE),                   # the handler's refusal
    ('/ws/nothing', UPGRADE),                  # no decision: 403
    ('/ws/accept', UPGRADE[:2] + [('Sec-WebSocket-Version', '8'),
                                  ('Sec-WebSocket-Key', KEY)]),
    ('/ws/accept', UPGRADE[:3]),               # no key
])
def test_websocket_refusals_are_plain_answers(wire, method, target, headers):
    client = wire()
    status, head, body = answer(client, method, target, headers)
    assert 400 <= status < 500
    options = {option.strip() for option in head['connection'].split(',')}
    if status == 426:  # RFC 9110 7.8: Upgrade is named in Connection too
        assert 'upgrade' in options and head['upgrade'] == 'websocket'
    if 'close' not in options:
        assert answer(client, 'GET', '/api/json')[0] == 200
    else:
        assert client.closes()


def test_websocket_accept_is_a_101_h11_switches_on(wire):
    client = wire()
    client.request('GET', '/ws/accept', UPGRADE)
    event = client.conn.next_event()
    while event is h11.NEED_DATA:
        client.conn.receive_data(client.sock.recv(65536))
        event = client.conn.next_event()
    assert isinstance(event, h11.InformationalResponse)
    assert event.status_code == 101
    assert client.conn.their_state is h11.SWITCHED_PROTOCOL


def test_a_chunked_stream_cut_short_is_told_from_a_whole_one(wire):
    client = wire()
    client.request('GET', '/api/cut')   # its worker dies after one event
    with pytest.raises(h11.RemoteProtocolError, match='incomplete chunked'):
        client.response()

