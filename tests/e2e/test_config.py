"""Configuration over real HTTP: send_config() reaching every worker (and
workers started later), and every parameter of the configuration tables
accepted with its default and taking effect where a client can see it."""
import concurrent.futures
import http.client
import json
import os
import re
import signal
import socket
import ssl
import threading
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))


import harness  # noqa: E402  (tests/harness.py)


def _module_app(name, *args, env=None):
    app = harness.AppServer(name, args, env)
    try:
        app.start()
    except BaseException:
        app.cleanup()
        raise
    return app


def get_many(server, paths, threads=16):
    """GET every path concurrently: [(reply, seconds)]."""
    def one(path):
        started = time.monotonic()
        reply = server.get(path)
        return reply, time.monotonic() - started
    with concurrent.futures.ThreadPoolExecutor(min(threads, len(paths))) as pool:
        return list(pool.map(one, paths))


def pool_status(server, name):
    for pool in server.status()['pools']:
        if pool['name'] == name:
            return pool
    raise AssertionError(f"no pool {name}")


def wait_replaced(server, name, old_pid, index=0, timeout=10):
    """Wait until worker `index` of pool `name` runs as a new live process."""
    def replaced():
        worker = pool_status(server, name)['workers'][index]
        if worker['alive'] and worker['pid'] not in (None, old_pid):
            return worker['pid']
        return None
    return server.wait_until(replaced, timeout=timeout,
                             what=f'{name}[{index}] restarted')


def error_line_with(text, needle):
    for line in text.split('\n'):
        if needle in line and re.search(r'\bERROR\b', line):
            return line
    raise AssertionError(f"no ERROR line with {needle!r}:\n{text[-3000:]}")


def kill_worker(server, name, index=0):
    pid = pool_status(server, name)['workers'][index]['pid']
    assert pid and harness.pid_alive(pid)
    os.kill(pid, signal.SIGKILL)
    return pid


# == configuration updates ==================================================================

@pytest.fixture(scope='module')
def cfg():
    app = _module_app('config_app')
    yield app
    app.cleanup()


def collect_workers(server, path, count, want=None, timeout=8):
    """Replies from every one of `count` workers (concurrent held requests
    spread over the pool); with `want`, wait until each worker's reply
    satisfies it. {worker_id: reply json}."""
    deadline = time.monotonic() + timeout
    seen = {}
    while True:
        for reply, _ in get_many(server, [path + '?hold=0.1'] * (3 * count)):
            assert reply.status == 200, reply
            body = reply.json
            if want is None or want(body):
                seen[body['worker']] = body
        if len(seen) == count:
            return seen
        if time.monotonic() > deadline:
            raise AssertionError(f"only workers {sorted(seen)} answered as "
                                 f"wanted ({count} expected)")


CFG1 = {'rate_limit': 100, 'v': 1}
CFG2 = {'rate_limit': 5, 'v': 2, 'names': ['a', 'b']}
CFG3 = {'v': 3}


def send_config(server, config):
    reply = server.post('/admin/config', json_body=config)
    assert reply.status == 200, reply
    assert reply.json == {'sent': 2}


def test_no_config_before_any_is_sent(cfg):
    seen = collect_workers(cfg, '/api/config', 3)
    assert sorted(seen) == [0, 1, 2]
    assert all(body['config'] is None and body['history'] == []
               for body in seen.values())


def test_send_config_reaches_every_worker(cfg):
    send_config(cfg, CFG1)
    seen = collect_workers(cfg, '/api/config', 3,
                           want=lambda body: body['config'] == CFG1)
    assert all(body['history'] == [CFG1] for body in seen.values()), seen
    other = cfg.wait_until(
        lambda: (lambda r: r.json['config'] == CFG1 and r)(cfg.get('/other/config')),
        timeout=5, what='OtherWorker got the config')
    assert other.json['history'] == [CFG1]


def test_next_config_replaces_it_in_order(cfg):
    send_config(cfg, CFG2)
    seen = collect_workers(cfg, '/api/config', 3,
                           want=lambda body: body['config'] == CFG2)
    for body in seen.values():
        assert body['history'] == [CFG1, CFG2], body


