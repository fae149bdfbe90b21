"""Zero-downtime operations under load: rolling reload (SIGHUP and
reload()), recycling by max_requests and by memory, resizing (resize() and
SIGTTIN/SIGTTOU). Every request gets its answer, no connection is reset,
retirements are logged at INFO and not counted as restarts."""

import os
import re
import signal
import time

from load_util import Load
from supervision_util import Call, pool_status


def pid_of(body):
    found = re.search(rb'"pid": (\d+)', body)
    return int(found.group(1)) if found else None


def load_on(server, path='/api/pid', clients=8):
    return Load(server.port, path, clients, note=pid_of)


def worker_pids(server):
    return {w['pid'] for w in pool_status(server)['workers']}


def settled(server, count):
    status = pool_status(server)
    workers = status['workers']
    return (len(workers) == count and all(
        w['ready'] and w['retiring'] is None and not w['replacement']
        for w in workers))


def start(app_server, **env):
    server = app_server('retire_app', env={f'RETIRE_{k.upper()}': str(v)
                                            for k, v in env.items()})
    count = int(env.get('workers', 2))
    server.wait_until(lambda: settled(server, count), timeout=15,
                      what='workers ready')
    return server


def assert_clean(load):
    assert load.errors == [], load.errors[:5]
    assert load.statuses and set(load.statuses) == {200}, set(load.statuses)


def test_rolling_reload_under_load_loses_nothing(app_server):
    server = start(app_server, workers=4)
    before = worker_pids(server)
    load = load_on(server)
    time.sleep(0.5)
    server.send_signal(signal.SIGHUP)
    server.wait_until(lambda: pool_status(server)['retired'].get('reload') == 4
                      and settled(server, 4), timeout=30, what='reload done')
    time.sleep(0.3)
    assert_clean(load.finish())
    after = worker_pids(server)
    assert not before & after, (before, after)
    status = pool_status(server)
    assert status['restarts_in_window'] == 0
    assert all(w['restarts'] == 0 for w in status['workers'])
    log = server.log()
    assert 'replacing ItemWorker[0]' in log and 'retired (reload)' in log
    assert 'reload finished' in log


def test_reload_lets_deferred_and_slow_requests_finish(app_server):
    server = start(app_server, workers=2)
    slow = Call(server, '/api/slow/1.0')
    later = Call(server, '/api/later/1.2')
    time.sleep(0.2)
    assert server.post('/_reload').status == 200
    assert slow.result().status == 200
    assert later.result().status == 200
    assert later.result().json['deferred'] is True
    server.wait_until(lambda: pool_status(server)['retired'].get('reload') == 2,
                      timeout=20, what='both retired')


def test_open_stream_survives_its_worker_retiring(app_server):
    server = start(app_server, workers=1)
    sock = server.connection(timeout=20)
    sock.request('GET', '/api/stream/8')
    reply = sock.getresponse()
    assert reply.status == 200
    first = reply.readline()
    while not first.startswith(b'data:'):
        first = reply.readline()
    assert server.post('/_reload').status == 200
    # the new worker is there, the old one keeps streaming until it is done
    body = reply.read()
    assert body.count(b'data:') >= 6
    assert b'"left": 1' in body
    server.wait_until(lambda: pool_status(server)['retired'].get('reload') == 1,
                      timeout=20, what='retired after its stream ended')
    sock.close()


def test_shutdown_while_a_worker_retires_with_a_stream_logs_no_error(
        app_server):
    """SIGTERM while a reloaded worker still keeps its open stream: the
    shutdown stops it with the others, and the retirement's own checks,
    which go on until it has exited, find it stopping without an error."""
    server = start(app_server, workers=1, teardown=1)
    sock = server.connection(timeout=20)
    sock.request('GET', '/api/stream/1000')
    reply = sock.getresponse()
    assert reply.status == 200
    assert server.post('/_reload').status == 200
    server.wait_until(lambda: any(w['retiring'] for w in pool_status(
        server)['workers']) and settled_but_retiring(server), timeout=15,
        what='the old worker retiring, its replacement ready')
    assert server.stop() == 0
    sock.close()
    log = server.log()
    assert 'ERROR' not in log, log
    assert 'stopped' in log


def settled_but_retiring(server):
    workers = pool_status(server)['workers']
    return len(workers) == 2 and all(w['ready'] for w in workers)


def test_max_requests_recycles_without_failing(app_server):
    server = start(app_server, workers=2, max_requests=100, jitter=20)
    load = load_on(server)
    server.wait_until(
        lambda: pool_status(server)['retired'].get('max_requests', 0) >= 4,
        timeout=30, what='recycled workers')
    assert_clean(load.finish())
    assert len(load.notes) >= 4
    assert pool_status(server)['restarts_in_window'] == 0


def test_memory_recycling_keeps_the_request(app_server):
    server = start(app_server, workers=1, rss_mb=80)
    first = server.get('/api/pid').json['pid']
    replies = [server.get('/api/leak/30') for _ in range(4)]
    assert all(reply.status == 200 for reply in replies)
    server.wait_until(
        lambda: pool_status(server)['retired'].get('memory', 0) >= 1,
        timeout=20, what='retired for memory')
    server.wait_until(lambda: settled(server, 1), timeout=15, what='settled')
    assert server.get('/api/pid').json['pid'] != first
    assert 'above max_worker_rss_mb' in server.log()


