"""FileResponse end to end: a worker answers with a file (often deleting
its path at once), the dispatcher sends it from the descriptor the worker
passed: hashes, ranges, conditional GET, HEAD, downloads, many at once, a
client leaving mid-download, and a worker dying after it answered."""
import hashlib
import http.client
import os
import socket
import threading

import pytest

from harness import AppServer, exchange

SIZES = [0, 1, 64 * 1024, 5 * 1024 * 1024]


def pattern(size):
    block = bytes(range(251)) * (65536 // 251 + 1)
    out = bytearray()
    while len(out) < size:
        out += block
    return bytes(out[:size])


def digest(data):
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(scope='module')
def fixed(tmp_path_factory):
    path = tmp_path_factory.mktemp('files') / 'fixed.bin'
    path.write_bytes(pattern(1000))
    return path


@pytest.fixture(scope='module')
def server(fixed):
    app = AppServer('ext_files', env={'EXT_FILES_FIXED': str(fixed)})
    try:
        app.start()
        yield app
    finally:
        app.cleanup()


def fd_count(pid):
    return len(os.listdir(f'/proc/{pid}/fd'))


def split(raw):
    head, sep, body = raw.partition(b'\r\n\r\n')
    assert sep, raw[:300]
    lines = head.decode('latin-1').split('\r\n')
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(':')
        headers[name.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), headers, body


@pytest.mark.parametrize('size', SIZES)
def test_file_deleted_at_once_arrives_whole(server, size):
    reply = server.get(f'/api/file/{size}', timeout=30)
    assert reply.status == 200
    assert reply.headers['content-length'] == str(size)
    assert reply.headers['x-size'] == str(size)
    assert reply.headers['content-type'] == 'application/octet-stream'
    assert digest(reply.body) == digest(pattern(size))


def test_returned_file_object_and_deferred_answer(server):
    reply = server.get('/api/file-object/70000')
    assert reply.status == 200
    assert reply.headers['content-type'] == 'application/x-test'
    assert reply.body == pattern(70000)
    reply = server.get('/api/file/12345?deferred=1')
    assert reply.status == 200 and reply.body == pattern(12345)


@pytest.mark.parametrize('size', [0, 1000, 300 * 1024, 3 * 1024 * 1024])
def test_the_request_body_file_sent_back(server, size):
    # small bodies come as a BytesIO (a memory file then), spooled ones as
    # their spool file: either way the same bytes, and ranges work
    body = pattern(size)
    reply = server.request('POST', '/api/body-back', body=body, timeout=30)
    assert reply.status == 200, reply
    assert reply.headers['content-type'] == 'application/x-echo'
    assert reply.headers['content-length'] == str(size)
    assert digest(reply.body) == digest(body)


def test_a_bytesio_is_sent_like_a_file(server):
    reply = server.get('/api/report')
    assert reply.status == 200
    assert reply.body == b'name,items\nbolts,12\n'
    assert reply.headers['content-type'].startswith('text/csv')
    assert 'filename="report.csv"' in reply.headers['content-disposition']
    reply = server.get('/api/report', headers={'Range': 'bytes=0-3'})
    assert reply.status == 206 and reply.body == b'name'


def test_content_type_from_the_name(server):
    reply = server.get('/api/typed')
    assert reply.status == 200
    assert reply.headers['content-type'] == 'text/plain; charset=UTF-8'
    assert reply.body == b'plain text\n'


def test_download_name_sets_content_disposition(server):
    reply = server.get('/api/file/10?download=report.csv')
    assert reply.headers['content-disposition'] == (
        'attachment; filename="report.csv"')
    reply = server.get('/api/file/10?download=r%C3%A9sum%C3%A9.pdf')
    assert reply.headers['content-disposition'] == (
        'attachment; filename="r_sum_.pdf"; '
        "filename*=UTF-8''r%C3%A9sum%C3%A9.pdf")
    assert reply.body == pattern(10)


@pytest.mark.parametrize('spec,first,last', [
    ('bytes=0-9', 0, 9),
    ('bytes=100-', 100, 999),
    ('bytes=-10', 990, 999),
    ('bytes=-5000', 0, 999),
    ('bytes=995-2000', 995, 999),
])
def test_single_ranges_are_206(server, spec, first, last):
    reply = server.get('/api/fixed', headers={'Range': spec})
    assert reply.status == 206
    assert reply.headers['content-range'] == f'bytes {first}-{last}/1000'
    assert reply.headers['content-length'] == str(last - first + 1)
    assert reply.body == pattern(1000)[first:last + 1]


@pytest.mark.parametrize('spec', ['bytes=1000-', 'bytes=5000-6000', 'bytes=-0'])
def test_unsatisfiable_range_is_416(server, spec):
    reply = server.get('/api/fixed', headers={'Range': spec})
    assert reply.status == 416
    assert reply.headers['content-range'] == 'bytes */1000'
    assert reply.body == b''


def test_range_on_a_deleted_temp_file(server):
    size = 5 * 1024 * 1024
    reply = server.get(f'/api/file/{size}', headers={'Range': 'bytes=-65536'})
    assert reply.status == 206
    assert reply.body == pattern(size)[-65536:]


def test_several_ranges_or_stale_if_range_get_the_whole_file(server):
    reply = server.get('/api/fixed', headers={'Range': 'bytes=0-1,5-6'})
    assert reply.status == 200 and reply.body == pattern(1000)
    reply = server.get('/api/fixed', headers={'Range': 'bytes=0-1',
                                              'If-Range': '"other"'})
    assert reply.status == 200 and reply.body == pattern(1000)
    tag = server.get('/api/fixed').headers['etag']
    reply = server.get('/api/fixed', headers={'Range': 'bytes=0-1',
                                              'If-Range': tag})
    assert reply.status == 206 and reply.body == pattern(1000)[:2]


def test_conditional_get_is_304(server):
    first = server.get('/api/fixed')
    assert first.status == 200
    tag, modified = first.headers['etag'], first.headers['last-modified']
    reply = server.get('/api/fixed', headers={'If-None-Match': tag})
    assert reply.status == 304 and reply.body == b''
    assert reply.headers['etag'] == tag
    # as a static file's 304: no representation metadata
    assert 'content-type' not in reply.headers
    assert 'content-disposition' not in reply.headers
    reply = server.get('/api/fixed', headers={'If-None-Match': '"nope"'})
    assert reply.status == 200 and reply.body == pattern(1000)
    reply = server.get('/api/fixed', headers={'If-Modified-Since': modified})
    assert reply.status == 304


def test_the_handlers_own_validators_are_the_ones_checked(server):
    first = server.get('/api/versioned')
    assert first.status == 200
    assert (first.headers['etag'], first.headers['last-modified']) == (
        '"v1"', 'Sun, 01 Nov 2026 10:00:00 GMT')
    assert server.get('/api/versioned', headers={
        'If-None-Match': '"v1"'}).status == 304
    assert server.get('/api/versioned', headers={
        'If-None-Match': '"v0"'}).status == 200
    assert server.get('/api/versioned', headers={
        'If-Modified-Since': 'Mon, 02 Nov 2026 10:00:00 GMT'}).status == 304
    assert server.get('/api/versioned', headers={
        'If-Modified-Since': 'Sat, 31 Oct 2026 10:00:00 GMT'}).status == 200
    resumed = server.get('/api/versioned', headers={
        'Range': 'bytes=0-1', 'If-Range': '"v1"'})
    assert resumed.status == 206 and resumed.body == pattern(1000)[:2]
    stale = server.get('/api/versioned', headers={
        'Range': 'bytes=0-1', 'If-Range': '"v0"'})
    assert stale.status == 200 and stale.body == pattern(1000)


def test_a_weak_etag_matches_weakly_and_never_vouches_for_a_range(server):
    first = server.get('/api/weak')
    assert first.status == 200 and first.headers['etag'] == 'W/"v1"'
    for sent in ('W/"v1"', '"v1"', '"v0", W/"v1"'):   # weak comparison
        assert server.get('/api/weak', headers={
            'If-None-Match': sent}).status == 304, sent
    assert server.get('/api/weak', headers={
        'If-None-Match': 'W/"v0"'}).status == 200
    # If-Range takes a strong match only: the whole file, not a range
    # that might be stitched onto another version's bytes
    for sent in ('W/"v1"', '"v1"'):
        reply = server.get('/api/weak', headers={'Range': 'bytes=0-1',
                                                 'If-Range': sent})
        assert reply.status == 200 and reply.body == pattern(1000), sent
    tag = server.get('/api/fixed').headers['etag']
    reply = server.get('/api/fixed', headers={'Range': 'bytes=0-1',
                                              'If-Range': 'W/' + tag})
    assert reply.status == 200 and reply.body == pattern(1000)


def test_range_headers_of_a_file_answer_are_the_servers_own(server):
    # the handler's Accept-Ranges and Content-Range are not sent besides
    # (and against) the server's
    raw = exchange(server.port, b'GET /api/weak HTTP/1.1\r\nHost: x\r\n'
                   b'Range: bytes=5-9\r\nConnection: close\r\n\r\n',
                   timeout=10)
    head = raw.partition(b'\r\n\r\n')[0].decode('latin-1').lower()
    assert head.startswith('http/1.1 206')
    assert head.count('accept-ranges:') == 1 and 'accept-ranges: bytes' in head
    assert head.count('content-range:') == 1
    assert 'content-range: bytes 5-9/1000' in head
    status, headers, body = split(raw)
    assert status == 206 and body == pattern(1000)[5:10]


def test_head_has_the_length_and_no_body(server):
    raw = exchange(server.port, b'HEAD /api/fixed HTTP/1.1\r\nHost: x\r\n'
                   b'Connection: close\r\n\r\n', timeout=10)
    status, headers, body = split(raw)
    assert status == 200
    assert headers['content-length'] == '1000'
    assert body == b''
    raw = exchange(server.port, b'HEAD /api/fixed HTTP/1.1\r\nHost: x\r\n'
                   b'Range: bytes=0-9\r\nConnection: close\r\n\r\n', timeout=10)
    status, headers, body = split(raw)
    assert status == 206 and headers['content-length'] == '10' and body == b''


def test_keep_alive_connection_serves_files_then_json(server):
    conn = server.connection(timeout=20)
    try:
        for size in (10, 300000, 0, 1):
            conn.request('GET', f'/api/file/{size}')
            response = conn.getresponse()
            assert response.status == 200
            assert response.read() == pattern(size)
        conn.request('GET', '/api/pid')
        response = conn.getresponse()
        assert response.status == 200 and 'pid' in response.read().decode()
    finally:
        conn.close()


def test_a_file_whose_size_says_zero_is_sent_as_it_reads(server):
    reply = server.get('/api/status-file')
    assert reply.status == 200
    assert reply.body.startswith(b'Name:\t') and b'\nPid:\t' in reply.body
    assert int(reply.headers['content-length']) == len(reply.body)
    empty = server.get('/api/file/0')  # a really empty file stays empty
    assert (empty.status, empty.body) == (200, b'')



@pytest.mark.skipif(not os.path.exists('/sys/class/net/lo/mtu'),
                    reason='no sysfs')
def test_a_sysfs_file_is_sent_as_it_reads(server):
    # its size says 4096 bytes; a Content-Length of that and a body of a
    # few bytes would leave the client waiting, then cut
    with open('/sys/class/net/lo/mtu', 'rb') as file:
        expected = file.read()
    assert os.stat('/sys/class/net/lo/mtu').st_size != len(expected)
    reply = server.get('/api/sys-file')
    assert reply.status == 200 and reply.body == expected
    assert reply.headers['content-length'] == str(len(expected))


def test_missing_file_is_404_and_directory_500_with_a_log_line(server):
    reply = server.get('/api/missing')
    assert reply.status == 404
    server.wait_log(r"ERROR .*uw-no-such-file' does not exist; answering 404")
    reply = server.get('/api/directory')
    assert reply.status == 500
    server.wait_log(r"ERROR .*is a directory; answering 500")


def test_a_file_open_for_writing_only_is_500_with_a_log_line(server):
    # not a 200 head whose body never comes
    reply = server.get('/api/write-only')
    assert reply.status == 500
    server.wait_log(r"ERROR .*is open for writing only; answering 500")
    assert server.get('/api/pid').status == 200


def test_many_concurrent_downloads(server):
    size = 1024 * 1024 + 7
    expected = digest(pattern(size))
    results = []
    errors = []

    def fetch():
        try:
            for _ in range(3):
                reply = server.get(f'/api/file/{size}', timeout=60)
                results.append((reply.status, digest(reply.body)))
        except Exception as err:  # pylint: disable=broad-except
            errors.append(err)

    threads = [threading.Thread(target=fetch) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads)
    assert not errors
    assert results == [(200, expected)] * 48


def settled_fd_count(server):
    """The dispatcher's fd count with no client connected."""
    raw = exchange(server.port, b'GET /api/file/10 HTTP/1.1\r\nHost: x\r\n'
                   b'Connection: close\r\n\r\n', timeout=10)
    assert split(raw)[0] == 200
    return fd_count(server.pid)


def test_client_leaving_mid_download_releases_the_descriptor(app_server, fixed):
    server = app_server('ext_files', env={'EXT_FILES_FIXED': str(fixed)})
    baseline = settled_fd_count(server)
    size = 64 * 1024 * 1024
    for _ in range(3):
        sock = socket.create_connection(('127.0.0.1', server.port), timeout=30)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall(f'GET /api/file/{size} HTTP/1.1\r\nHost: x\r\n\r\n'.encode())
        got = b''
        while b'\r\n\r\n' not in got:
            chunk = sock.recv(4096)
            assert chunk
            got += chunk
        assert got.startswith(b'HTTP/1.1 200')
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                        b'\x01\x00\x00\x00\x00\x00\x00\x00')
        sock.close()  # a reset, the file far from sent
    server.wait_until(lambda: fd_count(server.pid) <= baseline, timeout=20,
                      what=f'fd count back to {baseline}')
    assert server.get('/api/file/100').body == pattern(100)


