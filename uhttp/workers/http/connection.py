"""The connection glue: uhttp-server's HttpConnection as the dispatcher uses it.

Request heads and chunked bodies are parsed by parse.py, response heads built
by serialize.py; this class feeds them bytes from the socket and keeps
uhttp-server's state (and so its `client` API) in step.
"""

import json as _json
import selectors as _selectors
import ssl as _ssl

import uhttp.server as _server

from ..bodyview import as_bytes
from . import parse as _parse
from .bodyinto import BodyInto
from . import serialize as _serialize
from .canned import SendsCanned
from .closenotify import CloseNotify
from .continuation import Continuation
from .forwarded import ForwardedFor
from .keepalive import KeepAliveCycle
from .linger import LingeringClose
from .sendfile import FILE_ANSWERS, SendFile
from .spoolbody import SpoolBody
from .streamdrain import StreamDrain
from .takeover import TakeOver

EVENT_READ = _selectors.EVENT_READ
EVENT_WRITE = _selectors.EVENT_WRITE

# HttpServer / HttpConnection options a Dispatcher passes through
HTTP_OPTIONS = frozenset((
    'listen', 'max_waiting_clients', 'max_headers_length',
    'max_content_length', 'file_chunk_size',
    'max_send_buffer_size', 'keep_alive_timeout', 'keep_alive_max_requests',
    'request_timeout', 'trusted_proxies', 'send_timeout', 'spool_threshold',
    'spool_dir'))

_GATHER_MIN = 16 * 1024  # bodies above this go out without being joined
_WOULD_BLOCK = (BlockingIOError, InterruptedError, _ssl.SSLWantReadError,
                _ssl.SSLWantWriteError)


def _refusal(err):
    """uhttp-server's error for a ProtocolError (answered, then closed)."""
    return _server.HttpErrorWithResponse(err.status, err.message)


