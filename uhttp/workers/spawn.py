"""Starting a worker process: its pipes, the fork, and the child's clean-up.

Sockets never leave the dispatcher: a forked worker closes every client
connection, the listening socket, the other workers' pipes, the wake-up
pipe and any other socket it inherited, and keeps only its own pipes.
"""

import gc as _gc
import os as _os
import signal as _signal
import stat as _stat
import sys as _sys
import traceback as _traceback

from . import channel as _channel
from . import exits as _exits
from . import files as _files
from . import sharedbody as _sharedbody
from . import spool as _spool
from . import workerloop as _workerloop
from .fds import close_fd


class WorkerSpec:
    """What a forked worker needs to start."""

    def __init__(self, pool, index, in_fd, out_fd, recall_fd, file_fd, slot,
                 parent_pid):
        self.worker_class = pool.worker_class
        self.worker_id = index
        self.pool_name = pool.name
        self.kwargs = pool.kwargs
        self.in_fd = in_fd
        self.out_fd = out_fd
        self.recall_fd = recall_fd
        self.file_fd = file_fd
        self.slot = slot
        self.log_level = pool.log_level
        self.heartbeat_interval = pool.heartbeat_interval
        self.memory_limit_mb = pool.worker_memory_limit_mb
        self.configs = list(pool.configs)
        self.metrics = pool.metrics
        self.parent_pid = parent_pid
        self.share_above = _sharedbody.threshold_for(pool)
        self.transport = None  # remoteworker.WorkerLink: a broker, not pipes


class Pipes:
    """A worker's three pipes: requests (to it), answers (from it), and
    the recall pipe (one byte: give back what you have not started); and
    its descriptor socket pair (files.py: open files it answers with)."""

    def __init__(self):
        self.to_read = self.to_write = self.from_read = None
        self.from_write = self.recall_read = self.recall_write = None
        self.file_parent = self.file_child = None
        try:
            self.to_read, self.to_write = _channel.make_pipe()
            self.from_read, self.from_write = _channel.make_pipe()
            self.recall_read, self.recall_write = _os.pipe()
            self.file_parent, self.file_child = _files.make_socketpair()
        except BaseException:   # out of descriptors (EMFILE): none kept
            self.close_all()
            raise

    @property
    def child_ends(self):
        return (self.to_read, self.from_write, self.recall_read,
                self.file_child)

    @property
    def parent_ends(self):
        return (self.to_write, self.from_read, self.recall_write,
                self.file_parent)

    def close_all(self):
        for fd in self.child_ends + self.parent_ends:
            if fd is not None:
                close_fd(fd)

    def keep_parent_ends(self):
        """In the dispatcher after the fork: its ends, non-blocking."""
        for fd in self.child_ends:
            close_fd(fd)
        for fd in self.parent_ends:
            _os.set_blocking(fd, False)


def fork_worker(spec, pipes, drop_inherited):
    """Fork; in the child, drop what it must not hold and run the worker
    (never returns there). In the parent, return the child's pid."""
    flush_std()
    pid = _os.fork()
    if pid == 0:  # the worker process
        try:
            for fd in pipes.parent_ends:  # else the worker never sees EOF
                close_fd(fd)
            drop_inherited(set(pipes.child_ends))
        except BaseException:  # pylint: disable=broad-except
            # a worker holding the clients' sockets must not run: gone,
            # with the reason, and the dispatcher restarts the slot
            try:
                _traceback.print_exc()
                _sys.stderr.flush()
            finally:
                _os._exit(_exits.EXIT_NOT_ISOLATED)
        _workerloop.child_main(spec)
    return pid


def drop_in_child(keep, connections, listeners, other_fds, wakeup_fds,
                  selectors):
    """In a freshly forked worker: close everything that belongs to the
    dispatcher (sockets above all), keep only the fds in `keep`."""
    try:
        _signal.set_wakeup_fd(-1)
    except ValueError:
        pass
    for connection in list(connections):
        forget = getattr(connection, 'forget_file', None)
        if forget is not None:
            forget()  # a file being sent: the child must not hold it
        detach_close(connection.socket)
    for listener in listeners:
        detach_close(listener)
    _spool.forget_in_child()  # bodies' files: only their requests hold them
    for fd in list(other_fds) + list(wakeup_fds):
        if fd is not None and fd not in keep:
            close_fd(fd)
    for selector in selectors:
        try:
            selector.close()
        except Exception:  # pylint: disable=broad-except
            pass
    _gc.collect()
    close_inherited_sockets(keep)
    try:
        _gc.freeze()
    except AttributeError:
        pass


def flush_std():
    for stream in (_sys.stdout, _sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError, AttributeError):
            pass


def detach_close(sock):
    """Close a socket object's fd so that its finaliser cannot close a
    reused fd number later."""
    if sock is None:
        return
    try:
        fd = sock.detach()
    except (OSError, AttributeError, ValueError):
        return
    if fd >= 0:
        close_fd(fd)


def close_inherited_sockets(keep):
    """Close every other socket fd this process inherited."""
    for directory in ('/proc/self/fd', '/dev/fd'):
        try:
            names = _os.listdir(directory)
        except OSError:
            continue
        for name in names:
            try:
                fd = int(name)
            except ValueError:
                continue
            if fd <= 2 or fd in keep:
                continue
            try:
                if _stat.S_ISSOCK(_os.fstat(fd).st_mode):
                    _os.close(fd)
            except OSError:
                pass
        return
