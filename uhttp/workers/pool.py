"""WorkerPool: its configuration, its workers' handles, restart policy.

The pool's request queue lives in the dispatcher. A request goes to a worker
only when that worker has said it can take more (its credit), so the
dispatcher always knows which worker holds which request, and a dead
worker's requests can be failed (those it started) or handed to another
worker (those it had not started yet).
"""

import collections as _collections
import difflib as _difflib
import os as _os
import signal as _signal
import time as _time
import warnings as _warnings

from . import brokerurl as _brokerurl
from . import channel as _channel
from . import files as _files
from . import heartbeat as _heartbeat
from . import log as _log
from . import messages as _msg
from . import metrics as _metrics
from . import routing as _routing
from .policy import (  # noqa: F401  (re-exported)
    BACKOFF_CAP, BACKOFF_FIRST, STABLE_AFTER, RestartPolicy, SlotRecord)
from .scheduler import MAX_WINDOW, START_WINDOW, WINDOW_BUDGET  # noqa: F401
from .scheduler import PoolScheduler
from .remote import RemoteScheduler
from .requestqueue import RequestQueue
from .worker import Worker
from .workerloop import EXIT_REASONS

_monotonic = _time.monotonic

RESERVED_KWARGS = ('worker_id', 'pool_name')

# a handle's role: the slot's worker; the new process that will take over a
# slot once it is ready; the old process, finishing what it holds
ACTIVE = 'active'
REPLACEMENT = 'replacement'
RETIRING = 'retiring'


def _warn_if_misspelt(worker_class, name):
    """A worker keyword a letter off a setting (num_worker=4): a typo."""
    for near in _difflib.get_close_matches(
            name, [*SETTINGS, 'routes', 'metrics', 'broker'], 1, 0.85):
        _warnings.warn(f"WorkerPool({worker_class.__name__}): {name!r} is not "
                       "a setting, so it goes to the workers' self.kwargs; "
                       f"did you mean {near!r}?", stacklevel=3)


def _number(value, name, allow_none=False, minimum=0.0, strict=False,
            integer=False, finite=False):
    if value is None and allow_none:
        return None
    kinds = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds):
        raise TypeError(
            f"WorkerPool {name} must be {'an int' if integer else 'a number'}"
            f"{' or None' if allow_none else ''}, not {value!r}")
    if value != value:  # NaN
        raise ValueError(f"WorkerPool {name} must be a number, not NaN")
    if finite and value in (float('inf'), float('-inf')):
        raise ValueError(f"WorkerPool {name} must be finite, got {value}")
    if value < minimum or (strict and value == minimum):
        raise ValueError(f"WorkerPool {name} must be {'>' if strict else '>='} "
                         f"{minimum}, got {value}")
    return value


