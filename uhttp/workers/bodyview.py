"""A spooled body as the processes see it, and how it travels between them.

`SpooledBytes` is a read-only, bytes-like view (an mmap) of a body's
unnamed file (spool.py, or the shared memory of a large answer). It owns
the file's descriptor; when it crosses to another process it goes as that
descriptor, not as bytes: `pack_passing()` pickles a message in the
dispatcher and passes the descriptors of the views inside it over the
receiving worker's descriptor socket (SCM_RIGHTS, tagged with a token)
before the message is written; in the worker, unpickling takes each
descriptor back from the socket by its token (`set_inbox()`). Pickled
anywhere else a view goes as plain bytes.

`RequestBody` gives a worker's `Request` its `body_file`: the body as a
file object at its start, for every body (a BytesIO for small ones).
"""

import io as _io
import itertools as _itertools
import json as _json
import mmap as _mmap
import os as _os
import socket as _socket
import struct as _struct
import threading as _threading
import weakref as _weakref

from . import log as _log
from .fds import close_fd as _close_fd

_TAG = _struct.Struct('>q')  # the token that travels with a descriptor
_tokens = _itertools.count(1)
_local = _threading.local()  # .outbox while pack_passing() pickles
_inbox = [None]              # the worker's Inbox, once it is a worker
# what a handler may answer with as bytes (a SpooledBytes is an mmap)
BYTES_LIKE = (bytes, bytearray, memoryview, _mmap.mmap)
_views = _weakref.WeakValueDictionary()  # id -> SpooledBytes alive here


class SpooledBytes(_mmap.mmap):
    """A body held in a file: a read-only bytes-like view of its `size`
    bytes (len, slicing to bytes, buffer protocol: hashlib, bytes(),
    memoryview, file.write), `decode()`, `open()` for a file object and
    `fileno()`. It takes over the descriptor `fd` and closes it when it
    goes."""

    def __new__(cls, fd, size):
        self = super().__new__(cls, fd, size, access=_mmap.ACCESS_READ)
        self._fd = fd
        _views[id(self)] = self
        return self

    def __init__(self, fd, size):  # pylint: disable=super-init-not-called
        del fd, size  # taken by __new__ (mmap has no __init__ of its own)

    def __del__(self):
        fd, self._fd = getattr(self, '_fd', -1), -1
        if fd >= 0:
            _close_fd(fd)

    def fileno(self):
        return self._fd

    def forget(self):
        """In a forked child: close this process's copy of the file (the
        mapping too, unless something still reads it)."""
        self.__del__()
        try:
            self.close()
        except BufferError:
            pass

    def open(self):
        """A new file object reading the body from its start (its own
        position: several readers do not disturb each other)."""
        return _io.BufferedReader(_Reader(self), 256 * 1024)

    def decode(self, encoding='utf-8', errors='strict'):
        return str(self, encoding, errors)

    def tobytes(self):
        return self[:]

    # bytes' behaviour where mmap's differs or is missing (those that copy
    # copy only what they return or compare)
    def hex(self, *args):
        return self[:].hex(*args)

    def startswith(self, prefix, start=0, end=None):
        start, end, _ = slice(start, end).indices(len(self))
        prefixes = _affixes(prefix, 'startswith')
        return any(start + len(item) <= end
                   and self[start:start + len(item)] == item
                   for item in prefixes)

    def endswith(self, suffix, start=0, end=None):
        start, end, _ = slice(start, end).indices(len(self))
        suffixes = _affixes(suffix, 'endswith')
        return any(end - len(item) >= start
                   and self[end - len(item):end] == item
                   for item in suffixes)

    def __contains__(self, item):
        if isinstance(item, int):
            item = bytes((item,))
        return self.find(item) >= 0

    def __iter__(self):
        """Its bytes as ints, as iterating over bytes gives them."""
        for start in range(0, len(self), 1 << 16):
            yield from self[start:start + (1 << 16)]

    def __add__(self, other):
        return self[:] + bytes(other)

    def __radd__(self, other):
        return bytes(other) + self[:]

    def __eq__(self, other):
        try:
            with memoryview(self) as mine, memoryview(other) as theirs:
                return mine.nbytes == theirs.nbytes and (
                    mine.cast('B') == theirs.cast('B'))
        except TypeError:
            return NotImplemented

    __hash__ = None

    def __reduce__(self):
        outbox = getattr(_local, 'outbox', None)
        if outbox is None:
            return (bytes, (self[:],))
        token = next(_tokens)
        outbox.append((token, self._fd))
        return (_received, (token, len(self)))

    def __repr__(self):
        return f"<SpooledBytes {len(self)} bytes>"


