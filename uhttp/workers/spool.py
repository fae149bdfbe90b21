"""Request bodies spooled to disk: when a body is spooled, and the unnamed
file it is written to as it arrives.

A body above `spool_threshold` bytes never sits whole in the dispatcher's
memory: it goes to a temporary file that has no name from the start
(O_TMPFILE, or a name unlinked at once), mode 0600, in `spool_dir` (the
system's temporary directory by default). Nothing is ever left in that
directory: the file's space is freed when the last descriptor on it
closes, the dispatcher's when the request ends and a worker's when it
is done with it or dies.
"""

import errno as _errno
import os as _os
import tempfile as _tempfile
import weakref as _weakref

from . import channel as _channel
from .bodyview import SpooledBytes, forget_views
from .fds import close_fd as _close_fd

DEFAULT_THRESHOLD = 256 * 1024
_O_TMPFILE = getattr(_os, 'O_TMPFILE', 0)
_O_CLOEXEC = getattr(_os, 'O_CLOEXEC', 0)
# errors that say "this file system cannot do O_TMPFILE": use a name
_NO_TMPFILE = (_errno.EOPNOTSUPP, _errno.EISDIR, _errno.EINVAL)
_spools = _weakref.WeakSet()  # the Spools being written in this process


def check_threshold(value):
    """spool_threshold: an int >= 0 (0 spools every body)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(
            f"Dispatcher spool_threshold must be an int, not {value!r}")
    if value < 0:
        raise ValueError(
            f"Dispatcher spool_threshold must be >= 0, got {value}")
    return value


def check_directory(value):
    """spool_dir: None (the system's temporary directory) or a directory
    a spool file can be made in (one is made and dropped to know: a
    directory that refuses files would else answer every large upload 507)."""
    if value is None:
        return None
    if not isinstance(value, (str, _os.PathLike)):
        raise TypeError(
            f"Dispatcher spool_dir must be a directory path, not {value!r}")
    value = _os.fspath(value)
    if not _os.path.isdir(value):
        raise ValueError(f"Dispatcher spool_dir {value!r} is not a directory")
    try:
        _close_fd(open_unnamed(value))
    except OSError as err:
        raise ValueError(f"Dispatcher spool_dir {value!r} cannot hold spool "
                         f"files: {err.strerror or err}") from None
    return value


class SpoolPolicy:
    """Which bodies are spooled (`wants(size)`), and where."""

    __slots__ = ('threshold', 'directory')

    def __init__(self, threshold=DEFAULT_THRESHOLD, directory=None):
        self.threshold = check_threshold(threshold)
        self.directory = check_directory(directory)

    def wants(self, size):
        """True for a body of `size` bytes (so far): spool it."""
        return size > self.threshold

    def open(self):
        """A new, empty Spool (OSError when no file can be made)."""
        return Spool(open_unnamed(self.directory))


def open_unnamed(directory=None):
    """A descriptor (read-write, close-on-exec) on a new temporary file
    that has no name in `directory`, mode 0600: O_TMPFILE where the file
    system has it, else a name unlinked at once."""
    directory = directory or _tempfile.gettempdir()
    if _O_TMPFILE:
        try:
            return _os.open(directory, _O_TMPFILE | _os.O_RDWR | _O_CLOEXEC,
                            0o600)
        except OSError as err:
            if err.errno not in _NO_TMPFILE:
                raise
    return unlinked_file(directory)


def unlinked_file(directory):
    """A new file in `directory` (mode 0600) whose name is gone already."""
    fd, path = _tempfile.mkstemp(prefix='.uhttp-spool-', dir=directory)
    try:
        _os.unlink(path)
    except OSError:
        _os.close(fd)
        raise
    return fd


class StorageError(OSError):
    """The spool file refused bytes (a full disk, an I/O error)."""


class Spool:
    """A body being written to its unnamed file: `write()` what arrives,
    then `finish()` (the file, as SpooledBytes) or `discard()`."""

    __slots__ = ('fd', 'size', '__weakref__')

    def __init__(self, fd):
        self.fd = fd
        self.size = 0
        _spools.add(self)

    def write(self, data):
        """Append `data` (bytes-like) to the file; StorageError (ENOSPC...)
        when the disk refuses."""
        view = memoryview(data)
        try:
            while view:
                written = _os.write(self.fd, view)
                self.size += written
                view = view[written:]
        except OSError as err:
            raise StorageError(err.errno, err.strerror) from err
        finally:
            view.release()

    def splice_from(self, fd, count, pipe):
        """Move up to `count` bytes waiting on the socket `fd` into the
        file through `pipe` (read end, write end) without copying them
        through this process; the bytes moved, 0 at EOF. The socket's
        errors as they are (BlockingIOError when nothing waits);
        StorageError when the disk refuses (the pipe is emptied first)."""
        moved = _os.splice(fd, pipe[1], count, flags=_SPLICE_FLAGS)
        done = 0
        try:
            while done < moved:
                done += _os.splice(pipe[0], self.fd, moved - done)
        except OSError as err:
            _drain(pipe[0], moved - done)
            raise StorageError(err.errno, err.strerror) from err
        finally:
            self.size += done
        return moved

    def finish(self):
        """The whole body, as a read-only view that owns the file;
        StorageError (the file closed) when it cannot be mapped: mmap()
        takes a descriptor of its own (EMFILE) and address space (ENOMEM),
        and maps no empty file (ValueError: EINVAL)."""
        try:
            view = SpooledBytes(self.fd, self.size)
        except (OSError, ValueError) as err:
            self.discard()
            raise StorageError(getattr(err, 'errno', _errno.EINVAL),
                               getattr(err, 'strerror', str(err))) from err
        self.fd = -1
        return view

    def discard(self):
        """Drop the body (the client left, a limit, a timeout)."""
        fd, self.fd = self.fd, -1
        if fd >= 0:
            _close_fd(fd)

    def __repr__(self):
        return f"<Spool fd={self.fd} {self.size} bytes>"


_SPLICE_FLAGS = getattr(_os, 'SPLICE_F_MOVE', 0) | getattr(
    _os, 'SPLICE_F_NONBLOCK', 0)


def _drain(fd, count):
    while count > 0:
        count -= len(_os.read(fd, min(count, 1 << 16))) or count


_pipe = []  # the pipe bodies are spliced through, once made


def splice_pipe():
    """(read end, write end) of this process's splice pipe, or None where
    splice() is missing, or for now when no pipe can be made (the
    open-file limit reached: the body is read through a buffer instead)."""
    if not _pipe:
        if not hasattr(_os, 'splice'):
            _pipe.append(None)
        else:
            try:
                _pipe.append(_channel.make_pipe())
            except OSError:
                return None
    return _pipe[0]


def forget_in_child():
    """In a freshly forked worker: close its copies of every spool file
    (being written or whole) the dispatcher holds, and of its pipe."""
    for spool in list(_spools):
        spool.discard()
    forget_views()
    if _pipe and _pipe[0] is not None:
        for fd in _pipe.pop():
            _close_fd(fd)
