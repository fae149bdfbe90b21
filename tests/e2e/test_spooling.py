"""Large bodies end to end: uploads above spool_threshold are written to an
unnamed file in spool_dir as they arrive and handed to the worker as that
file's descriptor; large answers come back through shared memory.

Hashes are checked end to end, plain and chunked, around the threshold;
aborted, oversized and stalled uploads leave no file open anywhere; a
worker killed while it holds a body answers 500 and leaves nothing; the
spec's forwarding example passes the file on to another pool; the
dispatcher's memory stays flat during a large upload.
"""
import hashlib
import http.client
import json
import os
import random
import resource
import signal
import socket
import threading
import time

import pytest

import uhttp.workers as _workers
from uhttp.workers.testing import TestServer
from harness import AppServer

THRESHOLD = 256 * 1024
SIZES = [1, 1000, THRESHOLD - 1, THRESHOLD, THRESHOLD + 1, 3 * THRESHOLD + 7,
         5 * 1024 * 1024]


def pattern(size, seed=0):
    rng = random.Random(seed)
    return rng.randbytes(size)


def sha(data):
    return hashlib.sha256(data).hexdigest()


def spool_fds(pid, directory):
    """The descriptors process `pid` holds on files of `directory`."""
    found = []
    try:
        names = os.listdir(f'/proc/{pid}/fd')
    except OSError:
        return found
    for name in names:
        try:
            target = os.readlink(f'/proc/{pid}/fd/{name}')
        except OSError:
            continue
        if target.startswith(directory + '/'):
            found.append(target)
    return found


def everyone(app):
    return [app.pid] + app.children()


def nothing_left(app, directory):
    return not os.listdir(directory) and not any(
        spool_fds(pid, directory) for pid in everyone(app))


def start(tmp_path_factory, name, **env):
    directory = str(tmp_path_factory.mktemp(name))
    hold = os.path.join(str(tmp_path_factory.mktemp(name + '-hold')), 'pid')
    settings = {'SPOOL_DIR': directory, 'SPOOL_HOLD_FILE': hold}
    settings.update({key: str(value) for key, value in env.items()})
    app = AppServer('ext_spool', env=settings)
    app.spool_dir = directory
    app.hold_file = hold
    app.start()
    return app


@pytest.fixture(scope='module')
def server(tmp_path_factory):
    app = None
    try:
        app = start(tmp_path_factory, 'spool')
        yield app
    finally:
        if app is not None:
            app.cleanup()


@pytest.fixture(scope='module')
def strict(tmp_path_factory):
    """Every body spooled (threshold 0), 8 MiB at most, 2 s to stall."""
    app = None
    try:
        app = start(tmp_path_factory, 'strict', SPOOL_THRESHOLD=0,
                    SPOOL_MAX_CONTENT=8 * 1024 * 1024,
                    SPOOL_REQUEST_TIMEOUT=2)
        yield app
    finally:
        if app is not None:
            app.cleanup()


def post(app, path, body, content_type='application/octet-stream',
         timeout=60):
    reply = app.post(path, body=body, headers={'Content-Type': content_type},
                     timeout=timeout)
    return reply


def read_reply(sock, timeout=30):
    """(status, body) of one response on a raw socket (Content-Length).
    It reads no byte past that response, so a pipelined one stays in the
    socket for the next call."""
    sock.settimeout(timeout)
    head = _recv_head(sock, time.monotonic() + timeout)
    lines = head.decode('latin-1').split('\r\n')
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(':')
        if name.strip().lower() == 'content-length':
            length = int(value)
    body = b''
    while len(body) < length:
        chunk = sock.recv(min(65536, length - len(body)))
        if not chunk:
            break
        body += chunk
    return int(lines[0].split()[1]), body


