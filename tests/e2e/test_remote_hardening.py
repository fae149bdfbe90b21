"""Remote pools, hardened: a password and TLS on the broker link, Redis
memory that stays bounded, large bodies and answers across the broker,
and a request a paused worker put back that can run once only.

Real redis-server processes on free ports (killed by pid), the documented
worker command in its own process group (killed by group), the dispatcher
of tests/apps/remote_app.py.
"""

import hashlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from uhttp.workers import broker

from harness import APPS
from remote_util import (  # noqa: F401 (groups: a fixture)
    REDIS, RedisServer, command_env, free_port, groups, redis_has_tls,
    remote_workers, wait_workers)

pytestmark = pytest.mark.skipif(
    REDIS is None, reason='redis-server not installed (Debian: redis-server)')

PASSWORD = 's3cret-Pa55word'
KEYS = broker.Keys('ItemWorker')


@pytest.fixture
def servers():
    started = []

    def start(**kwargs):
        server = RedisServer(**kwargs).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.kill()


# -- security -------------------------------------------------------------------

def test_a_password_works_and_is_never_shown(app_server, servers, groups):
    redis_server = servers(password=PASSWORD)
    app = app_server('remote_app', redis_server.url)
    group = groups(redis_server.url, 1)
    wait_workers(app, 1)
    assert app.get('/api/pid').status == 200
    assert app.get('/api/log').status == 200
    app.wait_log(r'remote hello from \d+')
    pool = [p for p in app.status()['pools'] if p['name'] == 'ItemWorker'][0]
    assert pool['broker']['url'] == (
        f'redis://***@127.0.0.1:{redis_server.port}/0')
    shown = [json.dumps(app.status()), app.get('/metrics').text,
             app.get('/_dashboard/data').text, app.log(), group.log()]
    assert not [text for text in shown if PASSWORD in text]


def test_a_wrong_password_is_a_clear_error_at_start(app_server, servers):
    redis_server = servers(password=PASSWORD)
    wrong = f'redis://:not-{PASSWORD[::-1]}@127.0.0.1:{redis_server.port}/0'
    app = app_server('remote_app', wrong)
    app.wait_log(r"pool ItemWorker: broker redis://\*\*\*@127\.0\.0\.1:\d+/0 "
                 r"unreachable \(the broker refused the URL's credentials")
    reply = app.get('/api/pid')
    assert reply.status == 503 and reply.headers['retry-after'] == '1'
    assert app.get('/local/pid').status == 200  # the local pool serves
    command = subprocess.run(
        [sys.executable, '-m', 'uhttp.workers', 'worker',
         'remote_app:ItemWorker', '--broker', wrong], cwd=APPS,
        env=command_env(), capture_output=True, text=True, timeout=30)
    assert command.returncode == 2
    assert "the broker refused the URL's credentials" in command.stderr
    assert PASSWORD[::-1] not in command.stderr + app.log()
    unauthenticated = f'redis://127.0.0.1:{redis_server.port}/0'
    command = subprocess.run(
        [sys.executable, '-m', 'uhttp.workers', 'worker',
         'remote_app:ItemWorker', '--broker', unauthenticated], cwd=APPS,
        env=command_env(), capture_output=True, text=True, timeout=30)
    assert command.returncode == 2, command.stderr
    assert "the broker refused the URL's credentials" in command.stderr


def broker_status(app):
    return [p for p in app.status()['pools']
            if p['name'] == 'ItemWorker'][0]['broker']


