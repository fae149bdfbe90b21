"""The dispatcher's WebSocket parts without processes or sockets: the
handshake checks, the 101 head, and a session fed bytes made by wsproto's
client side, with a fake connection and hub recording what they get."""
import base64
import os
import types

import pytest
from wsproto.connection import Connection as WsConnection
from wsproto.connection import ConnectionType
from wsproto import events

from uhttp.workers import loop as _loop
from uhttp.workers import streamhold as _streamhold
from uhttp.workers import channel as _channel
from uhttp.workers import messages as _msg
from uhttp.workers import routing as _routing
from uhttp.workers import wssession as _ws
from uhttp.workers import wsworker as _wsworker

KEY = 'dGhlIHNhbXBsZSBub25jZQ=='


def client(method='GET', protocol='HTTP/1.1', **headers):
    base = {'upgrade': 'websocket', 'connection': 'Upgrade',
            'sec-websocket-key': KEY, 'sec-websocket-version': '13'}
    for name, value in headers.items():
        name = name.replace('_', '-')
        if value is None:
            base.pop(name, None)
        else:
            base[name] = value
    return types.SimpleNamespace(method=method, protocol=protocol,
                                 headers=base)


def test_accept_token_is_rfc_6455_s_example():
    assert _ws.accept_token(KEY) == 's3pPLMBiTxaQ9kYGzzhZRbK+xOo='


def test_is_upgrade():
    assert _ws.is_upgrade(client())
    assert _ws.is_upgrade(client(upgrade='WebSocket'))
    assert not _ws.is_upgrade(client(upgrade=None))
    assert not _ws.is_upgrade(client(upgrade='h2c'))


@pytest.mark.parametrize('upgrade', [
    'websocket', 'WebSocket', 'h2c, websocket', ' websocket ', 'WebSocket/13',
    'h2c-websocket', 'xwebsocket', 'websockets', 'h2c', ''])
def test_a_worker_sees_an_upgrade_exactly_when_the_dispatcher_does(upgrade):
    """The dispatcher's handshake checks run for every upgrade a
    @websocket handler takes: never one without the other."""
    request = _msg.Request(5, 'GET', '/ws', headers={'upgrade': upgrade})
    answer = _wsworker.run_handler(lambda ws: ws.reject(status=409), request)
    assert (answer[1] == 409) == _ws.is_upgrade(client(upgrade=upgrade))
    assert answer[1] in (409, 426)


@pytest.mark.parametrize('changes,status', [
    ({}, None),
    ({'connection': 'keep-alive, Upgrade'}, None),
    ({'method': 'POST'}, 400),
    ({'protocol': 'HTTP/1.0'}, 400),
    ({'connection': 'keep-alive'}, 400),
    ({'sec_websocket_version': '8'}, 426),
    ({'sec_websocket_version': None}, 426),
    ({'sec_websocket_key': None}, 400),
    ({'sec_websocket_key': 'not base64!'}, 400),
    ({'sec_websocket_key': base64.b64encode(b'x' * 15).decode()}, 400),
])
def test_handshake_checks(changes, status):
    error = _ws.handshake_error(client(**changes))
    assert (error and error[0]) == status


def test_origin_check():
    allowed = frozenset(['http://good'])
    assert _ws.handshake_error(client(origin='http://good'), allowed) is None
    assert _ws.handshake_error(client(origin='http://evil'), allowed)[0] == 403
    assert _ws.handshake_error(client(), allowed)[0] == 403
    assert _ws.handshake_error(client(origin='http://evil')) is None


def test_switching_head_with_subprotocol_headers_and_deflate():
    headers = client(sec_websocket_extensions='permessage-deflate; '
                     'client_max_window_bits').headers
    head, agreed = _ws.switching_head(headers, 'chat', [('X-A', '1')], True)
    text = head.decode()
    assert text.startswith('HTTP/1.1 101 Switching Protocols\r\n')
    assert 'Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n' in text
    assert 'Sec-WebSocket-Protocol: chat\r\n' in text
    assert 'Sec-WebSocket-Extensions: permessage-deflate' in text
    assert 'X-A: 1\r\n' in text and text.endswith('\r\n\r\n')
    assert len(agreed) == 1
    head, agreed = _ws.switching_head(headers, None, None, False)
    assert b'Extensions' not in head and b'Sec-WebSocket-Protocol' not in head
    assert agreed == []


