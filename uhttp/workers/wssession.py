"""WebSockets in the dispatcher: the handshake checks, one session per
upgraded connection, and the hub that relays whole messages to workers.

The upgrade GET is routed like any pooled request (do_check first); the
worker's @websocket handler accepts or rejects it. On W_WS_ACCEPT the
dispatcher answers 101 and the connection is handed to a `WsSession`, which
feeds wsproto's frame-level state machine (masking, fragmentation, UTF-8,
close handshake, permessage-deflate) and passes whole messages to the worker
that accepted it. An accepted session is a stream for the pending table (no
deadline, no window slot) and held by its worker, so the worker's death
ends it through the usual path: `Connection.end_stream()` calls
`WsSession.ended()`, which closes with 1011 (1001 while shutting down).

Every accepted session tells its worker M_WS_CLOSED exactly once (unless
the worker is dead), so the worker calls on_ws_close() exactly once.
"""

import base64 as _base64
import binascii as _binascii
import hashlib as _hashlib
import time as _time

from wsproto.connection import Connection as _WsConnection
from wsproto.connection import ConnectionState as _State
from wsproto.connection import ConnectionType as _Type
from wsproto import events as _events
from wsproto.handshake import server_extensions_handshake as _extensions
from wsproto.utilities import LocalProtocolError as _LocalProtocolError
from wsproto.utilities import ProtocolError as _ProtocolError

from . import channel as _channel
from . import log as _log
from . import messages as _msg
from . import streamhold as _streamhold
from .http import serialize as _serialize
from .pending import (PENDING_COMPLETED, PENDING_DISCONNECTED,
                      PENDING_STREAM_CLOSED)
from .wsdeflate import BoundedDeflate

_GUID = b'258EAFA5-E914-47DA-95CA-C5AB0DC85B11'
CLOSE_TIMEOUT = 5.0       # a close frame's answer waits this long at most
# messages waiting for a worker: past this many bytes (or two of the
# largest messages), its WebSockets stop being read until half is gone
BACKLOG_MIN = 4 << 20
_monotonic = _time.monotonic

# close codes
NORMAL = 1000
GOING_AWAY = 1001
ABNORMAL = 1006
POLICY = 1008
TOO_BIG = 1009
INTERNAL = 1011


def _tokens(value):
    return {part.strip().lower() for part in (value or '').split(',')}


def asks_websocket(headers):
    """True when request `headers` (lower-case names) ask for a WebSocket
    upgrade: 'websocket' is one of the Upgrade header's tokens. The one
    check of both sides: the dispatcher's handshake checks run exactly
    when a worker's @websocket handler takes the request for one."""
    value = headers.get('upgrade') if headers else None
    return value is not None and 'websocket' in _tokens(value)


def is_upgrade(client):
    """True when the request asks for a WebSocket upgrade."""
    return asks_websocket(client.headers)


def handshake_error(client, origins=None):
    """(status, text, headers) refusing a bad upgrade request, or None
    (RFC 6455 section 4.2.1; `origins`, when given, the Origin values
    allowed)."""
    headers = client.headers
    if client.method != 'GET' or client.protocol != 'HTTP/1.1':
        return 400, 'WebSocket upgrade needs GET over HTTP/1.1', None
    if 'upgrade' not in _tokens(headers.get('connection')):
        return 400, 'Connection: Upgrade missing', None
    if headers.get('sec-websocket-version', '').strip() != '13':
        return (426, 'Unsupported WebSocket version',
                {'sec-websocket-version': '13', 'upgrade': 'websocket'})
    try:
        key = _base64.b64decode(headers.get('sec-websocket-key', ''),
                                validate=True)
    except (_binascii.Error, ValueError):
        key = b''
    if len(key) != 16:
        return 400, 'Bad Sec-WebSocket-Key', None
    if origins is not None and headers.get('origin') not in origins:
        return 403, 'Origin not allowed', None
    return None


def accept_token(key):
    digest = _hashlib.sha1(key.strip().encode('ascii') + _GUID).digest()
    return _base64.b64encode(digest).decode('ascii')


