"""Streams faster than their clients: a worker writing a stream in a loop
is held back while its client catches up (every byte arrives, nothing is
buffered without bound), a client that stops reading is dropped after
streamhold.STALL_LIMIT and its worker goes on, and a worker held that way
is not taken for stuck."""
import hashlib
import http.client
import os
import socket
import threading
import time

import uhttp.workers as _workers
from uhttp.workers import streamhold as _streamhold
from uhttp.workers.testing import TestServer

CHUNK = 65536
WAIT = 30


class ExportWorker(_workers.Worker):
    def setup(self):
        self.gone = []
        self.sent = {}

    @_workers.api('/api/export/{count:int}', 'GET')
    def export(self, request):
        request.response_stream('application/x-ndjson')
        count = request.path_params['count']
        sent = 0
        for number in range(count):
            if not request.send_chunk(bytes([number % 251]) * CHUNK):
                break
            sent += 1
        self.sent[request.request_id] = sent
        request.response_stream_end()
        return _workers.DEFERRED

    @_workers.api('/api/forever', 'GET')
    def forever(self, request):
        request.response_stream()
        for _ in range(100_000):     # until its client is dropped
            if not request.send_chunk(b'x' * CHUNK):
                break
        return _workers.DEFERRED

    @_workers.api('/api/endless', 'GET')
    def endless(self, request):
        request.response_stream('application/octet-stream')
        sent = 0
        while request.send_chunk(b'x' * CHUNK):   # until its client leaves
            sent += 1
        self.sent[request.request_id] = (sent, request.is_open)
        return _workers.DEFERRED

    @_workers.api('/api/lines/{seconds:float}', 'GET')
    def lines(self, request):
        """Small lines for `seconds`, as fast as they go: a client that
        keeps up never has enough waiting to hold the worker back."""
        request.response_stream('application/x-ndjson')
        until = time.monotonic() + request.path_params['seconds']
        sent = 0
        while time.monotonic() < until:
            if not request.send_ndjson({'line': sent}):
                break
            sent += 1
        request.response_stream_end()
        return _workers.DEFERRED

    def on_disconnect(self, request_id):
        self.gone.append(request_id)

    @_workers.api('/api/sent', 'GET')
    def sent_counts(self, request):
        return {'sent': list(self.sent.values())}

    @_workers.api('/api/gone', 'GET')
    def gone_ids(self, request):
        return {'gone': self.gone}

    @_workers.api('/api/pid', 'GET')
    def pid(self, request):
        return {'pid': os.getpid()}


class IdleStreamer(_workers.Worker):
    """Streams to its subscribers from on_idle() for a while: the sends
    read the request pipe (to hear of clients that left), and what they
    read there must still be served."""

    def setup(self):
        self.subscribers = {}

    @_workers.api('/api/subscribe', 'GET')
    def subscribe(self, request):
        request.response_stream()
        self.subscribers[request.request_id] = request
        return _workers.DEFERRED

    @_workers.api('/api/ping', 'GET')
    def ping(self, request):
        return {'ok': True}

    def on_idle(self):
        until = time.monotonic() + 0.3
        while time.monotonic() < until:
            for subscriber in list(self.subscribers.values()):
                subscriber.send_event(data='tick')
            time.sleep(0.01)

    def on_disconnect(self, request_id):
        self.subscribers.pop(request_id, None)


def expected_digest(count):
    digest = hashlib.sha256()
    for number in range(count):
        digest.update(bytes([number % 251]) * CHUNK)
    return digest.hexdigest()


def read_all(server, path, pace=None):
    """GET `path` and read to the end (`pace`: (bytes, seconds) between
    reads, a slow client): (status, byte count, sha256)."""
    connection = http.client.HTTPConnection('127.0.0.1', server.port,
                                            timeout=WAIT)
    try:
        connection.request('GET', path)
        reply = connection.getresponse()
        digest = hashlib.sha256()
        size = 0
        while True:
            data = reply.read(pace[0] if pace else 1 << 20)
            if not data:
                break
            digest.update(data)
            size += len(data)
            if pace:
                time.sleep(pace[1])
        return reply.status, size, digest.hexdigest()
    finally:
        connection.close()


def wait_for(predicate, what, timeout=WAIT):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def pool(**kwargs):
    return _workers.WorkerPool(ExportWorker, num_workers=1,
                               routes=['/api/**'], **kwargs)


