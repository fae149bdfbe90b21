"""Lingering close: a refused request's answer reaches a client that is
still sending.

When a request is refused while it arrives (413 for a body over the limit,
400, 408, 431), the answer goes out and the connection closes while the
client may still be sending its body. Closing a socket with unread bytes
(or with bytes still arriving) makes the kernel reset the connection, and
a client that sends its whole body before it reads (most do) then sees
"connection reset" instead of the answer already in its buffer. So such a
connection's socket is kept a little longer: its sending side is shut
(the answer is followed by the end of the stream), and what the client
still sends is read and dropped until it closes too, for at most
LINGER_SECONDS and LINGER_BYTES, and for at most LINGER_AT_MOST sockets at
once (beyond that, one closes at once, as before). A TLS socket lingers the
same way once its close_notify is out (closenotify.py, which runs first):
the client's last records are dropped as they come, undecrypted, from a
plain copy of its descriptor.
"""

import selectors as _selectors
import socket as _socket
import ssl as _ssl
import time as _time

LINGER_SECONDS = 2.0
LINGER_BYTES = 64 << 20
LINGER_AT_MOST = 256
READ_SIZE = 256 << 10
READS_PER_EVENT = 4  # a turn's work for one lingering socket is bounded

_scratch = bytearray(READ_SIZE)


class Lingerer:
    """One closed connection's socket, reading its client's last bytes."""

    __slots__ = ('sock', 'deadline', 'left', 'owner')

    def __init__(self, sock, deadline, owner):
        self.sock = sock
        self.deadline = deadline
        self.left = LINGER_BYTES
        self.owner = owner

    def handle_event(self, fileobj, mask):
        """Read and drop what the client sends; done at its end of stream,
        an error, or LINGER_BYTES. Never raises (the loop's event)."""
        view = memoryview(_scratch)
        for _ in range(READS_PER_EVENT):
            try:
                size = self.sock.recv_into(view)
            except (BlockingIOError, InterruptedError):
                return None
            except OSError:
                size = 0
            self.left -= size
            if size == 0 or self.left <= 0:
                self.owner.drop(self)
                return None
        return None


class Lingering:
    """The sockets lingering after their connection closed, in the order
    they started (so the first ones are the first due)."""

    def __init__(self, selector):
        self.selector = selector
        self.sockets = {}  # Lingerer -> None: an ordered set

    def __len__(self):
        return len(self.sockets)

    def take(self, sock):
        """Keep `sock` (whose connection closes now) lingering: True, or
        False when it closes at once (too many, already reset)."""
        if len(self.sockets) >= LINGER_AT_MOST:
            return False
        try:  # the connection closes its own descriptor
            kept = (_socket.fromfd(sock.fileno(), sock.family, sock.type)
                    if isinstance(sock, _ssl.SSLSocket) else sock.dup())
        except OSError:
            return False
        try:
            kept.setblocking(False)
            kept.shutdown(_socket.SHUT_WR)  # the answer, then end of stream
            lingerer = Lingerer(kept, _time.monotonic() + LINGER_SECONDS,
                                self)
            self.selector.register(kept, _selectors.EVENT_READ, lingerer)
        except (OSError, ValueError, KeyError):
            kept.close()
            return False
        self.sockets[lingerer] = None
        return True

    def drop(self, lingerer):
        if lingerer in self.sockets:
            del self.sockets[lingerer]
            try:
                self.selector.unregister(lingerer.sock)
            except (KeyError, ValueError, OSError):
                pass
            lingerer.sock.close()

    def expire(self, now):
        """Close the sockets whose time is up."""
        for lingerer in list(self.sockets):
            if lingerer.deadline > now:
                break
            self.drop(lingerer)

    def close(self):
        for lingerer in list(self.sockets):
            self.drop(lingerer)


class LingeringClose:
    """Mixin of Connection: close() after a refusal lingers (see above)."""

    _linger = False

    def linger_on_close(self):
        """The connection is answering a refusal: its close lingers."""
        self._linger = True

    def close(self):
        if self._linger:
            self._linger = False
            sock = getattr(self, '_socket', None)
            server = getattr(self, '_server', None)
            if sock is not None and server is not None:
                server.lingering.take(sock)
        super().close()
