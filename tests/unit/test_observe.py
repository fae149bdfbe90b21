"""The dispatcher's side of metrics, without processes: settings, the
access log formatter, the collector building families from the plain
counts, route reporting in the route table, the status probe."""

import pytest
from prometheus_client.parser import text_string_to_metric_families

import re
import time

import uhttp.workers as workers
from uhttp.workers import accesslog
from uhttp.workers import feed
from uhttp.workers import observe as ob
from uhttp.workers import probe as probe_mod
from uhttp.workers import routing
from uhttp.workers.dispatcher import core_of


class Jobs(workers.Worker):
    @workers.api('/api/item/{id:int}', 'GET')
    def item(self, request):
        return {}


def dispatcher(**kwargs):
    pool = workers.WorkerPool(Jobs, num_workers=2, metrics=[
        workers.Counter('jobs_total', 'Jobs', labels=['kind']),
        workers.Gauge('cache_items', 'Items'),
        workers.Histogram('job_seconds', 'Time', buckets=(0.5, 5))])
    return workers.Dispatcher(pools=[pool], **kwargs), pool


def families(observer, accept=''):
    body, content_type = observer.collector.render(accept)
    assert content_type.startswith('text/plain')
    return {family.name: family
            for family in text_string_to_metric_families(body.decode())}


# -- settings -----------------------------------------------------------------------

class TestSettings:
    def test_all_off_by_default(self):
        app, _ = dispatcher()
        assert core_of(app).observe is None

    def test_access_log_alone_needs_no_prometheus(self):
        app, _ = dispatcher(access_log=True)
        observer = core_of(app).observe
        assert observer is not None and observer.collector is None
        assert observer.access.template == accesslog.DEFAULT_ACCESS_FORMAT

    @pytest.mark.parametrize('name', ['metrics_path', 'dashboard_path'])
    @pytest.mark.parametrize('value', ['metrics', '/a b', 3, '/x?y'])
    def test_bad_paths(self, name, value):
        with pytest.raises(ValueError, match=name):
            workers.Dispatcher(**{name: value})

    def test_same_path_twice(self):
        with pytest.raises(ValueError, match='same path'):
            workers.Dispatcher(metrics_path='/m', dashboard_path='/m')

    @pytest.mark.parametrize('metrics', ['/ops/events', '/ops/data'])
    def test_metrics_path_among_the_dashboards_own(self, metrics):
        # the dashboard's events and data answered there: the metrics
        # were never served
        with pytest.raises(ValueError, match='is also a path of the dashboard'):
            workers.Dispatcher(metrics_path=metrics, dashboard_path='/ops')

    @pytest.mark.parametrize('below', ['events', 'data'])
    def test_a_sync_route_on_the_dashboards_events_or_data(self, below):
        class App(workers.Dispatcher):
            @workers.sync(f'/ops/{below}')
            def mine(self, client, path_params):
                client.respond({'mine': True})

        with pytest.raises(ValueError, match=f"serves '/ops/{below}' is also "
                           "the path of the sync handler mine"):
            App(dashboard_path='/ops')
        App(dashboard_path='/other')   # elsewhere it is fine

    def test_a_pools_exact_route_on_an_own_path(self):
        # the dispatcher answers /metrics first: the pool's route is dead
        pool = workers.WorkerPool(Jobs, routes=['/metrics', '/api/**'])
        with pytest.raises(ValueError, match="metrics_path '/metrics' is "
                           "also a route of pool 'Jobs'"):
            workers.Dispatcher(pools=[pool], metrics_path='/metrics')
        pool = workers.WorkerPool(Jobs, routes=['/ops/data'])
        with pytest.raises(ValueError, match="route of pool 'Jobs'"):
            workers.Dispatcher(pools=[pool], dashboard_path='/ops')
        # a prefix that covers it, or the fallback pool, is no mistake
        for routes in (['/**'], None):
            pool = workers.WorkerPool(Jobs, routes=routes)
            workers.Dispatcher(pools=[pool], metrics_path='/metrics',
                               dashboard_path='/ops')

    def test_bad_access_format(self):
        with pytest.raises(ValueError, match='fields: remote'):
            workers.Dispatcher(access_log='{nope}')
        with pytest.raises(TypeError):
            workers.Dispatcher(access_log=3)

    def test_endpoints(self):
        app, _ = dispatcher(metrics_path='/metrics',
                            dashboard_path='/_dashboard')
        assert sorted(core_of(app).observe.endpoints) == [
            '/_dashboard', '/_dashboard/data', '/_dashboard/events',
            '/metrics']


