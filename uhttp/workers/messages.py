"""The values that cross between dispatcher and workers.

`Request` is what a handler receives, `Response` what the dispatcher's
`on_response()` hook sees (and what a handler may return), `DEFERRED` the
"I will answer later" return value. The message kinds below are the wire
protocol of `channel.py`; each message is a tuple whose first item is its
kind.
"""

import json as _json
from collections.abc import Mapping as _Mapping

from .bodyview import BYTES_LIKE, RequestBody, as_body
from .http import serialize as _serialize
from .fileresponse import FileResponse

to_json = _serialize.to_json  # NaN, inf: no JSON

# dispatcher -> worker
M_REQUEST = 1       # (M_REQUEST, seq, request_id, method, path, query, headers,
#                      body, parsed, remote_address, context)
M_CONFIG = 2        # (M_CONFIG, config)
M_STOP = 3          # (M_STOP,)
M_DISCONNECT = 4    # (M_DISCONNECT, request_id)
M_WS_MESSAGE = 5    # (M_WS_MESSAGE, request_id, str | bytes) a whole message
M_WS_CLOSED = 6     # (M_WS_CLOSED, request_id, code, reason) the WebSocket
#                      ended (sent once per accepted one): call on_ws_close()

# worker -> dispatcher
W_READY = 20        # (W_READY,) setup() finished
W_RESPONSE = 21     # (W_RESPONSE, request_id, status, headers, body, kind, cookies
#                      [, route, started])
W_DEFERRED = 22     # (W_DEFERRED, request_id[, route, started]) handler returned,
#                      answer comes later
W_STREAM_START = 23  # (W_STREAM_START, request_id, status, headers, cookies
#                       [, route, started])
W_STREAM_DATA = 24  # (W_STREAM_DATA, request_id, bytes)
W_STREAM_END = 25   # (W_STREAM_END, request_id)
W_LOG = 26          # (W_LOG, name, level, text)
W_PAUSE = 27        # (W_PAUSE,)
W_RESUME = 28       # (W_RESUME,)
W_BOUNCE = 29       # (W_BOUNCE, request_id, seq) taken while paused: give to another
W_FORWARD = 30      # (W_FORWARD, route, data)
W_RETURNED = 31     # (W_RETURNED, [seq, ...]) recalled: these were never started
W_ROUTES = 32       # (W_ROUTES, (pattern text, ...)) once, as the worker's loop starts
W_METRICS = 33      # (W_METRICS, deltas) user metrics since the last one (metrics.py)
# The optional `route, started` of an answer: the index in the worker's
# W_ROUTES of the @api pattern that matched (-1: none did) and the
# time.monotonic() at which the worker started the request. A worker may
# leave them out (the dispatcher then counts the route as '').
NO_ROUTE = -1
W_WS_ACCEPT = 34    # (W_WS_ACCEPT, request_id, subprotocol, headers) answer 101
W_WS_SEND = 35      # (W_WS_SEND, request_id, str | bytes) a text or binary message
W_WS_CLOSE = 36     # (W_WS_CLOSE, request_id, code, reason) start the close handshake
W_FILE_RESPONSE = 37  # (W_FILE_RESPONSE, request_id, status, headers, cookies
#                        [, route, started]) answer with the file whose
#                        descriptor came first on the descriptor socket (files.py)
W_SHARED_RESPONSE = 38  # W_RESPONSE's, with the body in shared memory (sharedbody.py)

# body kinds: how the dispatcher can rebuild `Response.data` when asked
BODY_NONE = 0
BODY_JSON = 1
BODY_TEXT = 2
BODY_BYTES = 3

CONTENT_TYPE_JSON = 'application/json'
CONTENT_TYPE_TEXT = 'text/html; charset=UTF-8'
CONTENT_TYPE_BYTES = 'application/octet-stream'
CONTENT_TYPE_EVENT_STREAM = 'text/event-stream'
CONTENT_TYPE_NDJSON = 'application/x-ndjson'


class _Deferred:
    """Returned by a handler that will answer later with request.respond()."""

    _instance = None

    def __new__(cls):
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self):
        return 'DEFERRED'

    def __reduce__(self):
        return (_Deferred, ())


DEFERRED = _Deferred()


class RejectRequest(Exception):
    """Raise from do_check() (dispatcher or worker) or a handler to refuse.

    Answers `data` with `status`, unless the request was already answered.
    """

    def __init__(self, data=None, status=403):
        super().__init__(data, status)
        self.data = {'error': 'Rejected'} if data is None else data
        self.status = status

    def __repr__(self):
        return f"RejectRequest(data={self.data!r}, status={self.status!r})"