def _recv_head(sock, deadline):
    """The response head up to its empty line, taken from the socket
    without reading past it (peek, then take exactly the head)."""
    while True:
        seen = sock.recv(65536, socket.MSG_PEEK)
        if not seen:
            raise ConnectionError("closed before a response")
        end = seen.find(b'\r\n\r\n')
        if end >= 0:
            head = b''
            while len(head) < end + 4:
                head += sock.recv(end + 4 - len(head))
            return head[:end]
        if len(seen) >= 65536 or time.monotonic() > deadline:
            raise ConnectionError(f"no end of head in {seen[:200]!r}")
        time.sleep(0.005)  # the rest of the head is on its way


def send_chunked(port, path, data, seed=1, limit=None):
    """POST `data` chunked in random sizes; (status, body) of the answer."""
    rng = random.Random(seed)
    sock = socket.create_connection(('127.0.0.1', port), timeout=30)
    try:
        sock.sendall(f'POST {path} HTTP/1.1\r\nHost: x\r\n'
                     'Content-Type: application/octet-stream\r\n'
                     'Transfer-Encoding: chunked\r\n\r\n'.encode())
        pos = 0
        try:
            while pos < len(data):
                size = rng.choice((1, 17, 4096, 65536, 300000))
                piece = data[pos:pos + size]
                pos += len(piece)
                sock.sendall(b'%x\r\n' % len(piece) + piece + b'\r\n')
            sock.sendall(b'0\r\n\r\n')
        except OSError:
            pass  # refused midway (413): the answer is waiting
        return read_reply(sock)
    finally:
        sock.close()


# -- bodies around the threshold -------------------------------------------------

@pytest.mark.parametrize('size', SIZES)
def test_body_file_hash_of_plain_bodies(server, size):
    data = pattern(size, size)
    reply = post(server, '/api/hash', data)
    assert reply.status == 200, reply
    answer = reply.json
    assert answer['sha256'] == sha(data) and answer['size'] == size
    assert answer['kind'] == ('SpooledBytes' if size > THRESHOLD else 'bytes')


@pytest.mark.parametrize('size', SIZES)
def test_request_data_hash_of_plain_bodies(server, size):
    data = pattern(size, size + 1)
    reply = post(server, '/api/hash-data', data)
    assert reply.status == 200, reply
    answer = reply.json
    assert answer['sha256'] == sha(data) and answer['size'] == size
    assert answer['head'] == data[:4].hex()


@pytest.mark.parametrize('size', [0] + SIZES)
def test_chunked_bodies(server, size):
    data = pattern(size, size + 2)
    status, body = send_chunked(server.port, '/api/hash', data)
    assert status == 200, body
    answer = json.loads(body)
    assert answer['sha256'] == sha(data) and answer['size'] == size
    if size > THRESHOLD:
        assert answer['kind'] == 'SpooledBytes'


def test_empty_body_gives_an_empty_body_file(server):
    reply = post(server, '/api/hash', b'')
    assert reply.status == 200
    assert reply.json['size'] == 0 and reply.json['kind'] == 'NoneType'


def test_spooled_json_body_is_parsed(server):
    items = [{'n': n, 'text': 'x' * 40} for n in range(8000)]
    body = json.dumps({'items': items}).encode()
    assert len(body) > THRESHOLD
    reply = post(server, '/api/json', body, 'application/json')
    assert reply.status == 200, reply
    assert reply.json == {'kind': 'dict', 'count': 8000, 'last': items[-1],
                          'same': True}


def test_spooled_bad_json_is_a_400(server):
    body = b'{"items": [' + b'1,' * THRESHOLD
    reply = post(server, '/api/json', body, 'application/json')
    assert reply.status == 400
    assert post(server, '/api/hash', b'ok').status == 200


def test_keep_alive_connection_carries_spooled_bodies(server):
    conn = server.connection(timeout=30)
    try:
        for size in (THRESHOLD + 1, 10, 2 * THRESHOLD, 3):
            data = pattern(size, size + 3)
            conn.request('POST', '/api/hash', body=data,
                         headers={'Content-Type': 'application/octet-stream'})
            answer = json.loads(conn.getresponse().read())
            assert answer['sha256'] == sha(data)
    finally:
        conn.close()
    server.wait_until(lambda: nothing_left(server, server.spool_dir),
                      what='spool files closed')


