"""Static files over real HTTP: types, index files, fall-through to sync
handlers and pools, HEAD, conditional GET, several mounts, and no way out of
the root (raw request lines, encodings, symlinks)."""
import email.utils
import http.client
import json
import os
import socket
import time
import uuid

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))


import harness  # noqa: E402  (tests/harness.py)

SECRET = ('TOP-SECRET-' + uuid.uuid4().hex).encode()
PNG = b'\x89PNG\r\n\x1a\n' + bytes(range(256)) * 4
BLOB = os.urandom(300 * 1024)
TEXT_FILES = {
    'hello.txt': b'hello static\n',
    'page.html': b'<!doctype html><title>page</title><p>page</p>\n',
    'style.css': b'body { color: red; }\n',
    'app.js': b'console.log("app");\n',
    'data.json': b'{"answer": 42}',
    'image.svg': b'<svg xmlns="http://www.w3.org/2000/svg"></svg>',
    'index.html': b'<p>www index</p>',
    'shadow.txt': b'the file, not the sync handler',
    'with space.txt': b'a name with a space',
    'caf\u00e9.txt': b'unicode name',
    'deep/x.txt': b'shallow x',
    'sub/index.html': b'<p>sub index</p>',
    'sub/other.txt': b'sub other',
    '%2e%2e/inner.txt': b'a directory literally named %2e%2e',
}


def _write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'wb') as file:
        file.write(data)


@pytest.fixture(scope='module')
def tree(tmp_path_factory):
    base = str(tmp_path_factory.mktemp('static'))
    www = os.path.join(base, 'www')
    deep = os.path.join(base, 'deep')
    for name, data in TEXT_FILES.items():
        _write(os.path.join(www, name), data)
    _write(os.path.join(www, 'image.png'), PNG)
    _write(os.path.join(www, 'blob.bin'), BLOB)
    _write(os.path.join(www, 'changing.txt'), b'version one')
    os.makedirs(os.path.join(www, 'emptydir'))
    _write(os.path.join(deep, 'x.txt'), b'deep x')
    _write(os.path.join(deep, 'index.html'), b'<p>deep index</p>')
    # secrets outside the root
    _write(os.path.join(base, 'secret.txt'), SECRET)
    _write(os.path.join(base, 'secretdir', 'secret.txt'), SECRET)
    _write(os.path.join(base, 'secretdir', 'index.html'), SECRET)
    # a sibling whose name starts with the root's name
    _write(os.path.join(base, 'www-evil', 'secret.txt'), SECRET)
    _write(os.path.join(base, 'www-evil', 'index.html'), SECRET)
    # symlinks inside the root
    os.symlink('hello.txt', os.path.join(www, 'link_in.txt'))
    os.symlink('sub', os.path.join(www, 'link_in_dir'))
    os.symlink('..', os.path.join(www, 'sub', 'link_up'))
    # symlinks leading out of it
    os.symlink('../secret.txt', os.path.join(www, 'link_out_file'))
    os.symlink(os.path.join(base, 'secret.txt'), os.path.join(www, 'link_out_abs'))
    os.symlink(os.path.join(base, 'secretdir'), os.path.join(www, 'link_out_dir'))
    os.symlink('../www-evil', os.path.join(www, 'link_sibling'))
    os.symlink('../..', os.path.join(www, 'sub', 'link_root_up'))
    os.symlink('/etc/passwd', os.path.join(www, 'link_passwd'))
    return {'base': base, 'www': www, 'deep': deep}


@pytest.fixture(scope='module')
def server(tree):
    app = harness.AppServer('static_app', env={
        'STATIC_WWW': tree['www'], 'STATIC_DEEP': tree['deep']})
    app.start()
    yield app
    app.cleanup()


