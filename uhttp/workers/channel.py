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
_F_SETPIPE_SZ = getattr(_fcntl, 'F_SETPIPE_SZ', 1031)


class ChannelError(Exception):
    """A frame that cannot be encoded or decoded."""


def pack(message):
    """Encode one message tuple as a frame (bytes)."""
    payload = _dumps(message, _PROTOCOL)
    if len(payload) > MAX_FRAME:
        raise ChannelError(f"message of {len(payload)} bytes is too large")
    return _pack_header(len(payload)) + payload


def pack_parts(message):
    """Encode one message as (header, payload): writing the two parts
    separately saves copying a large payload into a joined frame."""
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
    """Collects bytes from a pipe and cuts them into messages."""

    __slots__ = ('fd', '_buffer', 'eof')

    def __init__(self, fd):
        self.fd = fd
        self._buffer = bytearray()
        self.eof = False

    def read(self, budget=READ_SIZE * 4):
        """Read what is available (up to about `budget` bytes).

        Returns the list of complete messages; sets `eof` when the writer
        has gone. Raises ChannelError on a corrupt frame.
        """
        buffer = self._buffer
        got = 0
        size = FIRST_READ
        while got < budget:
            try:
                chunk = _os.read(self.fd, size)
            except BlockingIOError:
                break
            except InterruptedError:
                continue
            except OSError as err:
                if err.errno in (_errno.EBADF, _errno.EIO, _errno.ECONNRESET):
                    self.eof = True
                    break
                raise
            if not chunk:
                self.eof = True
                break
            buffer += chunk
            got += len(chunk)
            if len(chunk) < size:
                break
            size = READ_SIZE
        return self.messages()

    def messages(self):
        """Decode every complete frame in the buffer."""
        buffer = self._buffer
        size = len(buffer)
        if size < _HEADER_SIZE:
            return []
        result = []
        pos = 0
        view = memoryview(buffer)
        try:
            while size - pos >= _HEADER_SIZE:
                length = _unpack_header(buffer, pos)[0]
                end = pos + _HEADER_SIZE + length
                if end > size:
                    break
                try:
                    result.append(_loads(view[pos + _HEADER_SIZE:end]))
                except Exception as err:  # pylint: disable=broad-except
                    raise ChannelError(f"corrupt frame: {err!r}") from err
                pos = end
        finally:
            view.release()
        if pos:
            del buffer[:pos]
        return result

    @property
    def buffered(self):
        return len(self._buffer)


class OutBuffer:
    """Non-blocking writer: queue frames, flush when the pipe takes them."""

    __slots__ = ('fd', '_buffer', 'closed')

    def __init__(self, fd):
        self.fd = fd
        self._buffer = bytearray()
        self.closed = False

    def __len__(self):
        return len(self._buffer)

    def add(self, frame):
        if not self.closed:
            self._buffer += frame

    def add_parts(self, header, payload):
        if not self.closed:
            self._buffer += header
            self._buffer += payload

    def flush(self):
        """Write what the pipe takes now; True when nothing is left.

        Raises BrokenPipeError when the reader has gone.
        """
        buffer = self._buffer
        while buffer:
            try:
                written = _os.write(self.fd, buffer)
            except BlockingIOError:
                return False
            except InterruptedError:
                continue
            del buffer[:written]
        return True

    def clear(self):
        self._buffer = bytearray()


def write_parts(fd, header, payload):
    """Blocking write of a frame given as (header, payload), without
    joining them first."""
    try:
        written = _os.writev(fd, (header, payload))
    except InterruptedError:
        written = 0
    size = len(header)
    if written < size:
        write_all(fd, header[written:])
        write_all(fd, payload)
    elif written - size < len(payload):
        write_all(fd, memoryview(payload)[written - size:])


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
