"""Worker and ApiHandler: the classes users subclass for their handlers.

A worker is a forked process that owns no socket (its loop is in
workerloop.py). The library keeps what it needs of a Worker instance in one
object under `_uhttp` (`_WorkerState`), so every other name is the user's.
"""

import os as _os
import selectors as _selectors
import sys as _sys
import time as _time
import traceback as _traceback

from . import backlog as _backlog
from . import fds as _fds
from . import log as _log
from . import messages as _msg
from . import metrics as _metrics
from . import namespace as _ns
from . import routing as _routing

_monotonic = _time.monotonic

# the worker process's runtime, set before the Worker object is built
_runtime = None


def set_runtime(runtime):
    """Install the process's runtime (workerloop.py) for the Worker that is
    built next (and for a WorkerClient's worker, a runtime of its own)."""
    global _runtime  # pylint: disable=global-statement
    _runtime = runtime


class _MetricsView:
    """`self.metrics`: the pool's declared metrics by name (a non-data
    descriptor like namespace.Info: a member of the subclass named `metrics` wins)."""

    def __get__(self, instance, owner=None):
        if instance is None:
            return self
        state = _ns.state(instance)
        found = getattr(state.runtime, 'metrics', None)
        if found is None:
            found = _metrics.WorkerMetrics((), state.pool_name)
            if state.runtime is not None:
                state.runtime.metrics = found
        return found


class ApiHandler:
    """Groups @api routes under a common prefix, `PATTERN`.

    Instances are built once per worker; `self.worker` is that worker.
    Subclasses inherit their parent's routes under their own PATTERN.
    """

    PATTERN = ''

    def __init__(self, worker):
        self.worker = worker

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        _ns.check_subclass(cls, _ns.API_HANDLER, 'api', ApiHandler)
        if not isinstance(cls.PATTERN, str):
            raise TypeError(
                f"{cls.__name__}.PATTERN must be a str, "
                f"not {type(cls.PATTERN).__name__}")
        if cls.PATTERN and not cls.PATTERN.startswith('/'):
            raise ValueError(
                f"{cls.__name__}.PATTERN {cls.PATTERN!r} must start with '/'")
        _routing.set_class_routes(cls, _routing.compile_routes(
            cls.__name__, _routing.declared_routes(cls), cls.PATTERN))


