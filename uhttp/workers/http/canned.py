"""Canned answers: a complete response serialized once and sent as it is,
for answers the dispatcher gives often and always the same way (the 503
past max_pending), so that giving one costs a send and nothing more.
"""

from . import serialize as _serialize


class Canned:
    """A complete response serialized once: its bytes for a connection that
    stays open and for one that closes, each with its body and without
    (the answer to a HEAD request)."""

    __slots__ = ('status', 'size', '_bytes')

    def __init__(self, status, headers, body):
        self.status = status
        self.size = len(body)
        self._bytes = {}
        for keep in (True, False):
            # kept and sent as it is: no Date (a 5xx may go without one)
            head, _ = _serialize.response_head(
                status, headers, None, len(body), keep, dated=False)
            self._bytes[keep, False] = head + body
            self._bytes[keep, True] = head

    def bytes(self, keep, head=False):
        """The whole answer: `keep` the connection open or not, `head`
        (a HEAD request) without its body."""
        return self._bytes[bool(keep), bool(head)]


class SendsCanned:
    """The part of the connection glue that sends a Canned answer."""

    def send_canned(self, canned):
        """Answer this request with `canned` as it is (one send, no head
        built); the connection stays open by the usual rule. False when
        there is nobody to answer, or the answer has begun already."""
        if self._socket is None or self._response_started:
            return False
        keep = self.keep_alive_after(self._server.closing)
        self._response_started = True
        self.responses += 1
        self._is_streaming = False
        self._response_keep_alive = keep
        self.pending = None
        self._write(canned.bytes(keep, self._head))
        return True