def switching_head(request_headers, subprotocol, extra, extensions,
                   max_message_size=1 << 20):
    """The 101 answer's head (bytes), and the extensions agreed on
    (permessage-deflate when `extensions` and the client offers it)."""
    lines = ['HTTP/1.1 101 Switching Protocols', 'Upgrade: websocket',
             'Connection: Upgrade',
             'Sec-WebSocket-Accept: ' + accept_token(
                 request_headers['sec-websocket-key'])]
    if subprotocol:
        lines.append('Sec-WebSocket-Protocol: ' + subprotocol)
    agreed = []
    offers = request_headers.get('sec-websocket-extensions')
    if offers and extensions:
        deflate = BoundedDeflate(max_message_size)
        try:
            value = _extensions(
                [part for part in offers.split(',') if part.strip()], [deflate])
        except ValueError:  # a parameter that is no number ('bits=abc')
            value = None    # RFC 7692 7.1: such an offer is declined
        if value is not None:
            lines.append('Sec-WebSocket-Extensions: ' + value.decode('ascii'))
            deflate.finalize(value.decode('ascii'))
            agreed.append(deflate)
    for name, lower, value in _serialize.header_fields(extra):
        if lower not in _SWITCHING_OWN:   # ours: never twice, never other
            lines.append(f'{name}: {value}')
    return ('\r\n'.join(lines) + '\r\n\r\n').encode(
        'utf-8', 'surrogateescape'), agreed


_SWITCHING_OWN = frozenset((
    'upgrade', 'connection', 'sec-websocket-accept', 'sec-websocket-protocol',
    'sec-websocket-extensions', 'content-length', 'transfer-encoding'))