def test_restarted_worker_starts_with_latest_config(cfg):
    old = kill_worker(cfg, 'CfgWorker', 1)
    new = wait_replaced(cfg, 'CfgWorker', old, 1)
    deadline = time.monotonic() + 10
    found = None
    while found is None and time.monotonic() < deadline:
        for reply, _ in get_many(cfg, ['/api/config?hold=0.1'] * 9):
            assert reply.status == 200, reply
            if reply.json['pid'] == new:
                found = reply.json
                break
    assert found is not None, "the restarted worker never answered"
    assert found['worker'] == 1
    assert found['config'] == CFG2
    assert found['history'] and found['history'][-1] == CFG2
    # the others kept theirs
    seen = collect_workers(cfg, '/api/config', 3)
    assert all(body['config'] == CFG2 for body in seen.values()), seen


def test_config_after_restart_reaches_all(cfg):
    send_config(cfg, CFG3)
    seen = collect_workers(cfg, '/api/config', 3,
                           want=lambda body: body['config'] == CFG3)
    assert sorted(seen) == [0, 1, 2]
    assert all(body['history'][-1] == CFG3 for body in seen.values())


# == WorkerPool parameters ===================================================================

@pytest.fixture(scope='module')
def table():
    app = _module_app('config_table')
    yield app
    app.cleanup()


def test_every_parameter_accepted(table):
    names = [pool['name'] for pool in table.status()['pools']]
    assert names == ['DefaultWorker', 'ExplicitWorker', 'ExactWorker',
                     'MultiWorker', 'FastTimeout', 'StuckWorker', 'BeatWorker',
                     'DegradeWorker', 'WindowWorker', 'QWarnWorker',
                     'QSilentWorker']
    for area in ('explicit', 'multi', 'fast', 'stuck', 'beat', 'degrade',
                 'window', 'qwarn', 'qsilent'):
        reply = table.get(f'/{area}/whoami')
        assert reply.status == 200, (area, reply)
    assert 'listening on http://127.0.0.1:' in table.log()


def test_extra_kwargs_reach_worker(table):
    assert table.get('/explicit/whoami').json['kwargs'] == {
        'color': 'blue', 'size': 3}
    assert table.get('/default/whoami').json['kwargs'] == {}


def test_num_workers(table):
    assert len(pool_status(table, 'DefaultWorker')['workers']) == 1
    assert len(pool_status(table, 'MultiWorker')['workers']) == 3
    results = get_many(table, ['/multi/sleep/300'] * 6)
    assert all(reply.status == 200 for reply, _ in results)
    assert {reply.json['worker'] for reply, _ in results} == {0, 1, 2}
    # one default worker: two requests run one after the other
    started = time.monotonic()
    results = get_many(table, ['/default/sleep/300'] * 2)
    elapsed = time.monotonic() - started
    assert {reply.json['worker'] for reply, _ in results} == {0}
    assert elapsed >= 0.55


def test_routes_prefix_exact_and_fallback(table):
    def pool_of(path):
        reply = table.get(path)
        assert reply.status == 200, (path, reply)
        return reply.json['pool']
    assert pool_of('/explicit/whoami') == 'ExplicitWorker'
    assert pool_of('/multi/whoami') == 'MultiWorker'
    assert pool_of('/exact/status') == 'ExactWorker'
    # an exact route owns only that path: the rest goes to the fallback
    assert pool_of('/exact/status/x') == 'DefaultWorker'
    assert pool_of('/exact') == 'DefaultWorker'
    assert pool_of('/anything/whoami') == 'DefaultWorker'


def test_timeout(table):
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        # the default (30 s) lets a 1.2 s request finish
        slow_default = pool.submit(table.get, '/default/sleep/1200')
        assert table.get('/fast/sleep/100').status == 200
        started = time.monotonic()
        reply = table.get('/fast/sleep/2500')
        elapsed = time.monotonic() - started
        assert reply.status == 504, reply
        assert 0.4 <= elapsed < 1.6
        assert slow_default.result(timeout=10).status == 200


