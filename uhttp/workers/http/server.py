"""The server glue: uhttp-server's HttpServer with a server's policies.

Connections live in a dict (O(1) removal) and are accepted up to
ACCEPT_BATCH per readable event; past max_waiting_clients the oldest idle
keep-alive connection is evicted, else the newcomer is refused with 503;
out of descriptors, such a connection is evicted to make room for it.
maintenance() closes what waits too long; an exception escaping one
connection ends in broken() (a 400 or a close), never in the loop.
"""

import errno as _errno
import socket as _socket
import time as _time

import uhttp.server as _server

from .. import spool as _spool
from .canned import Canned
from .connection import EVENT_READ, Connection
from .linger import Lingering
from .tlsrefusal import Refusals

ACCEPT_BATCH = 64  # connections accepted per readable event
_OUT_OF_FDS = (_errno.EMFILE, _errno.ENFILE)
EVICT_PEEKS = 16   # idle-looking connections looked into for one eviction
FRESH_GRACE = 1.0  # seconds a new connection has to send its first request
# how often timeouts are looked at, at most: a 30 s keep_alive_timeout then
# closes an idle connection within 30-31 s (each look walks every
# connection: about a millisecond per thousand)
MAINTENANCE_EVERY = 1.0
_monotonic = _time.monotonic


