"""Deferred responses end to end: a handler returns DEFERRED, the single
worker keeps serving, and the request is answered later with
request.respond() from another request, from on_idle() and from fd
callbacks; an unanswered one gets 504, one kept alive with keep_alive()
gets its 200 after the pool timeout."""
import json
import re
import select
import socket
import threading
import time

APP = 'stream_deferred'
DEFER_TIMEOUT = 3      # DeferWorker pool timeout in the app
KEEP_TIMEOUT = 2       # KeepWorker pool timeout in the app


# -- raw HTTP helpers -------------------------------------------------------------

def open_request(server, method, path, body=b'', headers=None, timeout=15):
    """Send one request on a fresh socket and return the socket unread."""
    sock = socket.create_connection(('127.0.0.1', server.port), timeout=timeout)
    lines = [f'{method} {path} HTTP/1.1', 'Host: 127.0.0.1',
             f'Content-Length: {len(body)}']
    for name, value in (headers or {}).items():
        lines.append(f'{name}: {value}')
    sock.sendall(('\r\n'.join(lines) + '\r\n\r\n').encode() + body)
    return sock


def read_response(sock, timeout=15):
    """Read one response: (status, [(name, value)], body)."""
    sock.settimeout(timeout)
    deadline = time.monotonic() + timeout
    buffer = b''
    while b'\r\n\r\n' not in buffer:
        if time.monotonic() > deadline:
            raise AssertionError(f"no complete header: {buffer!r}")
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError(f"closed before a response: {buffer!r}")
        buffer += chunk
    head, _, body = buffer.partition(b'\r\n\r\n')
    lines = head.decode('latin-1').split('\r\n')
    status = int(lines[0].split()[1])
    headers = []
    for line in lines[1:]:
        name, _, value = line.partition(':')
        headers.append((name.strip().lower(), value.strip()))
    length = int(dict(headers).get('content-length', 0))
    while len(body) < length:
        if time.monotonic() > deadline:
            raise AssertionError(f"body incomplete: {body!r}")
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError(f"closed inside the body: {body!r}")
        body += chunk
    assert len(body) == length, f"extra bytes after the body: {body!r}"
    return status, headers, body


def header(headers, name):
    values = [value for key, value in headers if key == name]
    assert len(values) == 1, f"{name}: {values!r} in {headers!r}"
    return values[0]


def set_cookies(headers):
    """{name: value} from the Set-Cookie headers."""
    cookies = {}
    for key, value in headers:
        if key == 'set-cookie':
            pair = value.split(';', 1)[0]
            name, _, val = pair.partition('=')
            cookies[name.strip()] = val.strip()
    return cookies


def nothing_readable(sock, wait=0.3):
    readable, _, _ = select.select([sock], [], [], wait)
    return not readable


def wait_pending_zero(server):
    server.wait_until(lambda: server.get('/_status').json['pending'] == 0,
                      timeout=10, what='pending == 0')


# -- tests ---------------------------------------------------------------------------

