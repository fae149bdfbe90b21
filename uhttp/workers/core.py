"""The dispatcher's machinery, put together.

`Core.run()` is start, serve, shut down. Each turn of the loop (`tick`)
waits for events (at most until the next timer or request deadline),
handles them, gives pipelined requests their turn, flushes the workers'
pipes, runs what is due and lets the HTTP layer close what waits too
long. The parts: `loop` (selector, timers, signals), `intake` (routing and
admission), `pending` (the table), each pool's `scheduler`, `relay`
(worker messages to clients), `supervisor` (worker processes) and the
shutdown phases.

The user's Dispatcher object (`app`) holds nothing but its hooks, its
sync handlers, the documented names and this core, under `_uhttp`.
"""

import os as _os
import sys as _sys
import time as _time
import traceback as _traceback

from . import allocator as _allocator
from . import channel as _channel
from . import config as _config
from . import expiry as _expiry
from . import fds as _fds
from . import hooks as _hooks
from . import http as _http
from . import log as _log
from . import messages as _msg
from . import observe as _observe
from . import replies as _replies
from .intake import Intake
from .logoutput import LogOutput
from .records import Records
from .loop import CLIENT_EVENTS, Loop, Signals
from .pending import (
    PENDING_DISCONNECTED, PENDING_SHUTDOWN, PENDING_TIMEOUT, PendingTable,
    first_request_id)
from .backpressure import Backpressure
from .control import Control
from .delivery import Delivery
from .front import Front
from .relay import Relay
from .streamhold import StreamHold
from .remotepools import RemotePools
from .retirement import Retirements
from .scheduler import MAX_WINDOW
from .shutdown import Shutdown
from .supervisor import Supervisor
from .throttle import Throttle
from .wssession import WsHub

_monotonic = _time.monotonic

QUEUE_WARNING_INTERVAL = 10.0
SIGNAL_ECHO = 0.25  # s: a stop signal this soon after the first is the same
CLIENT_BATCH = 64   # client events between two services of the workers' pipes
POOL_PATHS = 256    # paths whose pool find_pool() remembers
# reasons a request can end while its worker still holds it: tell the worker
_TELL_WORKER = frozenset((PENDING_DISCONNECTED, PENDING_TIMEOUT,
                          PENDING_SHUTDOWN))


