"""HTTPS: a Dispatcher with ssl_context, verified by a client that trusts
only a test CA (made with trustme)."""
import http.client
import json
import socket
import ssl

import pytest
import trustme

from harness import AppServer


@pytest.fixture(scope='module')
def tls(tmp_path_factory):
    folder = tmp_path_factory.mktemp('core_tls')
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
    try:
        app.start()
        context = ssl.create_default_context()
        ca.configure_trust(context)
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
    # the server goes on serving verified clients
    conn = https(tls)
    try:
        assert fetch(conn, 'GET', '/health')[0] == 200
    finally:
        conn.close()


def test_plain_http_to_https_port_does_not_get_an_answer(tls):
    app, _ = tls
    sock = socket.create_connection(('127.0.0.1', app.port), timeout=5)
    try:
        sock.sendall(b'GET /health HTTP/1.1\r\nHost: x\r\n\r\n')
        data = b''
        try:
            while True:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                data += chunk
        except (socket.timeout, ConnectionResetError):
            pass  # a TLS server may reset a plain-text client
        assert b'"status": "ok"' not in data
    finally:
        sock.close()
    conn = https(tls)
    try:
        assert fetch(conn, 'GET', '/health')[0] == 200
    finally:
        conn.close()
