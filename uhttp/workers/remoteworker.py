"""A remote worker process's link to its broker.

The worker loop (workerloop.py) runs unchanged: it reads its requests and
control messages from its own pipe and sends everything through
`runtime.send()`. Here threads stand where the dispatcher stands for a
local worker:

- the feeder takes one request from the pool's stream when the worker is
  free (XREADGROUP COUNT 1, no prefetch; XAUTOCLAIM now and then takes
  over requests a dead worker was given and never started), starts it
  (at most one worker starts a request: the TAKE script reads and starts
  one that waits in one round trip, the START script starts one read by
  a blocking read or claimed) and writes it into the loop's pipe;
- the sender writes what the worker sends to the request's dispatcher
  (answers, stream chunks) or to the pool's event stream (logs, ready),
  numbered so a retried write is recognised, retrying while the broker is
  down;
- the control reader brings send_config() and disconnects into the pipe;
- the heartbeat publishes the worker's slot (its last sign of life, the
  request it runs) every heartbeat interval.
"""

import collections as _collections
import contextlib as _contextlib
import os as _os
import socket as _socket
import sys as _sys
import threading as _threading
import time as _time

from . import broker as _broker
from . import channel as _channel
from . import files as _files
from . import messages as _msg
from .outbox import Outbox
from .remotelink import broker_errors, connect, describe, let_go
from .remotewatch import DispatcherWatch

_monotonic = _time.monotonic

RETRY_DELAY = 0.5
CLAIM_EVERY = 1.0        # seconds between two looks for abandoned requests
# what the worker sends that frees it for the next request (item 1: its id)
_RELEASES = frozenset((_msg.W_RESPONSE, _msg.W_FILE_RESPONSE, _msg.W_DEFERRED,
                       _msg.W_STREAM_START, _msg.W_WS_ACCEPT, _msg.W_BOUNCE))
_ENDS = frozenset((_msg.W_RESPONSE, _msg.W_FILE_RESPONSE, _msg.W_STREAM_END,
                   _msg.W_WS_CLOSE))
_EVENTS = frozenset((_msg.W_LOG, _msg.W_READY, _msg.W_ROUTES, _msg.W_METRICS,
                     _msg.W_FORWARD, _msg.W_PAUSE, _msg.W_RESUME))
# what a refused entry leaves its dispatcher waiting for: the request is
# answered 500 instead (the tail of its message, route and start time, kept)
_AWAITED = {_msg.W_RESPONSE: 7, _msg.W_STREAM_START: 5, _msg.W_BOUNCE: 3}


def worker_name(pid, token):
    """A worker process's name in the pool's consumer group: host, pid and
    a token of its start (a pid is reused, a name never)."""
    return f"{_socket.gethostname()}:{pid}:{token}"


