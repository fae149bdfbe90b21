"""The worker's backlog: messages read from its request pipe and not handled
yet, shared by the worker loop and its recall thread under one lock, so
that every request is either started by this worker or given back to the
dispatcher, never both.
"""

import collections as _collections
import threading as _threading
import time as _time

from . import channel as _channel
from . import messages as _msg


GONE_READ_INTERVAL = 0.05  # seconds between gone()'s reads of the pipe


def client_gone(runtime, request_id):
    """The runtime's Backlog.gone(request_id); False where it has none."""
    backlog = getattr(runtime, 'backlog', None)
    return backlog is not None and backlog.gone(request_id)


class Backlog:
    """The messages read from the request pipe and not handled yet, shared
    by the worker loop and its recall thread.

    One lock covers the pipe's FrameReader, the backlog and the claim of a
    request (writing its seq to the heartbeat slot as the started seq). The
    loop pops messages one at a time and claims a request as it pops it, if
    it is going to run it. On a recall, the recall thread reads what the
    pipe holds, takes every request left in the backlog (none of them was
    claimed) and, still holding the lock, sends W_RETURNED naming their
    seqs. So each request is claimed by the loop or returned, never both.

    Why a worker's death cannot make a request run twice: before it splits
    a dead worker's in-flight requests, the dispatcher reads every message
    the worker wrote; then it fails those whose seq is at most the slot's
    started seq (they were started) and requeues the others. Requests are
    claimed in seq order, and one popped but not claimed (bounced while
    paused) is announced by the loop before it pops the next, so every
    in-flight request at or below the started seq was started. A returned
    request was never claimed. If its W_RETURNED reached the pipe whole,
    the dispatcher drops it from the in-flight list before the split; if the
    worker died before or while writing it, the lock was held from the
    moment the requests were taken, so nothing after them was claimed: the
    started seq is still below every returned seq, and the split requeues
    them (it never fails them or lets a second copy run).
    """

    def __init__(self, reader, claim, send, beat=None):
        self.lock = _threading.Lock()
        self.reader = reader
        self._messages = _collections.deque()
        # request ids whose M_DISCONNECT (or M_WS_CLOSED) is in the backlog
        self._gone = set()
        self._claim = claim    # claim(seq, request_id): mark it started
        self._send = send      # send(message) to the dispatcher
        self._beat = beat      # beat(now): the heartbeat, from gone()
        self.loop_thread = None  # the worker loop's thread, once it runs
        self._gone_read_at = 0.0

    def __len__(self):
        return len(self._messages)

    def fill(self):
        """Read every complete message the pipe holds now into the backlog
        (ChannelError on a corrupt frame); True once the pipe is at EOF."""
        with self.lock:
            self._take(self.reader.read())
            return self.reader.eof

    def gone(self, request_id):
        """True when the pipe has said that the client of a stream or
        WebSocket left, though the loop has not handled that yet (a handler
        still writing to it: its M_DISCONNECT or M_WS_CLOSED waits here).
        Only the loop's thread reads the pipe for it, at most every
        GONE_READ_INTERVAL seconds; the loop handles what it read once the
        running callback returns.

        Each such read that finds the client still there also beats the
        heartbeat: a handler that streams in a loop to a client that
        reads (an export longer than stuck_timeout, its sends waiting
        only on the dispatcher's pace) is alive, not stuck; one that goes
        on sending to a client that left is not. One held back for a
        client that stopped reading is streamhold.py's to judge."""
        if self.loop_thread != _threading.get_ident():
            return False
        now = _time.monotonic()
        if now - self._gone_read_at < GONE_READ_INTERVAL:
            return request_id in self._gone
        self._gone_read_at = now
        with self.lock:
            try:
                self._take(self.reader.read())
            except _channel.ChannelError:
                pass  # the loop reads it again, reports it and stops
            gone = request_id in self._gone
        if not gone and self._beat is not None:
            self._beat(now)
        return gone

    def _take(self, messages):
        for message in messages:
            kind = message[0]
            if kind == _msg.M_DISCONNECT or kind == _msg.M_WS_CLOSED:
                self._gone.add(message[1])
        self._messages.extend(messages)

    def pop(self, accepting):
        """The next message, or None. A request is claimed as it is popped
        when `accepting` (it is going to run); else the caller bounces it.
        A request whose M_DISCONNECT follows it (the client left, or it
        timed out, while it waited here) is never started: it is bounced
        here, and the dispatcher drops it."""
        with self.lock:
            messages = self._messages
            while messages:
                message = messages.popleft()
                kind = message[0]
                if kind == _msg.M_REQUEST:
                    if message[2] in self._gone:
                        self._send((_msg.W_BOUNCE, message[2], message[1]))
                        continue
                    if accepting:
                        self._claim(message[1], message[2])
                elif kind == _msg.M_DISCONNECT or kind == _msg.M_WS_CLOSED:
                    self._gone.discard(message[1])
                return message
            return None

    def give_back(self):
        """Return every request not started yet: read what the pipe holds,
        take the requests out of the backlog and send W_RETURNED with their
        seqs, all under the lock. Control messages stay, in order. True when
        the loop has something to look at (control messages, EOF, a corrupt
        frame)."""
        with self.lock:
            look = False
            try:
                self._take(self.reader.read())
            except _channel.ChannelError:
                look = True  # the loop reads it again, reports it and stops
            seqs = []
            kept = _collections.deque()
            for message in self._messages:
                if message[0] == _msg.M_REQUEST:
                    seqs.append(message[1])
                else:
                    kept.append(message)
            self._messages = kept
            self._send((_msg.W_RETURNED, seqs))
            return look or self.reader.eof or bool(kept)
