"""uhttp.workers.testing as a user's test suite uses it: TestServer runs the
real dispatcher and workers, its client speaks HTTP and SSE, logs from every
process are captured, start-up failures raise TestServerError, and no
process outlives the server. The pytest fixture comes from the plugin."""

import os
import ssl
import sys
import time

import pytest
import trustme

import uhttp.workers as _workers
from uhttp.workers.testing import TestServer, TestServerError

from harness import pid_alive


class ItemWorker(_workers.Worker):
    def setup(self):
        self.items = {}

    @_workers.api('/api/items', 'GET')
    def list_items(self, request):
        return {'items': list(self.items.values())}

    @_workers.api('/api/item/{id:int}', 'PUT')
    def put_item(self, request):
        self.items[request.path_params['id']] = request.data
        return request.data, 201, {'X-Stored': 'yes'}

    @_workers.api('/api/pid', 'GET')
    def pid(self, request):
        return {'pid': os.getpid()}

    @_workers.api('/api/form', 'POST')
    def form(self, request):
        return {'body': bytes(request.data).decode(),
                'type': request.content_type}

    @_workers.api('/api/ratio', 'GET')
    def ratio(self, request):
        return {'ratio': float('nan')}

    @_workers.api('/api/name', 'GET')
    def name(self, request):
        return {}, 200, {'X-Name': 'café', 'X-Raw': b'caf\xe9'}

    @_workers.api('/api/fail', 'GET')
    def fail(self, request):
        raise RuntimeError('deliberate failure')

    @_workers.api('/api/ticks', 'GET')
    def ticks(self, request):
        request.response_stream()
        for number in range(3):
            request.send_event(data={'n': number}, event='tick',
                               event_id=str(number))
        request.send_event(data='two\nlines')
        request.response_stream_end()
        return _workers.DEFERRED


class App(_workers.Dispatcher):
    @_workers.sync('/health', 'GET')
    def health(self, client, path_params):
        client.respond({'status': 'ok'})


def pools(workers=2):
    return [_workers.WorkerPool(ItemWorker, num_workers=workers,
                                routes=['/api/**'])]


def test_requests_json_headers_and_status():
    with TestServer(App, pools=pools()) as server:
        assert server.url == f'http://127.0.0.1:{server.port}'
        assert server.get('/health').json() == {'status': 'ok'}
        reply = server.put('/api/item/3', json={'name': 'lamp'})
        assert reply.status == 201
        assert reply.headers['x-stored'] == 'yes'
        assert reply.headers['X-STORED'] == 'yes'
        assert 'content-type' in reply.headers
        named = server.get('/api/name').headers  # as WorkerClient shows them
        assert (named['x-name'], named['x-raw']) == ('café', 'caf\xe9')
        assert server.get('/nowhere').status == 404
        assert server.request('POST', '/health').status == 405
        assert server.delete('/api/items').status == 405
        server.assert_no_errors()


def test_a_dict_as_data_is_sent_as_a_form():
    # data={'a': ...} as with `requests`: form-encoded, not a TypeError
    # from deep inside http.client
    with TestServer(App, pools=pools(1)) as server:
        reply = server.post('/api/form', data={'q': 'a b', 'n': 1})
        assert reply.json() == {'body': 'q=a+b&n=1', 'type':
                                'application/x-www-form-urlencoded'}
        reply = server.post('/api/form', data=b'raw',
                            headers={'Content-Type': 'text/plain'})
        assert reply.json() == {'body': 'raw', 'type': 'text/plain'}
        with pytest.raises(TypeError, match='data'):
            server.post('/api/form', data=object())


def test_sse_events_are_parsed():
    with TestServer(App, pools=pools(1)) as server:
        events = list(server.sse('/api/ticks'))
        assert [(e.event, e.data, e.id) for e in events[:3]] == [
            ('tick', '{"n": 0}', '0'), ('tick', '{"n": 1}', '1'),
            ('tick', '{"n": 2}', '2')]
        assert events[3].data == 'two\nlines'
        assert events[3].event == 'message'


