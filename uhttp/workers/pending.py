"""The pending table: requests handed to pools and not finished yet.

Pure bookkeeping, no I/O. A pending request moves through explicit states:

    QUEUED ──► SENT ──► HELD (the worker deferred it) ──► DONE
      ▲          │  └──► STREAMING ─────────────────────►  ▲
      └──────────┘ (handed back unstarted)      finish() ──┘

`PendingTable.finish(pending, reason)` is where a request ends: it leaves
the table, its deadline and the stream count, exactly once, and finish()
says whether this call ended it, so the caller (the dispatcher's one
`end()`) runs the hooks and tells the worker exactly once. Deadlines are kept per pool
in arrival order, which is deadline order (one timeout per pool), so the
next one is found without a scan.
"""

import collections as _collections
import time as _time

PENDING_COMPLETED = 'completed'
PENDING_TIMEOUT = 'timeout'
PENDING_DISCONNECTED = 'disconnected'
PENDING_STREAM_CLOSED = 'stream_closed'
PENDING_SHUTDOWN = 'shutdown'
PENDING_WORKER_DIED = 'worker_died'

QUEUED = 'queued'
SENT = 'sent'
HELD = 'held'
STREAMING = 'streaming'
DONE = 'done'

_monotonic = _time.monotonic


class _PendingRequest:
    """A request that was handed to a pool and not finished yet.

    `client` is the connection, `pool` the pool; `worker_id` the index of
    the worker holding it (None while queued); `state` one of the states
    above.
    """

    __slots__ = ('request_id', 'client', 'pool', 'worker', 'state',
                 'deadline', 'accepted', 'context', 'method', 'reason',
                 'path', 'route', 'started', 'status', 'size', 'head_at',
                 'remote', 'query')

    def __init__(self, request_id, client, pool, now):
        self.request_id = request_id
        self.client = client
        self.pool = pool
        self.worker = None
        self.state = QUEUED
        self.accepted = now
        self.deadline = now + pool.timeout
        self.context = None
        self.method = client.method
        self.reason = None       # the PENDING_* reason it ended with
        # for metrics and the access log: the path asked for, the route
        # index the worker matched and when it started the request, the
        # status and body size the client got, when a stream's head went
        self.path = None
        self.route = None
        self.started = None
        self.status = None
        self.size = None
        self.head_at = None
        self.remote = None       # the client's address, behind trusted proxies
        self.query = None        # the query string it was sent with

    @property
    def done(self):
        return self.state == DONE

    @property
    def streaming(self):
        return self.state == STREAMING

    @property
    def worker_id(self):
        return None if self.worker is None else self.worker.index

    @property
    def timestamp(self):
        """Wall-clock time (time.time()) the request was accepted."""
        return _time.time() - (_monotonic() - self.accepted)

    def __repr__(self):
        return (f"<_PendingRequest {self.request_id} {self.method} "
                f"pool={self.pool.name} worker={self.worker_id} "
                f"{self.state}>")


PendingRequest = _PendingRequest


# -- transitions that touch the request only ----------------------------------

def sent(pending, worker):
    """Given to `worker` (from the queue)."""
    if pending.state == QUEUED:
        pending.state = SENT
        pending.worker = worker


def returned(pending):
    """Handed back by a worker that never started it: queued again."""
    if pending.state == SENT:
        pending.state = QUEUED
        pending.worker = None


def held(pending):
    """The worker deferred it: it answers later."""
    if pending.state == SENT:
        pending.state = HELD


def first_request_id(remote):
    """The id a dispatcher's first request gets: 1, or, with a remote pool
    (whose workers may still hold a previous run's deferred requests and
    streams, or a second dispatcher's during a hot upgrade), a number
    taken from the clock, microseconds since 2026, so that a later run
    starts above every id an earlier one reached (unless it opened more
    than a million requests a second)."""
    if not remote:
        return 1
    return max(1, int((_time.time() - EPOCH_2026) * 1_000_000))


EPOCH_2026 = 1767225600  # 2026-01-01T00:00:00Z


class PendingTable:
    """Every pending request by id, the open-stream count, the deadlines."""

    def __init__(self, first_id=1):
        self.requests = {}       # request_id -> _PendingRequest
        self.streams = 0
        self._first_id = first_id
        self._last_id = first_id - 1
        self._deadlines = {}     # pool -> OrderedDict(request_id -> pending)

    def __len__(self):
        return len(self.requests)

    def __contains__(self, request_id):
        return request_id in self.requests

    def get(self, request_id):
        return self.requests.get(request_id)

    @property
    def opened(self):
        """How many requests were opened so far."""
        return self._last_id - self._first_id + 1

    @property
    def waiting(self):
        """Requests waiting for an answer (open streams do not count)."""
        return len(self.requests) - self.streams

    # -- transitions -------------------------------------------------------

    def open(self, client, pool, now):
        """A new request for `pool`: QUEUED, with its deadline."""
        self._last_id += 1
        pending = _PendingRequest(self._last_id, client, pool, now)
        self.requests[pending.request_id] = pending
        self._pool_deadlines(pool)[pending.request_id] = pending
        return pending

    def stream_started(self, pending):
        """The worker started a stream: no deadline from now on."""
        if pending.state != SENT and pending.state != HELD:
            return False
        pending.state = STREAMING
        self.streams += 1
        self._drop_deadline(pending)
        return True

    def finish(self, pending, reason):
        """End `pending` with `reason` (a PENDING_* value, kept on it);
        False when it had ended already. The only place a request leaves
        the table."""
        if pending.state == DONE:
            return False
        if pending.state == STREAMING:
            self.streams -= 1
        pending.state = DONE
        pending.reason = reason
        self.requests.pop(pending.request_id, None)
        self._drop_deadline(pending)
        return True

    # -- deadlines ---------------------------------------------------------

    def _pool_deadlines(self, pool):
        deadlines = self._deadlines.get(pool)
        if deadlines is None:
            deadlines = self._deadlines[pool] = _collections.OrderedDict()
        return deadlines

    def _drop_deadline(self, pending):
        deadlines = self._deadlines.get(pending.pool)
        if deadlines:
            deadlines.pop(pending.request_id, None)

    def next_deadline(self):
        """The earliest deadline of any pool, or None."""
        first = None
        for deadlines in self._deadlines.values():
            if deadlines:
                when = next(iter(deadlines.values())).deadline
                if first is None or when < first:
                    first = when
        return first

    def pop_due(self, pool, now):
        """The next request of `pool` whose deadline has passed (taken off
        the deadline list), or None."""
        deadlines = self._deadlines.get(pool)
        while deadlines:
            pending = next(iter(deadlines.values()))
            if pending.deadline > now:
                return None
            deadlines.popitem(last=False)
            if pending.state != DONE:
                return pending
        return None

    def extend(self, pending, deadline):
        """Give `pending` (taken by pop_due) a later deadline: back in
        order, walking from the end (an extension is rarely far back);
        one farther back than a few dozen sorts the pool's list once
        (nearly sorted: about one pass), so no due request is ever
        hidden behind one that is not."""
        pending.deadline = deadline
        deadlines = self._pool_deadlines(pending.pool)
        deadlines[pending.request_id] = pending
        later = []
        for other_id in reversed(deadlines):
            if other_id == pending.request_id:
                continue
            if deadlines[other_id].deadline <= deadline:
                break
            later.append(other_id)
            if len(later) > 64:
                self._deadlines[pending.pool] = _collections.OrderedDict(
                    sorted(deadlines.items(),
                           key=lambda item: item[1].deadline))
                return
        for other_id in reversed(later):
            deadlines.move_to_end(other_id)
