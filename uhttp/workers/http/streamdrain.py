"""A connection's side of stream flow control (mixed into Connection).

A worker writes a stream (chunks, SSE events, NDJSON lines, WebSocket
frames) as fast as it can; its client may read slower. Bytes of a stream
are always queued (never refused for the send buffer's size, which would
cut the stream); the dispatcher watches the queue instead
(`holdback.py`) and, once it is over `max_send_buffer_size`, stops
reading the worker's pipe and asks to be told, by `when_drained()`, when
the queue is down to a mark again or the connection closed.

Whether a client reads at all is told by its bytes leaving, from our
buffer or from the kernel's send queue (`kernel_unsent()`): a slow
client's kernel queue can hold megabytes and take no more for seconds
while it drains, with the client reading all the time.
"""

import fcntl as _fcntl
import struct as _struct
import termios as _termios

from .. import messages as _msg
from .serialize import chunk_bytes, to_json

_OUTQ = getattr(_termios, 'TIOCOUTQ', None)   # Linux's SIOCOUTQ


def kernel_unsent(sock):
    """Bytes of `sock`'s send queue the kernel has not sent (or had
    acknowledged) yet, or None where it cannot tell."""
    if _OUTQ is None or sock is None:
        return None
    try:
        return _struct.unpack('i', _fcntl.ioctl(sock.fileno(), _OUTQ,
                                                b'\0\0\0\0'))[0]
    except (OSError, ValueError):
        return None


class StreamDrain:
    _drain_mark = 0
    _drained = None   # callback(connection), or None: nobody waits
    _chunked = False  # the stream's body is chunked (start_stream())
    _head_only = False  # a stream answering HEAD: its head was all of it

    def stream_send(self, data):
        """Queue `data` (bytes) of a stream and send what the socket takes;
        False when the connection is closed."""
        if self._socket is None or self._head_only:
            return False
        if data:
            buffer = self._send_buffer
            if self._chunked:
                buffer.extend(b'%x\r\n' % len(data))
                buffer.extend(data)
                buffer.extend(b'\r\n')
            else:
                buffer.extend(data)
            self.try_send()
        return self._socket is not None

    def _send(self, *parts):
        """uhttp-server's queueing of bytes (refused over the send buffer's
        limit), through which its send_chunk(), send_event() and
        send_ndjson() write: each call is one chunk when the stream is
        chunked."""
        if self._head_only:
            return
        if self._chunked:
            parts = [part.encode('utf-8') if isinstance(part, str) else part
                     for part in parts]
            size = sum(len(part) for part in parts)
            if size:
                parts = [b'%x\r\n' % size, *parts, b'\r\n']
        super()._send(*parts)

    def _stream_open(self, what):
        """True while a stream is open to send on; False once it ended or
        its client left; before response_stream() a RuntimeError, as for a
        worker's stream (the bytes would go out with no head: a reply no
        client can read)."""
        if self._socket is None:
            return False
        if self._is_streaming:
            return True
        if not self._response_started:
            raise RuntimeError(f"{what}() before response_stream(): start "
                               "the stream first (response_stream or "
                               "response_ndjson)")
        return False

    def send_chunk(self, data):
        """uhttp-server's send_chunk(); False for a stream answering HEAD
        (its head was all of it)."""
        data = chunk_bytes(data)   # a TypeError for what is not bytes
        if not self._stream_open('send_chunk') or self._head_only:
            return False
        return super().send_chunk(data)

    def send_event(self, data=None, event=None, event_id=None, retry=None):
        """One Server-Sent Event, in the wire format of a worker's (an id
        or event name holding CR, LF or NUL, a bad retry, refused)."""
        if not self._stream_open('send_event') or self._head_only:
            return False
        return super().send_chunk(
            _msg.format_event(data, event, event_id, retry))

    def send_ndjson(self, obj):
        """One JSON value as a line, as a worker's (NaN refused)."""
        if not self._stream_open('send_ndjson') or self._head_only:
            return False
        return super().send_chunk(to_json(obj).encode('utf-8') + b'\n')

    def response_stream(self, content_type=None, headers=None, cookies=None):
        """uhttp-server's response_stream() for a sync handler, as a
        worker's stream starts (start_stream(): its headers may ask for
        chunks; the connection closes after it)."""
        if hasattr(headers, 'items'):
            headers = list(headers.items())
        headers = list(headers or ())
        if content_type and not any(str(name).lower() == 'content-type'
                                    for name, _ in headers):
            headers.append(('content-type', content_type))
        return self.start_stream(200, headers, cookies)

    def response_stream_end(self):
        """uhttp-server's response_stream_end(), as a worker's stream ends:
        the last chunk, and the close once what is queued is out."""
        if not self._stream_open('response_stream_end'):
            return False
        self.end_stream()
        return True

    def end_chunks(self):
        """A chunked stream is whole: its last, empty chunk is queued."""
        if self._chunked:
            self._chunked = False
            self._send_buffer.extend(b'0\r\n\r\n')
            self.try_send()

    def stalled(self, now, limit):
        """True when bytes have waited to be sent, with no progress (here
        or in the kernel's send queue), for more than `limit` seconds."""
        size = self.send_buffer_size
        if not size and self._file_handle is None:
            self._stall = None
            return False
        position = (size, self._file_handle.tell() if self._file_handle else 0,
                    kernel_unsent(self._socket))   # the client reads on
        if self._stall is None or self._stall[0] != position:
            self._stall = (position, now)
            return False
        return now - self._stall[1] > limit

    def when_drained(self, mark, callback):
        """Call `callback(self)` once at most `mark` bytes wait to be sent,
        or when the connection closes (one waiter at a time)."""
        self._drain_mark = mark
        self._drained = callback

    def try_send(self):
        super().try_send()
        if self._drained is not None and (
                self._socket is None or self.send_buffer_size <= (
                    self._drain_mark)):
            self._call_drained()

    def close(self):
        super().close()
        if self._drained is not None:
            self._call_drained()

    def _call_drained(self):
        callback, self._drained = self._drained, None
        callback(self)
