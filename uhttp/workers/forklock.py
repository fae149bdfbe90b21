"""The lock a worker sends its messages under, kept across os.fork().

A worker's threads write whole frames to the pipe back to the dispatcher
under one lock. A process the worker forks (os.fork(), multiprocessing's
fork start method) inherits that pipe and its `self.log`, and writes its
records into the same pipe: a frame above PIPE_BUF is written in several
pieces, so the pieces of two processes' frames could mix and the
dispatcher, reading a corrupt frame, would kill the worker.

`SendLock` is a reentrant thread lock that, from the first fork on, also
takes a POSIX record lock on a memory file shared by the worker and every
process forked from it, so one frame at a time is written by all of them
together. The kernel lets go of a record lock when its process dies, so a
forked child killed while it holds the lock leaves nobody waiting (a
token passed through a pipe would have gone with it and stopped the
worker's every message). Until a fork it costs what an RLock costs. In
the child, the lock is made anew (a thread of the parent may have held
it, and that thread is not there) and `on_child()` is called.

The holder also marks the file while it writes: a process killed halfway
through a frame leaves the mark, and whoever takes the lock next finds it.
The pipe then holds a torn frame, which the dispatcher would take the
next frames for the rest of (up to its length, which may be gigabytes
away), so every later message of the worker would be lost: the finder
ends the worker (exit code 71, or SIGKILL from a child of it), and
the dispatcher restarts it.
"""

import fcntl as _fcntl
import os as _os
import signal as _signal
import threading as _threading
import weakref as _weakref

_LOCKS = _weakref.WeakSet()  # every SendLock of this process
_CLEAR = bytes(8)
EXIT_TORN = 71  # the worker's "loop failed" exit code


class SendLock:
    """`with lock:` around the writing of one frame (reentrant)."""

    def __init__(self, on_child=None, on_torn=None):
        self._lock = _threading.RLock()
        self._depth = 0
        self._shared = None     # the locked file's fd, once the process forked
        self._on_child = on_child
        self._on_torn = on_torn  # (tests) instead of ending the worker
        self._owner = _os.getpid()  # the worker
        _LOCKS.add(self)

    def __enter__(self):
        self._lock.acquire()
        self._depth += 1
        if self._depth == 1 and self._shared is not None:
            try:
                _fcntl.lockf(self._shared, _fcntl.LOCK_EX)
                if _os.pread(self._shared, 8, 0).strip(b'\0'):
                    self._torn()
                _os.pwrite(self._shared, _os.getpid().to_bytes(8, 'big'), 0)
            except BaseException:
                self._depth -= 1
                self._lock.release()
                raise
        return self

    def __exit__(self, *exc_info):
        self._depth -= 1
        try:
            if self._depth == 0 and self._shared is not None:
                try:
                    _os.pwrite(self._shared, _CLEAR, 0)
                finally:
                    _fcntl.lockf(self._shared, _fcntl.LOCK_UN)
        finally:
            self._lock.release()

    def _torn(self):
        """The last holder died mid-frame: end the worker."""
        if self._on_torn is not None:
            self._on_torn()
            return
        try:
            _os.write(2, (f"uhttp-workers: worker {self._owner}: a process "
                          "it forked died while sending a message, leaving "
                          "it torn on the pipe; the worker ends\n").encode())
        except OSError:
            pass
        if _os.getpid() != self._owner and _os.getppid() == self._owner:
            # (only a worker that is still this process's parent: once it
            # died, its pid may be another process's; a worker that is a
            # grandparent finds the mark itself at its next send)
            try:
                _os.kill(self._owner, _signal.SIGKILL)
            except OSError:
                pass
        _os._exit(EXIT_TORN)

    # -- os.register_at_fork hooks -------------------------------------

    def _before_fork(self):
        # under the lock: no frame is being written while the file is
        # made, so this process and its children all lock the same one
        self._lock.acquire()
        if self._shared is None:
            self._shared = _os.memfd_create('uhttp-workers-send-lock',
                                            _os.MFD_CLOEXEC)

    def _after_in_parent(self):
        self._lock.release()

    def _after_in_child(self):
        self._lock = _threading.RLock()
        self._depth = 0
        if self._on_child is not None:
            self._on_child()


def _each(method):
    def hook():
        for lock in list(_LOCKS):
            method(lock)
    return hook


_os.register_at_fork(before=_each(SendLock._before_fork),
                     after_in_parent=_each(SendLock._after_in_parent),
                     after_in_child=_each(SendLock._after_in_child))
