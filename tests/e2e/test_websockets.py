"""WebSockets end to end: real dispatcher and worker processes, the
`websockets` client library, and raw sockets where a client must misbehave
(invalid UTF-8, never answering pings, never reading). Every on_ws_close()
call is a line in a file, counted against the connections."""
import asyncio
import base64
import os
import signal
import socket
import struct
import threading
import time

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

import uhttp.workers as _workers
from uhttp.workers.testing import TestServer
from ws_app import WsDispatcher, WsWorker

WAIT = 20  # seconds any one exchange may take


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, WAIT))


def closes(path):
    """[(request_id, code, reason)] of every on_ws_close() so far."""
    try:
        with open(path, encoding='utf-8') as log:
            lines = log.read().splitlines()
    except FileNotFoundError:
        return []
    result = []
    for line in lines:
        rid, code, reason = (line.split(' ', 2) + [''])[:3]
        result.append((int(rid), int(code), reason))
    return result


def wait_for(predicate, timeout=WAIT):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    return predicate()


def start(tmp_path, **kwargs):
    log = str(tmp_path / 'closes.txt')
    pool = _workers.WorkerPool(WsWorker, num_workers=2, timeout=2,
                               routes=['/ws/**', '/api/**'], close_log=log,
                               heartbeat_interval=0.25)
    kwargs.setdefault('metrics_path', '/metrics')
    server = TestServer(WsDispatcher, [pool], port=0, address='127.0.0.1',
                        **kwargs)
    server.start()
    return server, log


@pytest.fixture(scope='module')
def served(tmp_path_factory):
    server, log = start(tmp_path_factory.mktemp('ws'),
                        ws_max_message_size=64 * 1024)
    yield server, log
    server.stop()


def url(server, path):
    return f'ws://127.0.0.1:{server.port}{path}'


# -- raw frames, for clients the library will not play --------------------------

def handshake(port, path='/ws/echo/raw', extra=''):
    sock = socket.create_connection(('127.0.0.1', port), timeout=WAIT)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall((f'GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n'
                  f'Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n'
                  f'Sec-WebSocket-Version: 13\r\n{extra}\r\n').encode())
    head = b''
    while b'\r\n\r\n' not in head:
        chunk = sock.recv(1)
        if not chunk:
            break
        head += chunk
    return sock, head.decode('latin-1')


def frame(opcode, payload, fin=True):
    mask = os.urandom(4)
    first = (0x80 if fin else 0) | opcode
    size = len(payload)
    if size < 126:
        head = struct.pack('!BB', first, 0x80 | size)
    elif size < 65536:
        head = struct.pack('!BBH', first, 0x80 | 126, size)
    else:
        head = struct.pack('!BBQ', first, 0x80 | 127, size)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def read_frame(sock):
    """(opcode, payload) of the next server frame, or None at EOF."""
    def exact(count):
        data = b''
        while len(data) < count:
            chunk = sock.recv(count - len(data))
            if not chunk:
                return None
            data += chunk
        return data
    head = exact(2)
    if head is None:
        return None
    size = head[1] & 0x7F
    if size == 126:
        size = struct.unpack('!H', exact(2))[0]
    elif size == 127:
        size = struct.unpack('!Q', exact(8))[0]
    return head[0] & 0x0F, exact(size)


def close_code(payload):
    return struct.unpack('!H', payload[:2])[0] if len(payload) >= 2 else None


def read_until_close(sock):
    """The close frame's code, skipping other frames; None at EOF first."""
    while True:
        got = read_frame(sock)
        if got is None:
            return None
        if got[0] == 8:
            return close_code(got[1])


# -- messages ----------------------------------------------------------------------

def test_text_binary_subprotocol_and_headers(served):
    server, log = served

    async def talk():
        async with connect(url(server, '/ws/echo/lobby'),
                           subprotocols=['other', 'chat']) as ws:
            hello = await ws.recv()
            assert hello.startswith('hello lobby ')
            assert ws.subprotocol == 'chat'
            assert ws.response.headers['x-room'] == 'lobby'
            await ws.send('héllo')
            assert await ws.recv() == 'héllo'
            await ws.send(b'\x00\xffbin')
            assert await ws.recv() == b'\x00\xffbin'
            await ws.send(['frag', 'mented ', 'text'])
            assert await ws.recv() == 'fragmented text'
            await ws.send([b'a' * 1000, b'b' * 1000])
            assert await ws.recv() == b'a' * 1000 + b'b' * 1000
            assert await ws.ping() is not None  # the dispatcher answers pings
    run(talk())


