"""Supervision over real processes: dead and stuck workers are noticed,
their requests answered and the workers restarted; restart counting and
degraded pools; setup() failures back off; request timeouts and
keep_alive(); max_pending and queue_warning; send_config(); pool.status().

The apps use heartbeat_interval=0.2 and stuck_timeout of 1-1.5 s so that
every case takes a second or two. Timing bounds are generous: other test
suites may share the machine.
"""
import json
import os
import re
import signal
import time

import pytest

from harness import pid_alive, wait_gone


# -- helpers (also used by the other test_supervision_* modules) ---------------

from supervision_util import (  # noqa: E402
    Call, log_lines, pool_status, proc_cpu_seconds, start, wait_busy, wait_pending, wait_replaced, worker_pids, workers)


DEATHS = {
    # route: (log text for the way it ended)
    'sys_exit': r'exited with code 0\b',
    'os_exit0': r'exited with code 0\b',
    'os_exit3': r'exited with code 3\b',
    'segv': r'SIGSEGV',
    'abort': r'SIGABRT',
}


@pytest.mark.parametrize('route', list(DEATHS))
def test_dead_worker_is_restarted_and_its_request_gets_500(app_server, route):
    server = start(app_server, 'sup_crash')
    before = workers(server)
    old_pids = [w['pid'] for w in before]
    assert all(w['alive'] and w['restarts'] == 0 for w in before)

    started = time.monotonic()
    reply = server.get(f'/api/{route}', timeout=15)
    elapsed = time.monotonic() - started
    # answered when the death is noticed, far ahead of the pool timeout (10 s)
    assert reply.status == 500, reply
    assert elapsed < 2.0, f"500 came after {elapsed:.2f}s"

    after = wait_replaced(server, old_pids)
    changed = [w for w in after if w['pid'] not in old_pids]
    assert len(changed) == 1, after
    new = changed[0]
    dead_pid = old_pids[new['id']]
    assert new['alive'] is True
    assert new['restarts'] == 1
    for w in after:
        if w['id'] != new['id']:
            assert w['restarts'] == 0 and w['pid'] == old_pids[w['id']]
    assert not pid_alive(dead_pid)

    lines = log_lines(server, rf'ERROR\s.*\(pid {dead_pid}\).*died')
    assert lines, server.log()[-3000:]
    assert re.search(DEATHS[route], lines[0]), lines[0]

    # the pool serves again, with the same number of workers
    for _ in range(4):
        assert server.get('/api/whoami').status == 200
    assert sorted(w['id'] for w in workers(server)) == [0, 1]


def test_kill9_fails_the_started_request_and_requeues_the_rest(app_server):
    server = start(app_server, 'sup_crash')
    old_pids = worker_pids(server)
    slow = [Call(server, '/api/sleep/2.5'), Call(server, '/api/sleep/2.5')]
    busy = wait_busy(server, 2)
    assert {w['pid'] for w in busy} == set(old_pids)
    queued = [Call(server, '/api/sleep/0.1') for _ in range(4)]
    wait_pending(server, 6)

    victim = old_pids[0]
    killed_at = time.monotonic()
    os.kill(victim, signal.SIGKILL)
    after = wait_replaced(server, old_pids)
    assert time.monotonic() - killed_at < 2.0, "restart took too long"

    slow_replies = [call.result() for call in slow]
    failed = [call for call in slow if call.reply.status == 500]
    served = [call for call in slow if call.reply.status == 200]
    assert len(failed) == 1 and len(served) == 1, slow_replies
    assert failed[0].ended - killed_at < 1.5, (
        f"500 came {failed[0].ended - killed_at:.2f}s after the kill")
    assert served[0].reply.json['pid'] == old_pids[1]
    # everything still queued for the pool is served by the others
    for call in queued:
        reply = call.result()
        assert reply.status == 200, reply
        assert reply.json['pid'] != victim

    server.wait_log(rf'ERROR\s.*\(pid {victim}\) died: .*SIGKILL')
    assert after[0]['pid'] != victim and after[0]['alive'] is True
    assert after[0]['restarts'] == 1
    assert after[1]['pid'] == old_pids[1] and after[1]['restarts'] == 0
    wait_pending(server, 0)


# -- stuck workers ----------------------------------------------------------------

