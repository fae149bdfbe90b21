"""Remote pools, end to end: a dispatcher (tests/apps/remote_app.py) whose
ItemWorker pool has broker=redis://..., a real redis-server, and remote
workers started with the documented command
`python -m uhttp.workers worker remote_app:ItemWorker --broker URL --workers N`.

Failures are real: kill -9 of a worker group, a Redis restart, SIGSTOP.
Every answer is counted on the client side: requests carry a tag that the
answer echoes, on keep-alive connections, so an answer sent twice would
show up as the answer to the next request.
"""

import http.client
import json
import re
import signal
import socket
import threading
import time

import pytest

from remote_util import (  # noqa: F401 (groups: a fixture)
    REDIS, RedisServer, command_env, groups, remote_workers,
    wait_workers)

pytestmark = pytest.mark.skipif(
    REDIS is None, reason='redis-server not installed (Debian: redis-server)')


@pytest.fixture
def redis_server():
    server = RedisServer().start()
    yield server
    server.kill()


def tagged(app, path, count, timeout=15, results=None):
    """`count` GETs of `path?tag=N` on one keep-alive connection: the
    (status, body, headers) of each (appended to `results` as they come),
    checking each answer is its own."""
    conn = http.client.HTTPConnection('127.0.0.1', app.port, timeout=timeout)
    results = [] if results is None else results
    try:
        for number in range(count):
            tag = f'{threading.get_ident()}-{number}'
            sep = '&' if '?' in path else '?'
            try:
                conn.request('GET', f'{path}{sep}tag={tag}')
                response = conn.getresponse()
                body = response.read()
            except (OSError, http.client.HTTPException) as err:
                results.append(('error', repr(err), {}))
                conn.close()
                conn = http.client.HTTPConnection('127.0.0.1', app.port,
                                                  timeout=timeout)
                continue
            headers = {k.lower(): v for k, v in response.getheaders()}
            if response.status == 200:
                assert json.loads(body)['tag'] == tag, (tag, body)
            results.append((response.status, body, headers))
            if headers.get('connection', '').lower() == 'close':
                conn.close()
                conn = http.client.HTTPConnection('127.0.0.1', app.port,
                                                  timeout=timeout)
    finally:
        conn.close()
    return results


def test_remote_pool_answers_beside_a_local_pool(app_server, redis_server, groups):
    app = app_server('remote_app', redis_server.url)
    groups(redis_server.url, 2)
    workers = wait_workers(app, 2)
    assert {worker['host'] for worker in workers} and all(
        worker['pid'] and worker['remote'] for worker in workers)
    reply = app.get('/api/pid')
    assert reply.status == 200
    assert reply.json['kwargs'] == {'db': 'items.db'}  # the pool's kwargs
    assert reply.json['pid'] in {worker['pid'] for worker in workers}
    reply = app.post('/api/items', json_body={'name': 'lamp'})
    assert reply.status == 200 and reply.json['item'] == {'name': 'lamp'}
    assert app.get('/api/fail').status == 500
    assert app.get('/api/nothing').status == 404
    local = app.get('/local/pid')
    assert local.status == 200 and local.json['local'] is True
    pool = [p for p in app.status()['pools'] if p['name'] == 'ItemWorker'][0]
    assert pool['broker']['connected'] is True
    assert pool['alive_count'] == 2
    host = workers[0]['host']
    metrics = app.get('/metrics').text
    assert (f'uhttp_workers_remote_workers{{host="{host}",pool="ItemWorker",'
            f'state="ready"}} 2.0') in metrics
    dashboard = app.get('/_dashboard/data').json
    rows = [pool for pool in dashboard['pools']
            if pool['name'] == 'ItemWorker'][0]['workers']
    assert sorted(row['pid'] for row in rows) == sorted(
        worker['pid'] for worker in workers)
    assert {row['host'] for row in rows} == {host}


