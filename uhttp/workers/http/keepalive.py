"""The keep-alive cycle: a connection between its requests, and the common
case in as few steps as it takes.

While a request is out with a worker, only the client leaving is watched
for; bytes it sends meanwhile (a pipelined request) are kept for later.
has_left() looks whether the client already closed behind the request it
sent (a request that waited unread while the clients were held back).
Most events on a client connection are the next request arriving on an
idle keep-alive connection, and most answers leave nothing behind (no
file being sent, no spool file, no body buffer). For the first, the head
is read without going through every mixin of Connection (each of which
only has work for a body), and the event goes straight to
process_request(); the second resets with uhttp-server's reset alone.
Anything else takes the general path. tests/unit/test_keepalive.py checks
that both ways leave a connection in the same state.
"""

import errno as _errno
import os as _os
import selectors as _selectors
import socket as _socket
import time as _time

import uhttp.server as _server

from . import serialize as _serialize
from .canned import Canned

_WOULDBLOCK = (_errno.EAGAIN, _errno.EWOULDBLOCK, _errno.ENOENT)
_REFUSAL_HEADERS = {'connection': 'close',
                    'content-type': 'text/plain; charset=UTF-8'}
# OpenSSL's reasons for a handshake that began with a plain HTTP request
_PLAIN_HTTP = ('HTTP_REQUEST', 'HTTPS_PROXY_REQUEST')
_PLAIN_HTTP_BODY = b'This port speaks HTTPS: the request came as plain HTTP.\n'
_PLAIN_HTTP_ANSWER = Canned(400, list(_REFUSAL_HEADERS.items()),
                            _PLAIN_HTTP_BODY).bytes(keep=False)