@pytest.mark.parametrize('route', ['spin', 'hang'])
def test_stuck_worker_is_killed_and_its_request_answered(app_server, route):
    server = start(app_server, 'sup_crash')     # stuck_timeout=1, timeout=10
    old_pids = worker_pids(server)
    call = Call(server, f'/api/{route}', timeout=15)
    busy = wait_busy(server, 1)
    stuck_pid = busy[0]['pid']
    reply = call.result()
    assert reply.status in (500, 504), reply
    # killed after about stuck_timeout, not before and not much later
    assert 0.8 <= call.elapsed < 5.0, f"answered after {call.elapsed:.2f}s"

    server.wait_log(rf'ERROR\s.*\(pid {stuck_pid}\).*stuck')
    assert wait_gone([stuck_pid], timeout=5)
    after = wait_replaced(server, old_pids)
    slot = [w for w in after if w['id'] == busy[0]['id']][0]
    assert slot['pid'] != stuck_pid and slot['alive'] is True
    assert slot['restarts'] == 1
    assert server.get('/api/whoami').status == 200


# -- restart counting, degraded pools, setup() failures ------------------------------

def _die_and_wait_restart(server):
    """Kill the pool's only worker through a request; its restarted entry."""
    old = worker_pids(server)
    reply = server.get('/api/die', timeout=15)
    assert reply.status == 500, reply

    def restarted():
        worker = workers(server)[0]
        return worker if worker['alive'] and worker['pid'] not in old else None
    return server.wait_until(restarted, timeout=10, what='restart')


def test_max_restarts_in_window_degrades_the_pool(app_server):
    server = start(app_server, 'sup_restart', env={
        'SUP_MAX_RESTARTS': '3', 'SUP_RESTART_WINDOW': '60'})
    for count in (1, 2):
        worker = _die_and_wait_restart(server)
        assert worker['restarts'] == count
        status = pool_status(server)
        assert status['degraded'] is False, status
        assert server.get('/api/ok').status == 200

    reply = server.get('/api/die', timeout=15)
    assert reply.status == 500
    server.wait_until(lambda: pool_status(server)['degraded'] is True,
                      timeout=5, what='degraded pool')
    status = pool_status(server)
    assert status['workers'][0]['restarts'] == 3
    started = time.monotonic()
    reply = server.get('/api/ok')
    assert reply.status == 503, reply
    assert time.monotonic() - started < 1.0
    server.wait_log(r'degraded')


def test_restarts_older_than_the_window_do_not_count(app_server):
    server = start(app_server, 'sup_restart', env={
        'SUP_MAX_RESTARTS': '3', 'SUP_RESTART_WINDOW': '1.5'})
    _die_and_wait_restart(server)
    _die_and_wait_restart(server)
    # let the first two restarts leave the 1.5 s window
    time.sleep(1.8)
    worker = _die_and_wait_restart(server)
    assert worker['restarts'] == 3
    status = pool_status(server)
    assert status['degraded'] is False, status
    assert server.get('/api/ok').status == 200
    assert not log_lines(server, r'degraded')


def test_setup_failure_is_logged_and_backs_off_without_spinning(app_server):
    server = app_server('sup_restart', env={
        'SUP_SETUP_FAIL': '1', 'SUP_MAX_RESTARTS': '1000'})
    cpu_before = proc_cpu_seconds(server.pid)
    started = time.monotonic()
    server.wait_log(r'CRITICAL\s.*setup\(\) failed')
    # the measurement is over a fixed span of time by nature
    time.sleep(max(0.0, 3.0 - (time.monotonic() - started)))
    span = time.monotonic() - started
    cpu = proc_cpu_seconds(server.pid) - cpu_before
    text = server.log()

    assert 'setup exploded on purpose' in text
    assert 'Traceback' in text
    critical = re.findall(r'CRITICAL\s.*setup\(\) failed', text)
    assert 2 <= len(critical) < 10, f"{len(critical)} setup() failures in {span:.1f}s"
    assert cpu < 1.0, f"dispatcher used {cpu:.2f}s CPU in {span:.1f}s"
    print(f"{len(critical)} setup() failures, dispatcher CPU {cpu:.3f}s "
          f"in {span:.1f}s")
    delays = [float(value) for value in re.findall(
        r'restarting \S+ in ([0-9.]+) ?s', text)]
    print('delays', delays)
    assert len(delays) >= 2, text[-3000:]
    assert all(b > a for a, b in zip(delays, delays[1:])), delays
    # the dispatcher itself stays responsive
    started = time.monotonic()
    assert server.get('/_status').status == 200
    assert time.monotonic() - started < 1.0


# -- request timeouts and keep_alive() -----------------------------------------------