def test_worker_exiting_after_answering_the_download_completes(app_server,
                                                              fixed):
    server = app_server('ext_files', env={'EXT_FILES_FIXED': str(fixed)})
    baseline = settled_fd_count(server)
    size = 5 * 1024 * 1024
    workers = set(server.children())
    reply = server.get(f'/api/exit/{size}', timeout=30)
    assert reply.status == 200
    assert digest(reply.body) == digest(pattern(size))
    server.wait_until(lambda: len(set(server.children()) - workers) == 1 and (
        len(server.children()) == 2), timeout=30, what='the worker restarted')
    server.wait_until(lambda: fd_count(server.pid) <= baseline, timeout=20,
                      what=f'fd count back to {baseline}')
    reply = server.get(f'/api/file/{size}', timeout=30)
    assert digest(reply.body) == digest(pattern(size))


def test_file_over_https(app_server, fixed, tmp_path):
    trustme = pytest.importorskip('trustme')
    import ssl  # pylint: disable=import-outside-toplevel
    ca = trustme.CA()
    cert = ca.issue_cert('127.0.0.1')
    cert_path, key_path = tmp_path / 'server.pem', tmp_path / 'server.key'
    cert.cert_chain_pems[0].write_to_path(str(cert_path))
    for extra in cert.cert_chain_pems[1:]:
        extra.write_to_path(str(cert_path), append=True)
    cert.private_key_pem.write_to_path(str(key_path))
    server = app_server('ext_files', env={
        'EXT_FILES_FIXED': str(fixed), 'EXT_FILES_CERT': str(cert_path),
        'EXT_FILES_KEY': str(key_path)})
    context = ssl.create_default_context()
    ca.configure_trust(context)
    conn = http.client.HTTPSConnection('127.0.0.1', server.port, timeout=30,
                                       context=context)
    try:
        size = 5 * 1024 * 1024 + 3
        conn.request('GET', f'/api/file/{size}')
        response = conn.getresponse()
        assert response.status == 200
        assert digest(response.read()) == digest(pattern(size))
        conn.request('GET', '/api/fixed', headers={'Range': 'bytes=-100'})
        response = conn.getresponse()
        assert response.status == 206
        assert response.read() == pattern(1000)[-100:]
        # a static file over TLS: read in chunks, ranges too
        static = '/static/' + os.path.basename(fixed)
        conn.request('GET', static)
        response = conn.getresponse()
        assert response.status == 200
        assert response.read() == pattern(1000)
        conn.request('GET', static, headers={'Range': 'bytes=10-19'})
        response = conn.getresponse()
        assert response.status == 206
        assert response.read() == pattern(1000)[10:20]
        big = os.urandom(3 * 1024 * 1024 + 7)  # many chunks through TLS
        (fixed.parent / 'static-big.bin').write_bytes(big)
        conn.request('GET', '/static/static-big.bin')
        response = conn.getresponse()
        assert response.status == 200
        assert response.read() == big
    finally:
        conn.close()


