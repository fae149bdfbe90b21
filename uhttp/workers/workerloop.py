"""The worker process: its runtime, its event loop, and how a request runs.

The loop reads request and control messages from the worker's own pipe
(through the backlog, see backlog.py), runs the matching handler, and
writes responses, stream data and log records to its own pipe back to the
dispatcher. It also serves the user's file descriptors and on_idle().
"""

import json as _json
import os as _os
import selectors as _selectors
import signal as _signal
import sys as _sys
import threading as _threading
import time as _time
import traceback as _traceback

from . import backlog as _backlog
from . import bodyview as _bodyview
from . import channel as _channel
from . import childsignals as _childsignals
from . import exits as _exits
from . import files as _files
from . import forklock as _forklock
from . import log as _log
from . import memlimit as _memlimit
from . import messages as _msg
from . import metrics as _metrics
from . import pipelend as _pipelend
from . import routing as _routing
from . import sharedbody as _sharedbody
from . import throttle as _throttle
from . import worker as _worker
from . import wsworker as _wsworker
from .exits import (EXIT_OK, EXIT_SETUP_FAILED, EXIT_LOOP_FAILED,  # noqa: F401
                    EXIT_OUT_OF_MEMORY, EXIT_REASONS, exit_status)

_monotonic = _time.monotonic
_log_of = _worker.log_of  # the library's logger (the user may replace self.log)
_process_runtime = [None]  # this process's runtime once a worker (signals)
_worker_pid = _exits.WORKER_PID  # the worker (not a child its code forked)
_forked = _exits.forked


class StopWorker(BaseException):
    """Raised inside the worker to leave the loop (orphaned, SIGTERM)."""


def _leave_if_forked(worker, request=None, err=None):
    """End this process if the user's code forked it and it came back."""
    if _forked():
        _exits.end_forked_copy(_log_of(worker), request, err)


def _out_of_memory(worker, request, handler):
    """A MemoryError leaves the process in an unknown state: answer 500,
    then end the worker so the dispatcher starts a fresh one."""
    _memlimit.release_reserve()
    runtime = _worker.state_of(worker).runtime
    try:
        _log_of(worker).error(
            "%s ran out of memory on %s %s; the worker restarts",
            _worker.handler_name(handler), request.method,
            _log.client_text(request.path))
    except MemoryError:
        pass
    if runtime is not None:
        _msg.mark_answered(request)
        runtime.send(_msg.error_message(request.request_id, 500))
        runtime.exit_code = EXIT_OUT_OF_MEMORY
    raise StopWorker()


class _Runtime:
    """Everything a worker process needs to talk to its dispatcher."""

    def __init__(self, in_fd, out_fd, slot, log_level, heartbeat_interval,
                 recall_fd=None, file_fd=None):
        self.in_fd = in_fd
        self.log_name = 'worker'  # the worker's, once it is made
        self.file_sock = _files.worker_socket(file_fd)
        _bodyview.set_inbox(self.file_sock)  # spooled bodies come through it
        self.share_above = _sharedbody.NEVER  # larger answers: shared memory
        self.out_fd = out_fd
        self.recall_fd = recall_fd
        self.slot = slot
        self.log_level = log_level
        self.heartbeat_interval = heartbeat_interval
        self.reader = _channel.FrameReader(
            in_fd, tail_type=bytes, too_large=_bodyview.unheld)
        # whole frames among threads and forked processes (forklock.py)
        self.send_lock = _forklock.SendLock(lambda: setattr(self, 'lent', None))
        # large answers lent to the pipe (pipelend.py), under send_lock
        self.lent = _pipelend.LentBuffers(out_fd) if (
            _pipelend.available()) else None
        self.backlog = _backlog.Backlog(self.reader, self._claim, self.send,
                                        lambda now: self.slot.beat(now))
        self.claim_lock = self.backlog.lock
        self._wake_fd = None
        self.selector = _selectors.DefaultSelector()
        self.fds = None  # FdCallbacks, made once the worker's log exists
        self.open_requests = {}  # request_id -> Request (deferred or streaming)
        self.websockets = {}     # request_id -> WebSocket (accepted, open)
        self.running = True
        self.stopping = False
        self.busy = 0.0          # seconds spent running requests
        self.count = 0           # requests run
        self.exit_code = EXIT_OK
        self.metrics = None      # the pool's user metrics (metrics.WorkerMetrics)
        self.idle_failure = None  # throttle.RepeatedFailure of on_idle()

    def send(self, message):
        if message[0] == _msg.W_FILE_RESPONSE and _files.carries_file(message):
            with self.send_lock:  # its descriptor first, then the message
                for each in _files.worker_messages(message, self.file_sock,
                                                   self.log_name):
                    self.send(each)
            return
        if _sharedbody.wanted(message, self.share_above, self.file_sock):
            # a large body: its descriptor goes first, the message after
            message = _sharedbody.share(message, self.file_sock)
        try:
            parts = _channel.pack_parts(
                message, _ANSWER_BODY if message[0] == _msg.W_RESPONSE else None)
        except Exception as err:  # pylint: disable=broad-except
            # only user values (forward data) can fail to pickle
            what = (f"forward({message[1]!r}, ...) dropped: its data"
                    if message[0] == _msg.W_FORWARD else f"message {message[0]}")
            parts = _channel.pack_parts((
                _msg.W_LOG, self.log_name, _log.LOG_ERROR,
                f"{what} could not be sent: {err!r}"))
        try:
            with self.send_lock:
                _channel.write_parts(self.out_fd, *parts, lent=self.lent)
        except (BrokenPipeError, ConnectionResetError, OSError):
            if _forked():
                return  # a process the worker forked outlived it: dropped
            self.running = False  # the dispatcher has gone: nobody answers
            raise StopWorker() from None

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
        except (OSError, StopWorker):
            return  # the dispatcher has gone, or this process is ending
        except BaseException:  # pylint: disable=broad-except
            try:
                _sys.stderr.write(_traceback.format_exc())
            except Exception:  # pylint: disable=broad-except
                pass