def test_an_api_handler_method_serves_websockets(served):
    server, _ = served

    async def talk():
        async with connect(url(server, '/ws/greet/ada')) as ws:
            assert await ws.recv() == 'hi ada'
            await ws.send('and on_ws_message is the worker\'s')
            assert await ws.recv() == 'and on_ws_message is the worker\'s'
    run(talk())


def test_permessage_deflate_is_agreed_and_works(served):
    server, _ = served

    async def talk():
        async with connect(url(server, '/ws/echo/z'),
                           compression='deflate') as ws:
            await ws.recv()
            assert 'permessage-deflate' in ws.response.headers[
                'sec-websocket-extensions']
            text = 'compress me ' * 4000  # 48 KB, under the 64 KiB limit
            await ws.send(text)
            assert await ws.recv() == text
    run(talk())


def test_oversized_message_closes_1009(served):
    server, _ = served

    async def talk():
        async with connect(url(server, '/ws/echo/big'), compression=None,
                           max_size=None) as ws:
            await ws.recv()
            await ws.send(b'x' * (64 * 1024 + 1))
            with pytest.raises(ConnectionClosed) as info:
                await ws.recv()
            return info.value.rcvd.code
    assert run(talk()) == 1009


def test_compressed_message_inflating_past_the_limit_closes_1009(served):
    server, _ = served

    async def talk():
        async with connect(url(server, '/ws/echo/big'), compression='deflate',
                           max_size=None) as ws:
            await ws.recv()
            await ws.send(b'z' * (256 * 1024))  # a few hundred bytes on the wire
            with pytest.raises(ConnectionClosed) as info:
                await ws.recv()
            return info.value.rcvd.code, info.value.rcvd.reason
    assert run(talk()) == (1009, 'message too big')


def test_oversized_fragmented_message_closes_1009(served):
    server, _ = served

    async def talk():
        async with connect(url(server, '/ws/echo/big'), compression=None) as ws:
            await ws.recv()
            await ws.send([b'y' * 40000, b'y' * 40000])
            with pytest.raises(ConnectionClosed) as info:
                await ws.recv()
            return info.value.rcvd.code
    assert run(talk()) == 1009


def test_a_client_still_sending_past_the_limit_gets_a_clean_close(served):
    # the close frame and then the end of the stream, not a reset: closing
    # a socket with the rest of the message unread would reset it (a
    # browser then reports the close as not clean, or loses the frame)
    server, _ = served
    sock, head = handshake(server.port)
    try:
        assert head.startswith('HTTP/1.1 101')
        assert read_frame(sock)[0] == 1  # hello
        message = frame(2, b'x' * (1 << 20))  # 16 times the limit
        failed = []

        def send():
            try:
                sock.sendall(message)
            except OSError as err:
                failed.append(err)
        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        assert read_until_close(sock) == 1009
        sender.join(WAIT)
        assert not failed, failed
        sock.sendall(frame(8, struct.pack('!H', 1009)))
        assert sock.recv(1024) == b''   # ConnectionResetError before
    finally:
        sock.close()


def test_invalid_utf8_closes_1007(served):
    server, _ = served
    sock, head = handshake(server.port)
    try:
        assert head.startswith('HTTP/1.1 101')
        assert read_frame(sock)[0] == 1  # hello
        sock.sendall(frame(1, b'ok \xff\xfe bad'))
        assert read_until_close(sock) == 1007
    finally:
        sock.close()


@pytest.mark.parametrize('offer', [
    'client_max_window_bits=abc', 'server_max_window_bits=1.5',
    'client_max_window_bits=' + '9' * 5000])
def test_a_deflate_offer_with_a_bad_number_is_declined(served, offer):
    # RFC 7692 7.1: the WebSocket is accepted without the extension (the
    # number's int() failing was a 500 with an ERROR in the log)
    server, _ = served
    sock, head = handshake(server.port, extra=(
        f'Sec-WebSocket-Extensions: permessage-deflate; {offer}\r\n'))
    try:
        assert head.startswith('HTTP/1.1 101'), head
        assert 'sec-websocket-extensions' not in head.lower(), head
        assert read_frame(sock)[0] == 1  # hello
        sock.sendall(frame(1, b'plain'))
        assert read_frame(sock) == (1, b'plain')
    finally:
        sock.close()