class WorkerLink:
    """The threads between one worker process and its broker."""

    def __init__(self, url, keys, slot, slot_index, interval, stop_fd=None,
                 token='0', timeout=None):
        self.url = url
        self.keys = keys
        self.name = worker_name(_os.getpid(), token)
        self.host = _socket.gethostname()
        self.slot = slot
        self.slot_index = slot_index
        self.interval = interval
        self.stop_fd = stop_fd
        self.in_read, self.in_write = _channel.make_pipe()
        self._write_lock = _threading.Lock()
        # what goes to the broker; a putter waiting for room is alive
        self.outbox = Outbox(self.name, lambda now: self.slot.beat(now))
        self._replies = {}        # request_id -> its dispatcher's stream
        self._entries = {}        # request_id -> its entry's fields (bounces)
        self.free = _threading.Event()
        self.current = None       # the request the loop runs, until released
        # the heartbeat tells which requests it got (a START whose reply was
        # lost is not among them) and whether a START is under way
        self.recent = _collections.deque(maxlen=64)
        self.taking = False
        self.ready = False
        self.accepting = True
        self.stopping = False
        self.seq = 0
        self.runtime = None
        self.errors = broker_errors()
        # keep_alive() reaches the dispatcher at once, at most this often:
        # well within the pool's timeout (none: the heartbeat says it)
        self.keepalive_gap = (max(0.05, min(interval, timeout / 4))
                              if timeout else None)
        self._kept_alive_at = 0.0
        self.watch = DispatcherWatch(interval)

    # -- the worker's side -------------------------------------------------------

    def attach(self, runtime):
        """Take the place of the runtime's pipe to a dispatcher."""
        runtime.send = self.send
        runtime.slot = PromptSlot(runtime.slot, self.kept_alive)
        self.runtime = runtime
        self.start()

    def kept_alive(self, now):
        """The handler called keep_alive(): the dispatchers of the requests
        in hand hear of it now (at most every keepalive_gap seconds), not
        with the next heartbeat, so their deadlines move on in time."""
        gap = self.keepalive_gap
        if gap is None or now - self._kept_alive_at < gap:
            return
        streams = set(self._replies.values())
        if not streams:
            return
        self._kept_alive_at = now
        self.outbox.put_notices(streams, _broker.encode_keepalive(self.name))

    def start(self):
        for target, name in ((self._feed_loop, 'broker-feed'),
                             (self._send_loop, 'broker-send'),
                             (self._control_loop, 'broker-control'),
                             (self._beat_loop, 'broker-heartbeat')):
            _threading.Thread(target=target, name=name, daemon=True).start()
        if self.stop_fd is not None:
            _threading.Thread(target=self._stop_watch, name='stop-watch',
                              daemon=True).start()

    def send(self, message):
        """What the worker sends (from any of its threads)."""
        kind = message[0]
        if kind == _msg.W_FILE_RESPONSE and _files.carries_file(message):
            size = file_size(message[5])
            if size is not None and size > _broker.BODY_LIMIT:
                for each in too_large(message, size, message[6:]):
                    self.send(each)
                return
            for each in _files.worker_messages(message, None):  # bytes, no fd
                self.send(each)
            return
        if kind == _msg.W_RESPONSE and len(message[4] or b'') > _broker.BODY_LIMIT:
            log, message = too_large(message, len(message[4]), message[7:])
            self.send(log)
        if kind in _EVENTS:
            self.worker_state(kind)
            self._queue(self.keys.events, message)
            return
        request_id = message[1]
        stream = self._replies.get(request_id)
        if kind in _ENDS:
            self._replies.pop(request_id, None)
        if kind == _msg.W_BOUNCE:
            self.requeue(request_id, stream, message)
        elif stream is not None:
            self._queue(stream, message)
        if kind in _RELEASES:  # (never bounced now: its entry, body and
            self._entries.pop(request_id, None)  # all, is not needed)
            if request_id == self.current:
                self.current = None
                self.free.set()

    def worker_state(self, kind):
        if kind == _msg.W_READY:
            self.ready = True
            self.free.set()
        elif kind == _msg.W_PAUSE:
            self.accepting = False
        elif kind == _msg.W_RESUME:
            self.accepting = True

    def requeue(self, request_id, stream, message):
        """Taken while paused: back on the stream for any worker, in one
        step with the bounce notice to its dispatcher (REQUEUE_SCRIPT:
        once, however often the write is retried)."""
        taken = self._entries.pop(request_id, None)
        self._replies.pop(request_id, None)
        if taken is None or stream is None:
            return
        self.outbox.put_requeue(stream, message, taken)

    def _queue(self, stream, message, wait=True):
        self.outbox.put(stream, message, wait)

    def write_frame(self, frame):
        with self._write_lock:
            _channel.write_all(self.in_write, frame)

    def stop(self):
        """Finish the request in hand, then leave the loop."""
        if not self.stopping:
            self.stopping = True
            self.write_frame(_channel.pack((_msg.M_STOP,)))

    def on_exit(self, code):
        """The process ends: what is queued goes out, the roster and the
        dispatchers learn that it left."""
        self.outbox.wait_empty(2.0)
        try:
            client = connect(self.url, timeout=1.0)
            pipe = client.pipeline(transaction=False)
            pipe.xadd(self.keys.events, _broker.encode_death(
                self.name, f'exited with code {code}',
                left=self.stopping and code == 0, exitcode=code),
                maxlen=_broker.EVENTS_MAXLEN, approximate=True)
            pipe.eval(_broker.LEAVE_SCRIPT, 3, self.keys.workers,
                      self.keys.info, self.keys.requests, self.name,
                      _broker.GROUP)
            pipe.delete(self.keys.control_of(self.name))
            pipe.execute()
        except Exception:  # pylint: disable=broad-except
            pass

    # -- the feeder ------------------------------------------------------------------

    def _feed_loop(self):
        client = None
        next_claim = 0.0
        while not self.stopping:
            if not (self.free.wait(0.5) and self.accepting and self.ready):
                continue
            try:
                if client is None:
                    client = connect(self.url)
                    self._ensure_group(client)
                entry = None
                now = _monotonic()
                if now >= next_claim:
                    next_claim = now + CLAIM_EVERY
                    entry = self._claim(client)
                if entry is None and self._take(client):
                    continue  # one waited: read and started in one step
                if entry is None:
                    entry = self._read(client)
                if entry is not None and not self.stopping:
                    self._start(client, *entry)
            except self.errors as err:
                if 'NOGROUP' in str(err) and client is not None:
                    self._ensure_group(client)
                    continue
                client = None
                _time.sleep(RETRY_DELAY)

    def _ensure_group(self, client):
        try:
            client.xgroup_create(self.keys.requests, _broker.GROUP, id='0',
                                 mkstream=True)
        except self.errors as err:
            if 'BUSYGROUP' not in str(err):
                raise

    def _read(self, client):
        block = int(max(10, min(self.interval, 1.0) * 1000))
        got = client.xreadgroup(_broker.GROUP, self.name,
                                {self.keys.requests: '>'}, count=1,
                                block=block)
        for _, entries in got or ():
            for entry_id, fields in entries:
                return entry_id, fields
        return None

    def _claim(self, client):
        """A request some worker was given and has not started for
        CLAIM_IDLE_MS (it died, or is paused): ours now, if still unstarted."""
        got = client.xautoclaim(self.keys.requests, _broker.GROUP, self.name,
                                min_idle_time=_broker.CLAIM_IDLE_MS,
                                start_id='0-0', count=1)
        for entry_id, fields in (got[1] if len(got) > 1 else ()):
            if fields:
                return entry_id, fields
        return None

    def _take(self, client):
        """Read and start a waiting request in one round trip (TAKE_SCRIPT);
        False when none was waiting."""
        if self.stopping:
            return False
        with self._starting():
            taken = _broker.parse_take(client.eval(
                _broker.TAKE_SCRIPT, 1, self.keys.requests, _broker.GROUP,
                self.name, _broker.REPLY_MAXLEN, _broker.REPLY_TTL))
            if taken is None:
                return False
            outcome, entry_id, fields = taken
            if outcome == _broker.STARTED:
                self._run(entry_id, fields)
            return True

    @_contextlib.contextmanager
    def _starting(self):
        """While a START or TAKE call (and the run it begins) is under
        way: the heartbeat says so, so that a request not received yet is
        not taken for lost."""
        self.taking = True
        try:
            yield
        finally:
            self.taking = False

    def _start(self, client, entry_id, fields):
        try:
            request = _broker.decode_request(entry_id, fields)
        except Exception as err:  # pylint: disable=broad-except
            client.xack(self.keys.requests, _broker.GROUP, entry_id)
            self._queue(self.keys.events, (_msg.W_LOG, 'worker', 40,
                                           f"undecodable request entry "
                                           f"{entry_id!r} dropped: {err!r}"))
            return
        if request is None:
            return
        with self._starting():
            outcome = client.eval(
                _broker.START_SCRIPT, 3, self.keys.requests, request.reply,
                self.keys.cancelled(request.reply), _broker.GROUP,
                request.entry_id, self.name, request.request_id,
                request.timeout_ms, _broker.REPLY_MAXLEN, _broker.REPLY_TTL)
            if outcome == _broker.STARTED:
                self._run(entry_id, fields, request)
        # else: started elsewhere, past its timeout, or answered

    def _run(self, entry_id, fields, request=None):
        """Hand a started request to the worker loop."""
        if request is None:
            try:
                request = _broker.decode_request(entry_id, fields)
            except Exception as err:  # pylint: disable=broad-except
                self._queue(self.keys.events, (_msg.W_LOG, 'worker', 40,
                                               f"undecodable request entry "
                                               f"{entry_id!r} dropped: {err!r}"))
                return
        request_id = request.request_id
        self._replies[request_id] = request.reply
        self._entries[request_id] = (request.entry_id, fields)
        self.current = request_id
        self.recent.append(request_id)
        self.free.clear()
        self.seq += 1
        self.write_frame(_channel.pack(request.with_seq(self.seq)))

    # -- the sender -------------------------------------------------------------------

    def _send_loop(self):
        client = None
        while True:
            batch = self.outbox.take(512)
            try:
                if client is None:
                    client = connect(self.url)
                pipe = client.pipeline(transaction=False)
                for item in batch:
                    self._write(pipe, *item)
                results = pipe.execute(raise_on_error=False)
            except self.errors:
                client = None
                self.outbox.stalled()
                _time.sleep(RETRY_DELAY)
                continue
            if self._refused(batch, results):
                let_go(client)
                client = None
            self.outbox.done(batch)

    def _refused(self, batch, results):
        """Entries the broker refused (an error answer, not a lost
        connection: writing them again would fail again) are dropped, so
        that they hold nothing up; a refused answer is replaced by a 500.
        True when there was one."""
        refused = False
        for item, result in zip(batch, results):
            if isinstance(result, Exception):
                refused = True
                reason = describe(result, self.url)
                report(f"uhttp-workers worker {self.name}: the broker refused "
                       f"an entry for {item[0]}: {reason}; dropped")
                if item[0] != self.keys.events:
                    self.answer_refused(item[0], item[1], reason)
        return refused

    def answer_refused(self, stream, fields, reason):
        """The broker refused an entry for a dispatcher (an answer too
        large for its memory, say): the reason goes to the dispatcher's
        log, and a request left waiting gets a small 500 at once rather
        than its 504 much later."""
        try:
            message = _broker.decode_reply('0-0', fields).message
        except Exception:  # pylint: disable=broad-except
            return
        if message is None or len(message) < 2:
            return  # (a keep-alive notice: the next one may pass)
        kind, request_id = message[0], message[1]
        tail = _AWAITED.get(kind)
        self._queue(self.keys.events, (
            _msg.W_LOG, getattr(self.runtime, 'log_name', 'worker'), 40,
            f"remote worker {self.name}: the broker refused its entry for "
            f"request {request_id} ({len(fields.get('m') or b'')} bytes): "
            f"{reason}{'; answering 500' if tail else ''}"), wait=False)
        if tail is not None:
            self._queue(stream, _msg.error_message(request_id, 500)
                        + tuple(message[tail:]), wait=False)

    def _write(self, pipe, stream, fields, requeue):
        """One outbox entry into the pipeline: an event, an answer (its
        stream kept alive only while its dispatcher renews it) or a
        re-queue with its bounce notice."""
        if stream == self.keys.events:
            pipe.xadd(stream, fields, maxlen=_broker.EVENTS_MAXLEN,
                      approximate=True)
        elif requeue is None:
            pipe.eval(_broker.REPLY_SCRIPT, 1, stream, _broker.REPLY_MAXLEN,
                      _broker.REPLY_TTL, *_broker.flat(fields))
        else:
            entry_id, request = requeue
            notice = _broker.flat(fields)
            pipe.eval(_broker.REQUEUE_SCRIPT, 3, self.keys.requests, stream,
                      _broker.requeue_guard(self.keys, entry_id),
                      _broker.REQUEUE_GUARD_TTL, _broker.REQUESTS_MAXLEN,
                      _broker.REPLY_MAXLEN, _broker.REPLY_TTL, len(notice),
                      *notice, *_broker.flat(request))

    # -- control and heartbeat -----------------------------------------------------------

    def _control_loop(self):
        client = None
        ids = None
        while not self.stopping:
            try:
                if client is None:
                    client = connect(self.url)
                if ids is None:
                    last = client.xrevrange(self.keys.control, count=1)
                    ids = {self.keys.control: last[0][0] if last else '0-0',
                           self.keys.control_of(self.name): '0-0'}
                got = client.xread(ids, count=100, block=1000)
                for stream, entries in got or ():
                    stream = stream.decode() if isinstance(stream, bytes) else stream
                    for entry_id, fields in entries:
                        ids[stream] = entry_id
                        frame = _broker.decode_control(fields)
                        if frame:
                            self.forget_ended(frame)
                            self.write_frame(frame)
            except self.errors:
                client = None
                _time.sleep(RETRY_DELAY)

    def forget_ended(self, frame):
        """A disconnect ends a deferred request or stream: its way back
        is forgotten (answers after it have nowhere to go)."""
        try:
            message = _broker.frame_message(frame)
        except Exception:  # pylint: disable=broad-except
            return  # the loop reports a corrupt frame
        if message[0] == _msg.M_DISCONNECT:
            self._replies.pop(message[1], None)
            self._entries.pop(message[1], None)

    def status(self):
        heartbeat, keepalive, _, _ = self.slot.read()
        now = _monotonic()
        info = {'host': self.host, 'pid': _os.getpid(),
                'slot': self.slot_index, 'request': self.current,
                'ready': self.ready, 'accepting': self.accepting,
                'keepalive_age': now - keepalive if keepalive else None,
                'recent': list(self.recent), 'taking': self.taking}
        return max(0.0, now - heartbeat), info

    def _beat_loop(self):
        client = None
        while True:
            try:
                if client is None:  # named: the dispatcher sees it close
                    client = connect(self.url,
                                     name=_broker.connection_name(self.name))
                age, info = self.status()
                client.eval(_broker.HEARTBEAT_SCRIPT, 2, self.keys.workers,
                            self.keys.info, self.name, int(age * 1000),
                            _broker.encode_info(info))
                for request_id in self.watch.gone(client, self._replies):
                    frame = _channel.pack((_msg.M_DISCONNECT, request_id))
                    self.forget_ended(frame)  # its dispatcher is gone
                    self.write_frame(frame)
            except self.errors:
                client = None
            _time.sleep(self.interval)

    def _stop_watch(self):
        """The worker command closes this pipe to stop the worker."""
        try:
            while _os.read(self.stop_fd, 64):
                pass
        except OSError:
            pass
        try:
            self.stop()
        except OSError:
            pass


