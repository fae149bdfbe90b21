"""Static mounts as dicts: per-mount headers, authoritative mounts that own
their prefix (404 at once, even for traversal attempts), non-authoritative
mounts that fall through, and on_static_served()."""
import http.client
import re

import pytest

from harness import AppServer

ERROR_LINE = r'(?m)^\S+ \S+ ERROR '


@pytest.fixture(scope='module')
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp('ext_static')
    files = {
        'hard/a.txt': b'hard file\n',
        'hard/sub/index.html': b'<p>hard index</p>\n',
        'soft/b.txt': b'soft file\n',
        'secret.txt': b'outside every mount\n',
    }
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    return root


@pytest.fixture(scope='module')
def server(root):
    app = AppServer('ext_static', env={'EXT_STATIC_ROOT': str(root)})
    try:
        app.start()
        yield app
    finally:
        app.cleanup()


def raw_get(server, target):
    """GET with `target` sent verbatim on the request line."""
    raw = server.raw(f'GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n'
                     'Connection: close\r\n\r\n'.encode(), timeout=5)
    head, sep, body = raw.partition(b'\r\n\r\n')
    assert sep, raw
    lines = head.decode('latin-1').split('\r\n')
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(':')
        headers.setdefault(name.strip().lower(), []).append(value.strip())
    return int(lines[0].split()[1]), headers, body, raw


def served_since(server, mark):
    return server.get('/_served').json['served'][mark:]


def served_mark(server):
    return len(server.get('/_served').json['served'])


def test_mount_headers_added_to_files(server):
    status, headers, body, _ = raw_get(server, '/hard/a.txt')
    assert status == 200
    assert body == b'hard file\n'
    assert headers['x-mount'] == ['hard']
    assert headers['cache-control'] == ['max-age=60']
    status, headers, body, _ = raw_get(server, '/hard/sub/')
    assert status == 200
    assert body == b'<p>hard index</p>\n'
    assert headers['x-mount'] == ['hard']
    status, headers, body, _ = raw_get(server, '/soft/b.txt')
    assert status == 200
    assert body == b'soft file\n'
    assert headers['x-mount'] == ['soft']
    assert 'cache-control' not in headers


def test_authoritative_missing_file_is_404_not_pool(server):
    status, headers, body, _ = raw_get(server, '/hard/missing.txt')
    assert status == 404
    assert b'pool' not in body


def test_authoritative_mount_shadows_sync_handler(server):
    status, _, body, _ = raw_get(server, '/hard/sync-route')
    assert status == 404
    assert b'sync' not in body


def test_non_authoritative_mount_falls_through(server):
    reply = server.get('/soft/missing.txt')
    assert reply.status == 200
    assert reply.json == {'pool': 'soft', 'path': '/soft/missing.txt'}
    reply = server.get('/soft/sync-route')
    assert reply.json == {'sync': 'soft'}


@pytest.mark.parametrize('target', [
    '/hard/../secret.txt',
    '/hard/sub/../../secret.txt',
    '/hard/%2e%2e/secret.txt',
])
def test_authoritative_traversal_is_404(server, target):
    status, _, body, raw = raw_get(server, target)
    assert status == 404
    assert b'outside every mount' not in raw
    assert b'pool' not in body


def test_same_paths_fall_through_when_not_authoritative(app_server, root):
    server = app_server('ext_static', env={'EXT_STATIC_ROOT': str(root),
                                           'EXT_HARD_SOFT': '1'})
    status, headers, body, _ = raw_get(server, '/hard/a.txt')
    assert status == 200 and headers['x-mount'] == ['hard']
    for target in ('/hard/missing.txt', '/hard/../secret.txt'):
        status, _, body, raw = raw_get(server, target)
        assert b'outside every mount' not in raw
        assert status == 200
        assert b'"pool": "hard"' in body
    assert server.get('/hard/sync-route').json == {'sync': 'hard'}
    calls = server.get('/_served').json['served']
    assert [(call['path'], call['status']) for call in calls] == [
        ('/hard/a.txt', 200)]