def test_deferred_sse_logs_and_config_from_remote(app_server, redis_server, groups):
    app = app_server('remote_app', redis_server.url)
    groups(redis_server.url, 1)
    wait_workers(app, 1)
    later = app.get('/api/later')
    assert later.status == 200 and later.json['later'] is True
    events = app.get('/api/events')
    assert events.status == 200
    assert events.headers['content-type'].startswith('text/event-stream')
    assert events.text.count('event: tick') == 3
    assert 'data: {"n": 2}' in events.text
    reply = app.get('/api/log')
    assert reply.status == 200
    app.wait_log(r'remote hello from \d+')
    assert app.get('/_config?v=7').status == 200
    app.wait_until(lambda: app.get('/api/config').json['config'] ==
                   {'version': '7'}, what='config on the remote worker')


def test_sigkill_of_a_worker_group_mid_load(app_server, redis_server, groups):
    app = app_server('remote_app', redis_server.url, 10)  # stuck_timeout 10
    doomed = groups(redis_server.url, 2)
    wait_workers(app, 2)
    survivors = groups(redis_server.url, 2)
    wait_workers(app, 4)
    doomed_pids = set(doomed.children())
    results = []

    def load(path, count):
        results.extend(tagged(app, path, count))

    slow = [threading.Thread(target=load, args=('/api/sleep/1.2', 2))
            for _ in range(4)]
    quick = [threading.Thread(target=load, args=('/api/sleep/0.01', 40))
             for _ in range(2)]
    for thread in slow + quick:
        thread.start()
    time.sleep(0.4)
    doomed.signal_group(signal.SIGKILL)
    killed_at = time.monotonic()
    for thread in slow + quick:
        thread.join(30)
        assert not thread.is_alive()
    # its connections closed: declared dead long before stuck_timeout
    assert time.monotonic() - killed_at < 8
    assert len(results) == 4 * 2 + 2 * 40  # every request answered once
    statuses = [status for status, _, _ in results]
    assert 'error' not in statuses, results
    assert set(statuses) <= {200, 500}, statuses
    assert statuses.count(200) >= 2 * 40
    served_by = {json.loads(body)['pid'] for status, body, _ in results
                 if status == 200}
    assert served_by & set(survivors.children())
    if 500 in statuses:
        app.wait_log(r'remote worker .* died: silent for .* connection to '
                     r'the broker closed')
    # the survivors keep serving; the dead are listed as not alive
    assert app.get('/api/pid').status == 200
    alive = {worker['pid'] for worker in remote_workers(app)}
    assert not alive & doomed_pids


def test_redis_restart_during_load(app_server, redis_server, groups):
    app = app_server('remote_app', redis_server.url, 3, 5)
    groups(redis_server.url, 2)
    wait_workers(app, 2)
    results = []
    stop = threading.Event()

    def load():
        while not stop.is_set():
            tagged(app, '/api/sleep/0.01', 5, timeout=10, results=results)

    threads = [threading.Thread(target=load) for _ in range(2)]
    for thread in threads:
        thread.start()
    time.sleep(0.5)
    redis_server.kill()
    down_at = time.monotonic()
    refused = app.wait_until(
        lambda: (lambda reply: reply.status == 503 and reply)(
            app.get('/api/pid', timeout=3)), timeout=5,
        what='503 while Redis is down')
    assert time.monotonic() - down_at < 5  # promptly, never a hang
    assert refused.headers['retry-after']
    assert app.get('/local/pid').status == 200  # local pools keep serving
    time.sleep(1)
    redis_server.start()
    back = len(results)
    app.wait_until(lambda: any(status == 200 for status, _, _ in results[back:]),
                   timeout=20, what='service back after Redis came back')
    stop.set()
    for thread in threads:
        thread.join(30)
        assert not thread.is_alive()
    statuses = [status for status, _, _ in results]
    assert 'error' not in statuses, [r for r in results if r[0] == 'error']
    assert set(statuses) <= {200, 503, 504}, set(statuses)
    assert all(headers.get('retry-after') for status, _, headers in results
               if status == 503)
    assert app.get('/api/pid').status == 200


