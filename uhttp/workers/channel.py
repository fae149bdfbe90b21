"""Pipes between the dispatcher and each worker, and their framing.

Each worker has a pipe pair of its own: nothing is shared between workers,
so a worker killed mid-write can corrupt only its own pipe, which dies with
it. A frame is a 4-byte big-endian length and a pickle of a message tuple.
The dispatcher's ends are non-blocking and buffered (it never waits on a
worker); a worker's ends are plain blocking file descriptors.
"""

import errno as _errno
import fcntl as _fcntl
import os as _os
import pickle as _pickle
import struct as _struct
from collections import deque as _deque

from . import pipelend as _pipelend

_LEND_MIN = _pipelend.LEND_MIN

_HEADER = _struct.Struct('>I')
_HEADER_SIZE = _HEADER.size
_pack_header = _HEADER.pack
_unpack_header = _HEADER.unpack_from
_dumps = _pickle.dumps
_loads = _pickle.loads
_PROTOCOL = _pickle.HIGHEST_PROTOCOL

MAX_FRAME = 0xFFFFFFFF
READ_SIZE = 1 << 20
# the first read of a turn: small enough that its buffer comes from the
# heap (a 1 MiB read maps and unmaps memory on every call, three system
# calls and page faults for a frame of a few hundred bytes); a read that
# fills it goes on with READ_SIZE
FIRST_READ = 1 << 16
PIPE_SIZE = 1 << 20
_JOIN_MAX = 16 * 1024  # queued parts smaller than this are joined
_IOV_MAX = 512          # buffers per writev()
_F_SETPIPE_SZ = getattr(_fcntl, 'F_SETPIPE_SZ', 1031)


# A tail frame: after the length, a mark byte (a pickle starts with 0x80),
# the index of the body in the message and the pickle's length; then the
# pickle of the message with None at that index, then the body's bytes.
TAIL_MIN = 64 * 1024
_TAIL_MARK = 0
_TAIL_HEAD = _struct.Struct('>BBI')
_TAIL_HEAD_SIZE = _TAIL_HEAD.size
_TAIL_TYPES = (bytes, bytearray)


class ChannelError(Exception):
    """A frame that cannot be encoded or decoded."""


def pack(message):
    """Encode one message tuple as a frame (bytes)."""
    payload = _dumps(message, _PROTOCOL)
    if len(payload) > MAX_FRAME:
        raise ChannelError(f"message of {len(payload)} bytes is too large")
    return _pack_header(len(payload)) + payload


def pack_parts(message, tail=None):
    """Encode one message as a tuple of buffers to write one after the
    other (never joined: a large payload is not copied into a frame).

    `tail` is the index of a body in the message: when it is bytes or a
    bytearray of TAIL_MIN bytes or more, it goes after the pickle as it is
    (a tail frame) instead of being copied into it.
    """
    body = message[tail] if tail is not None else None
    if type(body) in _TAIL_TYPES and len(body) >= TAIL_MIN:
        payload = _dumps(message[:tail] + (None,) + message[tail + 1:],
                         _PROTOCOL)
        size = _TAIL_HEAD_SIZE + len(payload) + len(body)
        if size > MAX_FRAME:
            raise ChannelError(f"message of {size} bytes is too large")
        return (_pack_header(size) + _TAIL_HEAD.pack(
            _TAIL_MARK, tail, len(payload)), payload, body)
    payload = _dumps(message, _PROTOCOL)
    if len(payload) > MAX_FRAME:
        raise ChannelError(f"message of {len(payload)} bytes is too large")
    return _pack_header(len(payload)), payload


def pack_many(messages):
    """Encode several messages into one bytes object."""
    parts = []
    for message in messages:
        payload = _dumps(message, _PROTOCOL)
        parts.append(_pack_header(len(payload)))
        parts.append(payload)
    return b''.join(parts)