def test_a_dispatcher_serving_https_is_spoken_to_over_https():
    # an app whose dispatcher takes its ssl_context is tested as it runs
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    trustme.CA().issue_cert('127.0.0.1').configure_cert(context)
    with TestServer(App, pools=pools(1), ssl_context=context) as server:
        assert server.url == f'https://127.0.0.1:{server.port}'
        assert server.get('/health').json() == {'status': 'ok'}
        assert server.put('/api/item/1', json={'a': 1}).status == 201
        events = list(server.sse('/api/ticks'))
        assert [e.data for e in events] == [
            '{"n": 0}', '{"n": 1}', '{"n": 2}', 'two\nlines']
        server.assert_no_errors()


def test_status_and_logs_from_every_process():
    with TestServer(App, pools=pools(2)) as server:
        status = server.status()
        workers = status['pools'][0]['workers']
        assert len(workers) == 2 and all(w['ready'] for w in workers)
        assert server.get('/api/fail').status == 500
        deadline = time.monotonic() + 5
        while not any('deliberate failure' in r.message for r in server.logs):
            assert time.monotonic() < deadline, server.logs
            time.sleep(0.02)
        record = next(r for r in server.logs if 'deliberate failure' in r.message)
        assert record.name == 'ItemWorker[0]' or record.name == 'ItemWorker[1]'
        assert record.level == _workers.LOG_ERROR
        with pytest.raises(AssertionError, match='deliberate failure'):
            server.assert_no_errors()


def test_no_process_outlives_the_server():
    with TestServer(App, pools=pools(2)) as server:
        dispatcher = server.pid
        pids = [w['pid'] for w in server.status()['pools'][0]['workers']]
        assert all(pid_alive(pid) for pid in pids + [dispatcher])
    deadline = time.monotonic() + 5
    while any(pid_alive(pid) for pid in pids + [dispatcher]):
        assert time.monotonic() < deadline, 'a process outlived TestServer'
        time.sleep(0.02)


def test_bad_configuration_raises_with_the_traceback():
    with pytest.raises(TestServerError) as info:
        TestServer(App, pools=pools(), max_pending=0).start()
    assert 'max_pending' in str(info.value)
    assert 'Traceback' in info.value.traceback


class NeverReady(_workers.Worker):
    def setup(self):
        raise RuntimeError('database unreachable')


def test_a_setup_that_raises_fails_the_start_at_once_with_its_traceback():
    began = time.monotonic()
    with pytest.raises(TestServerError) as info:
        TestServer(App, pools=[_workers.WorkerPool(NeverReady)],
                   startup_timeout=30).start()
    assert time.monotonic() - began < 10      # not the whole startup_timeout
    assert "setup() failed" in str(info.value)
    assert 'database unreachable' in info.value.traceback
    assert 'database unreachable' in info.value.log


class ExitsInSetup(_workers.Worker):
    def setup(self):
        sys.exit(self.kwargs['code'])


@pytest.mark.parametrize('settings', [
    {'code': 3},                                      # restarted, backing off
    {'code': 9, 'permanent_failure_exitcode': 9},     # parked
], ids=['sys-exit', 'parked'])
def test_a_worker_that_ends_before_ready_fails_the_start_at_once(settings):
    began = time.monotonic()
    with pytest.raises(TestServerError) as info:
        TestServer(App, pools=[_workers.WorkerPool(ExitsInSetup, **settings)],
                   startup_timeout=30).start()
    assert time.monotonic() - began < 10      # not the whole startup_timeout
    assert 'ended before it was ready: ExitsInSetup[0]' in str(info.value)
    assert f"exited with code {settings['code']}" in info.value.log


class SlowToStart(_workers.Worker):
    def setup(self):
        time.sleep(30)


def test_workers_that_never_get_ready_time_out_with_the_log():
    with pytest.raises(TestServerError) as info:
        TestServer(App, pools=[_workers.WorkerPool(SlowToStart)],
                   startup_timeout=1.5, shutdown_timeout=0.5).start()
    assert 'timed out waiting for the workers' in str(info.value)