def test_sigstop_worker_declared_dead_and_late_answer_dropped(
        app_server, redis_server, groups):
    app = app_server('remote_app', redis_server.url, 2)
    group = groups(redis_server.url, 1)
    wait_workers(app, 1)
    results = []
    thread = threading.Thread(
        target=lambda: results.extend(tagged(app, '/api/sleep/1.5', 1)))
    thread.start()
    app.wait_until(lambda: any(worker['current_request'] is not None
                               for worker in remote_workers(app)),
                   what='the request running remotely')
    group.signal_group(signal.SIGSTOP)
    thread.join(15)
    assert not thread.is_alive()
    assert [status for status, _, _ in results] == [500]
    app.wait_log(r'remote worker .* died: no heartbeat')
    group.signal_group(signal.SIGCONT)
    app.wait_log(r'late answer from remote worker .* dropped')
    app.wait_log(r'remote worker .* is heard from again')
    assert app.get('/api/pid').status == 200
    assert tagged(app, '/api/sleep/0.01', 3) and True


def test_ndjson_stream_from_a_remote_worker(app_server, redis_server, groups):
    app = app_server('remote_app', redis_server.url)
    groups(redis_server.url, 1)
    worker = wait_workers(app, 1)[0]
    reply = app.get('/api/items/stream/50')
    assert reply.status == 200
    assert reply.headers['content-type'].startswith('application/x-ndjson')
    lines = [json.loads(line) for line in reply.text.splitlines()]
    assert [line['n'] for line in lines] == list(range(50))
    assert {line['pid'] for line in lines} == {worker['pid']}


def test_a_long_stream_from_a_remote_worker_arrives_whole(
        app_server, redis_server, groups):
    """A worker writes many more chunks than its link to Redis holds at
    once (a fast loop, as an export is written): each one reaches the
    client, in order, none dropped on the way."""
    app = app_server('remote_app', redis_server.url, 30, 60)
    groups(redis_server.url, 1)
    wait_workers(app, 1)
    count = 150_000
    reply = app.get(f'/api/items/stream/{count}', timeout=120)
    assert reply.status == 200
    numbers = [json.loads(line)['n'] for line in reply.text.splitlines()]
    assert len(numbers) == count and numbers == list(range(count)), (
        len(numbers), [(a, b) for a, b in zip(numbers, numbers[1:])
                       if b != a + 1][:5])


def test_a_restarted_dispatcher_lists_the_running_workers_ready(
        app_server, redis_server, groups):
    """Remote workers that said they were ready to an earlier dispatcher
    are ready to the next one too (status, metrics), not 'starting'."""
    first = app_server('remote_app', redis_server.url)
    groups(redis_server.url, 1)
    pid = wait_workers(first, 1)[0]['pid']
    assert first.stop() == 0
    second = app_server('remote_app', redis_server.url)
    assert wait_workers(second, 1)[0]['pid'] == pid
    assert second.get('/api/pid').json['pid'] == pid
    second.wait_until(
        lambda: re.search(r'uhttp_workers_remote_workers\{[^}]*state="ready"'
                          r'\} 1', second.get('/metrics').text),
        what='the worker counted ready in the metrics')


def test_a_worker_restarted_after_a_dispatcher_restart_gets_its_settings(
        app_server, redis_server, groups):
    """The worker command outlives a dispatcher that is restarted with
    other settings (its kwargs here): a process it starts after that
    gets the new ones, not those the command read when it started."""
    first = app_server('remote_app', redis_server.url, 3, 10, 0, '-', 0.25,
                       'first.db')
    groups(redis_server.url, 1)
    wait_workers(first, 1)
    assert first.get('/api/pid').json['kwargs'] == {'db': 'first.db'}
    assert first.stop() == 0
    second = app_server('remote_app', redis_server.url, 3, 10, 0, '-', 0.25,
                        'second.db')
    old = wait_workers(second, 1)[0]['pid']
    assert second.get('/api/exit/3').status == 500
    second.wait_until(lambda: [w for w in remote_workers(second)
                               if w['pid'] != old], timeout=20,
                      what='the worker restarted by its command')
    assert second.get('/api/pid').json['kwargs'] == {'db': 'second.db'}