class Worker:
    """Base class of a pool's worker processes.

    Define handlers with @api on the class or on ApiHandler classes listed
    in HANDLERS. Override setup(), teardown(), on_config(), on_idle(),
    on_disconnect(), do_check() and on_request_error() as needed.

    The library keeps its state in one attribute, `_uhttp`; every other
    name is free for the subclass (`worker_id`, `pool_name` and `pid` are
    read-only conveniences that a member of the subclass may replace).
    """

    HANDLERS = []
    LOG_NAME = '{pool_name}[{worker_id}]'

    worker_id = _ns.Info(lambda state: state.worker_id,
                         "This worker's slot in its pool (0..N-1).")
    pool_name = _ns.Info(lambda state: state.pool_name,
                         "The name of this worker's pool.")
    pid = _ns.Info(lambda state: state.pid, "This worker's process id.")
    metrics = _MetricsView()

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        _ns.check_subclass(cls, _ns.WORKER, 'api', Worker)
        handlers = cls.HANDLERS
        if not isinstance(handlers, (list, tuple)):
            raise TypeError(
                f"{cls.__name__}.HANDLERS must be a list of ApiHandler "
                f"classes, not {type(handlers).__name__}")
        for handler in handlers:
            if not (isinstance(handler, type) and issubclass(handler, ApiHandler)):
                raise TypeError(
                    f"{cls.__name__}.HANDLERS: {handler!r} is not an "
                    "ApiHandler subclass")
            if list(handlers).count(handler) > 1:
                raise TypeError(f"{cls.__name__}.HANDLERS lists "
                                f"{handler.__name__} more than once")
        own = _routing.compile_routes(cls.__name__,
                                      _routing.declared_routes(cls))
        _routing.check_distinct(cls.__name__, [(cls.__name__, own)] + [
            (handler.__name__, _routing.class_routes(handler))
            for handler in handlers])
        _routing.set_class_routes(cls, own)

    def __init__(self, worker_id=0, pool_name=None, **kwargs):
        state = _WorkerState(self, worker_id, pool_name or type(self).__name__,
                             _runtime)
        self.__dict__[_ns.STATE] = state
        self.kwargs = kwargs
        self._accepting = True
        level = _runtime.log_level if _runtime else _log.LOG_WARNING
        self.log = state.log = _log.Logger(state.format_log_name(),
                                           state.log_sink, level)

    # -- hooks to override -------------------------------------------------

    def setup(self):
        """Called once in the worker process before it takes requests."""

    def teardown(self):
        """Called once when the worker stops."""

    def on_config(self, config):
        """Called with each config the dispatcher sends (send_config())."""

    def on_idle(self):
        """Called every heartbeat_interval seconds."""

    def on_disconnect(self, request_id):
        """Called when a deferred or streaming request can no longer be
        answered: its client went away, or it timed out."""

    def on_ws_message(self, ws, message):
        """A whole message (str for text, bytes for binary) arrived on a
        WebSocket this worker accepted."""

    def on_ws_close(self, ws, code, reason):
        """A WebSocket this worker accepted ended (once per connection,
        whichever side closed it or vanished)."""

    def do_check(self, request):
        """Validate a request before routing: return (data, status) to
        refuse it, None to go on; or raise RejectRequest."""
        return None

    def on_request_error(self, request, err):
        """Called when a handler raises; the default logs and answers 500."""
        log_of(self).error(
            "%s %s failed in %s: %s\n%s", request.method,
            _log.client_text(request.path),
            handler_name(_msg.handler_of(request)), repr(err),
            ''.join(_traceback.format_exception(type(err), err,
                                                err.__traceback__)).rstrip())
        return {'error': 'Internal Server Error'}, 500

    # -- API for handlers --------------------------------------------------

    def keep_alive(self):
        """Tell the dispatcher this worker is alive and its requests are
        still being worked on: resets stuck detection and request timeouts."""
        runtime = state_of(self).runtime
        if runtime is not None:
            runtime.slot.keep_alive(_monotonic())

    def pause(self):
        """Take no new requests (they go to the pool's other workers)."""
        if self._accepting:
            self._accepting = False
            runtime = state_of(self).runtime
            if runtime is not None:
                runtime.send((_msg.W_PAUSE,))

    def resume(self):
        """Take new requests again after pause()."""
        if not self._accepting:
            self._accepting = True
            runtime = state_of(self).runtime
            if runtime is not None:
                runtime.send((_msg.W_RESUME,))

    def forward(self, route, data):
        """Hand `data` to the pool serving `route` as a request_id=-1 request
        (fire and forget)."""
        if not isinstance(route, str):
            raise TypeError(f"forward() route must be a str, not {route!r}")
        runtime = state_of(self).runtime
        if runtime is None:
            raise RuntimeError("forward() works only inside a running worker")
        runtime.send((_msg.W_FORWARD, route, data))

    def register_reader(self, fd, callback):
        """Call `callback(fd)` whenever `fd` (int or object with fileno())
        is readable."""
        state_of(self).register(fd, _selectors.EVENT_READ, callback)

    def register_writer(self, fd, callback):
        """Call `callback(fd)` whenever `fd` is writable (register only while
        there is something to write)."""
        state_of(self).register(fd, _selectors.EVENT_WRITE, callback)

    def unregister_reader(self, fd):
        state_of(self).unregister(fd, _selectors.EVENT_READ)

    def unregister_writer(self, fd):
        state_of(self).unregister(fd, _selectors.EVENT_WRITE)

    def __repr__(self):
        state = state_of(self)
        return (f"<{type(self).__name__} worker_id={state.worker_id} "
                f"pid={state.pid}>")