# -- the collector ----------------------------------------------------------------------

class TestCollector:
    def test_every_family_is_there_from_the_first_scrape(self):
        app, _ = dispatcher(metrics_path='/metrics')
        found = families(core_of(app).observe)
        for name in ('uhttp_workers_requests', 'uhttp_workers_request_duration_seconds',
                     'uhttp_workers_queue_wait_seconds', 'uhttp_workers_queue_depth',
                     'uhttp_workers_requests_in_flight', 'uhttp_workers_streams_open',
                     'uhttp_workers_connections_open', 'uhttp_workers_websockets_open',
                     'uhttp_workers_workers',
                     'uhttp_workers_pool_degraded', 'uhttp_workers_worker_restarts',
                     'uhttp_workers_timeouts', 'uhttp_workers_rejected',
                     'uhttp_workers_worker_rss_bytes',
                     'uhttp_workers_worker_cpu_seconds', 'jobs', 'cache_items',
                     'job_seconds', 'process_cpu_seconds'):
            assert name in found, name

    def test_families_from_the_counts(self):
        app, pool = dispatcher(metrics_path='/metrics')
        observer = core_of(app).observe
        observer.count('Jobs', '/api/item/{id:int}', 'GET', 200, 0.002)
        observer.count('Jobs', '/api/item/{id:int}', 'GET', 200, 0.3)
        observer.count('', '', 'GET', 404, 0.0001)
        observer.timed_out(pool)
        observer.rejected[('Jobs', ob.MAX_PENDING)] = 2
        observer.restarts[('Jobs', 'died')] = 1
        observer.user[pool].add('w', {'c': {'jobs_total': {('x',): 4}},
                                      'h': {'job_seconds': {(): [1, 1, 0, 2.5]}}})
        found = families(observer)
        samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
                   for family in found.values() for s in family.samples}
        assert samples[('uhttp_workers_requests_total', (
            ('method', 'GET'), ('pool', 'Jobs'), ('route', '/api/item/{id:int}'),
            ('status', '200')))] == 2
        assert samples[('uhttp_workers_requests_total', (
            ('method', 'GET'), ('pool', ''), ('route', ''),
            ('status', '404')))] == 1
        assert samples[('uhttp_workers_request_duration_seconds_count', (
            ('pool', 'Jobs'), ('route', '/api/item/{id:int}')))] == 2
        assert samples[('uhttp_workers_request_duration_seconds_bucket', (
            ('le', '0.0025'), ('pool', 'Jobs'),
            ('route', '/api/item/{id:int}')))] == 1
        assert samples[('uhttp_workers_timeouts_total', (('pool', 'Jobs'),))] == 1
        assert samples[('uhttp_workers_rejected_total', (
            ('pool', 'Jobs'), ('reason', 'max_pending')))] == 2
        assert samples[('uhttp_workers_worker_restarts_total', (
            ('pool', 'Jobs'), ('reason', 'died')))] == 1
        assert samples[('jobs_total', (('kind', 'x'), ('pool', 'Jobs')))] == 4
        assert samples[('job_seconds_bucket', (('le', '5.0'), ('pool', 'Jobs')))] == 2
        assert samples[('job_seconds_sum', (('pool', 'Jobs'),))] == 2.5
        assert samples[('uhttp_workers_pool_degraded', (('pool', 'Jobs'),))] == 0

    def test_openmetrics_when_asked(self):
        app, _ = dispatcher(metrics_path='/metrics')
        body, content_type = core_of(app).observe.collector.render(
            'application/openmetrics-text; version=1.0.0')
        assert content_type.startswith('application/openmetrics-text')
        assert body.rstrip().endswith(b'# EOF')

    def test_no_registry_state_is_shared(self):
        first, _ = dispatcher(metrics_path='/metrics')
        second, _ = dispatcher(metrics_path='/metrics')
        core_of(first).observe.count('Jobs', '', 'GET', 200, 0.1)
        found = families(core_of(second).observe)
        assert not found['uhttp_workers_requests'].samples


