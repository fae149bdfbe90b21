"""permessage-deflate with a bound on inflating, for the dispatcher.

wsproto's PerMessageDeflate inflates each frame's payload whole: a client
could send a few kilobytes that inflate to gigabytes, and the dispatcher
(which never blocks) would spend seconds and memory on it before any size
check. `BoundedDeflate` keeps wsproto's negotiation and its outbound
compression and does the inbound side itself, asking zlib for at most the
room left under the message size limit; beyond it the message is refused
with 1009 (Message Too Big) before more is inflated.
"""

import zlib as _zlib

from wsproto.extensions import PerMessageDeflate as _Deflate
from wsproto.frame_protocol import CloseReason as _CloseReason
from wsproto.frame_protocol import Opcode as _Opcode
from wsproto.frame_protocol import RsvBits as _RsvBits

_DATA = (_Opcode.TEXT, _Opcode.BINARY, _Opcode.CONTINUATION)
_TAIL = b'\x00\x00\xff\xff'   # RFC 7692 7.2.2: appended before inflating


class BoundedDeflate(_Deflate):
    """permessage-deflate whose inflated messages stop at `limit` bytes."""

    def __init__(self, limit):
        super().__init__()
        self.limit = limit
        self.inflater = None
        self.message_compressed = None  # None between messages
        self.frame_is_data = False
        self.inflated = 0

    def frame_inbound_header(self, proto, opcode, rsv, payload_length):
        if rsv.rsv1 and (opcode.iscontrol() or opcode is _Opcode.CONTINUATION):
            return _CloseReason.PROTOCOL_ERROR
        self.frame_is_data = opcode in _DATA
        if self.frame_is_data and self.message_compressed is None:
            self.message_compressed = rsv.rsv1
            self.inflated = 0
            if rsv.rsv1 and self.inflater is None:
                self.inflater = _zlib.decompressobj(-self.client_max_window_bits)
        return _RsvBits(True, False, False)

    def inflate(self, data):
        try:
            out = self.inflater.decompress(data, self.limit - self.inflated + 1)
        except _zlib.error:
            return _CloseReason.INVALID_FRAME_PAYLOAD_DATA
        self.inflated += len(out)
        if self.inflated > self.limit or self.inflater.unconsumed_tail:
            self.inflater = None  # the connection is closing
            return _CloseReason.MESSAGE_TOO_BIG
        return out

    def frame_inbound_payload_data(self, proto, data):
        if not (self.frame_is_data and self.message_compressed):
            return data
        return self.inflate(bytes(data))

    def frame_inbound_complete(self, proto, fin):
        if not (fin and self.frame_is_data):
            return None
        compressed, self.message_compressed = self.message_compressed, None
        if not compressed:
            return None
        out = self.inflate(_TAIL)
        if self.client_no_context_takeover and not isinstance(
                out, _CloseReason):
            self.inflater = None
        return out