def test_pipelined_request_after_a_spooled_body(server):
    data = pattern(THRESHOLD * 2, 21)
    sock = socket.create_connection(('127.0.0.1', server.port), timeout=30)
    try:
        sock.sendall(b'POST /api/hash HTTP/1.1\r\nHost: x\r\n'
                     b'Content-Length: %d\r\n\r\n' % len(data) + data
                     + b'POST /api/hash HTTP/1.1\r\nHost: x\r\n'
                       b'Content-Length: 5\r\n\r\nhello')
        first = read_reply(sock)
        second = read_reply(sock)
    finally:
        sock.close()
    assert first[0] == 200 and json.loads(first[1])['sha256'] == sha(data)
    assert second[0] == 200
    assert json.loads(second[1])['sha256'] == sha(b'hello')


def test_expect_100_continue_with_a_spooled_body(server):
    data = pattern(THRESHOLD * 3, 22)
    sock = socket.create_connection(('127.0.0.1', server.port), timeout=30)
    try:
        sock.sendall(b'POST /api/hash HTTP/1.1\r\nHost: x\r\n'
                     b'Expect: 100-continue\r\n'
                     b'Content-Length: %d\r\n\r\n' % len(data))
        interim = b''
        while b'\r\n\r\n' not in interim:
            interim += sock.recv(1)
        assert interim.startswith(b'HTTP/1.1 100')
        sock.sendall(data)
        status, body = read_reply(sock)
    finally:
        sock.close()
    assert status == 200 and json.loads(body)['sha256'] == sha(data)


# -- the file's lifetime -------------------------------------------------------------

def test_upload_aborted_halfway_leaves_nothing(server):
    sock = socket.create_connection(('127.0.0.1', server.port), timeout=10)
    try:
        sock.sendall(b'POST /api/hash HTTP/1.1\r\nHost: x\r\n'
                     b'Content-Length: 4194304\r\n\r\n')
        sock.sendall(pattern(2 * 1024 * 1024))
        server.wait_until(lambda: spool_fds(server.pid, server.spool_dir),
                          what='the body spooling in spool_dir')
        assert not os.listdir(server.spool_dir)  # unnamed from the start
    finally:
        sock.close()
    server.wait_until(lambda: nothing_left(server, server.spool_dir),
                      what='the aborted spool file closed')
    assert post(server, '/api/hash', b'still serving').status == 200


def test_chunked_upload_aborted_halfway_leaves_nothing(server):
    sock = socket.create_connection(('127.0.0.1', server.port), timeout=10)
    try:
        sock.sendall(b'POST /api/hash HTTP/1.1\r\nHost: x\r\n'
                     b'Transfer-Encoding: chunked\r\n\r\n')
        piece = pattern(100000)
        for _ in range(10):
            sock.sendall(b'%x\r\n' % len(piece) + piece + b'\r\n')
        server.wait_until(lambda: spool_fds(server.pid, server.spool_dir),
                          what='the chunked body spooling')
    finally:
        sock.close()
    server.wait_until(lambda: nothing_left(server, server.spool_dir),
                      what='the aborted spool file closed')


def test_worker_forked_during_an_upload_holds_no_spool_file(server):
    sock = socket.create_connection(('127.0.0.1', server.port), timeout=10)
    try:
        sock.sendall(b'POST /api/hash HTTP/1.1\r\nHost: x\r\n'
                     b'Content-Length: 4194304\r\n\r\n')
        sock.sendall(pattern(1024 * 1024))
        server.wait_until(lambda: spool_fds(server.pid, server.spool_dir),
                          what='the body spooling')
        before = set(server.children())
        victim = post(server, '/api/hash', b'which').json['pid']
        os.kill(victim, signal.SIGKILL)
        new = server.wait_until(
            lambda: set(server.children()) - before - {victim},
            what='a replacement worker')
        server.wait_until(lambda: post(server, '/api/hash', b'x').status == 200,
                          what='the pool serving again')
        for pid in new:
            assert not spool_fds(pid, server.spool_dir)
        sock.sendall(pattern(3 * 1024 * 1024))
        status, body = read_reply(sock)
        assert status == 200 and json.loads(body)['size'] == 4194304
    finally:
        sock.close()
    server.wait_until(lambda: nothing_left(server, server.spool_dir),
                      what='the spool file closed')


