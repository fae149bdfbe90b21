"""Worker, ApiHandler and the worker process's event loop.

A worker is a forked process that owns no socket. It reads request and
control messages from its own pipe, runs the matching handler, and writes
responses, stream data and log records to its own pipe back to the
dispatcher. Its loop also serves the user's file descriptors and on_idle().
"""

import collections as _collections
import json as _json
import os as _os
import selectors as _selectors
import signal as _signal
import sys as _sys
import threading as _threading
import time as _time
import traceback as _traceback

from . import channel as _channel
from . import fds as _fds
from . import log as _log
from . import messages as _msg
from . import namespace as _ns
from . import routing as _routing

# exit codes of a worker process (sysexits-style, away from small codes a
# user may pick for permanent_failure_exitcode or sys.exit())
EXIT_OK = 0
EXIT_SETUP_FAILED = 70
EXIT_LOOP_FAILED = 71
EXIT_OUT_OF_MEMORY = 72
EXIT_REASONS = {
    EXIT_SETUP_FAILED: 'setup() failed',
    EXIT_LOOP_FAILED: 'worker loop failed',
    EXIT_OUT_OF_MEMORY: 'out of memory',
}


def _exit_status(code):
    """The process exit status sys.exit(code) asks for."""
    if code is None:
        return 0
    if isinstance(code, int) and not isinstance(code, bool):
        return code & 0xFF
    try:
        _sys.stderr.write(f'{code}\n')
    except Exception:  # pylint: disable=broad-except
        pass
    return 1

_monotonic = _time.monotonic

# set in a worker process before the Worker object is built
_runtime = None


class _StopWorker(BaseException):
    """Raised inside the worker to leave the loop (orphaned, SIGTERM)."""


class _Info:
    """A read-only view of the worker's own state (`worker_id`, ...).

    It is a non-data descriptor: a subclass's own member of the same name
    replaces it, and assigning to it on an instance stores the user's
    value, so these conveniences never take a name away from the user.
    """

    def __init__(self, field, doc):
        self.field = field
        self.__doc__ = doc

    def __get__(self, instance, owner=None):
        if instance is None:
            return self
        return getattr(instance.__dict__[_ns.STATE], self.field)


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
        _ns.check_subclass(cls, _ns.API_HANDLER, 'api')
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
    LOG_NAME = '{cls}[{worker_id}]'

    worker_id = _Info('worker_id', "This worker's slot in its pool (0..N-1).")
    pool_name = _Info('pool_name', "The name of this worker's pool.")
    pid = _Info('pid', "This worker's process id.")

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        _ns.check_subclass(cls, _ns.WORKER, 'api')
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
        _routing.set_class_routes(cls, _routing.compile_routes(
            cls.__name__, _routing.declared_routes(cls)))

    def __init__(self, worker_id=0, pool_name=None, **kwargs):
        state = _WorkerState(self, worker_id, pool_name or type(self).__name__,
                             _runtime)
        self.__dict__[_ns.STATE] = state
        self.kwargs = kwargs
        self._accepting = True
        level = _runtime.log_level if _runtime else _log.LOG_WARNING
        self.log = _log.Logger(state.format_log_name(), state.log_sink, level)

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

    def do_check(self, request):
        """Validate a request before routing: return (data, status) to
        refuse it, None to go on; or raise RejectRequest."""
        return None

    def on_request_error(self, request, err):
        """Called when a handler raises; the default logs and answers 500."""
        self.log.error(
            "%s %s failed in %s: %s\n%s", request.method, request.path,
            _handler_name(getattr(request, '_handler', None)), repr(err),
            ''.join(_traceback.format_exception(type(err), err,
                                                err.__traceback__)).rstrip())
        return {'error': 'Internal Server Error'}, 500

    # -- API for handlers --------------------------------------------------

    def keep_alive(self):
        """Tell the dispatcher this worker is alive and its requests are
        still being worked on: resets stuck detection and request timeouts."""
        runtime = _state(self).runtime
        if runtime is not None:
            runtime.slot.keep_alive(_monotonic())

    def pause(self):
        """Take no new requests (they go to the pool's other workers)."""
        if self._accepting:
            self._accepting = False
            runtime = _state(self).runtime
            if runtime is not None:
                runtime.send((_msg.W_PAUSE,))

    def resume(self):
        """Take new requests again after pause()."""
        if not self._accepting:
            self._accepting = True
            runtime = _state(self).runtime
            if runtime is not None:
                runtime.send((_msg.W_RESUME,))

    def forward(self, route, data):
        """Hand `data` to the pool serving `route` as a request_id=-1 request
        (fire and forget)."""
        if not isinstance(route, str):
            raise TypeError(f"forward() route must be a str, not {route!r}")
        runtime = _state(self).runtime
        if runtime is None:
            raise RuntimeError("forward() works only inside a running worker")
        runtime.send((_msg.W_FORWARD, route, data))

    def register_reader(self, fd, callback):
        """Call `callback(fd)` whenever `fd` (int or object with fileno())
        is readable."""
        _state(self).register(fd, _selectors.EVENT_READ, callback)

    def register_writer(self, fd, callback):
        """Call `callback(fd)` whenever `fd` is writable (register only while
        there is something to write)."""
        _state(self).register(fd, _selectors.EVENT_WRITE, callback)

    def unregister_reader(self, fd):
        _state(self).unregister(fd, _selectors.EVENT_READ)

    def unregister_writer(self, fd):
        _state(self).unregister(fd, _selectors.EVENT_WRITE)

    def __repr__(self):
        state = _state(self)
        return (f"<{type(self).__name__} worker_id={state.worker_id} "
                f"pid={state.pid}>")


