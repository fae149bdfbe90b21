"""pool.py: restart policy and WorkerPool configuration (no processes)."""

import threading

import pytest

import uhttp.workers as workers
from uhttp.workers import pool as pool_mod
from uhttp.workers.pool import RestartPolicy, WorkerPool


class EchoWorker(workers.Worker):
    @workers.api('/api/echo', 'POST')
    def echo(self, request):
        return request.data


# -- RestartPolicy -------------------------------------------------------------------

class TestRestartPolicy:
    def test_reaches_limit_within_window(self):
        policy = RestartPolicy(max_restarts=3, window=10)
        assert policy.record(0.0) is False
        assert policy.record(1.0) is False
        assert policy.record(2.0) is True
        assert policy.count(2.0) == 3

    def test_limit_of_one(self):
        assert RestartPolicy(1, 10).record(5.0) is True

    def test_old_entries_trimmed(self):
        policy = RestartPolicy(max_restarts=3, window=10)
        policy.record(0.0)
        policy.record(1.0)
        assert policy.record(20.0) is False     # the first two are too old
        assert policy.count(20.0) == 1

    def test_sliding_window(self):
        policy = RestartPolicy(max_restarts=3, window=10)
        policy.record(0.0)
        policy.record(6.0)
        assert policy.record(10.5) is False     # 0.0 left the window
        assert policy.record(12.0) is True      # 6.0, 10.5, 12.0

    def test_entry_exactly_window_old_still_counts(self):
        policy = RestartPolicy(max_restarts=2, window=10)
        policy.record(0.0)
        assert policy.count(10.0) == 1
        assert policy.count(10.001) == 0

    def test_count_trims(self):
        policy = RestartPolicy(max_restarts=5, window=10)
        for now in (0.0, 1.0, 2.0):
            policy.record(now)
        assert policy.count(5.0) == 3
        assert policy.count(11.5) == 1
        assert policy.count(100.0) == 0

    def test_reset(self):
        policy = RestartPolicy(max_restarts=2, window=10)
        policy.record(0.0)
        policy.reset()
        assert policy.count(0.0) == 0
        assert policy.record(1.0) is False

    def test_stays_reached_while_failing(self):
        policy = RestartPolicy(max_restarts=2, window=100)
        policy.record(0.0)
        assert policy.record(1.0) is True
        assert policy.record(2.0) is True

    def test_delay_zero_for_first_failure(self):
        policy = RestartPolicy(10, 300)
        assert policy.delay(0) == 0
        assert policy.delay(1) == 0

    def test_delay_exponential(self):
        policy = RestartPolicy(10, 300, first=0.5, cap=30.0)
        delays = [policy.delay(streak) for streak in range(2, 8)]
        assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0]

    def test_delay_capped(self):
        policy = RestartPolicy(10, 300, first=0.5, cap=30.0)
        assert policy.delay(8) == 30.0
        assert policy.delay(50) == 30.0

    def test_delay_never_decreases(self):
        policy = RestartPolicy(10, 300)
        delays = [policy.delay(streak) for streak in range(0, 200)]
        assert delays == sorted(delays)
        assert max(delays) == pool_mod.BACKOFF_CAP

    @pytest.mark.parametrize('streak', [1025, 1026, 5000])
    def test_delay_capped_for_very_long_streaks(self, streak):
        # a slot crash-looping for hours (about 8.5 h at the 30 s cap for
        # streak 1026) keeps counting its streak
        policy = RestartPolicy(10, 300)
        assert policy.delay(streak) == pool_mod.BACKOFF_CAP

    def test_default_back_off(self):
        policy = RestartPolicy(10, 300)
        assert policy.delay(2) == pool_mod.BACKOFF_FIRST
        assert 0 < pool_mod.BACKOFF_FIRST <= pool_mod.BACKOFF_CAP


# -- WorkerPool validation ----------------------------------------------------------------

def assert_names(exc_type, name, **kwargs):
    with pytest.raises(exc_type) as info:
        WorkerPool(EchoWorker, **kwargs)
    assert name in str(info.value), str(info.value)


@pytest.mark.parametrize('value,exc', [
    (0, ValueError), (-1, ValueError), (1.5, TypeError), ('2', TypeError),
    (None, TypeError), (True, TypeError)])