class RawReply:
    def __init__(self, data):
        self.data = data
        head, _, self.body = data.partition(b'\r\n\r\n')
        lines = head.split(b'\r\n')
        try:
            self.status = int(lines[0].split()[1])
        except (IndexError, ValueError):
            self.status = None
        self.headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(b':')
            self.headers[name.strip().lower().decode('latin-1')] = (
                value.strip().decode('latin-1'))

    def __repr__(self):
        return f"<RawReply {self.status} {self.data[:300]!r}>"


def raw_request(server, target, method=b'GET', extra=b'', timeout=5):
    """One request with exactly these bytes as its target."""
    data = (method + b' ' + target + b' HTTP/1.1\r\nHost: 127.0.0.1\r\n'
            b'Connection: close\r\n' + extra + b'\r\n')
    return RawReply(server.raw(data, timeout=timeout))


def raw_oversized(server, data, timeout=5):
    """Send a request the server may refuse before reading all of it: what
    arrived before a reset (possibly nothing)."""
    return RawReply(harness.exchange(server.port, data, timeout))


# -- files, types, index --------------------------------------------------------

@pytest.mark.parametrize('name, expected_type', [
    ('hello.txt', 'text/plain'),
    ('page.html', 'text/html'),
    ('style.css', 'text/css'),
    ('app.js', ('text/javascript', 'application/javascript')),
    ('data.json', 'application/json'),
    ('image.svg', 'image/svg+xml'),
    ('image.png', 'image/png'),
    ('blob.bin', 'application/octet-stream'),
])
def test_file_served_with_type_and_body(server, tree, name, expected_type):
    reply = server.get('/static/' + name)
    assert reply.status == 200, reply
    with open(os.path.join(tree['www'], name), 'rb') as file:
        assert reply.body == file.read()
    media = reply.headers['content-type'].split(';')[0].strip().lower()
    if isinstance(expected_type, tuple):
        assert media in expected_type
    else:
        assert media == expected_type
    assert int(reply.headers['content-length']) == len(reply.body)


def test_large_binary_file_complete(server):
    reply = server.get('/static/blob.bin')
    assert reply.status == 200
    assert int(reply.headers['content-length']) == len(BLOB)
    assert reply.body == BLOB


def test_percent_encoded_names_decoded_once(server):
    assert server.get('/static/with%20space.txt').body == b'a name with a space'
    assert server.get('/files/caf%C3%A9.txt').body == b'unicode name'
    # '%252e%252e' is the literal directory name '%2e%2e', never '..'
    reply = raw_request(server, b'/files/%252e%252e/inner.txt')
    assert reply.status == 200, reply
    assert reply.body == b'a directory literally named %2e%2e'


def test_directory_serves_index(server):
    reply = server.get('/static/sub/')
    assert reply.status == 200
    assert reply.body == b'<p>sub index</p>'
    assert reply.headers['content-type'].startswith('text/html')
    reply = server.get('/static/')
    assert reply.status == 200
    assert reply.body == b'<p>www index</p>'


@pytest.mark.parametrize('target, location', [
    ('/static/sub', '/static/sub/'),
    ('/static/sub?page=2&q=a%20b', '/static/sub/?page=2&q=a%20b'),
    ('/static', '/static/'),
])
def test_directory_without_trailing_slash_is_redirected(server, target,
                                                        location):
    # the index's relative links would resolve one level up: 301 to the
    # slash form, query kept, as web servers do
    for method in ('GET', 'HEAD'):
        conn = server.connection()
        try:
            conn.request(method, target)
            response = conn.getresponse()
            body = response.read()
        finally:
            conn.close()
        assert response.status == 301, (response.status, body)
        assert response.getheader('location') == location
        assert body == b'' and response.getheader('content-length') == '0'
        assert response.getheader('content-type') is None   # no body to type
    assert server.get('/static/sub/index.html').body == b'<p>sub index</p>'


@pytest.fixture(scope='module')
def site(tree):
    app = harness.AppServer('static_app', env={
        'STATIC_WWW': tree['www'], 'STATIC_DEEP': tree['deep'],
        'STATIC_SITE': tree['www']})
    app.start()
    yield app
    app.cleanup()


