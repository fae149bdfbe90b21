"""A dispatcher's Connection over a socket pair, for the HTTP glue's unit
tests: what a Server reports to, a connection as the server accepts one,
and the peer's side."""

import re
import selectors
import socket

from uhttp.workers import http as _http


class Owner:
    """What a Server reports to (the Dispatcher, in the library)."""

    def __init__(self):
        self.failed = []
        self.gone = []
        self.refused = []   # statuses the HTTP layer answered by itself
        self.spool_errors = []   # (error, spool directory) of 507s
        self.early = None   # the status to answer a 100 Continue head with

    def connection_failed(self, connection, err):
        self.failed.append(err)

    def client_gone(self, pending):
        self.gone.append(pending)

    def client_stalled(self, connection, limit):
        pass

    def request_refused(self, connection, status, size):
        self.refused.append(status)

    def spool_refused(self, connection, err, directory):
        self.spool_errors.append((err, directory))

    def accept_exhausted(self, err):
        pass

    def answer_before_body(self, connection):
        if self.early is None:
            return False
        connection.respond({'error': 'early'}, status=self.early)
        return True


def serving(**options):
    """A Server on a selector of its own (a generator: close it after)."""
    selector = selectors.DefaultSelector()
    owner = Owner()
    server = _http.Server(owner, '127.0.0.1', 0, None, selector, **options)
    server.owner = owner
    try:
        yield server
    finally:
        server.close()
        selector.close()


def accepted(server):
    """(connection, peer socket): a Connection as the server accepts one."""
    ours, peer = socket.socketpair()
    ours.setblocking(False)
    peer.settimeout(2)
    connection = _http.Connection(server, ours, ('127.0.0.1', 4321),
                                  **server._kwargs)
    server.connections[connection] = None
    assert connection.register()
    return connection, peer


def feed(connection, peer, data):
    """Send `data` as the client; the connection's answer to the event."""
    peer.sendall(data)
    return connection.handle_event(connection.socket, _http.EVENT_READ)


DATE_LINE = re.compile(rb'(?<=\r\n)date: [^\r\n]*\r\n')


def received(peer, dated=False):
    """What the peer has been sent so far (<EOF> once closed), without the
    heads' Date lines unless `dated`."""
    data = _received(peer)
    return data if dated else DATE_LINE.sub(b'', data)


def _received(peer):
    peer.setblocking(False)
    data = b''
    try:
        while True:
            chunk = peer.recv(65536)
            if not chunk:
                return data + b'<EOF>'
            data += chunk
    except BlockingIOError:
        return data
    finally:
        peer.settimeout(2)