class WsSession:
    """One accepted WebSocket: wsproto fed by its connection's bytes."""

    def __init__(self, hub, pending, handle, extensions=()):
        self.hub = hub
        self.pending = pending
        self.request_id = pending.request_id
        self.connection = pending.client
        self.handle = handle
        self.proto = _WsConnection(_Type.SERVER, list(extensions))
        self.parts = []
        self.size = 0
        self.last_seen = _monotonic()
        self.awaiting_pong = False
        self.closing_since = None
        self.close_code = None    # what the worker is told
        self.close_reason = ''    # with the code: the reason it gave
        self.finished = False
        self.paused = False       # not read while its worker is behind

    # -- bytes in ----------------------------------------------------------

    def data_received(self, data):
        self.last_seen = _monotonic()
        try:
            self.proto.receive_data(data)
        except _ProtocolError:
            return
        for event in self.proto.events():
            if self.finished:
                return
            try:
                self.on_event(event)
            except _LocalProtocolError:  # a frame no longer ours to send
                pass                     # in this state: not sent

    def on_event(self, event):
        if isinstance(event, _events.Message):
            self.on_fragment(event)
        elif isinstance(event, _events.Ping):
            if self.proto.state == _State.OPEN:  # not once a close crossed
                self.write(self.proto.send(event.response()))
        elif isinstance(event, _events.Pong):
            self.awaiting_pong = False
        elif isinstance(event, _events.CloseConnection):
            self.on_close(event)

    def on_fragment(self, event):
        data = event.data
        if isinstance(data, str) and not data.isascii():
            self.size += len(data.encode('utf-8'))  # the limit is in bytes
        else:
            self.size += len(data)
        if self.size > self.hub.max_message_size:
            self.abort(TOO_BIG, 'message too big')
            return
        self.parts.append(event.data)
        if not event.message_finished:
            return
        parts, self.parts, self.size = self.parts, [], 0
        if isinstance(event, _events.TextMessage):
            message = parts[0] if len(parts) == 1 else ''.join(parts)
        else:
            message = bytes(parts[0]) if len(parts) == 1 else b''.join(parts)
        self.hub.tell(self.handle, (_msg.M_WS_MESSAGE, self.request_id, message))
        self.hub.check_backlog(self)

    def on_close(self, event):
        code, reason = event.code, event.reason or ''
        state = self.proto.state
        if state == _State.OPEN:
            # the peer broke the protocol (bad UTF-8 1007, unmasked frame
            # 1002, ...): wsproto made the code, we close with it (a
            # message inflating past the limit: its reason is ours)
            self.abort(code, 'message too big' if code == TOO_BIG else reason)
        elif state == _State.REMOTE_CLOSING:  # the peer closed
            if code in (1005, ABNORMAL):
                answer = _events.CloseConnection(NORMAL)
            else:
                answer = _events.CloseConnection(code, reason)
            self.write(self.proto.send(answer))
            self.finish(code, reason, by_client=True)
        else:  # the answer to our close frame
            self.finish(self.close_code or code, reason)

    def connection_lost(self):
        """The socket closed without a close handshake."""
        self.finish(self.close_code or ABNORMAL, '', drop=False,
                    by_client=self.close_code is None)

    # -- bytes out ---------------------------------------------------------

    def write(self, data):
        if not data:
            return True
        hold = self.hub.core.streamhold
        if hold.can_hold(self.handle):   # queued; its worker held back
            if not self.connection.stream_send(data):
                return False
            hold.sent(self.handle, self.connection, self.stalled)
            return True
        if not self.connection.send_raw(data):
            if self.connection.is_open:
                self.hub.log.warning(
                    "websocket %s dropped: the client does not read fast "
                    "enough (send buffer limit %d bytes)", self.request_id,
                    self.connection.max_send_buffer_size)
            self.finish(POLICY, 'slow reader', flush=False)
            return False
        return True

    def stalled(self):
        """Its client read nothing while it held its worker back."""
        if not self.finished and self.connection.is_open:
            self.hub.log.warning(
                "websocket %s dropped: its client read nothing for %ss with "
                "%d bytes waiting", self.request_id, _streamhold.STALL_LIMIT,
                self.connection.send_buffer_size)
            self.finish(POLICY, 'slow reader', flush=False, by_client=True)

    def send_message(self, message):
        if self.proto.state != _State.OPEN:
            return
        self.write(self.proto.send(_events.Message(data=message)))

    def ping(self, now):
        if self.proto.state == _State.OPEN:
            self.awaiting_pong = True
            self.write(self.proto.send(_events.Ping(b'uhttp')))

    def close(self, code=NORMAL, reason=''):
        """Start the close handshake (the worker is told once it ends)."""
        if self.finished or self.proto.state != _State.OPEN:
            return
        self.close_code, self.close_reason = code, reason
        self.closing_since = now = _monotonic()
        self.hub.core.loop.call_at(now + CLOSE_TIMEOUT, self.close_timed_out)
        self.write(self.proto.send(_events.CloseConnection(code, reason)))

    def close_timed_out(self, now):
        """The peer never answered our close frame: end without it (a
        session its worker holds back is not read, so it waits on)."""
        if self.finished:
            return
        if self.paused:
            self.hub.core.loop.call_at(now + CLOSE_TIMEOUT,
                                       self.close_timed_out)
            return
        self.finish(self.close_code or ABNORMAL, self.close_reason,
                    flush=False)

    def abort(self, code, reason):
        """Send a close frame and end now, without waiting for its answer.
        The client may still be sending (the rest of a message too big):
        the socket lingers, reading it, so that a reset does not take the
        close frame with it."""
        if self.proto.state == _State.OPEN:
            if not self.write(self.proto.send(
                    _events.CloseConnection(code, reason))):
                return
        self.connection.linger_on_close()
        self.finish(code, reason)

    def ended(self):
        """Connection.end_stream() while the session was still open: the
        server ends it (the worker died or retired, or shutdown)."""
        code = GOING_AWAY if self.hub.core.stopping else INTERNAL
        if self.proto.state == _State.OPEN:
            self.write(self.proto.send(_events.CloseConnection(code)))
            self.connection.linger_on_close()  # for the client's answer
        self.finish(code, '', drop=False, end=False)  # the caller ends it

    def finish(self, code, reason, flush=True, drop=True, end=True,
               by_client=False):
        """The session ends: the worker is told (once), the request ends
        (PENDING_DISCONNECTED when the client closed or left, `by_client`,
        else PENDING_STREAM_CLOSED), the socket closes (after what is
        buffered, when `flush`)."""
        if self.finished:
            return
        self.finished = True
        self.hub.sessions.pop(self.request_id, None)
        if self.paused:
            self.hub.forget_paused(self)
        handle = self.handle
        # nothing more is queued for this client: its worker, held back
        # while the client read slowly, goes on (to hear of the end, and
        # to stop at shutdown) while what is queued drains or is cut
        self.hub.core.streamhold.release(handle, self.connection)
        if handle.alive:
            self.hub.tell(handle, (_msg.M_WS_CLOSED, self.request_id, code,
                                   reason))
        connection = self.connection
        if connection.pending is self.pending:
            connection.pending = None
        if end:
            self.hub.core.end(self.pending, PENDING_DISCONNECTED if by_client
                              else PENDING_STREAM_CLOSED, tell_worker=False)
        if drop:
            connection.release_take_over()
            if flush:
                connection.end_stream()
            else:
                connection.close()


