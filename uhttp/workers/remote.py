"""The dispatcher's view of a remote pool: its workers and its queue.

Pure bookkeeping, no I/O. A remote worker is known by the name it reads
the pool's stream under (`host:pid:token`); the dispatcher learns of it from its
heartbeats (the roster), from the requests it starts and from its
messages. A `RemoteHandle` stands for it where the dispatcher's parts
expect a worker handle (the relay, the pending table, `Core.end()`).
"""

import collections as _collections

from . import heartbeat as _heartbeat
from . import messages as _msg
from . import pending as _pending
from .pending import PendingRequest
from .policy import SlotRecord

# where a message kind keeps the time its worker started the request: that
# time is on another host's clock, so the dispatcher puts its own there
_STARTED_AT = {_msg.W_RESPONSE: 8, _msg.W_FILE_RESPONSE: 6,
               _msg.W_STREAM_START: 6, _msg.W_DEFERRED: 3}
# messages that end or release a request (their id is item 1)
ANSWERS = frozenset((_msg.W_RESPONSE, _msg.W_FILE_RESPONSE))
# a heartbeat this long (server ms) after a START notice that says the worker
# never got that request: its START reply was lost, nobody runs it
LOST_AFTER_MS = 1000


def with_local_start(message, started):
    """`message` with the dispatcher's time of its request's start."""
    index = _STARTED_AT.get(message[0])
    if index is None or len(message) <= index or started is None:
        return message
    return message[:index] + (started,) + message[index + 1:]


def split_name(name):
    """(host, pid) from a remote worker's name `host:pid:token`."""
    parts = name.rsplit(':', 2)
    if len(parts) == 3 and parts[1].isdigit():
        return parts[0], int(parts[1])
    return name, None


class RemoteSlot:
    """What a heartbeat slot tells of a remote worker, in the dispatcher's
    clock: (heartbeat, keepalive, started seq, request id)."""

    __slots__ = ('heartbeat', 'keepalive', 'request_id')

    def __init__(self, now):
        self.heartbeat = now
        self.keepalive = 0.0
        self.request_id = _heartbeat.NO_REQUEST

    def read(self):
        return self.heartbeat, self.keepalive, 0, self.request_id

    @staticmethod
    def started():
        return 0

    @staticmethod
    def load():
        return 0.0, 0


class RemoteOut:
    """A remote worker's 'pipe': frames for it go to its control stream."""

    __slots__ = ('send', 'worker', 'closed')

    def __init__(self, send, worker):
        self.send = send        # send(worker, frame), from the loop
        self.worker = worker
        self.closed = False

    def add(self, frame):
        if not self.closed:
            self.send(self.worker, frame)

    add_parts = None

    @staticmethod
    def flush():
        return True

    def clear(self):
        pass

    def __len__(self):
        return 0


class RemoteHandle:
    """A remote worker, as the dispatcher's parts see a worker."""

    remote = True
    role = 'active'
    writing = False
    parked = False
    stopping = False
    retiring = False
    kill_reason = None
    restart_at = None
    replaces = None
    replaced_by = None
    retire_reason = None
    left = False          # it ended as its command asked (not a death)

    def __init__(self, pool, worker, index, now, send):
        self.pool = pool
        self.worker = worker          # its name in the consumer group
        self.index = index
        self.host, self.pid = split_name(worker)
        self.slot_index = None        # its number in its worker command
        self.slot = RemoteSlot(now)
        self.out = RemoteOut(send, worker)
        self.alive = True
        self.ready = False
        self.accepting = True
        self.started_at = now
        self.started = {}             # request_id -> pending: started, running
        self.held = {}                # request_id -> pending: deferred, streaming
        self.start_ms = {}            # request_id -> its START notice (server ms)
        self.last_number = 0          # its last answer entry's number
        self.taken = 0
        self.routes = ()
        self.record = SlotRecord()    # record.restarts: deaths seen
        self.info = {}

    @property
    def name(self):
        return f"{self.pool.name}@{self.worker}"

    @property
    def inflight(self):
        return self.started

    def take_file(self, request_id):  # remote workers send bytes, never fds
        del request_id

    def status(self, now):
        heartbeat, _, _, request_id = self.slot.read()
        return {
            'id': self.index,
            'pid': self.pid,
            'host': self.host,
            'remote': True,
            'worker': self.worker,
            'slot': self.slot_index,
            'alive': self.alive,
            'ready': self.ready,
            'parked': False,
            'accepting': self.accepting,
            'last_seen': round(max(0.0, now - heartbeat), 3),
            'current_request': (None if request_id == _heartbeat.NO_REQUEST
                                else request_id),
            'held': len(self.held),
            'queued': 0,
            'retiring': None,
            'replacement': False,
            'stalled': False,
            'recalls': 0,
            'restarts': self.record.restarts,
            'restart_in': None,
        }