def _affixes(value, name):
    """startswith()'s or endswith()'s argument as a tuple of bytes; for
    anything else (a str) the TypeError bytes raises, not a quiet False."""
    items = value if isinstance(value, tuple) else (value,)
    try:
        return tuple(bytes(memoryview(item)) for item in items)
    except TypeError:
        raise TypeError(f"{name} first arg must be bytes or a tuple of "
                        f"bytes, not {type(value).__name__}") from None


class _Reader(_io.RawIOBase):
    """Reads a SpooledBytes' file with pread() from a position of its own."""

    def __init__(self, view):
        super().__init__()
        self._view = view  # keeps the descriptor open
        self._size = len(view)
        self._position = 0

    def readable(self):
        return True

    def seekable(self):
        return True

    def fileno(self):
        """The body's file (a FileResponse of request.body_file sends it)."""
        return self._view.fileno()

    def readinto(self, buffer):
        count = _os.preadv(self._view.fileno(), [buffer], self._position)
        self._position += count
        return count

    def seek(self, offset, whence=_io.SEEK_SET):
        base = {_io.SEEK_SET: 0, _io.SEEK_CUR: self._position,
                _io.SEEK_END: self._size}[whence]
        if base + offset < 0:
            raise ValueError(f"negative seek position {base + offset}")
        self._position = base + offset
        return self._position

    def tell(self):
        return self._position


def forget_views():
    """In a freshly forked worker: close every body view the dispatcher
    held, so that no spool file outlives its request in a child."""
    for view in list(_views.values()):
        view.forget()


# -- crossing to a worker ------------------------------------------------------

class PassError(OSError):
    """A body's descriptor could not be passed to a worker."""


def pack_passing(message, pack, sock_fd):
    """`pack(message)` with the descriptor of every SpooledBytes inside it
    passed over the descriptor socket `sock_fd` first (non-blocking; a
    PassError when the socket refuses)."""
    outbox = _local.outbox = []
    try:
        frame = pack(message)
    finally:
        _local.outbox = None
    for token, fd in outbox:
        if sock_fd is None:
            raise PassError("the worker has no descriptor socket")
        sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_SEQPACKET,
                              fileno=sock_fd)
        try:
            _socket.send_fds(sock, [_TAG.pack(token)], [fd],
                             _socket.MSG_DONTWAIT)
        except OSError as err:
            raise PassError(f"passing a body's descriptor failed: {err}") from err
        finally:
            sock.detach()
    return frame


class Inbox:
    """The descriptors a worker received, by token, until unpickled.

    Tokens grow in the order the dispatcher writes the messages that name
    them, and the worker reads those in that order: when a token is taken,
    a smaller one still here belongs to a message that was never sent (its
    passing failed halfway), and its descriptor is closed.
    """

    def __init__(self, sock_fd):
        self.sock_fd = sock_fd
        self.fds = {}
        self.lock = _threading.Lock()

    def take(self, token):
        with self.lock:
            fd = self.fds.pop(token, None)
            if fd is None:
                from . import files  # pylint: disable=import-outside-toplevel
                files.receive_fds(self.sock_fd, self.fds)
                fd = self.fds.pop(token, None)
            for stale in [each for each in self.fds if each < token]:
                try:
                    _os.close(self.fds.pop(stale))
                except OSError:
                    pass
            return fd


def set_inbox(sock):
    """In a worker: take bodies' descriptors from `sock` (its descriptor
    socket) as messages that name them are unpickled."""
    _inbox[0] = None if sock is None else Inbox(sock.fileno())


class _Lost:
    """A body whose descriptor never came: the worker answers 500."""

    def __repr__(self):
        return 'LOST'

    def __reduce__(self):
        return (_lost, ())


LOST = _Lost()


def _lost():
    return LOST


