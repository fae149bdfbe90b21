"""Dispatcher: the one process that owns every connection.

This module holds the public class users subclass: its hooks with their
defaults, the documented names, run() and stop(). Everything it does is in
the core (core.py and the parts it puts together), kept under the one
attribute `_uhttp`, so a subclass's names are its own.
"""

from . import log as _log
from . import messages as _msg
from . import namespace as _ns
from . import routing as _routing
from .core import Core
from .loop import EVENT_READ, EVENT_WRITE
from .pending import (  # noqa: F401  (public names)
    PENDING_COMPLETED, PENDING_DISCONNECTED, PENDING_SHUTDOWN,
    PENDING_STREAM_CLOSED, PENDING_TIMEOUT, PENDING_WORKER_DIED,
    _PendingRequest)


def check_select_timeout(value, where):
    """`value` when it is a usable SELECT_TIMEOUT (seconds between
    on_idle() calls: a finite number > 0), else TypeError/ValueError: 0
    re-ran on_idle() without end and served nothing, None crashed run()."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{where}.SELECT_TIMEOUT must be a number of seconds "
                        f"(between on_idle() calls), not {value!r}")
    if not 0 < value < float('inf'):
        raise ValueError(f"{where}.SELECT_TIMEOUT must be a finite number of "
                         f"seconds > 0 (between on_idle() calls), got {value}")
    return value


def core_of(dispatcher):
    """The core of a Dispatcher: how the library's own modules (the command
    line, the test client) reach what it keeps under `_uhttp`."""
    return _ns.state(dispatcher)


class Dispatcher:
    """The HTTP front: static files, sync handlers, auth, pools.

    Subclass it to add @sync handlers and hooks (do_check, on_response,
    on_idle, on_log, ...), construct it with pools, call run().

    The library keeps its state in one attribute, `_uhttp`; besides the
    documented names (`log`, `port`, `_pools`, `_pending`, `_find_pool()`,
    the hooks, ...) every name is free for the subclass.
    """

    SELECT_TIMEOUT = 1
    LOG_NAME = '{cls}'

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        _ns.check_subclass(cls, _ns.DISPATCHER, 'sync', Dispatcher)
        check_select_timeout(cls.SELECT_TIMEOUT, cls.__name__)
        _routing.set_class_routes(cls, _routing.compile_routes(
            cls.__name__, _routing.declared_routes(cls, 'sync')))

    def __init__(self, port=8080, address='0.0.0.0', pools=None,
                 static_routes=None, shutdown_timeout=10, max_pending=1000,
                 ssl_context=None, log_level=_log.LOG_INFO, **kwargs):
        check_select_timeout(self.SELECT_TIMEOUT, type(self).__name__)
        core = Core(self, Dispatcher, port, address, pools, static_routes,
                    shutdown_timeout, max_pending, ssl_context, log_level,
                    **kwargs)
        self.__dict__[_ns.STATE] = core
        core.log.name = core.format_log_name()  # may log through on_log()
        self.log = core.log
        self._pools = core.pools
        self._pending = core.pending.requests

    # -- information ---------------------------------------------------------

    @property
    def port(self):
        """The port listened on (the real one once running with port=0)."""
        return core_of(self).port()

    address = _ns.Info(lambda core: core.settings.address, "The listen address.")
    pools = _ns.Info(lambda core: list(core.pools), "The pools, in order.")
    pending_count = _ns.Info(lambda core: len(core.pending),
                          "Requests handed to pools and not finished.")
    is_running = _ns.Info(lambda core: core.running, "True inside run().")
    log_level = _ns.Info(lambda core: core.log_level,
                      "The dispatcher's own log level.")

    def status(self):
        """A dict for monitoring: every pool's status(), the number of
        pending requests, open streams and connections, queued requests.
        (A member of a subclass named `status` replaces this method there;
        `Dispatcher.status(self)` still reaches it.)"""
        return core_of(self).status()

    def reload(self):
        """Rolling reload (as SIGHUP does): every worker of every pool is
        replaced, reload_batch slots at a time, without failing a request.
        Thread-safe. (A member of a subclass named `reload` replaces this
        method there; `Dispatcher.reload(self)` still reaches it.)"""
        core_of(self).control.request_action('reload')

    def _find_pool(self, path):
        """The pool for `path`: the first whose routes match, else the
        fallback pool, else None."""
        return core_of(self).find_pool(path)

    # -- running ---------------------------------------------------------------

    def run(self):
        """Serve until SIGTERM/SIGINT (or stop()), then shut down gracefully."""
        core_of(self).run()

    def stop(self):
        """Ask a running dispatcher to shut down gracefully (thread-safe)."""
        core_of(self).stop()

    # -- hooks to override --------------------------------------------------------

    def do_check(self, client):
        """Gate requests bound for pools: respond and raise RejectRequest to
        refuse. Static files and sync handlers are not checked."""

    def do_check_sync(self, client):
        """Gate sync routes (same contract as do_check)."""

    def on_request_accepted(self, request_id, client, pool):
        """Called when a request is queued for `pool`; the return value
        reaches the worker as request.context."""
        return None

    def on_response(self, response, pending):
        """Called after a worker's response was sent to the client."""

    def on_pending_removed(self, request_id, pending, reason):
        """Called exactly once per pooled request when it leaves the
        pending table, with one of the PENDING_* reasons."""

    def on_worker_died(self, pool, worker_id, reason, exitcode, victims):
        """Called when a worker process ended unexpectedly. `victims` are
        the (request_id, pending) pairs it held; the default logs each at
        ERROR and answers it 500 (or closes its stream)."""
        core = core_of(self)
        for request_id, pending in victims:
            core.log.error(
                "request %s (%s %s) lost: worker %s[%s] died (%s)", request_id,
                pending.method, _log.client_text(pending.client.path), pool.name,
                worker_id,
                reason)
            core.fail(pending, 500, {'error': 'Worker died'},
                      PENDING_WORKER_DIED)

    def on_forward(self, route, data):
        """Route a worker's forward(route, data) to a pool: the default
        queues it as a request_id=-1 POST to the pool matching `route`."""
        core = core_of(self)
        pool = core.find_pool(route)
        if pool is None:
            core.throttle.warning(
                'forward', "forward(%r): no pool serves this route; dropped",
                route)
            return
        queued = len(pool.scheduler)
        if queued >= core.settings.max_pending:
            core.throttle.warning(
                pool, "forward(%r): pool %s has %d requests queued; dropped",
                route, pool.name, queued)
            return
        pool.request_queue.put(_msg.Request(
            request_id=-1, method='POST', path=route, data=data))

    def on_static_served(self, client, file_path, status):
        """Called for every static 200 and authoritative 404."""

    def on_idle(self):
        """Called every SELECT_TIMEOUT seconds."""

    def on_log(self, name, level, message):
        """Write one log record (from any process); override to forward."""
        core_of(self).write_record(name, level, message)

    # -- user file descriptors -------------------------------------------------

    def register_reader(self, fd, callback):
        """Call `callback(fd)` when `fd` (int or object with fileno()) is
        readable, from the dispatcher loop. May be called before run()."""
        core_of(self).fd_callbacks().register(
            fd, EVENT_READ, callback)

    def register_writer(self, fd, callback):
        """Call `callback(fd)` when `fd` is writable (register only while
        there is something to write)."""
        core_of(self).fd_callbacks().register(
            fd, EVENT_WRITE, callback)

    def unregister_reader(self, fd):
        core = core_of(self)
        if core.user_fds is not None:
            core.user_fds.unregister(fd, EVENT_READ)

    def unregister_writer(self, fd):
        core = core_of(self)
        if core.user_fds is not None:
            core.user_fds.unregister(fd, EVENT_WRITE)

    def __repr__(self):
        core = core_of(self)
        return (f"<{type(self).__name__} {core.settings.address}:{core.port()} "
                f"pools={[pool.name for pool in core.pools]}>")


_routing.set_class_routes(Dispatcher, [])