def _state(worker):
    """The library's state of `worker` (read from the instance dict, so no
    class member of the user's can stand in for it)."""
    return worker.__dict__[_ns.STATE]


class _WorkerState:
    """What the library keeps for one Worker instance: its identity, its
    process runtime, and the answering paths Request uses."""

    __slots__ = ('worker', 'worker_id', 'pool_name', 'pid', 'runtime')

    def __init__(self, worker, worker_id, pool_name, runtime):
        self.worker = worker
        self.worker_id = worker_id
        self.pool_name = pool_name
        self.pid = _os.getpid()
        self.runtime = runtime

    @property
    def log(self):
        return self.worker.log

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
            runtime.fds = _fds.FdCallbacks(runtime.selector, self.worker.log)
        runtime.fds.register(fd, event, callback)

    def unregister(self, fd, event):
        if self.runtime is not None and self.runtime.fds is not None:
            self.runtime.fds.unregister(fd, event)

    # -- answering (used by Request) -----------------------------------------

    def send_response(self, request, data, status, headers, cookies):
        runtime = self.runtime
        try:
            message = _response_message(
                request.request_id, data, status, headers, cookies)
        except _msg.ResponseError as err:
            self.log.error("response to %s %s cannot be sent: %s",
                           request.method, request.path, err)
            message = _error_message(request.request_id, 500)
        request._state = request._ANSWERED
        request._released = True
        runtime.open_requests.pop(request.request_id, None)
        runtime.send(message)
        return True

    def start_stream(self, request, content_type, headers, cookies):
        runtime = self.runtime
        try:
            headers = _msg.check_headers(headers) or []
            cookies = _msg.check_cookies(cookies)
        except _msg.ResponseError as err:
            self.log.error("stream for %s %s cannot start: %s",
                           request.method, request.path, err)
            self.send_response(request, None, 500, None, None)
            return False
        names = {name.lower() for name, _ in headers}
        if 'content-type' not in names:
            headers.append(('content-type', content_type))
        if 'cache-control' not in names:
            headers.append(('cache-control', 'no-cache'))
        request._state = request._STREAMING
        request._released = True
        if request.request_id != -1:
            runtime.open_requests[request.request_id] = request
        runtime.send((_msg.W_STREAM_START, request.request_id, 200,
                      headers, cookies))
        return True

    def stream_data(self, request, data):
        self.runtime.send((_msg.W_STREAM_DATA, request.request_id, data))
        return True

    def end_stream(self, request):
        request._state = request._CLOSED
        self.runtime.open_requests.pop(request.request_id, None)
        self.runtime.send((_msg.W_STREAM_END, request.request_id))
        return True


