"""A connection handed over to another protocol (a WebSocket), as a mixin
of Connection: once `take_over()` is called the HTTP parser is out of the
way, the socket's bytes go to a handler and the handler writes through the
connection's send buffer, with its cap (a slow reader is refused).
"""

try:
    import ssl as _ssl
    _SSLWant = (_ssl.SSLWantReadError, _ssl.SSLWantWriteError)
except ImportError:  # pragma: no cover - Python without ssl
    _SSLWant = ()

_RETRY = (BlockingIOError, InterruptedError) + _SSLWant
READ_SIZE = 65536


class TakeOver:
    """take_over(), send_raw(), read_raw(), release_take_over(), and
    throttle_reads() / resume_reads() for the handler's flow control."""

    _taken = None   # the handler the socket was handed to

    def take_over(self, head, handler):
        """Send `head` (a 101 answer) and hand the socket to `handler`:
        from now on the bytes read go to handler.data_received(bytes) (those
        already buffered first), the socket's end to
        handler.connection_lost(), and end_stream() calls handler.ended()
        first. Write with send_raw(); release_take_over() gives it up."""
        self._response_started = True
        self.responses += 1
        self._is_streaming = True
        self._response_keep_alive = False
        self._taken = handler
        try:
            self._send(head)
        except OSError:
            self.close()
            return
        self._read_paused = False
        self._update_interest()
        if self._buffer and self._socket is not None:
            data = bytes(self._buffer)
            self._buffer = bytearray()
            handler.data_received(data)

    def release_take_over(self):
        self._taken = None

    def throttle_reads(self):
        """Stop reading the socket (its bytes wait in the kernel, and TCP
        slows the peer down) until resume_reads(). uhttp-server's own
        pause_reading() is for its WebSocket and body modes, not for a
        socket taken over; sending goes on either way."""
        if self._socket is not None and not self._read_paused:
            self._read_paused = True
            self._update_interest()

    def resume_reads(self):
        if self._socket is None or not self._read_paused:
            return
        self._read_paused = False
        if self._interest is None and not self._register():
            self.close()  # nothing could wake it again
            return
        self._update_interest()

    def send_raw(self, data):
        """Queue bytes on a taken-over connection; False when it is closed
        or more than max_send_buffer_size bytes already wait (a slow reader)."""
        if self._socket is None:
            return False
        try:
            self._send(data)
        except OSError:
            return False
        return self._socket is not None

    def read_raw(self):
        """Read what the socket has for the handler (EOF closes)."""
        for _ in range(4):
            try:
                data = self._socket.recv(READ_SIZE)
            except _RETRY:
                return
            except OSError:
                self.close()
                return
            if not data:
                self.close()
                return
            self._taken.data_received(data)
            if self._taken is None or self._socket is None or (
                    len(data) < READ_SIZE or self._read_paused):
                return
