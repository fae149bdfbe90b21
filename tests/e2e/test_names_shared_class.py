"""One worker class used by two pools: each pool keeps its own routes,
kwargs and workers, and is named apart ('ItemWorker', 'ItemWorker-2') in
its status and its metrics, so neither pool's figures are merged."""
import pytest

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
