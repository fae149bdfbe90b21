"""Soak: 200,000 keep-alive requests with SSE churn (app tests/apps/hard_soak.py).

Run with:  python3 -m pytest -m soak tests/soak
(skipped in the default run; takes a few minutes on 2 cores)

24 keep-alive connections send 200,000 requests one after the other on
each connection (a quarter to a sync route, the rest to a pool; each
connection is replaced every 4,000 requests) while SSE subscribers connect
and leave (FIN or RST) continuously and events are published to them every
50 ms. Every request must get its own 200 with the right body. After a
warm-up round (20,000 requests with the same churn) the dispatcher's RSS is
taken; after the main round its growth must stay under 20 MB, its open fds
must be back to the warm-up count, and the pending table, the stream count
and the worker's subscriber list must be empty.
"""
import http.client
import json
import os
import selectors
import socket
import struct
import threading
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))


import hard_util as util  # noqa: E402  (tests/hardening/hard_util.py)

CONNECTIONS = 24
PER_CONNECTION = 4000
TOTAL = 200_000
WARMUP = 20_000
MAX_SECONDS = 420
SUBSCRIBERS = 16
RSS_GROWTH_KB = 20 * 1024


class KeepAliveLoad:
    """Drive `total` requests over CONNECTIONS keep-alive connections, one
    request in flight per connection, checking every answer."""

    def __init__(self, port, total, first_number):
        self.port = port
        self.total = total
        self.next_number = first_number
        self.sent = 0
        self.answered = 0
        self.errors = []
        self.selector = selectors.DefaultSelector()
        self.state = {}

    def _request(self, number):
        if number % 4 == 0:
            return b'GET /probe HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n', b'{"ok": true}'
        return (b'GET /api/n/%d HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n' % number,
                b'{"n": %d}' % number)

    def _open(self):
        sock = socket.create_connection(('127.0.0.1', self.port), timeout=10)
        sock.setblocking(False)
        self.state[sock] = {'buf': bytearray(), 'expect': None, 'count': 0}
        self.selector.register(sock, selectors.EVENT_READ)
        self._send_next(sock)

    def _close(self, sock):
        self.selector.unregister(sock)
        del self.state[sock]
        sock.close()

    def _send_next(self, sock):
        if self.sent >= self.total:
            self._close(sock)
            return
        number = self.next_number
        self.next_number += 1
        self.sent += 1
        data, expect = self._request(number)
        self.state[sock]['expect'] = expect
        sock.sendall(data)  # small: fits the socket buffer

    def run(self, deadline):
        for _ in range(CONNECTIONS):
            self._open()
        while self.state and time.monotonic() < deadline:
            for key, _ in self.selector.select(1.0):
                sock = key.fileobj
                entry = self.state[sock]
                try:
                    chunk = sock.recv(65536)
                except BlockingIOError:
                    continue
                except OSError as err:
                    chunk = b''
                    self.errors.append(f'recv: {err!r}')
                if not chunk:
                    self.errors.append(f"connection closed with {entry['expect']!r} due")
                    self._close(sock)
                    self._open()
                    continue
                entry['buf'] += chunk
                responses, rest = util.parse_responses(entry['buf'], closed=False)
                if not responses:
                    continue
                if len(responses) != 1 or rest:
                    self.errors.append(f'extra bytes: {responses} {rest[:100]!r}')
                resp = responses[0]
                if resp.status != 200 or resp.body != entry['expect']:
                    self.errors.append(f"{resp} for {entry['expect']!r}")
                self.answered += 1
                entry['buf'] = bytearray()
                entry['count'] += 1
                if entry['count'] >= PER_CONNECTION:
                    self._close(sock)
                    if self.sent < self.total:
                        self._open()
                else:
                    self._send_next(sock)
        for sock in list(self.state):
            self._close(sock)
        self.selector.close()


