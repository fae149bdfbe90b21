"""Dispatcher: the one process that owns every connection.

Its loop waits on one selector holding the listening socket, every client
connection, every worker's pipe, the signal wake-up pipe and the user's
file descriptors. A request is answered from a static mount or a sync
handler, or queued for a pool; a worker's answer comes back on its pipe and
goes out to the client. Timers (heartbeat checks, restarts, on_idle, request
deadlines) are kept in a heap and ordered queues, so the cost of an event
does not depend on how many requests are pending.
"""

import gc as _gc
import heapq as _heapq
import os as _os
import selectors as _selectors
import signal as _signal
import stat as _stat
import sys as _sys
import threading as _threading
import time as _time
import traceback as _traceback

import uhttp.server as _server

from . import channel as _channel
from . import fds as _fds
from . import heartbeat as _heartbeat
from . import http as _http
from . import log as _log
from . import messages as _msg
from . import routing as _routing
from . import static as _static
from . import worker as _worker
from .pool import WorkerPool, describe_exit, STABLE_AFTER

_monotonic = _time.monotonic
EVENT_READ = _selectors.EVENT_READ
EVENT_WRITE = _selectors.EVENT_WRITE

PENDING_COMPLETED = 'completed'
PENDING_TIMEOUT = 'timeout'
PENDING_DISCONNECTED = 'disconnected'
PENDING_STREAM_CLOSED = 'stream_closed'
PENDING_SHUTDOWN = 'shutdown'
PENDING_WORKER_DIED = 'worker_died'

# defaults the dispatcher gives the HTTP layer (uhttp-server's own are for
# microcontrollers: backlog 8, 32 connections, 512 KiB bodies, 100 requests
# per keep-alive connection)
HTTP_DEFAULTS = {
    'listen': 4096,
    'max_headers_length': 16 * 1024,
    'max_content_length': 16 * 1024 * 1024,
    'max_send_buffer_size': 256 * 1024,
    'keep_alive_timeout': 30,
    'keep_alive_max_requests': 1 << 62,
    'request_timeout': 30,
    'send_timeout': 60,
}
CONNECTIONS_PER_PENDING = 10
# A request sent to a worker that holds another waits behind it. When that
# worker has started nothing new for this long while another worker of the
# pool could take work, the dispatcher recalls the requests it has not
# started (they go back to the pool queue).
STALL_AFTER = 0.0025
QUEUE_WARNING_INTERVAL = 10.0
SHUTDOWN_WORKER_GRACE = 1.0
FLUSH_GRACE = 2.0


class _PendingRequest:
    """A request that was handed to a pool and not finished yet.

    `client` is the connection, `pool` the pool; `worker_id` the index of
    the worker holding it (None while queued).
    """

    __slots__ = ('request_id', 'client', 'pool', 'worker', 'streaming',
                 'done', 'deadline', 'accepted', 'context', 'method')

    def __init__(self, request_id, client, pool, now):
        self.request_id = request_id
        self.client = client
        self.pool = pool
        self.worker = None
        self.streaming = False
        self.done = False
        self.accepted = now
        self.deadline = now + pool.timeout
        self.context = None
        self.method = client.method

    @property
    def worker_id(self):
        return None if self.worker is None else self.worker.index

    @property
    def timestamp(self):
        """Wall-clock time (time.time()) the request was accepted."""
        return _time.time() - (_monotonic() - self.accepted)

    def __repr__(self):
        return (f"<_PendingRequest {self.request_id} {self.method} "
                f"pool={self.pool.name} worker={self.worker_id}>")


class _Wakeup:
    """The self-pipe signals are written to (signal.set_wakeup_fd)."""

    def __init__(self, owner):
        self._owner = owner
        self.read_fd, self.write_fd = _os.pipe()
        for fd in (self.read_fd, self.write_fd):
            _os.set_blocking(fd, False)
            _os.set_inheritable(fd, False)

    def handle_event(self, fileobj, mask):
        try:
            data = _os.read(self.read_fd, 512)
        except (BlockingIOError, InterruptedError):
            return None
        self._owner._on_signals(data)
        return None

    def close(self):
        for fd in (self.read_fd, self.write_fd):
            try:
                _os.close(fd)
            except OSError:
                pass


def _positive(value, name, allow_zero=False):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"Dispatcher {name} must be a number, not {value!r}")
    if value != value or value < 0 or (value == 0 and not allow_zero):
        raise ValueError(
            f"Dispatcher {name} must be {'>= 0' if allow_zero else '> 0'}, "
            f"got {value}")
    return value


