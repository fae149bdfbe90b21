"""A TLS connection's orderly end, as a mixin of Connection: close_notify.

Before it closes, each side of a TLS connection sends a close_notify alert
(RFC 8446, 6.1): it tells the client that the connection ended where the
server meant it to, not cut on the way. Without it, a client that insists
(Python's ssl with suppress_ragged_eofs=False, OpenSSL 3 without
SSL_OP_IGNORE_UNEXPECTED_EOF) reads "unexpected EOF" at the end of every
`Connection: close` answer, HTTP/1.0 answer and stream, which all end with
the connection, and cannot tell a whole answer from a cut one. So close()
sends it when nothing of an answer is left unsent; a connection dropped
with bytes still waiting (a client too slow, a file cut) or in the middle
of a stream or WebSocket closes without it, so that its client can tell.
The alert is written without waiting; the client's own is not awaited.
"""

import ssl as _ssl


class CloseNotify:
    def close(self):
        sock = getattr(self, '_socket', None)
        if isinstance(sock, _ssl.SSLSocket) and not (
                self._is_streaming or self.has_data_to_send):
            try:
                sock.setblocking(False)
                sock.unwrap()  # sends the alert; raises SSLWantReadError
            except (OSError, ValueError):
                pass  # the handshake never finished, or the client left
        super().close()