def test_resize_up_and_down(app_server):
    server = start(app_server, workers=1)
    load = load_on(server)
    assert server.post('/_resize/3').status == 200
    server.wait_until(lambda: settled(server, 3), timeout=15, what='3 workers')
    assert server.post('/_resize/1').status == 200
    server.wait_until(lambda: settled(server, 1), timeout=15, what='1 worker')
    assert_clean(load.finish())
    assert pool_status(server)['retired'].get('resize') == 2
    assert [w['id'] for w in pool_status(server)['workers']] == [0]


def test_ttin_ttou_signals(app_server):
    server = start(app_server, workers=2)
    server.send_signal(signal.SIGTTIN)
    server.wait_until(lambda: settled(server, 3), timeout=15, what='one more')
    for count in (2, 1, 1):     # signals do not queue: one at a time
        server.send_signal(signal.SIGTTOU)
        time.sleep(0.3)
        server.wait_until(lambda: settled(server, count), timeout=15,
                          what=f'{count} workers (never below one)')
    server.wait_log(r'pool ItemWorker stays at 1 worker\(s\)')
    assert server.log().count('resized to 1 workers') == 1


def test_shrinking_a_pool_drops_a_slot_waiting_for_its_restart(
        app_server, tmp_path):
    """A slot whose worker keeps failing in setup() waits for a backed-off
    restart; a resize that removes it removes the restart too (it fired
    on the freed slot and failed with an ERROR)."""
    flag = tmp_path / 'setup-fails'
    server = start(app_server, workers=2, max_restarts=50, fail_flag=flag)
    flag.touch()
    victim = [w for w in pool_status(server)['workers'] if w['id'] == 1][0]
    os.kill(victim['pid'], signal.SIGKILL)
    waiting = server.wait_until(lambda: [
        w for w in pool_status(server)['workers']
        if w['id'] == 1 and (w['restart_in'] or 0) > 0.3], timeout=15,
        what='slot 1 waiting for a backed-off restart')
    assert server.post('/_resize/1').status == 200
    due = time.monotonic() + waiting[0]['restart_in'] + 1.0
    server.wait_until(lambda: time.monotonic() > due, timeout=70,
                      what='the restart it waited for to be due')
    flag.unlink()
    assert [w['id'] for w in pool_status(server)['workers']] == [0]
    assert server.get('/api/pid').status == 200
    assert 'timer restart failed' not in server.log(), server.log()


def test_a_reload_with_no_live_worker_to_replace_finishes(app_server,
                                                       tmp_path):
    """A slot waiting for a backed-off restart has no worker to replace:
    the reload still ends (its last line, and READY=1 under systemd)."""
    flag = tmp_path / 'setup-fails'
    server = start(app_server, workers=1, max_restarts=50, fail_flag=flag)
    flag.touch()
    os.kill(pool_status(server)['workers'][0]['pid'], signal.SIGKILL)
    server.wait_until(lambda: (pool_status(server)['workers'][0]['restart_in']
                               or 0) > 0.3, timeout=15,
                      what='the slot waiting for a backed-off restart')
    server.send_signal(signal.SIGHUP)
    server.wait_log(r'reloading: replacing every worker', timeout=10)
    server.wait_log(r'reload finished', timeout=10)
    flag.unlink()
    server.wait_until(lambda: settled(server, 1), timeout=70,
                      what='the slot restarted')
    assert server.get('/api/pid').status == 200


def test_reload_whose_new_workers_cannot_start_keeps_the_old_ones(
        app_server, tmp_path):
    flag = tmp_path / 'setup-fails'
    server = start(app_server, workers=2, max_restarts=3, fail_flag=flag)
    before = worker_pids(server)
    load = load_on(server)
    flag.touch()
    for _ in range(3):   # more failed replacements than max_restarts
        server.send_signal(signal.SIGHUP)
        server.wait_until(lambda: server.log().count('reload finished') >= 1,
                          timeout=15, what='reload given up')
        time.sleep(0.3)
    assert_clean(load.finish())
    status = pool_status(server)
    assert not status['degraded']
    assert status['restarts_in_window'] == 0
    assert worker_pids(server) == before
    assert settled(server, 2)
    log = server.log()
    assert "keeps serving, the pool's reload is given up" in log
    assert 'reload finished with old workers left in pool(s) ItemWorker' in log
    assert 'every worker replaced' not in log and 'retired (' not in log
    flag.unlink()
    server.send_signal(signal.SIGHUP)
    server.wait_until(lambda: pool_status(server)['retired'].get('reload') == 2
                      and settled(server, 2), timeout=30, what='reload done')
    assert not worker_pids(server) & before
    assert 'reload finished: every worker replaced' in server.log()


def test_recycling_whose_replacement_cannot_start_backs_off(app_server,
                                                           tmp_path):
    flag = tmp_path / 'setup-fails'
    server = start(app_server, workers=1, max_requests=20, max_restarts=3,
                   fail_flag=flag)
    flag.touch()
    load = load_on(server, clients=4)
    server.wait_until(lambda: server.log().count('failed before it was '
                                                 'ready') >= 2,
                      timeout=20, what='two failed replacements')
    assert 'another try in 1s at the earliest' in server.log()
    assert 'another try in 2s at the earliest' in server.log()
    assert not pool_status(server)['degraded']
    flag.unlink()
    server.wait_until(
        lambda: pool_status(server)['retired'].get('max_requests', 0) >= 1,
        timeout=30, what='recycled once its replacement can start')
    assert_clean(load.finish())
    status = pool_status(server)
    assert status['restarts_in_window'] == 0 and not status['degraded']