@pytest.mark.parametrize('target, location', [
    (b'//sub', '/sub/'),
    (b'///sub?page=2', '/sub/?page=2'),
    (b'http://evil.example/sub', '/sub/'),
    (b'/sub', '/sub/'),
])
def test_directory_redirect_stays_on_this_server(site, target, location):
    # '//sub/' in a Location is a browser's http://sub/: a link to
    # http://site//sub would send its reader to another host
    reply = raw_request(site, target)
    assert reply.status == 301, reply
    assert reply.headers['location'] == location


def test_symlink_inside_root_is_served(server):
    assert server.get('/files/link_in.txt').body == b'hello static\n'
    assert server.get('/files/link_in_dir/other.txt').body == b'sub other'
    assert server.get('/files/link_in_dir/').body == b'<p>sub index</p>'
    assert server.get('/files/sub/link_up/hello.txt').body == b'hello static\n'


# -- routing order: static, sync, pools, 404 --------------------------------------

def test_missing_file_falls_through_to_pool(server):
    reply = server.get('/static/missing.txt')
    assert reply.status == 200, reply
    assert reply.json == {'pool': 'EchoWorker', 'path': '/static/missing.txt',
                          'method': 'GET'}


def test_directory_without_index_falls_through(server):
    reply = server.get('/static/emptydir')
    assert reply.status == 200, reply
    assert reply.json['pool'] == 'EchoWorker'
    assert server.get('/files/emptydir/').status == 404


def test_missing_file_falls_through_to_sync(server):
    reply = server.get('/static/from-sync')
    assert reply.status == 200
    assert reply.json == {'sync': 'from-sync', 'method': 'GET'}


def test_static_file_comes_before_sync_handler(server):
    reply = server.get('/static/shadow.txt')
    assert reply.status == 200
    assert reply.body == b'the file, not the sync handler'


def test_missing_file_without_handler_is_404(server):
    assert server.get('/files/missing.txt').status == 404
    assert server.get('/files/sub/missing/deeper.txt').status == 404


def test_do_check_does_not_gate_static_or_sync(server):
    deny = {'X-Deny': '1'}
    reply = server.get('/static/hello.txt', headers=deny)
    assert reply.status == 200 and reply.body == b'hello static\n'
    assert server.get('/static/from-sync', headers=deny).status == 200
    # the same header refuses a request that falls through to the pool
    assert server.get('/static/missing.txt', headers=deny).status == 401


def test_several_mounts_longest_prefix_first(server):
    reply = server.get('/static/deep/x.txt')
    assert reply.status == 200
    assert reply.body == b'deep x'
    assert server.get('/static/deep/').body == b'<p>deep index</p>'
    # the same directory under two prefixes
    assert server.get('/files/hello.txt').body == b'hello static\n'
    assert server.get('/files/deep/x.txt').body == b'shallow x'


# -- HEAD and conditional GET ---------------------------------------------------------

def test_head_gives_headers_and_no_body(server):
    reply = raw_request(server, b'/static/hello.txt', method=b'HEAD')
    assert reply.status == 200, reply
    assert int(reply.headers['content-length']) == len(TEXT_FILES['hello.txt'])
    assert reply.headers['content-type'].startswith('text/plain')
    assert 'etag' in reply.headers and 'last-modified' in reply.headers
    assert reply.body == b''


def test_head_large_file_and_index(server):
    reply = raw_request(server, b'/static/blob.bin', method=b'HEAD')
    assert reply.status == 200
    assert int(reply.headers['content-length']) == len(BLOB)
    assert reply.body == b''
    reply = raw_request(server, b'/static/sub/', method=b'HEAD')
    assert reply.status == 200
    assert int(reply.headers['content-length']) == len(b'<p>sub index</p>')
    assert reply.body == b''


