"""Holding a worker back while the client of one of its streams catches up.

A worker writes a stream (chunks, SSE events, NDJSON lines, WebSocket
messages) as fast as it can, and its client may read slower. Cutting the
stream at a buffer limit would lose a fast client's data to a burst;
buffering without bound would let one stream fill the dispatcher's
memory. Instead, once more than `max_send_buffer_size` bytes wait for a
client, the dispatcher stops reading that worker's pipe: the pipe fills,
the worker's next send waits in the kernel, and the stream goes at the
client's pace. Reading resumes once half of it is out.

A client that reads nothing for STALL_LIMIT seconds while it holds its
worker is dropped (the stream ends, its worker told as for any client
that left; a WebSocket closes with 1008 'slow reader'), so one stuck
client holds its worker back for about that long at most. A held worker
is not taken for stuck: it waits on the dispatcher, and is given its
stuck_timeout again once let go (its handler goes on streaming).
"""

from time import monotonic as _monotonic

STALL_LIMIT = 2.0     # seconds a held-for client may read nothing
CHECK_EVERY = 0.25    # how often a held-for client's progress is looked at


class StreamHold:
    def __init__(self, core):
        self.core = core
        self.held = {}    # handle -> {connection: (on_stall, args)}
        self.let_go = {}  # handle -> when it was last let go

    def can_hold(self, handle):
        """True for a local worker, whose pipe can be left unread; a remote
        one (over a broker) cannot be held, its clients are cut at the
        limit as before."""
        return getattr(handle, 'from_fd', None) is not None

    def sent(self, handle, connection, on_stall, *args):
        """Bytes of `handle`'s stream were queued on `connection`: hold the
        worker while more than the limit waits. `on_stall(*args)` drops
        the client if it stops reading."""
        limit = connection.max_send_buffer_size
        if connection.send_buffer_size <= limit or not connection.is_open:
            return
        waiting = self.held.get(handle)
        if waiting is None:
            waiting = self.held[handle] = {}
            self.core.loop.workers.hold(handle.from_fd, True)
        if connection in waiting:
            return
        waiting[connection] = (on_stall, args)
        connection.when_drained(limit // 2, lambda done: self.release(
            handle, done))
        self.core.loop.call_at(self.core.now() + CHECK_EVERY, self.check,
                               handle, connection)

    def release(self, handle, connection):
        waiting = self.held.get(handle)
        if waiting is None or waiting.pop(connection, None) is None:
            return
        if not waiting:
            del self.held[handle]
            self.let_go[handle] = _monotonic()
            if handle.from_fd is not None:
                self.core.loop.workers.hold(handle.from_fd, False)

    def check(self, now, handle, connection):
        waiting = self.held.get(handle)
        if waiting is None or connection not in waiting:
            return
        if connection.is_open and not connection.stalled(_monotonic(),
                                                         STALL_LIMIT):
            self.core.loop.call_at(now + CHECK_EVERY, self.check, handle,
                                   connection)
            return
        on_stall, args = waiting[connection]
        self.release(handle, connection)
        on_stall(*args)

    def holds(self, handle, since=None):
        """True while `handle` is held, or if it was let go after `since`."""
        if handle in self.held:
            return True
        return since is not None and self.let_go.get(handle, since) > since

    def forget(self, handle):
        """`handle`'s process is gone (its pipe unregistered): a new
        process in the slot starts unheld."""
        self.held.pop(handle, None)
        self.let_go.pop(handle, None)