def _out_of_memory(worker, request, handler):
    """A MemoryError leaves the process in an unknown state: answer 500,
    then end the worker so the dispatcher starts a fresh one."""
    runtime = _state(worker).runtime
    try:
        worker.log.error("%s ran out of memory on %s %s; the worker restarts",
                         _handler_name(handler), request.method, request.path)
    except MemoryError:
        pass
    if runtime is not None:
        request._state = request._ANSWERED
        request._released = True
        runtime.send(_error_message(request.request_id, 500))
        runtime.exit_code = EXIT_OUT_OF_MEMORY
    raise _StopWorker()


def _handler_name(handler):
    if handler is None:
        return 'handler'
    func = getattr(handler, '__func__', handler)
    owner = getattr(handler, '__self__', None)
    cls = type(owner).__name__ if owner is not None else ''
    name = getattr(func, '__qualname__', None) or repr(func)
    if cls and not name.startswith(cls + '.'):
        return f"{cls}.{getattr(func, '__name__', name)}"
    return name


def _response_message(request_id, data, status, headers=None, cookies=None):
    """Build the W_RESPONSE message for a handler's answer (may raise
    ResponseError)."""
    if isinstance(data, _msg.Response):
        response = data
        response.request_id = request_id  # filled in for the handler
        data = response.data
        status = response.status
        headers = response.headers
        cookies = response.cookies
    _msg.check_status(status)
    headers = _msg.check_headers(headers)
    cookies = _msg.check_cookies(cookies)
    body, kind, content_type = _msg.encode_body(data)
    if content_type is not None:
        if headers is None:
            headers = [('content-type', content_type)]
        elif not any(name.lower() == 'content-type' for name, _ in headers):
            headers.append(('content-type', content_type))
    return (_msg.W_RESPONSE, request_id, status, headers, body, kind, cookies)


def _error_message(request_id, status, text=None):
    text = text or {400: 'Bad Request', 404: 'Not Found',
                    500: 'Internal Server Error'}.get(status, 'Error')
    body = _json.dumps({'error': text}).encode()
    return (_msg.W_RESPONSE, request_id, status,
            [('content-type', _msg.CONTENT_TYPE_JSON)], body, _msg.BODY_JSON,
            None)


def _split_result(result):
    """(data, status, headers) from a handler's return value."""
    if type(result) is tuple and 2 <= len(result) <= 3 and isinstance(
            result[1], int) and not isinstance(result[1], bool):
        if len(result) == 2:
            return result[0], result[1], None
        return result
    return result, 200, None


class _Backlog:
    """The messages read from the request pipe and not handled yet, shared
    by the worker loop and its recall thread.

    One lock covers the pipe's FrameReader, the backlog and the claim of a
    request (writing its seq to the heartbeat slot as the started seq). The
    loop pops messages one at a time and claims a request as it pops it, if
    it is going to run it. On a recall, the recall thread reads what the
    pipe holds, takes every request left in the backlog (none of them was
    claimed) and, still holding the lock, sends W_RETURNED naming their
    seqs. So each request is claimed by the loop or returned, never both.

    Why a worker's death cannot make a request run twice: before it splits
    a dead worker's in-flight requests, the dispatcher reads every message
    the worker wrote; then it fails those whose seq is at most the slot's
    started seq (they were started) and requeues the others. Requests are
    claimed in seq order, and one popped but not claimed (bounced while
    paused) is announced by the loop before it pops the next, so every
    in-flight request at or below the started seq was started. A returned
    request was never claimed. If its W_RETURNED reached the pipe whole,
    the dispatcher drops it from the in-flight list before the split; if the
    worker died before or while writing it, the lock was held from the
    moment the requests were taken, so nothing after them was claimed: the
    started seq is still below every returned seq, and the split requeues
    them (it never fails them or lets a second copy run).
    """

    def __init__(self, reader, claim, send):
        self.lock = _threading.Lock()
        self.reader = reader
        self._messages = _collections.deque()
        self._claim = claim    # claim(seq, request_id): mark it started
        self._send = send      # send(message) to the dispatcher

    def __len__(self):
        return len(self._messages)

    def fill(self):
        """Read every complete message the pipe holds now into the backlog
        (ChannelError on a corrupt frame); True once the pipe is at EOF."""
        with self.lock:
            self._messages.extend(self.reader.read())
            return self.reader.eof

    def pop(self, accepting):
        """The next message, or None. A request is claimed as it is popped
        when `accepting` (it is going to run); else the caller bounces it."""
        with self.lock:
            if not self._messages:
                return None
            message = self._messages.popleft()
            if accepting and message[0] == _msg.M_REQUEST:
                self._claim(message[1], message[2])
            return message

    def give_back(self):
        """Return every request not started yet: read what the pipe holds,
        take the requests out of the backlog and send W_RETURNED with their
        seqs, all under the lock. Control messages stay, in order. True when
        the loop has something to look at (control messages, EOF, a corrupt
        frame)."""
        with self.lock:
            look = False
            try:
                self._messages.extend(self.reader.read())
            except _channel.ChannelError:
                look = True  # the loop reads it again, reports it and stops
            seqs = []
            kept = _collections.deque()
            for message in self._messages:
                if message[0] == _msg.M_REQUEST:
                    seqs.append(message[1])
                else:
                    kept.append(message)
            self._messages = kept
            self._send((_msg.W_RETURNED, seqs))
            return look or self.reader.eof or bool(kept)