def test_head_then_get_on_one_keep_alive_connection(server):
    conn = server.connection()
    try:
        conn.request('HEAD', '/static/page.html')
        response = conn.getresponse()
        assert response.read() == b''
        assert response.status == 200
        assert int(response.getheader('content-length')) == len(
            TEXT_FILES['page.html'])
        conn.request('GET', '/static/hello.txt')
        response = conn.getresponse()
        assert response.status == 200
        assert response.read() == b'hello static\n'
    finally:
        conn.close()


def test_etag_and_last_modified(server, tree):
    path = os.path.join(tree['www'], 'style.css')
    stamp = int(time.time()) - 5000
    os.utime(path, (stamp, stamp))
    first = server.get('/static/style.css')
    second = server.get('/static/style.css')
    assert first.status == 200
    assert first.headers['etag']
    assert first.headers['etag'] == second.headers['etag']
    modified = email.utils.parsedate_to_datetime(first.headers['last-modified'])
    assert int(modified.timestamp()) == stamp


def test_if_none_match(server):
    tag = server.get('/static/hello.txt').headers['etag']
    reply = server.get('/static/hello.txt', headers={'If-None-Match': tag})
    assert reply.status == 304
    assert reply.body == b''
    assert reply.headers.get('etag') == tag
    listed = server.get('/static/hello.txt',
                        headers={'If-None-Match': f'"nope", {tag}'})
    assert listed.status == 304
    weak = server.get('/static/hello.txt', headers={'If-None-Match': 'W/' + tag})
    assert weak.status == 304
    other = server.get('/static/hello.txt', headers={'If-None-Match': '"nope"'})
    assert other.status == 200
    assert other.body == b'hello static\n'


def test_if_none_match_raw_304_has_no_body(server):
    tag = server.get('/static/page.html').headers['etag']
    reply = raw_request(server, b'/static/page.html',
                        extra=f'If-None-Match: {tag}\r\n'.encode())
    assert reply.status == 304, reply
    assert reply.body == b''


def test_if_modified_since(server):
    first = server.get('/static/page.html')
    stamp = first.headers['last-modified']
    reply = server.get('/static/page.html', headers={'If-Modified-Since': stamp})
    assert reply.status == 304
    assert reply.body == b''
    when = email.utils.parsedate_to_datetime(stamp).timestamp()
    older = email.utils.formatdate(when - 86400, usegmt=True)
    reply = server.get('/static/page.html', headers={'If-Modified-Since': older})
    assert reply.status == 200
    assert reply.body == TEXT_FILES['page.html']


def test_if_none_match_wins_over_if_modified_since(server):
    first = server.get('/static/page.html')
    reply = server.get('/static/page.html', headers={
        'If-None-Match': '"something-else"',
        'If-Modified-Since': first.headers['last-modified']})
    assert reply.status == 200


# -- ranges, and files sent with sendfile() -------------------------------------

def test_ranges_are_advertised_and_served(server):
    full = server.get('/static/blob.bin')
    assert full.headers['accept-ranges'] == 'bytes'
    reply = server.get('/static/blob.bin', headers={'Range': 'bytes=100-1099'})
    assert reply.status == 206
    assert reply.body == BLOB[100:1100]
    assert reply.headers['content-range'] == f'bytes 100-1099/{len(BLOB)}'
    assert int(reply.headers['content-length']) == 1000
    assert reply.headers['content-type'] == 'application/octet-stream'


@pytest.mark.parametrize('wanted, start, end', [
    ('bytes=-500', len(BLOB) - 500, len(BLOB)),     # the last 500 bytes
    (f'bytes={len(BLOB) - 10}-', len(BLOB) - 10, len(BLOB)),
    (f'bytes=0-{len(BLOB) * 2}', 0, len(BLOB)),     # cut at the end
])
def test_suffix_and_open_ranges(server, wanted, start, end):
    reply = server.get('/static/blob.bin', headers={'Range': wanted})
    assert reply.status == 206, wanted
    assert reply.body == BLOB[start:end]