class RemoteScheduler:
    """A remote pool's 'scheduler': requests are sent to the pool's
    stream (by `submit(item)`); this keeps those not started yet, in
    order, and which worker started which."""

    window = 1

    def __init__(self):
        self.queued = _collections.OrderedDict()  # request_id -> item
        self.submit = None        # the link's submit(item), once started
        self.refuse = None        # refuse(item): answer it 503 now
        self.cancel = None        # cancel(request_ids): they must never start

    def __len__(self):
        return len(self.queued)

    @property
    def queue_size(self):
        return len(self.queued)

    def enqueue(self, item):
        request_id = getattr(item, 'request_id', -1)
        if isinstance(item, PendingRequest):
            self.queued[request_id] = item
        if self.submit is None or not self.submit(item):
            if isinstance(item, PendingRequest):
                self.queued.pop(request_id, None)
                if self.refuse is not None:
                    self.refuse(item)

    def started(self, handle, request_id):
        """`handle` started `request_id`: the pending request, or None when
        it is not ours or has ended."""
        item = self.queued.pop(request_id, None)
        if item is None or item.done:
            return None
        _pending.sent(item, handle)
        handle.started[request_id] = item
        return item

    def release(self, handle, request_id, give_credit=True):
        del give_credit
        item = handle.started.pop(request_id, None)
        if item is not None:
            handle.taken += 1
        return item

    def bounced(self, handle, request_id):
        """The worker was paused: it put the request back on the stream."""
        item = handle.started.pop(request_id, None)
        if item is not None and not item.done:
            _pending.returned(item)
            self.queued[request_id] = item

    def victims(self, handle):
        """A dead worker's started and held requests (request_id, pending)."""
        victims = [(request_id, item) for request_id, item
                   in list(handle.started.items()) + list(handle.held.items())
                   if not item.done]
        handle.started.clear()
        handle.held.clear()
        return victims

    def take(self, request_ids, cancel=True):
        """The queued items with these ids, to be answered by the caller;
        cancelled, since they may have been sent (`cancel=False`: the
        broker refused them, they are not in its stream)."""
        items = []
        for request_id in request_ids:
            item = self.queued.pop(request_id, None)
            if item is not None and not item.done:
                items.append(item)
        if cancel:
            self.cancelled(request_ids)
        return items

    def ended(self, request_id):
        """A request that ended before any worker started it (504, the
        client left): cancelled now, not at the next prune()."""
        if self.queued.pop(request_id, None) is not None:
            self.cancelled([request_id])

    def drain(self):
        """Every request not started, taken out (and cancelled: the
        caller answers them)."""
        items = [item for item in self.queued.values() if not item.done]
        self.cancelled(list(self.queued))
        self.queued.clear()
        return items

    def prune(self):
        """Forget (and cancel) queued requests that ended while they
        waited (504, the client left)."""
        ended = [key for key, item in self.queued.items() if item.done]
        for request_id in ended:
            del self.queued[request_id]
        self.cancelled(ended)

    def cancelled(self, request_ids):
        if request_ids and self.cancel is not None:
            self.cancel(request_ids)

    # the local scheduler's verbs that mean nothing here
    def unstarted(self, handle):
        return 0

    def update_window(self):
        pass

    def withdraw(self, handle):
        pass

    def offer(self, handle):
        pass

    def place(self, handle):
        pass

    def returned(self, handle, seqs):
        pass

    def requeue_front(self, items):
        for item in items:
            self.enqueue(item)