def test_unmasked_client_frame_closes_1002(served):
    server, _ = served
    sock, head = handshake(server.port)
    try:
        assert head.startswith('HTTP/1.1 101')
        sock.sendall(b'\x81\x02hi')  # a client frame must be masked
        assert read_until_close(sock) == 1002
    finally:
        sock.close()


# -- the handshake -------------------------------------------------------------------

def raw_get(port, path, headers):
    with socket.create_connection(('127.0.0.1', port), timeout=WAIT) as sock:
        lines = ''.join(f'{name}: {value}\r\n' for name, value in headers)
        sock.sendall(f'GET {path} HTTP/1.1\r\nHost: x\r\n{lines}\r\n'.encode())
        data = b''
        while b'\r\n\r\n' not in data:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    return data.decode('latin-1')


GOOD = [('Upgrade', 'websocket'), ('Connection', 'Upgrade'),
        ('Sec-WebSocket-Key', 'dGhlIHNhbXBsZSBub25jZQ=='),
        ('Sec-WebSocket-Version', '13')]


def test_the_accept_token_is_the_rfc_one(served):
    server, _ = served
    answer = raw_get(server.port, '/ws/echo/rfc', GOOD)
    assert answer.startswith('HTTP/1.1 101')
    assert 'Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=' in answer


@pytest.mark.parametrize('change,status', [
    ({'Sec-WebSocket-Version': '8'}, 426),
    ({'Sec-WebSocket-Key': 'c2hvcnQ='}, 400),
    ({'Sec-WebSocket-Key': None}, 400),
    ({'Connection': 'keep-alive'}, 400),
])
def test_bad_handshakes_are_refused(served, change, status):
    server, _ = served
    headers = [(name, change.get(name, value)) for name, value in GOOD
               if change.get(name, value) is not None]
    answer = raw_get(server.port, '/ws/echo/bad', headers)
    assert answer.startswith(f'HTTP/1.1 {status}'), answer
    if status == 426:
        assert 'sec-websocket-version: 13' in answer.lower()
        assert_names_upgrade(answer)


def assert_names_upgrade(answer):
    """A 426 says Upgrade: websocket, and names it in Connection as well
    (RFC 9110 7.8), beside keep-alive or close."""
    fields = {}
    for line in answer.split('\r\n\r\n')[0].split('\r\n')[1:]:
        name, _, value = line.partition(':')
        fields.setdefault(name.strip().lower(), []).append(value.strip())
    assert fields.get('upgrade') == ['websocket'], answer
    assert len(fields.get('connection', ())) == 1, answer
    options = {option.strip().lower()
               for option in fields['connection'][0].split(',')}
    assert 'upgrade' in options, answer
    assert options & {'keep-alive', 'close'}, answer


def test_plain_get_on_a_websocket_route_is_426(served):
    server, _ = served
    assert server.get('/ws/echo/plain').status == 426
    with socket.create_connection(('127.0.0.1', server.port),
                                  timeout=WAIT) as sock:
        for _ in range(2):  # the connection stays open for the next one
            sock.sendall(b'GET /ws/echo/plain HTTP/1.1\r\nHost: x\r\n\r\n')
            data = b''
            while b'}' not in data:
                chunk = sock.recv(4096)
                assert chunk, data
                data += chunk
            answer = data.decode('latin-1')
            assert answer.startswith('HTTP/1.1 426'), answer
            assert_names_upgrade(answer)
            assert 'keep-alive' in answer.lower().split('connection:')[1]


def test_rejections(served):
    server, _ = served

    async def status_of(path, **kwargs):
        with pytest.raises(InvalidStatus) as info:
            async with connect(url(server, path), **kwargs):
                pass
        return info.value.response.status_code
    assert run(status_of('/ws/echo/x?refuse=401')) == 401
    assert run(status_of('/ws/silent')) == 403
    assert run(status_of('/ws/echo/x',
                         additional_headers={'X-Deny': '1'})) == 401
    assert run(status_of('/ws/nowhere')) == 404


# -- closing, and on_ws_close counted ------------------------------------------