def test_stuck_timeout_kills_and_restarts(table):
    old = pool_status(table, 'StuckWorker')['workers'][0]['pid']
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        # the default stuck_timeout (60 s) leaves a 1.5 s handler alone
        patient = pool.submit(table.get, '/explicit/sleep/1500')
        started = time.monotonic()
        reply = table.get('/stuck/sleep/10000', timeout=15)
        elapsed = time.monotonic() - started
        assert reply.status in (500, 502, 503), reply
        assert elapsed < 6, elapsed
        assert patient.result(timeout=10).status == 200
    log = table.wait_log(r'\bERROR\b[^\n]*stuck')
    assert str(old) in error_line_with(log, 'stuck')
    new = wait_replaced(table, 'StuckWorker', old)
    reply = table.get('/stuck/whoami')
    assert reply.status == 200 and reply.json['pid'] == new


def test_heartbeat_interval_paces_on_idle(table):
    fast_before = table.get('/beat/idle').json
    slow_before = table.get('/explicit/idle').json
    time.sleep(1.2)
    fast_after = table.get('/beat/idle').json
    slow_after = table.get('/explicit/idle').json
    fast = fast_after['idle_calls'] - fast_before['idle_calls']
    slow = slow_after['idle_calls'] - slow_before['idle_calls']
    assert fast >= 6, fast     # every 0.1 s
    assert slow <= 3, slow     # every 1 s (the default)


def test_max_restarts_marks_pool_degraded(table):
    assert table.get('/degrade/whoami').status == 200
    statuses = []
    for _ in range(3):   # max_restarts=2: degraded after 2 (at most 3) restarts
        old = kill_worker(table, 'DegradeWorker')
        try:
            wait_replaced(table, 'DegradeWorker', old, timeout=5)
        except AssertionError:
            pass   # a degraded pool may keep its slot empty
        reply = table.get('/degrade/whoami')
        statuses.append(reply.status)
        if reply.status == 503:
            break
        assert reply.status == 200, reply
    assert statuses[0] == 200, statuses     # one restart is within the limit
    assert statuses[-1] == 503, statuses
    time.sleep(0.5)
    assert table.get('/degrade/whoami').status == 503   # it stays degraded


def test_restart_window_forgets_old_restarts(table):
    for _ in range(3):
        old = kill_worker(table, 'WindowWorker')
        new = wait_replaced(table, 'WindowWorker', old, timeout=8)
        reply = table.get('/window/whoami')
        assert reply.status == 200, reply
        assert reply.json['pid'] == new
        time.sleep(0.4)   # longer than restart_window=0.3


def test_queue_warning(table):
    paths = ['/qwarn/sleep/150'] * 6 + ['/qsilent/sleep/150'] * 6
    results = get_many(table, paths, threads=12)
    assert all(reply.status == 200 for reply, _ in results)
    log = table.wait_log(r'\bWARNING\b[^\n]*QWarnWorker[^\n]*queue', timeout=5)
    assert not re.search(r'QSilentWorker[^\n]*queue', log)


def test_max_pending_default_allows_many(table):
    results = get_many(table, ['/multi/sleep/50'] * 40, threads=40)
    assert [reply.status for reply, _ in results] == [200] * 40


# == Dispatcher limits and HTTP options ======================================================

@pytest.fixture(scope='module')
def limits():
    app = _module_app('config_limits')
    yield app
    app.cleanup()


def status_of(data):
    match = re.match(rb'HTTP/1\.[01] (\d{3}) ', data)
    return int(match.group(1)) if match else None


def test_max_pending_exceeded_answers_503(limits):
    results = get_many(limits, ['/api/sleep/800'] * 6, threads=6)
    statuses = sorted(reply.status for reply, _ in results)
    assert statuses.count(200) >= 1, statuses
    assert statuses.count(503) >= 3, statuses
    assert set(statuses) <= {200, 503}
    # the refusals come promptly: held back in TCP at most briefly (the
    # workers made no room for half a second), never after the slow work
    assert all(seconds < 0.75 for reply, seconds in results
               if reply.status == 503), results
    assert all(reply.headers.get('retry-after') == '1'
               for reply, _ in results if reply.status == 503)
    assert limits.get('/api/hello').status == 200