# -- a session, fed by wsproto's client side --------------------------------------

class FakeConnection:
    def __init__(self, room=1 << 30):
        self.sent = b''
        self.room = room
        self.is_open = True
        self.pending = None
        self.max_send_buffer_size = room
        self.ended = self.closed = False
        self.reading = True
        self.lingers = False

    def linger_on_close(self):
        self.lingers = True

    def send_raw(self, data):
        if len(self.sent) + len(data) > self.room:
            return False
        self.sent += data
        return True

    def release_take_over(self):
        pass

    def throttle_reads(self):
        self.reading = False

    def resume_reads(self):
        self.reading = True

    def end_stream(self):
        self.ended = True

    def close(self):
        self.closed = True


class WorkerSide:
    """What a session knows of its worker (a handle, hashable like one)."""

    def __init__(self):
        self.alive = True
        self.out = None


class FakeHub:
    """The hub's state and flow control (the real methods), without a core."""

    check_backlog = _ws.WsHub.check_backlog
    drained = _ws.WsHub.drained
    forget_paused = _ws.WsHub.forget_paused
    backlog_limit = _ws.WsHub.backlog_limit

    def __init__(self, max_message_size=1000):
        self.paused = {}
        self.outgoing = None   # the worker's OutBuffer, when a test has one
        self.told = []
        self.ended = []
        self.sessions = {}
        self.max_message_size = max_message_size
        self.log = types.SimpleNamespace(warning=lambda *args: None)
        self.core = types.SimpleNamespace(
            stopping=False,
            loop=_loop.Timers(self.log),   # run by the test: run_due(now)
            streamhold=_streamhold.StreamHold(None),  # (no pipe: not held)
            end=lambda pending, reason, tell_worker=None: self.ended.append(
                reason))

    def tell(self, handle, message):
        self.told.append(message)
        if self.outgoing is not None:
            self.outgoing.add(_channel.pack(message))


def session(room=1 << 30, max_message_size=1000):
    hub = FakeHub(max_message_size)
    connection = FakeConnection(room)
    pending = types.SimpleNamespace(request_id=7, client=connection)
    connection.pending = pending
    ws = _ws.WsSession(hub, pending, WorkerSide())
    hub.sessions[7] = ws
    return ws, hub, connection, WsConnection(ConnectionType.CLIENT)


def server_events(peer, connection):
    peer.receive_data(connection.sent)
    connection.sent = b''
    return list(peer.events())


def test_whole_messages_reach_the_worker_defragmented():
    ws, hub, _, peer = session()
    ws.data_received(peer.send(events.TextMessage('hel', message_finished=False)))
    assert hub.told == []
    ws.data_received(peer.send(events.TextMessage('lo')))
    ws.data_received(peer.send(events.BytesMessage(b'\x00\x01')))
    assert hub.told == [(_msg.M_WS_MESSAGE, 7, 'hello'),
                        (_msg.M_WS_MESSAGE, 7, b'\x00\x01')]


def test_bytes_split_anywhere_make_the_same_messages():
    ws, hub, _, peer = session()
    data = peer.send(events.TextMessage('abc' * 50)) + peer.send(
        events.BytesMessage(b'z' * 300))
    for i in range(len(data)):
        ws.data_received(data[i:i + 1])
    assert hub.told == [(_msg.M_WS_MESSAGE, 7, 'abc' * 50),
                        (_msg.M_WS_MESSAGE, 7, b'z' * 300)]


def test_the_size_limit_counts_utf8_bytes():
    ws, hub, connection, peer = session(max_message_size=10)
    ws.data_received(peer.send(events.TextMessage('ééééé')))  # 10 bytes
    assert hub.told == [(_msg.M_WS_MESSAGE, 7, 'ééééé')]
    ws.data_received(peer.send(events.TextMessage('éééééé')))  # 12 bytes
    assert hub.told[-1] == (_msg.M_WS_CLOSED, 7, 1009, 'message too big')