def test_request_timeout_gives_504_and_a_warning(app_server):
    server = start(app_server, 'sup_timeout')  # timeout=1, stuck_timeout=1.5
    pid = worker_pids(server)[0]
    for _ in range(3):      # so that the request id is not a lone '1'
        assert server.get('/api/sleep/0').status == 200
    call = Call(server, '/api/sleep/1.3')
    request_id = wait_busy(server, 1)[0]['current_request']
    reply = call.result()
    assert reply.status == 504, reply
    assert call.elapsed >= 0.9, f"504 after {call.elapsed:.2f}s"
    lines = log_lines(server, rf'WARNING\s.*\brequest\D{{0,12}}\b{request_id}\b')
    assert lines, server.log()[-3000:]
    assert re.search(r'\b1(\.0+)? ?s\b|timeout=1\b', lines[0]), lines[0]
    # ... and says where the request was: its handler still running
    assert lines[0].endswith(
        f': its handler still running in KeepWorker[0] (pid {pid})'), lines[0]
    # the worker was slow, not stuck: it is still the same process
    server.wait_until(lambda: workers(server)[0]['current_request'] is None,
                      timeout=5, what='worker idle again')
    assert server.get('/api/sleep/0').json['pid'] == pid
    assert not log_lines(server, r'stuck')


def test_keep_alive_prevents_timeout_and_stuck_kill(app_server):
    server = start(app_server, 'sup_timeout')
    pid = worker_pids(server)[0]
    started = time.monotonic()
    reply = server.get('/api/busy_keepalive/3.0', timeout=15)
    assert reply.status == 200, reply
    assert time.monotonic() - started >= 2.9
    assert reply.json['pid'] == pid
    assert worker_pids(server)[0] == pid
    assert workers(server)[0]['restarts'] == 0
    text = server.log()
    assert 'timed out' not in text and 'stuck' not in text, text[-3000:]


def test_keep_alive_keeps_a_deferred_request_alive(app_server):
    server = start(app_server, 'sup_timeout')
    kept = Call(server, '/api/deferred/2.5')
    unkept = Call(server, '/nk/deferred')
    reply = unkept.result()
    # control: a deferred request nobody keeps alive times out ...
    assert reply.status == 504, reply
    assert unkept.elapsed < 2.4
    # ... and its worker is told it can no longer answer it
    server.wait_until(lambda: server.get('/nk/disconnected').json['disconnected'],
                      timeout=5, what='on_disconnect() after the timeout')
    reply = kept.result()
    assert reply.status == 200, reply
    assert reply.json['deferred'] is True
    assert kept.elapsed >= 2.4
    lines = log_lines(server, r'WARNING\s.*timed out')
    assert len(lines) == 1
    assert re.search(r'/nk/deferred\).*: deferred by NoKeepWorker\[0\] '
                     r'\(pid \d+\)$', lines[0]), lines[0]
    wait_pending(server, 0)


def test_an_answer_sent_in_time_is_not_a_504_after_a_held_up_loop(app_server):
    """A worker answered in time while the dispatcher's loop was held up
    (a sync handler that blocks, a loop short of CPU): the deadline was
    checked before the pipe that held the answer was read, and the client
    got a 504 for a request that had been answered."""
    server = start(app_server, 'sup_timeout')  # KeepWorker: timeout=1
    call = Call(server, '/api/sleep/0.2')
    wait_busy(server, 1)
    assert server.get('/block/1.8', timeout=10).status == 200
    reply = call.result()
    assert reply.status == 200, reply
    assert not log_lines(server, r'timed out'), server.log()[-2000:]


def test_timeout_warning_says_every_worker_is_paused(app_server):
    """A 504 whose pool had every worker paused said only "timed out":
    nothing pointed at the pause() that left the requests waiting."""
    server = start(app_server, 'sup_timeout')
    assert server.get('/pz/pause').status == 200
    reply = server.get('/pz/ok', timeout=10)
    assert reply.status == 504, reply
    lines = log_lines(server, r'WARNING\s.*GET /pz/ok\) timed out')
    assert lines and lines[0].endswith(
        'in pool PausedWorker: never started, every worker of the pool '
        'is paused'), lines


# -- max_pending and queue_warning ------------------------------------------------------

@pytest.mark.parametrize('limit, sleep, refused', [
    (3, 0.8, '/api/sleep/0'),
    # the spec: "Max pending requests (503 when exceeded)", the
    # dispatcher's: with the slow pool holding all of it, the fast pool's
    # request is refused too
    (4, 1.0, '/fast/pid'),
], ids=['the same pool', 'another pool'])
def test_max_pending_answers_503_at_once(app_server, limit, sleep, refused):
    server = start(app_server, 'sup_pending',
                   env={'SUP_MAX_PENDING': str(limit)})
    slow = [Call(server, f'/api/sleep/{sleep}') for _ in range(limit)]
    wait_pending(server, limit)
    started = time.monotonic()
    reply = server.get(refused)
    assert reply.status == 503, reply
    assert reply.headers.get('retry-after') == '1'
    assert time.monotonic() - started < 1.0
    assert server.status()['pending'] == limit
    assert [call.result().status for call in slow] == [200] * limit
    wait_pending(server, 0)
    assert server.get(refused).status == 200