def test_every_close_is_told_once(served):
    server, log = served
    before = len(closes(log))
    ids = []

    async def talk():
        async with connect(url(server, '/ws/echo/a')) as ws:
            await ws.recv()
        async with connect(url(server, '/ws/echo/b')) as ws:
            await ws.recv()
            await ws.close(4001, 'client says bye')
        async with connect(url(server, '/ws/echo/c')) as ws:
            await ws.recv()
            await ws.send('close')
            with pytest.raises(ConnectionClosed) as info:
                await ws.recv()
            assert info.value.rcvd.code == 4000
            assert info.value.rcvd.reason == 'asked'
    run(talk())
    sock, head = handshake(server.port)  # vanishes without a close frame
    assert head.startswith('HTTP/1.1 101')
    read_frame(sock)
    sock.close()
    got = wait_for(lambda: len(closes(log)) >= before + 4 and closes(log))
    new = got[before:]
    assert len(new) == 4
    assert len({rid for rid, _, _ in new}) == 4
    codes = sorted(code for _, code, _ in new)
    assert codes == [1000, 1006, 4000, 4001]
    assert (4001, 'client says bye') in [(c, r) for _, c, r in new]
    time.sleep(0.3)
    assert len(closes(log)) == before + 4  # never twice


def test_text_that_is_not_utf8_is_refused_in_the_worker(served):
    """ws.send() of a str with a lone surrogate raises UnicodeEncodeError
    in the worker (instead of returning True while the dispatcher fails to
    encode it and the message is lost)."""
    server, _ = served

    async def talk():
        async with connect(url(server, '/ws/echo/surrogate')) as ws:
            await ws.recv()   # hello
            await ws.send('surrogate')
            assert await ws.recv() == "refused 'a\\ud800'"
            assert await ws.recv() == "refused '\\udcff'"
            await ws.send('ünïcode ok')
            assert await ws.recv() == 'ünïcode ok'
    run(talk())
    assert not [record for record in list(server.logs)
                if 'UnicodeEncodeError' in record.message]


@pytest.mark.parametrize('code', [1004, 1005, 1006, 1015, 2999, 5000])
def test_a_close_code_no_endpoint_may_send_is_refused(served, code):
    """ws.close() raises ValueError for the reserved codes (1004, and 1005,
    1006, 1015 that only report what happened), instead of putting on the
    wire a close frame its client takes for a protocol error."""
    server, _ = served

    async def talk():
        async with connect(url(server, '/ws/echo/codes')) as ws:
            await ws.recv()   # hello
            await ws.send(f'close {code}')
            assert await ws.recv() == f'refused {code}'
            await ws.send('still open')
            assert await ws.recv() == 'still open'
    run(talk())


def test_a_close_reason_too_long_for_its_frame_is_refused(served):
    """A reason over 123 bytes (UTF-8) cannot go in a close frame: close()
    raises ValueError rather than cutting it; 123 bytes still go whole."""
    server, _ = served

    async def talk():
        async with connect(url(server, '/ws/echo/codes')) as ws:
            await ws.recv()   # hello
            await ws.send('close 4000 ' + 'é' * 62)   # 124 bytes
            assert await ws.recv() == (
                'close reason of 124 bytes: at most 123 fit in a close frame')
            await ws.send('close 4000 ' + 'é' * 61 + 'x')   # 123 bytes
            with pytest.raises(ConnectionClosed) as closed:
                await ws.recv()
            assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (
                4000, 'é' * 61 + 'x')
    run(talk())


@pytest.mark.parametrize('code', [1001, 1003, 1011, 1014, 3000, 4999])
def test_a_close_code_the_worker_may_send_reaches_the_client(served, code):
    server, _ = served

    async def talk():
        async with connect(url(server, '/ws/echo/codes')) as ws:
            await ws.recv()   # hello
            await ws.send(f'close {code}')
            with pytest.raises(ConnectionClosed) as closed:
                await ws.recv()
            assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (
                code, 'with a code')
    run(talk())


def test_status_counts_websockets(served):
    server, _ = served

    async def talk():
        async with connect(url(server, '/ws/echo/s')) as one, \
                connect(url(server, '/ws/echo/s')) as two:
            await one.recv()
            await two.recv()
            status = server.get('/_status').json()
            assert status['websockets'] == 2
            assert status['pending'] == 2
            assert status['streams'] == 0
            metrics = server.get('/metrics').text
            assert 'uhttp_workers_websockets_open 2.0' in metrics
            # not streams nor in flight too: one connection counted once
            assert 'uhttp_workers_streams_open{pool="WsWorker"} 0.0' in metrics
            assert ('uhttp_workers_requests_in_flight{pool="WsWorker"} 0.0'
                    in metrics)
            # exempt from the request timeout (2 s) like streams
            await asyncio.sleep(2.6)
            await one.send('still')
            assert await one.recv() == 'still'
    run(talk())
    assert wait_for(lambda: server.get('/_status').json()['websockets'] == 0)