def test_num_workers(value, exc):
    assert_names(exc, 'num_workers', num_workers=value)


@pytest.mark.parametrize('name', [
    'timeout', 'stuck_timeout', 'heartbeat_interval', 'restart_window'])
@pytest.mark.parametrize('value,exc', [
    (0, ValueError), (-1, ValueError), (-0.5, ValueError), ('x', TypeError),
    (None, TypeError), (True, TypeError), (float('nan'), ValueError)])
def test_positive_numbers(name, value, exc):
    assert_names(exc, name, **{name: value})


@pytest.mark.parametrize('name', [
    'timeout', 'stuck_timeout', 'heartbeat_interval', 'restart_window'])
def test_positive_numbers_accept_floats(name):
    beat = {} if name == 'heartbeat_interval' else {'heartbeat_interval': 0.1}
    pool = WorkerPool(EchoWorker, **{name: 0.25}, **beat)
    assert getattr(pool, name) == 0.25


@pytest.mark.parametrize('value,exc', [
    (0, ValueError), (-1, ValueError), (2.5, TypeError), ('10', TypeError),
    (None, TypeError)])
def test_max_restarts(value, exc):
    assert_names(exc, 'max_restarts', max_restarts=value)


@pytest.mark.parametrize('value,exc', [
    (-1, ValueError), ('100', TypeError), (1.5, TypeError), (None, TypeError)])
def test_queue_warning(value, exc):
    assert_names(exc, 'queue_warning', queue_warning=value)


def test_queue_warning_zero_disables():
    assert WorkerPool(EchoWorker, queue_warning=0).queue_warning == 0


@pytest.mark.parametrize('routes', ['/api/**', ('/a', 5), 5, {'/a': 1}])
def test_routes_type(routes):
    assert_names(TypeError, 'routes', routes=routes)


@pytest.mark.parametrize('routes', [[1], ['/a', None], [b'/a']])
def test_routes_items(routes):
    assert_names(TypeError, 'routes', routes=routes)


@pytest.mark.parametrize('routes', [['api/**'], ['/ok', 'x'], [''],
                                    ['/a/*'], ['/a/{id}']])
def test_routes_values(routes):
    assert_names(ValueError, 'routes', routes=routes)


@pytest.mark.parametrize('worker_class', [
    object, 'EchoWorker', None, 5, workers.ApiHandler, workers.Worker()])
def test_worker_class(worker_class):
    with pytest.raises(TypeError) as info:
        WorkerPool(worker_class)
    assert 'worker_class' in str(info.value)


def test_worker_class_instance():
    with pytest.raises(TypeError) as info:
        WorkerPool(EchoWorker(worker_id=0, pool_name='p'))
    assert 'worker_class' in str(info.value)


def test_base_worker_class_allowed():
    assert WorkerPool(workers.Worker).name == 'Worker'


@pytest.mark.parametrize('value,exc', [
    ('INFO', TypeError), (-1, ValueError), (None, TypeError), (True, TypeError),
    (20.0, TypeError)])
def test_log_level(value, exc):
    assert_names(exc, 'log_level', log_level=value)


@pytest.mark.parametrize('value,exc', [
    (0, ValueError), (256, ValueError), (-3, ValueError), ('3', TypeError),
    (3.0, TypeError), (True, TypeError)])
def test_permanent_failure_exitcode(value, exc):
    assert_names(exc, 'permanent_failure_exitcode',
                 permanent_failure_exitcode=value)


@pytest.mark.parametrize('value', [1, 255])
def test_permanent_failure_exitcode_bounds(value):
    pool = WorkerPool(EchoWorker, permanent_failure_exitcode=value)
    assert pool.permanent_failure_exitcode == value


@pytest.mark.parametrize('value,exc', [
    (0, ValueError), (-5, ValueError), ('64', TypeError)])
def test_worker_memory_limit_mb(value, exc):
    assert_names(exc, 'worker_memory_limit_mb', worker_memory_limit_mb=value)


@pytest.mark.parametrize('value,exc', [
    (-1, ValueError), (0, ValueError), ('5', TypeError)])
def test_recovery_interval(value, exc):
    assert_names(exc, 'recovery_interval', recovery_interval=value)


