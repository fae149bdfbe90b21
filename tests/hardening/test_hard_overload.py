"""Overload (app tests/apps/hard_flood.py).

- Requests beyond max_pending get 503 at once (not after a timeout), the
  accepted ones still complete, and the server serves normally afterwards.
- 10,000 requests pipelined over 200 keep-alive connections: every one is
  answered exactly once, in order per connection.
- 5,000 concurrent connections, each with one request: all served.
"""
import json
import socket
import threading
import time

import pytest

from hard_util import (exchange, fd_count, many_exchanges, probe, raise_fd_limit,
                       request_bytes, settled_fds, wait_for)


def _status(server):
    return server.get('/_status', timeout=20).json


def test_beyond_max_pending_is_503_at_once(app_server):
    server = app_server('hard_flood', env={'HARD_MAX_PENDING': '4'})
    results = {}

    def slow(index):
        results[index] = exchange(server.port, request_bytes(
            'GET', '/api/slow?s=2', {'Connection': 'close'}), timeout=30)

    first = [threading.Thread(target=slow, args=(i,)) for i in range(4)]
    for thread in first:
        thread.start()
    wait_for(lambda: _status(server)['pending'] == 4, 10, 0.05, '4 pending requests')

    rejected = {}

    def extra(index):
        start = time.monotonic()
        outcome = exchange(server.port, request_bytes(
            'GET', f'/api/n/{index}', {'Connection': 'close'}), timeout=30)
        rejected[index] = (outcome, time.monotonic() - start)

    extras = [threading.Thread(target=extra, args=(i,)) for i in range(16)]
    for thread in extras:
        thread.start()
    for thread in extras:
        thread.join(40)
    for index, (outcome, took) in sorted(rejected.items()):
        assert outcome.rest == b'' and len(outcome.finals) == 1, outcome
        assert outcome.finals[0].status == 503, outcome
        assert took < 1.0, f"503 came after {took:.2f}s"
        assert outcome.finals[0].header('retry-after') is not None
    assert len(rejected) == 16
    for thread in first:
        thread.join(40)
    assert len(results) == 4
    for outcome in results.values():
        assert len(outcome.finals) == 1 and outcome.finals[0].status == 200, outcome
    assert _status(server)['pending'] == 0
    for index in range(8):
        reply = server.get(f'/api/n/{index}')
        assert reply.status == 200 and reply.json == {'n': index}
    probe(server)


def test_a_shed_keep_alive_connection_stays_open(app_server):
    """The 503 past max_pending keeps a keep-alive connection open (a
    close would only make the client connect again at once); a HEAD gets
    the same answer without its body."""
    server = app_server('hard_flood', env={'HARD_MAX_PENDING': '2'})
    slow = [threading.Thread(target=exchange, args=(server.port, request_bytes(
        'GET', '/api/slow?s=2', {'Connection': 'close'})),
        kwargs={'timeout': 30}) for _ in range(2)]
    for thread in slow:
        thread.start()
    wait_for(lambda: _status(server)['pending'] == 2, 10, 0.05, '2 pending')
    outcome = exchange(server.port, request_bytes('GET', '/api/n/1')
                       + request_bytes('GET', '/api/n/2'), timeout=10, expect=2)
    head = exchange(server.port, request_bytes('HEAD', '/api/n/3'),
                    timeout=10, expect=1, head_request=True)
    for thread in slow:
        thread.join(40)
    assert not outcome.closed and not head.closed, (outcome, head)
    assert [final.status for final in outcome.finals] == [503, 503], outcome
    for final in outcome.finals:
        assert final.header('retry-after') == '1'
        assert final.header('connection') == 'keep-alive'
        assert json.loads(final.body) == {'error': 'Too many pending requests'}
    [answer] = head.finals
    assert answer.status == 503 and answer.body == b''
    assert answer.header('content-length') == str(len(final.body))


@pytest.fixture(scope='module')
def flood_server():
    from hard_util import AppServer
    server = AppServer('hard_flood', env={'HARD_MAX_PENDING': '20000'})
    server.start()
    yield server
    server.cleanup()


