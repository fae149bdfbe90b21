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
"""

import fcntl as _fcntl
import os as _os
import threading as _threading
import weakref as _weakref

_LOCKS = _weakref.WeakSet()  # every SendLock of this process


class SendLock:
    """`with lock:` around the writing of one frame (reentrant)."""

    def __init__(self, on_child=None):
        self._lock = _threading.RLock()
        self._depth = 0
        self._shared = None     # the locked file's fd, once the process forked
        self._on_child = on_child
        _LOCKS.add(self)

    def __enter__(self):
        self._lock.acquire()
        self._depth += 1
        if self._depth == 1 and self._shared is not None:
            try:
                _fcntl.lockf(self._shared, _fcntl.LOCK_EX)
            except BaseException:
                self._depth -= 1
                self._lock.release()
                raise
        return self

    def __exit__(self, *exc_info):
        self._depth -= 1
        try:
            if self._depth == 0 and self._shared is not None:
                _fcntl.lockf(self._shared, _fcntl.LOCK_UN)
        finally:
            self._lock.release()

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