def test_broker_errors_are_told_in_the_brokers_own_words(app_server, servers):
    redis_server = servers(password=PASSWORD)
    app = app_server('remote_app', f'redis://:{PASSWORD}@127.0.0.1:'
                     f'{redis_server.port}/99')  # no database 99
    app.wait_log(r'pool ItemWorker: broker redis://\*\*\*@127\.0\.0\.1:\d+/99 '
                 r'unreachable \(ResponseError: DB index is out of range\)')
    app.wait_until(lambda: 'DB index is out of range' in (
        broker_status(app)['error'] or ''), what='the reason in status()')
    assert PASSWORD not in app.log() + json.dumps(app.status())
    # the worker command: a setting to fix, not an outage to wait out
    command = subprocess.run(
        [sys.executable, '-m', 'uhttp.workers', 'worker',
         'remote_app:ItemWorker', '--broker',
         f'redis://:{PASSWORD}@127.0.0.1:{redis_server.port}/99'], cwd=APPS,
        env=command_env(), capture_output=True, text=True, timeout=30)
    assert command.returncode == 2, command.stderr
    assert 'DB index is out of range' in command.stderr
    assert PASSWORD not in command.stderr
    closed = app_server('remote_app', f'redis://127.0.0.1:{free_port()}/0')
    closed.wait_log(r'unreachable \(ConnectionError: .*Connection refused')
    assert 'Connection refused' in broker_status(closed)['error']


@pytest.mark.skipif(not redis_has_tls(),
                    reason='the installed redis-server was built without TLS')
def test_rediss_with_the_ca_in_the_url(app_server, servers, groups):
    trustme = pytest.importorskip('trustme')
    redis_server = servers(tls=trustme.CA(), password=PASSWORD)
    assert redis_server.url.startswith('rediss://')
    app = app_server('remote_app', redis_server.url)
    groups(redis_server.url, 1)
    wait_workers(app, 1)
    reply = app.post('/api/items', json_body={'name': 'lamp'})
    assert reply.status == 200 and reply.json['item'] == {'name': 'lamp'}
    assert app.get('/api/events').text.count('event: tick') == 3
    pool = [p for p in app.status()['pools'] if p['name'] == 'ItemWorker'][0]
    assert pool['broker']['connected'] is True
    assert PASSWORD not in json.dumps(app.status()) + app.log()


# -- large bodies and answers -------------------------------------------------------

