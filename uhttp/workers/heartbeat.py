"""Shared-memory heartbeat slots, one per worker.

A worker writes into its slot instead of sending heartbeat messages: the
time it last showed life, how long it has spent in requests and how many
it ran, the time it last called keep_alive(), and the sequence number and
id of the request it is running. The dispatcher reads the slots when it
checks health; nothing crosses a pipe for it.

Layout (48 bytes): heartbeat d, busy seconds d, requests q, keepalive d,
started seq q, request id q. Each field has one writer (the worker); a
torn read is possible in theory, so readers double-check before acting.
"""

import mmap as _mmap
import struct as _struct
import time as _time

SLOT_SIZE = 48
NO_REQUEST = -(1 << 62)  # 'idle' marker for the request id field

_ALL = _struct.Struct('=ddqdqq')
_BEAT = _struct.Struct('=ddq')       # heartbeat, busy, requests at offset 0
_D = _struct.Struct('=d')
_QQ = _struct.Struct('=qq')
_Q = _struct.Struct('=q')
_KEEPALIVE = 24
_STARTED = 32
_REQUEST = 40


class SlotTable:
    """An anonymous shared mapping holding `count` slots (fork-inherited)."""

    def __init__(self, count):
        self.count = count
        self._map = _mmap.mmap(-1, max(1, count) * SLOT_SIZE)

    def slot(self, index):
        return Slot(self._map, index * SLOT_SIZE)

    def close(self):
        try:
            self._map.close()
        except (BufferError, ValueError):
            pass


class Slot:
    """One worker's view of its slot (also used by the dispatcher to read)."""

    __slots__ = ('_map', '_offset')

    def __init__(self, shared, offset):
        self._map = shared
        self._offset = offset

    def reset(self, now=None):
        now = _time.monotonic() if now is None else now
        _ALL.pack_into(self._map, self._offset, now, 0.0, 0, 0.0, 0, NO_REQUEST)

    def read(self):
        """(heartbeat, keepalive, started_seq, request_id)."""
        heartbeat, _, _, keepalive, started, request_id = _ALL.unpack_from(
            self._map, self._offset)
        return heartbeat, keepalive, started, request_id

    def started(self):
        """The sequence number of the last request the worker started."""
        return _Q.unpack_from(self._map, self._offset + _STARTED)[0]

    def load(self):
        """(busy seconds, requests run) since the worker started."""
        _, busy, count = _BEAT.unpack_from(self._map, self._offset)
        return busy, count

    def beat(self, now, busy=None, count=None):
        if busy is None:
            _D.pack_into(self._map, self._offset, now)
        else:
            _BEAT.pack_into(self._map, self._offset, now, busy, count)

    def keep_alive(self, now):
        _D.pack_into(self._map, self._offset, now)
        _D.pack_into(self._map, self._offset + _KEEPALIVE, now)

    def start(self, now, seq, request_id):
        _D.pack_into(self._map, self._offset, now)
        _QQ.pack_into(self._map, self._offset + _STARTED, seq, request_id)

    def idle(self):
        _Q.pack_into(self._map, self._offset + _REQUEST, NO_REQUEST)
