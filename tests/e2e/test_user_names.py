"""Handlers may have any name a user picks: named after every attribute the
library's base classes have at run time (found by asking a running server,
so an attribute added later is covered too) and after ordinary words,
@api handlers on a Worker and on an ApiHandler and @sync handlers on a
Dispatcher each answer 200 over HTTP, while the library's own members
(log, kwargs, keep_alive, the pending table, hooks) keep working."""

import json

import pytest

from uhttp.workers import namespace

ORDINARY = ['pid', 'status', 'name', 'items', 'id', 'data', 'request', 'start',
            'stop', 'run', 'handle', 'config', 'close', 'send', 'result',
            'state', 'queue', 'pool', 'port', 'metrics', 'health', 'version',
            'timeout', 'worker_id', 'pool_name', 'address', 'pools', 'server']


@pytest.fixture(scope='module')
def runtime_names():
    """The names the base classes have at run time, from a running server."""
    from harness import AppServer
    server = AppServer('names_probe')
    server.start()
    try:
        worker = server.get('/probe/names')
        assert worker.status == 200, worker
        dispatcher = server.get('/probe/dispatcher')
        assert dispatcher.status == 200, dispatcher
        names = dict(worker.json)
        names.update(dispatcher.json)
        return names
    finally:
        server.cleanup()


@pytest.fixture(scope='module')
def named(runtime_names, tmp_path_factory):
    from harness import AppServer
    given = {kind: sorted(set(found) | set(ORDINARY))
             for kind, found in runtime_names.items()}
    path = tmp_path_factory.mktemp('names') / 'names.json'
    path.write_text(json.dumps(given))
    server = AppServer('names_app', [str(path)])
    server.start()
    server.given = given
    yield server
    server.cleanup()


def free(names, table):
    return [name for name in names if table.what(name) is None]


def test_probe_found_the_library_internals(runtime_names):
    # the instance state lives under one name; the introspection sees it
    assert namespace.STATE in runtime_names['worker']
    assert namespace.STATE in runtime_names['dispatcher']
    # and it sees the documented names too (they are skipped, not missed)
    assert 'keep_alive' in runtime_names['worker']
    assert '_pending' in runtime_names['dispatcher']


def test_worker_handlers_named_after_runtime_attributes(named):
    names = free(named.given['worker'], namespace.WORKER)
    assert 'pid' in names and namespace.STATE in names
    for name in names:
        reply = named.get(f'/w/{name}')
        assert reply.status == 200, (name, reply)
        assert reply.json['handler'] == name
        assert reply.json['kwargs'] == {'colour': 'blue'}
        assert reply.json['accepting'] is True


def test_api_handler_handlers_named_after_runtime_attributes(named):
    names = free(named.given['handler'], namespace.API_HANDLER)
    assert 'pid' in names
    for name in names:
        reply = named.get(f'/h/{name}/7')
        assert reply.status == 200, (name, reply)
        assert reply.json == {'handler': name, 'kind': 'api-handler',
                              'params': {'n': 7}}


def test_sync_handlers_named_after_runtime_attributes(named):
    names = free(named.given['dispatcher'], namespace.DISPATCHER)
    assert 'status' in names and namespace.STATE in names
    for name in names:
        reply = named.get(f'/d/{name}')
        assert reply.status == 200, (name, reply)
        assert reply.json == {'handler': name, 'kind': 'sync', 'pending': 0,
                              'pools': ['NamedWorker']}


def test_worker_logs_still_reach_the_dispatcher(named):
    assert named.get('/w/pid').status == 200
    named.wait_log(r'handler pid', timeout=10)


def test_pooled_requests_and_hooks_still_work(named):
    reply = named.get('/w/status')
    assert reply.status == 200
    assert reply.json['handler'] == 'status'
    # unknown paths still get the pool's 404 and the dispatcher keeps serving
    assert named.get('/w/nope').status == 404
    assert named.get('/d/pid').status == 200
