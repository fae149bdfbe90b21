"""A TLS connection refused as it is accepted (too many connections): its
503 can only be read once the handshake is done, which takes the client's
next flight. Written at once, it waited in the send buffer of a
connection that then closed: the client saw the connection end without
an answer. So such a socket is kept, apart from the connections: the
handshake is completed as the client's bytes come, the 503 is written,
and the socket goes to lingering (linger.py) with its close_notify, for
at most REFUSE_SECONDS and at most REFUSING_AT_MOST sockets at once
(beyond that, one closes at once, as before).
"""

import selectors as _selectors
import ssl as _ssl
import time as _time

REFUSE_SECONDS = 2.0
REFUSING_AT_MOST = 256

_WANT = (_ssl.SSLWantReadError, _ssl.SSLWantWriteError, BlockingIOError,
         InterruptedError)


class Refusal:
    """One refused TLS socket, waiting for its handshake to send `answer`."""

    __slots__ = ('sock', 'answer', 'deadline', 'owner')

    def __init__(self, sock, answer, deadline, owner):
        self.sock = sock
        self.answer = answer
        self.deadline = deadline
        self.owner = owner

    def handle_event(self, fileobj, mask):
        """Go on with the handshake; once done, answer and let go. Never
        raises (the loop's event)."""
        sock = self.sock
        try:
            sock.do_handshake()
            sock.send(self.answer)  # a few hundred bytes: one record
        except _WANT:
            return None
        except (OSError, ValueError):
            self.owner.drop(self)
            return None
        try:
            sock.unwrap()  # close_notify after the answer
        except (OSError, ValueError):
            pass
        self.owner.drop(self, linger=True)
        return None


class Refusals:
    """The refused TLS sockets still shaking hands, oldest first."""

    def __init__(self, selector, lingering):
        self.selector = selector
        self.lingering = lingering
        self.sockets = {}  # Refusal -> None: an ordered set

    def take(self, sock, answer):
        """Keep `sock` (a TLS socket refused with `answer`, bytes), which
        is now this one's: True, or False when too many wait already (it
        is closed then)."""
        if len(self.sockets) >= REFUSING_AT_MOST:
            sock.close()
            return False
        refusal = Refusal(sock, answer, _time.monotonic() + REFUSE_SECONDS,
                          self)
        try:
            self.selector.register(sock, _selectors.EVENT_READ, refusal)
        except (OSError, ValueError, KeyError):
            sock.close()
            return False
        self.sockets[refusal] = None
        refusal.handle_event(sock, _selectors.EVENT_READ)  # the hello is in
        return True

    def drop(self, refusal, linger=False):
        if refusal in self.sockets:
            del self.sockets[refusal]
            try:
                self.selector.unregister(refusal.sock)
            except (KeyError, ValueError, OSError):
                pass
            if linger:
                self.lingering.take(refusal.sock)
            refusal.sock.close()

    def expire(self, now):
        """Close the sockets whose time is up."""
        for refusal in list(self.sockets):
            if refusal.deadline > now:
                break
            self.drop(refusal)

    def close(self):
        for refusal in list(self.sockets):
            self.drop(refusal)