def test_an_unsatisfiable_range_is_416_and_the_server_goes_on(server):
    reply = server.get('/static/blob.bin',
                       headers={'Range': f'bytes={len(BLOB) + 5}-'})
    assert reply.status == 416
    assert reply.headers['content-range'] == f'bytes */{len(BLOB)}'
    assert reply.body == b''
    assert server.get('/static/hello.txt').body == b'hello static\n'


def test_a_range_not_understood_gives_the_whole_file(server):
    for wanted in ('bytes=5-1', 'lines=1-2', 'bytes=0-1,5-6', 'bytes=x-y'):
        reply = server.get('/static/blob.bin', headers={'Range': wanted})
        assert reply.status == 200, wanted
        assert reply.body == BLOB


def test_if_range_with_an_old_tag_gives_the_whole_file(server):
    tag = server.get('/static/blob.bin').headers['etag']
    reply = server.get('/static/blob.bin',
                       headers={'Range': 'bytes=0-9', 'If-Range': tag})
    assert reply.status == 206 and reply.body == BLOB[:10]
    reply = server.get('/static/blob.bin',
                       headers={'Range': 'bytes=0-9', 'If-Range': '"old"'})
    assert reply.status == 200 and reply.body == BLOB


def test_head_of_a_range_has_its_length_and_no_body(server):
    reply = raw_request(server, b'/static/blob.bin', method=b'HEAD',
                        extra=b'Range: bytes=10-19\r\n')
    assert reply.status == 206, reply
    assert reply.headers['content-length'] == '10'
    assert reply.body == b''


def test_files_in_turn_on_one_keep_alive_connection(server):
    """A file sent with sendfile(), then more answers on the connection."""
    connection = http.client.HTTPConnection('127.0.0.1', server.port,
                                            timeout=10)
    try:
        for path, body in (('/static/blob.bin', BLOB),
                           ('/static/hello.txt', b'hello static\n'),
                           ('/static/blob.bin', BLOB)):
            connection.request('GET', path)
            reply = connection.getresponse()
            assert reply.status == 200
            assert reply.read() == body
        connection.request('GET', '/static/blob.bin',
                           headers={'Range': 'bytes=1-2'})
        reply = connection.getresponse()
        assert reply.status == 206 and reply.read() == BLOB[1:3]
    finally:
        connection.close()


def test_a_large_file_to_a_slow_reader_leaves_others_served(server, tree):
    """A file larger than the socket buffers, read slowly: the dispatcher
    sends it as the client takes it and answers others meanwhile."""
    big = os.urandom(16 * 1024 * 1024)
    _write(os.path.join(tree['www'], 'big.bin'), big)
    slow = socket.create_connection(('127.0.0.1', server.port), timeout=10)
    try:
        slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        slow.sendall(b'GET /static/big.bin HTTP/1.1\r\nHost: x\r\n\r\n')
        first = slow.recv(65536)
        assert first.startswith(b'HTTP/1.1 200 ')
        for _ in range(3):  # the dispatcher is not stuck on the slow client
            assert server.get('/static/hello.txt').status == 200
        data = first
        head_end = data.index(b'\r\n\r\n') + 4
        while len(data) - head_end < len(big):
            chunk = slow.recv(1024 * 1024)
            assert chunk, 'the file was cut short'
            data += chunk
        assert data[head_end:] == big
    finally:
        slow.close()
        os.unlink(os.path.join(tree['www'], 'big.bin'))


def test_conditional_get_after_file_changed(server, tree):
    path = os.path.join(tree['www'], 'changing.txt')
    old_stamp = int(time.time()) - 3000
    os.utime(path, (old_stamp, old_stamp))
    first = server.get('/static/changing.txt')
    assert first.body == b'version one'
    tag, modified = first.headers['etag'], first.headers['last-modified']
    assert server.get('/static/changing.txt',
                      headers={'If-None-Match': tag}).status == 304
    with open(path, 'wb') as file:
        file.write(b'version two, longer')
    os.utime(path, (old_stamp + 1000, old_stamp + 1000))
    reply = server.get('/static/changing.txt', headers={'If-None-Match': tag})
    assert reply.status == 200
    assert reply.body == b'version two, longer'
    assert reply.headers['etag'] != tag
    reply = server.get('/static/changing.txt',
                       headers={'If-Modified-Since': modified})
    assert reply.status == 200
    assert reply.body == b'version two, longer'


