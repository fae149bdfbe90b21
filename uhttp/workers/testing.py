"""Testing apps: the real server in a test (`TestServer`), and a worker's
handlers called in the test's own process (`WorkerClient`).

    from uhttp.workers.testing import TestServer

    def test_items():
        with TestServer(MyDispatcher, pools=[WorkerPool(ItemWorker)]) as server:
            assert server.get('/api/items').json() == {'items': []}
            server.assert_no_errors()

`WorkerClient(ItemWorker).get('/api/item/1')` calls the handlers in the
test's own process instead (see workerclient.py).

`TestServer` forks the dispatcher (which forks its workers) into a process
group of its own, on 127.0.0.1 and a free port; it returns from `start()`
once every worker is ready, and `stop()` shuts it down gracefully, then
kills the group, so no process outlives the test.
"""

import collections as _collections
import http.client as _http_client
import json as _json
import os as _os
import signal as _signal
import socket as _socket
import ssl as _ssl
import sys as _sys
import threading as _threading
import time as _time
import traceback as _traceback

from . import log as _log
from .dispatcher import Dispatcher, core_of
from .workerclient import Verbs, WorkerClient, WorkerResponse, request_body

__all__ = ['TestServer', 'TestServerError', 'TestResponse', 'LogRecord',
           'SSEEvent', 'WorkerClient', 'WorkerResponse']

LogRecord = _collections.namedtuple('LogRecord', 'name level message')


# what the dispatcher says it does about a worker that failed
_WHAT_NEXT = ('restarting', 'degraded', 'parked', 'giving up')


def _ended_before_ready(status):
    """The name of a worker that ended before it ever got ready (it is
    parked, or restarted with back-off: it would only end again), or None."""
    for pool in status['pools']:
        for worker in pool['workers']:
            if not worker['ready'] and (worker['parked'] or worker['restarts']):
                return f"{pool['name']}[{worker['id']}]"
    return None


class TestServerError(RuntimeError):
    """The server did not start; `log` holds what it logged, `traceback`
    the exception that stopped it, if any."""

    __test__ = False  # not a test class for pytest

    def __init__(self, message, log='', traceback=None):
        text = message
        if traceback:
            text += '\n' + traceback
        if log:
            text += '\n-- log --\n' + log
        super().__init__(text)
        self.log = log
        self.traceback = traceback


class Headers(dict):
    """Response headers; names are matched without regard to case."""

    def __init__(self, pairs):
        super().__init__()
        for name, value in pairs:
            key = name.lower()
            super().__setitem__(key, value if key not in self else
                                f"{self[key]}, {value}")

    def __getitem__(self, name):
        return super().__getitem__(name.lower())

    def __contains__(self, name):
        return super().__contains__(str(name).lower())

    def get(self, name, default=None):
        return super().get(name.lower(), default)


def as_sent(value):
    """A header value as http.client gives it (each byte read as Latin-1)
    shown as the server sent it: text when its bytes are UTF-8, as a
    handler's text value is sent, else Latin-1 as read."""
    try:
        return value.encode('latin-1').decode('utf-8')
    except UnicodeError:
        return value


class TestResponse:
    """One HTTP response: status, headers, content, text, json()."""

    __test__ = False

    def __init__(self, status, headers, content):
        self.status = status
        self.headers = headers
        self.content = content

    @property
    def text(self):
        return self.content.decode('utf-8', 'replace')

    def json(self):
        return _json.loads(self.content)

    def __repr__(self):
        return f"<TestResponse {self.status} {self.content[:120]!r}>"


SSEEvent = _collections.namedtuple('SSEEvent', 'event data id')