class ResponseError(ValueError):
    """A handler's result that cannot become an HTTP response."""


def check_status(status):
    if not _serialize.final_status(status):
        raise ResponseError(f"bad HTTP status {status!r} (an int 200..599)")
    return status


def checked_refusal(result, name='do_check'):
    """A check hook's (`name`'s) result other than None: a Response, or a
    (data, status [, headers]) tuple with a valid status; ResponseError
    otherwise."""
    if isinstance(result, Response) or (
            type(result) is tuple and 2 <= len(result) <= 3
            and check_status(result[1])):
        return result
    raise ResponseError(
        f"{name}() must return None or (data, status), not {result!r}")


def _check_token(value, what):
    value = value if isinstance(value, str) else str(value)
    if '\r' in value or '\n' in value or '\0' in value:
        raise ResponseError(f"{what} contains CR, LF or NUL: {value!r}")
    return value


def check_headers(headers):
    """Validate response headers, returning them as a list of (name, value)
    as the dispatcher will send them (bytes as given; a repeated name or
    a list value joined with ', ', except Set-Cookie: one line each)."""
    if not headers:
        return None
    try:
        items = list(headers.items() if isinstance(headers, _Mapping)
                     else headers)
    except TypeError as err:
        raise ResponseError(
            f"headers must be a dict, not {type(headers).__name__}") from err
    for item in items:
        if not isinstance(item, (tuple, list)) or len(item) != 2:
            raise ResponseError(f"bad header item {item!r}")
    try:
        return _serialize.joined_fields(items)
    except ValueError as err:
        raise ResponseError(str(err)) from None


def check_cookies(cookies):
    """Validate Set-Cookie values: {name: value} (None deletes), as the
    dispatcher will send them."""
    try:
        return _serialize.check_cookies(cookies)
    except (TypeError, ValueError) as err:
        raise ResponseError(str(err)) from None


def encode_body(data):
    """Turn a handler's data into (body bytes, kind, default content type)."""
    if data is None:
        return b'', BODY_NONE, None
    if isinstance(data, BYTES_LIKE):
        return as_body(data), BODY_BYTES, CONTENT_TYPE_BYTES
    if isinstance(data, str):
        return data.encode('utf-8'), BODY_TEXT, CONTENT_TYPE_TEXT
    try:
        return to_json(data).encode('utf-8'), BODY_JSON, CONTENT_TYPE_JSON
    except (TypeError, ValueError, RecursionError) as err:
        raise ResponseError(
            f"result of type {type(data).__name__} cannot be sent: {err}") from err


def decode_body(body, kind):
    """Rebuild the data a worker sent, for the dispatcher's hooks."""
    if kind == BODY_JSON:
        return _json.loads(body)
    if kind == BODY_TEXT:
        return body.decode('utf-8')
    if kind == BODY_BYTES:
        return body
    return None


def format_event(data=None, event=None, event_id=None, retry=None):
    """One Server-Sent Event in wire format, as bytes."""
    lines = []
    if event_id is not None:
        lines.append(f'id: {_check_token(event_id, "event id")}')
    if event is not None:
        lines.append(f'event: {_check_token(event, "event name")}')
    if retry is not None:
        if isinstance(retry, bool) or not isinstance(retry, int) or retry < 0:
            raise ValueError(f"retry must be a non-negative int (ms), not {retry!r}")
        lines.append(f'retry: {retry}')
    if data is not None:
        if isinstance(data, (bytes, bytearray)):
            data = bytes(data).decode('utf-8')
        if not isinstance(data, str):
            data = to_json(data)
        for line in data.replace('\r\n', '\n').replace('\r', '\n').split('\n'):
            lines.append(f'data: {line}')
    if not lines:
        return b':\n\n'  # a comment: keeps the stream alive, no event
    lines.append('\n')
    return '\n'.join(lines).encode('utf-8')


class Response:
    """A response: what `on_response()` receives, what a handler may return.

    `Response(None, data=..., status=..., headers=..., cookies=...)`; the
    request id is filled in when a handler returns it.
    """

    __slots__ = ('request_id', '_data', 'status', 'headers', 'cookies',
                 '_body', '_kind')

    def __init__(self, request_id=None, data=None, status=200, headers=None,
                 cookies=None):
        self.request_id = request_id
        self._data = data
        self.status = status
        self.headers = headers
        self.cookies = cookies
        self._body = None
        self._kind = None

    @property
    def data(self):
        """The data the handler answered with (decoded on first use)."""
        if self._kind is not None:
            try:
                self._data = decode_body(self._body, self._kind)
            except ValueError:
                self._data = self._body
            self._kind = None
        return self._data

    @data.setter
    def data(self, value):
        self._data = value
        self._kind = self._body = None  # the body is that of the new data

    @property
    def body(self):
        """The encoded body bytes, as sent to the client."""
        if self._body is None:
            self._body = encode_body(self._data)[0]
        return self._body

    def __repr__(self):
        return f"Response(request_id={self.request_id!r}, status={self.status!r})"