_ANSWER_BODY = 4  # where a W_RESPONSE holds its body: sent after the pickle
_WAKE = 'wake'  # selector data of the recall thread's wake-up pipe


def _serve(worker, runtime):
    """The worker loop: requests, control messages, user fds, on_idle()."""
    table = build_table(worker)
    runtime.send((_msg.W_ROUTES, tuple(table.patterns)))
    slot, selector = runtime.slot, runtime.selector
    # non-blocking: the recall thread may empty the pipe after select()
    _os.set_blocking(runtime.in_fd, False)
    in_key = selector.register(runtime.in_fd, _selectors.EVENT_READ, None)
    wake_fd = runtime.start_recall()
    if wake_fd is not None:
        selector.register(wake_fd, _selectors.EVENT_READ, _WAKE)
    interval = runtime.heartbeat_interval
    next_idle = _monotonic() + interval
    backlog = runtime.backlog
    log = _log_of(worker)
    idle_failure = runtime.idle_failure = _throttle.RepeatedFailure(
        log, 'on_idle()')
    backlog.loop_thread = _threading.get_ident()
    while runtime.running:
        _leave_if_forked(worker)
        now = _monotonic()
        timeout = next_idle - now
        if timeout < 0 or len(backlog):  # gone() read what a callback left
            timeout = 0
        slot.beat(now, runtime.busy, runtime.count)
        events = selector.select(timeout)
        if len(backlog) and all(key is not in_key for key, _ in events):
            events.append((in_key, _selectors.EVENT_READ))
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
                    raise StopWorker() from None
                while True:
                    # claimed (if it runs) as it leaves the backlog
                    message = backlog.pop(worker._accepting)
                    if message is None:
                        break
                    handle_message(worker, runtime, table, message)
                    if not runtime.running:
                        return
                if eof:
                    raise StopWorker()  # dispatcher gone
            else:
                data.handle_event(key.fileobj, mask)
        if now >= next_idle:
            next_idle = now + interval
            if runtime.metrics is not None:
                runtime.metrics.flush(runtime.send, now)
            try:
                worker.on_idle()
            except Exception as err:  # pylint: disable=broad-except
                idle_failure.failed(err, _traceback.format_exc().rstrip())
            else:
                idle_failure.worked()
            if _os.getppid() != runtime.parent_pid:
                raise StopWorker()


def _drain(fd):
    try:
        while _os.read(fd, 256):
            pass
    except (BlockingIOError, InterruptedError):
        pass


def build_table(worker):
    """The worker's route table (handlers bound from their classes)."""
    table = _routing.RouteTable()
    for _, member, pattern, methods in _routing.class_routes(type(worker)):
        table.add(pattern, methods, _wsworker.target(
            member, _routing.bind(member, worker), worker))
    for handler_class in type(worker).HANDLERS:
        handler = _worker.new_handler(handler_class, worker)
        for _, member, pattern, methods in _routing.class_routes(handler_class):
            table.add(pattern, methods, _wsworker.target(
                member, _routing.bind(member, handler), worker))
    return table


