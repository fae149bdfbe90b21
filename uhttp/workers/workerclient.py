"""WorkerClient: a worker's handlers called in the test's own process.

    client = WorkerClient(ItemWorker, db_login='test')
    reply = client.get('/api/item/1')
    assert reply.status == 200 and reply.data == {'id': 1}

No dispatcher and no process: the worker is built once (setup() runs),
and each request goes through the same path as in a worker process —
do_check(), routing (404/405), the handler, its return forms, DEFERRED and
request.respond(), streams, RejectRequest and on_request_error() — so a
business-logic test runs in microseconds. Its logs are kept in `logs`.
"""

import collections as _collections
import json as _json
import os as _os
import selectors as _selectors
from urllib.parse import urlencode as _urlencode

import uhttp.server as _server

from . import bodyview as _bodyview
from . import log as _log
from . import files as _files
from . import messages as _msg
from . import metrics as _metrics
from . import spool as _spool
from . import worker as _worker
from . import workerloop as _workerloop
from .http import parse as _parse
from .http import serialize as _serialize

LogRecord = _collections.namedtuple('LogRecord', 'name level message')


class _Slot:
    """Stands in for the heartbeat slot: remembers the last keep_alive()."""

    def __init__(self):
        self.keepalive = None

    def start(self, now, seq, request_id):
        pass

    def idle(self):
        pass

    def beat(self, now, busy=None, count=None):
        pass

    def keep_alive(self, now):
        self.keepalive = now


class _LocalRuntime:
    """What a worker's answering paths need, in the test's process."""

    def __init__(self, client, log_level):
        self.client = client
        self.slot = _Slot()
        self.log_level = log_level
        self.selector = _selectors.DefaultSelector()
        self.fds = None
        self.open_requests = {}
        self.running = True
        self.stopping = False
        self.busy = 0.0
        self.count = 0
        self.exit_code = 0
        self.metrics = None

    def send(self, message):
        if message[0] == _msg.W_FILE_RESPONSE and _files.carries_file(message):
            for each in _files.worker_messages(message, None):
                self.client._received(each)
            return
        self.client._received(message)


class Verbs:
    """get/post/put/patch/delete(path, **kwargs) for a client's request()."""

    def get(self, path, **kwargs):
        return self.request('GET', path, **kwargs)

    def post(self, path, **kwargs):
        return self.request('POST', path, **kwargs)

    def put(self, path, **kwargs):
        return self.request('PUT', path, **kwargs)

    def patch(self, path, **kwargs):
        return self.request('PATCH', path, **kwargs)

    def delete(self, path, **kwargs):
        return self.request('DELETE', path, **kwargs)


def request_body(json, data, headers):
    """The body bytes of a test request: `json` encoded, or `data` (bytes,
    text, an open file's content, or a dict or list of pairs form-encoded,
    as `curl -d` sends it), with its type; TypeError for anything else."""
    if json is not None:
        headers.setdefault('content-type', 'application/json')
        return _json.dumps(json).encode()
    if isinstance(data, str):
        return data.encode()
    if isinstance(data, (dict, list, tuple)):
        headers.setdefault('content-type', 'application/x-www-form-urlencoded')
        return _urlencode(data).encode()
    if hasattr(data, 'read'):   # an open file: its content
        data = data.read()
    if data is not None:
        try:
            memoryview(data)
        except TypeError:
            raise TypeError(f"data must be bytes, str, a file or a dict of "
                            f"form fields, not {type(data).__name__}") from None
    return data


def spooled(body):
    """`body` as a worker process gets it: above the dispatcher's default
    spool_threshold, a SpooledBytes view of an unnamed file holding it."""
    if body is None or len(body) <= _spool.DEFAULT_THRESHOLD:
        return body
    fd = _spool.open_unnamed()
    try:
        view = memoryview(body).cast('B')
        while view:
            view = view[_os.write(fd, view):]
        return _bodyview.SpooledBytes(fd, len(body))
    except BaseException:
        _os.close(fd)
        raise


