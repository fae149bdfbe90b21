"""Response shapes on the wire: (data, status, headers) tuples, Response
objects, request.respond(); CR/LF refusal in headers and cookies;
RejectRequest from a handler; NDJSON streams; request.remote_address."""
import json
import re
import socket
import time

import pytest

APP = 'ext_responses'
ERROR_LINE = r'(?m)^\S+ \S+ ERROR '


def parse_raw(raw):
    """(status, [(lower name, value), ...], body) of one raw HTTP response."""
    head, sep, body = raw.partition(b'\r\n\r\n')
    assert sep, f"no complete response head in {raw!r}"
    lines = head.decode('latin-1').split('\r\n')
    status = int(lines[0].split()[1])
    headers = []
    for line in lines[1:]:
        name, _, value = line.partition(':')
        headers.append((name.strip().lower(), value.strip()))
    return status, headers, body


def header(headers, name):
    values = [value for key, value in headers if key == name]
    assert len(values) == 1, (name, headers)
    return values[0]


def cookies_of(headers):
    return sorted(value for key, value in headers if key == 'set-cookie')


def raw_get(server, path, extra=b'', timeout=5):
    request = (f'GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n'
               'Connection: close\r\n').encode() + extra + b'\r\n'
    return server.raw(request, timeout=timeout)


def error_count(server):
    return len(re.findall(ERROR_LINE, server.log()))


# -- well-formed answers ---------------------------------------------------------

def test_handler_returns_data_status_headers(module_server):
    status, headers, body = parse_raw(raw_get(module_server, '/r/tuple3'))
    assert status == 201
    assert header(headers, 'x-custom') == 'yes'
    assert header(headers, 'x-number') == '7'
    assert header(headers, 'content-type').startswith('application/json')
    assert json.loads(body) == {'shape': 'tuple3'}


def test_handler_returns_data_status(module_server):
    reply = module_server.get('/r/tuple2')
    assert reply.status == 202
    assert reply.json == {'shape': 'tuple2'}


def test_handler_returns_response_object(module_server):
    status, headers, body = parse_raw(raw_get(module_server, '/r/object'))
    assert status == 202
    assert header(headers, 'x-obj') == 'from-object'
    assert json.loads(body) == {'shape': 'object'}
    assert cookies_of(headers) == ['gone=; Max-Age=0', 'sid=abc123']


def test_response_object_gets_request_id(module_server):
    assert module_server.get('/r/object').status == 202
    seen = module_server.get('/_responses').json['responses']
    mine = [entry for entry in seen if entry['path'] == '/r/object']
    assert mine
    for entry in mine:
        assert entry['response_id'] == entry['pending_id']
        assert isinstance(entry['response_id'], int) and entry['response_id'] > 0


def test_response_object_with_own_content_type(module_server):
    reply = module_server.get('/r/object-text')
    assert reply.status == 200
    assert reply.headers['content-type'] == 'text/plain; charset=UTF-8'
    assert reply.body == b'plain words'


def test_request_respond_with_headers_and_cookies(module_server):
    status, headers, body = parse_raw(raw_get(module_server, '/r/respond-now'))
    assert status == 203
    assert header(headers, 'x-resp') == 'now'
    assert cookies_of(headers) == ['rc=one']
    assert json.loads(body) == {'shape': 'respond-now'}


def test_deferred_request_respond_later(module_server):
    status, headers, body = parse_raw(raw_get(module_server, '/r/respond-later'))
    assert status == 207
    assert header(headers, 'x-resp') == 'later'
    assert cookies_of(headers) == ['lc=two', 'old=; Max-Age=0']
    data = json.loads(body)
    assert data['shape'] == 'respond-later' and data['id'] > 0


def raw_header_values(raw, name):
    """The bytes of every `name:` line's value in a raw response head."""
    head = raw.partition(b'\r\n\r\n')[0]
    found = []
    for line in head.split(b'\r\n')[1:]:
        key, _, value = line.partition(b':')
        if key.strip().lower() == name:
            found.append(value.strip())
    return found


