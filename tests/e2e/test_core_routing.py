"""Multiple worker pools and the routing order: static files, then sync
handlers, then the first pool whose route matches, then the fallback pool;
Dispatcher.do_check runs only for requests bound for a pool."""
import pytest

from harness import AppServer

STATIC_FILES = {
    'a.txt': b'static file a\n',
    'both.txt': b'static wins over sync\n',
    'sub/index.html': b'<p>index</p>\n',
}


@pytest.fixture(scope='module')
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp('core_static')
    for name, content in STATIC_FILES.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    app = AppServer('core_routing', env={'CORE_STATIC_DIR': str(root)})
    try:
        app.start()
        yield app
    finally:
        app.cleanup()


def pool_of(server, path, method='GET', **kwargs):
    reply = server.request(method, path, **kwargs)
    assert reply.status == 200, (path, reply)
    assert reply.json['path'] == path
    return reply.json['pool']


@pytest.mark.parametrize('path, pool', [
    ('/api/compute/run', 'compute'),
    ('/api/compute/a/b/c', 'compute'),
    ('/api/status', 'status'),
    ('/api/items/7', 'storage'),
    ('/api/item/7', 'storage'),
    ('/api/items/x/y', 'storage'),
    ('/api/other', 'api'),
    ('/api/itemsx', 'api'),          # a prefix is a path segment, not a string
    ('/api/status/sub', 'api'),      # '/api/status' is an exact route
    ('/api/computer', 'api'),
    ('/elsewhere', 'general'),
    ('/deep/er/path', 'general'),
])
def test_first_matching_pool_then_fallback(server, path, pool):
    assert pool_of(server, path) == pool


def test_pool_routes_serve_every_method(server):
    for method in ('POST', 'PUT', 'DELETE', 'PATCH'):
        reply = server.request(method, '/api/item/3', body=b'x')
        assert reply.status == 200
        assert reply.json == {'pool': 'storage', 'path': '/api/item/3',
                              'method': method}


def test_static_file_served_by_dispatcher(server):
    reply = server.get('/static/a.txt')
    assert reply.status == 200
    assert reply.body == STATIC_FILES['a.txt']
    assert reply.headers['content-type'].startswith('text/plain')


def test_static_directory_serves_index(server):
    reply = server.get('/static/sub/')
    assert reply.status == 200
    assert reply.body == STATIC_FILES['sub/index.html']


def test_static_before_sync(server):
    reply = server.get('/static/both.txt')
    assert reply.status == 200
    assert reply.body == STATIC_FILES['both.txt']


def test_sync_when_no_static_file(server):
    reply = server.get('/static/only-sync')
    assert reply.status == 200
    assert reply.json == {'served_by': 'sync'}


def test_sync_before_pool(server):
    reply = server.get('/api/compute/sync')
    assert reply.status == 200
    assert reply.json == {'served_by': 'sync'}


def test_sync_with_path_param(server):
    reply = server.get('/sync/hello')
    assert reply.status == 200
    assert reply.json == {'served_by': 'sync', 'name': 'hello'}


def test_missing_static_file_falls_to_fallback_pool(server):
    assert pool_of(server, '/static/missing.txt') == 'general'


def checks(server):
    reply = server.get('/_checks')
    assert reply.status == 200
    return reply.json['checks']


def test_do_check_runs_only_for_pool_requests(server):
    before = checks(server)
    assert server.get('/static/a.txt').status == 200
    assert server.get('/static/only-sync').status == 200
    assert server.get('/sync/x').status == 200
    assert checks(server) == before
    assert pool_of(server, '/api/other') == 'api'
    assert checks(server) == before + 1
    assert pool_of(server, '/elsewhere') == 'general'
    assert checks(server) == before + 2


def test_reject_request_with_data_and_status(server):
    reply = server.get('/api/other', headers={'X-Block': 'custom'})
    assert reply.status == 429
    assert reply.json == {'error': 'blocked'}
    reply = server.get('/nowhere', headers={'X-Block': 'custom'})
    assert reply.status == 429


def test_reject_request_defaults(server):
    reply = server.get('/api/items/1', headers={'X-Block': 'default'})
    assert reply.status == 403
    assert reply.json == {'error': 'Rejected'}


def test_reject_request_raised_by_a_sync_handler(server):
    # as from do_check() or a worker's handler: data with status, no 500
    reply = server.get('/sync-reject/custom')
    assert reply.status == 401
    assert reply.json == {'error': 'no token'}
    reply = server.get('/sync-reject/default')
    assert reply.status == 403
    assert reply.json == {'error': 'Rejected'}
    # answered before it raised: the answer stands
    reply = server.get('/sync-reject/after')
    assert reply.status == 202
    assert reply.json == {'answered': 'first'}
    assert 'sync_reject' not in server.log()   # no ERROR: it is no failure


def test_blocked_header_ignored_for_static_and_sync(server):
    block = {'X-Block': 'custom'}
    reply = server.get('/static/a.txt', headers=block)
    assert reply.status == 200
    assert reply.body == STATIC_FILES['a.txt']
    reply = server.get('/api/compute/sync', headers=block)
    assert reply.status == 200
    assert reply.json == {'served_by': 'sync'}


def test_after_rejections_pools_still_serve(server):
    for _ in range(3):
        assert server.get('/api/status', headers={'X-Block': 'default'}).status == 403
    assert pool_of(server, '/api/status') == 'status'
