"""Remote pools when things go wrong in between: a client that leaves before
its request started, Redis restarted from a snapshot or empty, a broken
connection under a disconnect, an entry the dispatcher cannot apply, a
worker killed or stopped while its gauges are shown.

Real redis-server processes on free ports (killed by pid), the documented
worker command in its own process group (killed by group), the dispatchers
of tests/apps/remote_app.py and tests/apps/remote_gauges.py.
"""

import json
import os
import pickle
import re
import signal
import socket
import threading
import time

import pytest

from uhttp.workers import broker, messages, remotelink

from remote_util import (  # noqa: F401 (groups: a fixture)
    REDIS, RedisServer, groups, remote_workers, wait_workers)

pytestmark = pytest.mark.skipif(
    REDIS is None, reason='redis-server not installed (Debian: redis-server)')

KEYS = broker.Keys('ItemWorker')
SAVE = '3600 1 300 100 60 10000'    # Redis 7's default save points


@pytest.fixture
def servers():
    """start(**RedisServer options, save=None): redis-servers, killed at
    teardown; `save`: its snapshot points (with a directory of its own)."""
    started = []

    def start(save=None, directory=None, **kwargs):
        server = RedisServer(**kwargs)
        if save is not None:
            plain = server.arguments

            def arguments():
                args = plain()
                args[args.index('--save') + 1] = save
                return args + ['--dir', str(directory)]
            server.arguments = arguments
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.kill()


def test_a_request_whose_client_left_before_it_started_never_starts(
        app_server, servers, groups):
    redis_server = servers()
    # heartbeat_interval 30 s: the periodic clean-up of ended requests does
    # not come within the test; the request must be cancelled as it ends
    app = app_server('remote_app', redis_server.url, 60, 30, 0, '-', 30)
    groups(redis_server.url, 1)
    wait_workers(app, 1)
    busy = threading.Thread(target=app.get, args=('/api/sleep/2',),
                            kwargs={'timeout': 20})
    busy.start()
    app.wait_until(lambda: [worker for worker in remote_workers(app)
                            if worker['current_request']],
                   what='the worker busy')
    client = redis_server.client(timeout=5)
    body = json.dumps({'name': 'abandoned'}).encode()
    sock = socket.create_connection(('127.0.0.1', app.port), timeout=5)
    sock.sendall(b'POST /api/items HTTP/1.1\r\nHost: x\r\nContent-Type: '
                 b'application/json\r\nContent-Length: %d\r\n\r\n%s'
                 % (len(body), body))
    app.wait_until(lambda: client.xlen(KEYS.requests) == 1,
                   what='the request waiting in the stream')
    sock.close()  # its client leaves while it waits
    busy.join(20)
    assert not busy.is_alive()
    items = app.get('/api/items').json['items']  # (after it in the stream)
    assert {'name': 'abandoned'} not in items
    assert 'late answer' not in app.log()
    assert 'persists its data' not in app.log()  # (--save '')


def test_a_redis_restored_from_a_snapshot_keeps_live_workers_alive(
        app_server, servers, groups, tmp_path):
    redis_server = servers(save=SAVE, directory=tmp_path)
    app = app_server('remote_app', redis_server.url, 8, 10, 0, '-', 3)
    app.wait_log(r"pool ItemWorker: broker redis://127\.0\.0\.1:\d+/0: it "
                 r"persists its data \(save '3600 1 300 100 60 10000'\)")
    assert app.log().count('persists its data') == 1
    group = groups(redis_server.url, 1)
    wait_workers(app, 1)
    redis_server.client(timeout=5).save()  # the worker's score, on disk
    time.sleep(9)  # older than stuck_timeout (8 s) when Redis restores it
    group.signal_group(signal.SIGSTOP)  # (its beats come after the reading)
    try:
        port = redis_server.port
        redis_server.kill()
        servers(save=SAVE, directory=tmp_path, port=port)
        app.wait_log(r'broker redis://\S+ reachable', count=2, timeout=15)
        time.sleep(3.5)  # the dispatcher reads the restored roster
    finally:
        group.signal_group(signal.SIGCONT)
    time.sleep(3)
    assert app.get('/api/pid').status == 200
    assert ' died' not in app.log()
    assert len(remote_workers(app)) == 1