class Request(RequestBody):
    """A request as a worker sees it.

    Fields: request_id, method, path, path_params, query, data, body_file,
    headers, cookies (parsed on first use), content_type, remote_address,
    context.
    Answer later with respond(); stream with response_stream() and
    send_event()/send_chunk(), or response_ndjson() and send_ndjson().
    """

    __slots__ = (
        'request_id', 'method', 'path', 'path_params', 'query', 'data',
        'headers', 'remote_address', 'context', '_content_type', '_cookies',
        '_worker', '_state', '_released', '_handler', '_route', '_started',
        '__dict__')   # attributes of the user's own: request.user = ...

    # _state values
    _OPEN = 0
    _ANSWERED = 1
    _STREAMING = 2
    _CLOSED = 3

    def __init__(self, request_id=-1, method='GET', path='/', query=None,
                 data=None, headers=None, content_type=None,
                 remote_address=None, context=None, path_params=None):
        self.request_id = -1 if request_id is None else request_id
        self.method = method
        self.path = path
        self.query = query
        self.data = data
        self.headers = {} if headers is None else headers
        self._content_type = content_type
        self.remote_address = remote_address
        self.context = context
        self.path_params = {} if path_params is None else path_params
        self._cookies = self._worker = self._handler = self._started = None
        self._state = self._OPEN
        self._released = False
        self._route = NO_ROUTE

    def __repr__(self):
        return (f"Request(request_id={self.request_id!r}, "
                f"method={self.method!r}, path={self.path!r})")

    def __reduce__(self):
        return (_rebuild_request, (
            self.request_id, self.method, self.path, self.query, self.data,
            self.headers, self._content_type, self.remote_address,
            self.context, self.path_params))

    @property
    def content_type(self):
        """The Content-Type of the body ('' when absent)."""
        if self._content_type is not None:
            return self._content_type
        return self.headers.get('content-type', '')

    @content_type.setter
    def content_type(self, value):
        self._content_type = value

    @property
    def cookies(self):
        """Request cookies as a dict, parsed from the Cookie header on first use."""
        if self._cookies is None:
            self._cookies = parse_cookies(self.headers.get('cookie'))
        return self._cookies

    @property
    def is_open(self):
        """True until answered, ended or disconnected."""
        return self._state in (self._OPEN, self._STREAMING)

    @property
    def is_streaming(self):
        return self._state == self._STREAMING

    # -- answering -------------------------------------------------------

    def _sender(self, what):
        worker = self._worker
        if worker is None:
            raise RuntimeError(
                f"{what}() works only on a request a worker received")
        return worker

    def _no_stream(self, what):
        return self._sender(what).not_streaming(self, what)

    def respond(self, data=None, status=200, headers=None, cookies=None):
        """Answer the request (for DEFERRED requests, from anywhere in the worker).

        Returns True when the answer was sent, False when the request was
        already answered or its client has gone.
        """
        worker = self._sender('respond')
        if self._state != self._OPEN:
            return self._answered_already(worker, 'respond')
        return worker.send_response(self, data, status, headers, cookies)

    def _answered_already(self, worker, what):
        """False, with a WARNING unless its client left or its stream ended."""
        if self._state == self._ANSWERED or self._state == self._STREAMING:
            worker.log.warning("%s() on request %s that was already answered",
                               what, self.request_id)
        return False

    def response_stream(self, content_type=None, headers=None, cookies=None):
        """Start a streamed response (default text/event-stream, no caching)."""
        worker = self._sender('response_stream')
        if self._state != self._OPEN:
            return self._answered_already(worker, 'response_stream')
        return worker.start_stream(
            self, content_type or CONTENT_TYPE_EVENT_STREAM, headers, cookies)

    def response_ndjson(self, headers=None, cookies=None):
        """Start an NDJSON stream (application/x-ndjson)."""
        return self.response_stream(CONTENT_TYPE_NDJSON, headers, cookies)

    def send_event(self, data=None, event=None, event_id=None, retry=None):
        """Send one Server-Sent Event; dict/list data goes as JSON."""
        if self._state != self._STREAMING:
            return self._no_stream('send_event')
        return self._worker.stream_data(
            self, format_event(data, event, event_id, retry))

    def send_chunk(self, data):
        """Send raw bytes (or str, as UTF-8) on the stream."""
        if self._state != self._STREAMING:
            return self._no_stream('send_chunk')
        return self._worker.stream_data(self, _serialize.chunk_bytes(data))

    def send_ndjson(self, obj):
        """Send one JSON value as a line of an NDJSON stream."""
        if self._state != self._STREAMING:
            return self._no_stream('send_ndjson')
        return self._worker.stream_data(
            self, to_json(obj).encode('utf-8') + b'\n')

    def response_stream_end(self):
        """End the stream and close the connection."""
        if self._state != self._STREAMING:
            return self._no_stream('response_stream_end')
        return self._worker.end_stream(self)