def new_handler(handler_class, worker):
    """An ApiHandler of `worker`, with `self.worker` set before its
    __init__ runs: a subclass's __init__ may use it, and one that does not
    call super().__init__() still has it."""
    handler = handler_class.__new__(handler_class)
    handler.worker = worker
    handler.__init__(worker)
    return handler


def warn_unheard(worker, request, reply):
    """A fire-and-forget request (request_id=-1) refused with a 4xx: its
    answer goes nowhere, so say so (a 500 is logged where it happens)."""
    if reply[0] == _msg.W_RESPONSE and 400 <= reply[2] < 500:
        log_of(worker).warning(
            "%s %s (request_id=-1, fire-and-forget) was answered %s: "
            "nobody gets that answer", request.method,
            _log.client_text(request.path), reply[2])


def error_answer(worker, request, err):
    """What the worker's on_request_error() answers for a handler that
    raised: an override that returns None without answering gets the
    default 500 (a failed request never passes for a 200)."""
    result = worker.on_request_error(request, err)
    if result is None and _msg.is_unanswered(request) and (
            not request.is_streaming):
        return {'error': 'Internal Server Error'}, 500
    return result


def warn_late(worker, handler, request, result):
    """A handler's result for a request it already answered, streams or
    closed: a value is dropped, and None leaves a stream open (often a
    forgotten DEFERRED or response_stream_end()); say so."""
    if result is not None and result is not _msg.DEFERRED:
        what = ("a value for request %s that it already answered or "
                "streams; the value is dropped (return DEFERRED)")
    elif result is None and request.is_streaming:
        what = ("None for request %s that it streams: the stream stays open "
                "until response_stream_end() (return DEFERRED to say so)")
    else:
        return
    log_of(worker).warning('%s returned ' + what, handler_name(handler),
                           request.request_id)


def check_constructed(worker):
    """A TypeError naming the class when its __init__ did not call
    Worker.__init__ (the worker has no log, kwargs or state of ours)."""
    _ns.state(worker)


def log_of(worker):
    """The library's logger of `worker` (its own records keep going to the
    dispatcher when the user's code puts another logger at self.log)."""
    return _ns.state(worker).log


def state_of(worker):
    """The library's state of `worker` (read from the instance dict, so no
    class member of the user's can stand in for it)."""
    return _ns.state(worker)