class Roster:
    """Which remote workers live, judged from their heartbeats: a worker
    whose last sign of life is older than `stuck_timeout` is dead."""

    def __init__(self, pool, send):
        self.pool = pool
        self.send = send
        self.handles = {}         # worker name -> RemoteHandle
        self._next_index = 0
        self.lost = []            # (handle, request_id, pending): see lost_starts

    def __len__(self):
        return len(self.handles)

    @property
    def alive_count(self):
        return sum(1 for handle in self.handles.values() if handle.alive)

    def get(self, worker, now):
        """The handle of `worker`, made on first sight."""
        handle = self.handles.get(worker)
        if handle is None:
            handle = RemoteHandle(self.pool, worker, self._next_index, now,
                                  self.send)
            self._next_index += 1
            self.handles[worker] = handle
        return handle

    def beats(self, now, server_ms, beats, info, connected=None):
        """Apply one reading of the roster: `beats` maps a worker to its
        last sign of life (server ms); `connected` (if known) names the
        workers connected to the broker now. Returns (revived, dead)
        handles: dead are those silent for stuck_timeout, and those silent
        for two heartbeats whose connection has closed (killed)."""
        limit = self.pool.stuck_timeout
        quick = min(limit, max(2 * self.pool.heartbeat_interval, 1.0))
        revived = []
        dead = []
        for worker, last in beats.items():
            age = max(0.0, (server_ms - last) / 1000.0)
            handle = self.handles.get(worker)
            if handle is None:
                if age > limit:
                    continue  # long gone: not worth listing
                handle = self.get(worker, now)
                handle.slot.heartbeat = now - age
            else:  # (forward only: a Redis restored from a snapshot has
                # old scores, and grace() pardoned the time it was down)
                handle.slot.heartbeat = max(handle.slot.heartbeat, now - age)
                age = now - handle.slot.heartbeat
            told = info.get(worker) or {}
            self.apply_info(handle, told, now)
            self.lost_starts(handle, told, last)
            gone = (connected is not None and worker not in connected
                    and age > quick)
            if age > limit or gone:
                if handle.alive:
                    dead.append(handle)
            elif not handle.alive:
                handle.alive = True
                revived.append(handle)
        for handle in self.handles.values():
            if (handle.worker not in beats and handle.alive
                    and now - handle.slot.heartbeat > limit):
                dead.append(handle)
        return revived, dead

    @staticmethod
    def apply_info(handle, info, now):
        handle.info = info
        if 'slot' in info:
            handle.slot_index = info['slot']
        if 'host' in info:
            handle.host = info['host']
        request_id = info.get('request')
        handle.slot.request_id = (_heartbeat.NO_REQUEST if request_id is None
                                  else request_id)
        keepalive_age = info.get('keepalive_age')
        if keepalive_age is not None:  # (a prompt notice may be newer)
            handle.slot.keepalive = max(handle.slot.keepalive,
                                        now - keepalive_age)
        if 'accepting' in info:
            handle.accepting = info['accepting']
        if info.get('ready'):  # (its W_READY went to an earlier dispatcher)
            handle.ready = True

    def lost_starts(self, handle, info, last):
        """Requests `handle` started (in Redis) and never got: a heartbeat
        written well after their START notice (both by the server's clock),
        while no START was under way, names neither as run nor as received
        (a worker that predates 'recent' is never judged so)."""
        recent = info.get('recent')
        for request_id in list(handle.start_ms):
            if request_id not in handle.started or request_id in handle.held:
                del handle.start_ms[request_id]
        if recent is None or info.get('taking') or not handle.alive:
            return
        for request_id, started_ms in list(handle.start_ms.items()):
            if (last > started_ms + LOST_AFTER_MS
                    and info.get('request') != request_id
                    and request_id not in recent):
                del handle.start_ms[request_id]
                pending = handle.started.pop(request_id)
                if not pending.done:
                    self.lost.append((handle, request_id, pending))

    def take_lost(self):
        lost, self.lost = self.lost, []
        return lost

    def grace(self, now):
        """After the broker was unreachable: nobody is judged on the time
        it could not be heard."""
        for handle in self.handles.values():
            if handle.alive:
                handle.slot.heartbeat = max(handle.slot.heartbeat, now)

    def died(self, handle):
        handle.alive = False
        handle.left = False
        handle.ready = False
        handle.record.restarts += 1
        handle.slot.request_id = _heartbeat.NO_REQUEST

    def forget_dead(self, keep=64):
        """Keep at most `keep` dead workers listed."""
        dead = [name for name, handle in self.handles.items()
                if not handle.alive]
        for name in dead[:max(0, len(dead) - keep)]:
            del self.handles[name]