def make_pipe():
    """A pipe with close-on-exec ends and, where Linux allows, a 1 MiB buffer."""
    read_fd, write_fd = _os.pipe2(_os.O_CLOEXEC) if hasattr(
        _os, 'pipe2') else _os.pipe()
    for fd in (read_fd, write_fd):
        _os.set_inheritable(fd, False)
    try:
        _fcntl.fcntl(write_fd, _F_SETPIPE_SZ, PIPE_SIZE)
    except OSError:
        pass
    return read_fd, write_fd


class FrameReader:
    """Collects bytes from a pipe and cuts them into messages.

    A tail frame's body is read straight into a buffer of its own
    (`tail_type`, bytearray by default: no copy; bytes costs one) once its
    head is in. One there is no memory for is a ChannelError, or with
    `too_large` read and dropped: the message comes with
    `too_large(size)` in the body's place (a worker answers it 500 and
    goes on, where dying would hand it to the next worker).
    """

    __slots__ = ('fd', '_buffer', 'eof', '_tail', 'tail_type', 'too_large')

    def __init__(self, fd, tail_type=bytearray, too_large=None):
        self.fd = fd
        self._buffer = bytearray()
        self.eof = False
        self._tail = None  # the _TailFrame being read into its buffers
        self.tail_type = tail_type
        self.too_large = too_large

    def read(self, budget=READ_SIZE * 4):
        """Read what is available (up to about `budget` bytes).

        Returns the list of complete messages; sets `eof` when the writer
        has gone. Raises ChannelError on a corrupt frame.
        """
        result = []
        got = 0
        size = FIRST_READ
        while got < budget:
            if self._tail is not None:
                count = self._read_tail(result)
                if count is None:
                    break
                got += count
                continue
            chunk = self._read_chunk(size)
            if chunk is None:
                break
            self._buffer += chunk
            got += len(chunk)
            self._cut(result)
            if len(chunk) < size:
                break
            size = READ_SIZE
        return result

    def _read_chunk(self, size):
        """os.read() of up to `size` bytes; None when there is nothing
        (now, or any more: then `eof` is set)."""
        while True:
            try:
                chunk = _os.read(self.fd, size)
            except BlockingIOError:
                return None
            except InterruptedError:
                continue
            except OSError as err:
                if err.errno in (_errno.EBADF, _errno.EIO, _errno.ECONNRESET):
                    self.eof = True
                    return None
                raise
            if not chunk:
                self.eof = True
                return None
            return chunk

    def _read_tail(self, result):
        """One readv() into the tail frame's buffers; the count read, or
        None when the pipe has no more now (or has closed)."""
        tail = self._tail
        wanted = tail.left
        try:
            count = _os.readv(self.fd, tail.views())
        except (BlockingIOError, InterruptedError):
            return None
        except OSError as err:
            if err.errno in (_errno.EBADF, _errno.EIO, _errno.ECONNRESET):
                self.eof = True
                return None
            raise
        if not count:
            self.eof = True
            return None
        tail.filled += count
        if not tail.left:
            self._tail = None
            result.append(tail.message(self.tail_type, self.too_large))
        return count if count == wanted else None

    def messages(self):
        """Decode every complete frame in the buffer."""
        result = []
        self._cut(result)
        return result

    def _cut(self, result):
        """Append every complete frame in the buffer to `result`; a tail
        frame whose head is in goes on into its own buffers."""
        buffer = self._buffer
        size = len(buffer)
        pos = 0
        view = memoryview(buffer)
        try:
            while size - pos >= _HEADER_SIZE:
                length = _unpack_header(buffer, pos)[0]
                start = pos + _HEADER_SIZE
                end = start + length
                tail = length and start < size and (
                    buffer[start] == _TAIL_MARK)
                if end <= size:
                    result.append(_decode_tail(view, start, end, self.tail_type)
                                  if tail else _decode(view[start:end]))
                elif tail and size - start >= _TAIL_HEAD_SIZE:
                    self._tail = _TailFrame(view, start, end,
                                            self.too_large is not None)
                    self._tail.put(view[start + _TAIL_HEAD_SIZE:])
                    pos = size
                    break
                else:
                    break
                pos = end
        finally:
            view.release()
        if pos:
            del buffer[:pos]

    @property
    def buffered(self):
        return len(self._buffer) + (self._tail.filled if self._tail else 0)