# -- never outside the root ----------------------------------------------------------

ATTACKS = [
    b'../secret.txt',
    b'../../secret.txt',
    b'./../secret.txt',
    b'sub/../../secret.txt',
    b'%2e%2e/secret.txt',
    b'%2E%2E/secret.txt',
    b'%2e./secret.txt',
    b'.%2e/secret.txt',
    b'%2e%2e%2fsecret.txt',
    b'%2E%2E%2Fsecret.txt',
    b'sub/%2e%2e/%2e%2e/secret.txt',
    b'%252e%252e/secret.txt',
    b'%252e%252e%252fsecret.txt',
    b'..%2fsecret.txt',
    b'..%2Fsecret.txt',
    b'%2f..%2fsecret.txt',
    b'%2f%2e%2e%2fsecret.txt',
    b'..\\secret.txt',
    b'..%5csecret.txt',
    b'..%5Csecret.txt',
    b'%5c..%5csecret.txt',
    b'sub\\..\\..\\secret.txt',
    b'..%00/secret.txt',
    b'%00../secret.txt',
    b'secret.txt%00.html',
    b'../secret.txt%00',
    b'..%c0%afsecret.txt',
    b'..;/secret.txt',
    b'secretdir/../../secret.txt',
    b'../secretdir/',
    b'../secretdir/index.html',
    b'../www-evil/secret.txt',
    b'..%2f..%2f..%2f..%2f..%2f..%2f..%2f..%2fetc%2fpasswd',
    b'../../../../../../../../etc/passwd',
]


def _assert_no_leak(reply):
    assert SECRET not in reply.data, reply
    assert b'root:x:0:0' not in reply.data, reply


@pytest.mark.parametrize('attack', ATTACKS, ids=lambda a: a.decode('latin-1'))
def test_traversal_under_mount_without_fallthrough(server, attack):
    reply = raw_request(server, b'/files/' + attack)
    _assert_no_leak(reply)
    assert reply.status in (400, 403, 404), reply


@pytest.mark.parametrize('attack', ATTACKS, ids=lambda a: a.decode('latin-1'))
def test_traversal_under_mount_with_fallthrough(server, attack):
    reply = raw_request(server, b'/static/' + attack)
    _assert_no_leak(reply)
    assert reply.status is not None, reply


def test_traversal_with_absolute_paths(server, tree):
    secret = os.path.join(tree['base'], 'secret.txt').encode()
    targets = [
        b'//etc/passwd',
        b'/files//etc/passwd',
        b'/files/' + secret,
        b'/files/' + secret.replace(b'/', b'%2f'),
        b'/files/%2f' + secret.lstrip(b'/'),
        b'/static/' + secret,
        b'/../secret.txt',
        b'/%2e%2e/secret.txt',
        b'http://127.0.0.1/files/../secret.txt',
        b'/files/..',
        b'/files/../',
        b'/files/%2e%2e',
    ]
    for target in targets:
        reply = raw_request(server, target)
        _assert_no_leak(reply)
        assert reply.status in (400, 403, 404), (target, reply)