def test_ping_is_answered_and_pong_clears_the_wait():
    ws, _, connection, peer = session()
    ws.data_received(peer.send(events.Ping(b'p1')))
    got = server_events(peer, connection)
    assert isinstance(got[0], events.Pong) and got[0].payload == b'p1'
    ws.ping(0)
    assert ws.awaiting_pong
    got = server_events(peer, connection)
    assert isinstance(got[0], events.Ping)
    ws.data_received(peer.send(got[0].response()))
    assert not ws.awaiting_pong


def test_too_big_closes_1009_and_tells_once():
    ws, hub, connection, peer = session(max_message_size=10)
    ws.data_received(peer.send(events.BytesMessage(b'x' * 11)))
    got = server_events(peer, connection)
    assert isinstance(got[0], events.CloseConnection) and got[0].code == 1009
    assert hub.told == [(_msg.M_WS_CLOSED, 7, 1009, 'message too big')]
    assert hub.ended == ['stream_closed'] and connection.ended
    assert connection.lingers   # the client may still be sending the rest
    ws.connection_lost()
    assert len(hub.told) == 1 and 7 not in hub.sessions
    assert hub.ended == ['stream_closed']   # ended once, by the server


def test_client_close_is_answered_and_told():
    ws, hub, connection, peer = session()
    ws.data_received(peer.send(events.CloseConnection(4001, 'bye')))
    got = server_events(peer, connection)
    assert got[0].code == 4001
    assert hub.told == [(_msg.M_WS_CLOSED, 7, 4001, 'bye')]
    assert hub.ended == ['disconnected']    # the client ended it


def test_worker_close_waits_for_the_answer():
    ws, hub, connection, peer = session()
    ws.close(4000, 'done')
    got = server_events(peer, connection)
    assert got[0].code == 4000 and hub.told == []
    ws.send_message('dropped after close')
    assert connection.sent == b''
    ws.data_received(peer.send(got[0].response()))
    assert hub.told == [(_msg.M_WS_CLOSED, 7, 4000, 'done')]
    assert hub.ended == ['stream_closed']   # the worker ended it


def test_an_unanswered_worker_close_ends_after_the_close_timeout():
    """Without any keepalive pings (ws_ping_interval=0) too: the close's
    own timer ends it, and the worker is told its code."""
    ws, hub, connection, peer = session()
    ws.close(4000, 'done')
    assert server_events(peer, connection)[0].code == 4000
    (when, _, _), = hub.core.loop.entries()
    hub.core.loop.run_due(when - 0.1)
    assert hub.told == [] and not connection.closed
    hub.core.loop.run_due(when)
    assert hub.told == [(_msg.M_WS_CLOSED, 7, 4000, 'done')]
    assert hub.ended == ['stream_closed'] and connection.closed
    assert hub.core.loop.entries() == []


def test_a_close_answered_in_time_leaves_the_timer_nothing_to_do():
    ws, hub, connection, peer = session()
    ws.close(4000, 'done')
    got = server_events(peer, connection)
    ws.data_received(peer.send(got[0].response()))
    (when, _, _), = hub.core.loop.entries()
    hub.core.loop.run_due(when)
    assert hub.told == [(_msg.M_WS_CLOSED, 7, 4000, 'done')]   # once


def test_lost_connection_is_1006_and_ended_by_the_server_1011():
    ws, hub, _, _ = session()
    ws.connection_lost()
    assert hub.told == [(_msg.M_WS_CLOSED, 7, 1006, '')]
    assert hub.ended == ['disconnected']    # the client left
    ws, hub, connection, peer = session()
    ws.ended()
    assert server_events(peer, connection)[0].code == 1011
    assert hub.told == [(_msg.M_WS_CLOSED, 7, 1011, '')]
    assert hub.ended == []  # the caller (core.fail) ends the request


def test_slow_reader_is_1008_and_dropped():
    ws, hub, connection, _ = session(room=100)
    ws.send_message('x' * 200)
    assert hub.told == [(_msg.M_WS_CLOSED, 7, 1008, 'slow reader')]
    assert connection.closed