def _decode(data):
    try:
        return _loads(data)
    except Exception as err:  # pylint: disable=broad-except
        raise ChannelError(f"corrupt frame: {err!r}") from err


def _with_tail(message, index, body):
    if not isinstance(message, tuple) or index >= len(message) or (
            message[index] is not None):
        raise ChannelError("corrupt frame: its tail has no place")
    return message[:index] + (body,) + message[index + 1:]


def _decode_tail(view, start, end, tail_type):
    """A tail frame found whole in the buffer (its body copied out)."""
    _mark, index, size = _TAIL_HEAD.unpack_from(view, start)
    head = start + _TAIL_HEAD_SIZE
    if head + size > end:
        raise ChannelError("corrupt frame: its pickle overruns it")
    message = _decode(view[head:head + size])
    return _with_tail(message, index, tail_type(view[head + size:end]))


class _TailFrame:
    """A tail frame being read: its pickle and its body, each into a
    buffer of its exact size."""

    __slots__ = ('index', 'head', 'body', 'length', 'filled')

    def __init__(self, view, start, end, droppable=False):
        _mark, self.index, size = _TAIL_HEAD.unpack_from(view, start)
        rest = end - start - _TAIL_HEAD_SIZE
        if size > rest:
            raise ChannelError("corrupt frame: its pickle overruns it")
        self.length = rest - size
        try:
            self.head = bytearray(size)
            self.body = bytearray(self.length)
        except MemoryError:
            if not droppable or not hasattr(self, 'head'):
                raise ChannelError(
                    f"frame of {rest} bytes: no memory") from None
            self.body = None  # read into _DROP and dropped
        self.filled = 0

    @property
    def left(self):
        return len(self.head) + self.length - self.filled

    def views(self):
        done, head = self.filled, len(self.head)
        past = max(0, done - head)
        body = memoryview(self.body)[past:] if self.body is not None else (
            _DROP[:min(len(_DROP), self.length - past)])
        return [memoryview(self.head)[done:], body] if done < head else [body]

    def put(self, data):
        """Take bytes that were read before the frame was recognised."""
        head = self.head
        cut = min(len(data), len(head))
        head[:cut] = data[:cut]
        if len(data) > cut and self.body is not None:
            self.body[:len(data) - cut] = data[cut:]
        self.filled = len(data)

    def message(self, tail_type, too_large=None):
        body, self.body = self.body, None
        if body is not None and tail_type is not bytearray:
            try:
                body = tail_type(body)
            except MemoryError:
                if too_large is None:
                    raise ChannelError(f"frame of {self.length} bytes: no "
                                       "memory") from None
                body = None
        if body is None:
            body = too_large(self.length)
        return _with_tail(_decode(self.head), self.index, body)


_DROP = memoryview(bytearray(64 * 1024))  # where a dropped body is read


