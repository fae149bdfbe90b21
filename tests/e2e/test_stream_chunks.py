"""What send_chunk() takes, in a worker and in a sync handler: bytes,
bytes-like objects and str go out as they hold; anything else is a
TypeError naming its type (bytes(5) would be five NUL bytes, bytes([1, 2])
two control bytes). A stream started twice, or after the request was
answered, says so in a WARNING."""
import json
import socket
import time

import uhttp.workers as _workers
from uhttp.workers.testing import TestServer

NOT_BYTES = (5, [1, 2], None, {'a': 1}, 1.5)
GOOD = (b'b;', 'str;', bytearray(b'ba;'), memoryview(b'mv;'),
        memoryview(b'xxmv2;')[2:])


def _try_chunks(send_chunk):
    sent = [send_chunk(value) for value in GOOD]
    errors = []
    for value in NOT_BYTES:
        try:
            send_chunk(value)
            errors.append(None)
        except TypeError as err:
            errors.append(str(err))
    send_chunk(('\n' + json.dumps({'sent': sent, 'errors': errors})
                + '\n').encode())


class Chunks(_workers.Worker):
    @_workers.api('/chunks', 'GET')
    def chunks(self, request):
        chunked = request.query is not None and 'chunked' in request.query
        request.response_stream('text/plain', headers={
            'Transfer-Encoding': 'chunked'} if chunked else None)
        _try_chunks(request.send_chunk)
        request.response_stream_end()
        return _workers.DEFERRED

    @_workers.api('/twice', 'GET')
    def twice(self, request):
        first = request.response_stream('text/plain')
        second = request.response_stream('application/x-ndjson')
        request.send_chunk(json.dumps([first, second]))
        request.response_stream_end()
        return _workers.DEFERRED

    @_workers.api('/after-respond', 'GET')
    def after_respond(self, request):
        request.respond({'answered': True})
        self.late = request.response_stream()
        return _workers.DEFERRED


class SyncChunks(_workers.Dispatcher):
    @_workers.sync('/sync/chunks')
    def chunks(self, client, path_params):
        chunked = client.query is not None and 'chunked' in client.query
        client.response_stream('text/plain', headers={
            'Transfer-Encoding': 'chunked'} if chunked else None)
        _try_chunks(client.send_chunk)
        client.response_stream_end()


def read_all(server, target, version=b'HTTP/1.0'):
    with socket.create_connection(('127.0.0.1', server.port),
                                  timeout=10) as sock:
        sock.sendall(b'GET ' + target + b' ' + version + b'\r\nHost: x\r\n\r\n')
        got = b''
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return got.partition(b'\r\n\r\n')
            got += chunk


def unchunk(body):
    decoded = b''
    while body:
        size_line, _, body = body.partition(b'\r\n')
        size = int(size_line, 16)
        if size == 0:
            return decoded
        decoded += body[:size]
        body = body[size + 2:]
    raise AssertionError('no last chunk')


def check_body(body):
    data, _, summary = body.partition(b'\n')
    assert data == b'b;str;ba;mv;mv2;', body   # no NUL or \x01\x02 among them
    summary = json.loads(summary)
    assert summary['sent'] == [True] * len(GOOD)
    assert summary['errors'] == [
        'send_chunk() takes bytes, a bytes-like object or str, not '
        + name for name in ('int', 'list', 'NoneType', 'dict', 'float')]


def test_a_workers_send_chunk_refuses_what_is_not_bytes():
    pool = _workers.WorkerPool(Chunks, num_workers=1)
    with TestServer(_workers.Dispatcher, [pool]) as server:
        head, _, body = read_all(server, b'/chunks')
        assert head.startswith(b'HTTP/1.1 200'), head
        check_body(body)
        head, _, body = read_all(server, b'/chunks?chunked=1', b'HTTP/1.1')
        assert b'transfer-encoding: chunked' in head.lower(), head
        check_body(unchunk(body))
        server.assert_no_errors()


def test_a_sync_handlers_send_chunk_refuses_what_is_not_bytes():
    with TestServer(SyncChunks, []) as server:
        _, _, body = read_all(server, b'/sync/chunks')
        check_body(body)
        head, _, body = read_all(server, b'/sync/chunks?chunked=1',
                                 b'HTTP/1.1')
        assert b'transfer-encoding: chunked' in head.lower(), head
        check_body(unchunk(body))


def wait_for_log(server, text, timeout=5):
    deadline = time.monotonic() + timeout
    while text not in server.log_text():
        assert time.monotonic() < deadline, server.log_text()
        time.sleep(0.05)


