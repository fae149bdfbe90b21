"""HTTPS: a Dispatcher with ssl_context, verified by a client that trusts
only a test CA (made with trustme)."""
import http.client
import json
import socket
import ssl
import time

import pytest
import trustme

import uhttp.workers as workers
from uhttp.workers.testing import TestServer

from harness import AppServer, read_to_end


def tls_app(folder):
    """An AppServer of core_tls (not started) with a certificate made for
    127.0.0.1 in `folder`, and a client context that trusts only its CA."""
    ca = trustme.CA()
    cert = ca.issue_cert('127.0.0.1')
    cert_path = folder / 'server.pem'
    key_path = folder / 'server.key'
    cert.cert_chain_pems[0].write_to_path(str(cert_path))
    for extra in cert.cert_chain_pems[1:]:
        extra.write_to_path(str(cert_path), append=True)
    cert.private_key_pem.write_to_path(str(key_path))
    app = AppServer('core_tls', env={'CORE_TLS_CERT': str(cert_path),
                                     'CORE_TLS_KEY': str(key_path)})
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return app, context


@pytest.fixture(scope='module')
def tls(tmp_path_factory):
    app, context = tls_app(tmp_path_factory.mktemp('core_tls'))
    try:
        app.start()
        yield app, context
    finally:
        app.cleanup()


def https(tls, timeout=10):
    app, context = tls
    return http.client.HTTPSConnection('127.0.0.1', app.port, timeout=timeout,
                                       context=context)


def fetch(conn, method, path, body=None, headers=None):
    conn.request(method, path, body=body, headers=headers or {})
    response = conn.getresponse()
    return response.status, response.read(), response


def assert_still_serving(tls):
    """After a bad client, the server goes on serving good ones."""
    conn = https(tls)
    try:
        assert fetch(conn, 'GET', '/health')[0] == 200
    finally:
        conn.close()


def test_log_says_https(tls):
    app, _ = tls
    assert f'listening on https://127.0.0.1:{app.port}' in app.log()


def test_pool_route_over_https(tls):
    conn = https(tls)
    try:
        status, body, _ = fetch(conn, 'GET', '/api/hello')
        assert status == 200
        assert json.loads(body)['hello'] == 'tls'
        peer = conn.sock.getpeercert()
        assert ('IP Address', '127.0.0.1') in peer['subjectAltName']
    finally:
        conn.close()


def test_sync_route_and_json_body_over_https(tls):
    conn = https(tls)
    try:
        status, body, _ = fetch(conn, 'GET', '/health')
        assert status == 200
        assert json.loads(body) == {'status': 'ok'}
        payload = {'text': 'x' * 20000, 'list': list(range(100))}
        status, body, _ = fetch(conn, 'POST', '/api/echo',
                                body=json.dumps(payload),
                                headers={'Content-Type': 'application/json'})
        assert status == 200
        assert json.loads(body) == {'data': payload}
    finally:
        conn.close()


def test_keep_alive_over_https(tls):
    conn = https(tls)
    try:
        fetch(conn, 'GET', '/health')
        sock = conn.sock
        for number in range(40):
            path = '/api/hello' if number % 2 else '/health'
            status, _, response = fetch(conn, 'GET', path)
            assert status == 200
            assert conn.sock is sock
    finally:
        conn.close()


def test_unknown_path_over_https(tls):
    conn = https(tls)
    try:
        status, _, _ = fetch(conn, 'GET', '/api/none')
        assert status == 404
    finally:
        conn.close()


def test_untrusting_client_fails_verification(tls):
    app, _ = tls
    context = ssl.create_default_context()  # system CAs only
    conn = http.client.HTTPSConnection('127.0.0.1', app.port, timeout=10,
                                       context=context)
    try:
        with pytest.raises(ssl.SSLCertVerificationError):
            conn.request('GET', '/health')
    finally:
        conn.close()
    assert_still_serving(tls)  # verified clients


@pytest.mark.parametrize('request_bytes', [
    b'GET /health HTTP/1.1\r\nHost: x\r\n\r\n',
    b'POST /api/echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/'
    b'octet-stream\r\nContent-Length: 4000000\r\n\r\n' + b'x' * 4000000,
], ids=['get', 'post-with-body'])
def test_plain_http_to_https_port_gets_a_400_that_says_so(tls, request_bytes):
    """Not a reset the client cannot read (curl: "Empty reply from server"
    or "Connection reset by peer"): a plain-text 400 naming the mistake,
    also to a client that sends its whole body first."""
    app, _ = tls
    refusals = app.log().count('"- -" 400 ')
    sock = socket.create_connection(('127.0.0.1', app.port), timeout=10)
    try:
        sock.sendall(request_bytes)
        data = read_to_end(sock)
    finally:
        sock.close()
    head, _, body = data.partition(b'\r\n\r\n')
    assert head.startswith(b'HTTP/1.1 400 '), data[:200]
    assert b'connection: close' in head.lower()
    assert b'HTTPS' in body and b'plain HTTP' in body
    assert b'"status": "ok"' not in data
    app.wait_log(r'"- -" 400 ', count=refusals + 1)  # logged as a refusal
    assert_still_serving(tls)