class _Runtime:
    """Everything a worker process needs to talk to its dispatcher."""

    def __init__(self, in_fd, out_fd, slot, log_level, heartbeat_interval,
                 recall_fd=None):
        self.in_fd = in_fd
        self.out_fd = out_fd
        self.recall_fd = recall_fd
        self.slot = slot
        self.log_level = log_level
        self.heartbeat_interval = heartbeat_interval
        self.reader = _channel.FrameReader(in_fd)
        # pipe writes above PIPE_BUF are not atomic between threads
        self.send_lock = _threading.Lock()
        self.backlog = _Backlog(self.reader, self._claim, self.send)
        self.claim_lock = self.backlog.lock
        self._wake_fd = None
        self.selector = _selectors.DefaultSelector()
        self.fds = None  # FdCallbacks, made once the worker's log exists
        self.open_requests = {}  # request_id -> Request (deferred or streaming)
        self.running = True
        self.stopping = False
        self.busy = 0.0          # seconds spent running requests
        self.count = 0           # requests run
        self.exit_code = EXIT_OK

    def send(self, message):
        try:
            header, payload = _channel.pack_parts(message)
        except Exception as err:  # pylint: disable=broad-except
            # only user values (forward data) can fail to pickle
            header, payload = _channel.pack_parts((
                _msg.W_LOG, 'worker', _log.LOG_ERROR,
                f"message {message[0]} could not be sent: {err!r}"))
        try:
            with self.send_lock:
                _channel.write_parts(self.out_fd, header, payload)
        except (BrokenPipeError, ConnectionResetError, OSError):
            # the dispatcher has gone: nobody is left to answer
            self.running = False
            raise _StopWorker() from None

    def _claim(self, seq, request_id):
        self.slot.start(_monotonic(), seq, request_id)

    def start_recall(self):
        """Start the recall thread; returns the fd it wakes the loop through
        (None without a recall pipe)."""
        if self.recall_fd is None:
            return None
        wake_read, self._wake_fd = _os.pipe()
        _os.set_blocking(wake_read, False)
        _os.set_blocking(self._wake_fd, False)
        _threading.Thread(target=self._recall_loop, name='recall',
                          daemon=True).start()
        return wake_read

    def _recall_loop(self):
        """Wait in os.read() (no GIL held) for the dispatcher's recall byte;
        give back what the loop has not started. Ends with the pipe."""
        try:
            while _os.read(self.recall_fd, 256):
                if self.backlog.give_back():
                    try:
                        _os.write(self._wake_fd, b'\0')
                    except BlockingIOError:
                        pass  # a wake-up is pending already
        except (OSError, _StopWorker):
            return  # the dispatcher has gone, or this process is ending
        except BaseException:  # pylint: disable=broad-except
            try:
                _sys.stderr.write(_traceback.format_exc())
            except Exception:  # pylint: disable=broad-except
                pass


_WAKE = 'wake'  # selector data of the recall thread's wake-up pipe


