"""The dispatcher's HTTP front: the listening socket (bound, or inherited
from systemd or from the dispatcher a hot upgrade replaces), the open-file
limit it needs, and the callbacks the HTTP layer makes.
"""

import os as _os
from selectors import EVENT_READ
import tempfile as _tempfile
import time as _time
import traceback as _traceback

from . import http as _http
from . import log as _log
from . import systemd as _systemd
from .pending import PENDING_DISCONNECTED

_monotonic = _time.monotonic


class Front:
    """The listening side of one dispatcher (`core`); the HTTP server's owner."""

    def __init__(self, core):
        self.core = core
        self.log = core.log
        self.accept_warned = 0.0

    def listen(self):
        """Bind the port, or take the sockets systemd (or the dispatcher this
        one upgrades) passed on as fds 3... (LISTEN_FDS), serving them all."""
        core = self.core
        settings = core.settings
        inherited = None
        fds = _systemd.listen_fds()
        if fds:
            _systemd.forget_listen_fds()
            try:
                inherited = [_systemd.inherited_socket(fd) for fd in fds]
            except OSError as err:
                self.log.critical("cannot listen: %s", err)
                raise
        try:
            core.server = _http.Server(
                self, settings.address, settings.port, settings.ssl_context,
                core.loop.clients.selector, listening=inherited,
                **settings.http_options)
        except OSError as err:
            self.log.critical("cannot listen on %s:%s: %s", settings.address,
                              settings.port, err)
            raise
        for sock in core.server.listeners:
            _os.set_inheritable(sock.fileno(), False)
        # accepted even while the clients' side is paused (backpressure)
        core.server.listen_in(core.loop.selector)

    def where(self):
        """What the startup line names: http://127.0.0.1:8080, or for a
        Unix socket (inherited: ListenStream=/run/app.sock) its path; every
        socket when systemd passed several."""
        scheme = 'https' if self.core.settings.ssl_context else 'http'
        places = []
        for sock in self.core.server.listeners:
            name = sock.getsockname()
            if not isinstance(name, tuple):
                places.append(f"{scheme} on unix:{name}")
                continue
            host = f"[{name[0]}]" if ':' in name[0] else name[0]
            places.append(f"{scheme}://{host}:{name[1]}")
        return ' and '.join(places)

    def raise_fd_limit(self):
        connections = self.core.settings.http_options['max_waiting_clients']
        want = connections + 256 + 4 * sum(pool.num_workers
                                            for pool in self.core.pools)
        try:
            import resource  # pylint: disable=import-outside-toplevel
            soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
            if soft != resource.RLIM_INFINITY and soft < want:
                target = want if hard == resource.RLIM_INFINITY else min(want, hard)
                if target > soft:
                    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
                    soft = target
            if soft != resource.RLIM_INFINITY and soft < want:
                # the setting the connections come from: its default is
                # 10 x max_pending
                setting = ('max_waiting_clients' if 'max_waiting_clients' in
                           self.core.settings.given else 'max_pending')
                self.log.warning(
                    "open file limit is %d, below the %d descriptors that %d "
                    "connections and the workers' pipes need; raise it "
                    "(ulimit -n) or lower %s", soft, want, connections,
                    setting)
        except (ImportError, ValueError, OSError):
            pass

    # -- callbacks from the HTTP layer ------------------------------------------

    def unread_ready(self):
        """True when TLS connections hold requests' bytes that OpenSSL
        decrypted and no event will announce (http/server.py), and the
        clients are not held back."""
        core = self.core
        return (core.settings.ssl_context is not None
                and not core.loop.clients.paused and core.server.has_unread)

    def serve_unread(self):
        """Handle those connections as readable, each once a turn; one that
        read nothing of what OpenSSL holds is left to its next event."""
        core = self.core
        server = core.server
        for connection in server.take_unread():
            before = connection.tls_pending
            try:
                ready = connection.handle_event(connection.socket, EVENT_READ)
                if ready is not None:
                    core.intake.on_request(ready)
            except Exception as err:  # pylint: disable=broad-except
                core.event_failed(connection, err)
            if connection.tls_pending != before:
                server.note_unread(connection)

    def connection_failed(self, connection, err):
        self.log.error("connection from %s failed: %r\n%s",
                       _peer(connection), err,
                       ''.join(_traceback.format_exception(
                           type(err), err, err.__traceback__)).rstrip())

    def client_gone(self, pending):
        """The client of a pooled request closed (or was closed): it ends
        as disconnected, an open stream included."""
        self.core.end(pending, PENDING_DISCONNECTED)

    def request_refused(self, connection, status, size):
        """The HTTP layer refused a request before routing (400, 408, 413,
        431, 501, 505, 507, or 503 for too many connections)."""
        if self.core.observe is not None:
            self.core.observe.refused_early(connection, status, size)

    def file_refused(self, connection, response, err, status):
        self.log.error("FileResponse for %s %s: %r cannot be sent (%s); "
                       "answering %d", connection.method,
                       _log.client_text(connection.path),
                       response.name() or response.path_or_file, err, status)

    def answer_before_body(self, connection):
        """A request asks for 100 Continue: answered now when its answer
        does not depend on its body (intake.py); True when it was."""
        return self.core.intake.answer_before_body(connection)

    def spool_refused(self, connection, err, directory):
        """A request body could not be written to its spool file: the
        client is answered 507, the log says why and where."""
        self.log.error(
            "request body from %s cannot be spooled to %s: %s",
            _peer(connection), directory or _tempfile.gettempdir(),
            err.strerror or err)

    def client_stalled(self, connection, limit):
        self.log.warning(
            "dropping %s: it read nothing for %ss with %d bytes waiting",
            _peer(connection), limit, connection.unsent_size)

    def accept_exhausted(self, err):
        """accept() failed for lack of file descriptors: pause accepting
        briefly instead of spinning on the listening socket."""
        now = _monotonic()
        if now - self.accept_warned > 10:
            self.accept_warned = now
            self.log.error("cannot accept connections: %s; pausing accept "
                           "for 0.5 s", err)
        self.core.server.pause_accepting()
        self.core.loop.call_at(
            now + 0.5, lambda _now: self.core.server.resume_accepting())


def _peer(connection):
    try:
        return connection.socket_address
    except Exception:  # pylint: disable=broad-except
        return '?'