class PromptSlot:
    """The worker's heartbeat slot, which also tells the link of each
    keep_alive() (WorkerLink.kept_alive)."""

    __slots__ = ('slot', 'kept_alive')

    def __init__(self, slot, kept_alive):
        self.slot = slot
        self.kept_alive = kept_alive

    def keep_alive(self, now):
        self.slot.keep_alive(now)
        self.kept_alive(now)

    def __getattr__(self, name):
        return getattr(self.slot, name)


def file_size(response):
    """The size of a FileResponse's file, or None (the reading will say
    what is wrong)."""
    source = response.path_or_file
    try:
        if isinstance(source, (str, bytes, _os.PathLike)):
            return _os.stat(source).st_size
        return _os.fstat(source.fileno()).st_size
    except (OSError, ValueError, AttributeError):
        return None


def too_large(message, size, rest):
    """The log line and the 500 that stand for an answer too large for
    the broker."""
    request_id = message[1]
    return ((_msg.W_LOG, 'worker', 40,
             f"answer to request {request_id}: {size} bytes, above the "
             f"{_broker.BODY_LIMIT} bytes a remote worker may send; "
             "answering 500"),
            _msg.error_message(request_id, 500) + tuple(rest))


def report(text):
    try:
        _sys.stderr.write(text + '\n')
        _sys.stderr.flush()
    except (OSError, ValueError):
        pass