def open_files(pid):
    names = []
    for fd in os.listdir(f'/proc/{pid}/fd'):
        try:
            names.append(os.readlink(f'/proc/{pid}/fd/{fd}'))
        except OSError:
            pass
    return [name for name in names if 'uw-file-' in name]


def test_worker_forked_during_a_download_does_not_hold_the_file(app_server,
                                                                fixed):
    server = app_server('ext_files', env={'EXT_FILES_FIXED': str(fixed)})
    size = 64 * 1024 * 1024
    sock = socket.create_connection(('127.0.0.1', server.port), timeout=30)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall(f'GET /api/file/{size} HTTP/1.1\r\nHost: x\r\n\r\n'.encode())
        assert sock.recv(4096).startswith(b'HTTP/1.1 200')
        server.wait_until(lambda: open_files(server.pid), timeout=10,
                          what='the dispatcher holding the file')
        workers = set(server.children())
        os.kill(sorted(workers)[0], 9)
        server.wait_until(lambda: len(server.children()) == 2 and (
            set(server.children()) - workers), timeout=30,
            what='a new worker')
        fresh = (set(server.children()) - workers).pop()
        assert open_files(fresh) == []
        assert open_files(server.pid)  # still sending
    finally:
        sock.close()
    server.wait_until(lambda: not open_files(server.pid), timeout=20,
                      what='the file closed once the client left')