class Core(Records):
    """Everything one Dispatcher does (see the module docstring)."""

    stop_frame = _channel.pack((_msg.M_STOP,))

    def __init__(self, app, base, *args, **kwargs):
        _fds.open_standard_fds()  # before any descriptor of ours is made
        self.app = app
        self.base = base
        self.settings = _config.DispatcherSettings(*args, **kwargs)
        self.pools = self.settings.pools
        self.pool_by_path = (None, {})  # (the settings, path -> pool)
        self.log_level = self.settings.log_level
        self.log_taps = []
        self.log_style = self.settings.log_style or _log.detect_style()
        self.record_source = None   # who sent the record on_log() now has
        self.on_log_quiet_until = 0.0  # when a failing on_log() is told again
        self.in_on_log = False  # a record logged inside on_log(): not again
        self.log_stream = _sys.stderr
        self.log_output = LogOutput(self.log_stream, lambda text: _log.render(
            self.log_style, self.log.name, _log.LOG_WARNING, text))
        self.log = _log.Logger(type(app).__name__, self.log_record,
                               self.log_level)
        self.hooks = _hooks.Hooks(app, base, self.log)
        self.pending = PendingTable(first_request_id(any(
            pool.broker is not None for pool in self.pools)))
        self.loop = Loop(self.log)
        self.signals = None
        self.user_fds = None
        self.server = None
        self.running = False
        self.stopping = False
        self.stop_began = None     # time.time() when the shutdown began
        self.handing_over = False  # a hot upgrade: answer, then close
        self.drained = False       # the shutdown's drain is over: refuse all
        self.stop_requested = None
        self.stop_signalled = float('-inf')  # when the first stop signal came
        self.hurry = False
        self.queue_warned = {}
        self.throttle = Throttle(self.log)  # warnings that come in floods
        self.intake = Intake(self)
        self.backpressure = Backpressure(self)
        self.front = Front(self)
        self.ws = WsHub(self)
        self.streamhold = StreamHold(self)
        self.relay = Relay(self)
        self.supervisor = Supervisor(self)
        self.remotes = RemotePools(self)
        self.retirements = Retirements(self)
        self.delivery = Delivery(self)
        self.control = Control(self)
        for pool in self.pools:
            pool.core = self
        self.observe = _observe.create(self)

    def configure(self, **overrides):
        """Apply Dispatcher keyword arguments again, over those it was built
        with (the command line and its config file do this); checked as at
        construction, all or nothing. Only before run()."""
        if self.running:
            raise RuntimeError("configure() works only before run()")
        given = dict(self.settings.given)
        given.update(overrides)
        settings = _config.DispatcherSettings(owner=self, **given)
        self.settings = settings
        self.pools[:] = settings.pools
        for pool in self.pools:
            pool.core = self
        self.log_level = self.log.level = settings.log_level
        self.log_style = settings.log_style or self.log_style
        if self.observe is not None:
            self.log_taps.remove(self.observe.tap)
        self.observe = _observe.create(self)
        self.intake = Intake(self)
        self.backpressure = Backpressure(self)

    # -- information -----------------------------------------------------------

    @staticmethod
    def now():
        return _monotonic()

    def port(self):
        """The port listened on (the real one once running with port=0;
        None on an inherited Unix socket)."""
        server = self.server
        if server is not None and server.socket is not None:
            return server.port
        return self.settings.port

    def status(self):
        server = self.server
        return {
            'pools': [pool.status() for pool in self.pools],
            'pending': len(self.pending),
            'streams': self.pending.streams - self.ws.count,
            'websockets': self.ws.count,
            'connections': 0 if server is None else len(server.connections),
            'queued': sum(pool.queue_size for pool in self.pools),
        }

    def find_pool(self, path):
        """The pool for `path`: the first whose routes match, else the
        fallback pool, else None (remembered per path: routes never change
        once the pools are built; a table grown to POOL_PATHS paths is
        started again)."""
        known = self.pool_by_path
        if known[0] is self.settings:
            pool = known[1].get(path, known)
            if pool is not known:
                return pool
        else:
            known = self.pool_by_path = (self.settings, {})
        pool = self.settings.fallback
        for each in self.settings.routed_pools:
            if each.matches(path):
                pool = each
                break
        if len(known[1]) >= POOL_PATHS:
            known[1].clear()
        known[1][path] = pool
        return pool

    def fd_callbacks(self):
        if self.user_fds is None:
            self.user_fds = _fds.FdCallbacks(self.loop.ensure_selector(),
                                             self.log)
        return self.user_fds

    # -- logging ---------------------------------------------------------------

    def format_log_name(self):
        template = self.app.LOG_NAME
        values = {'cls': type(self.app).__name__, 'pid': _os.getpid(),
                  'worker_id': None, 'pool_name': None}
        try:
            return str(template).format(**values)
        except (KeyError, IndexError, ValueError, AttributeError) as err:
            name = self.base.LOG_NAME.format(**values)
            self.log_record(name, _log.LOG_WARNING,
                            f"invalid LOG_NAME {template!r} ({err!r}); "
                            "using the default")
            return name

    # -- running ---------------------------------------------------------------

    def run(self):
        if self.running:
            raise RuntimeError("Dispatcher.run() is already running")
        self.running = True
        self.stopping = self.handing_over = self.drained = False
        self.stop_requested = None
        self.stop_signalled = float('-inf')  # when the first stop signal came
        self.hurry = False
        try:
            self.start()
            self.serve()
            Shutdown(self).run()
        finally:
            self.cleanup()
            self.running = False

    def stop(self):
        """Ask a running dispatcher to shut down gracefully (thread-safe)."""
        self.stop_requested = self.stop_requested or 'stop()'
        wakeup = self.loop.wakeup
        if wakeup is not None:
            wakeup.wake()

    def request_stop(self, name):
        """A stop signal. A second one cuts the waits short, unless it
        comes within SIGNAL_ECHO of the first: the same stop sent twice
        (to the dispatcher and to its process group, as `timeout` and
        some supervisors do), not an operator in a hurry."""
        now = _monotonic()
        if self.stopping or self.stop_requested:
            if now - self.stop_signalled >= SIGNAL_ECHO:
                self.hurry = True
            return
        self.stop_requested, self.stop_signalled = name, now

    def on_wake(self, data):
        if not self.signals.installed or Signals.child_ended(data):
            self.supervisor.reap()
        for pool in self.pools:  # requests put from other threads
            pool.request_queue.take_handed()

    def start(self):
        self.hooks.refresh()  # hooks assigned on the object since __init__
        self.front.raise_fd_limit()
        _allocator.keep_freed_memory()  # before any worker is forked
        self.loop.open(self.on_wake)
        self.signals = Signals(self.loop.wakeup, self.request_stop,
                               self.control.request_action)
        self.signals.install()
        for pool in self.pools:
            pool.request_queue.attach(self.loop.wakeup.wake)
        self.front.listen()
        self.control.listening()
        for pool in self.pools:
            self.supervisor.start_pool(pool)
        self.log.info("listening on %s (%d pools, %d workers)",
                      self.front.where(), len(self.pools),
                      sum(pool.num_workers for pool in self.pools))
        now = _monotonic()
        self.loop.call_at(now + self.app.SELECT_TIMEOUT, self.idle_tick)
        for pool in self.pools:
            self.loop.call_at(now + pool.heartbeat_interval,
                              self.supervisor.check_health, pool)
        self.control.start(now)
        if self.observe is not None:
            self.observe.start(now)

    def idle_tick(self, now):
        self.loop.call_at(now + self.app.SELECT_TIMEOUT, self.idle_tick)
        self.control.idle()
        self.throttle.flush()
        self.hooks.call_timed('on_idle')

    # -- the loop ----------------------------------------------------------------

    def serve(self):
        tick = self.tick
        while not self.stop_requested:
            tick(self.app.SELECT_TIMEOUT)

    def tick(self, longest):
        """One turn of the loop: wait for events (at most `longest` seconds,
        less when a timer or a request deadline is due), handle them, then
        flush worker pipes and run what is due."""
        self.handle_events(self.loop.select(self.wait_time(longest)))
        if self.server.has_scheduled or self.backpressure.pipelined:
            self.serve_pipelined()
        if self.front.unread_ready():
            self.front.serve_unread()
        try:
            self.housekeeping()
        except Exception as err:  # pylint: disable=broad-except
            self.log.critical("dispatcher loop error (serving goes on): %r\n%s",
                              err, _traceback.format_exc().rstrip())

    def wait_time(self, longest):
        if self.delivery.dirty or self.server.has_scheduled or (
                self.front.unread_ready()):
            return 0
        now = _monotonic()
        timeout = longest
        for due in (self.loop.timers.next_due(), self.pending.next_deadline()):
            if due is not None and due - now < timeout:
                timeout = due - now
        return max(timeout, 0)

    def handle_events(self, events):
        """The loop's own events: the workers' pipes, the wake-up pipe, the
        user's descriptors, then the clients' side."""
        clients = self.loop.clients
        serve = False
        for key, mask in events:
            if key.data is clients:
                serve = True
            else:
                self.handle(key, mask)
        if serve:
            self.serve_clients()

    def handle(self, key, mask):
        try:
            ready = key.data.handle_event(key.fileobj, mask)
            if ready is not None:
                self.intake.on_request(ready)
        except Exception as err:  # pylint: disable=broad-except
            self.event_failed(key.data, err)

    def serve_workers(self):
        """Everything the workers sent, and room in their pipes."""
        for key, mask in self.loop.workers.poll():
            try:
                key.data.handle_event(key.fileobj, mask)
            except Exception as err:  # pylint: disable=broad-except
                self.event_failed(key.data, err)

    def serve_clients(self):
        """The ready clients, CLIENT_BATCH at a time, with the workers'
        pipes flushed and read between batches; stop while they are full."""
        table = self.pending
        limit = self.backpressure.limit
        # no more events than requests fit: the others stay ready in the
        # kernel (taking them only to leave them would cost a turn each)
        room = limit - table.waiting
        if room <= 0 and self.backpressure.full():
            return
        asked = (room if 0 < room < CLIENT_EVENTS
                 and not self.backpressure.shedding else CLIENT_EVENTS)
        events = self.loop.clients.poll(
            asked if asked < CLIENT_EVENTS else None)
        on_request = self.intake.on_request
        secure = self.settings.ssl_context is not None
        for index, (key, mask) in enumerate(events):
            if index and not index % CLIENT_BATCH:
                if self.delivery.dirty:
                    self.delivery.flush_workers()
                self.serve_workers()
            if (len(table.requests) - table.streams >= limit
                    and self.backpressure.full()):
                return  # the rest stay ready in the kernel
            data = key.data
            try:
                ready = data.handle_event(key.fileobj, mask)
                if ready is not None:
                    on_request(ready)
            except Exception as err:  # pylint: disable=broad-except
                self.event_failed(data, err)
            if secure:
                self.server.note_unread(data)
        self.backpressure.polled(len(events), asked)

    def serve_pipelined(self):
        """Requests that were waiting in a connection's buffer get their
        turn; while the workers are full they wait there, held back as
        the clients' sockets are, until there is room (or 503s are due)."""
        backpressure = self.backpressure
        connections = backpressure.take_pipelined(self.server.take_scheduled())
        table = self.pending
        for index, connection in enumerate(connections):
            if (len(table.requests) - table.streams >= backpressure.limit
                    and backpressure.full()):
                backpressure.hold_pipelined(connections[index:])
                return
            ready = connection.process_pipelined()
            self.server.note_unread(connection)  # it may have read (TLS)
            if ready is not None:
                try:
                    self.intake.on_request(ready)
                except Exception as err:  # pylint: disable=broad-except
                    self.front.connection_failed(ready, err)
                    ready.close()

    def housekeeping(self):
        if self.control.pending_actions:
            self.control.run_actions()
        if self.delivery.dirty:
            self.delivery.flush_workers()
        now = _monotonic()
        self.loop.timers.run_due(now)
        _expiry.expire(self, now)
        self.backpressure.check(now)
        if not self.signals.installed:
            self.supervisor.reap()
        self.server.maintenance()

    def event_failed(self, data, err):
        if isinstance(data, _http.Connection):
            self.front.connection_failed(data, err)
            data.close()
        else:
            self.log.error("event handler %r failed: %r\n%s", data, err,
                           _traceback.format_exc().rstrip())

    def run_until(self, condition, deadline):
        """Keep serving events (but no new connections) until `condition()`
        or the deadline; a second SIGTERM/SIGINT cuts it short."""
        while not condition():
            left = deadline - _monotonic()
            if left <= 0 or self.hurry:
                return
            self.tick(min(0.05, left))

    # -- the one place a pooled request ends ------------------------------------

    def end(self, pending, reason, response=None, tell_worker=None):
        """End `pending` with `reason`, exactly once: out of the table, the
        worker told when it still holds it, the user's hooks called."""
        if not self.pending.finish(pending, reason):
            return False
        if self.observe is not None:
            self.observe.pooled(pending)
        handle = pending.worker
        if handle is not None:
            handle.held.pop(pending.request_id, None)
            # nothing more goes to its client: a worker held back while
            # that client read slowly goes on (and stops, at shutdown)
            self.streamhold.release(handle, pending.client)
            # also a request still waiting in the worker: it is never started
            if tell_worker or (tell_worker is None and reason in _TELL_WORKER):
                self.delivery.tell(handle, _channel.pack(
                    (_msg.M_DISCONNECT, pending.request_id)))
        elif pending.pool.remote is not None:  # never started: it never will
            pending.pool.scheduler.ended(pending.request_id)
        if response is not None:
            self.hooks.call('on_response', response, pending)
        if 'on_pending_removed' in self.hooks.replaced:
            self.hooks.call('on_pending_removed', pending.request_id, pending,
                            reason)
        return True

    def fail(self, pending, status, data, reason, headers=None):
        """End `pending` with an error status (or close its stream)."""
        if pending.done:
            return
        client = pending.client
        if pending.status is None:
            pending.status = status
        hold = self.hooks.overridden('on_pending_removed')
        if hold:
            client.hold()
        _replies.end_for(pending, status, data, headers)
        self.end(pending, reason)
        if hold:
            client.release()

    def check_queue(self, pool):
        """Warn (at most every QUEUE_WARNING_INTERVAL s) about a long queue:
        the requests not started yet (pool.queue_size), in the pool's queue
        or waiting in a worker's window."""
        limit = pool.queue_warning
        if not limit:
            return
        last = self.queue_warned.get(pool)
        now = _monotonic()
        if last is not None and now - last < QUEUE_WARNING_INTERVAL:
            return
        scheduler = pool.scheduler
        queued = len(scheduler)
        if queued + MAX_WINDOW * len(pool.handles) <= limit or (
                queued + sum(len(handle.inflight)
                             for handle in pool.handles) <= limit):
            return  # (cheap: it cannot be over; no worker holds more
            # than MAX_WINDOW requests, and this runs for most requests)
        size = pool.queue_size
        if size > limit:
            self.queue_warned[pool] = now
            self.log.warning(
                "pool %s: %d requests queued (queue_warning=%d)",
                pool.name, size, limit)

    # -- after run() ------------------------------------------------------------------

    def cleanup(self):
        if self.signals is not None:
            self.signals.restore()
        for pool in self.pools:
            pool.request_queue.detach()
        self.supervisor.cleanup()
        self.remotes.close()
        if self.server is not None:
            try:
                self.server.close()
            except Exception:  # pylint: disable=broad-except
                pass
        self.loop.close()
        self.control.notifier.close()
        self.log_output.drain(2.0)  # the records still queued, if it can
        self.user_fds = None
        self.delivery.dirty = set()