class TestServer(Verbs):
    """The real dispatcher and workers of an app, for a test."""

    __test__ = False

    def __init__(self, dispatcher_class=Dispatcher, pools=None, *,
                 startup_timeout=15.0, stop_timeout=15.0, **kwargs):
        if not (isinstance(dispatcher_class, type)
                and issubclass(dispatcher_class, Dispatcher)):
            raise TypeError(f"TestServer needs a Dispatcher subclass, "
                            f"not {dispatcher_class!r}")
        self.dispatcher_class = dispatcher_class
        # None: the app's own (a Dispatcher subclass whose __init__ makes
        # its pools, as for the command line)
        self.pools = None if pools is None else list(pools)
        self.kwargs = kwargs
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self.pid = None
        self.port = None
        self.https = False  # the dispatcher serves HTTPS (its ssl_context)
        self.logs = []
        self._control = None
        self._replies = _collections.deque()
        self._events = _threading.Condition()
        self._reader = None
        self._failure = None
        self._exited = None

    # -- life ------------------------------------------------------------------

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    @property
    def url(self):
        scheme = 'https' if self.https else 'http'
        return f'{scheme}://127.0.0.1:{self.port}'

    def _connection(self, timeout):
        """A connection to the server: HTTPS when it serves that, its
        certificate taken unverified (a test's own, made for the test)."""
        if not self.https:
            return _http_client.HTTPConnection('127.0.0.1', self.port,
                                               timeout=timeout)
        context = _ssl.SSLContext(_ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = _ssl.CERT_NONE
        return _http_client.HTTPSConnection('127.0.0.1', self.port,
                                            timeout=timeout, context=context)

    def start(self):
        if self.pid is not None:
            raise RuntimeError("TestServer already started")
        parent_end, child_end = _socket.socketpair()
        _sys.stdout.flush()
        _sys.stderr.flush()
        pid = _os.fork()
        if pid == 0:
            parent_end.close()
            _serve_in_child(self, child_end)  # never returns
        child_end.close()
        self.pid = pid
        self._control = parent_end
        self._reader = _threading.Thread(target=self._read_control,
                                         daemon=True)
        self._reader.start()
        try:
            self._wait_started()
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self):
        """Graceful shutdown (asked over the control channel, else SIGTERM),
        then SIGKILL of the whole process group: nothing outlives it."""
        if self.pid is None:
            return
        pid, self.pid = self.pid, None
        try:
            self._control.sendall(b'stop\n')
        except OSError:
            try:
                _os.kill(pid, _signal.SIGTERM)
            except ProcessLookupError:
                pass
        status = None
        try:
            status = _wait_pid(pid, self.stop_timeout)
        finally:   # (a second Ctrl-C cuts the wait, never the kill)
            try:
                _os.killpg(pid, _signal.SIGKILL)  # workers left behind
            except (ProcessLookupError, PermissionError):
                pass
        if status is None:
            status = _wait_pid(pid, 5.0)
        self._exited = status
        if self._control is not None:
            self._control.close()
            self._control = None
        if self._reader is not None:
            self._reader.join(5)

    # -- the control channel -----------------------------------------------------

    def _read_control(self):
        buffer = b''
        control = self._control
        while True:
            try:
                data = control.recv(65536)
            except OSError:
                data = b''
            if not data:
                break
            buffer += data
            *lines, buffer = buffer.split(b'\n')
            for line in lines:
                self._take(_json.loads(line))
        with self._events:
            self._failure = self._failure or 'the server process ended'
            self._events.notify_all()

    def _take(self, message):
        kind = message.get('kind')
        with self._events:
            if kind == 'log':
                self.logs.append(LogRecord(message['name'], message['level'],
                                           message['message']))
            elif kind == 'started':
                self.port = message['port']
                self.https = message.get('https', False)
            elif kind == 'status':
                self._replies.append(message['status'])
            elif kind == 'error':
                self._failure = message['traceback']
            self._events.notify_all()

    def _wait(self, predicate, timeout, what):
        deadline = _time.monotonic() + timeout
        with self._events:
            while not predicate():
                if self._failure is not None:
                    raise TestServerError(
                        f"the server failed while {what}", self.log_text(),
                        self._failure)
                left = deadline - _time.monotonic()
                if left <= 0:
                    raise TestServerError(f"timed out {what}", self.log_text())
                self._events.wait(min(left, 0.1))

    def _wait_started(self):
        self._wait(lambda: self.port is not None, self.startup_timeout,
                   'starting')

    def _wait_ready(self):
        deadline = _time.monotonic() + self.startup_timeout
        while True:
            status = self.status()
            workers = [worker for pool in status['pools']
                       for worker in pool['workers']]
            if all(worker['ready'] for worker in workers):
                return
            failed = self._setup_failure()
            if failed is not None:   # it would only fail again, backing off
                self._wait_for_account_of(failed)
                raise TestServerError(
                    f"a worker's setup() failed: {failed.name}",
                    self.log_text(), failed.message)
            ended = _ended_before_ready(status)
            if ended is not None:    # sys.exit() in setup(), a crash, parked
                self._wait_for_account_of(LogRecord(ended, 0, ''))
                raise TestServerError(
                    f"a worker ended before it was ready: {ended}",
                    self.log_text())
            if _time.monotonic() > deadline:
                raise TestServerError("timed out waiting for the workers to "
                                      f"get ready: {status}", self.log_text())
            _time.sleep(0.02)

    def _wait_for_account_of(self, failed, timeout=2.0):
        """Let the dispatcher's word on the failed worker (its restart, or
        the pool's degradation) reach the log, for the error to carry it."""
        deadline = _time.monotonic() + timeout
        while _time.monotonic() < deadline and not any(
                failed.name in record.message and any(
                    word in record.message for word in _WHAT_NEXT)
                for record in list(self.logs)):
            _time.sleep(0.02)

    def _setup_failure(self):
        """The log record of a worker's setup() that raised, or None."""
        for record in list(self.logs):
            if record.level >= _log.LOG_CRITICAL and record.message.startswith(
                    'setup() failed'):
                return record
        return None

    def status(self, timeout=10.0):
        """The dispatcher's status() (pools, workers, pending, ...)."""
        if self._control is None:
            raise RuntimeError("TestServer is not running")
        with self._events:
            self._replies.clear()
            ended = self._failure
        if ended is not None:
            raise TestServerError("the server is not running any more",
                                  self.log_text(), ended)
        try:
            self._control.sendall(b'status\n')
        except OSError as err:
            raise TestServerError(f"the server is not running any more "
                                  f"({err})", self.log_text()) from None
        self._wait(lambda: bool(self._replies), timeout, 'asking for status')
        with self._events:
            return self._replies.popleft()

    # -- logs -------------------------------------------------------------------

    def log_text(self):
        return ''.join(f"{_log.level_name(record.level)} {record.name}: "
                       f"{record.message}\n" for record in list(self.logs))

    def assert_no_errors(self):
        """Fail when any process logged at ERROR or above."""
        errors = [record for record in list(self.logs)
                  if record.level >= _log.LOG_ERROR]
        if errors:
            raise AssertionError("errors were logged:\n" + ''.join(
                f"{record.name}: {record.message}\n" for record in errors))
        with self._events:
            ended = self._failure
        if ended is not None and self._control is not None:
            raise AssertionError(f"the server ended on its own: {ended}")

    # -- the client ------------------------------------------------------------------

    def request(self, method, path, *, json=None, data=None, headers=None,
                timeout=10.0):
        """One request on a fresh connection; a TestResponse."""
        headers = {name.lower(): value for name, value in (headers or {}).items()}
        body = request_body(json, data, headers)
        connection = self._connection(timeout)
        try:
            connection.request(method, path, body=body, headers=headers)
            reply = connection.getresponse()
            content = reply.read()
            return TestResponse(reply.status, Headers(
                (name, as_sent(value)) for name, value in reply.getheaders()),
                content)
        finally:
            connection.close()


    def sse(self, path, *, headers=None, timeout=10.0):
        """Iterate the Server-Sent Events of `path` (closing the stream
        when the loop over it ends); each read waits at most `timeout`."""
        connection = self._connection(timeout)
        connection.request('GET', path, headers=dict(
            headers or {}, Accept='text/event-stream'))
        reply = connection.getresponse()
        kind = reply.getheader('content-type') or ''
        if reply.status != 200 or not kind.startswith('text/event-stream'):
            content = reply.read()
            connection.close()
            raise AssertionError(f"GET {path}: {reply.status} {kind!r}, not "
                                 f"an event stream: {content[:500]!r}")
        return _events(reply, connection)


