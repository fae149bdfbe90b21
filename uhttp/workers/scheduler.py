"""A pool's scheduler: its request queue and its workers' windows.

Pure logic: it never touches a pipe. It is given `send(handle, seq, item)`
(queue the request on the worker's pipe; False when it cannot be sent),
`call_at(when, func, *args)` for its stall checks and `recall(handle)`
(ask the worker for what it has not started). The handles it schedules
are plain objects with `ready`, `accepting`, `alive`, `stopping`,
`inflight`, `seq` and a heartbeat `slot`.

A worker's window is how many requests it may hold that it has not
answered or deferred yet. A window above 1 lets a worker take several
requests in one read, which is most of the cost of tiny handlers; for
slow handlers it only makes requests wait behind each other. So the
window adapts: it holds about WINDOW_BUDGET seconds of work, between 1 and
MAX_WINDOW requests. Idle workers are always served first.

A request that waits in the window of a worker busy with a slow handler
is recalled: when the worker has started nothing new for STALL_AFTER
seconds while another worker could take work, it is asked to give back
what it has not started. A recalled request is either started by the
worker or given back, never both (the worker decides under a lock, see
worker.py); given back, it goes to the front of the queue.
"""

import collections as _collections
import time as _time

from . import pending as _pending
from .pending import PendingRequest

MAX_WINDOW = 8
START_WINDOW = 2
WINDOW_BUDGET = 0.0005
STALL_AFTER = 0.0025


def _live(item):
    """False for a pending request that ended while it waited."""
    return not (isinstance(item, PendingRequest) and item.done)