def test_a_stream_written_in_a_loop_reaches_a_fast_client_whole():
    with TestServer(_workers.Dispatcher, [pool()]) as server:
        for count in (300, 1):   # 19.7 MB, then a small one on the same worker
            assert read_all(server, f'/api/export/{count}') == (
                200, count * CHUNK, expected_digest(count))
        assert not [record for record in list(server.logs)
                    if 'dropped' in record.message], server.log_text()


def test_a_client_that_stops_reading_is_dropped_and_its_worker_goes_on():
    with TestServer(_workers.Dispatcher, [pool()]) as server:
        sock = socket.create_connection(('127.0.0.1', server.port),
                                        timeout=WAIT)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        try:
            sock.sendall(b'GET /api/forever HTTP/1.1\r\nHost: x\r\n\r\n')
            assert sock.recv(12) == b'HTTP/1.1 200'
            began = time.monotonic()   # ... and never reads again
            gone = wait_for(lambda: server.get('/api/gone').json()['gone'],
                            'the worker to hear its client was dropped')
            waited = time.monotonic() - began
        finally:
            sock.close()
        assert len(gone) == 1
        assert waited < _streamhold.STALL_LIMIT + 10, waited
        assert any('read nothing for' in record.message
                   for record in list(server.logs)), server.log_text()
        # the worker was only held, never lost: it serves on
        assert read_all(server, '/api/export/3') == (
            200, 3 * CHUNK, expected_digest(3))
        server.assert_no_errors()


def test_a_worker_writing_in_a_loop_hears_that_its_client_left():
    """The client reads a little of an endless stream and leaves: the
    worker's next sends return False (while its handler still runs), so
    the loop ends, and on_disconnect follows once."""
    with TestServer(_workers.Dispatcher, [pool()]) as server:
        sock = socket.create_connection(('127.0.0.1', server.port),
                                        timeout=WAIT)
        try:
            sock.sendall(b'GET /api/endless HTTP/1.1\r\nHost: x\r\n\r\n')
            received = 0
            while received < 4 * CHUNK:
                data = sock.recv(CHUNK)
                assert data
                received += len(data)
        finally:
            sock.close()
        sent = wait_for(lambda: server.get('/api/sent').json()['sent'],
                        'the handler to stop writing')
        assert len(sent) == 1 and sent[0][0] >= 4 and sent[0][1] is False
        gone = wait_for(lambda: server.get('/api/gone').json()['gone'],
                        'on_disconnect')
        assert len(gone) == 1
        assert read_all(server, '/api/export/3') == (
            200, 3 * CHUNK, expected_digest(3))
        assert server.get('/api/gone').json()['gone'] == gone
        server.assert_no_errors()


def test_requests_read_by_a_stream_sent_from_on_idle_are_served():
    streamer = _workers.WorkerPool(IdleStreamer, num_workers=1,
                                   routes=['/api/**'], heartbeat_interval=0.5,
                                   stuck_timeout=10)
    with TestServer(_workers.Dispatcher, [streamer]) as server:
        sock = socket.create_connection(('127.0.0.1', server.port),
                                        timeout=WAIT)
        try:
            sock.sendall(b'GET /api/subscribe HTTP/1.1\r\nHost: x\r\n\r\n')
            assert sock.recv(12) == b'HTTP/1.1 200'
            reader = threading.Thread(target=drain, args=(sock,), daemon=True)
            reader.start()
            for _ in range(30):   # many of them arrive while on_idle() runs
                assert server.get('/api/ping', timeout=WAIT).json() == {
                    'ok': True}
                time.sleep(0.05)
        finally:
            sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        reader.join(WAIT)
        server.assert_no_errors()


def drain(sock):
    """Read `sock` until its end (a client that keeps up)."""
    try:
        while sock.recv(65536):
            pass
    except OSError:
        pass


def test_a_worker_held_by_a_slow_reader_is_not_taken_for_stuck():
    """The client reads 64 KiB every 20 ms (~3 MB/s) through a small
    receive buffer: for seconds, the worker, blocked on its full pipe,
    writes no heartbeat, far longer than its stuck_timeout."""
    slow = pool(stuck_timeout=0.6, heartbeat_interval=0.2)
    count = 160
    with TestServer(_workers.Dispatcher, [slow]) as server:
        pid = server.get('/api/pid').json()['pid']
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, CHUNK)
        sock.settimeout(WAIT)
        sock.connect(('127.0.0.1', server.port))
        try:
            sock.sendall(f'GET /api/export/{count} HTTP/1.1\r\nHost: x\r\n'
                         '\r\n'.encode())
            received = b''
            while True:
                data = sock.recv(CHUNK)
                if not data:
                    break
                received += data
                time.sleep(0.02)
        finally:
            sock.close()
        head, _, body = received.partition(b'\r\n\r\n')
        assert head.startswith(b'HTTP/1.1 200')
        assert (len(body), hashlib.sha256(body).hexdigest()) == (
            count * CHUNK, expected_digest(count))
        assert not [record for record in list(server.logs)
                    if 'stuck' in record.message or 'dropped' in
                    record.message], server.log_text()
        assert server.get('/api/pid').json()['pid'] == pid   # not killed
        server.assert_no_errors()


