"""Spooled request bodies: the part of the connection glue that writes a
large body to its unnamed file as it arrives (the policy and the file are
spool.py's), so that the dispatcher never holds it whole.

A Content-Length body above the threshold is read straight from the
socket into one scratch buffer shared by every connection and written to
the file at once; a chunked body is decoded as usual and its data moves
to a file once it crosses the threshold. While a body spools, a client
that sends nothing for request_timeout seconds is timed out (a large body
may take long; a stalled one may not), and the file goes with the
request however it ends.
"""

import errno as _errno

import uhttp.server as _server

from .. import spool as _spool
from ..bodyview import SpooledBytes

SCRATCH_SIZE = 1 << 20   # bytes read from a socket per recv_into()
# a chunked body is read CHUNKED_READ bytes at a time, SMALL_CHUNKS_READ
# while the last read held a line (a chunk's size or end) per SMALL_CHUNK
# bytes or more: decoding a chunk costs a few microseconds, and a read of
# 1-byte chunks must not hold the loop for long (256 KiB reads instead of
# 1 MiB cost large chunks 10-15 % of their upload rate)
CHUNKED_READ = SCRATCH_SIZE
SMALL_CHUNKS_READ = 16 * 1024
SMALL_CHUNK = 1024
JOINED_WRITES = 16   # more decoded chunks than this go to the file joined
READ_BUDGET = 8 << 20    # bytes spooled per event before others get a turn
_scratch = []  # the buffer TLS bodies are read into, made on first use


def chunked_read_size(lines, read):
    """How much of a chunked body to read next, when the last read of
    `read` bytes (0: none yet) made its decoder go through `lines` lines."""
    if read and lines * SMALL_CHUNK <= read:
        return CHUNKED_READ
    return SMALL_CHUNKS_READ


def _scratch_buffer():
    if not _scratch:
        _scratch.append(memoryview(bytearray(SCRATCH_SIZE)))
    return _scratch[0]
_WOULDBLOCK = (_errno.EAGAIN, _errno.EWOULDBLOCK, _errno.ENOENT)
try:
    import ssl as _ssl
    _SSL_WANT = (_ssl.SSLWantReadError, _ssl.SSLWantWriteError)
except ImportError:  # pragma: no cover - Python without ssl
    _SSL_WANT = ()




class SpoolBody:
    """Mixin of Connection: spooling a request body to a file."""

    def __init__(self, *args, **kwargs):
        self._spool = None   # the Spool of the body arriving, if spooled
        super().__init__(*args, **kwargs)

    @property
    def spooling(self):
        """True while a body is being written to its spool file."""
        return self._spool is not None

    def _spool_progress(self):
        """When the body spooling last got bytes (time.time()), or None."""
        return self._last_activity if self._spool is not None else None

    def _spool_wanted(self, size):
        policy = getattr(self._server, 'spool', None)
        return policy is not None and policy.wants(size)

    def _storage_error(self, err):
        """The 507 for a body its spool file refused (`err`), told to the
        server first (the owner logs it: the client only sees a status)."""
        self._server.spool_refused(self, err)
        return _server.HttpErrorWithResponse(
            507, f"The request body cannot be stored: {err.strerror or err}")

    def _open_spool(self):
        try:
            self._spool = self._server.spool.open()
        except OSError as err:
            raise self._storage_error(err) from None

    def _spool_write(self, data):
        try:
            self._spool.write(data)
        except _spool.StorageError as err:
            raise self._storage_error(err) from None

    def _spool_data(self, length):
        """A Content-Length body that is spooled: move what the buffer
        holds of it to the file; once it is all there, it is loaded."""
        if self._spool is None:
            self._open_spool()
        buffer = self._buffer
        take = min(len(buffer), length - self._spool.size)
        if take:
            with memoryview(buffer) as view:
                self._spool_write(view[:take])
            del buffer[:take]
        if self._spool.size >= length:
            self._data = self._spool_finish()
            self._data_loaded = True

    def _spool_finish(self):
        """The spooled body as its view (a 507 when it cannot be had)."""
        try:
            body = self._spool.finish()
        except _spool.StorageError as err:
            raise self._storage_error(err) from None
        self._spool = None
        return body

    def _recv_to_buffer(self, size):
        if self._spool is not None and self._chunks is None:
            self._spool_recv()
            return
        chunks = self._chunks
        if chunks is None:
            super()._recv_to_buffer(size)
            return
        # (the decoder holds the body to its limit, and the buffer to what
        # it could not decode yet: at most a line)
        want = chunked_read_size(chunks.lines - chunks.lines_read,
                                 chunks.last_read)
        before = self._rx_bytes_counter
        super()._recv_to_buffer(len(self._buffer) + want)
        chunks.lines_read = chunks.lines
        chunks.last_read = self._rx_bytes_counter - before

    def _spool_recv(self):
        """Read body bytes from the socket straight into the file, up to
        its length and READ_BUDGET (then the loop comes back: over TLS
        bytes may wait inside the TLS layer, unseen by the selector)."""
        spool = self._spool
        left = self._content_length - spool.size
        budget = READ_BUDGET
        sock = self._socket
        pipe = None if self._server.is_secure else _spool.splice_pipe()
        while left > 0 and budget > 0:
            try:
                if pipe is not None:  # socket -> pipe -> file, in the kernel
                    got = self._spool_splice(sock, min(left, SCRATCH_SIZE),
                                             pipe)
                else:
                    scratch = _scratch_buffer()
                    got = sock.recv_into(scratch, min(left, SCRATCH_SIZE))
                    if got:
                        self._spool_write(scratch[:got])
            except OSError as err:
                if err.errno in _WOULDBLOCK or isinstance(err, _SSL_WANT):
                    return
                raise _server.HttpDisconnected(f"{err}: {self._addr}") from err
            if got is None:
                return
            if not got:
                raise _server.HttpDisconnected(
                    f"Lost connection from client {self._addr}")
            self._rx_bytes_counter += got
            left -= got
            budget -= got
            self.update_activity()
        if left > 0:
            self._server.schedule(self)

    def _spool_splice(self, sock, count, pipe):
        try:
            return self._spool.splice_from(sock.fileno(), count, pipe)
        except _spool.StorageError as err:
            raise self._storage_error(err) from None

    def _spool_chunks(self):
        """A chunked body: once its data crosses the threshold, it moves
        to a file, and so does every chunk after."""
        chunks = self._chunks
        if self._spool is None:
            if not self._spool_wanted(chunks.held):
                return
            self._open_spool()
        parts = chunks.take()
        if len(parts) > JOINED_WRITES:  # small chunks: one write for them all
            parts = [b''.join(parts)]
        for part in parts:
            self._spool_write(part)

    def _chunked_body(self):
        """The whole chunked body: bytes, its file, or None when empty."""
        if self._spool is None:
            return self._chunks.body() or None
        self._spool_chunks()
        return self._spool_finish()

    def _drop_spool(self):
        spool, self._spool = getattr(self, '_spool', None), None
        if spool is not None:
            spool.discard()

    def reset(self):
        self._drop_spool()
        super().reset()

    def close(self):
        self._drop_spool()
        super().close()
        # its file goes when nobody else holds it
        if isinstance(getattr(self, '_data', None), SpooledBytes):
            self._data = None
        if isinstance(getattr(self, '_value', None), SpooledBytes):
            self._value = None