def handle_message(worker, runtime, table, message):
    _leave_if_forked(worker)
    kind = message[0]
    if kind == _msg.M_REQUEST:
        if not worker._accepting:
            runtime.send((_msg.W_BOUNCE, message[2], message[1]))
            return
        handle_request(worker, runtime, table, message)
    elif kind == _msg.M_DISCONNECT:
        request = runtime.open_requests.pop(message[1], None)
        if request is not None:
            _msg.mark_closed(request)
            try:
                worker.on_disconnect(message[1])
            except Exception as err:  # pylint: disable=broad-except
                _log_of(worker).error("on_disconnect(%s) failed: %r\n%s",
                                      message[1], err,
                                      _traceback.format_exc().rstrip())
    elif kind == _msg.M_WS_MESSAGE or kind == _msg.M_WS_CLOSED:
        _wsworker.handle_message(worker, runtime, message)
    elif kind == _msg.M_CONFIG:
        try:
            worker.on_config(message[1])
        except Exception as err:  # pylint: disable=broad-except
            _log_of(worker).error("on_config() failed: %r\n%s", err,
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
            request.data = _bodyview.parse_json(body)
        except (ValueError, RecursionError) as err:
            return _msg.error_message(
                request.request_id, 400, f"Invalid JSON body: {err}")
    else:
        request.data = body
    return None


def handle_request(worker, runtime, table, message):
    """Run one request the loop has claimed (see _Backlog)."""
    (_, seq, request_id, method, path, query, headers, body, parsed,
     remote_address, context) = message
    started = _monotonic()
    request = _msg.Request(
        request_id, method, path, query=query, headers=headers,
        remote_address=remote_address, context=context)
    _msg.set_route(request, None, started)
    _msg.attach(request, _worker.state_of(worker))
    reply = _bodyview.keep_body(request, body, _log_of(worker))  # (a 500: no fd)
    if reply is None and parsed:
        request.data = body
    elif reply is None:
        reply = _parse_body(request, body, headers.get('content-type', ''))
    if reply is None:
        reply = _run_handler(worker, table, request)
        _leave_if_forked(worker, request)
    if reply is not None:
        if request_id == -1:
            _worker.warn_unheard(worker, request, reply)
        runtime.send(reply + _msg.route_info(request))
    elif not _msg.is_released(request):
        _msg.mark_released(request)
        _worker.hold_open(runtime, request)
        runtime.send((_msg.W_DEFERRED, request_id) + _msg.route_info(request))
    runtime.slot.idle()
    now = _monotonic()
    runtime.busy += now - started
    runtime.count += 1
    if runtime.metrics is not None and runtime.metrics.dirty:
        runtime.metrics.flush_due(runtime.send, now)


def _run_handler(worker, table, request):
    """Run do_check and the handler; return a W_RESPONSE message or None
    when the request was answered, streamed or deferred."""
    handler = worker.do_check  # what the logs name until a route is found
    try:
        try:
            result = handler(request)
            if result is None:
                handler, params, route = table.find(request.method,
                                                    request.path)
                _msg.set_route(request, route)
                if handler is None:
                    if params is None:
                        return _msg.error_message(request.request_id, 404)
                    allow = ', '.join(params)
                    return (_msg.W_RESPONSE, request.request_id, 405,
                            [('content-type', _msg.CONTENT_TYPE_JSON),
                             ('allow', allow)],
                            b'{"error": "Method Not Allowed"}', _msg.BODY_JSON,
                            None)
                request.path_params = params
                result = handler(request)
            else:
                result = _msg.checked_refusal(result)
        except _msg.RejectRequest as reject:
            result = (reject.data, _msg.check_status(reject.status))
        except (StopWorker, SystemExit):
            raise   # sys.exit() in a handler ends the worker with its code
        except MemoryError:
            _out_of_memory(worker, request, handler)
        except BaseException as err:  # pylint: disable=broad-except
            _leave_if_forked(worker, request, err)
            _msg.set_handler(request, handler)  # (CancelledError too)
            result = _worker.error_answer(worker, request, err)
            if request.is_streaming:  # it cannot go on: end it
                request.response_stream_end()
                return None
        if result is _msg.DEFERRED or not _msg.is_unanswered(request):
            _worker.warn_late(worker, handler, request, result)
            return None
        data, status, headers = _msg.split_result(result)
        message = _msg.response_message(request.request_id, data, status, headers)
        _msg.mark_answered(request)
        return message
    except (StopWorker, SystemExit):
        raise
    except _msg.ResponseError as err:
        _log_of(worker).error(
            "%s for %s %s returned a result that cannot be sent: %s",
            _worker.handler_name(handler), request.method,
            _log.client_text(request.path), err)
    except MemoryError:   # encoding the answer, or in on_request_error()
        _out_of_memory(worker, request, handler)
    except BaseException as err:  # pylint: disable=broad-except
        _log_of(worker).error(  # (on_request_error() raised, CancelledError too)
            "%s for %s %s: answering failed: %r\n%s", _worker.handler_name(handler),
            request.method, _log.client_text(request.path), err,
            _traceback.format_exc().rstrip())
    _msg.mark_answered(request)
    return _msg.error_message(request.request_id, 500)


# -- process entry ------------------------------------------------------------

def _on_sigterm(signum, frame):
    """SIGTERM stops a worker only once its dispatcher is gone (the kernel
    sends it then: parent-death signal). While the dispatcher lives it drives
    the stop, so a SIGTERM to the whole process group (systemd) does not cut
    requests short. In a process its code forked, it does what it would."""
    if _os.getpid() != _worker_pid[0]:
        _signal.signal(_signal.SIGTERM, _signal.SIG_DFL)
        _os.kill(_os.getpid(), _signal.SIGTERM)
        return
    runtime = _process_runtime[0]
    if runtime is not None and runtime.stopping:
        return  # already on the way out (teardown runs once, uncut)
    if runtime is None or _os.getppid() != runtime.parent_pid:
        if runtime is not None:
            runtime.stopping = True
        raise StopWorker()


def child_main(spec):
    """Run one worker process; never returns (os._exit)."""
    code = EXIT_LOOP_FAILED
    try:
        _signal.signal(_signal.SIGINT, _signal.SIG_IGN)
        # the dispatcher's signals (reload, resize, upgrade) are not ours
        for sig in (_signal.SIGHUP, _signal.SIGTTIN, _signal.SIGTTOU,
                    _signal.SIGUSR2):
            _signal.signal(sig, _signal.SIG_IGN)
        _worker_pid[0] = _os.getpid()
        _childsignals.install(_on_sigterm)
        _childsignals.on_parent_death(_signal.SIGTERM)
        if _os.getppid() != spec.parent_pid:
            _os._exit(EXIT_OK)
        runtime = _Runtime(spec.in_fd, spec.out_fd, spec.slot,
                           spec.log_level, spec.heartbeat_interval,
                           spec.recall_fd, spec.file_fd)
        runtime.parent_pid = spec.parent_pid
        runtime.share_above = spec.share_above
        if spec.metrics:
            runtime.metrics = _metrics.WorkerMetrics(spec.metrics,
                                                     spec.pool_name)
        _worker.set_runtime(runtime)
        _process_runtime[0] = runtime
        if spec.transport is not None:  # a broker, not the pipe back
            spec.transport.attach(runtime)
        code = _run_worker(spec, runtime)
    except StopWorker:
        code = EXIT_OK
    except BaseException:  # pylint: disable=broad-except
        try:
            _sys.stderr.write(_traceback.format_exc())
        except Exception:  # pylint: disable=broad-except
            pass
    finally:
        try:
            if spec.transport is not None and not _forked():
                spec.transport.on_exit(code)
            _sys.stdout.flush()
            _sys.stderr.flush()
        except Exception:  # pylint: disable=broad-except
            pass
        _os._exit(code)


def _run_worker(spec, runtime):
    name = runtime.log_name = f"{spec.worker_class.__name__}[{spec.worker_id}]"
    if spec.memory_limit_mb:
        _memlimit.limit_memory(spec, runtime.send, name)
    try:
        worker = spec.worker_class(
            worker_id=spec.worker_id, pool_name=spec.pool_name, **spec.kwargs)
        _worker.check_constructed(worker)
        name = runtime.log_name = _log_of(worker).name
        worker.setup()
    except StopWorker:
        raise
    except SystemExit as err:
        code = exit_status(err.code)
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
        handle_message(worker, runtime, None, (_msg.M_CONFIG, config))
    runtime.send((_msg.W_READY,))
    code = EXIT_OK
    try:
        _serve(worker, runtime)
    except StopWorker:
        code = runtime.exit_code
    except SystemExit as err:  # sys.exit() in a handler or hook
        code = exit_status(err.code)
    except MemoryError:
        code = EXIT_OUT_OF_MEMORY
    except Exception as err:  # pylint: disable=broad-except
        code = EXIT_LOOP_FAILED
        try:
            runtime.send((_msg.W_LOG, _log_of(worker).name, _log.LOG_CRITICAL,
                          f"worker loop failed: {err!r}\n"
                          + _traceback.format_exc().rstrip()))
        except StopWorker:
            pass
    if _forked():   # sys.exit() in a process forked in a handler or hook:
        return code  # it ends, and nothing of the worker's ends with it
    runtime.running = False
    runtime.stopping = True
    try:
        worker.teardown()
    except StopWorker:
        pass
    except Exception as err:  # pylint: disable=broad-except
        try:
            _log_of(worker).error("teardown() failed: %r\n%s", err,
                                  _traceback.format_exc().rstrip())
        except StopWorker:
            pass
    _last_words(runtime)
    return code


def _last_words(runtime):
    """What an ending worker still has to tell: its metrics, and how often
    a failing on_idle() failed since it last said so."""
    try:
        if runtime.idle_failure is not None:
            runtime.idle_failure.worked()
        if runtime.metrics is not None:
            runtime.metrics.flush(runtime.send, _monotonic())
    except StopWorker:
        pass