def _serve(worker, runtime):
    """The worker loop: requests, control messages, user fds, on_idle()."""
    table = _build_table(worker)
    slot = runtime.slot
    selector = runtime.selector
    # non-blocking: the recall thread may empty the pipe after select()
    _os.set_blocking(runtime.in_fd, False)
    selector.register(runtime.in_fd, _selectors.EVENT_READ, None)
    wake_fd = runtime.start_recall()
    if wake_fd is not None:
        selector.register(wake_fd, _selectors.EVENT_READ, _WAKE)
    interval = runtime.heartbeat_interval
    next_idle = _monotonic() + interval
    backlog = runtime.backlog
    log = worker.log
    while runtime.running:
        now = _monotonic()
        timeout = next_idle - now
        if timeout < 0:
            timeout = 0
        slot.beat(now, runtime.busy, runtime.count)
        events = selector.select(timeout)
        now = _monotonic()
        slot.beat(now)
        for key, mask in events:
            data = key.data
            if data is None or data is _WAKE:
                if data is _WAKE:
                    _drain(wake_fd)
                try:
                    eof = backlog.fill()
                except _channel.ChannelError as err:
                    log.critical("corrupt message from dispatcher: %s", err)
                    raise _StopWorker() from None
                while True:
                    # claimed (if it runs) as it leaves the backlog
                    message = backlog.pop(worker._accepting)
                    if message is None:
                        break
                    _handle_message(worker, runtime, table, message)
                    if not runtime.running:
                        return
                if eof:
                    raise _StopWorker()  # dispatcher gone
            else:
                data.handle_event(key.fileobj, mask)
        if now >= next_idle:
            next_idle = now + interval
            try:
                worker.on_idle()
            except Exception as err:  # pylint: disable=broad-except
                log.error("on_idle() failed: %r\n%s", err,
                          _traceback.format_exc().rstrip())
            if _os.getppid() != runtime.parent_pid:
                raise _StopWorker()


def _drain(fd):
    try:
        while _os.read(fd, 256):
            pass
    except (BlockingIOError, InterruptedError):
        pass


def _build_table(worker):
    """The worker's route table; handlers are bound from their classes, so
    no instance attribute can shadow one."""
    table = _routing.RouteTable()
    for _, member, pattern, methods in _routing.class_routes(type(worker)):
        table.add(pattern, methods, _routing.bind(member, worker))
    for handler_class in type(worker).HANDLERS:
        handler = handler_class(worker)
        for _, member, pattern, methods in _routing.class_routes(handler_class):
            table.add(pattern, methods, _routing.bind(member, handler))
    return table


def _handle_message(worker, runtime, table, message):
    kind = message[0]
    if kind == _msg.M_REQUEST:
        if not worker._accepting:
            runtime.send((_msg.W_BOUNCE, message[2], message[1]))
            return
        _handle_request(worker, runtime, table, message)
    elif kind == _msg.M_DISCONNECT:
        request = runtime.open_requests.pop(message[1], None)
        if request is not None:
            request._state = request._CLOSED
            try:
                worker.on_disconnect(message[1])
            except Exception as err:  # pylint: disable=broad-except
                worker.log.error("on_disconnect(%s) failed: %r\n%s",
                                 message[1], err,
                                 _traceback.format_exc().rstrip())
    elif kind == _msg.M_CONFIG:
        try:
            worker.on_config(message[1])
        except Exception as err:  # pylint: disable=broad-except
            worker.log.error("on_config() failed: %r\n%s", err,
                             _traceback.format_exc().rstrip())
    elif kind == _msg.M_STOP:
        runtime.running = False


def _parse_body(request, body, content_type):
    """request.data from the raw body; a 400 message on malformed JSON."""
    if not body:
        request.data = None
        return None
    media = content_type.partition(';')[0].strip().lower()
    if media == 'application/json' or (
            media.startswith('application/') and media.endswith('+json')):
        try:
            request.data = _json.loads(body)
        except (ValueError, RecursionError) as err:
            return _error_message(
                request.request_id, 400, f"Invalid JSON body: {err}")
    else:
        request.data = body
    return None