class Dispatcher:
    """The HTTP front: static files, sync handlers, auth, pools.

    Subclass it to add @sync handlers and hooks (do_check, on_response,
    on_idle, on_log, ...), construct it with pools, call run().
    """

    SELECT_TIMEOUT = 1
    LOG_NAME = '{cls}'

    def __init__(self, port=8080, address='0.0.0.0', pools=None,
                 static_routes=None, shutdown_timeout=10, max_pending=1000,
                 ssl_context=None, log_level=_log.LOG_INFO, **kwargs):
        if isinstance(port, bool) or not isinstance(port, int) or not (
                0 <= port <= 65535):
            raise ValueError(f"Dispatcher port must be an int 0..65535, not {port!r}")
        if not isinstance(address, str):
            raise TypeError(f"Dispatcher address must be a str, not {address!r}")
        pools = [] if pools is None else pools
        if not isinstance(pools, (list, tuple)):
            raise TypeError(
                f"Dispatcher pools must be a list of WorkerPool, "
                f"not {type(pools).__name__}")
        fallback = None
        for pool in pools:
            if not isinstance(pool, WorkerPool):
                raise TypeError(
                    f"Dispatcher pools must hold WorkerPool instances, "
                    f"found {pool!r}")
            if pool._dispatcher is not None:
                raise ValueError(f"Dispatcher pools: {pool!r} already belongs "
                                 "to a dispatcher")
            if pools.count(pool) > 1:
                raise ValueError(f"Dispatcher pools: {pool!r} listed twice")
            if pool.is_fallback:
                if fallback is not None:
                    raise ValueError(
                        "Dispatcher pools: only one pool may have routes=None "
                        f"(the fallback): {fallback!r} and {pool!r}")
                fallback = pool
        self._shutdown_timeout = _positive(
            shutdown_timeout, 'shutdown_timeout', allow_zero=True)
        if isinstance(max_pending, bool) or not isinstance(max_pending, int):
            raise TypeError(f"Dispatcher max_pending must be an int, not {max_pending!r}")
        if max_pending < 1:
            raise ValueError(f"Dispatcher max_pending must be >= 1, got {max_pending}")
        if ssl_context is not None and not hasattr(ssl_context, 'wrap_socket'):
            raise TypeError(
                f"Dispatcher ssl_context must be an ssl.SSLContext, "
                f"not {ssl_context!r}")
        for name in kwargs:
            if name not in _http.HTTP_OPTIONS:
                raise TypeError(
                    f"Dispatcher() got an unexpected keyword argument {name!r} "
                    f"(HTTP server options: {', '.join(sorted(_http.HTTP_OPTIONS))})")
        self._port = port
        self._address = address
        self._ssl_context = ssl_context
        self._max_pending = max_pending
        self._pools = list(pools)
        self._fallback = fallback
        self._routed_pools = [pool for pool in pools if not pool.is_fallback]
        self._static = self._build_static(static_routes)
        self._http_options = dict(HTTP_DEFAULTS)
        self._http_options['max_waiting_clients'] = (
            CONNECTIONS_PER_PENDING * max_pending)
        self._http_options.update(kwargs)
        self._check_http_options()
        self._sync_table = self._build_sync_table()
        self.log_level = _log.check_level(log_level, 'Dispatcher log_level')
        self._log_style = _log.detect_style()
        self._log_stream = _sys.stderr
        self.log = _log.Logger(type(self).__name__, self._log_sink, log_level)
        self.log.name = self._format_log_name()
        self._pending = {}
        self._streams = 0
        self._next_id = 0
        self._server = None
        self._selector = None
        self._wakeup = None
        self._user_fds = None
        self._timers = []
        self._timer_seq = 0
        self._dirty = set()
        self._by_pid = {}
        self._running = False
        self._stopping = False
        self._stop_requested = None
        self._hurry = False
        self._signals_installed = False
        self._saved_handlers = {}
        self._queue_warned = {}
        self._accept_warned = 0.0
        self._has_on_response = (
            type(self).on_response is not Dispatcher.on_response)
        self._has_removed_hook = (
            type(self).on_pending_removed is not Dispatcher.on_pending_removed)
        self._has_accepted_hook = (
            type(self).on_request_accepted is not Dispatcher.on_request_accepted)
        self._has_do_check = type(self).do_check is not Dispatcher.do_check
        self._has_static_hook = (
            type(self).on_static_served is not Dispatcher.on_static_served)
        for pool in self._pools:
            pool._dispatcher = self

    # -- construction helpers ------------------------------------------------

    def _format_log_name(self):
        values = {'cls': type(self).__name__, 'pid': _os.getpid(),
                  'worker_id': None, 'pool_name': None}
        try:
            return str(self.LOG_NAME).format(**values)
        except (KeyError, IndexError, ValueError, AttributeError) as err:
            name = Dispatcher.LOG_NAME.format(**values)
            self.on_log(name, _log.LOG_WARNING,
                        f"invalid LOG_NAME {self.LOG_NAME!r} ({err!r}); "
                        "using the default")
            return name

    @staticmethod
    def _build_static(static_routes):
        if static_routes is None:
            return []
        if not isinstance(static_routes, dict):
            raise TypeError(
                "Dispatcher static_routes must be a dict of URL prefix -> "
                f"directory, not {type(static_routes).__name__}")
        mounts = []
        for prefix, value in static_routes.items():
            if isinstance(value, dict):
                unknown = set(value) - {'path', 'headers', 'authoritative'}
                if unknown:
                    raise ValueError(
                        f"static_routes[{prefix!r}]: unknown keys "
                        f"{sorted(unknown)} (known: path, headers, authoritative)")
                if 'path' not in value:
                    raise ValueError(f"static_routes[{prefix!r}] needs a 'path'")
                mount = _static.StaticMount(
                    prefix, value['path'], value.get('headers'),
                    value.get('authoritative', False))
            else:
                mount = _static.StaticMount(prefix, value)
            mounts.append(mount)
        # the longest prefix first: '/static/img/' before '/static/'
        mounts.sort(key=lambda mount: len(mount.prefix), reverse=True)
        return mounts

    def _check_http_options(self):
        options = self._http_options
        for name in ('listen', 'max_waiting_clients', 'max_headers_length',
                     'max_content_length', 'max_send_buffer_size',
                     'keep_alive_max_requests', 'file_chunk_size',
                     'max_ws_message_length'):
            if name in options:
                value = options[name]
                if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                    raise ValueError(
                        f"Dispatcher {name} must be a positive int, got {value!r}")
        for name in ('keep_alive_timeout', 'request_timeout', 'send_timeout'):
            _positive(options[name], name)
        proxies = options.get('trusted_proxies')
        if proxies is not None and (isinstance(proxies, str) or not isinstance(
                proxies, (list, tuple, set, frozenset))):
            raise TypeError(
                "Dispatcher trusted_proxies must be a list of IP addresses")

    def _build_sync_table(self):
        table = _routing.RouteTable()
        routes = _routing.compile_routes(
            type(self).__name__, _routing.declared_routes(type(self), 'sync'))
        for name, pattern, methods in routes:
            table.add(pattern, methods, name)
        return table if len(table) else None

    # -- public attributes -----------------------------------------------------

    @property
    def port(self):
        """The port listened on (the real one once running with port=0)."""
        if self._server is not None and self._server.port:
            return self._server.port
        return self._port

    @property
    def address(self):
        return self._address

    @property
    def pools(self):
        return list(self._pools)

    @property
    def pending_count(self):
        return len(self._pending)

    @property
    def is_running(self):
        return self._running

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
        the (request_id, pending) pairs it held; the default answers them
        500 (or closes their streams)."""
        for request_id, pending in victims:
            self._fail_pending(request_id, pending, 500,
                               {'error': 'Worker died'}, PENDING_WORKER_DIED)

    def on_forward(self, route, data):
        """Route a worker's forward(route, data) to a pool: the default
        queues it as a request_id=-1 POST to the pool matching `route`."""
        pool = self._find_pool(route)
        if pool is None:
            self.log.warning("forward(%r): no pool serves this route; dropped",
                             route)
            return
        if len(pool._queue) >= self._max_pending:
            self.log.warning("forward(%r): pool %s has %d requests queued; "
                             "dropped", route, pool.name, len(pool._queue))
            return
        pool.request_queue.put(_msg.Request(
            request_id=-1, method='POST', path=route, data=data))

    def on_static_served(self, client, file_path, status):
        """Called for every static 200 and authoritative 404."""

    def on_idle(self):
        """Called every SELECT_TIMEOUT seconds."""

    def on_log(self, name, level, message):
        """Write one log record (from any process); override to forward."""
        try:
            self._log_stream.write(
                _log.render(self._log_style, name, level, message))
            self._log_stream.flush()
        except (OSError, ValueError):
            pass

    # -- user file descriptors -------------------------------------------------

    def register_reader(self, fd, callback):
        """Call `callback(fd)` when `fd` (int or object with fileno()) is
        readable, from the dispatcher loop. May be called before run()."""
        self._fd_callbacks().register(fd, EVENT_READ, callback)

    def register_writer(self, fd, callback):
        """Call `callback(fd)` when `fd` is writable (register only while
        there is something to write)."""
        self._fd_callbacks().register(fd, EVENT_WRITE, callback)

    def unregister_reader(self, fd):
        if self._user_fds is not None:
            self._user_fds.unregister(fd, EVENT_READ)

    def unregister_writer(self, fd):
        if self._user_fds is not None:
            self._user_fds.unregister(fd, EVENT_WRITE)

    def _fd_callbacks(self):
        if self._selector is None:
            self._selector = _selectors.DefaultSelector()
        if self._user_fds is None:
            self._user_fds = _fds.FdCallbacks(self._selector, self.log)
        return self._user_fds

    # -- routing -------------------------------------------------------------

    def _find_pool(self, path):
        """The pool for `path`: the first whose routes match, else the
        fallback pool, else None."""
        for pool in self._routed_pools:
            if pool.matches(path):
                return pool
        return self._fallback

    # -- logging ---------------------------------------------------------------

    def _log_sink(self, name, level, text):
        try:
            self.on_log(name, level, text)
        except Exception:  # pylint: disable=broad-except
            try:
                Dispatcher.on_log(self, name, level, text)
            except Exception:  # pylint: disable=broad-except
                pass

    def _worker_log(self, name, level, text):
        self._log_sink(name, level, text)

    # -- running ---------------------------------------------------------------

    def run(self):
        """Serve until SIGTERM/SIGINT (or stop()), then shut down gracefully."""
        if self._running:
            raise RuntimeError("Dispatcher.run() is already running")
        self._running = True
        self._stopping = False
        self._stop_requested = None
        self._hurry = False
        try:
            self._start()
            self._loop()
            self._shutdown()
        finally:
            self._cleanup()
            self._running = False

    def stop(self):
        """Ask a running dispatcher to shut down gracefully (thread-safe)."""
        self._stop_requested = self._stop_requested or 'stop()'
        wakeup = self._wakeup
        if wakeup is not None:
            try:
                _os.write(wakeup.write_fd, b'\0')
            except OSError:
                pass

    def _start(self):
        if self._selector is None:
            self._selector = _selectors.DefaultSelector()
        self._raise_fd_limit()
        self._wakeup = _Wakeup(self)
        self._selector.register(self._wakeup.read_fd, EVENT_READ, self._wakeup)
        self._install_signals()
        options = dict(self._http_options)
        try:
            self._server = _http.Server(
                self, self._address, self._port, self._ssl_context,
                self._selector, **options)
        except OSError as err:
            self.log.critical("cannot listen on %s:%s: %s", self._address,
                              self._port, err)
            raise
        _os.set_inheritable(self._server.socket.fileno(), False)
        for pool in self._pools:
            self._start_pool(pool)
        scheme = 'https' if self._ssl_context else 'http'
        self.log.info("listening on %s://%s:%d (%d pools, %d workers)", scheme,
                      self._address, self.port, len(self._pools),
                      sum(pool.num_workers for pool in self._pools))
        now = _monotonic()
        self._call_at(now + self.SELECT_TIMEOUT, self._idle_tick)
        for pool in self._pools:
            self._call_at(now + pool.heartbeat_interval, self._health_tick, pool)

    def _raise_fd_limit(self):
        try:
            import resource  # pylint: disable=import-outside-toplevel
            soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
            want = self._http_options['max_waiting_clients'] + 256 + 4 * sum(
                pool.num_workers for pool in self._pools)
            if soft != resource.RLIM_INFINITY and soft < want:
                target = want if hard == resource.RLIM_INFINITY else min(want, hard)
                if target > soft:
                    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
                    soft = target
            if soft != resource.RLIM_INFINITY and soft < want:
                self.log.warning(
                    "open file limit is %d, below the %d connections allowed; "
                    "raise it (ulimit -n) or lower max_pending", soft,
                    self._http_options['max_waiting_clients'])
        except (ImportError, ValueError, OSError):
            pass

    def _install_signals(self):
        if _threading.current_thread() is not _threading.main_thread():
            return  # signals only work in the main thread: use stop()
        try:
            old_wakeup = _signal.set_wakeup_fd(self._wakeup.write_fd)
        except ValueError:
            return
        self._saved_handlers['wakeup'] = old_wakeup
        for sig in (_signal.SIGTERM, _signal.SIGINT, _signal.SIGCHLD):
            self._saved_handlers[sig] = _signal.signal(sig, self._on_signal)
        self._signals_installed = True

    def _restore_signals(self):
        if not self._signals_installed:
            return
        for sig, handler in self._saved_handlers.items():
            if sig == 'wakeup':
                continue
            try:
                _signal.signal(sig, handler)
            except (ValueError, TypeError):
                pass
        try:
            _signal.set_wakeup_fd(self._saved_handlers.get('wakeup', -1))
        except ValueError:
            pass
        self._saved_handlers = {}
        self._signals_installed = False

    def _on_signal(self, signum, frame):
        """Python-level handler: the work happens in the loop (_on_signals)."""
        if signum in (_signal.SIGTERM, _signal.SIGINT):
            self._request_stop(signum)

    def _request_stop(self, signum):
        name = _signal.Signals(signum).name
        if self._stopping or self._stop_requested:
            self._hurry = True
        self._stop_requested = self._stop_requested or name

    def _on_signals(self, data):
        if _signal.SIGCHLD in data or not self._signals_installed:
            self._reap()

    # -- timers ----------------------------------------------------------------

    def _call_at(self, when, func, *args):
        self._timer_seq += 1
        _heapq.heappush(self._timers, (when, self._timer_seq, func, args))

    def _run_timers(self, now):
        timers = self._timers
        while timers and timers[0][0] <= now:
            _, _, func, args = _heapq.heappop(timers)
            try:
                func(now, *args)
            except Exception as err:  # pylint: disable=broad-except
                self.log.error("timer %s failed: %r\n%s",
                               getattr(func, '__name__', func), err,
                               _traceback.format_exc().rstrip())

    def _idle_tick(self, now):
        self._call_at(now + self.SELECT_TIMEOUT, self._idle_tick)
        try:
            self.on_idle()
        except Exception as err:  # pylint: disable=broad-except
            self.log.error("on_idle() failed: %r\n%s", err,
                           _traceback.format_exc().rstrip())

    # -- the loop ----------------------------------------------------------------

    def _loop(self):
        tick = self._tick
        while not self._stop_requested:
            tick(self.SELECT_TIMEOUT)

    def _tick(self, longest):
        """One turn of the loop: wait for events (at most `longest` seconds,
        less when a timer or a request deadline is due), handle them, then
        flush worker pipes and run what is due."""
        server = self._server
        timers = self._timers
        pools = self._pools
        now = _monotonic()
        timeout = longest
        if timers and timers[0][0] - now < timeout:
            timeout = timers[0][0] - now
        for pool in pools:
            if pool._timeouts:
                first = next(iter(pool._timeouts.values())).deadline - now
                if first < timeout:
                    timeout = first
        if self._dirty or server._scheduled or timeout < 0:
            timeout = 0
        try:
            events = self._selector.select(timeout)
        except InterruptedError:
            events = ()
        on_request = self._on_request
        for key, mask in events:
            try:
                ready = key.data.handle_event(key.fileobj, mask)
                if ready is not None:
                    on_request(ready)
            except Exception as err:  # pylint: disable=broad-except
                self._event_failed(key, err)
        if server._scheduled:
            for connection in server.take_scheduled():
                ready = connection.process_pipelined()
                if ready is not None:
                    try:
                        on_request(ready)
                    except Exception as err:  # pylint: disable=broad-except
                        self.connection_failed(ready, err)
                        ready.close()
        try:
            if self._dirty:
                self._flush_workers()
            now = _monotonic()
            if timers and timers[0][0] <= now:
                self._run_timers(now)
            for pool in pools:
                if pool._timeouts:
                    self._expire(pool, now)
            if not self._signals_installed:
                self._reap()
            server.maintenance()
        except Exception as err:  # pylint: disable=broad-except
            self._loop_failed(err)

    def _loop_failed(self, err):
        """A bug in the loop's own housekeeping: log it, keep serving."""
        self.log.critical("dispatcher loop error (serving goes on): %r\n%s",
                          err, _traceback.format_exc().rstrip())

    def _event_failed(self, key, err):
        data = key.data
        if isinstance(data, _http.Connection):
            self.connection_failed(data, err)
            data.close()
        else:
            self.log.error("event handler %r failed: %r\n%s", data, err,
                           _traceback.format_exc().rstrip())

    # -- callbacks from the HTTP layer ------------------------------------------

    def connection_failed(self, connection, err):
        self.log.error("connection from %s failed: %r\n%s",
                       _peer(connection), err,
                       ''.join(_traceback.format_exception(
                           type(err), err, err.__traceback__)).rstrip())

    def client_gone(self, pending):
        """The client of a pooled request closed (or was closed)."""
        if pending.done:
            return
        pending.done = True
        request_id = pending.request_id
        self._pending.pop(request_id, None)
        pending.pool._timeouts.pop(request_id, None)
        reason = PENDING_DISCONNECTED
        if pending.streaming:
            self._streams -= 1
            reason = PENDING_STREAM_CLOSED
        handle = pending.worker
        if handle is not None and handle.alive and handle.out is not None:
            handle.out.add(_channel.pack((_msg.M_DISCONNECT, request_id)))
            self._dirty.add(handle)
        self._removed(request_id, pending, reason)

    def client_stalled(self, connection, limit):
        self.log.warning(
            "dropping %s: it read nothing for %ss with %d bytes waiting",
            _peer(connection), limit, connection.send_buffer_size)

    def accept_exhausted(self, err):
        """accept() failed for lack of file descriptors: pause accepting
        briefly instead of spinning on the listening socket."""
        now = _monotonic()
        if now - self._accept_warned > 10:
            self._accept_warned = now
            self.log.error("cannot accept connections: %s; pausing accept "
                           "for 0.5 s", err)
        self._server.pause_accepting()
        self._call_at(now + 0.5, lambda _now: self._server.resume_accepting())

    # -- a complete request arrived -------------------------------------------------

    def _on_request(self, client):
        if self._stopping:
            client.respond({'error': 'Server shutting down'}, status=503,
                           headers={'connection': 'close', 'retry-after': '1'})
            return
        path = client.path
        if self._static and (client.method == 'GET' or client.method == 'HEAD'):
            for mount in self._static:
                rest = mount.relative(path)
                if rest is not None:
                    if self._serve_static(client, mount, rest):
                        return
                    break
        allowed = None
        if self._sync_table is not None:
            name, params = self._sync_table.lookup(client.method, path)
            if name is not None:
                self._run_sync(client, name, params)
                return
            allowed = params
        pool = self._find_pool(path)
        if pool is None:
            if allowed:
                client.respond({'error': 'Method Not Allowed'}, status=405,
                               headers={'allow': ', '.join(allowed)})
            else:
                client.respond({'error': 'Not Found'}, status=404)
            return
        if self._has_do_check and not self._check(client, self.do_check, 'do_check'):
            return
        self._accept(client, pool)

    def _check(self, client, hook, name):
        """Run a do_check hook; False when it refused (answered) the request."""
        before = client.responses
        try:
            hook(client)
        except _msg.RejectRequest as reject:
            if not client.answered_since(before):
                try:
                    client.respond(reject.data, status=reject.status)
                except Exception as err:  # pylint: disable=broad-except
                    self.log.error("%s(): RejectRequest data cannot be sent: %r",
                                   name, err)
                    self._answer_error(client, 500, before=before)
            return False
        except Exception as err:  # pylint: disable=broad-except
            self.log.error("%s() failed for %s %s: %r\n%s", name,
                           client.method, client.path, err,
                           _traceback.format_exc().rstrip())
            self._answer_error(client, 500, before=before)
            return False
        return not client.answered_since(before)  # it may answer without raising

    def _answer_error(self, client, status, message=None, headers=None,
                      before=None):
        """Answer an error unless the request was answered already (since
        `client.responses` was `before`, when given)."""
        count = client.responses
        if client.answered_since(count if before is None else before):
            return
        text = message or _server.STATUS_CODES.get(status, 'Error')
        try:
            client.respond({'error': text}, status=status, headers=headers)
        except Exception:  # pylint: disable=broad-except
            client.close()
            return
        if not client.answered_since(count):
            client.close()  # could not answer: never leave it hanging

    def _serve_static(self, client, mount, rest):
        real = mount.resolve(rest)
        if real is None:
            if not mount.authoritative:
                return False
            client.respond({'error': 'Not Found'}, status=404)
            self._static_served(client, None, 404)
            return True
        try:
            _static.serve(client, mount, real)
        except Exception as err:  # pylint: disable=broad-except
            self.log.error("static file %s failed: %r", real, err)
            self._answer_error(client, 500)
            return True
        self._static_served(client, real, 200)
        return True

    def _static_served(self, client, path, status):
        if self._has_static_hook:
            try:
                self.on_static_served(client, path, status)
            except Exception as err:  # pylint: disable=broad-except
                self.log.error("on_static_served() failed: %r\n%s", err,
                               _traceback.format_exc().rstrip())

    def _run_sync(self, client, name, params):
        if type(self).do_check_sync is not Dispatcher.do_check_sync:
            if not self._check(client, self.do_check_sync, 'do_check_sync'):
                return
        before = client.responses
        try:
            getattr(self, name)(client, params)
        except _server.HttpErrorWithResponse as err:
            self._answer_error(client, err.status, str(err), before=before)
            return
        except Exception as err:  # pylint: disable=broad-except
            self.log.error("sync handler %s for %s %s failed: %r\n%s", name,
                           client.method, client.path, err,
                           _traceback.format_exc().rstrip())
            self._answer_error(client, 500, before=before)
            return
        if not client.answered_since(before):
            self.log.error("sync handler %s returned without answering %s %s",
                           name, client.method, client.path)
            self._answer_error(client, 500)

    def _accept(self, client, pool):
        if pool._degraded:
            self._answer_error(client, 503, 'Service Unavailable')
            return
        if not pool._alive:
            if pool.parked_count == pool.num_workers:
                self._answer_error(client, 503, 'No workers available')
            else:
                self._answer_error(client, 503, 'No workers available',
                                   {'retry-after': '1'})
            return
        if len(self._pending) - self._streams >= self._max_pending:
            self._answer_error(client, 503, 'Too many pending requests',
                               {'retry-after': '1'})
            return
        self._next_id += 1
        request_id = self._next_id
        pending = _PendingRequest(request_id, client, pool, _monotonic())
        if self._has_accepted_hook:
            try:
                pending.context = self.on_request_accepted(request_id, client, pool)
            except Exception as err:  # pylint: disable=broad-except
                self.log.error("on_request_accepted() failed: %r\n%s", err,
                               _traceback.format_exc().rstrip())
                pending.context = None
        self._pending[request_id] = pending
        pool._timeouts[request_id] = pending
        client.pending = pending
        pool._enqueue(pending)

    def _check_queue(self, pool):
        """Warn (at most every QUEUE_WARNING_INTERVAL s) about a long queue."""
        size = len(pool._queue)
        if pool.queue_warning and size > pool.queue_warning:
            now = _monotonic()
            last = self._queue_warned.get(pool)
            if last is None or now - last >= QUEUE_WARNING_INTERVAL:
                self._queue_warned[pool] = now
                self.log.warning(
                    "pool %s: %d requests queued (queue_warning=%d)",
                    pool.name, size, pool.queue_warning)

    # -- to and from workers ------------------------------------------------------

    def _send_request(self, handle, item):
        """Queue `item` on `handle`'s pipe; False when it cannot be sent."""
        handle.seq += 1
        seq = handle.seq
        if isinstance(item, _PendingRequest):
            client = item.client
            if client._socket is None:
                return False
            request_id = item.request_id
            try:
                remote = client.client_ip
            except Exception:  # pylint: disable=broad-except
                remote = None
            message = (_msg.M_REQUEST, seq, request_id, client._method,
                       client._path, client._query, client._headers,
                       client._data, False, remote, item.context)
            try:
                frame = _channel.pack_parts(message)
            except Exception as err:  # pylint: disable=broad-except
                if item.context is None:
                    self.log.error("request %s cannot be sent to %s: %r",
                                   request_id, handle.name, err)
                    self._fail_pending(request_id, item, 500, None,
                                       PENDING_COMPLETED)
                    return False
                self.log.error("on_request_accepted() returned a context that "
                               "cannot be sent to a worker (%r); request %s "
                               "goes with context=None", err, request_id)
                item.context = None
                frame = _channel.pack_parts(message[:-1] + (None,))
            item.worker = handle
        else:
            request_id = item.request_id
            message = (_msg.M_REQUEST, seq, request_id, item.method, item.path,
                       item.query, item.headers, item.data, True,
                       item.remote_address, item.context)
            try:
                frame = _channel.pack_parts(message)
            except Exception as err:  # pylint: disable=broad-except
                self.log.error("request to %s %s cannot be sent (data does not "
                               "pickle: %r); dropped", item.method, item.path,
                               err)
                return False
        handle.out.add_parts(*frame)
        inflight = handle.inflight
        inflight.append((seq, request_id, item))
        if len(inflight) > 1 and not handle.stall_check:
            self._watch_stall(handle)  # it waits behind another request
        self._dirty.add(handle)
        return True

    def _flush_workers(self):
        dirty = self._dirty
        self._dirty = set()
        for handle in dirty:
            out = handle.out
            if out is None:
                continue
            try:
                done = out.flush()
            except OSError:
                out.clear()
                continue  # the worker is gone; reaping handles it
            self._set_write_interest(handle, not done)

    def _set_write_interest(self, handle, want):
        if want == getattr(handle, '_writing', False):
            return
        handle._writing = want
        try:
            if want:
                self._selector.register(handle.to_fd, EVENT_WRITE, handle)
            else:
                self._selector.unregister(handle.to_fd)
        except (KeyError, ValueError, OSError):
            pass

    def _worker_event(self, handle, fileobj, mask):
        if fileobj == handle.to_fd:
            self._dirty.add(handle)
            return
        try:
            messages = handle.reader.read()
        except _channel.ChannelError as err:
            self.log.error("%s sent a corrupt message (%s); killing it",
                           handle.name, err)
            self._kill(handle, 'corrupt message')
            return
        if messages:
            self._handle_messages(handle, messages)
        if handle.reader.eof:
            self._pipe_closed(handle)

    def _handle_messages(self, handle, messages):
        pending_table = self._pending
        for message in messages:
            kind = message[0]
            if kind == _msg.W_RESPONSE:
                request_id = message[1]
                self._release(handle, request_id)
                handle.held.pop(request_id, None)
                pending = pending_table.pop(request_id, None)
                if pending is not None:
                    self._respond(pending, message)
            elif kind == _msg.W_STREAM_DATA:
                pending = pending_table.get(message[1])
                if pending is not None and pending.streaming:
                    self._stream_data(pending, message[2])
            elif kind == _msg.W_DEFERRED:
                request_id = message[1]
                item = self._release(handle, request_id)
                if item is not None and request_id in pending_table:
                    handle.held[request_id] = item
            elif kind == _msg.W_STREAM_START:
                self._stream_start(handle, message)
            elif kind == _msg.W_STREAM_END:
                request_id = message[1]
                handle.held.pop(request_id, None)
                pending = pending_table.pop(request_id, None)
                if pending is not None:
                    self._stream_end(pending)
            elif kind == _msg.W_LOG:
                self._worker_log(message[1], message[2], message[3])
            elif kind == _msg.W_READY:
                self._worker_ready(handle)
            elif kind == _msg.W_RETURNED:
                self._returned(handle, message[1])
            elif kind == _msg.W_BOUNCE:
                item = self._take(handle, message[2])
                handle.stalled = False
                if item is not None:
                    if isinstance(item, _PendingRequest):
                        item.worker = None
                    handle.pool._queue.appendleft(item)
                    handle.pool._released(handle)  # dispatches it elsewhere
            elif kind == _msg.W_PAUSE:
                handle.accepting = False
                handle.pool._withdraw(handle)
            elif kind == _msg.W_RESUME:
                handle.accepting = True
                handle.pool._offer(handle)
            elif kind == _msg.W_FORWARD:
                self._forward(handle, message[1], message[2])
            else:
                self.log.error("%s sent an unknown message kind %r",
                               handle.name, kind)

    def _release(self, handle, request_id, give_credit=True):
        """The worker is done with taking `request_id` (answered, deferred,
        streaming or bounced): remove it from the in-flight list and give
        the credit back. Returns the queue item, or None."""
        inflight = handle.inflight
        if not inflight:
            return None
        entry = inflight[0]
        if entry[1] == request_id:
            inflight.popleft()
        else:
            for entry in inflight:
                if entry[1] == request_id:
                    inflight.remove(entry)
                    break
            else:
                return None
        handle.stalled = False  # it has moved on: it may take more
        if give_credit and not handle.stopping:
            handle.pool._released(handle)
        return entry[2]

    @staticmethod
    def _take(handle, seq):
        """Remove the in-flight entry with this seq; its queue item, or None."""
        inflight = handle.inflight
        for entry in inflight:
            if entry[0] == seq:
                inflight.remove(entry)
                return entry[2]
        return None

    # -- taking back requests that wait behind a running handler -----------------

    def _watch_stall(self, handle):
        """`handle` holds a request that waits behind another: check in
        STALL_AFTER seconds whether the worker has moved on."""
        handle.stall_check = True
        self._call_at(_monotonic() + STALL_AFTER, self._check_stall, handle,
                      handle.pid, handle.slot.started())

    def _check_stall(self, now, handle, pid, seen):
        """Recall what `handle` has not started if it started nothing since
        the check was set (`seen` was its started seq then) and another
        worker of the pool could take work now; check again while it holds
        requests it has not started."""
        if handle.pid != pid or not handle.alive:
            return  # a later process of the slot has checks of its own
        handle.stall_check = False
        inflight = handle.inflight
        if not inflight or handle.recall_fd is None or handle.stopping:
            return
        started = handle.slot.started()
        if inflight[-1][0] <= started:
            return  # it has started everything it holds
        if (started == seen and not handle.recalled
                and handle.kill_reason is None and _others_free(handle)):
            self._recall(handle)
        handle.stall_check = True
        self._call_at(now + STALL_AFTER, self._check_stall, handle, pid,
                      started)

    def _recall(self, handle):
        """Ask the worker to give back what it has not started (W_RETURNED);
        it takes no new requests until it releases one."""
        try:
            _os.write(handle.recall_fd, b'\0')
        except BlockingIOError:
            pass  # a recall is pending already
        except OSError:
            return  # it has gone: reaping requeues what it held
        handle.recalled = True
        handle.stalled = True
        handle.recalls += 1
        handle.pool._withdraw(handle)

    def _returned(self, handle, seqs):
        """The worker gave back requests it never started: they go back to
        the front of the pool queue, in their order, for any worker."""
        handle.recalled = False
        if not seqs:
            return
        wanted = set(seqs)
        inflight = handle.inflight
        items = [entry[2] for entry in inflight if entry[0] in wanted]
        if not items:
            return
        kept = [entry for entry in inflight if entry[0] not in wanted]
        inflight.clear()
        inflight.extend(kept)
        pool = handle.pool
        queue = pool._queue
        for item in reversed(items):
            if isinstance(item, _PendingRequest):
                if item.done:
                    continue
                item.worker = None
            queue.appendleft(item)
        pool._dispatch()  # to the other workers first
        if not inflight:
            # it runs nothing it took from the pool (it was slow to start,
            # not busy): no release would end the stall, so end it here
            handle.stalled = False
        if not handle.stopping:
            pool._released(handle)  # re-placed unless stalled

    def _respond(self, pending, message):
        _, request_id, status, headers, body, kind, cookies = message
        pool = pending.pool
        pool._timeouts.pop(request_id, None)
        pending.done = True
        client = pending.client
        hooks = self._has_on_response or self._has_removed_hook
        if hooks:
            client.hold()
        if client._socket is not None and client.pending is pending:
            try:
                client.send_response(status, headers, body, cookies,
                                     head=pending.method == 'HEAD',
                                     close=self._stopping)
            except ValueError as err:
                self.log.error("response to request %s refused: %s",
                               request_id, err)
                client.pending = None
                self._answer_error(client, 500)
                status = 500
            except Exception as err:  # pylint: disable=broad-except
                self.connection_failed(client, err)
                client.pending = None
                client.close()
        if self._has_on_response:
            try:
                self.on_response(
                    _msg.Response._from_wire(request_id, status, headers, body,
                                             kind, cookies), pending)
            except Exception as err:  # pylint: disable=broad-except
                self.log.error("on_response() failed: %r\n%s", err,
                               _traceback.format_exc().rstrip())
        self._removed(request_id, pending, PENDING_COMPLETED)
        if hooks:
            client.release()

    def _stream_start(self, handle, message):
        _, request_id, status, headers, cookies = message
        item = self._release(handle, request_id)
        pending = self._pending.get(request_id)
        if pending is None:
            return
        handle.held[request_id] = item if item is not None else pending
        if pending.streaming:
            return
        pending.pool._timeouts.pop(request_id, None)
        client = pending.client
        if client._socket is None or client._response_started:
            return
        pending.streaming = True
        self._streams += 1
        try:
            client.start_stream(status, headers, cookies)
        except Exception as err:  # pylint: disable=broad-except
            self.log.error("stream for request %s cannot start: %r",
                           request_id, err)
            pending.streaming = False
            self._streams -= 1
            client.pending = None
            self._answer_error(client, 500)
            self._pending.pop(request_id, None)
            pending.done = True
            handle.held.pop(request_id, None)
            if handle.out is not None:
                handle.out.add(_channel.pack((_msg.M_DISCONNECT, request_id)))
                self._dirty.add(handle)
            self._removed(request_id, pending, PENDING_COMPLETED)

    def _stream_data(self, pending, data):
        client = pending.client
        if client._socket is None:
            return
        if not client.send_chunk(data):
            if client._socket is None or pending.done:
                self.log.warning(
                    "stream %s dropped: the client does not read fast enough "
                    "(send buffer limit %d bytes)", pending.request_id,
                    client._max_send_buffer_size)

    def _stream_end(self, pending):
        pending.done = True
        if pending.streaming:
            self._streams -= 1
        client = pending.client
        if client.pending is pending:
            client.end_stream()
        self._removed(pending.request_id, pending, PENDING_STREAM_CLOSED)

    def _forward(self, handle, route, data):
        try:
            self.on_forward(route, data)
        except Exception as err:  # pylint: disable=broad-except
            self.log.error("on_forward(%r) failed: %r\n%s", route, err,
                           _traceback.format_exc().rstrip())

    def _removed(self, request_id, pending, reason):
        if self._has_removed_hook:
            try:
                self.on_pending_removed(request_id, pending, reason)
            except Exception as err:  # pylint: disable=broad-except
                self.log.error("on_pending_removed() failed: %r\n%s", err,
                               _traceback.format_exc().rstrip())

    def _fail_pending(self, request_id, pending, status, data, reason,
                      headers=None):
        """End a pending request with an error status (or close its stream)."""
        if pending.done:
            return
        pending.done = True
        self._pending.pop(request_id, None)
        pending.pool._timeouts.pop(request_id, None)
        client = pending.client
        hooks = self._has_removed_hook
        if hooks:
            client.hold()
        if client.pending is pending:
            client.pending = None
            if pending.streaming:
                client.end_stream()
            elif client._socket is not None and not client._response_started:
                try:
                    client.respond(
                        data if data is not None else {
                            'error': _server.STATUS_CODES.get(status, 'Error')},
                        status=status, headers=headers)
                except Exception:  # pylint: disable=broad-except
                    client.close()
        if pending.streaming:
            self._streams -= 1
        self._removed(request_id, pending, reason)
        if hooks:
            client.release()

    # -- request timeouts -----------------------------------------------------------

    def _expire(self, pool, now):
        timeouts = pool._timeouts
        while timeouts:
            request_id, pending = next(iter(timeouts.items()))
            if pending.deadline > now:
                return
            timeouts.popitem(last=False)
            if pending.done:
                continue
            handle = pending.worker
            if handle is not None and handle.alive:
                keepalive = handle.slot.read()[1]
                if keepalive > pending.deadline - pool.timeout:
                    # keep_alive() since the deadline was set: a fresh timeout
                    pending.deadline = keepalive + pool.timeout
                    if pending.deadline > now:
                        self._reinsert_timeout(pool, request_id, pending)
                        continue
            self.log.warning("request %s (%s %s) timed out after %ss in pool %s",
                             request_id, pending.method, pending.client.path,
                             pool.timeout, pool.name)
            if handle is not None and handle.alive and handle.out is not None and (
                    request_id in handle.held):
                handle.held.pop(request_id, None)
                handle.out.add(_channel.pack((_msg.M_DISCONNECT, request_id)))
                self._dirty.add(handle)
            self._fail_pending(request_id, pending, 504,
                               {'error': 'Gateway Timeout'}, PENDING_TIMEOUT)

    @staticmethod
    def _reinsert_timeout(pool, request_id, pending):
        """Put an extended deadline back in order (it is rarely far back)."""
        timeouts = pool._timeouts
        timeouts[request_id] = pending
        # walk back from the end while later entries expire sooner
        later = []
        for other_id in reversed(timeouts):
            if other_id == request_id:
                continue
            other = timeouts[other_id]
            if other.deadline <= pending.deadline:
                break
            later.append(other_id)
            if len(later) > 64:
                break
        for other_id in reversed(later):
            timeouts.move_to_end(other_id)

    # -- workers: start, health, death -------------------------------------------

    def _start_pool(self, pool):
        pool._slots = _heartbeat.SlotTable(pool.num_workers)
        pool._handles = [
            _pool_handle(pool, index) for index in range(pool.num_workers)]
        for handle in pool._handles:
            self._spawn(handle)

    def _spawn(self, handle):
        pool = handle.pool
        to_read, to_write = _channel.make_pipe()
        from_read, from_write = _channel.make_pipe()
        recall_read, recall_write = _os.pipe()  # one byte: give back
        handle.slot.reset()
        spec = _WorkerSpec(pool, handle.index, to_read, from_write, handle.slot,
                           _os.getpid(), recall_read)
        _flush_std()
        try:
            pid = _os.fork()
        except OSError as err:
            for fd in (to_read, to_write, from_read, from_write, recall_read,
                       recall_write):
                _os.close(fd)
            self.log.error("cannot start %s: fork failed: %s", handle.name, err)
            self._schedule_restart(handle, _monotonic(), 1.0)
            return
        if pid == 0:  # the worker process
            try:
                _close_fd(to_write)  # else the worker never sees EOF
                _close_fd(from_read)
                _close_fd(recall_write)
                self._in_child(keep=(to_read, from_write, recall_read))
            finally:
                _worker.child_main(spec)
        _os.close(to_read)
        _os.close(from_write)
        _os.close(recall_read)
        _os.set_blocking(to_write, False)
        _os.set_blocking(from_read, False)
        _os.set_blocking(recall_write, False)
        handle.pid = pid
        handle.alive = True
        handle.ready = False
        handle.accepting = True
        handle.stopping = False
        handle.started_at = _monotonic()
        handle.to_fd = to_write
        handle.from_fd = from_read
        handle.recall_fd = recall_write
        handle.out = _channel.OutBuffer(to_write)
        handle.reader = _channel.FrameReader(from_read)
        handle.seq = 0
        handle.stalled = False
        handle.recalled = False
        handle.stall_check = False
        handle.work_seen = (0.0, 0)
        handle.kill_reason = None
        handle.exitcode = None
        handle._writing = False
        self._by_pid[pid] = handle
        self._selector.register(from_read, EVENT_READ, handle)
        self.log.debug("started %s (pid %d)", handle.name, pid)

    def _in_child(self, keep):
        """In a freshly forked worker: drop everything that belongs to the
        dispatcher (sockets above all), keep only the worker's pipes."""
        try:
            _signal.set_wakeup_fd(-1)
        except ValueError:
            pass
        keep = set(keep)
        server = self._server
        if server is not None:
            for connection in list(server._waiting_connections):
                _detach_close(connection._socket)
            _detach_close(server._socket)
        for pool in self._pools:
            for other in pool._handles:
                for fd in (other.to_fd, other.from_fd, other.recall_fd):
                    if fd is not None and fd not in keep:
                        _close_fd(fd)
        if self._wakeup is not None:
            _close_fd(self._wakeup.read_fd)
            _close_fd(self._wakeup.write_fd)
        try:
            self._selector.close()
        except Exception:  # pylint: disable=broad-except
            pass
        _gc.collect()
        _close_inherited_sockets(keep)
        try:
            _gc.freeze()
        except AttributeError:
            pass

    def _worker_ready(self, handle):
        handle.ready = True
        self.log.debug("%s ready (pid %s)", handle.name, handle.pid)
        if not handle.stopping:
            handle.pool._offer(handle)

    def _pipe_closed(self, handle):
        """EOF from a worker's pipe: it is exiting; reap it now if it has."""
        try:
            self._selector.unregister(handle.from_fd)
        except (KeyError, ValueError, OSError):
            pass
        handle.reader.eof = True
        self._reap_one(handle)

    def _reap(self):
        for pool in self._pools:
            for handle in pool._handles:
                if handle.alive:
                    self._reap_one(handle)

    def _reap_one(self, handle):
        try:
            pid, status = _os.waitpid(handle.pid, _os.WNOHANG)
        except ChildProcessError:
            pid, status = handle.pid, 0
        if pid == 0:
            return False
        self._worker_exited(handle, status)
        return True

    def _worker_exited(self, handle, status):
        pool = handle.pool
        now = _monotonic()
        reason, exitcode = describe_exit(status)
        # read what it managed to say before it went
        try:
            if not handle.reader.eof:
                messages = handle.reader.read(budget=1 << 30)
                if messages:
                    self._handle_messages(handle, messages)
        except (_channel.ChannelError, OSError):
            pass
        self._close_handle_fds(handle)
        self._by_pid.pop(handle.pid, None)
        handle.was_ready = handle.ready
        handle.alive = False
        handle.ready = False
        handle.exitcode = exitcode
        pool._withdraw(handle)
        victims, requeue = self._split_inflight(handle)
        for item in reversed(requeue):
            if isinstance(item, _PendingRequest):
                item.worker = None
            pool._queue.appendleft(item)
        expected = handle.stopping or self._stopping
        why = handle.kill_reason
        if expected and why is None:
            self.log.debug("%s (pid %s) %s", handle.name, handle.pid, reason)
        else:
            label = f"{why}, {reason}" if why else reason
            self.log.error("worker %s (pid %s) died: %s%s", handle.name,
                           handle.pid, label,
                           f"; {len(victims)} request(s) lost" if victims else '')
        if victims or not expected:
            try:
                self.on_worker_died(pool, handle.index, why or reason, exitcode,
                                    victims)
            except Exception as err:  # pylint: disable=broad-except
                self.log.error("on_worker_died() failed: %r\n%s", err,
                               _traceback.format_exc().rstrip())
            # whatever the hook did, every victim ends now, exactly once:
            # answered by the hook, or 500
            for request_id, pending in victims:
                if not pending.done:
                    self._fail_pending(request_id, pending, 500,
                                       {'error': 'Worker died'},
                                       PENDING_WORKER_DIED)
        if self._stopping or handle.stopping:
            return
        self._after_death(handle, exitcode, now)

    def _split_inflight(self, handle):
        """Victims (started or held requests, as (request_id, pending)) and
        the queue items it took but never started (to give to others)."""
        started = handle.slot.read()[2]
        victims = []
        requeue = []
        for seq, request_id, item in handle.inflight:
            if seq <= started:
                if isinstance(item, _PendingRequest) and not item.done:
                    victims.append((request_id, item))
            elif not getattr(item, 'done', False):
                requeue.append(item)
        handle.inflight.clear()
        for request_id, item in handle.held.items():
            if isinstance(item, _PendingRequest) and not item.done:
                victims.append((request_id, item))
        handle.held.clear()
        return victims, requeue

    def _close_handle_fds(self, handle):
        for fd in (handle.from_fd, handle.to_fd, handle.recall_fd):
            if fd is None:
                continue
            try:
                self._selector.unregister(fd)
            except (KeyError, ValueError, OSError):
                pass
            _close_fd(fd)
        handle.from_fd = handle.to_fd = handle.recall_fd = None
        handle._writing = False
        if handle.out is not None:
            handle.out.closed = True
        self._dirty.discard(handle)

    def _after_death(self, handle, exitcode, now):
        pool = handle.pool
        if (pool.permanent_failure_exitcode is not None
                and exitcode == pool.permanent_failure_exitcode):
            handle.parked = True
            self.log.warning("worker %s exited with code %s "
                             "(permanent_failure_exitcode): parked, not restarted",
                             handle.name, exitcode)
            self._after_capacity_change(pool)
            return
        lived = now - (handle.started_at or now)
        if handle.was_ready and lived >= STABLE_AFTER:
            handle.streak = 0  # it served: a fresh failure, restart at once
        handle.streak += 1
        handle.restarts += 1
        if pool._policy.record(now) and not pool._degraded:
            pool._degraded = True
            self.log.warning(
                "pool %s degraded: %d restarts within %ss; it answers 503%s",
                pool.name, pool.max_restarts, pool.restart_window,
                f" until it recovers in {pool.recovery_interval}s"
                if pool.recovery_interval else '')
            self._fail_queue(pool, 503, 'Service Unavailable')
            if pool.recovery_interval:
                self._call_at(now + pool.recovery_interval, self._recover, pool)
        delay = pool._policy.delay(handle.streak)
        self._schedule_restart(handle, now, delay)
        self._after_capacity_change(pool)

    def _schedule_restart(self, handle, now, delay):
        if delay <= 0:
            self._restart(now, handle)
            return
        self.log.warning("restarting %s in %.1fs (failed %d times in a row)",
                         handle.name, delay, handle.streak)
        handle.restart_at = now + delay
        self._call_at(now + delay, self._restart, handle)

    def _restart(self, now, handle):
        handle.restart_at = None
        if self._stopping or handle.alive or handle.parked:
            return
        self._spawn(handle)

    def _after_capacity_change(self, pool):
        """With no live worker left, queued requests cannot be served."""
        if not pool._alive and pool._queue:
            if pool.parked_count == pool.num_workers:
                self._fail_queue(pool, 503, 'No workers available')
            else:
                self._fail_queue(pool, 503, 'No workers available',
                                 {'retry-after': '1'})

    def _fail_queue(self, pool, status, text, headers=None):
        queue = pool._queue
        while queue:
            item = queue.popleft()
            if isinstance(item, _PendingRequest) and not item.done:
                self._fail_pending(item.request_id, item, status,
                                   {'error': text}, PENDING_COMPLETED, headers)

    def _recover(self, now, pool):
        if not pool._degraded:
            return
        pool._degraded = False
        pool._policy.reset()
        for handle in pool._handles:
            handle.streak = 0
        self.log.info("pool %s recovered from degraded after %ss",
                      pool.name, pool.recovery_interval)

    def _health_tick(self, now, pool):
        """Every heartbeat_interval: reap the dead, kill the stuck."""
        self._call_at(now + pool.heartbeat_interval, self._health_tick, pool)
        pool._update_window()
        for handle in pool._handles:
            if not handle.alive:
                continue
            if self._reap_one(handle):
                continue
            if handle.kill_reason is not None:
                continue
            heartbeat = handle.slot.read()[0]
            age = now - heartbeat
            if age > pool.stuck_timeout:
                # re-read: a torn read must not kill a healthy worker
                age = _monotonic() - handle.slot.read()[0]
                if age > pool.stuck_timeout:
                    self.log.error(
                        "worker %s (pid %s) stuck: no heartbeat for %.1fs "
                        "(stuck_timeout=%ss); killing it", handle.name,
                        handle.pid, age, pool.stuck_timeout)
                    self._kill(handle, 'stuck')
        if pool._queue:
            self._check_queue(pool)

    def _kill(self, handle, reason):
        handle.kill_reason = reason
        pool = handle.pool
        pool._withdraw(handle)
        try:
            _os.kill(handle.pid, _signal.SIGKILL)
        except ProcessLookupError:
            pass

    # -- shutdown --------------------------------------------------------------

    def _shutdown(self):
        why = self._stop_requested or 'stop'
        self._stopping = True
        self.log.info("shutting down (%s): %d pending request(s)", why,
                      len(self._pending))
        server = self._server
        server.stop_listening()
        start = _monotonic()
        deadline = start + self._shutdown_timeout
        # 1-2: stop accepting; let in-flight requests finish
        self._run_until(lambda: len(self._pending) - self._streams <= 0,
                        deadline)
        # 3: 503 to the rest, close streams
        for request_id, pending in list(self._pending.items()):
            if pending.worker is not None and pending.worker.alive and (
                    pending.worker.out is not None):
                pending.worker.out.add(
                    _channel.pack((_msg.M_DISCONNECT, request_id)))
                self._dirty.add(pending.worker)
            self._fail_pending(request_id, pending, 503,
                               {'error': 'Server shutting down'},
                               PENDING_SHUTDOWN)
        for pool in self._pools:
            for item in pool._queue:
                if isinstance(item, _PendingRequest) and not item.done:
                    self._fail_pending(item.request_id, item, 503,
                                       {'error': 'Server shutting down'},
                                       PENDING_SHUTDOWN)
            pool._queue.clear()
        # 4: stop the workers through their pipes
        stop = _channel.pack((_msg.M_STOP,))
        for pool in self._pools:
            for handle in pool._handles:
                if handle.alive and handle.out is not None:
                    handle.stopping = True
                    handle.out.add(stop)
                    self._dirty.add(handle)
        # 5: wait for them, kill those still alive at the deadline
        workers_deadline = max(deadline, _monotonic() + SHUTDOWN_WORKER_GRACE)
        self._run_until(self._all_workers_gone, workers_deadline)
        for pool in self._pools:
            for handle in pool._handles:
                if handle.alive:
                    self.log.warning("worker %s (pid %s) did not stop in time; "
                                     "killing it", handle.name, handle.pid)
                    self._kill(handle, 'shutdown')
        self._run_until(self._all_workers_gone, _monotonic() + 5.0)
        for pool in self._pools:
            for handle in pool._handles:
                if handle.alive:
                    try:
                        _os.waitpid(handle.pid, 0)
                    except ChildProcessError:
                        pass
                    handle.alive = False
        # let answers already written reach slow clients, briefly
        self._run_until(self._clients_flushed, _monotonic() + FLUSH_GRACE)
        self.log.info("stopped")

    def _all_workers_gone(self):
        return not any(handle.alive for pool in self._pools
                       for handle in pool._handles)

    def _clients_flushed(self):
        server = self._server
        return not any(connection.has_data_to_send
                       for connection in server.connections)

    def _run_until(self, condition, deadline):
        """Keep serving events (but no new connections) until `condition()`
        or the deadline; a second SIGTERM/SIGINT cuts it short."""
        while not condition():
            left = deadline - _monotonic()
            if left <= 0 or self._hurry:
                return
            self._tick(min(0.05, left))

    def _cleanup(self):
        self._restore_signals()
        for pool in self._pools:
            for handle in pool._handles:
                if handle.alive:
                    try:
                        _os.kill(handle.pid, _signal.SIGKILL)
                        _os.waitpid(handle.pid, 0)
                    except (ProcessLookupError, ChildProcessError):
                        pass
                    handle.alive = False
                self._close_handle_fds(handle)
            if pool._slots is not None:
                pool._slots.close()
                pool._slots = None
        if self._server is not None:
            try:
                self._server.close()
            except Exception:  # pylint: disable=broad-except
                pass
        if self._wakeup is not None:
            self._wakeup.close()
            self._wakeup = None
        if self._selector is not None:
            try:
                self._selector.close()
            except Exception:  # pylint: disable=broad-except
                pass
            self._selector = None
            self._user_fds = None
        self._timers = []
        self._dirty = set()


