"""WorkerPool: its configuration, its workers' handles, restart policy.

The pool's request queue lives in the dispatcher. A request goes to a worker
only when that worker has said it can take more (its credit), so the
dispatcher always knows which worker holds which request, and a dead
worker's requests can be failed (those it started) or handed to another
worker (those it had not started yet).
"""

import collections as _collections
import os as _os
import signal as _signal
import time as _time

from . import channel as _channel
from . import heartbeat as _heartbeat
from . import log as _log
from . import messages as _msg
from . import routing as _routing
from .worker import EXIT_REASONS, Worker

_monotonic = _time.monotonic

# How many requests a worker may hold that it has not answered or deferred
# yet (its window). A window above 1 lets a worker take several requests in
# one read and saves a dispatcher round trip per request, which is most of
# the cost of tiny handlers; for slow handlers it only makes requests wait
# behind each other. So each pool's window adapts to its handlers: it holds
# about WINDOW_BUDGET seconds of work, between 1 and MAX_WINDOW requests.
# A slow request among fast ones still holds up those sent behind it: the
# dispatcher recalls them (see dispatcher.STALL_AFTER).
MAX_WINDOW = 8
START_WINDOW = 2
WINDOW_BUDGET = 0.0005

BACKOFF_FIRST = 0.5
BACKOFF_CAP = 30.0
# a worker that got ready and lived this long resets its slot's failure
# streak: its next death restarts at once
STABLE_AFTER = 1.0

_RESERVED_KWARGS = ('worker_id', 'pool_name')


def _number(value, name, allow_none=False, minimum=0.0, strict=False,
            integer=False):
    if value is None and allow_none:
        return None
    kinds = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds):
        raise TypeError(
            f"WorkerPool {name} must be {'an int' if integer else 'a number'}"
            f"{' or None' if allow_none else ''}, not {value!r}")
    if value != value:  # NaN
        raise ValueError(f"WorkerPool {name} must be a number, not NaN")
    if strict and value <= minimum:
        raise ValueError(f"WorkerPool {name} must be > {minimum}, got {value}")
    if not strict and value < minimum:
        raise ValueError(f"WorkerPool {name} must be >= {minimum}, got {value}")
    return value


class RestartPolicy:
    """Counts restarts in a sliding window and spaces out failing slots.

    Pure logic: `record(now)` notes a restart and tells whether the pool
    reached `max_restarts` within `window` seconds; `delay(streak)` is the
    wait before restarting a slot that failed `streak` times in a row.
    """

    def __init__(self, max_restarts, window, first=BACKOFF_FIRST,
                 cap=BACKOFF_CAP):
        self.max_restarts = max_restarts
        self.window = window
        self.first = first
        self.cap = cap
        self._times = _collections.deque()

    def _trim(self, now):
        times = self._times
        while times and now - times[0] > self.window:
            times.popleft()

    def record(self, now):
        """Count a restart; True when the limit is reached."""
        self._trim(now)
        self._times.append(now)
        return len(self._times) >= self.max_restarts

    def count(self, now):
        self._trim(now)
        return len(self._times)

    def reset(self):
        self._times.clear()

    def delay(self, streak):
        """Seconds to wait before the next start of a slot that failed
        `streak` times in a row (0 for the first failure)."""
        if streak <= 1:
            return 0.0
        exponent = min(streak - 2, 64)  # the cap is reached long before
        return min(self.cap, self.first * (2 ** exponent))


class RequestQueue:
    """The pool's request queue. It lives in the dispatcher; `put()` takes
    a `Request` (request_id=-1) and hands it to the next free worker."""

    def __init__(self, pool):
        self._pool = pool
        self._items = _collections.deque()

    def put(self, request, block=True, timeout=None):
        """Queue a Request for this pool (fire and forget: request_id=-1)."""
        del block, timeout  # never blocks: the queue is unbounded
        if not isinstance(request, _msg.Request):
            raise TypeError(
                f"request_queue.put() takes a Request, not "
                f"{type(request).__name__}")
        if request.request_id != -1:
            raise ValueError(
                "request_queue.put() takes requests with request_id=-1 (their "
                "answers are not sent anywhere); HTTP requests get their ids "
                "from the dispatcher")
        self._pool._enqueue(request)

    put_nowait = put

    def qsize(self):
        return len(self._items)

    def empty(self):
        return not self._items

    def __len__(self):
        return len(self._items)


