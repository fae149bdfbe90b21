"""A worker that got ready and served is restarted at once after every
crash, until max_restarts within restart_window degrades the pool; back-off
is only for slots that die before they are ready. Each request lost with a
dead worker is logged at ERROR."""

import re
import time

from supervision_util import pool_status


def wait_ready(server, index=0):
    server.wait_until(
        lambda: all(w['ready'] for w in pool_status(server, index)['workers']),
        timeout=10, what='worker ready')


def test_served_worker_restarted_at_once_until_degraded(app_server):
    server = app_server('restart_app')
    wait_ready(server)
    first = server.get('/api/pid')
    assert first.status == 200
    pids = {first.json['pid']}
    # default max_restarts=10: nine crashes leave the pool serving, each
    # time with a fresh worker and no 503 in between
    for crash in range(1, 10):
        reply = server.get('/api/crash')
        assert reply.status == 500, (crash, reply)
        started = time.monotonic()
        reply = server.get('/api/pid')
        assert reply.status == 200, (crash, reply)
        assert reply.json['pid'] not in pids
        pids.add(reply.json['pid'])
        assert time.monotonic() - started < 5
        status = pool_status(server)
        assert not status['degraded']
        assert status['workers'][0]['restart_in'] is None
    # the tenth restart within the window degrades the pool
    assert server.get('/api/crash').status == 500
    server.wait_until(lambda: pool_status(server)['degraded'], timeout=5,
                      what='pool degraded')
    assert server.get('/api/pid').status == 503
    # every lost request was logged with its method, path and id
    lost = re.findall(r'request (\d+) \(GET /api/crash\) lost', server.log())
    assert len(lost) == 10
    assert len(set(lost)) == 10


def test_slot_failing_before_ready_backs_off(app_server):
    server = app_server('restart_app')
    server.wait_until(
        lambda: pool_status(server, 1)['workers'][0]['restart_in'] is not None,
        timeout=15, what='back-off of the failing setup()')
    status = pool_status(server, 1)
    assert status['workers'][0]['restarts'] >= 2
    # the healthy pool is unaffected
    assert server.get('/api/pid').status == 200