class _WorkerSpec:
    """What a forked worker needs to start."""

    def __init__(self, pool, index, in_fd, out_fd, slot, parent_pid,
                 recall_fd=None):
        self.worker_class = pool.worker_class
        self.worker_id = index
        self.pool_name = pool.name
        self.kwargs = pool.kwargs
        self.in_fd = in_fd
        self.out_fd = out_fd
        self.recall_fd = recall_fd
        self.slot = slot
        self.log_level = pool.log_level
        self.heartbeat_interval = pool.heartbeat_interval
        self.memory_limit_mb = pool.worker_memory_limit_mb
        self.configs = list(pool._config)
        self.parent_pid = parent_pid


def _others_free(handle):
    """True when another worker of `handle`'s pool could take work now."""
    pool = handle.pool
    for waiting in (pool._idle, pool._partial):
        for other in waiting:
            if other is not handle:
                return True
    return False


def _pool_handle(pool, index):
    from .pool import WorkerHandle  # pylint: disable=import-outside-toplevel
    return WorkerHandle(pool, index, pool._slots.slot(index))


def _peer(connection):
    try:
        return connection.socket_address
    except Exception:  # pylint: disable=broad-except
        return '?'


def _flush_std():
    for stream in (_sys.stdout, _sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError, AttributeError):
            pass


def _close_fd(fd):
    try:
        _os.close(fd)
    except OSError:
        pass


def _detach_close(sock):
    """Close a socket object's fd so that its finaliser cannot close a
    reused fd number later."""
    if sock is None:
        return
    try:
        fd = sock.detach()
    except (OSError, AttributeError, ValueError):
        return
    if fd >= 0:
        _close_fd(fd)


def _close_inherited_sockets(keep):
    """Close every other socket fd this process inherited."""
    for directory in ('/proc/self/fd', '/dev/fd'):
        try:
            names = _os.listdir(directory)
        except OSError:
            continue
        for name in names:
            try:
                fd = int(name)
            except ValueError:
                continue
            if fd <= 2 or fd in keep:
                continue
            try:
                if _stat.S_ISSOCK(_os.fstat(fd).st_mode):
                    _os.close(fd)
            except OSError:
                pass
        return