def test_a_dead_worker_is_told_nothing():
    ws, hub, _, _ = session()
    ws.handle.alive = False
    ws.connection_lost()
    assert hub.told == [] and hub.ended == ['disconnected']


def test_invalid_utf8_closes_1007():
    ws, hub, connection, _ = session()
    # a masked text frame holding 0xff 0xfe
    ws.data_received(bytes([0x81, 0x82, 0, 0, 0, 0, 0xff, 0xfe]))
    got = server_events(WsConnection(ConnectionType.CLIENT), connection)
    assert got[0].code == 1007
    assert hub.told[0][:3] == (_msg.M_WS_CLOSED, 7, 1007)


def test_a_ping_crossing_the_workers_close_is_not_answered():
    ws, hub, connection, peer = session()
    ws.close(4000, 'done')
    ws.data_received(peer.send(events.Ping(b'late')))  # sent before it saw
    got = server_events(peer, connection)              # the close
    assert [type(event) for event in got] == [events.CloseConnection]
    ws.data_received(peer.send(got[0].response()))
    assert hub.told == [(_msg.M_WS_CLOSED, 7, 4000, 'done')]
    assert hub.ended == ['stream_closed']


def accepting_hub(headers):
    """A WsHub whose core holds one pending upgrade (request 7) with
    `headers`: what it tells the worker and how it fails the request."""
    told, failed = [], []
    connection = types.SimpleNamespace(
        headers=headers, method='GET', protocol='HTTP/1.1', is_open=True,
        response_started=False, path='/ws')
    pending = types.SimpleNamespace(request_id=7, client=connection)
    connection.pending = pending
    core = types.SimpleNamespace(
        log=types.SimpleNamespace(error=lambda *args: None),
        settings=types.SimpleNamespace(ws_origins=None, ws_deflate=True,
                                       ws_max_message_size=1000),
        pending={7: pending},
        fail=lambda pending, status, data, reason, headers=None: (
            failed.append((status, reason))))
    hub = _ws.WsHub(core)
    hub.tell = lambda handle, message: told.append(message)
    handle = types.SimpleNamespace(alive=True, pool=types.SimpleNamespace(
        scheduler=types.SimpleNamespace(release=lambda handle, rid: None)))
    return hub, handle, told, failed


@pytest.mark.parametrize('changes,status', [
    ({'sec_websocket_key': None}, 400),
    ({'sec_websocket_key': 'short'}, 400),
    ({'sec_websocket_version': None}, 426),
])
def test_an_accept_of_a_bad_handshake_is_refused_and_told(changes, status):
    """Never a 101 for a request whose handshake is not valid, even
    should the intake's checks not have run: the client gets the 4xx at
    once and the worker its on_ws_close."""
    hub, handle, told, failed = accepting_hub(client(**changes).headers)
    hub.accept(handle, (_msg.W_WS_ACCEPT, 7, None, None))
    assert told == [(_msg.M_WS_CLOSED, 7, 1006, '')]
    assert failed == [(status, 'completed')] and hub.sessions == {}


# -- the worker side ----------------------------------------------------------------

def test_websocket_decorator_marks_a_get_route():
    @_routing.websocket('/ws/{room}')
    def handler(self, ws):
        pass
    assert _routing.is_websocket(handler)
    assert _routing.route_marks(handler) == (('/ws/{room}', ('GET',)),)


def test_handler_decisions():
    request = _msg.Request(5, 'GET', '/ws', headers={'upgrade': 'websocket'})
    assert _wsworker.run_handler(lambda ws: None, request)[1] == 403
    assert _wsworker.run_handler(
        lambda ws: ws.reject({'e': 1}, 401), request) == ({'e': 1}, 401)
    plain = _msg.Request(6, 'GET', '/ws')
    assert _wsworker.run_handler(lambda ws: None, plain)[1] == 426


