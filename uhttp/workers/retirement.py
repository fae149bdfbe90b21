"""Retiring workers gracefully, and what is built on it: rolling reloads,
recycling by requests served or memory used, and resizing pools.

A retirement never fails or re-runs a request. The worker's replacement
is started first; once it is ready it takes the slot, and the old worker
gets no new requests, finishes those it holds (deferred ones up to the
pool timeout), keeps its open streams until they end or `retire_timeout`
passes, and only then is asked to stop (and killed if it does not). A
retirement is logged at INFO, does not count toward `max_restarts`, and
shows in the pool's status() ('retired' by reason, 'retiring' per worker).

A replacement that ends before it is ready (its setup() raised, it was
stuck starting) is not a restart either: the old worker keeps its slot and
goes on serving, an ERROR says so, a reload of that pool is given up, and
recycling tries again after a back-off.
"""

import collections as _collections
import os as _os
import random as _random
import time as _time

from . import policy as _policy
from . import replies as _replies
from .pending import PENDING_SHUTDOWN
from .pool import ACTIVE, REPLACEMENT, RETIRING, WorkerHandle

RELOAD = 'reload'
MAX_REQUESTS = 'max_requests'
MEMORY = 'memory'
RESIZE = 'resize'

POLL = 0.05         # how often a retiring worker is looked at
STOP_GRACE = 5.0    # from the stop message to the kill
RETRY_FIRST = 1.0   # after a failed replacement, the wait before another
RETRY_CAP = 60.0    # ... doubling up to this

_monotonic = _time.monotonic
_PAGE = _os.sysconf('SC_PAGE_SIZE') if hasattr(_os, 'sysconf') else 4096