class KeepAliveCycle:
    """Mixin of Connection: the next request's head, bytes that come while
    a request is out, and the plain reset."""

    _body_withheld = False  # answering before the body came: then close

    def _awaits_request(self):
        """True when a read event on this connection (whose request line
        has not come yet) can only be the start, or more, of the next
        request's head."""
        return (self._taken is None and not self._response_started
                and not self._is_streaming and self._socket is not None
                and not self._detached)

    def _answer_refusal(self, err):
        """Answer a request refused while it was read (as uhttp-server
        does): its status and text, and the connection closes; the server
        is told, for the counts and the access log."""
        body = str(err).encode('utf-8')
        self._server.refused(self, err.status, body)
        self.linger_on_close()  # the client may still be sending
        self.respond(data=body, status=err.status,
                     headers=dict(_REFUSAL_HEADERS))

    def _answer_plain_http(self):
        """Plain HTTP came to the TLS port (OpenSSL tells it from the first
        bytes: a GET, POST, HEAD, PUT or CONNECT). The handshake has
        failed, so the answer goes out as plain text on the socket itself,
        as a 400 that says why (instead of a reset the client cannot read);
        the connection then closes, lingering over what the client still
        sends. Counted and logged like any refusal."""
        self._server.refused(self, 400, _PLAIN_HTTP_BODY)
        try:
            _os.write(self._socket.fileno(), _PLAIN_HTTP_ANSWER)
        except OSError:
            return
        self.linger_on_close()

    def hand_over_socket(self):
        """The socket, which the connection lets go of: closing the
        connection (or its going away) no longer closes it."""
        sock, self._socket = self._socket, None
        return sock

    @property
    def tls_pending(self):
        """Bytes OpenSSL has decrypted for this connection and not handed
        out yet (a read took less than the record held): no event of the
        selector tells of them (server.py note_unread()). 0 for plain TCP."""
        try:
            return self._socket.pending()
        except (AttributeError, ValueError, OSError):
            return 0

    @property
    def wants_read(self):
        """True while the connection watches its socket for reading."""
        interest = self._interest
        return bool(interest and interest & _selectors.EVENT_READ)

    def has_left(self):
        """True when the client has gone: the end of its stream (or a
        reset) waits in the socket, with no byte before it. A TLS socket
        cannot be peeked at and counts as still there."""
        try:
            return self._socket.recv(
                1, _socket.MSG_PEEK | _socket.MSG_DONTWAIT) == b''
        except (BlockingIOError, InterruptedError):
            return False
        except ConnectionError:
            return True
        except (OSError, ValueError, AttributeError):  # TLS, or closed
            return False

    def _read_while_pending(self):
        """The client's request is with a worker: only watch for it leaving.

        Bytes it sends meanwhile (a pipelined request) are kept for later,
        up to half the header limit; then reading stops until the answer.
        """
        try:
            data = self._socket.recv(4096)
        except OSError as err:
            if err.errno in _WOULDBLOCK:
                return
            self.close()
            return
        if data is None:
            return
        if not data:
            self.close()
            return
        self._buffer.extend(data)
        if len(self._buffer) >= self._max_headers_length // 2:
            self._read_paused = True
            self._update_interest()

    def _recv_head(self, limit):
        """Read what has come of a head (no body is being read: the
        mixins' readers have nothing to do), up to `limit` bytes buffered.
        Requests pipelined while one was out may have filled the buffer
        past `limit` already: then the head is looked for in what is
        there, and nothing is read."""
        self._note_request_start()  # pipelined bytes already buffered
        buffer = self._buffer
        room = limit - len(buffer)
        if room <= 0:
            return
        try:
            data = self._socket.recv(room)
        except OSError as err:
            if err.errno in _WOULDBLOCK:
                return  # EAGAIN, or (ENOENT) a TLS handshake in progress
            if getattr(err, 'reason', None) in _PLAIN_HTTP:
                self._answer_plain_http()
            raise _server.HttpDisconnected(f"{err}: {self._addr}") from err
        except MemoryError as err:
            raise _server.HttpErrorWithResponse(413) from err
        if not data:
            if data is None:
                return
            raise _server.HttpDisconnected(
                f"Lost connection from client {self._addr}")
        self._rx_bytes_counter += len(data)
        buffer += data
        self._last_activity = _time.time()
        self._note_request_start()

    def _note_request_start(self):
        """The request's first bytes are in: its start time, once. Not
        before (a read over TLS may be a handshake's step, with no byte of
        a request: such a connection has no request in flight)."""
        if self._request_start is None and self._buffer:
            self._request_start = _time.time()

    @property
    def is_streaming(self):
        """True once a streamed answer (SSE, NDJSON, a taken-over socket)
        has begun on this request."""
        return self._response_started and self._is_streaming

    @property
    def in_flight(self):
        """True while a request is still arriving, or its answer (a file
        included) is still being sent; not for a stream or a WebSocket,
        which never end by themselves."""
        if self._is_streaming or self._taken is not None or self.is_websocket:
            return False
        return self.has_data_to_send or (
            self._request_start is not None and not self._response_started)

    def keep_alive_after(self, close, answer=None):
        """Whether the connection stays open after this request's answer
        (the request's Connection header, the count, `close` asked, the
        answer's own Connection header; closed when the body was not
        read: continuation.py)."""
        asked = self._headers.get('connection', '') if self._headers else ''
        return _serialize.keep_alive(
            self._protocol, asked, self._requests_count,
            self._keep_alive_max_requests, close or self._body_withheld,
            answer)

    def _should_keep_alive(self, response_headers=None):
        """uhttp-server's keep-alive rule for respond(): the one the
        answers the workers send go by (keep_alive_after())."""
        answer = None
        if response_headers and 'connection' in response_headers:
            answer = str(response_headers['connection'])
        return self.keep_alive_after(False, answer)

    def _reset_plain(self):
        """The reset of a connection whose answer left no file, spool or
        body buffer to let go of: uhttp-server's own, without the mixins'
        (which would only find nothing to do). False when there is more
        to let go of (then the whole reset runs)."""
        if (self._spool is not None or self._into is not None
                or self._file_handle is not None
                or self._body_file_handle is not None):
            return False
        _server.HttpConnection.reset(self)
        return True