class WorkerHandle:
    """The dispatcher's view of one worker slot (and its current process)."""

    def __init__(self, pool, index, slot):
        self.pool = pool
        self.index = index
        self.slot = slot
        self.pid = None
        self._alive = False
        self.ready = False
        self.was_ready = False
        self.accepting = True
        self.started_at = None
        self.to_fd = None        # dispatcher writes requests here
        self.from_fd = None      # dispatcher reads responses here
        self.recall_fd = None    # a byte here: give back what you have not started
        self.out = None
        self.reader = None
        self.seq = 0
        self.inflight = _collections.deque()  # (seq, request_id, item) sent
        self.held = {}           # request_id -> item: deferred or streaming
        self.waiting = None      # the pool list it waits in for work, if any
        self.stalled = False     # recalled: no new requests until it releases one
        self.recalled = False    # a recall was sent, its W_RETURNED not read yet
        self.stall_check = False  # a stall check is scheduled
        self.recalls = 0         # recalls sent to this slot's workers
        self.work_seen = (0.0, 0)  # slot (busy, count) at the last window update
        self.restarts = 0
        self.streak = 0
        self.parked = False
        self.kill_reason = None
        self.stopping = False
        self.restart_at = None
        self.exitcode = None

    @property
    def alive(self):
        """True from fork until the process is reaped."""
        return self._alive

    @alive.setter
    def alive(self, value):
        value = bool(value)
        if value != self._alive:
            self._alive = value
            self.pool._alive += 1 if value else -1

    def handle_event(self, fileobj, mask):
        self.pool._dispatcher._worker_event(self, fileobj, mask)

    @property
    def name(self):
        return f"{self.pool.name}[{self.index}]"

    def unstarted(self):
        """How many requests it holds that it has not started yet (they
        wait in its window)."""
        inflight = self.inflight
        if not inflight or not self.alive:
            return 0
        started = self.slot.started()
        count = 0
        for entry in reversed(inflight):  # in seq order
            if entry[0] <= started:
                break
            count += 1
        return count

    def status(self, now):
        if self.alive:
            heartbeat, _, _, request_id = self.slot.read()
            last_seen = round(max(0.0, now - heartbeat), 3)
            current = None if request_id == _heartbeat.NO_REQUEST else request_id
        else:
            last_seen = None
            current = None
        return {
            'id': self.index,
            'pid': self.pid,
            'alive': self.alive,
            'ready': self.ready,
            'parked': self.parked,
            'accepting': self.accepting,
            'last_seen': last_seen,
            'current_request': current,
            'held': len(self.held),
            'queued': self.unstarted(),
            'stalled': self.stalled,
            'recalls': self.recalls,
            'restarts': self.restarts,
            'restart_in': None if self.restart_at is None else round(
                max(0.0, self.restart_at - now), 3),
        }