def _post(path, body, extra=b''):
    return (b'POST ' + path + b' HTTP/1.1\r\nHost: 127.0.0.1\r\n'
            b'Content-Type: application/octet-stream\r\n'
            b'Content-Length: ' + str(len(body)).encode() + b'\r\n'
            b'Connection: close\r\n' + extra + b'\r\n' + body)


def test_max_content_length_passes_through(limits):
    small = harness.exchange(limits.port, _post(b'/api/echo', b'a' * 1000))
    assert status_of(small) == 200, small[:200]
    assert small.endswith(b'{"length": 1000}') or b'"length": 1000' in small
    big = harness.exchange(limits.port, _post(b'/api/echo', b'b' * 2048))
    assert status_of(big) == 413, big[:200]
    assert limits.get('/api/hello').status == 200


def _read_response(sock, buffer):
    """One response from a keep-alive connection: (head, body, rest)."""
    deadline = time.monotonic() + 5
    while b'\r\n\r\n' not in buffer:
        assert time.monotonic() < deadline, buffer
        chunk = sock.recv(65536)
        assert chunk, f"closed before a response: {buffer!r}"
        buffer += chunk
    head, _, rest = buffer.partition(b'\r\n\r\n')
    length = int(re.search(rb'(?i)\r\ncontent-length: *(\d+)', head).group(1))
    while len(rest) < length:
        assert time.monotonic() < deadline, rest
        chunk = sock.recv(65536)
        assert chunk, "closed in the middle of a body"
        rest += chunk
    return head, rest[:length], rest[length:]


def test_keep_alive_max_requests_passes_through(limits):
    sock = socket.create_connection(('127.0.0.1', limits.port), timeout=5)
    try:
        buffer = b''
        heads = []
        for path in (b'/sync/hello', b'/api/hello', b'/sync/hello'):
            sock.sendall(b'GET ' + path + b' HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n')
            head, body, buffer = _read_response(sock, buffer)
            assert status_of(head) == 200, head
            heads.append(head.lower())
        assert b'connection: close' not in heads[0]
        assert b'connection: close' not in heads[1]
        assert b'connection: close' in heads[2]
        # and the server closes the connection after the third answer
        sock.settimeout(3)
        try:
            tail = sock.recv(65536)
        except ConnectionResetError:
            tail = b''
        assert buffer + tail == b''
    finally:
        sock.close()


def test_max_headers_length_passes_through(limits):
    small = harness.exchange(limits.port, b'GET /api/hello HTTP/1.1\r\nHost: 127.0.0.1\r\n'
                     b'X-Small: ' + b'a' * 500 + b'\r\nConnection: close\r\n\r\n')
    assert status_of(small) == 200, small[:200]
    big = harness.exchange(limits.port, b'GET /api/hello HTTP/1.1\r\nHost: 127.0.0.1\r\n'
                   b'X-Big: ' + b'a' * 4000 + b'\r\nConnection: close\r\n\r\n')
    assert status_of(big) == 431, big[:200]
    assert limits.get('/sync/hello').status == 200


# == Dispatcher: shutdown_timeout, port, ssl_context =========================================

def _shutdown_run(args, sleep_ms):
    app = harness.AppServer('config_misc', ['shutdown', *args])
    try:
        app.start()
        assert app.get('/api/hello').status == 200
        result = {}

        def slow():
            started = time.monotonic()
            try:
                result['reply'] = app.get(f'/api/sleep/{sleep_ms}', timeout=20)
            except Exception as err:  # pylint: disable=broad-except
                result['error'] = err
            result['done'] = time.monotonic()
            result['started'] = started
        thread = threading.Thread(target=slow, daemon=True)
        thread.start()
        time.sleep(0.4)   # the worker has the request by now
        signalled = time.monotonic()
        app.send_signal(signal.SIGTERM)
        thread.join(timeout=20)
        assert not thread.is_alive()
        code = app.proc.wait(timeout=20)
        exited = time.monotonic()
        return result, signalled, exited, code, app.log()
    finally:
        app.cleanup()