def test_optional_numbers_accept_values():
    pool = WorkerPool(EchoWorker, worker_memory_limit_mb=256.5,
                      recovery_interval=30)
    assert pool.worker_memory_limit_mb == 256.5
    assert pool.recovery_interval == 30


@pytest.mark.parametrize('name', ['worker_id', 'pool_name'])
def test_reserved_kwargs(name):
    assert_names(TypeError, name, **{name: 1})


# -- defaults and attributes --------------------------------------------------------------

class TestWorkerPoolDefaults:
    def test_defaults(self):
        pool = WorkerPool(EchoWorker)
        assert pool.num_workers == 1
        assert pool.routes is None
        assert pool.timeout == 30
        assert pool.stuck_timeout == 60
        assert pool.heartbeat_interval == 1
        assert pool.log_level == workers.LOG_WARNING
        assert pool.max_restarts == 10
        assert pool.restart_window == 300
        assert pool.queue_warning == 100
        assert pool.worker_memory_limit_mb is None
        assert pool.recovery_interval is None
        assert pool.permanent_failure_exitcode is None
        assert pool.kwargs == {}

    def test_values_kept(self):
        pool = WorkerPool(EchoWorker, num_workers=4, routes=['/api/**', '/x'],
                          timeout=5, stuck_timeout=7.5, heartbeat_interval=0.5,
                          log_level=workers.LOG_DEBUG, max_restarts=3,
                          restart_window=60, queue_warning=0)
        assert pool.num_workers == 4
        assert pool.routes == ['/api/**', '/x']
        assert (pool.timeout, pool.stuck_timeout, pool.heartbeat_interval) == (
            5, 7.5, 0.5)
        assert pool.log_level == workers.LOG_DEBUG
        assert (pool.max_restarts, pool.restart_window) == (3, 60)

    def test_extra_kwargs_kept(self):
        pool = WorkerPool(EchoWorker, db_login='user:pw', limit=5)
        assert pool.kwargs == {'db_login': 'user:pw', 'limit': 5}

    def test_name_is_worker_class_name(self):
        assert WorkerPool(EchoWorker).name == 'EchoWorker'

    def test_worker_class_kept(self):
        assert WorkerPool(EchoWorker).worker_class is EchoWorker

    def test_routes_copied(self):
        routes = ['/api/**']
        pool = WorkerPool(EchoWorker, routes=routes)
        routes.append('/other')
        assert pool.routes == ['/api/**']
        assert not pool.matches('/other')

    def test_fallback(self):
        assert WorkerPool(EchoWorker).is_fallback
        assert not WorkerPool(EchoWorker, routes=['/a']).is_fallback

    def test_empty_routes_is_not_fallback(self):
        pool = WorkerPool(EchoWorker, routes=[])
        assert not pool.is_fallback
        assert not pool.matches('/')

    def test_matches(self):
        pool = WorkerPool(EchoWorker, routes=['/api/**', '/health'])
        assert pool.matches('/api')
        assert pool.matches('/api/x/y')
        assert pool.matches('/health')
        assert not pool.matches('/apix')
        assert not pool.matches('/health/x')
        assert not WorkerPool(EchoWorker).matches('/anything')

    def test_not_degraded(self):
        pool = WorkerPool(EchoWorker)
        assert pool.is_degraded is False


# -- request queue -----------------------------------------------------------------------------