class WorkerResponse:
    """What a handler answered: status, headers, data; or that it deferred,
    or the stream it started (chunks, events, ended)."""

    def __init__(self, request_id):
        self.request_id = request_id
        self.status = None
        self.headers = {}       # lower-case names; repeats joined by ', '
        self.header_list = []   # (name, value) as the handler gave them
        self.cookies = None
        self.content = b''
        self.data = None
        self.deferred = False
        self.streaming = False
        self.chunks = []
        self.ended = False

    @property
    def answered(self):
        return self.status is not None

    def failed(self, status, error):
        """Answered `status` with {'error': error}, as the dispatcher
        answers for the worker (a bad request, a worker that died)."""
        self.status = status
        self.data = {'error': error}
        self.content = _json.dumps(self.data).encode('utf-8')
        self.headers = {'content-type': 'application/json'}
        return self

    @property
    def text(self):
        return self.content.decode('utf-8', 'replace')

    def json(self):
        return _json.loads(self.content)

    @property
    def events(self):
        """The Server-Sent Events sent so far, as dicts of their fields."""
        events = []
        for block in b''.join(self.chunks).decode('utf-8').split('\n\n'):
            fields = {}
            for line in block.split('\n'):
                name, sep, value = line.partition(':')
                if not sep or not name:
                    continue
                value = value[1:] if value.startswith(' ') else value
                if name == 'data' and 'data' in fields:
                    fields['data'] += '\n' + value
                else:
                    fields[name] = value
            if fields:
                events.append(fields)
        return events

    def __repr__(self):
        state = ('deferred' if self.deferred and not self.answered
                 else 'stream' if self.streaming else self.status)
        return f"<WorkerResponse {self.request_id} {state} {self.content[:80]!r}>"