def test_deferred_answered_by_other_requests(module_server):
    server = module_server
    socks = {key: open_request(server, 'GET', f'/api/wait/{key}')
             for key in ('k1', 'k2', 'k3', 'k4')}
    try:
        # one worker, three requests held: it still answers others
        ping = server.wait_until(
            lambda: (lambda r: r if r['waiting'] == ['k1', 'k2', 'k3', 'k4']
                     else None)(server.get('/api/ping').json),
            timeout=10, what='four deferred requests in the worker')
        assert ping['worker'] == 0
        for sock in socks.values():
            assert nothing_readable(sock), "answered before respond()"

        reply = server.post('/api/complete/k2', json_body={
            'data': {'answer': 2}, 'status': 201,
            'headers': {'X-Custom': 'two', 'X-Other': 'yes'},
            'cookies': {'session': 'abc', 'theme': 'dark'}})
        assert reply.status == 200
        assert reply.json == {'completed': 'k2', 'sent': True}
        status, headers, body = read_response(socks['k2'])
        assert status == 201
        assert header(headers, 'x-custom') == 'two'
        assert header(headers, 'x-other') == 'yes'
        assert header(headers, 'content-type').startswith('application/json')
        assert set_cookies(headers) == {'session': 'abc', 'theme': 'dark'}
        assert json.loads(body) == {'answer': 2}

        # the others are still waiting, untouched
        assert nothing_readable(socks['k1'])
        assert nothing_readable(socks['k3'])
        assert server.get('/api/ping').json['waiting'] == ['k1', 'k3', 'k4']

        # no data, 204: no body, and the connection stays usable
        reply = server.post('/api/complete/k4', json_body={'status': 204})
        assert reply.json['sent'] is True
        status, headers, body = read_response(socks['k4'])
        assert status == 204 and body == b''
        if dict(headers).get('connection', 'keep-alive').lower() == 'keep-alive':
            socks['k4'].sendall(b'GET /api/ping HTTP/1.1\r\nHost: x\r\n\r\n')
            status, headers, body = read_response(socks['k4'])
            assert status == 200 and json.loads(body)['worker'] == 0

        # respond() twice: the client still sees exactly one answer
        reply = server.post('/api/complete/k3', json_body={
            'data': [1, 2, 3], 'status': 409, 'twice': True})
        assert reply.json['sent'] is True
        status, headers, body = read_response(socks['k3'])
        assert status == 409
        assert json.loads(body) == [1, 2, 3]
        assert set_cookies(headers) == {}
        assert nothing_readable(socks['k3'], 0.5), "a second answer arrived"

        reply = server.post('/api/complete/k1', json_body={'data': 'hello text'})
        assert reply.json['sent'] is True
        status, headers, body = read_response(socks['k1'])
        assert status == 200
        assert body == b'hello text'
        assert header(headers, 'content-type').startswith('text/')
    finally:
        for sock in socks.values():
            sock.close()
    assert server.get('/api/ping').json['waiting'] == []
    wait_pending_zero(server)


def test_deferred_answered_from_on_idle(module_server):
    server = module_server
    before = server.get('/api/ping').json['idle_calls']
    reply = server.get('/api/via-idle/i1', timeout=15)
    assert reply.status == 202
    assert reply.headers['x-answered-by'] == 'on_idle'
    body = reply.json
    assert body['by'] == 'on_idle' and body['key'] == 'i1'
    assert body['idle_calls_before'] >= before
    assert body['idle_calls_now'] == body['idle_calls_before'] + 1