def test_an_undecided_handler_refuses_for_good():
    request = _msg.Request(5, 'GET', '/ws', headers={'upgrade': 'websocket'})
    kept = []
    assert _wsworker.run_handler(kept.append, request) == (
        {'error': 'Forbidden'}, 403)
    ws, = kept
    with pytest.raises(RuntimeError, match='answered'):
        ws.accept()
    assert not ws.is_open and ws.send('x') is False and ws.close() is False


def test_a_rejection_with_a_bad_status_leaves_it_undecided():
    request = _msg.Request(5, 'GET', '/ws', headers={'upgrade': 'websocket'})

    def handler(ws):
        with pytest.raises(_msg.ResponseError):
            ws.reject({'e': 1}, status=99)
    assert _wsworker.run_handler(handler, request)[1] == 403

    def handler_again(ws):
        with pytest.raises(_msg.ResponseError):
            ws.reject(status=700)
        ws.reject({'e': 2}, status=401)
    assert _wsworker.run_handler(handler_again, request) == ({'e': 2}, 401)


def test_a_websocket_takes_attributes_of_the_users_own():
    request = _msg.Request(5, 'GET', '/ws', headers={'upgrade': 'websocket'})
    ws = _wsworker.WebSocket(request)
    ws.user = 'alice'
    ws.state = 'mine'   # no internal name of its: those start with '_'
    assert ws.user == 'alice' and vars(ws) == {'user': 'alice',
                                               'state': 'mine'}
    assert ws.request_id == 5 and not ws.is_open
    assert all(name.startswith('_') or name in (
        'request_id', 'path', 'path_params', 'query', 'headers',
        'remote_address', 'context', 'subprotocol')
        for name in _wsworker.WebSocket.__slots__)


def test_a_close_reason_of_none_is_no_reason():
    sent = []
    runtime = types.SimpleNamespace(send=sent.append, websockets={})
    request = _msg.Request(5, 'GET', '/ws', headers={'upgrade': 'websocket'})
    _msg.attach(request, types.SimpleNamespace(runtime=runtime))
    ws = _wsworker.WebSocket(request)
    assert ws.accept()
    assert ws.close(4001, None)
    assert sent[-1] == (_msg.W_WS_CLOSE, 5, 4001, '')


def test_websocket_argument_checks():
    request = _msg.Request(5, 'GET', '/ws', headers={
        'upgrade': 'websocket', 'sec-websocket-protocol': 'a, b'})
    ws = _wsworker.WebSocket(request)
    assert ws.subprotocols == ['a', 'b']
    with pytest.raises(ValueError):
        ws.accept(subprotocol='c')
    assert ws.send('not open') is False and ws.close() is False


def test_settings_are_checked():
    from uhttp.workers.config import DispatcherSettings
    settings = DispatcherSettings(ws_origins='http://a')
    assert settings.ws_origins == frozenset(['http://a'])
    assert settings.ws_ping_interval == 20
    assert settings.ws_max_message_size == 1 << 20
    with pytest.raises(ValueError):
        DispatcherSettings(ws_ping_interval=-1)
    with pytest.raises(ValueError):
        DispatcherSettings(ws_max_message_size=0)
    with pytest.raises(TypeError):
        DispatcherSettings(ws_deflate='yes')
    # uhttp-server's name for the limit would do nothing here: refused
    with pytest.raises(TypeError, match="take 'ws_max_message_size'"):
        DispatcherSettings(max_ws_message_length=4096)


def test_config_file_takes_the_ws_settings(tmp_path):
    from uhttp.workers import configfile
    path = tmp_path / 'app.toml'
    path.write_text('[dispatcher]\nws_ping_interval = 5\n'
                    'ws_max_message_size = 4096\nws_origins = ["http://a"]\n'
                    'ws_deflate = false\n')
    overrides, problems = configfile.load(str(path))
    assert problems == []
    assert overrides.dispatcher == {
        'ws_ping_interval': 5, 'ws_max_message_size': 4096,
        'ws_origins': ['http://a'], 'ws_deflate': False}
    path.write_text('[dispatcher]\nws_ping_interval = -1\n')
    assert configfile.load(str(path))[1]


# -- permessage-deflate, bounded -----------------------------------------------------