class OutBuffer:
    """Non-blocking writer: queue frames, flush when the pipe takes them.

    Small frames are joined into one buffer; a large part (a request's
    body) is queued as it is and written from where it lies with writev(),
    or lent to the pipe (pipelend.py: its pages referenced, not copied)
    where the kernel allows. A queued part must not change until written,
    nor a lent one until the reader has taken it.
    """

    __slots__ = ('fd', '_parts', '_size', '_open', 'closed', '_lent',
                 '_offset')

    def __init__(self, fd, lend=True):
        self.fd = fd
        self._parts = _deque()
        self._size = 0
        self._open = None  # the last part, when it is our own bytearray
        self.closed = False
        self._lent = _pipelend.LentBuffers(fd) if lend and (
            _pipelend.available()) else None
        self._offset = 0   # how much of the first part, being lent, went

    def __len__(self):
        return self._size

    @property
    def lent(self):
        """How many buffers the pipe may still hold pages of."""
        return 0 if self._lent is None else len(self._lent)

    def add(self, frame):
        if not self.closed:
            self._append(frame)

    def add_parts(self, *parts):
        if not self.closed:
            for part in parts:
                self._append(part)

    def _append(self, part):
        size = len(part)
        if not size:
            return
        self._size += size
        if size >= _JOIN_MAX:
            self._parts.append(part)
            self._open = None
        elif self._open is not None:
            self._open += part
        else:
            self._open = bytearray(part)
            self._parts.append(self._open)

    def flush(self):
        """Write what the pipe takes now; True when nothing is left.

        Raises BrokenPipeError when the reader has gone.
        """
        parts = self._parts
        lent = self._lent
        if lent is not None:
            lent.release()
        while parts:
            try:
                if lent is not None and _pipelend.lendable(parts[0]):
                    self._lend(parts[0])
                    continue
                written = self._write_batch(parts, lent)
            except BlockingIOError:
                return False
            except InterruptedError:
                continue
            self._size -= written
            if lent is not None:
                lent.copied(written)
            self._drop(written)
        return True

    def release(self):
        """Let go of lent buffers the reader has taken (see pipelend.py)."""
        if self._lent is not None:
            self._lent.release()

    def _write_batch(self, parts, lent):
        """write()/writev() of the parts before the next one to lend."""
        if len(parts) == 1:
            return _os.write(self.fd, parts[0])
        batch = []
        for part in parts:
            if len(batch) == _IOV_MAX or (
                    lent is not None and _pipelend.lendable(part)):
                break
            batch.append(part)
        if len(batch) == 1:
            return _os.write(self.fd, batch[0])
        return _os.writev(self.fd, batch)

    def _lend(self, part):
        if part is self._open:  # lent, it must not change: later frames
            self._open = None   # go in a new part, not in this one
        offset = self._offset
        sent = self._lent.lend(part, offset)
        if sent is None:  # not lent: copied as before
            with memoryview(part) as view:
                sent = _os.write(self.fd, view[offset:])
            self._lent.copied(sent)
        self._size -= sent
        offset += sent
        if offset >= len(part):
            self._parts.popleft()
            offset = 0
        self._offset = offset

    def _drop(self, written):
        parts = self._parts
        while written:
            first = parts[0]
            size = len(first)
            if written < size:
                if first is self._open:
                    self._open = None  # a view of it is queued now
                parts[0] = memoryview(first)[written:]
                return
            parts.popleft()
            if first is self._open:
                self._open = None
            written -= size

    def clear(self):
        self._parts = _deque()
        self._size = 0
        self._open = None
        self._offset = 0
        if self._lent is not None:
            self._lent.clear()


def write_parts(fd, *parts, lent=None):
    """Blocking write of a frame given as several buffers (pack_parts()),
    without joining them first. With `lent` (the pipe's LentBuffers), a
    large bytes part is lent to the pipe instead of copied into it."""
    if lent is not None:
        lent.release()
        for part in parts:
            if len(part) >= _LEND_MIN and type(part) is bytes:
                _write_lending(fd, parts, lent)
                return
    views = [memoryview(part) for part in parts if len(part)]
    total = 0
    try:
        while views:
            try:
                written = _os.writev(fd, views)
            except InterruptedError:
                continue
            total += written
            while views and written >= len(views[0]):
                written -= len(views.pop(0))
            if written:
                views[0] = views[0][written:]
    finally:
        for view in views:
            view.release()
    if lent is not None:
        lent.copied(total)


def _write_lending(fd, parts, lent):
    """write_parts() lending its large bytes parts (only bytes: a
    bytearray of the user's could change after the answer went)."""
    for part in parts:
        if type(part) is bytes and _pipelend.lendable(part):
            offset = 0
            while offset < len(part):
                sent = lent.lend(part, offset, block=True)
                if sent is None:  # refused: copied
                    write_all(fd, memoryview(part)[offset:])
                    lent.copied(len(part) - offset)
                    break
                offset += sent
        elif len(part):
            write_all(fd, part)
            lent.copied(len(part))


def write_all(fd, data):
    """Blocking write of every byte (the worker side)."""
    view = memoryview(data)
    total = len(view)
    offset = 0
    try:
        while offset < total:
            try:
                offset += _os.write(fd, view[offset:])
            except InterruptedError:
                continue
    finally:
        view.release()
