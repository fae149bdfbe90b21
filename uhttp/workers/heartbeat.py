"""Shared-memory heartbeat slots, one per worker.

A worker writes into its slot instead of sending heartbeat messages: the
time it last showed life, the time it last called keep_alive(), the
sequence number and id of the request it is running. The dispatcher reads
the slots when it checks health; nothing crosses a pipe for it.
"""

import mmap as _mmap
import struct as _struct
import time as _time

_SLOT = _struct.Struct('=ddqq')  # heartbeat, keepalive, started seq, request id
_D = _struct.Struct('=d')
_DD = _struct.Struct('=dd')
_QQ = _struct.Struct('=qq')
_Q = _struct.Struct('=q')
SLOT_SIZE = 32
NO_REQUEST = -(1 << 62)  # 'idle' marker for the request id field


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
        _SLOT.pack_into(self._map, self._offset, now, 0.0, 0, NO_REQUEST)

    def read(self):
        """(heartbeat, keepalive, started_seq, request_id)."""
        return _SLOT.unpack_from(self._map, self._offset)

    def beat(self, now):
        _D.pack_into(self._map, self._offset, now)

    def keep_alive(self, now):
        _DD.pack_into(self._map, self._offset, now, now)

    def start(self, now, seq, request_id):
        _D.pack_into(self._map, self._offset, now)
        _QQ.pack_into(self._map, self._offset + 16, seq, request_id)

    def idle(self):
        _Q.pack_into(self._map, self._offset + 24, NO_REQUEST)