class Server(_server.HttpServer):
    """uhttp-server's HttpServer reporting to `owner` (the Dispatcher):
    connection_failed(), client_gone(), client_stalled(), accept_exhausted()."""

    def __init__(self, owner, address, port, ssl_context, selector,
                 listening=None, **kwargs):
        self._owner = owner
        self._listen_selector = selector  # where the listening socket is watched
        self._send_timeout = kwargs.pop('send_timeout', 60)
        # which request bodies go to a file as they arrive (spool.py)
        self.spool = _spool.SpoolPolicy(
            kwargs.pop('spool_threshold', _spool.DEFAULT_THRESHOLD),
            kwargs.pop('spool_dir', None))
        self._scheduled = []
        self._unread = {}   # TLS connections with decrypted bytes unread
        self._more_sockets = []  # socket activation's other sockets
        # True while the dispatcher shuts down or hands over to another
        # (hot upgrade): every answer says Connection: close
        self.closing = False
        if listening is not None:
            address, port = '127.0.0.1', 0  # a stand-in, replaced below
        super().__init__(address=address, port=port, ssl_context=ssl_context,
                         selector=selector, **kwargs)
        if listening is not None:
            self._adopt(listening)
        self._maintenance_interval = min(
            self._maintenance_interval, self._send_timeout / 2,
            MAINTENANCE_EVERY)
        self._waiting_connections = {}
        # refused connections' sockets, reading their clients' last bytes
        self.lingering = Lingering(self.selector)
        # refused TLS sockets, answered once their handshake is done
        self.refusals = Refusals(self.selector, self.lingering)
        for sock in self.listeners:
            sock.setblocking(False)
        self._accepting = True

    def _adopt(self, listening):
        """Serve on `listening`: sockets (or one) already bound and
        listening, from systemd's socket activation or from a dispatcher
        handing over. Each is accepted from alike."""
        if not isinstance(listening, (list, tuple)):
            listening = [listening]
        self._listen_selector.unregister(self._socket)
        self._socket.close()
        self._socket = listening[0]
        self._more_sockets = list(listening[1:])
        for sock in listening:
            self._listen_selector.register(sock, EVENT_READ, self)

    @property
    def listeners(self):
        """The listening sockets, the first one first; [] once closed."""
        if self._socket is None:
            return []
        return [self._socket] + self._more_sockets

    def handle_event(self, fileobj, mask):
        """A listening socket is readable: accept from that one."""
        if self._socket is not None:
            self._accept(fileobj if fileobj in self._more_sockets
                         else self._socket)

    def listen_in(self, selector):
        """Watch the listening socket in `selector` instead of the one the
        connections are in: the loop's own, so that new connections are
        still accepted while the clients' side is paused (their requests
        wait in their sockets; a full accept queue would make the kernel
        drop handshakes, and clients would retry after seconds)."""
        if self._accepting:
            for sock in self.listeners:
                self._listen_selector.unregister(sock)
                selector.register(sock, EVENT_READ, self)
        self._listen_selector = selector

    @property
    def port(self):
        """The port listened on; None once closed, or on a Unix socket
        (socket activation: its name is a path)."""
        name = self._socket.getsockname() if self._socket else None
        return name[1] if isinstance(name, tuple) else None

    @property
    def connections(self):
        """The open connections (a dict used as an ordered set)."""
        return self._waiting_connections

    @property
    def has_scheduled(self):
        """True when connections wait, via schedule(), to parse a request
        already in their buffer."""
        return bool(self._scheduled)

    @property
    def trusts_proxies(self):
        """True when X-Forwarded-For is read from trusted proxies."""
        return bool(self._trusted_proxies)

    def remove_connection(self, connection):
        if connection is self._resume:
            self._resume = None
        self._waiting_connections.pop(connection, None)

    def schedule(self, connection):
        self._scheduled.append(connection)

    def take_scheduled(self):
        scheduled = self._scheduled
        if scheduled:
            self._scheduled = []
        return scheduled

    def note_unread(self, connection):
        """After a TLS connection read: when OpenSSL holds decrypted bytes
        of it that the read did not take (a request's head came split
        across records, and the rest of a record waits), the selector
        will never tell, as the kernel holds nothing more; it is kept,
        to be handled as readable (take_unread())."""
        if self._ssl_context and isinstance(connection, Connection) and (
                connection.tls_pending):
            self._unread[connection] = None

    @property
    def has_unread(self):
        """True when a kept connection would read now (one paused, or
        answering, waits its turn)."""
        unread = self._unread
        for connection in list(unread):
            if not connection.tls_pending:
                del unread[connection]
            elif connection.wants_read:
                return True
        return False

    def take_unread(self):
        """The kept connections that read now; they are kept no longer."""
        unread = self._unread
        ready = [connection for connection in unread
                 if connection.wants_read and connection.tls_pending]
        for connection in ready:
            del unread[connection]
        return ready

    def broken(self, connection, err):
        """An exception escaped while handling `connection`: answer 400 if
        nothing was sent yet, else close; log it; keep serving."""
        self._owner.connection_failed(connection, err)
        try:
            if connection.is_open and not connection.response_started:
                self.refused(connection, 400, _BAD_REQUEST)
                connection.respond(
                    data=_BAD_REQUEST, status=400,
                    headers={'connection': 'close',
                             'content-type': 'text/plain; charset=UTF-8'})
            else:
                connection.close()
        except Exception:  # pylint: disable=broad-except
            connection.close()

    def client_gone(self, pending):
        self._owner.client_gone(pending)

    def spool_refused(self, connection, err):
        """No spool file could be made, or it refused bytes (`err`, an
        OSError), for the body `connection` is receiving (answered 507)."""
        try:
            self._owner.spool_refused(connection, err, self.spool.directory)
        except Exception as error:  # pylint: disable=broad-except
            self._owner.connection_failed(connection, error)

    def file_refused(self, connection, response, err, status):
        """A sync handler's FileResponse cannot be sent (`err`): the owner
        logs it; `connection` is answered `status`."""
        try:
            self._owner.file_refused(connection, response, err, status)
        except Exception as error:  # pylint: disable=broad-except
            self._owner.connection_failed(connection, error)

    def answer_before_body(self, connection):
        """`connection`'s request asks for 100 Continue: True when the
        owner answered it from its head (continuation.py). A failure there
        is logged and the body is asked for, as if nothing was answered."""
        try:
            return bool(self._owner.answer_before_body(connection))
        except Exception as err:  # pylint: disable=broad-except
            self._owner.connection_failed(connection, err)
            return connection.response_started or not connection.is_open

    def refused(self, connection, status, body):
        """The HTTP layer answers `connection` with `status` and `body`
        (bytes) before any request reached the dispatcher (a malformed or
        oversized request, a timeout, too many connections): the owner
        counts it."""
        try:
            self._owner.request_refused(connection, status, len(body))
        except Exception as err:  # pylint: disable=broad-except
            self._owner.connection_failed(connection, err)

    def close(self):
        self.stop_listening()
        super().close()
        self.refusals.close()
        self.lingering.close()

    def stop_listening(self):
        """Close the listening socket; existing connections stay, and so do
        those already waiting in its accept queue (closing it would reset
        them): they are accepted first, and answered."""
        for sock in self.listeners:
            while self._accepting and self._accept(sock) == ACCEPT_BATCH:
                pass
            try:
                self._listen_selector.unregister(sock)
            except (KeyError, ValueError, OSError):
                pass
            try:
                sock.close()
            except OSError:
                pass
        self._socket = None
        self._more_sockets = []

    def pause_accepting(self):
        if self._accepting and self._socket is not None:
            self._accepting = False
            for sock in self.listeners:
                try:
                    self._listen_selector.unregister(sock)
                except (KeyError, ValueError, OSError):
                    pass

    def resume_accepting(self):
        if not self._accepting and self._socket is not None:
            self._accepting = True
            for sock in self.listeners:
                self._listen_selector.register(sock, EVENT_READ, self)

    def _accept(self, listener=None):
        """Accept up to ACCEPT_BATCH waiting connections (on `listener`,
        by default the first listening socket); how many."""
        listener = self._socket if listener is None else listener
        for count in range(ACCEPT_BATCH):
            try:
                sock, addr = listener.accept()
            except (BlockingIOError, InterruptedError):
                return count
            except OSError as err:
                if err.errno in _OUT_OF_FDS and self._evict_idle():
                    continue  # an idle keep-alive connection made room
                if err.errno in _OUT_OF_FDS + (_errno.ENOBUFS, _errno.ENOMEM):
                    self._owner.accept_exhausted(err)
                return count
            try:
                sock.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_NODELAY, 1)
            except (OSError, AttributeError):
                pass
            sock.setblocking(False)
            if self._ssl_context:
                try:
                    sock = self._ssl_context.wrap_socket(
                        sock, server_side=True, do_handshake_on_connect=False)
                except (OSError, ValueError):
                    sock.close()
                    continue
            connection = Connection(self, sock, addr, **self._kwargs)
            connection.accepted_at = _monotonic()
            if len(self._waiting_connections) >= self._max_clients and (
                    not self._evict_idle()):
                self._refuse(connection)
                continue
            self._waiting_connections[connection] = None
            if not connection.register():
                connection.close()
        return ACCEPT_BATCH

    def _evict_idle(self):
        """Close the oldest keep-alive connection that waits for nothing:
        idle between requests, and nothing unread in its socket either
        (while the clients are held back, a request can wait there,
        unread). A connection that has had no answer yet is not one,
        until FRESH_GRACE has passed: its first request may be on the way
        (one accepted in the same burst). At most EVICT_PEEKS such sockets
        are looked into."""
        peeks = EVICT_PEEKS
        fresh = _monotonic() - FRESH_GRACE
        for connection in self._waiting_connections:
            if (connection.is_idle and not connection.response_started
                    and connection.pending is None and (
                        connection.responses or getattr(
                            connection, 'accepted_at', 0) < fresh)):
                if _has_unread(connection.socket):
                    peeks -= 1
                    if not peeks:
                        return False
                    continue
                connection.close()
                return True
        return False

    def _refuse(self, connection):
        self.refused(connection, 503, _TOO_MANY)
        if self._ssl_context:  # answered after the handshake, or closed
            self.refusals.take(connection.hand_over_socket(), _TOO_MANY_ANSWER)
            return
        connection.linger_on_close()  # its request, unread, must not reset it
        try:
            connection.respond(data=_TOO_MANY, status=503,
                               headers=dict(_TOO_MANY_HEADERS))
        except Exception:  # pylint: disable=broad-except
            pass
        connection.close()

    def maintenance(self):
        """Close what waits too long; at most every half shortest timeout.

        - an idle keep-alive connection past keep_alive_timeout is closed
          silently (an unasked-for 408 could be read as the answer to the
          client's next request);
        - a request still arriving past request_timeout (or idle past
          keep_alive_timeout) gets 408 and is closed;
        - a request with a worker is left alone: the pool's timeout rules;
        - a response or stream the client does not read for send_timeout
          is dropped.
        """
        now = _time.time()
        if now - self._last_maintenance < self._maintenance_interval:
            return
        self._last_maintenance = now
        mono = _monotonic()
        if self.lingering:
            self.lingering.expire(mono)
        if self.refusals.sockets:
            self.refusals.expire(mono)
        send_limit = self._send_timeout
        for connection in list(self._waiting_connections):
            if not connection.is_open:
                self.remove_connection(connection)
                continue
            if connection.response_started or connection.is_websocket:
                if connection.stalled(mono, send_limit):
                    self._owner.client_stalled(connection, send_limit)
                    connection.close()
                continue
            if connection.pending is not None:
                continue
            if connection.is_idle:
                if connection.is_timed_out:
                    connection.close()
                continue
            if connection.is_loaded:
                continue
            if connection.is_timed_out or connection.request_overdue(now):
                connection.note_head_asked()
                self.refused(connection, 408, _REQUEST_TIMEOUT)
                connection.linger_on_close()  # it may still be sending
                connection.respond(
                    _REQUEST_TIMEOUT, status=408,
                    headers={'connection': 'close',
                             'content-type': 'text/plain; charset=UTF-8'})
                if connection.has_data_to_send:
                    connection.close()


_BAD_REQUEST = b'Bad Request'
_TOO_MANY = b'{"error": "Too many connections"}'
_TOO_MANY_HEADERS = {'connection': 'close', 'retry-after': '1',
                     'content-type': 'application/json'}
# written to a refused TLS socket once its handshake is done (tlsrefusal.py)
_TOO_MANY_ANSWER = Canned(503, list(_TOO_MANY_HEADERS.items()),
                          _TOO_MANY).bytes(keep=False)
_REQUEST_TIMEOUT = b'Request Timeout'


def _has_unread(sock):
    """True when bytes (a request) wait unread in a plain TCP socket; a
    TLS socket cannot be peeked at and counts as having none."""
    try:
        return bool(sock.recv(1, _socket.MSG_PEEK | _socket.MSG_DONTWAIT))
    except (BlockingIOError, InterruptedError):
        return False
    except (OSError, ValueError):  # reset, closed, or TLS
        return False