class WorkerClient(Verbs):
    """A worker of `worker_class` in this process, and a client for it."""

    def __init__(self, worker_class, *, worker_id=0, pool_name=None,
                 configs=(), log_level=_log.LOG_DEBUG, metrics=None,
                 **kwargs):
        self.logs = []
        self.forwarded = []
        self.paused = False
        self.responses = {}
        self.exit_code = None   # set when the worker would have ended
        self._last_id = 0
        self.runtime = _LocalRuntime(self, log_level)
        # the pool's declarations: self.metrics works as in a pool, and
        # what the handlers counted adds up in metric_totals (counters,
        # histograms, gauges: see metrics.PoolTotals) after each request
        declared = _metrics.check_declarations(metrics)
        self.metric_totals = _metrics.PoolTotals(declared)
        if declared:
            self.runtime.metrics = _metrics.WorkerMetrics(
                declared, pool_name or worker_class.__name__)
        _worker.set_runtime(self.runtime)
        try:
            self.worker = worker_class(worker_id=worker_id, pool_name=pool_name,
                                       **kwargs)
        finally:
            _worker.set_runtime(None)
        _worker.check_constructed(self.worker)
        self.worker.setup()
        self.table = _workerloop.build_table(self.worker)
        for config in configs:
            self.config(config)

    # -- requests ----------------------------------------------------------------

    def request(self, method, path, *, json=None, data=None, headers=None,
                context=None, remote_address='127.0.0.1'):
        """Run one request through the worker; its WorkerResponse."""
        headers = {name.lower(): str(value)
                   for name, value in (headers or {}).items()}
        body = spooled(request_body(json, data, headers))
        method = method.upper()
        path, mark, raw_query = path.partition('?')
        self._last_id += 1
        request_id = self._last_id
        response = self.responses[request_id] = WorkerResponse(request_id)
        try:
            path = _parse.unquote_path(path)   # as the dispatcher reads it
        except _parse.ProtocolError as err:
            return response.failed(err.status, err.message)
        try:   # the dispatcher answers a query it cannot decode 400
            query = _server.parse_query(raw_query.encode()) if mark else None
        except _server.HttpErrorWithResponse as err:
            return response.failed(err.status, 'Invalid query string encoding')
        message = (_msg.M_REQUEST, request_id, request_id, method,
                   path, query, headers, body or None, False, remote_address,
                   context)
        try:
            _workerloop.handle_message(self.worker, self.runtime, self.table,
                                       message)
        except _workerloop.StopWorker:
            # a worker process would end here (MemoryError) and be
            # replaced; its answer (500) was sent first
            self.exit_code = self.runtime.exit_code
        except SystemExit as err:   # sys.exit() in a handler: it would end
            self.exit_code = _workerloop.exit_status(err.code)
            if not response.answered:
                response.failed(500, 'Worker died')
        if self.runtime.metrics is not None:
            self.runtime.metrics.flush(self.runtime.send, 0.0)
        if method == 'HEAD':   # served by the GET route, sent without body
            response.content, response.data = b'', None
        return response


    # -- the rest of a worker's life -----------------------------------------------

    def config(self, config):
        """Deliver a send_config() to on_config()."""
        _workerloop.handle_message(self.worker, self.runtime, self.table,
                                   (_msg.M_CONFIG, config))

    def idle(self, times=1):
        """Run on_idle() (deferred answers and streams often come from it)."""
        for _ in range(times):
            self.worker.on_idle()

    def disconnect(self, response):
        """The client of a deferred or streaming request went away."""
        _workerloop.handle_message(self.worker, self.runtime, self.table,
                                   (_msg.M_DISCONNECT, response.request_id))

    def poll(self, timeout=0.0):
        """Serve the worker's own file descriptors once (register_reader)."""
        fds = self.runtime.fds
        if fds is None:
            return 0
        events = self.runtime.selector.select(timeout)
        for key, mask in events:
            key.data.handle_event(key.fileobj, mask)
        return len(events)

    def close(self):
        """Run teardown()."""
        self.worker.teardown()
        self.runtime.selector.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- what the worker sent ------------------------------------------------------

    def _received(self, message):
        kind = message[0]
        if kind == _msg.W_LOG:
            self.logs.append(LogRecord(message[1], message[2], message[3]))
        elif kind == _msg.W_FORWARD:
            self.forwarded.append((message[1], message[2]))
        elif kind == _msg.W_METRICS:
            self.metric_totals.add(self.worker, message[1])
        elif kind == _msg.W_ROUTES:
            pass
        elif kind in (_msg.W_PAUSE, _msg.W_RESUME):
            self.paused = kind == _msg.W_PAUSE
        else:
            response = self.responses.get(message[1]) if len(message) > 1 else None
            if response is not None:
                self._answer(response, kind, message)

    @staticmethod
    def _answer(response, kind, message):
        if kind == _msg.W_RESPONSE:
            _, _, status, headers, body, body_kind, cookies = message[:7]
            response.status = status
            _set_headers(response, headers)
            response.cookies = cookies
            if _serialize.contentless(status):   # sent without its body
                body, body_kind = b'', _msg.BODY_NONE
            response.content = body or b''
            response.data = _msg.decode_body(body, body_kind)
        elif kind == _msg.W_DEFERRED:
            response.deferred = True
        elif kind == _msg.W_STREAM_START:
            response.streaming = True
            response.status = message[2]
            _set_headers(response, message[3])
            response.cookies = message[4]
        elif kind == _msg.W_STREAM_DATA:
            response.chunks.append(message[2])
        elif kind == _msg.W_STREAM_END:
            response.ended = True



def _set_headers(response, headers):
    """The handler's headers on `response`: as given, and by lower-case
    name with repeats joined by ', ' (as HTTP clients show them)."""
    response.header_list = [(name, _readable(value))
                            for name, value in headers or ()]
    joined = {}
    for name, value in response.header_list:
        name = name.lower()
        if name in ('content-length', 'transfer-encoding'):
            continue   # the dispatcher's own framing replaces them
        joined[name] = f'{joined[name]}, {value}' if name in joined else value
    response.headers = joined


def _readable(value):
    """A header value as a client reading the line as Latin-1 sees the
    bytes a handler gave (text stays as it was given)."""
    try:
        value.encode('utf-8')
    except UnicodeEncodeError:   # bytes that were not UTF-8 (surrogates)
        return value.encode('utf-8', 'surrogateescape').decode('latin-1')
    return value