def test_flood_of_10000_pipelined_requests(flood_server):
    server = flood_server
    raise_fd_limit(1000)
    connections, per_connection = 200, 50
    payloads = []
    for conn in range(connections):
        payloads.append(b''.join(
            request_bytes('GET', f'/api/n/{conn * per_connection + i}')
            for i in range(per_connection)))
    start = time.monotonic()
    results = many_exchanges(server.port, payloads, [per_connection] * connections,
                             timeout=120)
    took = time.monotonic() - start
    answered = 0
    for conn, (responses, closed, rest) in enumerate(results):
        assert rest == b'', (conn, rest[:200])
        numbers = [json.loads(resp.body)['n'] if resp.status == 200 else resp.status
                   for resp in responses]
        expected = list(range(conn * per_connection, (conn + 1) * per_connection))
        assert numbers == expected, (
            f"connection {conn} (closed={closed}): {numbers[:10]}... "
            f"{len(numbers)} answers")
        answered += len(responses)
    assert answered == connections * per_connection
    wait_for(lambda: _status(server)['pending'] == 0, 20, 0.1, 'pending to drain')
    print(f"10,000 pipelined requests in {took:.1f}s")
    probe(server)


def test_5000_concurrent_connections(flood_server):
    server = flood_server
    count = 5000
    raise_fd_limit(count + 500)
    fds = settled_fds(server)
    payloads = [request_bytes('GET', f'/api/n/{i}') for i in range(count)]
    results = many_exchanges(server.port, payloads, [1] * count, timeout=120)
    failures = []
    for index, (responses, closed, rest) in enumerate(results):
        if rest or len(responses) != 1 or responses[0].status != 200 or (
                json.loads(responses[0].body) != {'n': index}):
            failures.append((index, responses, closed, rest[:100]))
    assert not failures, f"{len(failures)} of {count} not served: {failures[:5]}"
    wait_for(lambda: _status(server)['pending'] == 0, 20, 0.1, 'pending to drain')
    wait_for(lambda: fd_count(server.pid) <= fds + 2, 30, 0.2,
             'the dispatcher to close the 5000 connections')
    probe(server)


def test_a_low_open_file_limit_names_the_setting_to_lower(app_server):
    """The connections the open file limit cannot hold come from
    max_waiting_clients when it is given, else from max_pending (10 x;
    tests/e2e/test_cli.py): the warning names the one to lower."""
    server = app_server('hard_flood', env={
        'HARD_MAX_PENDING': '10', 'HARD_MAX_CLIENTS': '3000',
        'HARD_NOFILE': '600'})
    log = server.wait_log(r'open file limit is 600, below', timeout=10)
    line = next(line for line in log.splitlines()
                if 'open file limit is 600' in line)
    assert line.rstrip().endswith('or lower max_waiting_clients'), line
    probe(server)


def test_out_of_descriptors_an_idle_keep_alive_connection_makes_room(
        app_server):
    """With the open file limit spent on idle keep-alive connections, a
    new client is not left waiting in the listen backlog until they time
    out: the oldest idle one is closed to make room (what
    max_waiting_clients does when it is the limit)."""
    server = app_server('hard_flood', env={
        'HARD_MAX_PENDING': '10', 'HARD_MAX_CLIENTS': '3000',
        'HARD_NOFILE': '64'})
    server.wait_log(r'open file limit is 64, below', timeout=10)
    idle = []
    try:
        # more idle keep-alive connections than the limit leaves room for:
        # each asks once, then holds its connection open
        for index in range(70):
            sock = socket.create_connection(('127.0.0.1', server.port),
                                            timeout=10)
            idle.append(sock)
            sock.sendall(request_bytes('GET', f'/api/n/{index}'))
            reply = b''
            while b'\r\n\r\n' not in reply or not reply.endswith(b'}'):
                chunk = sock.recv(4096)
                if not chunk:
                    break
                reply += chunk
            assert reply.startswith(b'HTTP/1.1 200 '), (index, reply)
        started = time.monotonic()
        reply = exchange(server.port, request_bytes(
            'GET', '/api/n/999', {'Connection': 'close'}), timeout=10)
        assert reply.raw.startswith(b'HTTP/1.1 200 '), reply
        assert time.monotonic() - started < 3  # keep_alive_timeout is 30
        # the first idle connections were the ones closed, not the last
        idle[0].settimeout(5)
        assert idle[0].recv(1) == b''
        idle[-1].sendall(request_bytes('GET', '/api/n/1000'))
        assert idle[-1].recv(4096).startswith(b'HTTP/1.1 200 ')
        probe(server)
    finally:
        for sock in idle:
            sock.close()