def test_a_killed_dispatchers_streams_end_in_its_remote_workers(
        app_server, redis_server, groups):
    """A dispatcher killed (no goodbye to its workers) leaves remote
    workers holding its open streams: once its key in Redis is gone for
    a while, they end as if their clients had left (on_disconnect)."""
    first = app_server('remote_app', redis_server.url)
    groups(redis_server.url, 1)
    wait_workers(first, 1)
    stream = socket.create_connection(('127.0.0.1', first.port), timeout=10)
    try:
        stream.sendall(b'GET /api/subscribe HTTP/1.1\r\nHost: x\r\n\r\n')
        assert stream.recv(4096).startswith(b'HTTP/1.1 200')
        first.kill()
    finally:
        stream.close()
    second = app_server('remote_app', redis_server.url)
    wait_workers(second, 1)
    second.wait_log(r'subscriber \d+ gone', timeout=40)
    assert second.get('/api/subscribers').json['count'] == 0


def test_a_restarted_dispatchers_requests_do_not_take_the_old_ones_ids(
        app_server, redis_server, groups):
    """Request ids of a dispatcher with a remote pool start from the
    clock: the first request of the next run is not the first of the
    last, whose stream a remote worker may still hold."""
    first = app_server('remote_app', redis_server.url)
    groups(redis_server.url, 1)
    wait_workers(first, 1)
    old = socket.create_connection(('127.0.0.1', first.port), timeout=10)
    new = None
    try:
        old.sendall(b'GET /api/subscribe HTTP/1.1\r\nHost: x\r\n\r\n')
        assert old.recv(4096).startswith(b'HTTP/1.1 200')
        first.kill()
        second = app_server('remote_app', redis_server.url)
        wait_workers(second, 1)
        new = socket.create_connection(('127.0.0.1', second.port),
                                       timeout=10)
        new.sendall(b'GET /api/subscribe HTTP/1.1\r\nHost: x\r\n\r\n')
        assert new.recv(4096).startswith(b'HTTP/1.1 200')
        # both held: the new one did not replace the old one's entry
        assert second.get('/api/subscribers').json['count'] == 2
    finally:
        old.close()
        if new is not None:
            new.close()


def test_two_remote_pools_on_one_redis_database(app_server, redis_server,
                                                groups):
    """Each pool of a dispatcher reads its own answers: none is lost to
    (or dropped as late by) the other pool of the same Redis database."""
    app = app_server('remote_two', redis_server.url)
    groups(redis_server.url, 2)
    groups(redis_server.url, 2, target='remote_two:ReportWorker')
    wait_workers(app, 2)
    app.wait_until(lambda: len(remote_workers(app, 'ReportWorker')) >= 2,
                   what='2 ReportWorker workers ready')
    results = {}

    def load(path):
        results[path] = tagged(app, path, 60)

    threads = [threading.Thread(target=load, args=(path,)) for path in
               ('/api/sleep/0.001', '/reports/pid')]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert all(status == 200 for answers in results.values()
               for status, _, _ in answers), results
    assert [len(answers) for answers in results.values()] == [60, 60]
    assert 'late answer' not in app.log()


def test_local_workers_serve_the_stream_too(app_server, redis_server, groups):
    app = app_server('remote_app', redis_server.url, 3, 10, 2)
    local = wait_workers(app, 2)
    assert {worker['pid'] for worker in local} <= set(
        pid for child in app.children()
        for pid in _children_of(child)) | set(app.children())
    groups(redis_server.url, 1)
    wait_workers(app, 3)
    pids = {app.get('/api/pid').json['pid'] for _ in range(30)}
    assert pids  # served; by local and remote workers alike
    assert app.stop() == 0
    app.wait_until(lambda: not any(_alive(worker['pid']) for worker in local),
                   what='local workers gone with the dispatcher')


def _children_of(pid):
    try:
        with open(f'/proc/{pid}/task/{pid}/children') as file:
            return [int(each) for each in file.read().split()]
    except OSError:
        return []


def _alive(pid):
    try:
        with open(f'/proc/{pid}/stat') as file:
            return file.read().split()[2] != 'Z'
    except OSError:
        return False