def test_very_long_paths(server):
    targets = [
        b'/files/' + b'../' * 3000 + b'secret.txt',
        b'/files/' + b'%2e%2e/' * 1500 + b'secret.txt',
        b'/files/' + b'a' * 5000 + b'/../../secret.txt',
        b'/files/' + b'sub/' * 2000 + b'../' * 2001 + b'secret.txt',
        b'/static/' + b'../' * 3000 + b'secret.txt',
    ]
    for target in targets:
        reply = raw_request(server, target)
        _assert_no_leak(reply)
        assert reply.status in (400, 404, 414, 431), (target[:60], reply)
    # beyond the header limit: refused (the server may reset the connection
    # while the client still sends), never served
    for target in (b'/files/' + b'../' * 20000 + b'secret.txt',
                   b'/files/' + b'%2e%2e/' * 10000 + b'secret.txt'):
        reply = raw_oversized(server, b'GET ' + target + b' HTTP/1.1\r\n'
                              b'Host: 127.0.0.1\r\nConnection: close\r\n\r\n')
        _assert_no_leak(reply)
        assert reply.status in (None, 400, 414, 431), reply
    assert server.get('/files/hello.txt').body == b'hello static\n'


@pytest.mark.parametrize('target', [
    b'/files/link_out_file',
    b'/files/link_out_abs',
    b'/files/link_out_dir/secret.txt',
    b'/files/link_out_dir/',
    b'/files/link_out_dir',
    b'/files/link_out_dir/index.html',
    b'/files/link_sibling/secret.txt',
    b'/files/link_sibling/',
    b'/files/link_passwd',
    b'/files/sub/link_root_up/secret.txt',
    b'/files/sub/link_root_up/secretdir/',
    b'/files/link_in_dir/link_root_up/secret.txt',
])
def test_symlink_out_of_root_is_not_followed(server, target):
    reply = raw_request(server, target)
    _assert_no_leak(reply)
    assert reply.status == 404, reply
    head = raw_request(server, target, method=b'HEAD')
    _assert_no_leak(head)
    assert head.status == 404, head


@pytest.mark.parametrize('target', [
    b'/static/link_out_file',
    b'/static/link_out_dir/secret.txt',
    b'/static/link_out_dir/',
    b'/static/link_sibling/secret.txt',
    b'/static/link_passwd',
])
def test_symlink_out_of_root_falls_through_without_leak(server, target):
    reply = raw_request(server, target)
    _assert_no_leak(reply)
    if reply.status == 200:
        # only the pool may answer: it echoes, it never reads files
        assert json.loads(reply.body)['pool'] == 'EchoWorker'


def test_still_serving_after_attacks(server):
    for _ in range(3):
        reply = server.get('/static/hello.txt')
        assert reply.status == 200 and reply.body == b'hello static\n'
    assert server.get('/static/missing.txt').json['pool'] == 'EchoWorker'
    status = server.status()
    assert all(worker['alive'] for worker in status['pools'][0]['workers'])
    assert status['pending'] == 0
    assert server.proc.poll() is None


def test_http_client_get_directly(server):
    """A plain client on a keep-alive connection: several files in a row."""
    conn = http.client.HTTPConnection('127.0.0.1', server.port, timeout=10)
    try:
        for name in ('hello.txt', 'style.css', 'image.png', 'hello.txt'):
            conn.request('GET', '/static/' + name)
            response = conn.getresponse()
            body = response.read()
            assert response.status == 200
            expected = PNG if name == 'image.png' else TEXT_FILES[name]
            assert body == expected
    finally:
        conn.close()


@pytest.mark.parametrize('method', [b'POST', b'DELETE', b'PUT'])
def test_other_methods_on_a_static_file_are_405(server, method):
    # a file there, served under GET and HEAD only; no pool or sync
    # handler under /files/
    reply = raw_request(server, b'/files/hello.txt', method=method,
                        extra=b'Content-Length: 0\r\n')
    assert reply.status == 405, reply
    assert reply.headers['allow'] == 'GET, HEAD'
    reply = raw_request(server, b'/files/no-such-file.txt', method=method,
                        extra=b'Content-Length: 0\r\n')
    assert reply.status == 404, reply
    # where a pool serves the path, it is the pool's
    reply = raw_request(server, b'/static/hello.txt', method=method,
                        extra=b'Content-Length: 0\r\n')
    assert reply.status == 200 and b'EchoWorker' in reply.body, reply