def read_to_tls_end(tls, request):
    """Send `request` and read until the connection ends; a client that
    does not forgive a TCP end without TLS close_notify raises SSLEOFError."""
    app, context = tls
    raw = socket.create_connection(('127.0.0.1', app.port), timeout=10)
    sock = context.wrap_socket(raw, server_hostname='127.0.0.1',
                               suppress_ragged_eofs=False)
    try:
        sock.sendall(request)
        return read_to_end(sock)
    finally:
        sock.close()


@pytest.mark.parametrize('request_bytes', [
    b'GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n',
    b'GET /api/hello HTTP/1.0\r\n\r\n',
    b'GET /nowhere HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n',
    b'NONSENSE\r\n\r\n',
], ids=['sync-close', 'pool-http10', 'not-found-close', 'bad-request'])
def test_answer_that_ends_the_connection_ends_with_close_notify(
        tls, request_bytes):
    data = read_to_tls_end(tls, request_bytes)
    assert data.startswith(b'HTTP/1.1 ')
    head, _, body = data.partition(b'\r\n\r\n')
    assert b'connection: close' in head.lower()
    length = [line for line in head.lower().split(b'\r\n')
              if line.startswith(b'content-length:')]
    assert length and int(length[0].split(b':')[1]) == len(body)


def test_body_over_the_limit_sent_whole_before_reading_gets_its_413(tls):
    """http.client sends its whole body before it reads: the refusal must
    not be lost to a connection reset while the body still arrives."""
    conn = https(tls, timeout=30)
    try:
        status, body, response = fetch(
            conn, 'POST', '/api/echo', body=b'x' * (40 << 20),
            headers={'Content-Type': 'application/octet-stream'})
        assert status == 413
        assert response.getheader('connection') == 'close'
    finally:
        conn.close()
    assert_still_serving(tls)


def test_shutdown_does_not_wait_for_a_connection_that_sent_no_request(
        tmp_path):
    """A client that made its TLS handshake and sent nothing yet (browsers
    open such spare connections) has no request in flight: SIGTERM stops
    the dispatcher at once, not after shutdown_timeout (10 s)."""
    app, context = tls_app(tmp_path)
    spare = None
    try:
        app.start()
        raw = socket.create_connection(('127.0.0.1', app.port), timeout=10)
        spare = context.wrap_socket(raw, server_hostname='127.0.0.1')
        conn = http.client.HTTPSConnection(
            '127.0.0.1', app.port, timeout=10, context=context)
        assert fetch(conn, 'GET', '/health')[0] == 200  # the handshake is in
        conn.close()
        started = time.monotonic()
        assert app.stop(timeout=20) == 0
        assert time.monotonic() - started < 5, app.log()
    finally:
        if spare is not None:
            spare.close()
        app.cleanup()


def test_request_whose_head_ends_inside_a_record_the_server_read_part_of(tls):
    """The head comes in two TLS records: 10 KB of it, then its end and the
    whole body. The server reads the second record only up to its head
    limit; the rest, decrypted, waits inside OpenSSL, where the selector
    cannot see it (nothing more comes on the socket): it is read anyway,
    and the request answered at once, not after request_timeout."""
    app, context = tls
    raw = socket.create_connection(('127.0.0.1', app.port), timeout=10)
    sock = context.wrap_socket(raw, server_hostname='127.0.0.1')
    try:
        payload = json.dumps({'text': 'b' * 14000}).encode()
        sock.sendall(b'POST /api/echo HTTP/1.1\r\nHost: x\r\nX-Pad: '
                     + b'p' * 10000 + b'\r\n')
        time.sleep(0.3)  # that record is read alone
        sock.sendall(b'Content-Type: application/json\r\nContent-Length: '
                     + str(len(payload)).encode() + b'\r\n\r\n' + payload)
        sock.settimeout(5)
        response = http.client.HTTPResponse(sock)
        response.begin()
        assert response.status == 200
        assert json.loads(response.read()) == {'data': {'text': 'b' * 14000}}
    finally:
        sock.close()


class HoldWorker(workers.Worker):
    @workers.api('/api/hold', 'GET')
    def hold(self, request):
        time.sleep(float(request.query['s']))
        return {'held': True}


def test_too_many_connections_get_their_503_over_https():
    """Past max_waiting_clients (none idle to close) a new connection is
    answered 503; over TLS that answer can only go after the handshake,
    which needs the client's next flight: it is written then, not left in
    the buffer of a connection closed at once (the client saw the
    connection end without an answer)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca = trustme.CA()
    ca.issue_cert('127.0.0.1').configure_cert(context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    pool = workers.WorkerPool(HoldWorker, num_workers=2, routes=['/api/**'])
    with TestServer(workers.Dispatcher, [pool], ssl_context=context,
                    max_waiting_clients=2) as server:
        busy = []
        try:
            for _ in range(2):
                conn = http.client.HTTPSConnection(
                    '127.0.0.1', server.port, timeout=10,
                    context=client_context)
                conn.request('GET', '/api/hold?s=1.5')
                busy.append(conn)
            deadline = time.monotonic() + 5
            while server.status()['connections'] < 2:
                assert time.monotonic() < deadline
                time.sleep(0.02)
            extra = http.client.HTTPSConnection(
                '127.0.0.1', server.port, timeout=10, context=client_context)
            status, body, response = fetch(extra, 'GET', '/api/hold?s=0')
            extra.close()
            assert status == 503
            assert json.loads(body) == {'error': 'Too many connections'}
            assert response.getheader('retry-after') == '1'
            for conn in busy:
                assert conn.getresponse().status == 200
        finally:
            for conn in busy:
                conn.close()
