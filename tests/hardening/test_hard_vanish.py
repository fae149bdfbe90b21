"""Clients vanishing mid-request and mid-stream leak nothing (app
tests/apps/hard_vanish.py).

Clients close (FIN) or reset (RST) after half the headers, after half the
body, right after a full request to a slow handler, with a pipelined
request half sent behind a pending one, mid big answer, and mid SSE or
NDJSON stream. Afterwards the dispatcher's pending table and stream count
are 0, the stream worker was told about every stream (on_disconnect), no
connection is left, and the dispatcher's fd count is back to its baseline.
"""
import socket
import struct
import threading
import time

import pytest

from hard_util import fd_count, probe, request_bytes, settled_fds, wait_for

APP = 'hard_vanish'
EACH = 8


@pytest.fixture(scope='module')
def server(module_server):
    return module_server


def _status(server):
    return server.get('/_status', timeout=10).json


def _subs(server):
    return server.get('/api/stream/subs', timeout=10).json


def _connect(server):
    return socket.create_connection(('127.0.0.1', server.port), timeout=10)


def _vanish(sock, reset):
    if reset:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))
    sock.close()


def _read_until(sock, marker, limit=1 << 20):
    data = b''
    deadline = time.monotonic() + 10
    while marker not in data and time.monotonic() < deadline:
        chunk = sock.recv(65536)
        assert chunk, f"closed before {marker!r}: {data[:300]!r}"
        data += chunk
        assert len(data) < limit
    assert marker in data, data[:300]
    return data


def half_headers(server, reset):
    sock = _connect(server)
    sock.sendall(b'GET /api/echo HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Half: ')
    time.sleep(0.2)
    _vanish(sock, reset)


def half_body(server, reset):
    sock = _connect(server)
    sock.sendall(request_bytes('POST', '/api/echo', {'Content-Length': '100000'})
                 + b'x' * 50000)
    time.sleep(0.2)
    _vanish(sock, reset)


def after_request_to_slow(server, reset):
    sock = _connect(server)
    sock.sendall(request_bytes('GET', '/api/slow'))
    time.sleep(0.05)
    _vanish(sock, reset)


def pipelined_half_behind_pending(server, reset):
    sock = _connect(server)
    sock.sendall(request_bytes('GET', '/api/slow') + b'GET /api/slow HTTP/1.1\r\nHo')
    time.sleep(0.05)
    _vanish(sock, reset)


def mid_big_answer(server, reset):
    sock = _connect(server)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.sendall(request_bytes('GET', '/api/big'))
    _read_until(sock, b'\r\n\r\n')
    time.sleep(0.3)
    _vanish(sock, reset)


def mid_sse(server, reset):
    sock = _connect(server)
    sock.sendall(request_bytes('GET', '/api/stream/sse'))
    _read_until(sock, b'event: tick')
    _vanish(sock, reset)


def mid_ndjson(server, reset):
    sock = _connect(server)
    sock.sendall(request_bytes('GET', '/api/stream/ndjson'))
    _read_until(sock, b'{"tick"')
    _vanish(sock, reset)


def before_stream_starts(server, reset):
    sock = _connect(server)
    sock.sendall(request_bytes('GET', '/api/stream/sse'))
    _vanish(sock, reset)


SCENARIOS = [half_headers, half_body, after_request_to_slow,
             pipelined_half_behind_pending, mid_big_answer, mid_sse, mid_ndjson,
             before_stream_starts]


@pytest.mark.parametrize('reset', [False, True], ids=['fin', 'rst'])
@pytest.mark.parametrize('scenario', SCENARIOS, ids=[s.__name__ for s in SCENARIOS])
def test_vanishing_client_leaks_nothing(server, scenario, reset):
    probe(server)
    wait_for(lambda: _status(server)['connections'] <= 1, 20, 0.1, 'idle server')
    baseline = settled_fds(server)
    errors = []

    def run():
        try:
            scenario(server, reset)
        except Exception as err:  # reported below
            errors.append(err)

    threads = [threading.Thread(target=run) for _ in range(EACH)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors, errors
    wait_for(lambda: (lambda s: s if s['pending'] == 0 and s['streams'] == 0 else None)(
        _status(server)), 20, 0.1, 'pending table and streams to empty')
    wait_for(lambda: _subs(server)['subscribers'] == 0, 10, 0.1,
             'on_disconnect for every stream')
    wait_for(lambda: _status(server)['connections'] <= 1, 20, 0.1,
             'connections to be closed')
    wait_for(lambda: fd_count(server.pid) <= baseline, 20, 0.1,
             f'fds back to {baseline}')
    probe(server)


def test_many_streams_vanish_together(server):
    """50 SSE and 50 NDJSON subscribers, all gone at once."""
    baseline = settled_fds(server)
    before = _subs(server)['disconnects']
    socks = []
    for index in range(100):
        sock = _connect(server)
        path = '/api/stream/sse' if index % 2 else '/api/stream/ndjson'
        sock.sendall(request_bytes('GET', path))
        socks.append(sock)
    wait_for(lambda: _subs(server)['subscribers'] == 100, 20, 0.1, '100 subscribers')
    assert _status(server)['streams'] == 100
    for index, sock in enumerate(socks):
        _vanish(sock, reset=bool(index % 3 == 0))
    wait_for(lambda: (lambda s: s if s['pending'] == 0 and s['streams'] == 0 else None)(
        _status(server)), 20, 0.1, 'pending table and streams to empty')
    wait_for(lambda: _subs(server)['subscribers'] == 0, 10, 0.1, 'all on_disconnect')
    assert _subs(server)['disconnects'] == before + 100
    wait_for(lambda: fd_count(server.pid) <= baseline, 20, 0.1, f'fds back to {baseline}')
    probe(server)


def test_reset_before_the_answer_is_no_error(server):
    """A client that sends a request and resets the connection at once: the
    answer's send() fails with ECONNRESET, which closes the connection
    quietly (no ERROR, no traceback in the log)."""
    probe(server)
    offset = len(server.log())
    for _ in range(200):
        sock = _connect(server)
        sock.sendall(request_bytes('GET', '/api/probe'))
        _vanish(sock, True)
    wait_for(lambda: _status(server)['pending'] == 0, 20, 0.1,
             'pending table to empty')
    wait_for(lambda: _status(server)['connections'] <= 1, 20, 0.1,
             'connections to be closed')
    probe(server)
    log = server.log()[offset:]
    assert 'ERROR' not in log and 'Traceback' not in log, log[:3000]
