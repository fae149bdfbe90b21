"""WebSockets in the worker: the `WebSocket` a @websocket handler receives,
and the messages the dispatcher sends about it.

The handler runs like any request handler. `ws.accept()` tells the
dispatcher to answer 101 (W_WS_ACCEPT); `ws.reject()`, or returning
without a decision, gives an HTTP answer (403 by default). From then on
`ws.send()` and `ws.close()` work from anywhere in the worker; whole
messages arrive through `Worker.on_ws_message(ws, message)` and the end,
once, through `Worker.on_ws_close(ws, code, reason)`.
"""

import traceback as _traceback

from . import backlog as _backlog
from . import messages as _msg
from . import namespace as _ns
from . import routing as _routing
from .wssession import asks_websocket

_NEW = 0
_ACCEPTED = 1
_REJECTED = 2
_CLOSING = 3
_CLOSED = 4


class WebSocket:
    """A WebSocket connection as a worker sees it.

    Fields of its upgrade request: request_id, path, path_params, query,
    headers, cookies, remote_address, context; `subprotocols` the client
    offered, `subprotocol` the one chosen. Attributes of the user's own
    may be set (ws.user = ...); the internal ones start with '_'.
    """

    __slots__ = ('request_id', 'path', 'path_params', 'query', 'headers',
                 'remote_address', 'context', 'subprotocol', '_request',
                 '_state', '_answer', '__dict__')

    def __init__(self, request):
        self._request = request
        self.request_id = request.request_id
        self.path = request.path
        self.path_params = request.path_params
        self.query = request.query
        self.headers = request.headers
        self.remote_address = request.remote_address
        self.context = request.context
        self.subprotocol = None
        self._state = _NEW
        self._answer = None

    def __repr__(self):
        return f"WebSocket(request_id={self.request_id!r}, path={self.path!r})"

    @property
    def cookies(self):
        return self._request.cookies

    @property
    def subprotocols(self):
        value = self.headers.get('sec-websocket-protocol') or ''
        return [part.strip() for part in value.split(',') if part.strip()]

    @property
    def is_open(self):
        """True from accept() until close() or the end of the connection."""
        return self._state == _ACCEPTED

    def _runtime(self):
        worker = _msg.sender_of(self._request)
        if worker is None or worker.runtime is None:
            raise RuntimeError("WebSocket works only inside a running worker")
        return worker.runtime

    def accept(self, subprotocol=None, headers=None):
        """Accept the upgrade (101), choosing one of `subprotocols` or none."""
        if self._state != _NEW:
            raise RuntimeError("accept() after the WebSocket was answered")
        if subprotocol is not None and subprotocol not in self.subprotocols:
            raise ValueError(f"subprotocol {subprotocol!r} was not offered "
                             f"(offered: {self.subprotocols})")
        headers = _msg.check_headers(headers) or []
        runtime = self._runtime()
        self._state = _ACCEPTED
        self.subprotocol = subprotocol
        _msg.mark_streaming(self._request)
        runtime.websockets[self.request_id] = self
        runtime.send((_msg.W_WS_ACCEPT, self.request_id, subprotocol, headers))
        return True

    def reject(self, data=None, status=403):
        """Refuse the upgrade with an HTTP answer."""
        if self._state != _NEW:
            raise RuntimeError("reject() after the WebSocket was answered")
        _msg.check_status(status)  # (a bad status leaves it undecided)
        self._answer = (error_data(status) if data is None else data, status)
        self._state = _REJECTED

    def send(self, message):
        """Send a text (str) or binary (bytes) message; False once closed."""
        if self._state != _ACCEPTED:
            return False
        if isinstance(message, (bytearray, memoryview)):
            message = bytes(message)
        elif isinstance(message, str):
            _check_text(message)
        elif not isinstance(message, bytes):
            raise TypeError(f"ws.send() takes str or bytes, not "
                            f"{type(message).__name__}")
        runtime = self._runtime()
        if _backlog.client_gone(runtime, self.request_id):
            return False  # closed: the loop calls on_ws_close next
        runtime.send((_msg.W_WS_SEND, self.request_id, message))
        return True

    def close(self, code=1000, reason=''):
        """Start the close handshake; on_ws_close() follows once it ends."""
        if self._state != _ACCEPTED:
            return False
        if not isinstance(code, int) or not (
                3000 <= code <= 4999 or 1000 <= code <= 1014) or (
                    code in _NOT_SENT):
            raise ValueError(f"invalid close code {code!r}")
        reason = _check_text('' if reason is None else str(reason))
        if len(reason) > 30 and len(reason.encode('utf-8')) > MAX_REASON:
            raise ValueError(
                f"close reason of {len(reason.encode('utf-8'))} bytes: at most "
                f"{MAX_REASON} fit in a close frame")
        self._state = _CLOSING
        self._runtime().send((_msg.W_WS_CLOSE, self.request_id, code, reason))
        return True


def _check_text(text):
    """`text`, once it is known to encode as UTF-8 (UnicodeEncodeError
    here, in the worker, for a lone surrogate, not in the dispatcher)."""
    if not text.isascii():
        text.encode('utf-8')
    return text


MAX_REASON = 123  # bytes: a close frame's payload is at most 125 (RFC 6455)

# reserved (1004), or only reporting what happened (no code, no close
# frame, a TLS failure): RFC 6455 7.4.1, never put in a close frame
_NOT_SENT = frozenset((1004, 1005, 1006, 1015))


def error_data(status):
    return {'error': 'Forbidden' if status == 403 else 'WebSocket refused'}


def target(member, bound, worker):
    """The route table's target for `member`: a @websocket method is
    wrapped so that it gets a WebSocket; others are returned as they are."""
    if not _routing.is_websocket(member):
        return bound

    def run(request):
        return run_handler(bound, request)
    run.__name__ = getattr(bound, '__name__', 'websocket')
    run.__qualname__ = getattr(bound, '__qualname__', run.__name__)
    return run


def run_handler(handler, request):
    """Run a @websocket handler: 426 for a plain request, the handler's
    rejection (403 without a decision), or nothing once accepted."""
    if not asks_websocket(request.headers):  # the dispatcher's own check
        return ({'error': 'Upgrade Required'}, 426, {'upgrade': 'websocket'})
    ws = WebSocket(request)
    try:
        handler(ws)
    finally:  # undecided (or it raised): refused, so never accepted later
        if ws._state == _NEW:  # pylint: disable=protected-access
            ws.reject()
    if ws._state == _REJECTED:  # pylint: disable=protected-access
        return ws._answer  # pylint: disable=protected-access
    return _msg.DEFERRED


def handle_message(worker, runtime, message):
    """M_WS_MESSAGE and M_WS_CLOSED for a WebSocket this worker accepted."""
    if message[0] == _msg.M_WS_MESSAGE:
        ws = runtime.websockets.get(message[1])
        if ws is None:
            return
        _call(worker, 'on_ws_message', ws, message[2])
        return
    ws = runtime.websockets.pop(message[1], None)
    if ws is None:
        return
    ws._state = _CLOSED  # pylint: disable=protected-access
    _msg.mark_closed(ws._request)  # pylint: disable=protected-access
    _call(worker, 'on_ws_close', ws, message[2], message[3])


def _call(worker, name, *args):
    try:
        getattr(worker, name)(*args)
    except Exception as err:  # pylint: disable=broad-except
        _ns.state(worker).log.error("%s(%r) failed: %r\n%s", name, args[0],
                                    err, _traceback.format_exc().rstrip())