def response_from_wire(request_id, status, headers, body, kind, cookies):
    """The Response a worker's W_RESPONSE describes; its data is decoded
    from `body` only when asked for."""
    response = Response(request_id, None, status,
                        dict(headers) if headers else {}, cookies)
    response._body = body
    response._kind = kind
    return response


def _rebuild_request(*args):
    return Request(*args)


def parse_cookies(raw):
    """Parse a Cookie header into a dict (later duplicates do not override)."""
    cookies = {}
    if not raw:
        return cookies
    for part in raw.split(';'):
        name, sep, value = part.partition('=')
        if not sep:
            continue
        name = name.strip()
        if name and name not in cookies:
            value = value.strip()
            if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
                value = value[1:-1]
            cookies[name] = value
    return cookies


# -- a handler's answer as a W_RESPONSE message ------------------------------------

def response_message(request_id, data, status, headers=None, cookies=None):
    """Build the W_RESPONSE message for a handler's answer (may raise
    ResponseError)."""
    if isinstance(data, Response):
        response = data
        response.request_id = request_id  # filled in for the handler
        data = response.data
        status = response.status
        headers = response.headers
        cookies = response.cookies
    if isinstance(data, FileResponse):
        from . import files as _files  # pylint: disable=import-outside-toplevel
        return _files.file_message(request_id, data, status, headers, cookies)
    check_status(status)
    headers = check_headers(headers)
    cookies = check_cookies(cookies)
    body, kind, content_type = encode_body(data)
    if content_type is not None:
        if headers is None:
            headers = [('content-type', content_type)]
        elif not any(name.lower() == 'content-type' for name, _ in headers):
            headers.append(('content-type', content_type))
    return (W_RESPONSE, request_id, status, headers, body, kind, cookies)


def error_message(request_id, status, text=None):
    text = text or {400: 'Bad Request', 404: 'Not Found',
                    500: 'Internal Server Error'}.get(status, 'Error')
    body = _json.dumps({'error': text}).encode()
    return (W_RESPONSE, request_id, status,
            [('content-type', CONTENT_TYPE_JSON)], body, BODY_JSON, None)


def split_result(result):
    """(data, status, headers) from a handler's return value."""
    if type(result) is tuple and 2 <= len(result) <= 3 and isinstance(
            result[1], int) and not isinstance(result[1], bool):
        if len(result) == 2:
            return result[0], result[1], None
        return result
    return result, 200, None


# -- a Request's answering state (kept out of the handler's view) --------------

def attach(request, sender):
    """Let `request` answer through `sender` (the worker's state)."""
    request._worker = sender


def sender_of(request):
    """The worker state `request` answers through, or None."""
    return request._worker


def is_unanswered(request):
    """True until the request is answered, streamed or closed."""
    return request._state == Request._OPEN


def mark_answered(request):
    request._state = Request._ANSWERED
    request._released = True


def mark_streaming(request):
    request._state = Request._STREAMING
    request._released = True


def mark_closed(request):
    request._state = Request._CLOSED


def is_released(request):
    """True once the worker told the dispatcher how the handler ended."""
    return request._released


def mark_released(request):
    request._released = True


def set_handler(request, handler):
    """Remember which handler failed, for the error log."""
    request._handler = handler


def handler_of(request):
    return request._handler


def set_route(request, route, started=None):
    """Remember the matched route's index (and, given, when the request
    started) for the dispatcher's metrics."""
    request._route = NO_ROUTE if route is None else route
    if started is not None:
        request._started = started


def route_info(request):
    """The (route, started) an answer to `request` carries."""
    return request._route, request._started