def _handle_request(worker, runtime, table, message):
    """Run one request the loop has claimed (see _Backlog)."""
    (_, seq, request_id, method, path, query, headers, body, parsed,
     remote_address, context) = message
    started = _monotonic()
    request = _msg.Request(
        request_id, method, path, query=query, headers=headers,
        remote_address=remote_address, context=context)
    request._worker = _state(worker)
    if parsed:
        request.data = body
        reply = None
    else:
        reply = _parse_body(request, body, headers.get('content-type', ''))
    if reply is None:
        reply = _run_handler(worker, table, request)
    if reply is not None:
        runtime.send(reply)
    elif not request._released:
        request._released = True
        if request._state == request._OPEN and request_id != -1:
            runtime.open_requests[request_id] = request
        runtime.send((_msg.W_DEFERRED, request_id))
    runtime.slot.idle()
    runtime.busy += _monotonic() - started
    runtime.count += 1


def _run_handler(worker, table, request):
    """Run do_check and the handler; return a W_RESPONSE message or None
    when the request was answered, streamed or deferred."""
    handler = None
    try:
        try:
            result = worker.do_check(request)
            if result is None:
                handler, params = table.lookup(request.method, request.path)
                if handler is None:
                    if params is None:
                        return _error_message(request.request_id, 404)
                    allow = ', '.join(params)
                    return (_msg.W_RESPONSE, request.request_id, 405,
                            [('content-type', _msg.CONTENT_TYPE_JSON),
                             ('allow', allow)],
                            b'{"error": "Method Not Allowed"}', _msg.BODY_JSON,
                            None)
                request.path_params = params
                result = handler(request)
            elif not (type(result) is tuple or isinstance(result, _msg.Response)):
                raise _msg.ResponseError(
                    f"do_check() must return None or (data, status), "
                    f"not {result!r}")
        except _msg.RejectRequest as reject:
            result = (reject.data, reject.status)
        except _StopWorker:
            raise
        except MemoryError:
            _out_of_memory(worker, request, handler)
        except Exception as err:  # pylint: disable=broad-except
            request._handler = handler
            result = worker.on_request_error(request, err)
        if result is _msg.DEFERRED or request._state != request._OPEN:
            if result is not _msg.DEFERRED and result is not None and (
                    request._state == request._ANSWERED):
                worker.log.warning(
                    "%s returned a value for request %s that it already "
                    "answered; the value is dropped", _handler_name(handler),
                    request.request_id)
            return None
        data, status, headers = _split_result(result)
        message = _response_message(request.request_id, data, status, headers)
        request._state = request._ANSWERED
        request._released = True
        return message
    except _StopWorker:
        raise
    except _msg.ResponseError as err:
        worker.log.error("%s for %s %s returned a result that cannot be sent: %s",
                         _handler_name(handler), request.method, request.path,
                         err)
    except Exception as err:  # pylint: disable=broad-except
        worker.log.error(
            "%s for %s %s: answering failed: %r\n%s", _handler_name(handler),
            request.method, request.path, err, _traceback.format_exc().rstrip())
    request._state = request._ANSWERED
    request._released = True
    return _error_message(request.request_id, 500)


# -- process entry ------------------------------------------------------------

def _set_parent_death_signal(sig):
    """Linux: have the kernel send `sig` to this process when its parent dies."""
    if not _sys.platform.startswith('linux'):
        return
    try:
        import ctypes  # pylint: disable=import-outside-toplevel
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(sig), 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _on_sigterm(signum, frame):
    """SIGTERM stops a worker only once its dispatcher is gone.

    The kernel sends it when the dispatcher dies (parent-death signal). While
    the dispatcher lives it drives the stop itself, so a SIGTERM sent to the
    whole process group (systemd, kill of a session) does not cut requests
    short; the dispatcher's graceful shutdown ends the worker.
    """
    runtime = _runtime
    if runtime is not None and runtime.stopping:
        return  # already on the way out (teardown runs once, uncut)
    if runtime is None or _os.getppid() != runtime.parent_pid:
        if runtime is not None:
            runtime.stopping = True
        raise _StopWorker()


