"""100 Continue, sent only when the body is wanted.

A client that asks `Expect: 100-continue` waits, before it sends its body,
for the server's go-ahead. The server (the dispatcher) is asked first:
when the request's answer does not depend on its body (no route serves
its path, or its pool would refuse it now), it is answered at once and the
body never comes — the point of asking, for an upload of gigabytes to the
wrong path. Such an answer closes the connection (the unread body cannot
be told from a next request) and the close lingers, since the client may
send the body anyway.
"""


class Continuation:
    """Mixin of Connection: 100 Continue once the server wants the body."""

    def _continue_or_answer(self):
        """Send 100 Continue, unless the server answered the request from
        its head; True when it did (nothing more is read of it)."""
        self._body_withheld = True   # keep_alive_after(): close after it
        self.linger_on_close()       # an answer now lingers on close
        try:
            answered = self._server.answer_before_body(self)
        finally:
            self._body_withheld = False
        if answered:
            return True
        self._linger = False
        self._expect_continue = True
        self._send_100_continue()
        return False
