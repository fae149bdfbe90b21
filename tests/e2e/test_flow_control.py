"""Flow control and user file descriptors end to end: pause()/resume() move
requests to the pool's other worker while the paused one still gets
control messages, its own fd events and on_idle(); the README's Flow
Control example; register_reader/register_writer/unregister_* on workers
and on the dispatcher."""
import http.client
import json
import os
import re
import select
import shutil
import socket
import tempfile
import threading
import time

import pytest
import sseclient

APP = 'stream_flow'
SOCK_DIR = os.path.join(tempfile.gettempdir(), f'uwflow-{os.getpid()}')
APP_ARGS = (SOCK_DIR,)
LIMIT = 3  # FlowExample subscribers per worker


@pytest.fixture(scope='module', autouse=True)
def _remove_sock_dir():
    yield
    shutil.rmtree(SOCK_DIR, ignore_errors=True)


def errors_in(log):
    return re.findall(r'^.*\b(?:ERROR|CRITICAL)\b.*$', log, re.MULTILINE)


def send_datagram(name, data):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        sock.sendto(data, os.path.join(SOCK_DIR, name))
    finally:
        sock.close()


def stays(predicate, seconds=0.6, interval=0.05):
    """True when `predicate()` holds for the whole period."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not predicate():
            return False
        time.sleep(interval)
    return predicate()


def whoami_many(server, count, parallel=1):
    results = []
    errors = []

    def fetch():
        try:
            reply = server.get('/api/whoami', timeout=15)
            assert reply.status == 200, reply
            results.append(reply.json)
        except Exception as err:  # noqa: BLE001 - reported below
            errors.append(err)

    for _ in range(count // parallel):
        threads = [threading.Thread(target=fetch) for _ in range(parallel)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(20)
    assert not errors, errors
    assert len(results) == count // parallel * parallel
    return results


# -- pause() / resume() ----------------------------------------------------------

def test_paused_worker_takes_no_requests_but_sees_the_rest(module_server):
    server = module_server
    worker_log = r'INFO .*worker=%d %s'

    reply = server.post('/api/pause')
    assert reply.status == 200
    paused = reply.json['worker']
    other = 1 - paused
    assert reply.json['accepting'] is False  # _accepting reports the pause

    # every request now goes to the other worker, sequential or concurrent
    answers = whoami_many(server, 20) + whoami_many(server, 24, parallel=8)
    assert {answer['worker'] for answer in answers} == {other}
    assert all(answer['accepting'] is True for answer in answers)

    # ... while the paused one still runs on_idle(), its fds and on_config()
    server.wait_log(worker_log % (paused, r'on_idle while paused accepting=False'))
    send_datagram(f'flow-{paused}.sock', b'ping-while-paused')
    server.wait_log(worker_log % (
        paused, re.escape("datagram b'ping-while-paused' accepting=False")))
    assert server.post('/_config', json_body={'note': 'hello'}).status == 200
    server.wait_log(worker_log % (
        paused, re.escape("on_config {'note': 'hello'} accepting=False")))
    server.wait_log(worker_log % (
        other, re.escape("on_config {'note': 'hello'} accepting=True")))
    answers = whoami_many(server, 10)
    assert {answer['worker'] for answer in answers} == {other}

    # resume() (from on_config) makes it take requests again
    assert server.post('/_config', json_body={'resume': paused}).status == 200
    server.wait_log(worker_log % (paused, 'resumed accepting=True'))
    seen = []
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        seen += whoami_many(server, 4, parallel=4)
        if any(answer['worker'] == paused for answer in seen):
            break
    mine = [answer for answer in seen if answer['worker'] == paused]
    assert mine, f"worker {paused} served nothing after resume(): {seen}"
    assert all(answer['accepting'] is True for answer in mine)


def test_requests_waiting_for_a_worker_that_pauses_go_to_the_other(
        module_server):
    server = module_server
    outcome = {}

    def pause_slowly():
        outcome['reply'] = server.post('/api/pause', json_body={'delay': 1.0},
                                       timeout=15)

    pauser = threading.Thread(target=pause_slowly)
    pauser.start()
    try:
        time.sleep(0.2)
        # sent while one worker is busy pausing: some may be handed to it
        answers = whoami_many(server, 12, parallel=12)
    finally:
        pauser.join(20)
    reply = outcome['reply']
    assert reply.status == 200 and reply.json['accepting'] is False
    paused = reply.json['worker']
    answers += whoami_many(server, 12, parallel=6)
    assert {answer['worker'] for answer in answers} == {1 - paused}

    assert server.post('/_config', json_body={'resume': paused}).status == 200
    seen = []
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and not any(
            answer['worker'] == paused for answer in seen):
        seen += whoami_many(server, 4, parallel=4)
    assert any(answer['worker'] == paused for answer in seen), seen


class Subscriber:
    def __init__(self, server):
        self.conn = http.client.HTTPConnection('127.0.0.1', server.port,
                                               timeout=10)
        self.conn.request('GET', '/flow/events')
        self.response = self.conn.getresponse()
        assert self.response.status == 200
        hello = next(sseclient.SSEClient(self.response).events())
        assert hello.event == 'hello'
        self.hello = json.loads(hello.data)

    def close(self):
        self.response.close()
        self.conn.close()


def test_flow_control_example(module_server):
    server = module_server
    subscribers = []
    queued = None
    try:
        per_worker = {0: [], 1: []}
        for _ in range(2 * LIMIT):
            subscriber = Subscriber(server)
            subscribers.append(subscriber)
            hello = subscriber.hello
            per_worker[hello['worker']].append(subscriber)
            # a worker that paused at LIMIT never got another subscriber
            assert hello['count'] <= LIMIT, hello
            assert hello['count'] == len(per_worker[hello['worker']])
        assert [len(per_worker[0]), len(per_worker[1])] == [LIMIT, LIMIT]

        # both paused: the next subscriber waits in the pool's queue
        queued = socket.create_connection(('127.0.0.1', server.port), timeout=10)
        queued.sendall(b'GET /flow/events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n')
        readable, _, _ = select.select([queued], [], [], 1.0)
        assert not readable, "a paused worker took a request"

        # one subscriber of worker 1 leaves: worker 1 resumes and takes it
        per_worker[1][0].close()
        data = b''
        deadline = time.monotonic() + 10
        while b'\n\n' not in data.partition(b'\r\n\r\n')[2]:
            assert time.monotonic() < deadline, data
            chunk = queued.recv(65536)
            assert chunk, data
            data += chunk
        head, _, body = data.partition(b'\r\n\r\n')
        assert head.startswith(b'HTTP/1.1 200')
        line = [line for line in body.decode().split('\n')
                if line.startswith('data:')][0]
        hello = json.loads(line[5:])
        assert hello['worker'] == 1
        assert hello['count'] == LIMIT
    finally:
        if queued is not None:
            queued.close()
        for subscriber in subscribers:
            subscriber.close()
    server.wait_until(lambda: server.get('/_status').json['pending'] == 0,
                      timeout=10, what='pending back to 0')


# -- user file descriptors ------------------------------------------------------------

def test_dispatcher_reader_register_and_unregister(module_server):
    server = module_server
    send_datagram('dispatcher.sock', b'one')
    send_datagram('dispatcher.sock', b'two')
    server.wait_until(lambda: server.get('/_fd').json['received'] == ['one', 'two'],
                      timeout=10, what='datagrams read by the dispatcher')

    assert server.post('/_fd/unregister').status == 200
    send_datagram('dispatcher.sock', b'three')
    assert stays(lambda: server.get('/_fd').json['received'] == ['one', 'two'])

    assert server.post('/_fd/register').status == 200
    server.wait_until(
        lambda: server.get('/_fd').json['received'] == ['one', 'two', 'three'],
        timeout=10, what='the queued datagram after register_reader again')


def test_dispatcher_writer_stops_after_unregister(module_server):
    server = module_server
    assert server.post('/_writer', json_body={'n': 5}).status == 200
    server.wait_until(lambda: server.get('/_writer').json['writes'] >= 5,
                      timeout=10, what='five writable callbacks')
    assert stays(lambda: server.get('/_writer').json == {'writes': 5,
                                                          'read': 'ddddd'})


def test_worker_reader_register_and_unregister(module_server):
    server = module_server
    send_datagram('fdworker.sock', b'alpha')
    send_datagram('fdworker.sock', b'beta')
    server.wait_until(
        lambda: server.get('/fd/received').json['received'] == ['alpha', 'beta'],
        timeout=10, what='datagrams read by the worker')

    assert server.post('/fd/unregister').json == {'ok': True}
    send_datagram('fdworker.sock', b'gamma')
    assert stays(lambda: server.get('/fd/received').json['received'] == [
        'alpha', 'beta'])

    assert server.post('/fd/register').json == {'ok': True}
    server.wait_until(
        lambda: server.get('/fd/received').json['received'] == [
            'alpha', 'beta', 'gamma'],
        timeout=10, what='the queued datagram after register_reader again')


def test_worker_writer_stops_after_unregister(module_server):
    server = module_server
    assert server.post('/fd/writer', json_body={'n': 5}).json == {'ok': True}
    server.wait_until(lambda: server.get('/fd/writer').json['writes'] >= 5,
                      timeout=10, what='five writable callbacks')
    assert stays(lambda: server.get('/fd/writer').json == {'writes': 5,
                                                            'read': 'wwwww'})
    assert errors_in(server.log()) == []