def test_non_authoritative_traversal_falls_through_to_pool(server):
    status, _, body, raw = raw_get(server, '/soft/../secret.txt')
    assert b'outside every mount' not in raw
    assert status == 200
    assert b'"pool": "soft"' in body


def test_on_static_served_records_200_and_authoritative_404(server):
    mark = served_mark(server)
    assert raw_get(server, '/hard/a.txt')[0] == 200
    assert raw_get(server, '/hard/nothing-here')[0] == 404
    assert raw_get(server, '/hard/../secret.txt')[0] == 404
    assert raw_get(server, '/soft/b.txt')[0] == 200
    assert raw_get(server, '/soft/not-a-file')[0] == 200   # the pool's answer
    calls = served_since(server, mark)
    assert [(call['path'], call['status']) for call in calls] == [
        ('/hard/a.txt', 200),
        ('/hard/nothing-here', 404),
        ('/hard/../secret.txt', 404),
        ('/soft/b.txt', 200),
    ]
    assert calls[0]['file'].endswith('a.txt')
    assert calls[3]['file'].endswith('b.txt')


def test_on_static_served_gets_the_status_sent(server):
    mark = served_mark(server)
    ranged = server.raw(b'GET /hard/a.txt HTTP/1.1\r\nHost: 127.0.0.1\r\n'
                        b'Range: bytes=0-3\r\nConnection: close\r\n\r\n',
                        timeout=5)
    assert ranged.startswith(b'HTTP/1.1 206 ') and ranged.endswith(b'\r\nhard')
    tag = raw_get(server, '/hard/a.txt')[1]['etag'][0]
    again = server.raw(b'GET /hard/a.txt HTTP/1.1\r\nHost: 127.0.0.1\r\n'
                       b'If-None-Match: ' + tag.encode() +
                       b'\r\nConnection: close\r\n\r\n', timeout=5)
    assert again.startswith(b'HTTP/1.1 304 ')
    assert [(call['path'], call['status'])
            for call in served_since(server, mark)] == [
        ('/hard/a.txt', 206), ('/hard/a.txt', 200), ('/hard/a.txt', 304)]


def test_on_static_served_raising_is_logged(server):
    before = len(re.findall(ERROR_LINE, server.log()))
    assert server.get('/_ctl?raise=1').json == {'raise': True}
    try:
        reply = server.get('/hard/a.txt')
        assert reply.status in (200, 500)
        if reply.status == 200:
            assert reply.body == b'hard file\n'
        server.wait_log(ERROR_LINE, count=before + 1)
        assert 'static hook exploded' in server.log()
    finally:
        assert server.get('/_ctl?raise=0').json == {'raise': False}
    reply = server.get('/hard/a.txt')
    assert reply.status == 200 and reply.body == b'hard file\n'


def test_file_that_cannot_be_opened_is_an_error_not_a_miss(root):
    # at the dispatcher's open-file limit a file that is there cannot be
    # opened: that is a 500 with an ERROR line, not a miss (a 404 from an
    # authoritative mount, the pool's answer from another)
    app = AppServer('ext_static', env={'EXT_STATIC_ROOT': str(root)})
    conn = None
    try:
        app.start()
        conn = http.client.HTTPConnection('127.0.0.1', app.port, timeout=10)

        def get(path):
            conn.request('GET', path)
            reply = conn.getresponse()
            return reply.status, reply.read()

        assert get('/_exhaust')[0] == 200
        soft, hard = get('/soft/b.txt'), get('/hard/a.txt')
        assert get('/_restore')[0] == 200
        assert soft[0] == 500 and b'pool' not in soft[1]
        assert hard[0] == 500
        app.wait_log(r'ERROR .*static file \S+b\.txt failed: .*Too many open')
        assert get('/soft/b.txt') == (200, b'soft file\n')
    finally:
        if conn is not None:
            conn.close()
        app.cleanup()