class Unmapped(_Lost):
    """A body whose file came but cannot be mapped in this process, or
    that came in the pipe and cannot be held (no address space left for
    it: worker_memory_limit_mb): the worker answers 500 instead of failing
    to read the message, and dying."""

    def __init__(self, size, error):
        self.size = size
        self.error = error  # text: the exception would keep the frames
        # (and the pipe's buffer they read from) alive

    def __repr__(self):
        return f"<Unmapped {self.size} bytes: {self.error}>"


def unheld(size):
    """The stand-in for a body of `size` bytes sent in the pipe that this
    worker has no memory to hold (channel.FrameReader's too_large)."""
    return Unmapped(size, "no memory to hold it")


def _received(token, size):
    inbox = _inbox[0]
    fd = inbox.take(token) if inbox is not None else None
    if fd is None:
        return LOST
    try:
        return SpooledBytes(fd, size)
    except (OSError, ValueError) as err:  # ENOMEM under RLIMIT_AS; a file
        # that is empty or shorter than `size` (ValueError)
        _close_fd(fd)
        return Unmapped(size, str(err))


# -- a worker's Request --------------------------------------------------------

def open_body(body):
    """A file object at the start of `body` (empty for None and values
    that are no bytes)."""
    if isinstance(body, SpooledBytes):
        return body.open()
    if isinstance(body, (bytes, bytearray, memoryview)):
        return _io.BytesIO(body)
    return _io.BytesIO(b'')


def as_body(data):
    """A handler's bytes-like answer as the body to send: bytes, or a
    SpooledBytes as it is (its file goes back whole, uncopied)."""
    return data if isinstance(data, SpooledBytes) else bytes(data)


def as_bytes(body):
    """`body` as something json.loads() and parse_query() take."""
    return body if isinstance(body, (bytes, bytearray, str)) else bytes(body)


def parse_json(body):
    return _json.loads(as_bytes(body))


class RequestBody:
    """The raw body of a worker's Request, and `body_file`."""

    __slots__ = ('_body', '_body_file')

    @property
    def body_file(self):
        """The request body as a binary file object positioned at its
        start (read(), readinto(), seek(), iteration by lines): an
        unnamed file for a spooled body, a BytesIO for a small one."""
        file = getattr(self, '_body_file', None)
        if file is None:
            body = getattr(self, '_body', None)
            if body is None:
                body = getattr(self, 'data', None)
            file = self._body_file = open_body(body)
        return file


def keep_body(request, body, log=None):
    """Remember `body` as `request`'s raw body; the 500 message to answer
    with (None when all is well) when its descriptor never came or its
    file cannot be mapped here (logged on `log`, with the likely cause)."""
    if not isinstance(body, _Lost):
        request._body = body
        return None
    request._body = None
    if log is not None and isinstance(body, Unmapped):
        log.error("%s %s: its %d-byte body cannot be held in this "
                  "worker: %s%s", request.method,
                  _log.client_text(request.path), body.size,
                  body.error, _address_space_cap())
    elif log is not None:
        log.error("%s %s: its body's file descriptor never arrived; "
                  "%s", request.method, _log.client_text(request.path),
                  _fd_room())
    from . import messages as _msg  # pylint: disable=import-outside-toplevel
    return _msg.error_message(request.request_id, 500, (
        "The request body is too large for this worker"
        if isinstance(body, Unmapped) else
        "The request body was lost on its way"))


def _address_space_cap():
    """A note on this process's address-space cap, when it has one."""
    import resource  # pylint: disable=import-outside-toplevel
    limit = resource.getrlimit(resource.RLIMIT_AS)[0]
    if limit == resource.RLIM_INFINITY:
        return ""
    return (f" (its address space is capped at {limit >> 20} MiB: "
            "worker_memory_limit_mb)")


def _fd_room():
    """A note on this process's descriptors: how many are open against the
    limit (a process out of them cannot receive a passed one)."""
    try:
        used = len(_os.listdir('/proc/self/fd'))
    except OSError:
        return "is this process out of file descriptors?"
    import resource  # pylint: disable=import-outside-toplevel
    limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return (f"this process has {used} file descriptors open of its limit "
            f"{limit}" + (" (a leak in its code?)" if used >= limit - 4
                          else ""))
