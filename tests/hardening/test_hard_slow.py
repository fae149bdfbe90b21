"""Slow clients (app tests/apps/hard_slow.py, send_timeout=2).

- 200 slowloris connections (a header byte a second) do not slow normal
  clients down: p99 latency stays under 200 ms while they are open.
- 20 clients that ask for a 5 MB answer and never read it cost the
  dispatcher at most one buffered copy of each answer (20 x 5 MB = 100 MB;
  the kernel's socket buffers hold part of it, which leaves room for
  transient copies), the cost does not grow while they wait, a second wave
  reuses the memory of the first, and normal clients are still served.
- Such stalled readers are dropped soon after send_timeout (2 s): within
  10 s, and the dispatcher's fds return to their baseline.
"""
import socket
import struct
import threading
import time

import pytest

from hard_util import fd_count, probe, rss_kb, settled_fds, wait_for

APP = 'hard_slow'
BIG = 5 * 1024 * 1024
SLOWLORIS = 200
READERS = 20
MB = 1024


@pytest.fixture(scope='module')
def server(module_server):
    return module_server


def _latencies(server, count, pause=0.02):
    result = []
    for index in range(count):
        start = time.monotonic()
        reply = server.get('/probe' if index % 2 else '/api/probe', timeout=10)
        result.append(time.monotonic() - start)
        assert reply.status == 200, reply
        time.sleep(pause)
    return sorted(result)


def _p99(values):
    return values[max(0, int(len(values) * 0.99) - 1)]


def _status(server):
    return server.get('/_status', timeout=10).json


def test_slowloris_does_not_delay_normal_clients(server):
    socks = []
    stop = threading.Event()
    try:
        for index in range(SLOWLORIS):
            sock = socket.create_connection(('127.0.0.1', server.port), timeout=5)
            sock.sendall(b'GET /probe HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow-%d: ' % index)
            socks.append(sock)

        def drip():
            while not stop.is_set():
                for sock in socks:
                    try:
                        sock.send(b'a')
                    except OSError:
                        pass
                stop.wait(1.0)

        dripper = threading.Thread(target=drip, daemon=True)
        dripper.start()
        time.sleep(1.5)
        assert _status(server)['connections'] >= SLOWLORIS
        latencies = _latencies(server, 200)
        assert _p99(latencies) < 0.2, (
            f"p99 {_p99(latencies) * 1000:.1f} ms, max {latencies[-1] * 1000:.1f} ms "
            f"with {SLOWLORIS} slowloris connections open")
        # they were kept waiting, not answered
        for sock in socks[:20]:
            sock.setblocking(False)
            try:
                data = sock.recv(100)
            except BlockingIOError:
                data = None
            assert data is None, f"a slowloris connection got {data!r}"
    finally:
        stop.set()
        for sock in socks:
            sock.close()
    wait_for(lambda: _status(server)['connections'] <= 1, 15, 0.1,
             'slowloris connections to be closed')
    probe(server)


def _open_readers(server, count):
    socks = []
    for _ in range(count):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.settimeout(5)
        sock.connect(('127.0.0.1', server.port))
        sock.sendall(b'GET /api/big HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n')
        socks.append(sock)
    return socks


def _reset(socks):
    for sock in socks:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))
        sock.close()


def _wave(server, base_kb):
    """Open READERS stalled readers; the dispatcher's peak RSS growth (kB)
    once every answer reached it, and the growth over the last second."""
    socks = _open_readers(server, READERS)
    try:
        wait_for(lambda: _status(server)['pending'] == 0, 60, 0.1,
                 'all big answers to leave the workers')
        samples = []
        for _ in range(10):
            samples.append(rss_kb(server.pid) - base_kb)
            time.sleep(0.1)
        latencies = _latencies(server, 20, pause=0)
        assert latencies[-1] < 0.5, f"normal request took {latencies[-1]:.3f}s"
        return max(samples), samples[-1] - samples[0], socks
    except BaseException:
        _reset(socks)
        raise


def test_slow_readers_memory_is_bounded(server):
    for _ in range(2):  # warm the allocator with full-size answers
        reply = server.get('/api/big', timeout=30)
        assert reply.status == 200 and len(reply.body) == BIG
    time.sleep(0.5)
    fds = settled_fds(server)
    base = rss_kb(server.pid)
    peak1, drift1, socks = _wave(server, base)
    _reset(socks)
    assert peak1 < READERS * BIG // 1024, (
        f"{READERS} stalled readers of {BIG >> 20} MB grew the dispatcher by "
        f"{peak1 / MB:.1f} MB (more than one copy of each answer)")
    assert drift1 < 10 * MB, f"RSS kept growing by {drift1 / MB:.1f} MB in 1 s"
    wait_for(lambda: _status(server)['connections'] <= 1, 15, 0.1,
             'reset readers to be closed')
    peak2, drift2, socks = _wave(server, base)
    _reset(socks)
    assert peak2 < peak1 + 20 * MB, (
        f"second wave: +{peak2 / MB:.1f} MB after a first of +{peak1 / MB:.1f} MB")
    assert drift2 < 10 * MB
    wait_for(lambda: _status(server)['connections'] <= 1, 15, 0.1,
             'reset readers to be closed')
    wait_for(lambda: fd_count(server.pid) <= fds, 15, 0.1, 'fds back to baseline')
    probe(server)


def test_stalled_readers_are_dropped(server):
    fds = settled_fds(server)
    before = server.log().count('dropping')
    socks = _open_readers(server, 5)
    try:
        wait_for(lambda: _status(server)['pending'] == 0, 60, 0.1,
                 'the big answers to leave the workers')
        queued = time.monotonic()
        wait_for(lambda: _status(server)['connections'] <= 1, 10, 0.2,
                 'stalled readers to be dropped (send_timeout=2) within 10 s')
        took = time.monotonic() - queued
        assert server.log().count('dropping') >= before + 5
        for sock in socks:  # what they can still read ends with a close
            received = 0
            sock.settimeout(5)
            while True:
                try:
                    chunk = sock.recv(1 << 20)
                except ConnectionResetError:
                    break
                if not chunk:
                    break
                received += len(chunk)
            assert received < BIG
    finally:
        _reset(socks)
    wait_for(lambda: fd_count(server.pid) <= fds, 15, 0.1, 'fds back to baseline')
    assert took < 10
    probe(server)