def test_slow_reader_is_closed_1008(served):
    server, log = served
    sock, head = handshake(server.port)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    assert head.startswith('HTTP/1.1 101')
    before = len(closes(log))
    try:
        read_frame(sock)
        sock.sendall(frame(1, b'flood'))  # 25 MiB back, never read
        got = wait_for(lambda: [c for c in closes(log)[before:]
                                if c[1] == 1008])
        assert got and got[0][2] == 'slow reader'
    finally:
        sock.close()


def test_a_flood_reaches_a_client_that_reads_it_whole(served):
    """400 messages of 64 KiB sent in a loop (25 MiB, far over the send
    buffer limit) arrive, every one: the worker is held back while its
    client catches up, never cut off."""
    server, _ = served

    async def talk():
        async with connect(f'ws://127.0.0.1:{server.port}/ws/echo/flood',
                           max_size=None, compression=None) as ws:
            await ws.recv()   # hello
            await ws.send('flood')
            sizes = [len(await ws.recv()) for _ in range(400)]
            assert sizes == [65536] * 400
            await ws.send('after')
            assert await ws.recv() == 'after'
    run(talk())


def test_a_worker_sending_in_a_loop_hears_that_the_client_closed(served):
    """ws.send() returns False once the client has closed, even while
    the handler that sends is still running: the loop ends and
    on_ws_close follows."""
    server, log = served
    before = len(closes(log))

    async def talk():
        async with connect(f'ws://127.0.0.1:{server.port}/ws/echo/endless',
                           max_size=None, compression=None) as ws:
            await ws.recv()   # hello
            await ws.send('endless')
            assert len(await ws.recv()) == 65536
    run(talk())
    assert wait_for(lambda: [c for c in closes(log)[before:] if c[1] == 1000])


def test_a_worker_sending_to_a_client_that_keeps_up_is_not_taken_for_stuck(
        tmp_path):
    """Small messages in a loop for five times the pool's stuck_timeout,
    read as they come: the handler is alive all along."""
    pool = _workers.WorkerPool(WsWorker, num_workers=1, routes=['/ws/**'],
                               close_log=str(tmp_path / 'closes.txt'),
                               heartbeat_interval=0.2, stuck_timeout=0.6)
    with TestServer(WsDispatcher, [pool], port=0,
                    address='127.0.0.1') as server:
        async def talk():
            async with connect(f'ws://127.0.0.1:{server.port}/ws/echo/lines',
                               max_size=None, compression=None) as ws:
                await ws.recv()   # hello
                await ws.send('pid')
                pid = await ws.recv()
                await ws.send('lines 3')
                got = 0
                while True:
                    message = await ws.recv()
                    if message.startswith('done'):
                        break
                    assert message == f'line {got}'
                    got += 1
                assert message == f'done {got}' and got > 0
                await ws.send('pid')
                assert await ws.recv() == pid   # the same worker
        run(talk())
        assert not [record for record in list(server.logs)
                    if 'stuck' in record.message], server.log_text()
        server.assert_no_errors()


def rss_mb(pid):
    with open(f'/proc/{pid}/status', encoding='ascii') as status:
        for line in status:
            if line.startswith('VmRSS:'):
                return int(line.split()[1]) / 1024
    raise AssertionError('no VmRSS')