class Leaving(_workers.Dispatcher):
    @_workers.sync('/leave', 'GET')
    def leave(self, client, path_params):
        client.respond({'ok': True})
        self.stop()


def test_a_server_that_ended_on_its_own_says_so():
    with TestServer(Leaving, pools=pools(1)) as server:
        assert server.get('/leave').status == 200
        deadline = time.monotonic() + 10
        while pid_alive(server.pid):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        with pytest.raises(TestServerError, match='not running any more'):
            server.status()
        with pytest.raises(AssertionError, match='ended on its own'):
            server.assert_no_errors()


def test_sse_on_a_route_that_answers_no_stream_is_an_error():
    with TestServer(App, pools=pools(1)) as server:
        with pytest.raises(AssertionError, match='not an event stream'):
            list(server.sse('/api/items'))


def test_the_fixture_starts_and_stops(uhttp_workers_server):
    server = uhttp_workers_server(App, pools=pools(1))
    assert server.get('/api/items').json() == {'items': []}
    assert server.pid is not None


class OwnPools(App):
    """Makes its pools itself, as an app for the command line does."""

    def __init__(self, **kwargs):
        super().__init__(pools=pools(1), **kwargs)


def test_an_app_that_makes_its_own_pools_keeps_them(uhttp_workers_server):
    # pools=[] was always passed: such an app lost its pools (404), or
    # raised "multiple values for keyword argument 'pools'"
    with TestServer(OwnPools) as server:
        assert server.get('/api/items').json() == {'items': []}
    fixture = uhttp_workers_server(OwnPools)
    assert fixture.get('/api/items').status == 200
    with TestServer(App) as server:   # no pools at all: sync routes serve
        assert server.get('/health').json() == {'status': 'ok'}
        assert server.get('/api/items').status == 404


def test_pools_can_be_reused_after_a_server_stopped():
    shared = pools(1)
    for _ in range(2):
        with TestServer(App, pools=shared) as server:
            assert server.get('/api/items').status == 200


class Sleeper(_workers.Worker):
    @_workers.api('/api/sleep', 'GET')
    def sleep(self, request):
        time.sleep(20)
        return {'slept': 20}


def test_an_interrupted_stop_still_kills_every_process(monkeypatch):
    """A second Ctrl-C while stop() waits for the graceful end (a request
    in flight, a long shutdown_timeout): the wait is cut, the process
    group is killed all the same, at once."""
    import threading
    from uhttp.workers import testing as _testing
    server = TestServer(App, pools=[_workers.WorkerPool(
        Sleeper, num_workers=1, routes=['/api/**'])], shutdown_timeout=20)
    server.start()
    pids = [server.pid] + [worker['pid'] for pool in server.status()['pools']
                           for worker in pool['workers']]
    def in_flight():
        try:
            server.get('/api/sleep', timeout=30)
        except Exception:  # pylint: disable=broad-except
            pass            # (the server is killed under it)
    client = threading.Thread(target=in_flight, daemon=True)
    client.start()
    while server.status()['pending'] == 0:
        time.sleep(0.02)
    real_wait = _testing._wait_pid

    def interrupted(pid, timeout):
        monkeypatch.setattr(_testing, '_wait_pid', real_wait)
        raise KeyboardInterrupt()

    monkeypatch.setattr(_testing, '_wait_pid', interrupted)
    with pytest.raises(KeyboardInterrupt):
        server.stop()
    deadline = time.monotonic() + 5
    while any(pid_alive(pid) for pid in pids):
        assert time.monotonic() < deadline, [p for p in pids if pid_alive(p)]
        time.sleep(0.05)
    client.join(10)


def test_a_nan_answer_is_a_500_with_the_reason_not_invalid_json():
    with TestServer(App, pools=pools(1)) as server:
        reply = server.get('/api/ratio')
        assert reply.status == 500 and reply.json() == {
            'error': 'Internal Server Error'}
        deadline = time.monotonic() + 5
        while not any('not JSON compliant' in record.message
                      for record in list(server.logs)):
            assert time.monotonic() < deadline, server.logs
            time.sleep(0.05)
        assert server.get('/api/items').status == 200   # the worker goes on