@pytest.mark.parametrize('path', ['/r/bytes-headers', '/s/bytes-headers'])
def test_bytes_header_values_go_out_as_given(module_server, path):
    raw = raw_get(module_server, path)
    assert raw.startswith(b'HTTP/1.1 200'), raw[:200]
    assert raw_header_values(raw, b'x-latin') == [b'caf\xe9']
    # text is sent as UTF-8
    assert raw_header_values(raw, b'x-text') == ['na\u00efve'.encode()]
    if path.startswith('/r/'):
        assert raw_header_values(raw, b'x-raw') == ['na\u00efve'.encode()]


@pytest.mark.parametrize('path', ['/r/bad/unencodable', '/s/bad-unencodable'])
def test_text_with_no_bytes_to_send_is_500_and_logged(module_server, path):
    logged = r'(?m)ERROR .*lone surrogate'
    before = len(re.findall(logged, module_server.log()))
    raw = raw_get(module_server, path)
    assert raw, "no answer at all to a header that cannot be encoded"
    status, _, body = parse_raw(raw)
    assert status == 500 and b'never' not in body
    module_server.wait_log(logged, count=before + 1)
    assert module_server.get('/s/ok').status == 200
    assert module_server.get('/r/tuple2').status == 202


def test_bytes_header_values_of_respond_and_streams(module_server):
    raw = raw_get(module_server, '/r/bytes-respond')
    assert raw.startswith(b'HTTP/1.1 200'), raw[:200]
    assert raw_header_values(raw, b'x-latin') == [b'caf\xe9, second']
    raw = raw_get(module_server, '/st/bytes-headers')
    assert raw.startswith(b'HTTP/1.1 200'), raw[:200]
    assert raw_header_values(raw, b'x-latin') == [b'caf\xe9']
    assert b'{"one": 1}' in raw or b'{"one":1}' in raw


# -- CR/LF injection is refused ----------------------------------------------------

@pytest.mark.parametrize('path', [
    '/r/bad/tuple-value',
    '/r/bad/tuple-name',
    '/r/bad/object-header',
    '/r/bad/object-cookie',
    '/r/bad/respond-header',
    '/r/bad/respond-cookie',
    '/r/bad/respond-later',
])
def test_crlf_from_worker_is_refused(module_server, path):
    before = error_count(module_server)
    raw = raw_get(module_server, path)
    status, headers, body = parse_raw(raw)
    assert status == 500
    assert b'x-injected' not in raw.lower()
    assert all(name != 'x-evil' for name, _ in headers)
    assert b'never' not in body
    module_server.wait_log(ERROR_LINE, count=before + 1)
    # the worker keeps serving
    assert module_server.get('/r/tuple2').status == 202


@pytest.mark.parametrize('path', ['/s/bad-value', '/s/bad-name', '/s/bad-cookie'])
def test_crlf_from_sync_handler_is_refused(app_server, path):
    server = app_server(APP)
    before = error_count(server)
    raw = raw_get(server, path, timeout=4)
    assert raw, "no answer at all to a sync handler whose header has CR/LF"
    status, headers, body = parse_raw(raw)
    assert status == 500
    assert b'x-injected' not in raw.lower()
    assert b'never' not in body
    server.wait_log(ERROR_LINE, count=before + 1)
    # the handler ran once, not over and over
    time.sleep(0.3)
    assert len(re.findall(rf'ERROR .*{re.escape(path)}', server.log())) <= 1
    reply = server.get('/s/ok')
    assert reply.status == 200 and reply.json == {'sync': True}


def test_sync_handler_headers_and_cookies_on_the_wire(module_server):
    status, headers, body = parse_raw(raw_get(module_server, '/s/ok'))
    assert status == 200
    assert header(headers, 'x-sync') == '1'
    assert cookies_of(headers) == ['sc=sync-cookie']


# -- RejectRequest from a handler ----------------------------------------------------

def test_reject_request_from_handler(module_server):
    reply = module_server.get('/r/reject')
    assert reply.status == 409
    assert reply.json == {'why': 'nope'}


def test_reject_request_defaults_from_handler(module_server):
    reply = module_server.post('/r/reject-default', json_body={'a': 1})
    assert reply.status == 403
    assert reply.json == {'error': 'Rejected'}


# -- NDJSON streams ----------------------------------------------------------------

