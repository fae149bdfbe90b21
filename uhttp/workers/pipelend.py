"""Large buffers lent to a pipe instead of copied into it.

vmsplice(2) puts references to a buffer's pages in a pipe; the reader
copies the bytes out as it reads them. For a request body of 256 KiB that
is a few microseconds against ~60 for a write() that copies it into pages
the pipe allocates. The buffer must stay alive and unchanged until the
reader has taken its last byte: `LentBuffers` keeps each one with the
pipe position just past it and lets it go once FIONREAD (the bytes still
unread in the pipe) says the reader is past that position.

Lending is used only on Linux 5.9 or later: before, a fork() (a worker
started) while pages were lent could let the child's writes reach them.
Where vmsplice() is missing or refuses a buffer, the caller writes it as
before (`available()`, `lend()` returning None).
"""

import collections as _collections
import ctypes as _ctypes
import errno as _errno
import fcntl as _fcntl
import os as _os
import re as _re
import struct as _struct
import termios as _termios

LEND_MIN = 64 * 1024         # smaller buffers are copied: cheaper than pinning
SPLICE_F_NONBLOCK = 0x02
_UNREAD = _struct.Struct('i')
MIN_KERNEL = (5, 9)


class _IoVec(_ctypes.Structure):
    _fields_ = [('base', _ctypes.c_void_p), ('size', _ctypes.c_size_t)]


def _kernel(release):
    """(major, minor) of a Linux release string, or None."""
    found = _re.match(r'(\d+)\.(\d+)', release)
    return (int(found[1]), int(found[2])) if found else None


def _load():
    uname = _os.uname()
    if uname.sysname != 'Linux':
        return None
    version = _kernel(uname.release)
    if version is None or version < MIN_KERNEL:
        return None
    try:
        function = _ctypes.CDLL(None, use_errno=True).vmsplice
    except (OSError, AttributeError):
        return None
    function.argtypes = [_ctypes.c_int, _ctypes.POINTER(_IoVec),
                         _ctypes.c_ulong, _ctypes.c_uint]
    function.restype = _ctypes.c_ssize_t
    return function


_vmsplice = _load()


def available():
    return _vmsplice is not None


def lendable(part):
    """True for a buffer worth lending rather than copying."""
    return (_vmsplice is not None and type(part) in (bytes, bytearray)
            and len(part) >= LEND_MIN)


def _pinned(part):
    """(address of `part`'s bytes, the object that keeps that address
    valid): a bytearray's export also keeps it from being resized."""
    if type(part) is bytes:
        pointer = _ctypes.c_char_p(part)
        return _ctypes.cast(pointer, _ctypes.c_void_p).value, pointer
    array = (_ctypes.c_char * len(part)).from_buffer(part)
    return _ctypes.addressof(array), array


class LentBuffers:
    """The buffers one pipe still holds pages of, for its writer."""

    __slots__ = ('fd', 'written', '_lent', '_pin')

    def __init__(self, fd):
        self.fd = fd
        self.written = 0      # bytes put in the pipe, every way
        self._lent = _collections.deque()   # (position past it, part, pin)
        self._pin = None      # (part, address, pin) of the part being lent

    def __len__(self):
        return len(self._lent)

    def lend(self, part, offset, block=False):
        """vmsplice() `part` from `offset` into the pipe: how many bytes
        went in (waiting for room when `block`). Raises BlockingIOError
        when the pipe is full, OSError (BrokenPipeError, ...) as write()
        would; None when the kernel refused to lend it (then write it)."""
        pin = self._pin
        if pin is None or pin[0] is not part:
            address, keep = _pinned(part)
            pin = self._pin = (part, address, keep)
        iov = _IoVec(pin[1] + offset, len(part) - offset)
        sent = _vmsplice(self.fd, _ctypes.byref(iov), 1,
                         0 if block else SPLICE_F_NONBLOCK)
        if sent < 0:
            code = _ctypes.get_errno()
            if code == _errno.EAGAIN:
                raise BlockingIOError(code, _os.strerror(code))
            if code == _errno.EINTR:
                return 0
            if code in (_errno.EPIPE, _errno.EBADF):
                raise OSError(code, _os.strerror(code))
            self._pin = None
            return None
        self.written += sent
        self._lent.append((self.written, part, pin[2]))
        if offset + sent >= len(part):
            self._pin = None
        return sent

    def copied(self, size):
        """`size` bytes were written (copied) into the pipe."""
        self.written += size

    def release(self):
        """Let go of the buffers the reader is past; how many are left."""
        lent = self._lent
        if not lent:
            return 0
        try:
            unread = _UNREAD.unpack(_fcntl.ioctl(
                self.fd, _termios.FIONREAD, b'\0' * _UNREAD.size))[0]
        except OSError:
            return len(lent)
        taken = self.written - unread
        while lent and lent[0][0] <= taken:
            lent.popleft()
        return len(lent)

    def clear(self):
        """The pipe is gone: nothing is lent any more."""
        self._lent.clear()
        self._pin = None