def test_deferred_answered_from_fd_callbacks(module_server):
    server = module_server
    reply = server.get('/api/via-pipe/p1')
    assert reply.status == 200
    assert reply.json == {'by': 'pipe', 'key': 'p1'}
    assert 'source=pipe' in reply.headers.get('set-cookie', '')
    reply = server.get('/api/via-socket/s1')
    assert reply.status == 200
    assert reply.json == {'by': 'socketpair', 'key': 's1'}
    assert 'source=socketpair' in reply.headers.get('set-cookie', '')

    # many at once, both kinds interleaved: each gets its own answer
    results = {}

    def fetch(kind, key):
        try:
            results[key] = server.get(f'/api/via-{kind}/{key}', timeout=15)
        except Exception as err:  # noqa: BLE001 - reported below
            results[key] = err

    threads = [threading.Thread(target=fetch, args=(
        'pipe' if index % 2 else 'socket', f'c{index}')) for index in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    assert len(results) == 16
    for index in range(16):
        key = f'c{index}'
        reply = results[key]
        assert not isinstance(reply, Exception), reply
        assert reply.status == 200
        assert reply.json == {'by': 'pipe' if index % 2 else 'socketpair',
                              'key': key}
    wait_pending_zero(server)


def _slow_keep(server, out):
    start = time.monotonic()
    try:
        out['reply'] = server.get('/keep/slow?secs=4', timeout=20)
    except Exception as err:  # noqa: BLE001 - reported by the test
        out['reply'] = err
    out['elapsed'] = time.monotonic() - start


def test_unanswered_deferred_gets_504_and_keep_alive_prevents_it(module_server):
    server = module_server
    # the kept-alive request runs meanwhile, in the other pool
    kept = {}
    keeper = threading.Thread(target=_slow_keep, args=(server, kept))
    keeper.start()

    start = time.monotonic()
    sock = open_request(server, 'GET', '/api/forgotten/f1')
    try:
        ping = server.wait_until(
            lambda: (lambda r: r if 'f1' in r['ids'] else None)(
                server.get('/api/ping').json),
            timeout=DEFER_TIMEOUT, interval=0.02, what='f1 in the worker')
        request_id = ping['ids']['f1']
        status, headers, body = read_response(sock, timeout=DEFER_TIMEOUT + 10)
        elapsed = time.monotonic() - start
        assert status == 504, body
        assert json.loads(body)
        assert DEFER_TIMEOUT - 0.3 <= elapsed <= DEFER_TIMEOUT + 6, elapsed
        # logged as a WARNING naming the request and the timeout
        log = server.wait_log(r'WARNING.*timed out', timeout=5)
        lines = [line.split('WARNING', 1)[1] for line in log.splitlines()
                 if 'WARNING' in line and 'timed out' in line
                 and re.search(rf'\b{request_id}\b', line)]
        assert lines, log
        rest = re.sub(rf'\b{request_id}\b', '', lines[0], count=1)
        assert re.search(rf'(?<![\d.]){DEFER_TIMEOUT}(\.0)?(?![\d.])', rest), (
            lines[0])

        # the worker still serves; a late respond() puts nothing on the wire
        reply = server.post('/api/complete/f1', json_body={'data': 'late'})
        assert reply.status == 200
        assert nothing_readable(sock, 0.5), "a second answer after the 504"
        if dict(headers).get('connection', 'keep-alive').lower() == 'keep-alive':
            sock.sendall(b'GET /api/ping HTTP/1.1\r\nHost: x\r\n\r\n')
            status, headers, body = read_response(sock)
            assert status == 200 and b'"waiting"' in body
    finally:
        sock.close()

    keeper.join(25)
    reply = kept.get('reply')
    assert not isinstance(reply, Exception), reply
    assert reply is not None, "the kept-alive request never finished"
    assert reply.status == 200, reply
    assert reply.json['by'] == 'keep_alive'
    # it was answered well after the pool timeout, without a 504
    assert kept['elapsed'] >= KEEP_TIMEOUT + 1.0, kept['elapsed']
    assert not re.search(r'timed out.*KeepWorker', server.log())
    wait_pending_zero(server)


def test_client_leaving_a_deferred_request(module_server):
    server = module_server
    log_before = len(server.log())
    sock = open_request(server, 'GET', '/api/wait/gone')
    ping = server.wait_until(
        lambda: (lambda r: r if 'gone' in r['waiting'] else None)(
            server.get('/api/ping').json),
        timeout=10, what='the deferred request in the worker')
    request_id = ping['ids']['gone']
    sock.close()
    wait_pending_zero(server)
    # the worker hears of it, and answering later is harmless
    server.wait_until(
        lambda: request_id in server.get('/api/ping').json['disconnected'],
        timeout=10, what='on_disconnect for the deferred request')
    reply = server.post('/api/complete/gone', json_body={'data': 'too late'})
    assert reply.status == 200
    assert server.get('/api/ping').json['waiting'] == []
    assert not re.search(r'\b(ERROR|CRITICAL)\b', server.log()[log_before:])


def test_keep_alive_in_a_blocking_handler(module_server):
    server = module_server
    start = time.monotonic()
    reply = server.get('/keep/busy?secs=3.5', timeout=20)
    elapsed = time.monotonic() - start
    assert reply.status == 200, reply
    assert reply.json['by'] == 'busy'
    assert elapsed >= KEEP_TIMEOUT + 1.0, elapsed
    assert not re.search(r'timed out.*KeepWorker', server.log())
    assert not re.search(r'stuck', server.log())