class WsHub:
    """Every WebSocket session of one dispatcher (`core`)."""

    def __init__(self, core):
        self.core = core
        self.log = core.log
        self.sessions = {}       # request_id -> WsSession
        self.timer = False
        self.paused = {}         # worker handle -> its sessions not read

    # the settings in force (configure() may replace them before run())
    ping_interval = property(lambda self: self.core.settings.ws_ping_interval)
    max_message_size = property(
        lambda self: self.core.settings.ws_max_message_size)
    origins = property(lambda self: self.core.settings.ws_origins)
    deflate = property(lambda self: self.core.settings.ws_deflate)

    @property
    def count(self):
        return len(self.sessions)

    @property
    def backlog_limit(self):
        return max(BACKLOG_MIN, 2 * self.max_message_size)

    # -- flow control: a worker that falls behind ---------------------------

    def check_backlog(self, session):
        """Stop reading `session` while its worker has more than
        backlog_limit bytes waiting: the client is slowed down by TCP
        instead of the messages piling up in the dispatcher."""
        out = session.handle.out
        if session.paused or out is None or len(out) <= self.backlog_limit:
            return
        session.paused = True
        self.paused.setdefault(session.handle, set()).add(session)
        session.connection.throttle_reads()

    def drained(self, handle):
        """`handle`'s pipe took some of its backlog: read its sessions
        again once half of the limit is gone."""
        out = handle.out
        if out is not None and len(out) > self.backlog_limit // 2:
            return
        for session in self.paused.pop(handle, ()):
            session.paused = False
            session.last_seen = _monotonic()
            session.connection.resume_reads()

    def forget_paused(self, session):
        waiting = self.paused.get(session.handle)
        if waiting is not None:
            waiting.discard(session)
            if not waiting:
                del self.paused[session.handle]
        session.paused = False

    def tell(self, handle, message):
        self.core.delivery.tell(handle, _channel.pack(message))

    def refuse(self, client):
        """Answer a bad upgrade request; True when it was refused."""
        error = handshake_error(client, self.origins)
        if error is None:
            return False
        status, text, headers = error
        client.respond({'error': text}, status=status, headers=headers)
        return True

    # -- worker messages ---------------------------------------------------

    def accept(self, handle, message):
        _, request_id, subprotocol, headers = message
        item = handle.pool.scheduler.release(handle, request_id)
        pending = self.core.pending.get(request_id)
        client = None if pending is None else pending.client
        if (pending is None or client.pending is not pending
                or not client.is_open or client.response_started):
            if handle.alive:
                self.tell(handle, (_msg.M_WS_CLOSED, request_id, ABNORMAL, ''))
            if pending is not None:
                self.core.end(pending, PENDING_STREAM_CLOSED, tell_worker=False)
            return
        error = handshake_error(client, self.origins)
        if error is not None:  # its checks never ran (they must have): no
            self.core.log.error(  # 101 without a valid key, ever
                "WebSocket accept for %s refused: %s",
                _log.client_text(client.path), error[1])
            self.tell(handle, (_msg.M_WS_CLOSED, request_id, ABNORMAL, ''))
            self.core.fail(pending, error[0], {'error': error[1]},
                           PENDING_COMPLETED, error[2])
            return
        try:
            head, agreed = switching_head(client.headers, subprotocol,
                                          headers, self.deflate,
                                          self.max_message_size)
        except ValueError as err:   # its headers cannot make a head
            self.core.log.error("WebSocket accept for %s refused: %s",
                                _log.client_text(client.path), err)
            self.tell(handle, (_msg.M_WS_CLOSED, request_id, ABNORMAL, ''))
            self.core.fail(pending, 500, None, PENDING_COMPLETED)
            return
        handle.held[request_id] = item if item is not None else pending
        self.core.pending.stream_started(pending)
        now = self.core.now()
        pending.status = 101   # counted and logged as switched, not as 499
        pending.head_at = now
        session = WsSession(self, pending, handle, agreed)
        self.sessions[request_id] = session
        self.arm(now)
        client.take_over(head, session)

    def send(self, handle, message):
        session = self.sessions.get(message[1])
        if session is not None and session.handle is handle:
            session.send_message(message[2])

    def close(self, handle, message):
        session = self.sessions.get(message[1])
        if session is not None and session.handle is handle:
            session.close(message[2], message[3])

    # -- keepalive ---------------------------------------------------------

    def arm(self, now):
        if not self.timer and self.ping_interval:
            self.timer = True
            self.core.loop.call_at(now + self.ping_interval, self.ping_round)

    def ping_round(self, now):
        """Ping the quiet, close those that did not answer the last ping."""
        self.timer = False
        quiet = now - self.ping_interval / 2
        for session in list(self.sessions.values()):
            if session.paused:  # not read on purpose: no pong can come
                session.last_seen = now
                session.awaiting_pong = False
                continue
            if session.closing_since is not None:
                continue  # ends by its answer or close_timed_out()
            if session.awaiting_pong:
                session.abort(INTERNAL, 'keepalive ping timeout')
            elif session.last_seen < quiet:
                session.ping(now)
        if self.sessions:
            self.arm(now)