def pattern(size):
    return bytes(range(256)) * (size // 256)


def test_large_bodies_and_answers_cross_the_broker_intact(
        app_server, servers, groups):
    redis_server = servers()
    app = app_server('remote_app', redis_server.url)
    groups(redis_server.url, 1)
    wait_workers(app, 1)
    upload = os.urandom(3 * 1024 * 1024)  # above spool_threshold: spooled
    reply = app.post('/api/digest', body=upload,
                     headers={'content-type': 'application/octet-stream'},
                     timeout=30)
    assert reply.status == 200, reply.text
    assert reply.json == {'sha256': hashlib.sha256(upload).hexdigest(),
                          'size': len(upload), 'type': 'bytes'}
    size = 1024 * 1024  # > 256 KiB: no shared memory across hosts
    blob = app.get(f'/api/blob/{size}', timeout=30)
    assert blob.status == 200 and blob.body == pattern(size)
    export = app.get(f'/api/export/{4 * size}', timeout=30)
    assert export.status == 200 and export.body == pattern(4 * size)
    assert 'export.bin' in export.headers['content-disposition']
    assert app.get('/api/pid').status == 200


def test_an_answer_above_the_broker_limit_is_a_500_with_a_reason(
        app_server, servers, groups):
    redis_server = servers()
    app = app_server('remote_app', redis_server.url)
    groups(redis_server.url, 1)
    wait_workers(app, 1)
    over = broker.BODY_LIMIT + 256
    assert app.get(f'/api/blob/{over}', timeout=30).status == 500
    assert app.get(f'/api/export/{over}', timeout=30).status == 500
    app.wait_log(r'answer to request \d+: \d+ bytes, above the \d+ bytes a '
                 r'remote worker may send; answering 500', count=2)
    assert app.get('/api/pid').status == 200  # the worker serves on


def test_a_request_body_above_the_broker_limit_is_a_413(
        app_server, servers, groups):
    redis_server = servers()
    over = broker.BODY_LIMIT + 1024
    app = app_server('remote_app', redis_server.url, 3, 10, 0, 2 * over)
    groups(redis_server.url, 1)
    wait_workers(app, 1)
    reply = app.post('/api/digest', body=b'x' * over, timeout=30,
                     headers={'content-type': 'application/octet-stream'})
    assert reply.status == 413
    app.wait_log(rf'its body \({over} bytes\) is above the '
                 rf'{broker.BODY_LIMIT} bytes pool ItemWorker sends')
    small = app.post('/api/digest', body=b'x' * 1000,
                     headers={'content-type': 'application/octet-stream'})
    assert small.status == 200 and small.json['size'] == 1000
    # asked with Expect: 100-continue, the client is told before the body
    with socket.create_connection(('127.0.0.1', app.port), timeout=10) as sock:
        sock.sendall(f'POST /api/digest HTTP/1.1\r\nHost: t\r\n'
                     f'Content-Length: {over}\r\n'
                     'Expect: 100-continue\r\n\r\n'.encode())
        early = http.client.HTTPResponse(sock)
        early.begin()
        assert early.status == 413 and early.getheader('connection') == 'close'


def test_a_full_redis_is_a_prompt_answer_with_the_brokers_reason(
        app_server, servers, groups):
    redis_server = servers()
    client = redis_server.client(timeout=5)
    app = app_server('remote_app', redis_server.url, 3, 10, 0, 32 * 1024 * 1024)
    groups(redis_server.url, 1)
    wait_workers(app, 1)
    # as the README has it (noeviction), and full for an 8 MiB entry
    client.config_set('maxmemory-policy', 'noeviction')
    client.config_set('maxmemory', client.info('memory')['used_memory']
                      + 3 * 1024 * 1024)
    began = time.monotonic()
    reply = app.post('/api/digest', body=os.urandom(8 * 1024 * 1024),
                     headers={'content-type': 'application/octet-stream'},
                     timeout=30)
    assert reply.status == 503 and reply.headers['retry-after'] == '1'
    app.wait_log(r'WARNING .*pool ItemWorker: 1 request\(s\) not sent to '
                 r'broker redis://127\.0\.0\.1:\d+/0, the broker refused them '
                 r'\(\w+Error: command not allowed when used memory')
    reply = app.get(f'/api/blob/{8 * 1024 * 1024}', timeout=30)
    assert reply.status == 500  # at once, not the pool's 504 after 10 s
    assert time.monotonic() - began < 5
    app.wait_log(r'ERROR .*remote worker \S+: the broker refused its entry '
                 r'for request \d+ \(\d+ bytes\): \w+Error: command not '
                 r'allowed when used memory.*; answering 500')
    assert app.get('/api/pid').status == 200  # small ones still pass
    assert 'timed out' not in app.log()


# -- Redis memory --------------------------------------------------------------------

POOL_KEYS = {KEYS.requests, KEYS.workers, KEYS.info, KEYS.events,
             KEYS.control, KEYS.config, KEYS.settings}


def hammer(app, count, results):
    """`count` GETs on one keep-alive connection; statuses appended."""
    import http.client
    conn = http.client.HTTPConnection('127.0.0.1', app.port, timeout=20)
    try:
        for number in range(count):
            try:
                conn.request('GET', f'/api/sleep/0?tag={number}')
                response = conn.getresponse()
                response.read()
                results.append(response.status)
            except (OSError, http.client.HTTPException):
                results.append('error')
                conn.close()
                conn = http.client.HTTPConnection('127.0.0.1', app.port,
                                                  timeout=20)
    finally:
        conn.close()


def lengths(client):
    """XLEN of every stream of the pool and of every answer stream."""
    found = {}
    for key in client.scan_iter('uhttp:*'):
        key = key.decode()
        if client.type(key) == b'stream':
            found[key] = client.xlen(key)
    return found


def lasting(client):
    """The keys that would stay for ever: neither the pool's own (a fixed
    set) nor given a lifetime."""
    return sorted(key.decode() for key in client.scan_iter('uhttp:*')
                  if key.decode() not in POOL_KEYS and client.ttl(key) < 0)


def test_redis_memory_stays_bounded(app_server, servers, groups):
    redis_server = servers()
    client = redis_server.client(timeout=5)
    app = app_server('remote_app', redis_server.url, 10)
    doomed = groups(redis_server.url, 1)
    wait_workers(app, 1)
    groups(redis_server.url, 2)
    wait_workers(app, 3)
    results = []
    threads = [threading.Thread(target=hammer, args=(app, 750, results))
               for _ in range(4)]
    for thread in threads:
        thread.start()
    app.wait_until(lambda: len(results) > 300, timeout=30, what='load going')
    doomed.signal_group(signal.SIGKILL)
    for thread in threads:
        thread.join(120)
        assert not thread.is_alive()
    assert len(results) == 3000 and set(results) <= {200, 500}, set(results)
    assert results.count(200) >= 2990
    app.wait_until(lambda: client.xlen(KEYS.requests) == 0 and
                   client.xpending(KEYS.requests, broker.GROUP)['pending'] == 0,
                   timeout=15, what='no request left in the stream')
    streams = app.wait_until(
        lambda: (lambda found: found if all(
            size <= 20 for key, size in found.items()
            if key.startswith('uhttp:reply:')) else None)(lengths(client)),
        timeout=10, what='answer streams trimmed')
    assert streams[KEYS.events] <= broker.EVENTS_MAXLEN * 1.2
    assert lasting(client) == []
    # a dispatcher killed while a remote worker runs its request: the late
    # answer lands in a stream with a lifetime, not one that stays
    def slow_request():
        try:
            app.get('/api/sleep/1.5', timeout=10)
        except OSError:
            pass  # (its dispatcher is killed under it)

    late = threading.Thread(target=slow_request, daemon=True)
    late.start()
    app.wait_until(lambda: any(worker['current_request'] is not None
                               for worker in remote_workers(app)),
                   what='the slow request started')
    reply_streams = [key for key in lengths(client)
                     if key.startswith('uhttp:reply:')]
    app.kill()
    time.sleep(2.5)  # the answer came meanwhile
    assert reply_streams and all(
        0 < client.ttl(key) <= broker.REPLY_TTL for key in reply_streams
        if client.exists(key))
    assert lasting(client) == []


def test_requests_nobody_took_leave_the_stream(app_server, servers, groups):
    redis_server = servers()
    client = redis_server.client(timeout=5)
    app = app_server('remote_app', redis_server.url, 30, 1)  # timeout 1 s
    group = groups(redis_server.url, 1)
    wait_workers(app, 1)
    group.signal_group(signal.SIGSTOP)  # alive (connected), taking nothing
    answers = []

    def add(number):
        answers.append(app.post('/api/items', json_body={'n': number},
                                timeout=10).status)

    threads = [threading.Thread(target=add, args=(n,)) for n in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    assert answers == [504] * 10, (answers, app.log()[-3000:])
    assert client.xlen(KEYS.requests) == 10, client.xinfo_stream(KEYS.requests)
    app.wait_until(lambda: client.xlen(KEYS.requests) == 0, timeout=
                   broker.STALE_FACTOR * 1 + broker.STALE_MARGIN_MS / 1000 + 5,
                   what='stale request entries dropped')
    group.signal_group(signal.SIGCONT)
    # (the pool's timeout is 1 s: a busy machine may need a second try)
    items = app.wait_until(lambda: (lambda reply: reply.status == 200 and
                                    reply.json)(app.get('/api/items')),
                           timeout=20, what='the worker serving again')
    assert items['items'] == []  # none of them ran
