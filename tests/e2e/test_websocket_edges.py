"""WebSocket edge cases end to end (tests/apps/ws_edges_app.py: one
worker, so /api/state is read after what the worker was told before it):
an Upgrade header that only contains 'websocket', a ping crossing the
worker's close, decisions after the handler's 403, a rejection with a
bad status, attributes of the user's own, a close reason of None."""
import asyncio
import socket
import struct
import time

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from test_websockets import close_code, frame, handshake, read_frame

APP = 'ws_edges_app'
WAIT = 10  # seconds any one exchange may take (the pool's timeout: 10)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, WAIT))


def url(server, path):
    return f'ws://127.0.0.1:{server.port}{path}'


def state(server):
    return server.get('/api/state').json


def closes_of(server, path):
    return [entry[2:] for entry in state(server)['closed']
            if entry[1] == path]


@pytest.mark.parametrize('upgrade', ['WebSocket/13', 'h2c-websocket'])
def test_an_upgrade_header_without_the_websocket_token_is_a_plain_get(
        module_server, upgrade):
    """The worker takes a request for an upgrade exactly when the
    dispatcher's handshake checks ran: this one is a plain GET (426, at
    once), not a 101 the dispatcher cannot make (a 504 after the pool's
    timeout) with a WebSocket left open in the worker."""
    began = time.monotonic()
    answer = module_server.raw(
        f'GET /ws/echo HTTP/1.1\r\nHost: x\r\nUpgrade: {upgrade}\r\n'
        'Connection: Upgrade\r\n\r\n'.encode(), timeout=WAIT / 2,
        read_until_close=False)
    assert answer.startswith(b'HTTP/1.1 426 '), answer[:200]
    assert time.monotonic() - began < WAIT / 2
    assert state(module_server)['open'] == []
    assert 'ERROR' not in module_server.log()


def test_a_ping_crossing_the_workers_close_is_not_answered(module_server):
    """The client pings as the worker's close frame is on its way: no
    pong (no frame may follow a close), no error, and the client's answer
    to the close still ends the connection cleanly."""
    sock, head = handshake(module_server.port, '/ws/echo')
    with sock:
        assert head.startswith('HTTP/1.1 101 ')
        sock.sendall(frame(1, b'close'))
        opcode, payload = read_frame(sock)
        assert opcode == 8 and close_code(payload) == 4000
        sock.sendall(frame(9, b'late ping'))
        sock.settimeout(0.5)
        with pytest.raises(socket.timeout):   # open, and no pong
            got = sock.recv(100)
            raise AssertionError(f'got {got!r} after the ping')
        sock.settimeout(WAIT)
        sock.sendall(frame(8, struct.pack('!H', 4000)))
        assert read_frame(sock) is None    # closed once answered
    assert module_server.wait_until(
        lambda: [code for code, _ in closes_of(
            module_server, '/ws/echo')].count(4000),
        timeout=WAIT, what='on_ws_close') == 1
    log = module_server.log()
    assert 'LocalProtocolError' not in log and 'Traceback' not in log


def test_an_undecided_handler_refuses_for_good(module_server):
    async def refused():
        with pytest.raises(InvalidStatus) as caught:
            async with connect(url(module_server, '/ws/later')):
                pass
        return caught.value.response.status_code
    assert run(refused()) == 403
    late = module_server.get('/api/accept_later').json
    assert late['accept'].startswith('RuntimeError') and 'answered' in (
        late['accept'])
    assert late['is_open'] is False and late['send'] is False
    # the worker was told before it served /api/state: nothing to tell
    assert closes_of(module_server, '/ws/later') == []


def test_a_rejection_with_a_bad_status_is_no_decision(module_server):
    sock, head = handshake(module_server.port, '/ws/badreject')
    sock.close()
    assert head.startswith('HTTP/1.1 403 '), head   # not a 200 of nothing
    assert 'ResponseError' in state(module_server)['errors']


def test_a_websocket_takes_attributes_of_the_users_own(module_server):
    async def attr():
        async with connect(url(module_server, '/ws/attr')) as ws:
            return await ws.recv()
    assert run(attr()) == 'user alice'


def test_a_close_reason_of_none_is_no_reason(module_server):
    async def close_none():
        async with connect(url(module_server, '/ws/echo')) as ws:
            await ws.send('close none')
            with pytest.raises(ConnectionClosed) as caught:
                await ws.recv()
            return caught.value.rcvd
    received = run(close_none())
    assert (received.code, received.reason) == (4001, '')
    assert module_server.wait_until(
        lambda: [4001, ''] in closes_of(module_server, '/ws/echo'),
        timeout=WAIT, what='on_ws_close')