class WorkerHandle:
    """The dispatcher's view of one worker slot (and its current process)."""

    def __init__(self, pool, index, slot=None):
        self.pool = pool
        self.index = index
        self.slots = None
        if slot is None:  # a shared-memory slot of its own
            self.slots = _heartbeat.SlotTable(1)
            slot = self.slots.slot(0)
        self.slot = slot
        self.role = ACTIVE       # ACTIVE, REPLACEMENT (starting) or RETIRING
        self.replaces = None     # for a replacement: the handle it replaces
        self.replaced_by = None  # for a handle being replaced: its replacement
        self.retire_reason = None
        self.retire_deadline = None
        self.stop_deadline = None
        self.taken = 0           # requests it took to the end (answered, ...)
        self.recycle_at = None   # max_requests (+ jitter) for this process
        self.beats = None        # (heartbeat_interval, stuck_timeout) at its start
        self.replace_failures = 0  # replacements in a row that never got ready
        self.replace_after = 0.0   # no new replacement before (monotonic)
        self.pid = None
        self._alive = False
        self.ready = False
        self.accepting = True
        self.started_at = None
        self.to_fd = None        # dispatcher writes requests here
        self.from_fd = None      # dispatcher reads responses here
        self.recall_fd = None    # a byte here: give back what you have not started
        self.file_fd = None      # its descriptor socket (files.py)
        self.files = {}          # request_id -> fd received, not yet answered with
        self.out = None
        self.reader = None
        self.writing = False     # to_fd is registered for EVENT_WRITE
        self.on_event = None     # the relay's worker_event(handle, fileobj, mask)
        self.seq = 0
        self.inflight = _collections.deque()  # (seq, request_id, item) sent
        self.held = {}           # request_id -> item: deferred or streaming
        self.waiting = None      # the scheduler list it waits in, if any
        self.stalled = False     # recalled: no new requests until it releases one
        self.recalled = False    # a recall was sent, its W_RETURNED not read yet
        self.stall_check = False  # a stall check is scheduled
        self.recalls = 0         # recalls sent to this slot's workers
        self.work_seen = (0.0, 0)  # slot (busy, count) at the last window update
        self.record = SlotRecord()
        self.parked = False
        self.kill_reason = None
        self.stopping = False
        self.restart_at = None
        self.exitcode = None
        self.routes = ()         # its worker's route patterns (W_ROUTES)

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

    @property
    def restarts(self):
        return self.record.restarts

    @property
    def fds(self):
        return (self.from_fd, self.to_fd, self.recall_fd, self.file_fd)

    def started(self, pid, to_fd, from_fd, recall_fd, now, file_fd=None):
        """A new process runs in this slot."""
        self.pid = pid
        self.alive = True
        self.ready = False
        self.accepting = True
        self.stopping = False
        self.started_at = now
        self.to_fd = to_fd
        self.from_fd = from_fd
        self.recall_fd = recall_fd
        self.file_fd = file_fd
        self.files = {}
        self.out = _channel.OutBuffer(to_fd)
        self.reader = _channel.FrameReader(from_fd)
        self.writing = False
        self.seq = 0
        self.stalled = False
        self.recalled = False
        self.stall_check = False
        self.work_seen = (0.0, 0)
        self.kill_reason = None
        self.exitcode = None
        self.taken = 0
        self.stop_deadline = None

    def exited(self, exitcode):
        """Its process was reaped."""
        self.alive = False
        self.ready = False
        self.exitcode = exitcode

    @property
    def retiring(self):
        return self.role == RETIRING

    def release_slot(self):
        """Free its shared-memory slot (the handle is not used again)."""
        if self.slots is not None:
            self.slots.close()
            self.slots = None

    def take_file(self, request_id):
        """The descriptor its worker sent for `request_id`, or None."""
        fd = self.files.pop(request_id, None)
        if fd is None and self.file_fd is not None:
            _files.receive_fds(self.file_fd, self.files)
            fd = self.files.pop(request_id, None)
        return fd

    def close_files(self):
        """Close the descriptors received and never answered with (its
        socket's queue is freed by the kernel when the socket closes)."""
        files, self.files = self.files, {}
        for fd in files.values():
            try:
                _os.close(fd)
            except OSError:
                pass

    def closed(self):
        """Its pipes were closed."""
        self.from_fd = self.to_fd = self.recall_fd = self.file_fd = None
        self.writing = False
        if self.out is not None:
            self.out.closed = True

    def handle_event(self, fileobj, mask):
        self.on_event(self, fileobj, mask)

    @property
    def name(self):
        return f"{self.pool.name}[{self.index}]"

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
            'queued': self.pool.scheduler.unstarted(self),
            'retiring': self.retire_reason if self.role == RETIRING else None,
            'replacement': self.role == REPLACEMENT,
            'stalled': self.stalled,
            'recalls': self.recalls,
            'restarts': self.record.restarts,
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
                 permanent_failure_exitcode=None, reload_batch=1,
                 retire_timeout=30, max_requests=None, max_requests_jitter=0,
                 max_worker_rss_mb=None, metrics=None, broker=None, **kwargs):
        if not (isinstance(worker_class, type) and issubclass(worker_class, Worker)):
            raise TypeError(
                f"WorkerPool worker_class must be a Worker subclass, "
                f"not {worker_class!r}")
        for name in RESERVED_KWARGS:
            if name in kwargs:
                raise TypeError(
                    f"WorkerPool keyword {name!r} is reserved (set by the pool)")
        self.worker_class = worker_class
        self.kwargs = kwargs
        for name in kwargs:
            _warn_if_misspelt(worker_class, name)
        self.metrics = _metrics.check_declarations(metrics)
        self.broker = None if broker is None else _brokerurl.check_url(broker)
        self.name = worker_class.__name__
        if self.broker is not None:
            _brokerurl.require_client(f"WorkerPool {self.name}")
        self.routes = None
        self._router = None
        if routes is not None:
            self._router = _routing.PrefixRoutes(routes, 'WorkerPool routes')
            self.routes = list(routes)
        self.configure(
            num_workers=num_workers, timeout=timeout,
            stuck_timeout=stuck_timeout, heartbeat_interval=heartbeat_interval,
            log_level=log_level, max_restarts=max_restarts,
            restart_window=restart_window, queue_warning=queue_warning,
            worker_memory_limit_mb=worker_memory_limit_mb,
            recovery_interval=recovery_interval,
            permanent_failure_exitcode=permanent_failure_exitcode,
            reload_batch=reload_batch, retire_timeout=retire_timeout,
            max_requests=max_requests, max_requests_jitter=max_requests_jitter,
            max_worker_rss_mb=max_worker_rss_mb)
        # the running state: the dispatcher's core sets and reads these
        self.scheduler = (PoolScheduler() if self.broker is None
                          else RemoteScheduler())
        self.remote = None       # its remotepools.RemotePool, once started
        self.request_queue = RequestQueue(self.scheduler)
        self.policy = RestartPolicy(
            self.max_restarts, self.restart_window,
            permanent_exitcode=self.permanent_failure_exitcode)
        self.handles = []        # WorkerHandles, once started (see role)
        self.retired = {}        # reason -> workers retired for it
        self.core = None         # the dispatcher's core, once it has one
        self.degraded = False
        self.recovers_at = None  # when a degraded pool recovers (monotonic)
        self.configs = []        # the latest send_config(), for new workers
        self._alive = 0          # handles whose process is alive

    def configure(self, **settings):
        """Check and set pool settings (the constructor's keywords but
        worker_class, routes and the workers' kwargs); all or nothing."""
        for name, value in self.check_settings(settings).items():
            setattr(self, name, value)
        policy = getattr(self, 'policy', None)
        if policy is not None:
            policy.max_restarts = self.max_restarts
            policy.window = self.restart_window
            policy.permanent_exitcode = self.permanent_failure_exitcode

    def check_settings(self, settings):
        """{name: checked value} of what configure() would set; sets nothing."""
        checked = {}
        for name, value in settings.items():
            check = SETTINGS.get(name)
            if check is None:
                raise TypeError(f"WorkerPool has no setting {name!r} "
                                f"(settings: {', '.join(sorted(SETTINGS))})")
            if name == 'num_workers' and getattr(self, 'broker', None):
                check = broker_pool_count  # remote workers may serve it alone
            checked[name] = check(value)
        beat = checked.get('heartbeat_interval',
                           getattr(self, 'heartbeat_interval', None))
        stuck = checked.get('stuck_timeout', getattr(self, 'stuck_timeout',
                                                     None))
        if beat is not None and stuck is not None and stuck <= beat:
            raise ValueError(
                f"WorkerPool stuck_timeout ({stuck}) must be longer than "
                f"heartbeat_interval ({beat}): a worker beats once per "
                "interval, so it would be killed as stuck while idle")
        return checked

    def settings(self):
        """The current value of every setting configure() takes."""
        return {name: getattr(self, name) for name in SETTINGS}

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
        return self.degraded

    @property
    def window(self):
        """How many requests a worker may hold (see scheduler.py)."""
        return self.scheduler.window

    @property
    def alive_count(self):
        """Live workers: local processes, and remote ones heard from."""
        if self.remote is not None:
            return self._alive + self.remote.alive_count
        return self._alive

    def active(self, index):
        """The handle serving slot `index` (its replacement once ready)."""
        for handle in self.handles:
            if handle.index == index and handle.role == ACTIVE:
                return handle
        return None

    def resize(self, num_workers):
        """Run `num_workers` workers: more start at once, fewer are retired
        gracefully (the highest slots first). From the dispatcher's loop (a
        sync handler, on_idle) while it runs, or before run()."""
        num_workers = SETTINGS['num_workers'](num_workers)
        if self.core is None or not self.core.running:
            self.num_workers = num_workers
            return
        self.core.retirements.resize(self, num_workers)

    @property
    def parked_count(self):
        return sum(1 for handle in self.handles if handle.parked)

    @property
    def queue_size(self):
        """Requests not started yet: in the pool queue and those waiting in
        a worker's window."""
        return self.scheduler.queue_size

    def status(self):
        """A dict for monitoring: name, degraded, queue size, workers."""
        now = _monotonic()
        workers = [handle.status(now) for handle in self.handles]
        status = {
            'name': self.name,
            'degraded': self.degraded,
            'queue_size': self.queue_size,
            'alive_count': self.alive_count,
            'parked_count': self.parked_count,
            'restarts_in_window': self.policy.count(now),
            'window': self.window,
            'retired': dict(self.retired),
            'workers': workers,
        }
        if self.broker is not None:
            status['broker'] = {'url': _brokerurl.redact(self.broker),
                                'connected': False, 'error': None}
            if self.remote is not None:
                workers.extend(self.remote.status(now))
                status['broker'] = self.remote.broker_status()
        return status

    # -- configuration updates ------------------------------------------------

    def send_config(self, config):
        """Send `config` to every worker's on_config(); workers started
        later receive the latest config too."""
        try:
            frame = _channel.pack((_msg.M_CONFIG, config))
        except Exception as err:
            raise TypeError(f"send_config(): config cannot be sent: {err!r}") from err
        self.configs = [config]
        if self.core is not None:
            self.core.control.call_in_loop(lambda: self._tell_all(frame))
        elif self.remote is not None:
            self._tell_all(frame)

    def _tell_all(self, frame):
        if self.core is not None:
            for handle in self.handles:
                self.core.delivery.tell(handle, frame)
        if self.remote is not None:
            self.remote.link.broadcast(frame)


