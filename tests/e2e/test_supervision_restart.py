"""A worker that got ready and served is restarted at once after every
crash, until max_restarts within restart_window degrades the pool; back-off
is only for slots that die before they are ready. Each request lost with a
dead worker is logged at ERROR. (A user app as the README shows it, run
with the library's own TestServer.)"""

import os
import resource
import time

import pytest

import uhttp.workers as _workers
from uhttp.workers.testing import TestServer


class ItemWorker(_workers.Worker):
    def setup(self):
        self.items = {}

    @_workers.api('/api/pid', 'GET')
    def pid(self, request):
        return {'pid': os.getpid()}

    @_workers.api('/api/crash', 'GET')
    def crash(self, request):
        os._exit(1)


class BrokenWorker(_workers.Worker):
    def setup(self):
        raise RuntimeError('cannot reach the database')

    @_workers.api('/broken/name', 'GET')
    def name(self, request):
        return {'name': 'never served'}


@pytest.fixture(autouse=True)
def no_core_files():
    old = resource.getrlimit(resource.RLIMIT_CORE)
    resource.setrlimit(resource.RLIMIT_CORE, (0, old[1]))
    yield
    resource.setrlimit(resource.RLIMIT_CORE, old)


def pool_status(server, index=0):
    return server.status()['pools'][index]


def test_served_worker_restarted_at_once_until_degraded():
    with TestServer(_workers.Dispatcher, pools=[
            _workers.WorkerPool(ItemWorker, routes=['/api/**'])]) as server:
        first = server.get('/api/pid')
        assert first.status == 200
        pids = {first.json()['pid']}
        # default max_restarts=10: nine crashes leave the pool serving, each
        # time with a fresh worker and no 503 in between
        for crash in range(1, 10):
            reply = server.get('/api/crash')
            assert reply.status == 500, (crash, reply)
            started = time.monotonic()
            reply = server.get('/api/pid')
            assert reply.status == 200, (crash, reply)
            assert reply.json()['pid'] not in pids
            pids.add(reply.json()['pid'])
            assert time.monotonic() - started < 5
            status = pool_status(server)
            assert not status['degraded']
            assert status['workers'][0]['restart_in'] is None
        # the tenth restart within the window degrades the pool
        assert server.get('/api/crash').status == 500
        deadline = time.monotonic() + 5
        while not pool_status(server)['degraded']:
            assert time.monotonic() < deadline, 'pool never degraded'
            time.sleep(0.02)
        assert server.get('/api/pid').status == 503
        # every lost request was logged with its method, path and id
        lost = [record for record in server.logs
                if ' (GET /api/crash) lost' in record.message]
        assert len(lost) == 10
        assert all(record.level == _workers.LOG_ERROR for record in lost)


def test_slot_failing_before_ready_backs_off():
    pools = [_workers.WorkerPool(ItemWorker, routes=['/api/**']),
             _workers.WorkerPool(BrokenWorker, routes=['/broken/**'])]
    server = TestServer(_workers.Dispatcher, pools=pools, startup_timeout=1)
    # the broken pool never gets ready: start() says so, with the log
    with pytest.raises(_workers.testing.TestServerError) as info:
        server.start()
    assert 'cannot reach the database' in info.value.log
    assert 'restarting BrokenWorker[0] in' in info.value.log
