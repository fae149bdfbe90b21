"""One worker class used by two pools: each pool keeps its own routes,
kwargs and workers, and is named apart ('ItemWorker', 'ItemWorker-2') in
its status and its metrics, so neither pool's figures are merged."""
import time

import pytest

import uhttp.workers as _workers
from uhttp.workers.testing import TestServer

from harness import AppServer


@pytest.fixture(scope='module')
def server():
    app = AppServer('names_shared_class')
    try:
        app.start()
        yield app
    finally:
        app.cleanup()


def test_each_pool_answers_its_own_routes(server):
    a, b = server.get('/a/pen'), server.get('/b/cup')
    assert (a.status, a.json['shelf'], a.json['name']) == (200, 'a', 'pen')
    assert (b.status, b.json['shelf'], b.json['name']) == (200, 'b', 'cup')
    assert a.json['pid'] != b.json['pid']


def test_pools_are_named_apart_in_status_and_metrics(server):
    for path in ('/a/x', '/b/y', '/b/z'):
        assert server.get(path).status == 200
    names = [pool['name'] for pool in server.get('/monitor').json['pools']]
    assert names == ['ItemWorker', 'ItemWorker-2']
    samples = [line.rsplit(' ', 1)[0]
               for line in server.get('/metrics').text.splitlines()
               if line and not line.startswith('#')]
    assert len(samples) == len(set(samples)), 'a series is given twice'
    assert any('pool="ItemWorker-2"' in sample for sample in samples)


class LoggingItemWorker(_workers.Worker):
    @_workers.api('/{shelf}/who', 'GET')
    def who(self, request):
        self.log.warning('serving %s', request.path)
        return {'pool': self.pool_name}


def test_each_pools_workers_log_under_their_pools_name():
    pools = [_workers.WorkerPool(LoggingItemWorker, routes=['/a/**']),
             _workers.WorkerPool(LoggingItemWorker, routes=['/b/**'])]
    with TestServer(_workers.Dispatcher, pools=pools) as server:
        assert server.get('/a/who').json() == {'pool': 'LoggingItemWorker'}
        assert server.get('/b/who').json() == {'pool': 'LoggingItemWorker-2'}
        deadline = time.monotonic() + 5
        while len([r for r in server.logs if 'serving' in r.message]) < 2:
            assert time.monotonic() < deadline, server.logs
            time.sleep(0.02)
        names = {record.message: record.name for record in server.logs
                 if 'serving' in record.message}
    # the names the dispatcher's own lines give them (a worker of the second
    # pool was 'LoggingItemWorker[0]' too, like the first pool's)
    assert names == {'serving /a/who': 'LoggingItemWorker[0]',
                     'serving /b/who': 'LoggingItemWorker-2[0]'}