class Connection(Continuation, KeepAliveCycle, TakeOver, StreamDrain, SendFile,
                 SendsCanned, SpoolBody, BodyInto, CloseNotify, LingeringClose,
                 ForwardedFor, _server.HttpConnection):
    """A client connection as the dispatcher uses it.

    The request reads through uhttp-server's properties (method, path,
    query, headers, data, ...) and `body`, the raw bytes; `pending` is the
    request's _PendingRequest while a worker owns it.
    """

    def __init__(self, server, sock, addr, **kwargs):
        self.pending = None
        self.responses = 0
        self.answering = None    # `responses` while a sync handler / do_check runs
        self._chunks = None      # ChunkedBody while a chunked body arrives
        self._ip = None
        self._head = False
        self._hold = False
        self._held = False
        self._parsed = False
        self._value = None
        self._stall = None
        self._taken = None       # the WebSocket session reading the socket
        self.refused_line = None  # a head refused unparsed: its first line
        super().__init__(server, sock, addr, **kwargs)

    # -- request side ----------------------------------------------------------

    def _read_headers(self):
        """Read until the head is complete, then parse it (parse.py).

        The head ends at the first empty line, whether lines end in CRLF
        or LF (uhttp-server looks for one form first, so a pipelined
        request in the other form was swallowed). Lines are split on LF
        only: a bare CR is no line break (it smuggled headers in).
        """
        self._recv_head(self._max_headers_length)  # (its start time too)
        buffer = self._buffer
        block = None
        try:
            end = _parse.head_end(
                buffer, self._headers_scanned, self._max_headers_length)
            if end < 0:
                self._headers_scanned = len(buffer)
                return
            block = bytes(buffer[:end])
            del buffer[:end]
            self._headers_scanned = 0
            head = _parse.parse_head(block, _server.parse_query)
        except _parse.ProtocolError as err:
            # a HEAD request refused before it was parsed still gets no body
            # (also one refused before its head was whole: a 431)
            self.note_head_asked(block)
            raise _refusal(err) from None
        except _server.HttpErrorWithResponse:  # a bad query (parse_query)
            self.note_head_asked(block)
            raise
        self._head = head.method == 'HEAD'
        self._start_request(head)

    def note_head_asked(self, block=None):
        """A request refused before its head was parsed (or whole): tell
        from what came of it whether it is a HEAD one, whose refusal
        carries no body, and keep its first line for the access log."""
        if self._method is None:
            block = bytes(self._buffer) if block is None else block
            self._head = _parse.asks_head(block)
            self.refused_line = _parse.first_line(block)

    def _start_request(self, head):
        """Take a parsed head as this connection's request: the fields
        uhttp-server's properties read, then the body's framing (100
        Continue when asked, the body limit, what is already buffered)."""
        self._method = head.method
        self._url = head.target
        self._protocol = head.protocol
        self._path = head.path
        self._query = head.query
        self._headers = head.headers
        self._headers_repeated = head.repeated
        framing = head.framing
        if framing == _parse.NO_BODY:
            self._content_length = False
            return
        if framing != _parse.CHUNKED and (
                head.content_length > self._max_content_length):
            raise _server.HttpErrorWithResponse(413)  # and no 100 first
        if head.expect_continue and self._continue_or_answer():
            return  # answered from its head: the body is not wanted
        if framing == _parse.CHUNKED:
            self._content_length = False
            self._chunks = _parse.ChunkedBody(
                self._max_content_length, self._max_headers_length)
            self._read_chunks()
            return
        length = self._content_length = head.content_length
        if length:
            self._process_data()

    def process_request(self):
        """uhttp-server's process_request(), plus chunked request bodies,
        and every refusal answered through _answer_refusal() (counted)."""
        if self._socket is None:
            return None
        if self._is_streaming or self._response_started:
            return super().process_request()  # a peer that closes: noticed
        try:
            if self._method is None:
                self._read_headers()
            elif self._chunks is not None:
                self._recv_to_buffer(self._max_content_length)
                self._read_chunks()
            elif self.content_length:
                self._recv_to_buffer(self.content_length)
                self._process_data()
            if self.is_loaded:
                self._requests_count += 1
                return True
            return False
        except _server.HttpErrorWithResponse as err:
            self._answer_refusal(err)
        except _server.ClientError:
            self.close()
        return None

    def _read_chunks(self):
        """Feed buffered bytes to the chunked decoder; once the last chunk
        and trailers are in, the body is loaded (the rest of the buffer is
        the next, pipelined request)."""
        try:
            used = self._chunks.feed(self._buffer)
        except _parse.ProtocolError as err:
            raise _refusal(err) from None
        if used:
            del self._buffer[:used]
        self._spool_chunks()
        if self._chunks.done:
            self._data = self._chunked_body()
            self._data_loaded = True
            self._chunks = None

    @property
    def is_loaded(self):
        if self._chunks is not None:
            return False
        return super().is_loaded

    def _process_data(self):
        length = self.content_length
        if self._spool is not None or self._spool_wanted(length):
            return self._spool_data(length)
        if self._take_large_body(length):
            return
        buffer = self._buffer
        if len(buffer) < length:
            return
        if len(buffer) == length:
            self._data = bytes(buffer)
            self._buffer = bytearray()
        else:  # the rest is the next, pipelined request
            self._data = bytes(buffer[:length])
            del buffer[:length]
        self._data_loaded = True

    @property
    def client_ip(self):
        """remote_address, computed once per connection when no proxy is
        trusted (then it is the socket peer's address)."""
        if self._server.trusts_proxies:
            return self.remote_address
        ip = self._ip
        if ip is None:
            ip = self._ip = _server.unmap_ipv4(self._addr[0])
        return ip

    @property
    def body(self):
        """The raw request body (bytes), or None: what `data` is parsed
        from, and what a worker is sent."""
        return self._data

    @property
    def data(self):
        """The body as uhttp-server presents it: parsed JSON or form, else
        bytes; None when empty. Parsed on first use."""
        if not self._parsed:
            self._parsed = True
            raw = self._data
            if raw:
                media = self.content_type.partition(';')[0].strip().lower()
                if media == _server.CONTENT_TYPE_JSON:
                    try:
                        self._value = _json.loads(as_bytes(raw))
                    except (ValueError, RecursionError) as err:
                        raise _server.HttpErrorWithResponse(
                            400, "Invalid JSON body") from err
                elif media == _server.CONTENT_TYPE_XFORMDATA:
                    self._value = _server.parse_query(as_bytes(raw))
                else:  # one read into its own buffer: bytes for the user
                    self._value = bytes(raw) if type(raw) is bytearray else raw
        return self._value

    # -- state, for the dispatcher and the server ------------------------------

    @property
    def is_open(self):
        """False once the connection is closed."""
        return self._socket is not None

    @property
    def response_started(self):
        """True from the first byte of this request's response (or of a
        refusal) until the connection resets for its next request."""
        return self._response_started

    @property
    def is_idle(self):
        """True between requests: no request line parsed, nothing
        received for the next one."""
        return self._method is None and not self._buffer

    @property
    def request_started(self):
        """When (time.time()) the first bytes of the request being read
        came, or None."""
        return self._request_start

    def request_overdue(self, now):
        """True when the request still arriving began more than
        request_timeout seconds before `now` (time.time())."""
        # a body spooling is overdue when stalled (since its last bytes)
        started = self._spool_progress() or self._request_start
        return bool(started) and now - started > self._request_timeout

    @property
    def max_send_buffer_size(self):
        """How many bytes may wait unsent before a stream is cut."""
        return self._max_send_buffer_size

    def register(self):
        """Start watching the socket for requests; False when the selector
        refused it (then close the connection)."""
        return self._register()

    # -- events ----------------------------------------------------------------

    def reset(self):
        if not self._reset_plain():
            super().reset()
        self._chunks = None
        self._head = False
        self._parsed = False
        self._value = None
        self.pending = None
        if self._socket is None or self._detached:
            return
        if self._interest is None:
            self._register()  # reading was stopped while the request was out
        if self._buffer:
            self._server.schedule(self)  # a pipelined request is waiting

    def handle_event(self, fileobj, mask):
        try:
            if mask == EVENT_READ and self._method is None and (
                    self._awaits_request()):
                return self if self.process_request() else None
            if self._taken is not None:
                if mask & EVENT_WRITE:
                    self.try_send()
                if mask & EVENT_READ and self._socket is not None:
                    self.read_raw()
                return None
            if not self._response_started and (
                    self.pending is not None
                    or (self._method is not None and self.is_loaded)):
                # a complete request is being answered: never parse it again
                if mask & EVENT_WRITE:
                    self.try_send()
                if mask & EVENT_READ and self._socket is not None:
                    self._read_while_pending()
                return None
            return super().handle_event(fileobj, mask)
        except Exception as err:  # pylint: disable=broad-except
            self._server.broken(self, err)
            return None

    def process_pipelined(self):
        """Parse a request already waiting in the buffer (no new bytes)."""
        try:
            if self._socket is None or self.pending or self._response_started:
                return None
            if self.process_request():
                return self
        except Exception as err:  # pylint: disable=broad-except
            self._server.broken(self, err)
        return None

    # -- response side ---------------------------------------------------------

    def _prepare_response(self, headers=None, is_streaming=False):
        headers = super()._prepare_response(headers, is_streaming)
        self.responses += 1
        return _serialize.named_upgrade(headers, is_streaming)

    def _build_response_header(self, status=200, headers=None, cookies=None):
        try:  # (bytes: a bytes header value goes out as those bytes)
            return super()._build_response_header(
                status, headers, cookies).encode('utf-8', 'surrogateescape')
        except _server.HttpError:
            self.responses -= 1  # refused (CR/LF): nothing was sent
            raise

    def hold(self):
        """Keep this request's fields (path, headers, data, ...) readable
        until release(), even when its response goes out at once: a
        keep-alive connection otherwise resets for its next request."""
        self._hold = True

    def release(self):
        self._hold = False
        if self._held:
            self._held = False
            if self._socket is not None and not self.has_data_to_send:
                super()._finalize_sent_response()

    def _finalize_sent_response(self):
        if self._hold:
            self._held = True
            return
        super()._finalize_sent_response()

    def answered_since(self, count):
        """True when a response was started after `responses` was `count`,
        or the connection is gone (a keep-alive reset hides the first)."""
        return self._socket is None or self.responses != count or (
            self._response_started)

    def respond(self, data=None, status=200, headers=None, cookies=None):
        """uhttp-server's respond(), exact for HEAD and empty bodies (a
        HEAD answer has the length but no body; no data: Content-Length: 0),
        and once per request while user code runs for it (`answering`)."""
        if self._socket is None:
            return
        if self.answering is not None and self.responses != self.answering:
            raise _server.HttpError(_serialize.REFUSED_RESPOND[self.answering < 0])
        headers, cookies = _serialize.respond_headers(status, headers,
                                                      cookies)
        self.pending = None
        headers.setdefault('date', _serialize.http_date())
        if self._server.closing:
            headers['connection'] = 'close'  # the server is handing over
        if isinstance(data, FILE_ANSWERS):
            return self.send_answer_file(status, headers, cookies, data)
        no_body = _serialize.bodiless(status)
        if _serialize.contentless(status):  # (205: no body, a length of 0)
            data = None
        if data is not None and not no_body:
            data = _serialize.respond_data(headers, data)
        elif not no_body and _server.CONTENT_LENGTH not in headers:
            headers[_server.CONTENT_LENGTH] = 0
        if self._head or no_body:
            data = None
        super().respond(data=data, status=status, headers=headers,
                        cookies=cookies)

    def send_response(self, status, headers, body, cookies=None, head=False,
                      close=False):
        """Send a complete response whose body is already encoded.

        `headers` is a list of (name, value); Content-Length and Connection
        are set here. Raises ValueError (nothing sent) for a header or
        cookie containing CR/LF.
        """
        if self._socket is None:
            return False
        if self._response_started:
            raise _server.HttpError("Response already sent for this request")
        keep = self.keep_alive_after(close)
        data, keep = _serialize.response_head(
            status, headers, cookies, len(body), keep)
        self._response_started = True
        self.responses += 1
        self._is_streaming = False
        self._response_keep_alive = keep
        self.pending = None
        if body and not head and not _serialize.contentless(status):
            if len(body) > _GATHER_MIN and not self._server.is_secure:
                self._write_gather(data, body)
                return True
            data += body
        self._write(data)
        return True

    def _write_gather(self, header, body):
        """_write() for a large body: head and body in one sendmsg(), not
        joined; only what the socket did not take is copied to the buffer."""
        if self._send_buffer or self._file_handle is not None:
            self._write(header + body)
            return
        try:
            sent = self._socket.sendmsg((header, body))
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            self.close()
            return
        size = len(header)
        if sent == size + len(body):
            self._finalize_sent_response()
            return
        if sent < size:
            self._send_buffer += header[sent:]
            self._send_buffer += body
        else:
            self._send_buffer += memoryview(body)[sent - size:]
        self._update_interest()

    def _write(self, data):
        """Send a complete response: straight to the socket when nothing is
        queued before it (the common case: one send, no buffering), else
        through the send buffer. Finalizes (keep-alive reset or close) once
        everything is out."""
        if self._send_buffer or self._file_handle is not None:
            try:
                self._send(data)
                if not self.has_data_to_send:
                    self._finalize_sent_response()
            except OSError:
                self.close()
            return
        try:
            sent = self._socket.send(data)
        except _WOULD_BLOCK:
            sent = 0
        except OSError:
            self.close()
            return
        if sent == len(data):
            self._finalize_sent_response()
            return
        self._send_buffer += memoryview(data)[sent:]
        self._update_interest()

    def start_stream(self, status, headers, cookies=None):
        """Send the head of a streamed response (see stream_head(); its
        headers may ask for chunks). Raises ValueError (nothing sent) for
        CR/LF."""
        if self._socket is None:
            return False
        if self._response_started:
            raise _server.HttpError("Response already sent for this request")
        chunked = self._protocol == 'HTTP/1.1' and not self._head and (
            not _serialize.bodiless(status)) and _serialize.asks_chunked(
                headers)
        data = _serialize.stream_head(status, headers, cookies, chunked)
        self._response_started = True
        self.responses += 1
        self._is_streaming = True
        self._response_keep_alive = False
        try:
            self._send(data)
        except OSError:
            self.close()
            return False
        self._chunked = chunked   # (what is sent from now on)
        self._head_only = self._head
        return True

    def end_stream(self, whole=True):
        """Finish a streamed response: close once buffered bytes are out
        (a chunked one that failed, not `whole`, without its last chunk)."""
        handler = self._taken
        if handler is not None:
            self._taken = None
            handler.ended()  # its last words (a close frame) go out first
        self.pending = None
        self._is_streaming = False
        self._response_keep_alive = False
        if self._socket is None:
            return
        if whole:
            self.end_chunks()
        if self.has_data_to_send:
            self._update_interest()  # closes in _finalize_sent_response
        else:
            self.close()

    def close(self):
        handler = getattr(self, '_taken', None)
        if handler is not None:
            self._taken = None
            handler.connection_lost()
        pending = getattr(self, 'pending', None)
        super().close()
        if pending is not None:
            self.pending = None
            server = getattr(self, '_server', None)
            if server is not None:
                server.client_gone(pending)