def _exit_code(value):
    if value is None:
        return None
    _number(value, 'permanent_failure_exitcode', minimum=1, integer=True)
    if value > 255:
        raise ValueError(
            f"WorkerPool permanent_failure_exitcode must be 1..255, got {value}")
    return value


def broker_pool_count(value):
    """num_workers of a pool with a broker: local workers besides the
    remote ones, 0 or more."""
    return _number(value, 'num_workers', minimum=0, integer=True)


MIN_HEARTBEAT = 0.01   # seconds: below, the loops would only beat

# setting -> its check: the value, or TypeError/ValueError naming the setting
SETTINGS = {
    'num_workers': lambda v: _number(v, 'num_workers', minimum=1, integer=True),
    'timeout': lambda v: _number(v, 'timeout', strict=True),
    'stuck_timeout': lambda v: _number(v, 'stuck_timeout', strict=True),
    'heartbeat_interval': lambda v: _number(v, 'heartbeat_interval',
                                            minimum=MIN_HEARTBEAT,
                                            finite=True),
    'log_level': lambda v: _log.check_level(v, 'WorkerPool log_level'),
    'max_restarts': lambda v: _number(v, 'max_restarts', minimum=1, integer=True),
    'restart_window': lambda v: _number(v, 'restart_window', strict=True),
    'queue_warning': lambda v: _number(v, 'queue_warning', integer=True),
    'worker_memory_limit_mb': lambda v: _number(
        v, 'worker_memory_limit_mb', allow_none=True, strict=True,
        finite=True),
    'recovery_interval': lambda v: _number(v, 'recovery_interval',
                                           allow_none=True, strict=True),
    'permanent_failure_exitcode': _exit_code,
    'reload_batch': lambda v: _number(v, 'reload_batch', minimum=1, integer=True),
    'retire_timeout': lambda v: _number(v, 'retire_timeout', strict=True),
    'max_requests': lambda v: _number(v, 'max_requests', allow_none=True,
                                      minimum=1, integer=True),
    'max_requests_jitter': lambda v: _number(v, 'max_requests_jitter', integer=True),
    'max_worker_rss_mb': lambda v: _number(v, 'max_worker_rss_mb',
                                           allow_none=True, strict=True),
}


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