def test_a_sync_handler_answers_with_a_file(server, fixed):
    """client.respond(FileResponse(...)) in the dispatcher: sent as a
    worker's is, ranges and conditional GET included."""
    reply = server.get('/sync/report')
    assert reply.status == 200 and reply.body == pattern(1000)
    assert reply.headers['x-from'] == 'sync'
    assert reply.headers['content-disposition'] == (
        'attachment; filename="report _.bin"; '
        "filename*=UTF-8''report%20%C3%A9.bin")
    tag = reply.headers['etag']
    assert server.get('/sync/report', headers={
        'If-None-Match': tag}).status == 304
    ranged = server.get('/sync/report', headers={'Range': 'bytes=10-19'})
    assert ranged.status == 206 and ranged.body == pattern(1000)[10:20]
    assert ranged.headers['content-range'] == 'bytes 10-19/1000'
    head = server.request('HEAD', '/sync/report')
    assert head.status == 200 and head.body == b''
    assert head.headers['content-length'] == '1000'
    big = server.get('/sync/file/3000000')   # its path deleted at once
    assert big.status == 200 and digest(big.body) == digest(pattern(3000000))
    memory = server.get('/sync/memory')
    assert (memory.status, memory.body) == (201, b'name,items\n')
    assert memory.headers['content-type'].startswith('text/csv')


def test_a_sync_handlers_file_that_cannot_be_sent_is_an_error(server):
    reply = server.get('/sync/missing')
    assert reply.status == 404 and reply.json == {'error': 'Not Found'}
    assert server.get('/sync/directory').status == 500
    server.wait_log(r"FileResponse for GET /sync/missing: "
                    r"'/nonexistent/items.bin' cannot be sent", timeout=5)
    server.wait_log(r"FileResponse for GET /sync/directory: .* is a "
                    r"directory.*answering 500", timeout=5)
    assert server.get('/api/pid').status == 200