class _WorkerState:
    """What the library keeps for one Worker instance: its identity, its
    process runtime, and the answering paths Request uses."""

    __slots__ = ('worker', 'worker_id', 'pool_name', 'pid', 'runtime', 'log')

    def __init__(self, worker, worker_id, pool_name, runtime):
        self.worker = worker
        self.worker_id = worker_id
        self.pool_name = pool_name
        self.pid = _os.getpid()
        self.runtime = runtime
        self.log = None  # the library's logger: self.log unless replaced

    # -- naming and logging ----------------------------------------------

    def format_log_name(self):
        values = {'cls': type(self.worker).__name__,
                  'worker_id': self.worker_id, 'pool_name': self.pool_name,
                  'pid': self.pid}
        template = type(self.worker).LOG_NAME
        try:
            return str(template).format(**values)
        except (KeyError, IndexError, ValueError, AttributeError) as err:
            self.log_sink(
                Worker.LOG_NAME.format(**values), _log.LOG_WARNING,
                f"invalid LOG_NAME {template!r} ({err!r}); using the default")
            return Worker.LOG_NAME.format(**values)

    def log_sink(self, name, level, text):
        runtime = self.runtime
        if runtime is None:
            _sys.stderr.write(_log.render(_log.STYLE_PLAIN, name, level, text))
            return
        runtime.send((_msg.W_LOG, name, level, text))

    # -- user file descriptors ---------------------------------------------

    def register(self, fd, event, callback):
        runtime = self.runtime
        if runtime is None:
            raise RuntimeError("register_*() works only inside a running worker")
        if runtime.fds is None:
            runtime.fds = _fds.FdCallbacks(runtime.selector, self.log)
        runtime.fds.register(fd, event, callback)

    def unregister(self, fd, event):
        if self.runtime is not None and self.runtime.fds is not None:
            self.runtime.fds.unregister(fd, event)

    # -- answering (used by Request) -----------------------------------------

    def send_response(self, request, data, status, headers, cookies):
        runtime = self.runtime
        if request.request_id == -1 and _msg.is_released(request):
            # a fire-and-forget request answered after DEFERRED: nobody
            # waits for it, and its in-flight entry was released already
            _msg.mark_answered(request)
            return True
        try:
            message = _msg.response_message(
                request.request_id, data, status, headers, cookies)
        except _msg.ResponseError as err:
            self.log.error("response to %s %s cannot be sent: %s",
                           request.method, _log.client_text(request.path), err)
            message = _msg.error_message(request.request_id, 500)
        _msg.mark_answered(request)
        runtime.open_requests.pop(request.request_id, None)
        runtime.send(message + _msg.route_info(request))
        return True

    def start_stream(self, request, content_type, headers, cookies):
        runtime = self.runtime
        try:
            headers = _msg.check_headers(headers) or []
            cookies = _msg.check_cookies(cookies)
        except _msg.ResponseError as err:
            self.log.error("stream for %s %s cannot start: %s",
                           request.method, _log.client_text(request.path), err)
            self.send_response(request, {'error': 'Internal Server Error'},
                               500, None, None)  # as any answer that fails
            return False
        names = {name.lower() for name, _ in headers}
        if 'content-type' not in names:
            headers.append(('content-type', content_type))
        if 'cache-control' not in names:
            headers.append(('cache-control', 'no-cache'))
        _msg.mark_streaming(request)
        if request.request_id != -1:
            runtime.open_requests[request.request_id] = request
        runtime.send((_msg.W_STREAM_START, request.request_id, 200,
                      headers, cookies) + _msg.route_info(request))
        return True

    def stream_data(self, request, data):
        runtime = self.runtime
        if _backlog.client_gone(runtime, request.request_id):
            _msg.mark_closed(request)  # the loop calls on_disconnect next
            return False
        runtime.send((_msg.W_STREAM_DATA, request.request_id, data))
        return True

    def not_streaming(self, request, what):
        """A stream's send on a request that has none: False once it was
        answered or its stream ended (its client may have left); before
        response_stream() a RuntimeError (the client would wait for a
        stream that never starts, until its 504)."""
        if _msg.is_unanswered(request):
            raise RuntimeError(f"{what}() on request {request.request_id} "
                               "before response_stream(): start the stream "
                               "first (response_stream or response_ndjson)")
        return False

    def end_stream(self, request):
        _msg.mark_closed(request)
        self.runtime.open_requests.pop(request.request_id, None)
        self.runtime.send((_msg.W_STREAM_END, request.request_id))
        return True


def hold_open(runtime, request):
    """Keep a request its handler deferred, unanswered still, until it is
    answered or its client leaves. A thread of the handler's may answer it
    at any moment, also between the check and the keeping: its respond()
    popped nothing then, so the check is made again after (a stream it
    started meanwhile stays: start_stream() keeps it too)."""
    request_id = request.request_id
    if _msg.is_unanswered(request) and request_id != -1:
        runtime.open_requests[request_id] = request
        if not (_msg.is_unanswered(request) or request.is_streaming):
            runtime.open_requests.pop(request_id, None)


def handler_name(handler):
    if handler is None:
        return 'handler'
    func = getattr(handler, '__func__', handler)
    owner = getattr(handler, '__self__', None)
    cls = type(owner).__name__ if owner is not None else ''
    name = getattr(func, '__qualname__', None) or repr(func)
    if cls and not name.startswith(cls + '.'):
        return f"{cls}.{getattr(func, '__name__', name)}"
    return name
