"""Large request bodies kept in memory, read straight into their own buffer.

A Content-Length body that is not spooled used to arrive as many recv()
results appended to the connection's buffer and then copied out of it
(every byte copied twice in user space, and each recv() of the rest of a
large body allocated and shrank a block of that size). A body above
INTO_MIN bytes is instead read into one bytearray of its exact length with
recv_into(): the kernel writes each byte once, where it stays until the
worker has it.

The buffer is made only once the client has sent INTO_START bytes of the
body (until then its bytes come the ordinary way, in reads of at most
INTO_START): a client that announces a large body and sends nothing holds
no more memory than before.
"""

import errno as _errno

import uhttp.server as _server

INTO_MIN = 128 * 1024    # bodies above this are read into their own buffer
INTO_START = 64 * 1024   # ... once this many of their bytes have come
_WOULDBLOCK = (_errno.EAGAIN, _errno.EWOULDBLOCK, _errno.ENOENT)


class BodyInto:
    """Mixin of Connection: a large in-memory body read into its buffer."""

    _into = None        # bytearray(Content-Length) while the body arrives
    _into_filled = 0    # how many of its bytes have come

    def _reading_large_body(self):
        length = self._content_length
        return (self._method is not None and length and length > INTO_MIN
                and self._spool is None and not self._data_loaded)

    def _recv_to_buffer(self, size):
        if not self._reading_large_body():
            super()._recv_to_buffer(size)
            return
        if self._into is None:
            # the ordinary way, in reads of at most INTO_START bytes
            super()._recv_to_buffer(
                min(size, len(self._buffer) + INTO_START))
            return
        self._recv_into()

    def _recv_into(self):
        into = self._into
        try:
            with memoryview(into) as view:
                got = self._socket.recv_into(view[self._into_filled:])
        except OSError as err:
            if err.errno in _WOULDBLOCK:
                return
            raise _server.HttpDisconnected(f"{err}: {self.addr}") from err
        if not got:
            raise _server.HttpDisconnected(
                f"Lost connection from client {self.addr}")
        self._into_filled += got
        self._rx_bytes_counter += got
        self.update_activity()

    def _take_large_body(self, length):
        """Part of _process_data(): True when the body is (or is being)
        read into its own buffer."""
        into = self._into
        if into is not None:
            if self._into_filled >= length:
                self._data = into
                self._into = None
                self._data_loaded = True
            return True
        buffer = self._buffer
        if length <= INTO_MIN or not INTO_START <= len(buffer) < length:
            return False
        into = self._into = bytearray(length)
        into[:len(buffer)] = buffer
        self._into_filled = len(buffer)
        self._buffer = bytearray()
        return True

    def reset(self):
        self._into = None
        super().reset()

    def close(self):
        self._into = None
        super().close()