def test_worker_killed_holding_a_spooled_body(server):
    if os.path.exists(server.hold_file):
        os.unlink(server.hold_file)
    data = pattern(2 * 1024 * 1024)
    result = {}

    def upload():
        result['reply'] = post(server, '/api/hold', data, timeout=30)

    thread = threading.Thread(target=upload)
    thread.start()
    try:
        pid = server.wait_until(
            lambda: os.path.exists(server.hold_file) and int(
                open(server.hold_file).read() or 0), what='the handler')
        assert spool_fds(pid, server.spool_dir), "the worker got the file"
        os.kill(pid, signal.SIGKILL)
    finally:
        thread.join(30)
    assert result['reply'].status == 500
    server.wait_until(lambda: nothing_left(server, server.spool_dir),
                      what='no spool file left after the kill')
    assert not os.listdir(server.spool_dir)
    server.wait_until(lambda: post(server, '/api/hash', b'x').status == 200,
                      what='the pool serving again')


def test_spec_forwarding_passes_the_file(server):
    image = pattern(1024 * 1024, 42)
    reply = post(server, '/lpr/read', image)
    assert reply.status == 200 and reply.json['size'] == len(image)
    stored = server.wait_until(
        lambda: (lambda last: last if last.get('sha256') else None)(
            server.get('/internal/storage/last').json),
        what='the storage pool storing the image')
    assert stored == {'kind': 'SpooledBytes', 'size': len(image),
                      'sha256': sha(image),
                      'result': {'plate': 'AB-123', 'size': len(image)}}
    server.wait_until(lambda: nothing_left(server, server.spool_dir),
                      what='the forwarded file closed everywhere')


def test_small_forwarded_body_goes_as_bytes(server):
    image = pattern(1000, 43)
    assert post(server, '/lpr/read', image).status == 200
    stored = server.wait_until(
        lambda: (lambda last: last if last.get('sha256') == sha(image)
                 else None)(server.get('/internal/storage/last').json),
        what='the small image stored')
    assert stored['kind'] == 'bytes'


