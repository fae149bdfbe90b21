"""Hot upgrade (SIGUSR2): a new copy of the dispatcher, code included,
takes over the listening socket without a refused connection.

The old dispatcher starts its own command line again, passing the
listening socket as fd 3 (LISTEN_FDS, as systemd's socket activation
does) and a pipe to say when it is ready. The new one brings its pools
up; once every worker is ready it writes one byte. Then the old one stops
accepting, finishes what it holds (as in a graceful shutdown) and exits;
under systemd it first names the new process as MAINPID. A new copy that
fails to start (import error, bad config) leaves the old one serving,
with an ERROR saying why.
"""

import fcntl as _fcntl
import os as _os
import signal as _signal
import sys as _sys
import time as _time

from .loop import EVENT_READ

READY_FD = 'UHTTP_WORKERS_READY_FD'   # in the new copy: where to say ready
START_TIMEOUT = 60.0
POLL = 0.2

_monotonic = _time.monotonic


def command_line():
    """The command line this process was started with, to start it again."""
    argv = list(getattr(_sys, 'orig_argv', None) or [_sys.executable] + _sys.argv)
    argv[0] = _sys.executable
    return argv


def started_by_upgrade(environ=None):
    """Is this process the new copy of a hot upgrade, not yet ready?"""
    return READY_FD in (_os.environ if environ is None else environ)


def announce_ready(environ=None):
    """In a new copy: tell the old dispatcher that every worker is ready."""
    environ = _os.environ if environ is None else environ
    value = environ.pop(READY_FD, None)
    if value is None:
        return False
    try:
        fd = int(value)
        _os.write(fd, b'R')
        _os.close(fd)
    except (ValueError, OSError):
        return False
    return True


def _dup_high(fd):
    return _fcntl.fcntl(fd, _fcntl.F_DUPFD_CLOEXEC, 10)


class Upgrade:
    """One hot upgrade in progress, at most (for `core`)."""

    def __init__(self, core):
        self.core = core
        self.log = core.log
        self.argv = command_line()
        self.pid = None
        self.read_fd = None
        self.deadline = None

    def start(self):
        if self.pid is not None:
            self.log.warning("hot upgrade already under way (new pid %s)",
                             self.pid)
            return
        if self.argv is None:
            self.log.error("hot upgrade refused: no command line to start "
                           "again")
            return
        read_fd, write_fd = _os.pipe()
        listening = self.core.server.socket.fileno()
        try:
            pid = _os.fork()
        except OSError as err:
            _os.close(read_fd)
            _os.close(write_fd)
            self.log.error("hot upgrade failed: fork: %s", err)
            return
        if pid == 0:
            self._exec(listening, read_fd, write_fd)  # never returns
        _os.close(write_fd)
        _os.set_blocking(read_fd, False)
        self.pid = pid
        self.read_fd = read_fd
        self.deadline = _monotonic() + START_TIMEOUT
        self.core.loop.register(read_fd, EVENT_READ, self)
        self.core.loop.call_at(_monotonic() + POLL, self.check)
        self.log.info("hot upgrade: started a new dispatcher (pid %d): %s",
                      pid, ' '.join(self.argv))

    def _exec(self, listening, read_fd, write_fd):
        """In the forked child: fd 3 is the listening socket; exec."""
        try:
            _os.close(read_fd)
            sock = _dup_high(listening)
            ready = _dup_high(write_fd)
            _os.dup2(sock, 3, inheritable=True)
            _os.set_inheritable(ready, True)
            environ = dict(_os.environ)
            environ['LISTEN_FDS'] = '1'
            environ['LISTEN_PID'] = str(_os.getpid())
            environ[READY_FD] = str(ready)
            _signal.pthread_sigmask(_signal.SIG_SETMASK, [])
            _os.execve(self.argv[0], self.argv, environ)
        except BaseException:  # pylint: disable=broad-except
            pass
        _os._exit(127)

    def handle_event(self, fileobj, mask):
        try:
            data = _os.read(self.read_fd, 16)
        except BlockingIOError:
            return None
        if data:
            self.hand_over()
        else:
            self.failed("closed its ready pipe before it was ready")
        return None

    def check(self, now):
        """Is the new copy still starting? It may have ended, or be late."""
        if self.pid is None:
            return
        try:
            pid, status = _os.waitpid(self.pid, _os.WNOHANG)
        except ChildProcessError:
            pid, status = self.pid, 0
        if pid:
            code = _os.waitstatus_to_exitcode(status)
            self.failed(f"exited with code {code} before it was ready "
                        "(see its log lines above)")
            return
        if now > self.deadline:
            try:
                _os.kill(self.pid, _signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.failed(f"was not ready after {START_TIMEOUT:.0f}s; killed")
            return
        self.core.loop.call_at(now + POLL, self.check)

    def hand_over(self):
        pid = self.pid
        self.close()
        self.log.info("hot upgrade: the new dispatcher (pid %d) is ready; "
                      "this one (pid %d) stops accepting and drains",
                      pid, _os.getpid())
        self.core.control.notifier.send(f'MAINPID={pid}', 'READY=1')
        self.core.handing_over = True
        self.core.server.closing = True
        self.core.request_stop('hot upgrade')

    def failed(self, why):
        pid = self.pid
        self.close()
        self.log.error("hot upgrade failed: the new dispatcher (pid %s) %s; "
                       "this one goes on serving", pid, why)

    def close(self):
        if self.read_fd is not None:
            self.core.loop.unregister(self.read_fd)
            _os.close(self.read_fd)
            self.read_fd = None
        self.pid = None