def test_a_flood_to_a_busy_worker_is_held_back_not_buffered(tmp_path):
    """A client sends 60 MB while its worker is busy: the dispatcher stops
    reading (TCP holds the client back) instead of buffering the flood,
    keeps answering HTTP, and every message arrives once the worker is
    back."""
    server, _ = start(tmp_path, ws_max_message_size=64 * 1024)
    count, size = 1000, 60000  # more than every buffer on the way holds

    async def scenario():
        # uncompressed and random: the bytes on the wire are the flood
        async with connect(url(server, '/ws/sink'), max_size=None,
                           compression=None) as ws:
            before = rss_mb(server.pid)
            await ws.send('sleep 1.5')
            sent = 0

            async def flood():
                nonlocal sent
                payload = os.urandom(size)
                for _ in range(count):
                    await ws.send(payload)
                    sent += 1

            task = asyncio.create_task(flood())
            peak = 0.0
            deadline = time.monotonic() + 1.0
            while time.monotonic() < deadline:
                peak = max(peak, rss_mb(server.pid) - before)
                await asyncio.sleep(0.02)
            held_back = sent
            status = await asyncio.to_thread(server.get, '/_status')
            await task
            await ws.send('count')
            return peak, held_back, status.status, await ws.recv()

    try:
        peak, held_back, status, counted = run(scenario())
        assert held_back < count, 'the flood was read while the worker slept'
        assert peak < 16, f'the dispatcher grew by {peak:.1f} MB'
        assert status == 200
        assert counted == f'count {count} {count * size}'
    finally:
        server.stop()


def test_small_messages_to_a_busy_worker_all_arrive(tmp_path):
    """Small messages queued for a busy worker are joined into one buffer
    and lent to its pipe once the worker reads again: the messages after
    them must arrive too, with no error in the dispatcher."""
    server, _ = start(tmp_path)
    count, size = 600, 8000   # joined: past what a pipe holds

    async def scenario():
        async with connect(url(server, '/ws/sink'), max_size=None,
                           compression=None) as ws:
            await ws.send('sleep 0.5')
            payload = os.urandom(size)
            for _ in range(count):
                await ws.send(payload)
            await ws.send('count')
            return await ws.recv()

    try:
        assert run(scenario()) == f'count {count} {count * size}'
        server.assert_no_errors()
    finally:
        server.stop()


def test_a_close_the_client_never_answers_ends_without_pings(tmp_path):
    """ws_ping_interval=0: the worker's close frame, never answered, still
    ends the connection after wssession.CLOSE_TIMEOUT, and the worker gets
    its on_ws_close."""
    server, log = start(tmp_path, ws_ping_interval=0)
    try:
        sock, head = handshake(server.port)
        try:
            assert head.startswith('HTTP/1.1 101')
            assert read_frame(sock)[0] == 1  # hello
            sock.sendall(frame(1, b'close'))
            assert read_until_close(sock) == 4000   # ... and never answered
            assert read_frame(sock) is None         # the server hangs up
        finally:
            sock.close()
        # on_ws_close() gets the code and the reason the worker closed with
        assert wait_for(lambda: [c for c in closes(log)
                                 if c[1:] == (4000, 'asked')])
        assert wait_for(lambda: server.get('/_status').json()['websockets']
                        == 0)
    finally:
        server.stop()


def test_ping_timeout(tmp_path):
    server, log = start(tmp_path, ws_ping_interval=0.3)
    try:
        sock, head = handshake(server.port)  # never answers a ping
        assert head.startswith('HTTP/1.1 101')
        opcodes = []
        while True:
            got = read_frame(sock)
            if got is None:
                break
            opcodes.append(got[0])
            if got[0] == 8:
                assert close_code(got[1]) == 1011
                break
        assert 9 in opcodes and opcodes[-1] == 8
        assert wait_for(lambda: [c for c in closes(log) if c[1] == 1011])

        async def answers():  # a client that answers pings stays
            async with connect(url(server, '/ws/echo/p')) as ws:
                await ws.recv()
                await asyncio.sleep(1.5)
                await ws.send('alive')
                assert await ws.recv() == 'alive'
        run(answers())
    finally:
        server.stop()


def test_worker_crash_closes_its_websockets_1011(tmp_path):
    server, log = start(tmp_path)
    try:
        async def talk():
            # an idle worker is served first, so which one takes a
            # connection depends on timing: open them six at a time until
            # both workers have some
            sockets, pids = [], []
            for _ in range(20):
                batch = await asyncio.gather(
                    *(connect(url(server, '/ws/echo/n')) for _ in range(6)))
                for ws in batch:
                    await ws.recv()
                    await ws.send('pid')
                    pids.append(int(await ws.recv()))
                sockets += batch
                if len(set(pids)) == 2:
                    break
            victim = pids[0]
            assert len(set(pids)) == 2, pids
            await sockets[0].send('crash')
            for ws, pid in zip(sockets, pids):
                if pid == victim:
                    with pytest.raises(ConnectionClosed) as info:
                        await ws.recv()
                    assert info.value.rcvd.code == 1011
                else:
                    await ws.send('survivor')
                    assert await ws.recv() == 'survivor'
            for ws in sockets:
                await ws.close()
            return pids.count(victim), len(pids) - pids.count(victim)
        lost, kept = run(talk())
        # the dead worker tells nothing; the live one tells each close once
        assert wait_for(lambda: len(closes(log)) >= kept)
        time.sleep(0.3)
        assert len(closes(log)) == kept
        assert wait_for(lambda: server.get('/_status').json()['websockets'] == 0)
    finally:
        server.stop()