def test_queue_warning_is_rate_limited(app_server):
    server = start(app_server, 'sup_pending', env={
        'SUP_MAX_PENDING': '1000', 'SUP_QUEUE_WARNING': '5'})
    calls = [Call(server, '/api/sleep/0.02', timeout=30) for _ in range(60)]
    replies = [call.result() for call in calls]
    assert all(reply.status == 200 for reply in replies), [
        reply.status for reply in replies]
    warnings = log_lines(server, r'WARNING\s.*queue')
    assert warnings, server.log()[-3000:]
    assert len(warnings) <= 3, warnings
    assert 'SlowWorker' in warnings[0]


def test_queue_warning_counts_requests_waiting_in_a_window(app_server):
    # one worker takes all four into its window (the pool's queue stays
    # empty): three wait there, not started, over queue_warning=2
    server = start(app_server, 'sup_pending', env={
        'SUP_MAX_PENDING': '1000', 'SUP_QUEUE_WARNING': '2'})
    calls = [Call(server, '/api/sleep/1.5', timeout=30) for _ in range(4)]
    server.wait_log(r'WARNING\s.*SlowWorker: 3 requests queued '
                    r'\(queue_warning=2\)', timeout=5)
    assert [call.result().status for call in calls] == [200] * 4


# -- send_config() --------------------------------------------------------------------

def _configs(directory, pid):
    path = os.path.join(directory, f'cfg-{pid}.jsonl')
    try:
        with open(path, encoding='utf-8') as file:
            return [json.loads(line) for line in file if line.strip()]
    except OSError:
        return []


def test_send_config_reaches_every_worker_and_later_restarts(app_server, tmp_path):
    directory = str(tmp_path)
    server = start(app_server, 'sup_crash', env={
        'SUP_WORKERS': '3', 'SUP_MARKER_DIR': directory})
    current = workers(server)
    for version in (1, 2):
        reply = server.post('/_config', json_body={'version': version})
        assert reply.status == 200, reply
        for worker in current:
            server.wait_until(
                lambda w=worker, v=version: (
                    _configs(directory, w['pid'])
                    and _configs(directory, w['pid'])[-1]['config'] == {'version': v}),
                timeout=5, what=f"config {version} in worker {worker['id']}")
    for worker in current:
        seen = _configs(directory, worker['pid'])
        assert [entry['config']['version'] for entry in seen] == [1, 2]
        assert all(entry['worker_id'] == worker['id'] for entry in seen)

    old_pids = [w['pid'] for w in current]
    os.kill(old_pids[1], signal.SIGKILL)
    after = wait_replaced(server, old_pids)
    new_pid = after[1]['pid']
    assert new_pid not in old_pids
    seen = server.wait_until(lambda: _configs(directory, new_pid), timeout=5,
                             what='config in the restarted worker')
    # it started with the latest config, and only that one
    assert [entry['config'] for entry in seen] == [{'version': 2}]
    for _ in range(6):
        reply = server.get('/api/whoami')
        assert reply.json['config'] == {'version': 2}, reply


# -- pool.status() and the pending table -------------------------------------------

def test_status_fields_and_pending_count(app_server):
    server = start(app_server, 'sup_crash')
    status = server.status()
    assert status['pending'] == 0
    pool = status['pools'][0]
    assert pool['name'] == 'CrashWorker'
    assert pool['degraded'] is False
    assert pool['queue_size'] == 0
    assert [w['id'] for w in pool['workers']] == [0, 1]
    assert sorted(w['pid'] for w in pool['workers']) == sorted(server.children())
    for worker in pool['workers']:
        assert worker['alive'] is True
        assert worker['current_request'] is None
        assert worker['restarts'] == 0
        assert isinstance(worker['last_seen'], (int, float))
        assert 0 <= worker['last_seen'] < 1.0, worker

    calls = [Call(server, '/api/sleep/0.4') for _ in range(10)]
    wait_pending(server, 10)
    snapshot = wait_busy(server, 2)
    status = server.status()
    assert status['pools'][0]['queue_size'] >= 1, status
    running = [(w['pid'], w['current_request']) for w in snapshot]
    assert all(isinstance(request_id, int) for _, request_id in running)
    assert running[0][1] != running[1][1]

    replies = [call.result() for call in calls]
    assert all(reply.status == 200 for reply in replies)
    answered = {(reply.json['pid'], reply.json['request_id']) for reply in replies}
    for pair in running:
        assert pair in answered, (pair, answered)

    wait_pending(server, 0)
    server.wait_until(
        lambda: all(w['current_request'] is None for w in workers(server)),
        timeout=5, what='idle workers')
    pool = pool_status(server)
    assert pool['queue_size'] == 0
    assert all(w['restarts'] == 0 and w['alive'] for w in pool['workers'])
    server.wait_until(lambda: all(w['last_seen'] < 1.0 for w in workers(server)),
                      timeout=5, what='fresh heartbeats')