def test_a_stream_started_twice_or_after_an_answer_is_a_warning():
    pool = _workers.WorkerPool(Chunks, num_workers=1)
    with TestServer(_workers.Dispatcher, [pool]) as server:
        head, _, body = read_all(server, b'/twice')
        assert b'content-type: text/plain' in head.lower(), head
        assert json.loads(body) == [True, False]
        wait_for_log(server, 'response_stream() on request ')
        assert server.log_text().count('that was already answered') == 1
        reply = server.get('/after-respond')
        assert reply.status == 200 and reply.json() == {'answered': True}
        deadline = time.monotonic() + 5
        while server.log_text().count('that was already answered') < 2:
            assert time.monotonic() < deadline, server.log_text()
            time.sleep(0.05)
        assert server.status()['streams'] == 0


# -- a sync handler's stream sends: as a worker's ---------------------------------

class SyncSends(_workers.Dispatcher):
    @_workers.sync('/sync/before')
    def before(self, client, path_params):
        """Sends before response_stream() used to write their bytes with
        no head at all (an answer no HTTP client can read)."""
        refused = []
        for name, call in (('send_chunk', lambda: client.send_chunk(b'x')),
                           ('send_event', lambda: client.send_event(data='x')),
                           ('send_ndjson', lambda: client.send_ndjson([1])),
                           ('response_stream_end', client.response_stream_end)):
            try:
                call()
            except RuntimeError as err:
                refused.append(str(err).partition(' (')[0])
        client.respond({'refused': refused})

    @_workers.sync('/sync/events')
    def events(self, client, path_params):
        client.response_stream()
        client.send_event(data={'a': 1}, event='update', event_id=7)
        client.send_event(data='one\ntwo', retry=1500)
        errors = []
        for kwargs in ({'event': 'x\ndata: forged'}, {'event_id': '1\r2'},
                       {'retry': -1}):
            try:
                client.send_event(data='never', **kwargs)
            except ValueError as err:
                errors.append(type(err).__name__)
        try:
            client.send_ndjson(float('nan'))
        except ValueError:
            errors.append('nan')
        client.send_ndjson({'errors': errors})
        client.response_stream_end()
        self.after_end = [client.send_chunk(b'x'), client.send_event(data='x'),
                          client.response_stream_end()]

    @_workers.sync('/sync/after-end')
    def after_end_of(self, client, path_params):
        client.respond({'after_end': getattr(self, 'after_end', None)})


def test_a_sync_handlers_sends_before_its_stream_raise():
    with TestServer(SyncSends, []) as server:
        reply = server.get('/sync/before')
        assert reply.status == 200, reply
        assert reply.json() == {'refused': [
            name + '() before response_stream(): start the stream first'
            for name in ('send_chunk', 'send_event', 'send_ndjson',
                         'response_stream_end')]}


def test_a_sync_handlers_events_are_written_as_a_workers():
    with TestServer(SyncSends, []) as server:
        head, _, body = read_all(server, b'/sync/events')
        assert b'content-type: text/event-stream' in head.lower(), head
        assert body == (b'id: 7\nevent: update\ndata: {"a": 1}\n\n'
                        b'retry: 1500\ndata: one\ndata: two\n\n'
                        b'{"errors": ["ResponseError", "ResponseError", '
                        b'"ValueError", "nan"]}\n'), body
        assert server.get('/sync/after-end').json() == {
            'after_end': [False, False, False]}


# -- a deferred request answered by a thread as its handler returns -----------------

class Racing(_workers.Worker):
    """A thread of the handler's answers its request at the worst moment:
    after the loop has seen it unanswered, before it keeps it. The worker
    kept such a request forever (in the loop's open requests, which only
    an answer or a disconnect empties, and neither comes again)."""

    def setup(self):
        import sys
        import threading
        from uhttp.workers import messages
        original = messages.is_unanswered

        def racing(request):
            result = original(request)
            caller = sys._getframe(1).f_code.co_name
            if result and request.path == '/race' and caller in (
                    'hold_open', 'handle_request'):
                answer = threading.Thread(
                    target=request.respond, args=({'raced': True},))
                answer.start()
                answer.join(5)
            return result
        messages.is_unanswered = racing

    @_workers.api('/race', 'GET')
    def race(self, request):
        return _workers.DEFERRED

    @_workers.api('/held', 'GET')
    def held(self, request):
        from uhttp.workers import worker
        return {'held': sorted(worker.state_of(self).runtime.open_requests)}


def test_a_request_answered_by_a_thread_as_it_is_deferred_is_not_kept():
    pool = _workers.WorkerPool(Racing, num_workers=1)
    with TestServer(_workers.Dispatcher, [pool]) as server:
        for _ in range(3):
            reply = server.get('/race')
            assert reply.status == 200 and reply.json() == {'raced': True}
        assert server.get('/held').json() == {'held': []}
        server.assert_no_errors()
