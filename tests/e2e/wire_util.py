"""h11 (a strict, independent HTTP/1.1 implementation) as the client's
state machine over a raw socket, for the wire conformance tests.

`Wire(port).request(method, target)` sends a request (or, with `raw=`,
bytes of our own while h11 tracks the request it stands for);
`response()` reads one whole answer as h11 frames it; `closes()` tells
whether the server closes the connection, and fails on any byte after
the answer.
"""
import socket

import h11

TIMEOUT = 10


class Wire:
    def __init__(self, port):
        self.sock = socket.create_connection(('127.0.0.1', port),
                                             timeout=TIMEOUT)
        self.conn = h11.Connection(h11.CLIENT)
        self.eof = False

    def close(self):
        self.sock.close()

    def track(self, method, target, headers=()):
        """Tell h11 about a request; returns the bytes it would send."""
        if self.conn.our_state is h11.DONE and self.conn.their_state is h11.DONE:
            self.conn.start_next_cycle()
        out = self.conn.send(h11.Request(
            method=method, target=target,
            headers=[('Host', 'wire')] + list(headers)))
        return out + self.conn.send(h11.EndOfMessage())

    def request(self, method, target, headers=(), raw=None):
        out = self.track(method, target, headers)
        self.sock.sendall(out if raw is None else raw)

    def response(self):
        """(status, [(name, value)], body, [informational statuses])."""
        informational, head, body = [], None, b''
        while True:
            event = self.conn.next_event()
            if event is h11.NEED_DATA:
                data = self.sock.recv(65536)
                self.eof = self.eof or not data
                self.conn.receive_data(data)
            elif isinstance(event, h11.InformationalResponse):
                informational.append(event.status_code)
            elif isinstance(event, h11.Response):
                head = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                break
            else:
                raise AssertionError(f"unexpected {event!r}")
        headers = [(name.decode('ascii').lower(), value.decode('latin-1'))
                   for name, value in head.headers]
        return head.status_code, headers, body, informational

    def closes(self, wait=2.0):
        """True when the server closes the connection within `wait`
        seconds; no byte may follow the answer either way."""
        data, _ = self.conn.trailing_data
        assert not data, f"bytes after the answer: {data[:200]!r}"
        if self.eof:
            return True
        self.sock.settimeout(wait)
        try:
            more = self.sock.recv(65536)
        except socket.timeout:
            return False
        except ConnectionResetError:
            return True
        finally:
            self.sock.settimeout(TIMEOUT)
        assert not more, f"bytes after the answer: {more[:200]!r}"
        return True


def serialized(method, target, headers=()):
    """A request's bytes as h11 writes them (for pipelining several)."""
    conn = h11.Connection(h11.CLIENT)
    return conn.send(h11.Request(
        method=method, target=target,
        headers=[('Host', 'wire')] + list(headers))) + conn.send(
            h11.EndOfMessage())


def head_problems(status, headers, method, body):
    """What is wrong with an answer's head as RFC 9110/9112 see it."""
    problems = []
    names = [name for name, _ in headers]
    for name in ('content-length', 'date', 'connection', 'transfer-encoding'):
        if names.count(name) > 1:
            problems.append(f"{name} twice")
    if 'date' not in names:
        problems.append("no Date")
    if 'content-length' in names and 'transfer-encoding' in names:
        problems.append("Content-Length with Transfer-Encoding")
    if status < 200 or status in (204, 304):
        for name in ('content-length', 'transfer-encoding'):
            if name in names:
                problems.append(f"{name} on a {status}")
    if body and (method == 'HEAD' or status in (204, 205, 304)):
        problems.append(f"a body on a {method} {status}")
    return problems
