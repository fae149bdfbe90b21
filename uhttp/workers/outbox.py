"""What a remote worker has to send, waiting for its broker.

The worker's threads put entries here (answers, stream chunks, logs); the
link's sender (remoteworker.py) takes them in batches and writes them to
Redis. Each entry is numbered per stream as it is put, so that a write
retried after a broken connection is recognised by its reader.

While the broker takes what is written, a full outbox holds the thread
that puts (a handler writing a stream in a loop goes at the broker's
pace, as a local worker goes at its pipe's): nothing is dropped. While the
broker cannot be reached, the oldest entries give way to new ones past
LIMIT entries or BYTES_LIMIT bytes, counted in `dropped`.
"""

import collections as _collections
import itertools as _itertools
import threading as _threading
import time as _time

from . import broker as _broker

LIMIT = 100_000           # entries kept while the broker is down
BYTES_LIMIT = 64 << 20    # bytes queued beyond which a putter waits (or,
#                           while the broker is down, the oldest go)
WAIT_STEP = 0.25          # how often a waiting putter shows it is alive


class Outbox:
    """Entries (stream, fields, requeue) in the order they were put."""

    def __init__(self, name, on_wait=None):
        self.name = name              # the worker's name, in every entry
        self.on_wait = on_wait        # on_wait(now) while a putter waits
        self.cond = _threading.Condition()
        self.items = _collections.deque()
        self.numbers = {}             # stream -> entries numbered so far
        self.size = 0                 # bytes of the entries' messages
        self.flowing = True           # the broker took the last write
        self.dropped = 0              # entries dropped: full, broker down

    def __len__(self):
        return len(self.items)

    def put(self, stream, message, wait=True):
        """Number and queue `message` for `stream`; with `wait`, once the
        outbox is full, wait while the broker drains it (the sender itself
        must not wait for itself)."""
        with self.cond:
            if wait:
                self._wait_for_room()
            if len(self.items) >= LIMIT:
                self._drop_oldest()
            self._append(stream, self._encode(stream, message), None)
            while (not self.flowing and self.size > BYTES_LIMIT
                   and len(self.items) > 1):
                self._drop_oldest()

    def put_requeue(self, stream, message, requeue):
        """A request put back, with its bounce notice (never dropped)."""
        with self.cond:
            self._append(stream, self._encode(stream, message), requeue)

    def put_notices(self, streams, fields):
        """The same unnumbered notice to each stream, unless full."""
        with self.cond:
            if len(self.items) < LIMIT:
                for stream in streams:
                    self._append(stream, fields, None)

    def take(self, count, timeout=1.0):
        """The first `count` entries (left queued until `done()`), after
        waiting for one if there is none."""
        with self.cond:
            while not self.items:
                self.cond.wait(timeout)
            return list(_itertools.islice(self.items, count))

    def done(self, batch, flowing=True):
        """`batch` was written (those still first are let go)."""
        with self.cond:
            for item in batch:  # (unless dropped meanwhile)
                if self.items and self.items[0] is item:
                    self.items.popleft()
                    self.size -= _length(item)
            self.flowing = flowing
            self.cond.notify_all()

    def stalled(self):
        """The broker could not be reached: waiting putters drop instead."""
        with self.cond:
            if self.flowing:
                self.flowing = False
                self.cond.notify_all()

    def wait_empty(self, seconds):
        deadline = _time.monotonic() + seconds
        with self.cond:
            while self.items and _time.monotonic() < deadline:
                self.cond.wait(0.05)

    def _wait_for_room(self):
        while self.flowing and self.items and (
                len(self.items) >= LIMIT or self.size >= BYTES_LIMIT):
            self.cond.wait(WAIT_STEP)
            if self.on_wait is not None:
                self.on_wait(_time.monotonic())

    def _drop_oldest(self):
        self.size -= _length(self.items.popleft())
        self.dropped += 1

    def _encode(self, stream, message):
        number = self.numbers.get(stream, 0) + 1
        self.numbers[stream] = number
        return _broker.encode_reply(self.name, number, message)

    def _append(self, stream, fields, requeue):
        item = (stream, fields, requeue)
        self.items.append(item)
        self.size += _length(item)
        self.cond.notify_all()


def _length(item):
    return len(item[1].get('m') or b'')