class TestRequestQueue:
    @pytest.mark.parametrize('item', [
        {'method': 'GET'}, 'GET /', None, ('POST', '/x'), workers.Response()])
    def test_put_takes_requests_only(self, item):
        pool = WorkerPool(EchoWorker)
        with pytest.raises(TypeError):
            pool.request_queue.put(item)
        assert pool.request_queue.qsize() == 0

    @pytest.mark.parametrize('request_id', [0, 1, 42, -2])
    def test_put_needs_request_id_minus_one(self, request_id):
        pool = WorkerPool(EchoWorker)
        with pytest.raises(ValueError) as info:
            pool.request_queue.put(workers.Request(request_id=request_id))
        assert 'request_id' in str(info.value)
        assert pool.request_queue.qsize() == 0

    def test_put_before_start_is_queued(self):
        pool = WorkerPool(EchoWorker)
        queue = pool.request_queue
        assert queue.empty()
        queue.put(workers.Request(method='POST', path='/api/echo', data={}))
        queue.put(workers.Request(request_id=-1, path='/api/echo'), block=False)
        queue.put_nowait(workers.Request())
        assert queue.qsize() == 3
        assert len(queue) == 3
        assert not queue.empty()
        assert pool.status()['queue_size'] == 3


    def test_put_from_another_thread_is_handed_to_the_loop(self):
        pool = WorkerPool(EchoWorker)
        queue = pool.request_queue
        woken = []
        queue.attach(lambda: woken.append(threading.get_ident()))
        putter = threading.Thread(target=lambda: [queue.put(workers.Request(
            path=f'/api/echo/{index}')) for index in range(3)])
        putter.start()
        putter.join(5)
        assert len(woken) == 3 and threading.get_ident() not in woken
        assert len(pool.scheduler) == 0   # the scheduler is the loop's alone
        assert queue.qsize() == 3         # yet nothing is lost
        queue.put(workers.Request(path='/api/echo/own'))  # the loop's thread
        assert len(pool.scheduler) == 1 and len(woken) == 3
        queue.take_handed()
        assert [item.path for item in pool.scheduler.queue] == [
            '/api/echo/own', '/api/echo/0', '/api/echo/1', '/api/echo/2']
        queue.detach()
        putter = threading.Thread(target=lambda: queue.put(workers.Request()))
        putter.start()
        putter.join(5)
        assert len(pool.scheduler) == 5 and len(woken) == 3


class TestStatus:
    def test_shape_before_start(self):
        pool = WorkerPool(EchoWorker, num_workers=2)
        status = pool.status()
        assert status['name'] == 'EchoWorker'
        assert status['degraded'] is False
        assert status['queue_size'] == 0
        assert isinstance(status['workers'], list)
        for worker in status['workers']:
            assert worker['alive'] is False
            assert {'alive', 'last_seen', 'current_request'} <= set(worker)

    def test_status_is_json_serializable(self):
        import json
        json.dumps(WorkerPool(EchoWorker).status())


def test_send_config_before_start_is_kept():
    pool = WorkerPool(EchoWorker)
    pool.send_config({'rate_limit': 100})
    assert pool.configs == [{'rate_limit': 100}]


def test_send_config_unpicklable():
    pool = WorkerPool(EchoWorker)
    with pytest.raises(TypeError):
        pool.send_config({'f': lambda: None})


@pytest.mark.parametrize('kwargs, message', [
    ({'heartbeat_interval': float('inf')}, 'heartbeat_interval must be finite'),
    ({'worker_memory_limit_mb': float('inf')},
     'worker_memory_limit_mb must be finite'),
    ({'heartbeat_interval': 1e-6}, 'heartbeat_interval must be >= 0.01'),
    ({'heartbeat_interval': 5, 'stuck_timeout': 2},
     r'stuck_timeout \(2\) must be longer than heartbeat_interval \(5\)'),
])
def test_settings_that_would_break_the_workers_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        workers.WorkerPool(EchoWorker, **kwargs)
    pool = workers.WorkerPool(EchoWorker, heartbeat_interval=0.5,
                              stuck_timeout=2)
    with pytest.raises(ValueError, match='must be longer'):
        pool.configure(heartbeat_interval=3)   # against the current one
    assert pool.heartbeat_interval == 0.5


@pytest.mark.parametrize('typo, meant', [
    ('num_worker', 'num_workers'), ('timeuot', 'timeout'),
    ('stuck_timout', 'stuck_timeout'), ('route', 'routes')])
def test_a_keyword_a_letter_off_a_setting_warns(typo, meant):
    with pytest.warns(UserWarning, match=f"{typo!r} is not a setting.*"
                      f"did you mean {meant!r}"):
        pool = WorkerPool(EchoWorker, **{typo: 4})
    assert pool.kwargs == {typo: 4}  # still the worker's, as documented


def test_ordinary_worker_keywords_do_not_warn(recwarn):
    pool = WorkerPool(EchoWorker, db_login='reader', db_timeout=3, items=[],
                      name='shop', status='open')
    assert not recwarn.list
    assert pool.kwargs['db_timeout'] == 3