def test_dispatcher_memory_stays_flat_during_a_large_upload(server):
    size = 256 * 1024 * 1024
    block = pattern(1024 * 1024, 7)
    digest = hashlib.sha256()
    for _ in range(size // len(block)):
        digest.update(block)

    def rss():
        with open(f'/proc/{server.pid}/status') as status:
            for line in status:
                if line.startswith('VmRSS:'):
                    return int(line.split()[1]) * 1024
        return 0

    before = rss()
    peak = [before]
    done = threading.Event()

    def watch():
        while not done.is_set():
            peak[0] = max(peak[0], rss())
            time.sleep(0.01)

    watcher = threading.Thread(target=watch)
    watcher.start()
    sock = socket.create_connection(('127.0.0.1', server.port), timeout=60)
    try:
        sock.sendall(b'POST /api/hash HTTP/1.1\r\nHost: x\r\n'
                     b'Content-Length: %d\r\n\r\n' % size)
        for _ in range(size // len(block)):
            sock.sendall(block)
        status, body = read_reply(sock, timeout=120)
    finally:
        done.set()
        watcher.join()
        sock.close()
    assert status == 200
    assert json.loads(body)['sha256'] == digest.hexdigest()
    assert peak[0] - before < 20 * 1024 * 1024, (before, peak[0])


# -- limits, stalls, threshold 0 -------------------------------------------------------

def test_threshold_zero_spools_every_body(strict):
    data = b'0123456789'
    reply = post(strict, '/api/hash-data', data)
    assert reply.json == {'sha256': sha(data), 'size': 10,
                          'kind': 'SpooledBytes', 'head': data[:4].hex()}
    reply = post(strict, '/api/json', json.dumps({'items': [1, 2]}).encode(),
                 'application/json')
    assert reply.json == {'kind': 'dict', 'count': 2, 'last': 2, 'same': True}
    status, body = send_chunked(strict.port, '/api/hash', b'abc')
    assert status == 200 and json.loads(body)['kind'] == 'SpooledBytes'
    assert post(strict, '/api/hash', b'').json['kind'] == 'NoneType'


def test_body_over_the_limit_is_a_413(strict):
    reply = strict.raw(b'POST /api/hash HTTP/1.1\r\nHost: x\r\n'
                       b'Content-Length: %d\r\n\r\n' % (9 * 1024 * 1024))
    assert reply.startswith(b'HTTP/1.1 413')
    status, _ = send_chunked(strict.port, '/api/hash',
                             pattern(9 * 1024 * 1024))
    assert status == 413
    strict.wait_until(lambda: nothing_left(strict, strict.spool_dir),
                      what='the refused body dropped')
    data = pattern(8 * 1024 * 1024)
    assert post(strict, '/api/hash', data).json['sha256'] == sha(data)


@pytest.mark.parametrize('framing', ['content-length', 'chunked'])
def test_a_client_that_sends_all_before_reading_gets_its_413(strict, framing):
    """A client that writes its whole body before it reads (http.client,
    most libraries) gets the 413, not a reset: the refused connection
    reads and drops the rest of the body before it closes."""
    body = os.urandom(9 * 1024 * 1024)
    outcomes = []
    for _ in range(5):
        connection = http.client.HTTPConnection('127.0.0.1', strict.port,
                                                timeout=20)
        try:
            if framing == 'chunked':
                connection.request('POST', '/api/hash', encode_chunked=True,
                                   body=iter([body[:4096], body[4096:]]))
            else:
                connection.request('POST', '/api/hash', body=body)
            reply = connection.getresponse()
            outcomes.append((reply.status, reply.getheader('connection')))
            reply.read()
        except OSError as err:
            outcomes.append(type(err).__name__)
        finally:
            connection.close()
    assert outcomes == [(413, 'close')] * 5, outcomes
    assert post(strict, '/api/hash', b'after').status == 200
    strict.wait_until(lambda: nothing_left(strict, strict.spool_dir),
                      what='the refused bodies dropped')


def test_stalled_upload_times_out_and_leaves_nothing(strict):
    sock = socket.create_connection(('127.0.0.1', strict.port), timeout=15)
    try:
        sock.sendall(b'POST /api/hash HTTP/1.1\r\nHost: x\r\n'
                     b'Content-Length: 4194304\r\n\r\n' + pattern(1000000))
        strict.wait_until(lambda: spool_fds(strict.pid, strict.spool_dir),
                          what='the body spooling')
        started = time.monotonic()
        status, _ = read_reply(sock, timeout=15)
        assert status == 408
        assert time.monotonic() - started < 10
        assert sock.recv(100) == b''  # and closed
    finally:
        sock.close()
    strict.wait_until(lambda: nothing_left(strict, strict.spool_dir),
                      what='the stalled spool file closed')


def test_stalled_chunked_upload_times_out_and_leaves_nothing(strict):
    sock = socket.create_connection(('127.0.0.1', strict.port), timeout=15)
    try:
        piece = pattern(200000)
        sock.sendall(b'POST /api/hash HTTP/1.1\r\nHost: x\r\n'
                     b'Transfer-Encoding: chunked\r\n\r\n'
                     + b'%x\r\n' % len(piece) + piece + b'\r\n')
        strict.wait_until(lambda: spool_fds(strict.pid, strict.spool_dir),
                          what='the chunked body spooling')
        status, _ = read_reply(sock, timeout=15)
        assert status == 408
    finally:
        sock.close()
    strict.wait_until(lambda: nothing_left(strict, strict.spool_dir),
                      what='the stalled spool file closed')


def test_slow_steady_upload_outlives_request_timeout(strict):
    data = pattern(3 * 1024 * 1024, 9)
    sock = socket.create_connection(('127.0.0.1', strict.port), timeout=15)
    try:
        sock.sendall(b'POST /api/hash HTTP/1.1\r\nHost: x\r\n'
                     b'Content-Length: %d\r\n\r\n' % len(data))
        step = len(data) // 10
        for start_at in range(0, len(data), step):
            sock.sendall(data[start_at:start_at + step])
            time.sleep(0.35)  # 3.5 s in all, request_timeout is 2 s
        status, body = read_reply(sock)
    finally:
        sock.close()
    assert status == 200 and json.loads(body)['sha256'] == sha(data)


def test_a_disk_that_refuses_the_body_answers_507(tmp_path_factory):
    app = None
    try:
        app = start(tmp_path_factory, 'full', SPOOL_FSIZE=2 * 1024 * 1024)
        reply = post(app, '/api/hash', pattern(3 * 1024 * 1024))
        assert reply.status == 507
        assert b'cannot be stored' in reply.body
        status, body = send_chunked(app.port, '/api/hash',
                                    pattern(3 * 1024 * 1024))
        assert status == 507
        # the operator learns why from the log: one ERROR per refused body
        app.wait_log(r'ERROR .*request body from 127\.0\.0\.1:\d+ cannot '
                     r'be spooled to .*: File too large', count=2)
        app.wait_until(lambda: nothing_left(app, app.spool_dir),
                       what='the refused bodies dropped')
        data = pattern(1024 * 1024)
        assert post(app, '/api/hash', data).json['sha256'] == sha(data)
    finally:
        if app is not None:
            app.cleanup()


def test_a_body_too_large_for_a_capped_worker_is_a_500(tmp_path_factory):
    # a worker's address space too small for the body, spooled (its file
    # cannot be mapped) or in memory (the pipe's frame cannot be held):
    # that request answers 500 with an ERROR line, and no worker dies of it
    # (one that failed to read the message would die, and so would each
    # one the request went to next, until the pool was degraded)
    app = None
    try:
        app = start(tmp_path_factory, 'capped', SPOOL_WORKER_MEMORY_MB=120,
                    SPOOL_THRESHOLD=100 * 1024 * 1024)
        small = pattern(1024 * 1024)
        assert post(app, '/api/hash', small).json['sha256'] == sha(small)
        workers = sorted(app.children())
        # spooled; in memory, too large for its buffer, or for the copy
        # of it the worker's request.data (bytes) is
        for size in (110 << 20, 96 << 20, 60 << 20):
            reply = post(app, '/api/hash', bytes(size))
            assert reply.status == 500, size
            assert b'too large for this worker' in reply.body
            app.wait_log(rf'ERROR .*POST /api/hash: its {size}-byte body '
                         r'cannot be held in this worker: .*capped at 120 MiB')
            for _ in range(3):
                assert post(app, '/api/hash', small).json['sha256'] == sha(
                    small)
        assert sorted(app.children()) == workers
        assert 'died' not in app.log()
        app.wait_until(lambda: nothing_left(app, app.spool_dir),
                       what='the refused body dropped')
    finally:
        if app is not None:
            app.cleanup()


# -- large answers through shared memory ---------------------------------------------------

@pytest.mark.parametrize('size', [THRESHOLD, THRESHOLD + 1, 3 * 1024 * 1024])
def test_large_bytes_answer(server, size):
    reply = server.get(f'/api/big/{size}', timeout=30)
    assert reply.status == 200
    expected = pattern_of_app(size)
    assert reply.headers['content-length'] == str(size)
    assert reply.headers['content-type'] == 'application/octet-stream'
    assert sha(reply.body) == sha(expected)
    seen = server.get('/seen').json
    assert seen['sha256'] == sha(expected)
    # above the threshold on_response sees the shared memory itself
    assert seen['kind'] == ('SpooledBytes' if size > THRESHOLD else 'bytes')


def test_large_text_answer_and_head(server):
    size = 400000
    reply = server.get(f'/api/big/{size}?text=1', timeout=30)
    assert reply.status == 200
    assert reply.body == pattern_of_app(size).hex().encode()
    assert reply.headers['content-type'].startswith('text/html')
    assert server.get('/seen').json['kind'] == 'str'
    head = server.request('HEAD', f'/api/big/{size}')
    assert head.status == 200 and head.body == b''
    assert head.headers['content-length'] == str(size)


def memory_files(pid):
    """How many shared-memory answers process `pid` holds open."""
    count = 0
    for name in os.listdir(f'/proc/{pid}/fd'):
        try:
            count += 'uhttp-answer' in os.readlink(f'/proc/{pid}/fd/{name}')
        except OSError:
            pass
    return count


@pytest.mark.parametrize('free', [1, 2])
def test_large_answer_at_the_open_file_limit(tmp_path_factory, free):
    # the dispatcher at its open-file limit, with an on_response hook: the
    # view of the answer it makes for the hook (a dup() and an mmap, each a
    # descriptor) cannot be had; the client still gets the whole answer,
    # on_response a copy of it, and no shared memory stays open
    app = None
    conn = None
    try:
        app = start(tmp_path_factory, 'exhaust')
        conn = http.client.HTTPConnection('127.0.0.1', app.port, timeout=10)

        def get(path):
            conn.request('GET', path)
            reply = conn.getresponse()
            return reply.status, reply.read()

        size = 3 * THRESHOLD
        status, body = get(f'/sync/exhaust?free={free}')
        assert status == 200, body
        status, body = get(f'/api/big/{size}')
        assert status == 200 and sha(body) == sha(pattern_of_app(size))
        assert get('/sync/restore')[0] == 200
        seen = json.loads(get('/seen')[1])
        assert seen['sha256'] == sha(pattern_of_app(size))
        assert memory_files(app.pid) == 0
        app.wait_log(r'no view of the answer to request \d+ for on_response')
    finally:
        if conn is not None:
            conn.close()
        if app is not None:
            app.cleanup()


def test_first_spooled_upload_at_the_open_file_limit(tmp_path_factory):
    # the dispatcher's first spooled body makes the pipe it splices
    # through; at the open-file limit (room for the spool file and its
    # view, not for a pipe) the body is read through a buffer instead of
    # answering 400
    app = None
    conn = None
    try:
        app = start(tmp_path_factory, 'exhaust-upload')
        conn = http.client.HTTPConnection('127.0.0.1', app.port, timeout=10)
        conn.request('GET', '/sync/exhaust?free=2')
        reply = conn.getresponse()
        assert reply.status == 200, reply.read()
        reply.read()
        data = pattern(4 * THRESHOLD, 21)
        conn.request('POST', '/api/hash', body=data, headers={
            'Content-Type': 'application/octet-stream'})
        reply = conn.getresponse()
        body = reply.read()
        assert reply.status == 200, body[:200]
        assert json.loads(body)['sha256'] == sha(data)
        conn.request('GET', '/sync/restore')
        assert conn.getresponse().status == 200
        app.wait_until(lambda: nothing_left(app, app.spool_dir),
                       what='the body dropped')
    finally:
        if conn is not None:
            conn.close()
        if app is not None:
            app.cleanup()


def test_echo_of_a_spooled_body(server):
    data = pattern(3 * 1024 * 1024, 11)
    reply = post(server, '/api/echo', data)
    assert reply.status == 200 and sha(reply.body) == sha(data)
    server.wait_until(lambda: nothing_left(server, server.spool_dir),
                      what='the echoed body closed')


def test_sync_route_answers_its_spooled_body(server):
    # client.data of a spooled body is a SpooledBytes; respond() sends it
    # (from its file) as it sends bytes, instead of a 500
    conn = http.client.HTTPConnection('127.0.0.1', server.port, timeout=30)
    try:
        for seed in (12, 13):   # twice on one keep-alive connection
            data = pattern(3 * 1024 * 1024, seed)
            conn.request('POST', '/sync/echo', body=data, headers={
                'Content-Type': 'application/octet-stream'})
            reply = conn.getresponse()
            body = reply.read()
            assert reply.status == 200, body[:200]
            assert reply.getheader('x-kind') == 'SpooledBytes'
            assert reply.getheader('content-type') == 'application/octet-stream'
            assert sha(body) == sha(data)
    finally:
        conn.close()
    server.wait_until(lambda: nothing_left(server, server.spool_dir),
                      what='the answered body closed')


def pattern_of_app(size):
    block = bytes(range(251)) * (65536 // 251 + 1)
    out = bytearray()
    while len(out) < size:
        out += block
    return bytes(out[:size])


# -- over HTTPS (the body is read through TLS, not spliced) ----------------------------------

def test_spooled_bodies_and_large_answers_over_https(tmp_path_factory):
    trustme = pytest.importorskip('trustme')
    import ssl  # pylint: disable=import-outside-toplevel
    ca = trustme.CA()
    cert = ca.issue_cert('127.0.0.1')
    keys = tmp_path_factory.mktemp('tls')
    cert_path, key_path = keys / 'server.pem', keys / 'server.key'
    cert.cert_chain_pems[0].write_to_path(str(cert_path))
    for extra in cert.cert_chain_pems[1:]:
        extra.write_to_path(str(cert_path), append=True)
    cert.private_key_pem.write_to_path(str(key_path))
    app = None
    try:
        app = start(tmp_path_factory, 'tls', SPOOL_CERT=cert_path,
                    SPOOL_KEY=key_path)
        context = ssl.create_default_context()
        ca.configure_trust(context)
        conn = http.client.HTTPSConnection('127.0.0.1', app.port, timeout=30,
                                           context=context)
        try:
            for size in (THRESHOLD + 1, 5 * 1024 * 1024 + 5):
                data = pattern(size, size)
                conn.request('POST', '/api/hash', body=data, headers={
                    'Content-Type': 'application/octet-stream'})
                answer = json.loads(conn.getresponse().read())
                assert answer == {'sha256': sha(data), 'size': size,
                                  'pid': answer['pid'],
                                  'kind': 'SpooledBytes'}
            data = pattern(3 * 1024 * 1024, 5)
            conn.request('POST', '/api/echo', body=iter([data[:100000],
                                                         data[100000:]]),
                         headers={'Content-Type': 'application/octet-stream'},
                         encode_chunked=True)
            response = conn.getresponse()
            assert response.status == 200 and response.read() == data
        finally:
            conn.close()
        app.wait_until(lambda: nothing_left(app, app.spool_dir),
                       what='no spool file left')
    finally:
        if app is not None:
            app.cleanup()


class LeakingWorker(_workers.Worker):
    def setup(self):
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
        self.leaked = []

    @_workers.api('/api/leak', 'GET')
    def leak(self, request):       # the bug in the app: files never closed
        try:
            while True:
                self.leaked.append(open(os.devnull, 'rb'))
        except OSError:
            return {'open': len(self.leaked)}

    @_workers.api('/api/upload', 'POST')
    def upload(self, request):
        return {'size': len(request.data)}


def test_a_body_lost_to_a_worker_out_of_descriptors_is_logged():
    pool = _workers.WorkerPool(LeakingWorker, num_workers=1,
                               routes=['/api/**'])
    with TestServer(_workers.Dispatcher, [pool]) as server:
        assert server.request('POST', '/api/upload', data=b'x' * 300_000
                              ).json() == {'size': 300_000}
        assert server.get('/api/leak').status == 200
        reply = server.request('POST', '/api/upload', data=b'x' * 300_000)
        assert reply.status == 500
        # the worker's record travels its own pipe: it may trail the answer
        deadline = time.monotonic() + 10
        while not any("its body's file descriptor never arrived"
                      in record.message for record in list(server.logs)
                      if record.level >= _workers.LOG_ERROR):
            assert time.monotonic() < deadline, server.log_text()
            time.sleep(0.05)