def test_shutdown_closes_1001_after_the_drain(tmp_path):
    server, log = start(tmp_path)
    try:
        async def talk():
            async with connect(url(server, '/ws/echo/bye')) as ws:
                await ws.recv()
                stopper = threading.Thread(target=server.stop)
                stopper.start()
                with pytest.raises(ConnectionClosed) as info:
                    await ws.recv()
                await asyncio.get_running_loop().run_in_executor(
                    None, stopper.join, WAIT)
                return info.value.rcvd.code
        assert run(talk()) == 1001
        assert [code for _, code, _ in closes(log)] == [1001]
    finally:
        server.stop()


def test_shutdown_tells_a_worker_held_back_by_a_slow_reader(tmp_path):
    """A client that reads, but slower than its worker sends, holds that
    worker back. Once shutdown closes the client's WebSocket, nothing more
    goes to it: the worker goes on, hears of the close (1001) and stops
    on its own instead of being killed at shutdown_timeout."""
    server, log = start(tmp_path, shutdown_timeout=3)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
    sock.settimeout(WAIT)
    reading = threading.Event()
    done = threading.Event()
    try:
        sock.connect(('127.0.0.1', server.port))
        key = base64.b64encode(os.urandom(16)).decode()
        sock.sendall((f'GET /ws/echo/slow HTTP/1.1\r\nHost: x\r\n'
                      f'Upgrade: websocket\r\nConnection: Upgrade\r\n'
                      f'Sec-WebSocket-Key: {key}\r\n'
                      f'Sec-WebSocket-Version: 13\r\n\r\n').encode())
        sock.sendall(frame(1, b'flood'))   # 25 MiB, as fast as it goes

        def read_slowly():   # never stalled, never caught up
            while not done.is_set():
                try:
                    if not sock.recv(16384):
                        return
                except OSError:
                    return
                reading.set()
                done.wait(0.05)
        reader = threading.Thread(target=read_slowly, daemon=True)
        reader.start()
        assert reading.wait(WAIT)
        time.sleep(0.5)   # the worker is held back by now
        began = time.monotonic()
        server.stop()
        took = time.monotonic() - began
        assert [code for _, code, _ in closes(log)] == [1001], (
            server.log_text())
        assert 'did not stop in time' not in server.log_text()
        assert took < 3 + 2, server.log_text()  # not the kill at the deadline
    finally:
        done.set()
        sock.close()
        server.stop()


def test_a_retired_worker_closes_its_websockets_1011(tmp_path):
    log = str(tmp_path / 'closes.txt')
    pool = _workers.WorkerPool(WsWorker, num_workers=1, routes=['/ws/**'],
                               close_log=log, retire_timeout=1,
                               heartbeat_interval=0.25)
    server = TestServer(WsDispatcher, [pool], port=0, address='127.0.0.1')
    server.start()
    try:
        async def talk():
            async with connect(url(server, '/ws/echo/old')) as ws:
                await ws.recv()
                await ws.send('pid')
                old = int(await ws.recv())
                os.kill(server.pid, signal.SIGHUP)  # a rolling reload
                with pytest.raises(ConnectionClosed) as info:
                    while True:
                        await ws.recv()
                code = info.value.rcvd.code
            async with connect(url(server, '/ws/echo/new')) as ws:
                await ws.recv()
                await ws.send('pid')
                new = int(await ws.recv())
            return code, old, new
        code, old, new = run(talk())
        assert code == 1011 and old != new
        # the retiring worker was alive, so it was told (then the new one's)
        got = wait_for(lambda: len(closes(log)) >= 2 and closes(log))
        assert [c for _, c, _ in got] == [1011, 1000]
    finally:
        server.stop()
