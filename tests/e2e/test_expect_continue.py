"""Expect: 100-continue, answered from the head when the body cannot
change the answer: a path no route serves (404), a sync route's path
asked with another method (405), a pool that refuses now (503). Everything else gets 100
Continue first, and the check hooks see the whole request."""
import http.client
import os
import signal
import socket
import threading
import time

import uhttp.workers as _workers
from uhttp.workers.testing import TestServer


class UploadWorker(_workers.Worker):
    @_workers.api('/api/upload', 'POST')
    def upload(self, request):
        return {'size': len(request.body_file.read())}

    @_workers.api('/api/items', 'GET')
    def items(self, request):
        return {'items': []}


class SlowWorker(_workers.Worker):
    @_workers.api('/slow/{seconds}', 'GET')
    def wait(self, request):
        time.sleep(float(request.path_params['seconds']))
        return {'waited': True}


class UploadDispatcher(_workers.Dispatcher):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.checked = []

    def do_check(self, client):
        self.checked.append(len(client.body or b''))
        if client.headers.get('x-api-key') != 'k':
            return {'error': 'unauthorized'}, 401
        return None

    @_workers.sync('/sync/upload', 'POST')
    def sync_upload(self, client, path_params):
        client.respond({'size': len(client.body)})

    @_workers.sync('/checked', 'GET')
    def checked_sizes(self, client, path_params):
        client.respond({'checked': self.checked})


def ask(port, path, length=1 << 30, headers=b'', method='POST'):
    """Send a head asking 100 Continue for a `length`-byte body; what came
    back within two seconds, and whether the connection closed."""
    sock = socket.create_connection(('127.0.0.1', port), timeout=5)
    try:
        sock.sendall(f'{method} {path} HTTP/1.1\r\nHost: t\r\n'
                     f'Content-Length: {length}\r\n'.encode() + headers
                     + b'Expect: 100-continue\r\n\r\n')
        data, closed = b'', False
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline and not closed:
            sock.settimeout(max(0.05, deadline - time.monotonic()))
            try:
                chunk = sock.recv(65536)
            except socket.timeout:
                break
            closed = not chunk
            data += chunk
            if data.startswith(b'HTTP/1.1 100 Continue\r\n\r\n'):
                break
        return data, closed
    finally:
        sock.close()


def status_of(data):
    return int(data.split(b' ', 2)[1])


def serve():
    return TestServer(UploadDispatcher, pools=[
        _workers.WorkerPool(UploadWorker, num_workers=1, routes=['/api/**']),
        _workers.WorkerPool(SlowWorker, num_workers=1, routes=['/slow/**'])],
        max_content_length=2 << 30, max_pending=1, access_log='{method} {path} {status}',
        metrics_path='/metrics')


def test_answers_that_do_not_need_the_body_come_before_it():
    with serve() as server:
        port = server.port
        data, closed = ask(port, '/nowhere')
        assert status_of(data) == 404 and closed, data
        assert b'100 Continue' not in data
        assert b'connection: close' in data.lower()
        data, closed = ask(port, '/checked')   # a sync route, GET only
        assert status_of(data) == 405 and closed, data
        assert b'allow: GET' in data
        slow = threading.Thread(target=server.get, args=('/slow/2',), kwargs={
            'timeout': 10, 'headers': {'x-api-key': 'k'}})
        slow.start()   # max_pending=1: the pools are full while it runs
        try:
            deadline = time.monotonic() + 5
            while server.status()['pending'] < 1 and time.monotonic() < deadline:
                time.sleep(0.02)
            data, closed = ask(port, '/api/upload')
        finally:
            slow.join(10)
        assert status_of(data) == 503 and closed, data
        assert b'retry-after: 1' in data.lower()
        # the server goes on, and counted and logged each one
        items = server.get('/api/items', headers={'x-api-key': 'k'})
        assert items.json() == {'items': []}
        metrics = server.get('/metrics').text
        assert 'status="404"' in metrics and 'status="405"' in metrics
        assert 'reason="max_pending"' in metrics
        messages = [record.message for record in server.logs]
        for line in ('POST /nowhere 404', 'POST /checked 405',
                     'POST /api/upload 503'):
            assert any(line in message for message in messages), line


def test_a_wanted_body_gets_100_continue_and_the_checks_see_it():
    with serve() as server:
        port = server.port
        # a pool route: 100 Continue, then do_check sees the whole body
        for path, key in (('/api/upload', b'X-Api-Key: k\r\n'),
                          ('/api/upload', b''), ('/sync/upload', b'')):
            data, closed = ask(port, path, headers=key)
            assert data == b'HTTP/1.1 100 Continue\r\n\r\n', (path, data)
            assert not closed
        body = b'x' * 300_000
        for path, key, status in (('/api/upload', 'k', 200),
                                  ('/api/upload', 'no', 401),
                                  ('/sync/upload', None, 200)):
            headers = {'expect': '100-continue'}
            if key:
                headers['x-api-key'] = key
            reply = server.post(path, data=body, headers=headers)
            assert reply.status == status, (path, reply.status, reply.text)
            if status == 200:
                assert reply.json() == {'size': len(body)}
        assert server.get('/checked').json()['checked'] == [len(body)] * 2
        server.assert_no_errors()


def test_a_head_after_the_shutdown_began_is_refused_before_its_body():
    with serve() as server:
        kept = socket.create_connection(('127.0.0.1', server.port), timeout=5)
        try:
            kept.sendall(b'GET /checked HTTP/1.1\r\nHost: t\r\n\r\n')
            assert kept.recv(65536).startswith(b'HTTP/1.1 200 ')
            slow = threading.Thread(target=server.get, args=('/slow/2',),
                                    kwargs={'timeout': 10,
                                            'headers': {'x-api-key': 'k'}})
            slow.start()   # keeps the dispatcher draining for 2 s
            deadline = time.monotonic() + 5
            while server.status()['pending'] < 1 and time.monotonic() < deadline:
                time.sleep(0.02)
            os.kill(server.pid, signal.SIGTERM)
            time.sleep(0.3)
            kept.sendall(b'POST /api/upload HTTP/1.1\r\nHost: t\r\n'
                         b'Content-Length: 1000000000\r\n'
                         b'Expect: 100-continue\r\n\r\n')
            reply = http.client.HTTPResponse(kept)
            reply.begin()
            assert reply.status == 503 and reply.getheader('connection') == 'close'
            slow.join(10)
        finally:
            kept.close()