def test_a_disconnect_whose_write_failed_is_written_again(
        app_server, servers, groups):
    redis_server = servers()
    app = app_server('remote_app', redis_server.url, 20, 30, 0, '-', 0.5)
    groups(redis_server.url, 1)
    wait_workers(app, 1)
    sock = socket.create_connection(('127.0.0.1', app.port), timeout=5)
    sock.sendall(b'GET /api/subscribe HTTP/1.1\r\nHost: x\r\n\r\n')
    app.wait_until(lambda: app.get('/api/subscribers').json['count'] == 1,
                   what='one subscriber')
    port = redis_server.port
    redis_server.kill()
    sock.close()  # the client leaves the stream while Redis is down
    time.sleep(2)  # the dispatcher's write of that disconnect fails
    servers(port=port)  # back, empty
    app.wait_until(lambda: app.get('/api/subscribers').json.get('count') == 0,
                   timeout=15, what='the subscriber gone')
    app.wait_log(r'subscriber \d+ gone')


def test_one_entry_the_dispatcher_cannot_apply_costs_itself_only(
        app_server, servers, groups):
    redis_server = servers()
    app = app_server('remote_app', redis_server.url, 20, 10)
    group = groups(redis_server.url, 1)
    wait_workers(app, 1)
    group.signal_group(signal.SIGSTOP)  # (alive for 20 s, it takes none)
    answers = []
    asking = threading.Thread(target=lambda: answers.append(
        app.get('/api/pid', timeout=20)))
    asking.start()
    client = redis_server.client(timeout=5)
    entry_id, fields = app.wait_until(
        lambda: client.xrange(KEYS.requests), what='the request entry')[0]
    client.xdel(KEYS.requests, entry_id)
    request_id, reply = int(fields[b'r']), fields[b'q'].decode()
    worker = 'elsewhere:1:abcdef'
    # as one worker's writes, read in one batch: its START, an entry the
    # dispatcher cannot apply, then its answer
    pipe = client.pipeline(transaction=True)
    pipe.xadd(reply, {'w': worker, 's': str(request_id)})
    pipe.xadd(reply, {'w': worker, 'n': '1', 'm': pickle.dumps(42)})
    pipe.xadd(reply, broker.encode_reply(
        worker, 2, messages.error_message(request_id, 500, 'from afar')))
    pipe.execute()
    asking.join(20)
    assert answers and answers[0].status == 500, answers
    assert answers[0].json == {'error': 'from afar'}
    app.wait_log(r'pool ItemWorker: broker entry \S+ from elsewhere:1:abcdef '
                 r'not applied')


def test_a_lost_connection_during_client_list_keeps_the_killed_check(servers):
    redis_server = servers()
    link = remotelink.DispatcherLink(redis_server.url, KEYS,
                                     KEYS.reply('d'), 1, lambda: None, b'')
    named = remotelink.connect(redis_server.url, timeout=0.5,
                               name=broker.connection_name('h:1:t'))
    assert link._connected(named) == {'h:1:t'}
    os.kill(redis_server.proc.pid, signal.SIGSTOP)  # a broker that hangs
    try:
        with pytest.raises(remotelink.broker_errors()):
            link._connected(named)  # (the read loop reconnects)
    finally:
        os.kill(redis_server.proc.pid, signal.SIGCONT)
    assert not link._no_client_list
    assert link._connected(named) == {'h:1:t'}
    # an ACL without CLIENT LIST: the check is off for good
    other = redis_server.client(timeout=5)
    other.acl_setuser('limited', enabled=True, passwords=['+pw'],
                      categories=['+@all'], commands=['-client'], keys=['*'])
    limited = remotelink.connect(
        f'redis://limited:pw@127.0.0.1:{redis_server.port}/0')
    assert link._connected(limited) is None
    assert link._connected(named) is None


def gauge_lines(app):
    return re.findall(r'^holder\{.*$', app.get('/metrics').text, re.M)