def deflate_pair(limit):
    """A session and a wsproto client that agreed on permessage-deflate."""
    from wsproto.extensions import PerMessageDeflate
    offer = PerMessageDeflate()
    headers = client(sec_websocket_extensions='permessage-deflate; '
                     + offer.offer()).headers
    head, agreed = _ws.switching_head(headers, None, None, True, limit)
    value = [line for line in head.decode().split('\r\n')
             if line.startswith('Sec-WebSocket-Extensions: ')][0]
    offer.finalize(value.split(': ', 1)[1])
    ws, hub, connection, _ = session(max_message_size=limit)
    ws.proto = WsConnection(ConnectionType.SERVER, agreed)
    return ws, hub, agreed[0], WsConnection(ConnectionType.CLIENT, [offer])


def test_compressed_messages_are_inflated():
    ws, hub, _, peer = deflate_pair(100_000)
    ws.data_received(peer.send(events.TextMessage('a' * 50_000)))
    ws.data_received(peer.send(events.BytesMessage(b'b' * 1000,
                                                   message_finished=False)))
    ws.data_received(peer.send(events.Ping(b'between')))
    ws.data_received(peer.send(events.BytesMessage(b'c' * 1000)))
    assert hub.told == [(_msg.M_WS_MESSAGE, 7, 'a' * 50_000),
                        (_msg.M_WS_MESSAGE, 7, b'b' * 1000 + b'c' * 1000)]


def test_a_deflate_bomb_stops_at_the_limit():
    ws, hub, extension, peer = deflate_pair(65536)
    data = peer.send(events.BytesMessage(b'\0' * 20_000_000))
    assert len(data) < 100_000  # 20 MB of zeros compress to little
    ws.data_received(data)
    assert hub.told == [(_msg.M_WS_CLOSED, 7, 1009, hub.told[0][3])]
    assert extension.inflated <= 65536 + 1  # never inflated further


# -- a worker that falls behind: its sessions are held back ------------------

@pytest.fixture
def behind():
    """A session whose worker's pipe is a real one nobody reads (yet)."""
    read_fd, write_fd = _channel.make_pipe()
    os.set_blocking(read_fd, False)
    os.set_blocking(write_fd, False)
    ws, hub, connection, peer = session(max_message_size=64 * 1024)
    hub.outgoing = ws.handle.out = _channel.OutBuffer(write_fd)
    yield ws, hub, connection, peer, read_fd
    os.close(read_fd)
    os.close(write_fd)


def send_binary(ws, peer, size):
    ws.data_received(peer.send(events.BytesMessage(data=b'z' * size)))


def test_a_session_is_held_back_past_the_limit_and_read_again_at_half(
        behind):
    ws, hub, connection, peer, read_fd = behind
    sent = 0
    while connection.reading:
        send_binary(ws, peer, 60000)
        ws.handle.out.flush()   # as the loop does: the pipe fills first
        sent += 1
        assert sent < 1000, 'never held back'
    assert ws.paused and hub.paused == {ws.handle: {ws}}
    assert len(ws.handle.out) > hub.backlog_limit
    hub.drained(ws.handle)   # nothing taken yet: still held
    assert not connection.reading
    while len(ws.handle.out) > hub.backlog_limit // 2:
        while True:          # the worker reads
            try:
                if not os.read(read_fd, 1 << 20):
                    break
            except BlockingIOError:
                break
        ws.handle.out.flush()
    hub.drained(ws.handle)
    assert connection.reading and not ws.paused and hub.paused == {}
    told = [m for m in hub.told if m[0] == _msg.M_WS_MESSAGE]
    assert len(told) == sent  # nothing dropped on the way


def test_a_held_session_that_ends_is_forgotten(behind):
    ws, hub, connection, peer, _ = behind
    while connection.reading:
        send_binary(ws, peer, 60000)
        ws.handle.out.flush()
    ws.finish(1000, '')
    assert hub.paused == {} and not ws.paused


def test_the_limit_fits_two_of_the_largest_messages():
    hub = FakeHub(max_message_size=16 << 20)
    assert hub.backlog_limit == 32 << 20
    assert FakeHub(max_message_size=1000).backlog_limit == _ws.BACKLOG_MIN