def test_worker_command_reports_a_death_at_once_and_restarts(
        app_server, redis_server, groups):
    app = app_server('remote_app', redis_server.url, 10)  # stuck_timeout 10
    group = groups(redis_server.url, 2)
    wait_workers(app, 2)
    results = []
    thread = threading.Thread(
        target=lambda: results.extend(tagged(app, '/api/sleep/5', 1)))
    started = time.monotonic()
    thread.start()
    busy = app.wait_until(lambda: [worker for worker in remote_workers(app)
                                   if worker['current_request'] is not None],
                          what='the request running remotely')
    victim = busy[0]['pid']
    import os
    os.kill(victim, signal.SIGKILL)
    thread.join(15)
    assert [status for status, _, _ in results] == [500]
    assert time.monotonic() - started < 5  # not after stuck_timeout
    app.wait_log(r'remote worker .* died: killed by SIGKILL')
    pids = {worker['pid'] for worker in wait_workers(app, 2)}
    assert victim not in pids and pids <= set(group.children())
    assert app.get('/api/pid').status == 200
    group.proc.send_signal(signal.SIGTERM)  # a graceful stop
    assert group.proc.wait(timeout=15) == 0, group.log()
    app.wait_until(lambda: not remote_workers(app, ready=False),
                   what='the stopped workers gone from the pool')
    assert app.get('/api/pid').status == 503  # no worker left: refused
    # stopped as asked: they left, no death (only the SIGKILLed one died)
    app.wait_log(r'INFO .*remote worker .* left: exited with code 0',
                 count=2)
    assert len(re.findall(r'remote worker .* died', app.log())) == 1
    # the metrics tell the one that died from those that left
    metrics = app.get('/metrics').text
    states = dict(re.findall(r'uhttp_workers_remote_workers\{host="[^"]*",'
                             r'pool="ItemWorker",state="(\w+)"\} (\S+)',
                             metrics))
    assert states == {'dead': '1.0', 'left': '2.0'}, states


def test_on_worker_died_gets_a_remote_workers_exit_code(app_server,
                                                       redis_server, groups):
    app = app_server('remote_app', redis_server.url, 10)
    groups(redis_server.url, 1)
    wait_workers(app, 1)
    assert app.get('/api/exit/3').status == 500
    app.wait_log(r"on_worker_died\(ItemWorker, \d+, 'exited with code 3', "
                 r"exitcode=3, 1 victim\(s\)\)")
    wait_workers(app, 1)  # its command started another
    assert app.get('/api/pid').status == 200


@pytest.mark.parametrize('args, code, text', [
    (['nosuch:ItemWorker', '--broker', 'redis://127.0.0.1:1/0'], 3,
     "cannot import module 'nosuch'"),
    (['remote_app:App', '--broker', 'redis://127.0.0.1:1/0'], 3,
     'not a Worker subclass'),
    (['remote_app:ItemWorker', '--broker', 'http://:pw@127.0.0.1/0'], 2,
     'redis://'),
    (['remote_app:ItemWorker'], 2, '--broker'),
    (['remote_app:ItemWorker', '--broker', 'redis://:pw@127.0.0.1:notaport/0'],
     2, "--broker 'redis://***@127.0.0.1:notaport/0' is not a usable URL"),
    (['remote_app:ItemWorker', '--broker', 'redis://127.0.0.1:1/0?bogus=1'],
     2, "unknown option 'bogus'"),
    (['remote_app:ItemWorker', '--broker', 'unix://'], 2, 'names the socket'),
])
def test_worker_command_usage_errors(args, code, text):
    import os
    import subprocess
    import sys
    from harness import APPS
    result = subprocess.run(
        [sys.executable, '-m', 'uhttp.workers', 'worker', *args], cwd=APPS,
        env=command_env(), capture_output=True, text=True, timeout=30)
    assert result.returncode == code, result.stderr
    assert text in result.stderr
    assert 'pw' not in result.stderr
    assert 'Traceback' not in result.stderr


def test_a_broker_pool_with_no_worker_yet_says_when_to_retry(app_server,
                                                            redis_server):
    app = app_server('remote_app', redis_server.url)   # no worker started
    reply = app.get('/api/pid')
    assert reply.status == 503 and reply.headers['retry-after'] == '1'