# -- routes in the worker's table -------------------------------------------------------

def test_route_table_find_names_the_pattern():
    table = routing.RouteTable()
    table.add('/a', ('GET',), 'a')
    table.add('/item/{id:int}', ('GET',), 'item')
    table.add('/item/{id:int}', ('POST',), 'post')
    assert table.patterns == ['/a', '/item/{id:int}']
    assert table.find('GET', '/a') == ('a', {}, 0)
    assert table.find('POST', '/item/3') == ('post', {'id': 3}, 1)
    assert table.find('HEAD', '/item/3') == ('item', {'id': 3}, 1)
    assert table.find('PUT', '/item/3') == (None, ['GET', 'HEAD', 'POST'], None)
    assert table.find('GET', '/zzz') == (None, None, None)


def test_a_request_no_answer_labelled_gets_its_route_matched_here():
    class Handle:
        def __init__(self, routes):
            self.routes = routes

    class Pool:
        handles = [Handle(()), Handle(('/a', '/item/{id:int}', '/files/{rest:path}'))]

    class Pending:
        pool = Pool()
        method = 'GET'

        def __init__(self, path):
            self.path = path

    app, _ = dispatcher(metrics_path='/metrics')
    observer = core_of(app).observe
    worker = Pool.handles[1]
    assert observer.route_of(Pending('/item/7'), worker) == '/item/{id:int}'
    assert observer.route_of(Pending('/files/x/y'), None) == '/files/{rest:path}'
    assert observer.route_of(Pending('/item/x'), worker) == ''
    assert observer.route_of(Pending(None), worker) == ''
    Pool.handles = [Handle(())]     # no worker has said its routes yet
    assert observer.route_of(Pending('/a'), None) == ''


# -- the status probe ---------------------------------------------------------------------

class _Connection:
    def __init__(self):
        self.sent = []

    def respond(self, data=None, status=200, headers=None, cookies=None):
        self.sent.append(status)


def test_probe_status_sees_the_answer_and_restores_the_class():
    client = _Connection()
    with probe_mod.probe_status(client) as probe:
        client.respond({'error': 'no'}, status=401)
    assert probe.status == 401 and client.sent == [401]
    assert type(client) is _Connection
    assert '_uhttp_status' not in vars(client)
    with probe_mod.probe_status(client) as probe:
        pass
    assert probe.status is None


def test_percentile():
    assert feed.percentile([], 0.5) is None
    values = list(range(1, 101))
    assert feed.percentile(values, 0.5) in (50, 51)
    assert feed.percentile(values, 0.99) == 99


def test_access_records_go_through_use_logging_as_uhttp_workers_access():
    import logging

    class Catch(logging.Handler):
        def __init__(self):
            super().__init__()
            self.records = []

        def emit(self, record):
            self.records.append(record)

    class Client:
        client_ip = '10.1.2.3'
        method = 'GET'
        path = '/x'

    catch = Catch()
    logger = logging.getLogger('uhttp.workers.access')
    logger.addHandler(catch)
    logger.setLevel(logging.INFO)
    try:
        app, _ = dispatcher(access_log=True, use_logging=True)
        observer = core_of(app).observe
        began = time.monotonic()
        observer.served(Client(), began, 200, '/x', method='GET', path='/x')
    finally:
        logger.removeHandler(catch)
    assert len(catch.records) == 1
    record = catch.records[0]
    assert record.name == 'uhttp.workers.access'
    assert record.levelno == logging.INFO
    assert record.getMessage().startswith('10.1.2.3 - - [')
    assert '"GET /x" 200 - ' in record.getMessage()


def test_refusal_reasons():
    app, pool = dispatcher(metrics_path='/metrics', max_pending=1)
    intake = core_of(app).intake
    pool._alive = 2
    assert intake.refusal(pool) is None
    core_of(app).pending.open(type('Client', (), {'method': 'GET'})(), pool, 0.0)
    assert intake.refusal(pool)[0] == ob.MAX_PENDING
    pool._alive = 0
    assert intake.refusal(pool)[0] == ob.NO_WORKER
    pool.degraded = True
    assert intake.refusal(pool)[0] == ob.DEGRADED