def read_stream(server, path, timeout=10):
    """Read a streamed response until the server closes; (status, headers,
    lines, seconds)."""
    start = time.monotonic()
    raw = raw_get(server, path, timeout=timeout)
    elapsed = time.monotonic() - start
    status, headers, body = parse_raw(raw)
    assert body.endswith(b'\n'), body
    lines = [json.loads(line) for line in body.split(b'\n')[:-1]]
    return status, headers, lines, elapsed


def test_ndjson_stream(module_server):
    status, headers, lines, elapsed = read_stream(module_server, '/st/ndjson?n=3')
    assert status == 200
    assert header(headers, 'content-type') == 'application/x-ndjson'
    assert header(headers, 'x-stream') == 'nd'
    assert cookies_of(headers) == ['stream=yes']
    assert 'content-length' not in dict(headers)
    assert lines == [{'i': 0, 'text': 'line\nbreak'},
                     {'i': 1, 'text': 'line\nbreak'},
                     {'i': 2, 'text': 'line\nbreak'},
                     [1, 2, 3], 'tail']
    # response_stream_end() closes the connection: no wait for a timeout
    assert elapsed < 4


def test_ndjson_stream_outlives_request_timeout(module_server):
    # the pool's timeout is 1 s; this stream lasts about 2 s
    status, _, lines, elapsed = read_stream(module_server, '/st/slow?n=10',
                                            timeout=15)
    assert status == 200
    assert 'start' in lines[0]
    assert lines[1:] == [{'tick': index} for index in range(10)]
    assert elapsed > 1.2
    assert 'timed out' not in module_server.log()


def test_ndjson_client_leaving_calls_on_disconnect(module_server):
    sock = socket.create_connection(('127.0.0.1', module_server.port), timeout=5)
    try:
        sock.sendall(b'GET /st/open HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n')
        data = b''
        deadline = time.monotonic() + 5
        while b'\n' not in data.partition(b'\r\n\r\n')[2]:
            assert time.monotonic() < deadline, data
            chunk = sock.recv(4096)
            assert chunk, data
            data += chunk
        _, headers, body = parse_raw(data)
        assert header(headers, 'content-type') == 'application/x-ndjson'
        request_id = json.loads(body.split(b'\n')[0])['hello']
        state = module_server.get('/st/state').json
        assert request_id in state['open']
    finally:
        sock.close()

    def gone():
        state = module_server.get('/st/state').json
        return request_id in state['disconnected'] and (
            request_id not in state['open'])
    module_server.wait_until(gone, timeout=10, what='on_disconnect')


# -- remote_address ------------------------------------------------------------------

def test_remote_address_is_client_ip(module_server):
    assert module_server.get('/r/remote').json == {'remote': '127.0.0.1'}


def test_forwarded_for_ignored_without_trusted_proxies(module_server):
    reply = module_server.get('/r/remote',
                              headers={'X-Forwarded-For': '203.0.113.7'})
    assert reply.json == {'remote': '127.0.0.1'}


def test_forwarded_for_honoured_with_trusted_proxies(app_server):
    server = app_server(APP, env={'EXT_TRUSTED': '1'})
    reply = server.get('/r/remote', headers={'X-Forwarded-For': '203.0.113.7'})
    assert reply.json == {'remote': '203.0.113.7'}
    assert server.get('/r/remote').json == {'remote': '127.0.0.1'}


@pytest.mark.parametrize('forwarded, remote', [
    ('<script>x</script>', '127.0.0.1'),          # nothing usable: the peer
    ('203.0.113.7, not-an-ip', '203.0.113.7'),    # the garbage is dropped
    ('[2001:db8::1]:443, 198.51.100.2:8080', '198.51.100.2'),
    ('999.1.1.1', '127.0.0.1'),
    ('::1%<script>alert(1)<script>', '127.0.0.1'),   # a zone takes any text
    ('fe80::1%eth0, 203.0.113.9', '203.0.113.9'),
])
def test_forwarded_for_entries_that_are_no_ip_address_are_dropped(
        app_server, forwarded, remote):
    # a trusted proxy passing the client's header on made any text the
    # remote_address (the access log's client, a rate limiter's key)
    server = app_server(APP, env={'EXT_TRUSTED': '1'})
    reply = server.get('/r/remote', headers={'X-Forwarded-For': forwarded})
    assert reply.json == {'remote': remote}