class PoolScheduler:
    """The queue and the window bookkeeping of one pool."""

    def __init__(self):
        self.queue = _collections.deque()
        self.idle = _collections.deque()      # handles holding nothing
        self.partial = _collections.deque()   # handles with room left
        self.window = START_WINDOW
        self.handles = []
        self.send = None          # set when the pool starts
        self.call_at = None
        self.recall = None
        self.on_backlog = None    # called when requests queue up
        self.on_taken = None      # called when a worker finished taking one
        self.clock = _time.monotonic

    def attach(self, handles, send, call_at, recall, on_backlog,
               on_taken=None):
        self.handles = handles
        self.send = send
        self.call_at = call_at
        self.recall = recall
        self.on_backlog = on_backlog
        self.on_taken = on_taken

    def __len__(self):
        return len(self.queue)

    # -- the queue ---------------------------------------------------------

    def enqueue(self, item):
        self.queue.append(item)
        if self.send is None:
            return  # not started yet: served once the workers are ready
        if self.idle or self.partial:
            self.dispatch()
        elif self.on_backlog is not None:
            self.on_backlog()

    def requeue_front(self, items):
        """Put `items` (in their order) before everything queued."""
        for item in reversed(items):
            if _live(item):
                if isinstance(item, PendingRequest):
                    _pending.returned(item)
                self.queue.appendleft(item)

    def drain(self):
        """Take every queued item out (the pool cannot serve them)."""
        items = list(self.queue)
        self.queue.clear()
        return items

    def dispatch(self):
        """Hand queued requests to workers with room in their window, idle
        workers first: a request waits behind a busy worker only when no
        worker is idle."""
        queue = self.queue
        idle = self.idle
        partial = self.partial
        window = self.window
        while queue and (idle or partial):
            item = queue.popleft()
            if not _live(item):
                continue
            handle = idle[0] if idle else partial[0]
            if not self.give(handle, item):
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

    def give(self, handle, item):
        seq = handle.seq + 1
        if not self.send(handle, seq, item):
            return False
        handle.seq = seq
        if isinstance(item, PendingRequest):
            _pending.sent(item, handle)
        inflight = handle.inflight
        inflight.append((seq, getattr(item, 'request_id', -1), item))
        if len(inflight) > 1 and not handle.stall_check:
            self.watch_stall(handle)  # it waits behind another request
        return True

    # -- which workers take work --------------------------------------------

    def eligible(self, handle):
        return (handle.ready and handle.accepting and handle.alive
                and not handle.stopping and not handle.stalled
                and handle.role != 'retiring'
                and len(handle.inflight) < self.window)

    def place(self, handle):
        """Put `handle` in the list matching its load (or in none)."""
        want = None
        if self.eligible(handle):
            want = self.partial if handle.inflight else self.idle
        if handle.waiting is want:
            return
        self.withdraw(handle)
        if want is not None:
            handle.waiting = want
            want.append(handle)

    def withdraw(self, handle):
        """Stop handing requests to `handle` (paused, dying, stopping)."""
        if handle.waiting is not None:
            try:
                handle.waiting.remove(handle)
            except ValueError:
                pass
            handle.waiting = None

    def offer(self, handle):
        """Make `handle` eligible again (ready, resumed)."""
        self.place(handle)
        if self.queue:
            self.dispatch()

    # -- a worker is done taking a request ------------------------------------

    def release(self, handle, request_id, give_credit=True):
        """The worker answered, deferred or streamed `request_id`: remove it
        from the in-flight list and give the credit back. Returns the
        queue item, or None."""
        inflight = handle.inflight
        if not inflight:
            return None
        entry = inflight[0]
        if entry[1] == request_id:
            inflight.popleft()
        else:
            for entry in inflight:
                if entry[1] == request_id:
                    inflight.remove(entry)
                    break
            else:
                return None
        handle.stalled = False  # it has moved on: it may take more
        handle.taken += 1
        if give_credit and not handle.stopping:
            self.released(handle)
        if self.on_taken is not None:
            self.on_taken(handle)
        return entry[2]

    def released(self, handle):
        if handle.waiting is not self.idle:
            self.place(handle)
        if self.queue:
            self.dispatch()

    @staticmethod
    def take(handle, seq):
        """Remove the in-flight entry with this seq; its item, or None."""
        for entry in handle.inflight:
            if entry[0] == seq:
                handle.inflight.remove(entry)
                return entry[2]
        return None

    def bounced(self, handle, seq):
        """The worker was paused when `seq` arrived: someone else takes it."""
        item = self.take(handle, seq)
        handle.stalled = False
        if item is not None:
            self.requeue_front([item])
        self.released(handle)

    def returned(self, handle, seqs):
        """The worker gave back requests it never started: they go back to
        the front of the queue, in their order, for any worker."""
        handle.recalled = False
        wanted = set(seqs)
        if not wanted:
            return
        items = [entry[2] for entry in handle.inflight if entry[0] in wanted]
        if not items:
            return
        kept = [entry for entry in handle.inflight if entry[0] not in wanted]
        handle.inflight.clear()
        handle.inflight.extend(kept)
        self.requeue_front(items)
        self.dispatch()  # to the other workers first
        if not handle.inflight:
            handle.stalled = False  # nothing left running: it may take more
        if not handle.stopping:
            self.released(handle)  # re-placed unless stalled

    # -- requests waiting behind a running handler ----------------------------

    def watch_stall(self, handle):
        """`handle` holds a request that waits behind another: check in
        STALL_AFTER seconds whether the worker has moved on."""
        handle.stall_check = True
        self.call_at(self.clock() + STALL_AFTER, self.check_stall, handle,
                     handle.pid, handle.slot.started())

    def check_stall(self, now, handle, pid, seen):
        """Recall what `handle` has not started if it started nothing since
        the check was set (`seen` was its started seq then) and another
        worker of the pool could take work now; check again while it holds
        requests it has not started."""
        if handle.pid != pid or not handle.alive:
            return  # a later process of the slot has checks of its own
        handle.stall_check = False
        inflight = handle.inflight
        if not inflight or handle.stopping:
            return
        started = handle.slot.started()
        if inflight[-1][0] <= started:
            return  # it has started everything it holds
        if (started == seen and not handle.recalled
                and handle.kill_reason is None and self.others_free(handle)):
            self.recall_now(handle)
        handle.stall_check = True
        self.call_at(now + STALL_AFTER, self.check_stall, handle, pid, started)

    def recall_now(self, handle):
        """Ask the worker for what it has not started (W_RETURNED answers);
        it takes no new requests until it releases one."""
        if self.recall(handle):
            handle.recalled = True
            handle.stalled = True
            handle.recalls += 1
            self.withdraw(handle)

    def others_free(self, handle):
        """True when another worker could take work now."""
        for waiting in (self.idle, self.partial):
            for other in waiting:
                if other is not handle:
                    return True
        return False

    # -- windows and deaths ------------------------------------------------------

    def update_window(self):
        """Size the window from the time the workers spent per request
        since the last update (read from their heartbeat slots). Fewer
        than 4 requests are too few to judge, unless they took longer than
        the window's budget each: what they did is kept for the next time."""
        busy = 0.0
        count = 0
        loads = []
        for handle in self.handles:
            if not handle.alive:
                continue
            now_busy, now_count = handle.slot.load()
            seen_busy, seen_count = handle.work_seen
            if now_count < seen_count:   # a new process in the slot
                handle.work_seen = (now_busy, now_count)
                continue
            busy += now_busy - seen_busy
            count += now_count - seen_count
            loads.append((handle, now_busy, now_count))
        if count < 4 and busy < 4 * WINDOW_BUDGET * MAX_WINDOW:
            return  # too little to judge: keep the window
        for handle, now_busy, now_count in loads:
            handle.work_seen = (now_busy, now_count)
        per_request = busy / count if count else busy
        if per_request <= 0:
            window = MAX_WINDOW
        else:
            window = max(1, min(MAX_WINDOW, int(WINDOW_BUDGET / per_request)))
        if window != self.window:
            self.window = window
            for handle in self.handles:
                self.place(handle)
            if self.queue:
                self.dispatch()

    @staticmethod
    def split_inflight(handle):
        """Victims of a dead worker (started or held requests, as
        (request_id, pending)) and the items it took but never started
        (they go to other workers)."""
        started = handle.slot.read()[2]
        victims = []
        requeue = []
        for seq, request_id, item in handle.inflight:
            if seq <= started:
                if isinstance(item, PendingRequest) and not item.done:
                    victims.append((request_id, item))
            elif _live(item):
                requeue.append(item)
        handle.inflight.clear()
        for request_id, item in handle.held.items():
            if isinstance(item, PendingRequest) and not item.done:
                victims.append((request_id, item))
        handle.held.clear()
        return victims, requeue

    def unstarted(self, handle):
        """How many requests `handle` holds that it has not started."""
        inflight = handle.inflight
        if not inflight or not handle.alive:
            return 0
        started = handle.slot.started()
        count = 0
        for entry in reversed(inflight):  # in seq order
            if entry[0] <= started:
                break
            if _live(entry[2]):
                count += 1
        return count

    @property
    def queue_size(self):
        """Requests not started yet: queued here or in a worker's window
        (not those that ended while they waited: they are skipped)."""
        return sum(1 for item in self.queue if _live(item)) + sum(
            self.unstarted(handle) for handle in self.handles)