class WorkerPool:
    """A group of identical worker processes serving some routes.

    See the Configuration section of the README for the parameters; extra
    keyword arguments reach the workers as `self.kwargs`.
    """

    def __init__(self, worker_class, num_workers=1, routes=None, timeout=30,
                 stuck_timeout=60, heartbeat_interval=1,
                 log_level=_log.LOG_WARNING, max_restarts=10,
                 restart_window=300, queue_warning=100,
                 worker_memory_limit_mb=None, recovery_interval=None,
                 permanent_failure_exitcode=None, **kwargs):
        if not (isinstance(worker_class, type) and issubclass(worker_class, Worker)):
            raise TypeError(
                f"WorkerPool worker_class must be a Worker subclass, "
                f"not {worker_class!r}")
        self.num_workers = _number(num_workers, 'num_workers', minimum=1,
                                   integer=True)
        self.routes = None
        self._router = None
        if routes is not None:
            self._router = _routing.PrefixRoutes(routes, 'WorkerPool routes')
            self.routes = list(routes)
        self.timeout = _number(timeout, 'timeout', strict=True)
        self.stuck_timeout = _number(stuck_timeout, 'stuck_timeout', strict=True)
        self.heartbeat_interval = _number(
            heartbeat_interval, 'heartbeat_interval', strict=True)
        self.log_level = _log.check_level(log_level, 'WorkerPool log_level')
        self.max_restarts = _number(max_restarts, 'max_restarts', minimum=1,
                                    integer=True)
        self.restart_window = _number(restart_window, 'restart_window',
                                      strict=True)
        self.queue_warning = _number(queue_warning, 'queue_warning',
                                     integer=True)
        self.worker_memory_limit_mb = _number(
            worker_memory_limit_mb, 'worker_memory_limit_mb', allow_none=True,
            strict=True)
        self.recovery_interval = _number(
            recovery_interval, 'recovery_interval', allow_none=True,
            strict=True)
        if permanent_failure_exitcode is not None:
            _number(permanent_failure_exitcode, 'permanent_failure_exitcode',
                    minimum=1, integer=True)
            if permanent_failure_exitcode > 255:
                raise ValueError(
                    "WorkerPool permanent_failure_exitcode must be 1..255, "
                    f"got {permanent_failure_exitcode}")
        self.permanent_failure_exitcode = permanent_failure_exitcode
        for name in _RESERVED_KWARGS:
            if name in kwargs:
                raise TypeError(
                    f"WorkerPool keyword {name!r} is reserved (set by the pool)")
        self.worker_class = worker_class
        self.kwargs = kwargs
        self.name = worker_class.__name__
        self.request_queue = RequestQueue(self)
        self._queue = self.request_queue._items
        self._idle = _collections.deque()      # handles holding nothing
        self._partial = _collections.deque()   # handles with room left
        self.window = START_WINDOW
        self._policy = RestartPolicy(self.max_restarts, self.restart_window)
        self._slots = None
        self._handles = []
        self._alive = 0          # handles whose process is alive
        self._dispatcher = None
        self._degraded = False
        self._config = []
        self._timeouts = _collections.OrderedDict()  # request_id -> pending

    def __repr__(self):
        return (f"<WorkerPool {self.name} workers={self.num_workers} "
                f"routes={self.routes!r}>")

    # -- routing -------------------------------------------------------------

    @property
    def is_fallback(self):
        return self._router is None

    def matches(self, path):
        """True when `path` belongs to this pool's routes (a fallback pool
        matches nothing by itself)."""
        return self._router is not None and self._router.match(path)

    # -- status --------------------------------------------------------------

    @property
    def is_degraded(self):
        return self._degraded

    @property
    def degraded(self):
        return self._degraded

    @property
    def alive_count(self):
        return self._alive

    @property
    def parked_count(self):
        return sum(1 for handle in self._handles if handle.parked)

    @property
    def queue_size(self):
        """Requests not started yet: in the pool queue and those waiting in
        a worker's window."""
        return len(self._queue) + sum(
            handle.unstarted() for handle in self._handles)

    def status(self):
        """A dict for monitoring: name, degraded, queue size, workers."""
        now = _monotonic()
        return {
            'name': self.name,
            'degraded': self._degraded,
            'queue_size': self.queue_size,
            'alive_count': self.alive_count,
            'parked_count': self.parked_count,
            'restarts_in_window': self._policy.count(now),
            'window': self.window,
            'workers': [handle.status(now) for handle in self._handles],
        }

    # -- configuration updates ------------------------------------------------

    def send_config(self, config):
        """Send `config` to every worker's on_config(); workers started
        later receive the latest config too."""
        try:
            frame = _channel.pack((_msg.M_CONFIG, config))
        except Exception as err:
            raise TypeError(f"send_config(): config cannot be sent: {err!r}") from err
        self._config = [config]
        for handle in self._handles:
            if handle.alive and handle.out is not None:
                handle.out.add(frame)
                if self._dispatcher is not None:
                    self._dispatcher._dirty.add(handle)

    # -- queue ----------------------------------------------------------------

    def _enqueue(self, item):
        self._queue.append(item)
        if self._idle or self._partial:
            self._dispatch()
        elif self._dispatcher is not None:
            self._dispatcher._check_queue(self)

    def _dispatch(self):
        """Hand queued requests to workers with room in their window, idle
        workers first: a request waits behind a busy worker only when no
        worker is idle."""
        queue = self._queue
        idle = self._idle
        partial = self._partial
        send = self._dispatcher._send_request
        window = self.window
        while queue and (idle or partial):
            item = queue.popleft()
            if getattr(item, 'done', False):
                continue
            handle = idle[0] if idle else partial[0]
            if not send(handle, item):
                continue
            if handle.waiting is idle:
                idle.popleft()
            else:
                partial.popleft()
            if len(handle.inflight) < window:
                partial.append(handle)
                handle.waiting = partial
            else:
                handle.waiting = None

    def _eligible(self, handle):
        return (handle.ready and handle.accepting and handle.alive
                and not handle.stopping and not handle.stalled
                and len(handle.inflight) < self.window)

    def _place(self, handle):
        """Put `handle` in the list matching its load (or in none)."""
        want = None
        if self._eligible(handle):
            want = self._partial if handle.inflight else self._idle
        if handle.waiting is want:
            return
        self._withdraw(handle)
        if want is not None:
            handle.waiting = want
            want.append(handle)

    def _released(self, handle):
        """`handle` finished taking a request (its window has room)."""
        if handle.waiting is not self._idle:
            self._place(handle)
        if self._queue:
            self._dispatch()

    def _withdraw(self, handle):
        """Stop handing requests to `handle` (paused, dying, stopping)."""
        if handle.waiting is not None:
            try:
                handle.waiting.remove(handle)
            except ValueError:
                pass
            handle.waiting = None

    def _offer(self, handle):
        """Make `handle` eligible again (ready, resumed)."""
        self._place(handle)
        if self._queue:
            self._dispatch()

    def _update_window(self):
        """Size the window from the time the workers spent per request
        since the last update (read from their heartbeat slots)."""
        busy = 0.0
        count = 0
        for handle in self._handles:
            if not handle.alive:
                continue
            now_busy, now_count = handle.slot.load()
            seen_busy, seen_count = handle.work_seen
            if now_count >= seen_count:
                busy += now_busy - seen_busy
                count += now_count - seen_count
            handle.work_seen = (now_busy, now_count)
        if count < 4:
            return  # too little to judge: keep the window
        per_request = busy / count
        if per_request <= 0:
            window = MAX_WINDOW
        else:
            window = max(1, min(MAX_WINDOW, int(WINDOW_BUDGET / per_request)))
        if window != self.window:
            self.window = window
            for handle in self._handles:
                self._place(handle)
            if self._queue:
                self._dispatch()


def describe_exit(status):
    """(reason text, exitcode) from a waitpid status; exitcode is negative
    for a signal, as multiprocessing reports it."""
    if _os.WIFSIGNALED(status):
        sig = _os.WTERMSIG(status)
        try:
            name = _signal.Signals(sig).name
        except ValueError:
            name = f'signal {sig}'
        return f'killed by {name}', -sig
    if _os.WIFEXITED(status):
        code = _os.WEXITSTATUS(status)
        known = EXIT_REASONS.get(code)
        if known:
            return f'exited with code {code} ({known})', code
        return f'exited with code {code}', code
    return f'ended (status {status})', None