def test_shutdown_timeout_cuts_long_requests():
    result, signalled, exited, code, log = _shutdown_run(['0.5'], 5000)
    assert 'reply' in result, result
    assert result['reply'].status == 503, result['reply']
    assert result['done'] - signalled < 3.0
    assert exited - signalled < 5.0
    assert code == 0, log[-2000:]


def test_shutdown_timeout_default_lets_requests_finish():
    result, signalled, exited, code, log = _shutdown_run([], 1500)
    assert 'reply' in result, result
    assert result['reply'].status == 200, result['reply']
    assert result['reply'].json == {'slept': 1500}
    assert exited - signalled < 10.0
    assert code == 0, log[-2000:]


def _port_free(port):
    probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(('127.0.0.1', port))
        return True
    except OSError:
        return False
    finally:
        probe.close()


def test_default_port_is_8080():
    app = harness.AppServer('config_misc', ['default-port'])
    try:
        if _port_free(8080):
            app.start()
            assert app.port == 8080
            assert app.get('/api/hello').json == {'hello': 'world'}
        else:
            # something else holds 8080: the dispatcher tried that port
            with pytest.raises(RuntimeError):
                app.start()
            assert '8080' in app.log()
    finally:
        app.cleanup()


def test_ssl_context_serves_https(tmp_path):
    import trustme  # pylint: disable=import-outside-toplevel
    ca = trustme.CA()
    cert = ca.issue_cert('127.0.0.1', 'localhost')
    cert_path = tmp_path / 'cert.pem'
    key_path = tmp_path / 'key.pem'
    cert.cert_chain_pems[0].write_to_path(str(cert_path))
    for extra in cert.cert_chain_pems[1:]:
        extra.write_to_path(str(cert_path), append=True)
    cert.private_key_pem.write_to_path(str(key_path))
    app = harness.AppServer('config_misc', ['tls'], env={
        'TLS_CERT': str(cert_path), 'TLS_KEY': str(key_path)})
    try:
        app.start()
        assert 'listening on https://' in app.log()
        context = ssl.create_default_context()
        ca.configure_trust(context)
        for path, expected in (('/api/hello', {'hello': 'world'}),
                               ('/sync/hello', {'sync': 'hello'})):
            conn = http.client.HTTPSConnection('127.0.0.1', app.port,
                                               context=context, timeout=10)
            try:
                conn.request('GET', path)
                response = conn.getresponse()
                body = response.read()
            finally:
                conn.close()
            assert response.status == 200
            assert body and json.loads(body) == expected
    finally:
        app.cleanup()


def test_send_config_from_another_thread_of_the_dispatcher():
    # the spec's "dispatcher side" loop, run by a thread of the user's (a
    # config watcher) while the loop runs: it wrote into the workers' pipe
    # buffers beside the loop (BufferError in that thread, later configs
    # lost: the workers kept an early one)
    import uhttp.workers as _workers
    from uhttp.workers.testing import TestServer

    class RateWorker(_workers.Worker):
        def setup(self):
            self.rate = None

        def on_config(self, config):
            self.rate = config['rate_limit']

        @_workers.api('/rate', 'GET')
        def rate(self, request):
            return {'rate': self.rate, 'pid': os.getpid()}

    class WatchingDispatcher(_workers.Dispatcher):
        def on_idle(self):
            if getattr(self, 'watcher', None) is None:
                self.watcher = threading.Thread(target=self.watch, daemon=True)
                self.watcher.start()

        def watch(self):
            for number in range(1, 301):
                for pool in self._pools:
                    pool.send_config({'rate_limit': number})
                time.sleep(0.002)

    pool = _workers.WorkerPool(RateWorker, num_workers=2)
    with TestServer(WatchingDispatcher, [pool]) as server:
        deadline = time.monotonic() + 20
        seen = {}
        while len(seen) < 2 or set(seen.values()) != {300}:
            assert time.monotonic() < deadline, seen
            reply = server.get('/rate').json()
            seen[reply['pid']] = reply['rate']
            time.sleep(0.02)
        server.assert_no_errors()