def test_sigttou_leaves_a_broker_pool_of_no_local_worker_at_none(
        app_server, redis_server):
    app = app_server('remote_app', redis_server.url)   # remote workers only
    app.send_signal(signal.SIGTTOU)
    app.wait_log(r'pool ItemWorker stays at 0 worker\(s\)')
    app.wait_log(r'pool LocalWorker stays at 1 worker\(s\)')
    pools = {pool['name']: pool for pool in app.status()['pools']}
    assert pools['ItemWorker']['workers'] == []   # no local one was started
    assert app.get('/local/pid').status == 200


def test_frozen_redis_is_a_prompt_503_not_a_hang(app_server, redis_server, groups):
    import os
    app = app_server('remote_app', redis_server.url, 3, 10)
    groups(redis_server.url, 1)
    wait_workers(app, 1)
    assert app.get('/api/pid').status == 200
    os.kill(redis_server.proc.pid, signal.SIGSTOP)  # unreachable: no answers
    try:
        began = time.monotonic()
        reply = app.get('/api/pid', timeout=10)
        assert reply.status == 503 and reply.headers['retry-after']
        assert time.monotonic() - began < 6
        assert app.get('/local/pid').status == 200
    finally:
        os.kill(redis_server.proc.pid, signal.SIGCONT)
    app.wait_until(lambda: app.get('/api/pid').status == 200, timeout=15,
                   what='service back once Redis answers again')


def test_keep_alive_holds_off_timeout_and_stuck_timeout(app_server, redis_server,
                                                         groups):
    app = app_server('remote_app', redis_server.url, 1.5, 1.5)  # both 1.5 s
    groups(redis_server.url, 1)
    wait_workers(app, 1)
    began = time.monotonic()
    reply = app.get('/api/long/3', timeout=15)
    assert reply.status == 200 and reply.json['done'] is True
    assert time.monotonic() - began >= 3
    assert 'died' not in app.log()
    assert app.get('/api/sleep/2.5').status in (500, 504)  # no keep_alive()


def test_keep_alive_reaches_the_dispatcher_before_the_next_heartbeat(
        app_server, redis_server, groups):
    # heartbeats every 5 s, timeout 3 s: keep-alives that came only with
    # the heartbeat would mostly come too late, and the request get a 504
    app = app_server('remote_app', redis_server.url, 30, 3, 0, '-', 5)
    groups(redis_server.url, 1)
    wait_workers(app, 1)
    for _ in range(3):
        began = time.monotonic()
        reply = app.get('/api/long/4', timeout=20)
        assert reply.status == 200 and reply.json['done'] is True, reply.text
        assert time.monotonic() - began >= 4
    assert 'timed out' not in app.log()


def test_request_queue_put_reaches_a_remote_worker(app_server, redis_server,
                                                   groups):
    app = app_server('remote_app', redis_server.url)
    groups(redis_server.url, 1)
    wait_workers(app, 1)
    assert app.get('/_fire').json == {'queued': True}
    app.wait_until(lambda: app.get('/api/items').json['items'] ==
                   [{'fired': True}], what='the fire-and-forget request run')
    assert app.status()['pending'] == 0


def test_the_worker_command_takes_its_broker_from_the_environment(
        app_server, redis_server, groups):
    """UHTTP_WORKERS_BROKER instead of --broker: the password stays out of
    the process list."""
    app = app_server('remote_app', redis_server.url)
    group = groups(redis_server.url, 1, url_from_env=True)
    assert '--broker' not in group.args
    wait_workers(app, 1)
    assert app.get('/api/pid').status == 200


def test_a_paused_remote_worker_takes_nothing_until_it_resumes(
        app_server, redis_server, groups):
    app = app_server('remote_app', redis_server.url)
    groups(redis_server.url, 1)
    wait_workers(app, 1)
    assert app.get('/api/pause/1.5').json['paused'] is True
    began = time.monotonic()
    reply = app.get('/api/pid', timeout=10)  # waits in the stream meanwhile
    assert reply.status == 200
    assert time.monotonic() - began >= 1.0