def child_main(spec):
    """Run one worker process; never returns (os._exit)."""
    global _runtime  # pylint: disable=global-statement
    code = EXIT_LOOP_FAILED
    try:
        _signal.signal(_signal.SIGINT, _signal.SIG_IGN)
        # the dispatcher's signals (reload, resize, upgrade) are not ours
        for sig in (_signal.SIGHUP, _signal.SIGTTIN, _signal.SIGTTOU,
                    _signal.SIGUSR2):
            _signal.signal(sig, _signal.SIG_IGN)
        _signal.signal(_signal.SIGTERM, _on_sigterm)
        _signal.signal(_signal.SIGCHLD, _signal.SIG_DFL)
        _signal.signal(_signal.SIGALRM, _signal.SIG_DFL)
        _set_parent_death_signal(_signal.SIGTERM)
        if _os.getppid() != spec.parent_pid:
            _os._exit(EXIT_OK)
        runtime = _Runtime(spec.in_fd, spec.out_fd, spec.slot,
                           spec.log_level, spec.heartbeat_interval,
                           spec.recall_fd)
        runtime.parent_pid = spec.parent_pid
        _runtime = runtime
        code = _run_worker(spec, runtime)
    except _StopWorker:
        code = EXIT_OK
    except BaseException:  # pylint: disable=broad-except
        try:
            _sys.stderr.write(_traceback.format_exc())
        except Exception:  # pylint: disable=broad-except
            pass
    finally:
        try:
            _sys.stdout.flush()
            _sys.stderr.flush()
        except Exception:  # pylint: disable=broad-except
            pass
        _os._exit(code)


def _address_space():
    """Bytes of address space this process maps now (Linux), or None."""
    try:
        with open('/proc/self/status', encoding='ascii') as status:
            for line in status:
                if line.startswith('VmSize:'):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _run_worker(spec, runtime):
    name = f"{spec.worker_class.__name__}[{spec.worker_id}]"
    if spec.memory_limit_mb:
        try:
            import resource  # pylint: disable=import-outside-toplevel
            limit = int(spec.memory_limit_mb * 1024 * 1024)
            used = _address_space()
            if used and used >= limit:
                runtime.send((_msg.W_LOG, name, _log.LOG_WARNING,
                              f"worker_memory_limit_mb={spec.memory_limit_mb} is "
                              f"below the {used // (1024 * 1024)} MB the process "
                              "already maps; every allocation will fail"))
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        except (ImportError, ValueError, OSError) as err:
            runtime.send((_msg.W_LOG, name, _log.LOG_WARNING,
                          f"worker_memory_limit_mb not applied: {err!r}"))
    try:
        worker = spec.worker_class(
            worker_id=spec.worker_id, pool_name=spec.pool_name, **spec.kwargs)
        name = worker.log.name
        worker.setup()
    except _StopWorker:
        raise
    except SystemExit as err:
        code = _exit_status(err.code)
        runtime.send((_msg.W_LOG, name, _log.LOG_WARNING,
                      f"setup() called sys.exit({err.code!r}): exiting with "
                      f"code {code}"))
        return code
    except BaseException as err:  # pylint: disable=broad-except
        runtime.send((_msg.W_LOG, name, _log.LOG_CRITICAL,
                      f"setup() failed: {err!r}\n"
                      + ''.join(_traceback.format_exc()).rstrip()))
        return EXIT_SETUP_FAILED
    for config in spec.configs:
        _handle_message(worker, runtime, None, (_msg.M_CONFIG, config))
    runtime.send((_msg.W_READY,))
    code = EXIT_OK
    try:
        _serve(worker, runtime)
    except _StopWorker:
        code = runtime.exit_code
    except SystemExit as err:  # sys.exit() in a handler or hook
        code = _exit_status(err.code)
    except MemoryError:
        code = EXIT_OUT_OF_MEMORY
    except Exception as err:  # pylint: disable=broad-except
        code = EXIT_LOOP_FAILED
        try:
            runtime.send((_msg.W_LOG, worker.log.name, _log.LOG_CRITICAL,
                          f"worker loop failed: {err!r}\n"
                          + _traceback.format_exc().rstrip()))
        except _StopWorker:
            pass
    runtime.running = False
    runtime.stopping = True
    try:
        worker.teardown()
    except _StopWorker:
        pass
    except Exception as err:  # pylint: disable=broad-except
        try:
            worker.log.error("teardown() failed: %r\n%s", err,
                             _traceback.format_exc().rstrip())
        except _StopWorker:
            pass
    return code