def test_a_dead_or_departed_remote_workers_gauges_leave_the_metrics(
        app_server, servers, groups):
    redis_server = servers()
    app = app_server('remote_gauges', redis_server.url)
    for ending in ('killed', 'stopped'):
        group = groups(redis_server.url, 1, target='remote_gauges:GaugeWorker')
        app.wait_until(lambda: remote_workers(app, 'GaugeWorker'),
                       timeout=20, what='a remote worker')
        pid = app.get('/api/gauge').json['pid']
        assert app.wait_until(lambda: gauge_lines(app), what='its gauge')[0] \
            .endswith(f' {pid}.0')
        if ending == 'killed':
            group.signal_group(signal.SIGKILL)
            app.wait_log(rf'remote worker \S+:{pid}:\S+ .* died', timeout=15)
        else:
            os.kill(group.pid, signal.SIGTERM)  # (the command only)
            app.wait_log(rf'remote worker \S+:{pid}:\S+ .* left', timeout=15)
        app.wait_until(lambda: not gauge_lines(app), what='its gauge gone')


class StartReplyDropper:
    """A TCP proxy to Redis that, once, forwards a worker's START or TAKE
    script call and then drops its connection before the reply (the script
    ran in Redis: the entry is acknowledged, the dispatcher told)."""

    CALLS = ((b"'XREADGROUP', 'GROUP', ARGV[1]", b'*3\r\n:1\r\n'),
             (b"local acked = redis.call('XACK'", b':1\r\n'))

    def __init__(self, target_port):
        self.target = ('127.0.0.1', target_port)
        self.fired = threading.Event()
        self.sockets = []
        self.listener = socket.create_server(('127.0.0.1', 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                down, _ = self.listener.accept()
                up = socket.create_connection(self.target, timeout=5)
            except OSError:
                return
            up.settimeout(None)
            self.sockets += [down, up]
            state = {'expect': None}
            threading.Thread(target=self._upward, args=(down, up, state),
                             daemon=True).start()
            threading.Thread(target=self._downward, args=(up, down, state),
                             daemon=True).start()

    def _upward(self, down, up, state):
        try:
            while True:
                data = down.recv(65536)
                if not data:
                    break
                for call, reply in self.CALLS:
                    if call in data and not self.fired.is_set():
                        state['expect'] = reply
                up.sendall(data)
        except OSError:
            pass
        self._close(down, up)

    def _downward(self, up, down, state):
        try:
            while True:
                data = up.recv(65536)
                if not data:
                    break
                expect, state['expect'] = state['expect'], None
                if (expect is not None and data.startswith(expect)
                        and not self.fired.is_set()):
                    self.fired.set()
                    break  # the reply is lost with the connection
                down.sendall(data)
        except OSError:
            pass
        self._close(down, up)

    @staticmethod
    def _close(*socks):
        for sock in socks:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def close(self):
        self.listener.close()
        self._close(*self.sockets)


def test_a_request_whose_start_reply_was_lost_is_answered_500_at_once(
        app_server, servers, groups):
    redis_server = servers()
    proxy = StartReplyDropper(redis_server.port)
    try:
        # timeout 20 s: the 500 must come long before the pool's 504
        app = app_server('remote_app', redis_server.url, 10, 20)
        groups(f'redis://127.0.0.1:{proxy.port}/0', 1)
        wait_workers(app, 1)
        began = time.monotonic()
        answer = app.get('/api/sleep/0', timeout=25)
        took = time.monotonic() - began
        assert proxy.fired.is_set()
        assert answer.status == 500, (answer.status, app.log())
        assert answer.json == {'error': 'Worker lost the request'}
        assert took < 8, took
        app.wait_log(r'ERROR.*pool ItemWorker: remote worker \S+ lost '
                     r'request \d+')
        assert app.get('/api/sleep/0', timeout=10).status == 200
        time.sleep(1)  # (answered once: no late answer, no second notice)
        assert app.log().count(' lost request ') == 1
        assert 'late answer' not in app.log()
        assert ' died' not in app.log()
    finally:
        proxy.close()