def rss_bytes(pid):
    """Resident memory of process `pid` (Linux /proc), or None."""
    try:
        with open(f'/proc/{pid}/statm', 'rb') as statm:
            return int(statm.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return None


class Retirements:
    """Graceful replacement of worker processes for one dispatcher."""

    def __init__(self, core):
        self.core = core
        self.log = core.log
        self.loop = core.loop
        self.reloads = {}   # pool -> deque of handles still to reload
        self.reloading = False
        self.failed = []    # pools whose reload was given up, this reload

    # -- the one mechanism -------------------------------------------------------

    def replace(self, handle, reason, now=None):
        """Start `handle`'s replacement; `handle` retires once it is ready.
        Recycling (`now` given) waits out the back-off of failed ones."""
        if (handle.role != ACTIVE or handle.replaced_by is not None
                or not handle.alive or self.core.stopping):
            return False
        if now is not None and now < handle.replace_after:
            return False
        pool = handle.pool
        new = WorkerHandle(pool, handle.index)
        new.role = REPLACEMENT
        new.replaces = handle
        handle.replaced_by = new
        handle.retire_reason = reason
        pool.handles.append(new)
        self.log.info("replacing %s (pid %s): %s", handle.name, handle.pid,
                      reason)
        self.core.supervisor.spawn(new)
        return new.replaces is handle   # else it could not start

    def replacement_ready(self, new):
        """`new` is ready: it takes the slot, the old worker retires."""
        old = new.replaces
        new.replaces = None
        new.role = ACTIVE
        if old is not None:
            old.replaced_by = None
            self.retire(old, old.retire_reason or RELOAD)

    def replacement_failed(self, new, why):
        """`new` ended before it was ready: the worker it was to replace
        keeps the slot. A reload of the pool stops here; recycling tries
        again after a back-off."""
        old, pool = new.replaces, new.pool
        new.replaces = None
        if new in pool.handles:
            pool.handles.remove(new)
        new.release_slot()
        reason = old.retire_reason or RELOAD
        old.replaced_by = None
        old.retire_reason = None
        old.replace_failures += 1
        delay = _policy.backoff(old.replace_failures, RETRY_FIRST, RETRY_CAP)
        old.replace_after = _monotonic() + delay
        if reason == MAX_REQUESTS:
            old.recycle_at = old.taken + 1
        if reason == RELOAD:
            self.give_up_reload(pool)
            after = "the pool's reload is given up"
        else:
            after = f"another try in {delay:.0f}s at the earliest"
        self.log.error("%s's replacement (%s) failed before it was ready: "
                       "%s; %s (pid %s) keeps serving, %s", old.name, reason,
                       why, old.name, old.pid, after)
        self.pump_reload(pool)

    def retire(self, handle, reason):
        """No new requests for `handle`; it stops once it holds nothing."""
        if handle.role == RETIRING:
            return
        handle.role = RETIRING
        handle.retire_reason = reason
        now = _monotonic()
        pool = handle.pool
        handle.retire_deadline = now + pool.retire_timeout
        pool.scheduler.withdraw(handle)
        self.loop.call_at(now + POLL, self.check, handle, handle.pid,
                          now + max(pool.timeout, pool.retire_timeout))

    def check(self, now, handle, pid, hard_deadline):
        """Stop a retiring worker once it holds no request (streams until
        retire_timeout); kill it if it does not stop."""
        if handle.pid != pid or not handle.alive:
            return
        self.loop.call_at(now + POLL, self.check, handle, pid, hard_deadline)
        if handle.stopping:
            if handle.stop_deadline is None:
                return  # stopped by the shutdown, whose deadlines apply
            if now >= handle.stop_deadline and handle.kill_reason is None:
                self.log.warning("%s (pid %s) did not stop after retiring; "
                                 "killing it", handle.name, handle.pid)
                self.core.supervisor.kill(handle, 'retire timeout')
            return
        streams = [item for item in handle.held.values()
                   if getattr(item, 'streaming', False)]
        working = handle.inflight or len(handle.held) > len(streams)
        if working and now < hard_deadline:
            return
        if streams and now < handle.retire_deadline:
            return
        for pending in streams:
            self.core.fail(pending, 503, _replies.SHUTTING_DOWN,
                           PENDING_SHUTDOWN)
        handle.stopping = True
        handle.stop_deadline = now + STOP_GRACE
        self.core.delivery.tell(handle, self.core.stop_frame)

    def exited(self, handle, expected):
        """A retiring (or replaced) worker's process ended."""
        pool = handle.pool
        new = handle.replaced_by
        if new is not None:          # it died before its replacement was ready
            handle.replaced_by = None
            new.replaces = None
            new.role = ACTIVE
        reason = handle.retire_reason or RELOAD
        if expected:
            pool.retired[reason] = pool.retired.get(reason, 0) + 1
            self.log.info("%s (pid %s) retired (%s)", handle.name, handle.pid,
                          reason)
        if handle in pool.handles:
            pool.handles.remove(handle)
        handle.release_slot()
        self.pump_reload(pool)

    # -- reasons to retire -----------------------------------------------------------

    def taken(self, handle):
        """`handle` finished taking a request: recycle it at its limit."""
        if (handle.recycle_at is not None and handle.taken >= handle.recycle_at
                and self.replace(handle, MAX_REQUESTS, _monotonic())):
            handle.recycle_at = None

    def recycle_limit(self, pool):
        if pool.max_requests is None:
            return None
        return pool.max_requests + _random.randint(
            0, max(0, pool.max_requests_jitter))

    def check_memory(self, handle):
        limit = handle.pool.max_worker_rss_mb
        if limit is None or handle.role != ACTIVE or not handle.ready:
            return
        rss = rss_bytes(handle.pid)
        if rss is not None and rss > limit * 1024 * 1024:
            if self.replace(handle, MEMORY, _monotonic()):
                self.log.info("%s (pid %s) uses %d MB, above max_worker_rss_mb"
                              "=%s", handle.name, handle.pid,
                              rss // (1024 * 1024), limit)

    # -- rolling reload ---------------------------------------------------------------

    def reload(self):
        """Replace every worker of every pool, reload_batch at a time."""
        self.reloading = True
        self.failed.clear()
        for pool in self.core.pools:
            queue = self.reloads.setdefault(pool, _collections.deque())
            for handle in pool.handles:
                if handle.role == ACTIVE and handle not in queue:
                    queue.append(handle)
            self.pump_reload(pool)
        self.reload_done()   # no pool at all (static files and sync only)

    def pump_reload(self, pool):
        queue = self.reloads.get(pool)
        if not queue:
            self.reload_done()
            return
        busy = sum(1 for handle in pool.handles
                   if handle.role == REPLACEMENT or (
                       handle.role == RETIRING
                       and handle.retire_reason == RELOAD))
        while queue and busy < pool.reload_batch:
            handle = queue.popleft()
            if self.replace(handle, RELOAD):
                busy += 1
        if not busy:   # none left had a live worker to replace (parked,
            self.reload_done()   # dead waiting for its restart): done here

    def give_up_reload(self, pool):
        queue = self.reloads.get(pool)
        if queue:
            queue.clear()
        if self.reloading and pool not in self.failed:
            self.failed.append(pool)

    def reload_done(self):
        if not self.reloading:
            return
        if self.core.stopping:   # not finished: cut short by the shutdown
            self.reloading = False   # (and no READY=1 after STOPPING=1)
            return
        for pool in self.core.pools:
            if self.reloads.get(pool) or any(
                    handle.role != ACTIVE for handle in pool.handles):
                return
        self.reloading = False
        if self.failed:
            self.log.error("reload finished with old workers left in pool(s) "
                           "%s: their new workers failed to start",
                           ', '.join(pool.name for pool in self.failed))
        else:
            self.log.info("reload finished: every worker replaced")
        self.core.control.notifier.ready(self.core.control.summary())

    # -- resizing ---------------------------------------------------------------------------

    def resize(self, pool, num_workers):
        slots = sorted({handle.index for handle in pool.handles
                        if handle.role != RETIRING})
        pool.num_workers = num_workers
        for index in range(len(slots), num_workers):
            handle = WorkerHandle(pool, index)
            pool.handles.append(handle)
            self.core.supervisor.spawn(handle)
        for index in slots[num_workers:]:
            for handle in list(pool.handles):
                if handle.index != index or handle.role == RETIRING:
                    continue
                if handle.role == REPLACEMENT:
                    self.cancel_replacement(handle)
                elif handle.alive:
                    self.retire(handle, RESIZE)
                else:
                    pool.handles.remove(handle)   # waiting for a restart
                    handle.release_slot()
        self.log.info("pool %s resized to %d workers", pool.name, num_workers)

    def cancel_replacement(self, new):
        old = new.replaces
        if old is not None:
            old.replaced_by = None
        new.replaces = None
        new.role = ACTIVE
        self.retire(new, RESIZE)