def test_a_worker_streaming_to_a_client_that_keeps_up_is_not_taken_for_stuck():
    """An export of small lines for five times its stuck_timeout, read as
    fast as it comes: the handler never returns to the worker's loop and
    its client never lets enough wait to hold it back, but it is alive."""
    quick = pool(stuck_timeout=0.6, heartbeat_interval=0.2)
    with TestServer(_workers.Dispatcher, [quick]) as server:
        pid = server.get('/api/pid').json()['pid']
        connection = http.client.HTTPConnection('127.0.0.1', server.port,
                                                timeout=WAIT)
        try:
            connection.request('GET', '/api/lines/3')
            reply = connection.getresponse()
            body = reply.read()
        finally:
            connection.close()
        assert reply.status == 200
        lines = body.splitlines()
        assert lines and lines[-1] == b'{"line": %d}' % (len(lines) - 1)
        assert not [record for record in list(server.logs)
                    if 'stuck' in record.message], server.log_text()
        assert server.get('/api/pid').json()['pid'] == pid   # not killed
        server.assert_no_errors()


def test_a_slow_client_that_keeps_reading_is_not_dropped():
    """A client that reads all the time, but slowly (16 KiB every 40 ms,
    ~400 KB/s): once the kernel's buffers are full, its send queue holds
    megabytes and the socket takes nothing more for seconds, until half of
    it has drained, so nothing leaves the dispatcher's own buffer for
    longer than STALL_LIMIT. The client is reading meanwhile: the stream
    must reach it whole, not be dropped as a client that reads nothing."""
    count = 96   # 6 MiB: past what the kernel's buffers hold
    with TestServer(_workers.Dispatcher, [pool()]) as server:
        sock = socket.create_connection(('127.0.0.1', server.port),
                                        timeout=WAIT)
        try:
            sock.sendall(f'GET /api/export/{count} HTTP/1.1\r\nHost: x\r\n'
                         '\r\n'.encode())
            received = bytearray()
            while True:
                data = sock.recv(16384)
                if not data:
                    break
                received += data
                time.sleep(0.04)
        finally:
            sock.close()
        head, _, body = bytes(received).partition(b'\r\n\r\n')
        assert head.startswith(b'HTTP/1.1 200')
        assert not [record for record in list(server.logs)
                    if 'dropped' in record.message], server.log_text()
        assert (len(body), hashlib.sha256(body).hexdigest()) == (
            count * CHUNK, expected_digest(count))
        server.assert_no_errors()


def test_shutdown_lets_go_of_a_worker_its_slow_reader_holds_back():
    """A client that reads, but slower than its worker writes, holds that
    worker back. Shutdown closes the stream: nothing more goes to the
    client, so the worker goes on, hears of it and stops through its pipe
    rather than being killed at shutdown_timeout."""
    server = TestServer(_workers.Dispatcher, [pool()], shutdown_timeout=3)
    server.start()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
    sock.settimeout(WAIT)
    reading = threading.Event()
    done = threading.Event()

    def read_slowly():   # never stalled, never caught up
        while not done.is_set():
            try:
                if not sock.recv(16384):
                    return
            except OSError:
                return
            reading.set()
            done.wait(0.05)
    try:
        sock.connect(('127.0.0.1', server.port))
        sock.sendall(b'GET /api/forever HTTP/1.1\r\nHost: x\r\n\r\n')
        threading.Thread(target=read_slowly, daemon=True).start()
        assert reading.wait(WAIT)
        time.sleep(0.5)   # the worker is held back by now
        began = time.monotonic()
        server.stop()
        took = time.monotonic() - began
        assert 'did not stop in time' not in server.log_text()
        assert took < 3 + 2, server.log_text()  # not the kill at the deadline
    finally:
        done.set()
        sock.close()
        server.stop()