def _events(reply, connection):
    try:
        fields = {}
        while True:
            line = reply.readline()
            if not line:
                return
            line = line.decode('utf-8').rstrip('\r\n')
            if not line:
                if 'data' in fields or 'event' in fields:
                    yield SSEEvent(fields.get('event', 'message'),
                                   '\n'.join(fields.get('data', [])),
                                   fields.get('id'))
                fields = {}
                continue
            if line.startswith(':'):
                continue
            name, _, value = line.partition(':')
            value = value[1:] if value.startswith(' ') else value
            if name == 'data':
                fields.setdefault('data', []).append(value)
            elif name in ('event', 'id'):
                fields[name] = value
    finally:
        connection.close()


def _wait_pid(pid, timeout):
    deadline = _time.monotonic() + timeout
    while True:
        try:
            done, status = _os.waitpid(pid, _os.WNOHANG)
        except ChildProcessError:
            return 0
        if done:
            return status
        if _time.monotonic() > deadline:
            return None
        _time.sleep(0.01)


def _serve_in_child(server, control):
    """In the forked server process: run the app, report to the test."""
    code = 1
    try:
        _os.setpgid(0, 0)
        _signal.signal(_signal.SIGINT, _signal.SIG_DFL)
        channel = _ChildChannel(control)
        kwargs = dict(server.kwargs)
        kwargs.setdefault('address', '127.0.0.1')
        kwargs['port'] = kwargs.get('port', 0)
        if server.pools is not None:
            kwargs['pools'] = server.pools
        app = server.dispatcher_class(**kwargs)
        channel.attach(app)
        app.run()
        code = 0
    except BaseException:  # pylint: disable=broad-except
        try:
            control.sendall(_json.dumps({
                'kind': 'error',
                'traceback': _traceback.format_exc()}).encode() + b'\n')
        except OSError:
            pass
    finally:
        _os._exit(code)


class _ChildChannel:
    """The server side of the control socket: logs out, status on request."""

    def __init__(self, sock):
        self.sock = sock
        self.buffer = b''

    def send(self, message):
        data = _json.dumps(message, default=repr).encode() + b'\n'
        self.sock.setblocking(True)
        try:
            self.sock.sendall(data)
        except OSError:
            pass

    def attach(self, app):
        core = core_of(app)
        core.control.upgrader.argv = None   # no command line to start again
        core.log_taps.append(lambda name, level, text: self.send(
            {'kind': 'log', 'name': name, 'level': level, 'message': text}))
        core.loop.call_at(0, lambda now: self.send(
            {'kind': 'started', 'port': core.port(),
             'https': core.settings.ssl_context is not None}))
        app.register_reader(self.sock, lambda sock: self.readable(app))

    def readable(self, app):
        try:
            data = self.sock.recv(4096)
        except BlockingIOError:
            return
        if not data:
            app.unregister_reader(self.sock)
            app.stop()  # the test went away
            return
        self.buffer += data
        *lines, self.buffer = self.buffer.split(b'\n')
        for line in lines:
            if line == b'status':
                self.send({'kind': 'status', 'status': Dispatcher.status(app)})
            elif line == b'stop':
                app.stop()