class Churn:
    """SSE subscribers joining and leaving, and a publisher, until stopped."""

    def __init__(self, port):
        self.port = port
        self.stop = threading.Event()
        self.cycles = 0
        self.published = 0
        self.events_seen = 0
        self.errors = []
        self.threads = [threading.Thread(target=self._subscribers, daemon=True),
                        threading.Thread(target=self._publisher, daemon=True)]

    def start(self):
        for thread in self.threads:
            thread.start()

    def finish(self):
        self.stop.set()
        for thread in self.threads:
            thread.join(30)

    def _subscribers(self):
        live = []
        try:
            while not self.stop.is_set():
                sock = socket.create_connection(('127.0.0.1', self.port), timeout=10)
                sock.sendall(b'GET /api/stream/sse HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n')
                data = b''
                while b'event: hello' not in data:
                    chunk = sock.recv(4096)
                    if not chunk:
                        self.errors.append(f'subscriber closed early: {data[:200]!r}')
                        break
                    data += chunk
                sock.setblocking(False)
                live.append(sock)
                for other in live:
                    try:
                        self.events_seen += other.recv(65536).count(b'event: news')
                    except (BlockingIOError, OSError):
                        pass
                if len(live) > SUBSCRIBERS:
                    old = live.pop(0)
                    if self.cycles % 2:
                        old.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                       struct.pack('ii', 1, 0))
                    old.close()
                self.cycles += 1
                self.stop.wait(0.01)
        except Exception as err:  # reported by the test
            self.errors.append(f'subscribers: {err!r}')
        finally:
            for sock in live:
                sock.close()

    def _publisher(self):
        conn = http.client.HTTPConnection('127.0.0.1', self.port, timeout=10)
        try:
            while not self.stop.is_set():
                conn.request('POST', '/api/stream/publish',
                             body=json.dumps({'i': self.published}),
                             headers={'Content-Type': 'application/json'})
                reply = conn.getresponse()
                reply.read()
                if reply.status != 200:
                    self.errors.append(f'publish: {reply.status}')
                self.published += 1
                self.stop.wait(0.05)
        except Exception as err:  # reported by the test
            self.errors.append(f'publisher: {err!r}')
        finally:
            conn.close()


def _round(server, total, first_number, deadline):
    churn = Churn(server.port)
    churn.start()
    load = KeepAliveLoad(server.port, total, first_number)
    started = time.monotonic()
    try:
        load.run(deadline)
    finally:
        churn.finish()
    took = time.monotonic() - started
    assert not load.errors, load.errors[:10]
    assert load.answered == total, f"{load.answered} of {total} answered in {took:.0f}s"
    assert not churn.errors, churn.errors[:10]
    assert churn.cycles > 20 and churn.published > 20, (churn.cycles, churn.published)
    return took, churn


def _quiet(server):
    def empty():
        status = server.get('/_status', timeout=10).json
        subs = server.get('/api/stream/subs', timeout=10).json
        if status['pending'] == 0 and status['streams'] == 0 and (
                subs['subscribers'] == 0) and status['connections'] <= 1:
            return status
        return None
    util.wait_for(empty, 30, 0.2, 'no pending, streams, subscribers or connections')
    return util.settled_fds(server)


@pytest.mark.soak
@pytest.mark.timeout(900)
def test_soak_keep_alive_load_with_sse_churn():
    util.raise_fd_limit(1000)
    server = util.AppServer('hard_soak')
    server.start()
    try:
        deadline = time.monotonic() + MAX_SECONDS
        _round(server, WARMUP, 0, deadline)
        fds_warm = _quiet(server)
        time.sleep(0.5)
        rss_warm = util.rss_kb(server.pid)
        took, churn = _round(server, TOTAL, WARMUP, deadline)
        fds_end = _quiet(server)
        time.sleep(0.5)
        rss_end = util.rss_kb(server.pid)
        print(f"\n{TOTAL} requests in {took:.0f}s ({TOTAL / took:.0f}/s); "
              f"{churn.cycles} subscribers came and went, {churn.published} "
              f"publishes, {churn.events_seen} events read; RSS {rss_warm} -> "
              f"{rss_end} kB; fds {fds_warm} -> {fds_end}")
        assert rss_end - rss_warm < RSS_GROWTH_KB, (
            f"dispatcher RSS grew {(rss_end - rss_warm) / 1024:.1f} MB")
        assert fds_end <= fds_warm
        util.probe(server, ('/probe', '/api/n/1'))
        assert 'dispatcher loop error' not in server.log()
    finally:
        server.cleanup()
