"""Hot upgrade (SIGUSR2): a new copy of the dispatcher, code included,
takes over the listening sockets without a refused connection.

The old dispatcher (`Upgrade`) starts its own command line again, passing
the listening sockets as fds 3... (LISTEN_FDS, as systemd's socket activation
does) and a channel to report on. The new one (`TakeOver`) holds the
socket without accepting on it and brings its pools up; once every worker
is ready it starts accepting and writes READY. Then the old one stops
accepting, finishes what it holds (as in a graceful shutdown) and exits;
under systemd it first names the new process as MAINPID.

A new copy that cannot take over writes FAILED and why (the command line
does so for an import error or a bad config; `TakeOver` when a worker
ends before it is ready, or when they are not all ready within
READY_TIMEOUT), then stops, its workers with it, having accepted nothing.
The old one logs an ERROR with that reason, goes on serving, and reaps
the copy (killing one that does not exit).
"""

import fcntl as _fcntl
import os as _os
import signal as _signal
import socket as _socket
import sys as _sys
import time as _time

from . import systemd as _systemd
from .log import LOG_ERROR
from .loop import EVENT_READ
from .pool import describe_exit

READY_FD = 'UHTTP_WORKERS_READY_FD'    # in the new copy: where to report
READY_PID = 'UHTTP_WORKERS_READY_PID'  # ... for which process; set by an
#                                        old one that understands FAILED
READY = b'R'
FAILED = b'F'   # followed by the reason, in UTF-8
READY_TIMEOUT = 60.0   # the new copy gives up when its workers are not all
#                        ready by then (read when it starts)
START_TIMEOUT = READY_TIMEOUT + 30.0   # the old one kills a copy silent so long
CLOSE_GRACE = 2.0      # a copy that closed its channel unannounced: the wait
#                        for its exit code before the ERROR
EXIT_GRACE = 30.0      # a failed copy has this long to exit, then it is killed
REPORT_LIMIT = 4000    # bytes of a failure report kept
POLL = 0.2

_monotonic = _time.monotonic
try:  # where the command line was given: the new copy starts there
    START_DIR = _os.getcwd()   # (its relative paths), whatever the app
except OSError:                # changed its directory to since
    START_DIR = None


def command_line():
    """The command line this process was started with, to start it again."""
    argv = list(getattr(_sys, 'orig_argv', None) or [_sys.executable] + _sys.argv)
    argv[0] = _sys.executable
    return argv


def started_by_upgrade(environ=None):
    """Is this process the new copy of a hot upgrade, not yet ready?"""
    return READY_FD in (_os.environ if environ is None else environ)


def report_ready(environ=None):
    """In a new copy: tell the old dispatcher that every worker is ready."""
    return _report(READY, environ)


def report_failure(text, environ=None):
    """In a new copy that will not take over: tell the old dispatcher why
    (it logs it). False when this process is no such copy."""
    return _report(FAILED + str(text).encode('utf-8', 'replace'), environ)


def _report(message, environ):
    """Write `message` on the channel to the old dispatcher, once, and close
    it. An old one that did not set READY_PID knows READY only: a failure
    is then told by closing the channel alone."""
    environ = _os.environ if environ is None else environ
    value = environ.pop(READY_FD, None)
    pid = environ.pop(READY_PID, None)
    if value is None:
        return False
    try:
        fd = int(value)
    except ValueError:
        return False
    if pid is not None and pid != str(_os.getpid()):
        return False   # inherited by another program: the fd is not ours
    try:
        if message == READY or pid is not None:
            _os.write(fd, message[:REPORT_LIMIT])
    except OSError:
        pass
    try:
        _os.close(fd)
    except OSError:
        return False
    return True


def _dup_high(fd, low=10):
    return _fcntl.fcntl(fd, _fcntl.F_DUPFD_CLOEXEC, low)


def _reap(pid):
    """How process `pid` ended (reaped now), or None while it runs."""
    try:
        found, status = _os.waitpid(pid, _os.WNOHANG)
    except ChildProcessError:
        return 'ended'
    if not found:
        return None
    return describe_exit(status)[0]


def _kill(pid):
    try:
        _os.kill(pid, _signal.SIGKILL)
    except ProcessLookupError:
        pass


class Upgrade:
    """The old dispatcher's side: one hot upgrade in progress, at most,
    and the failed copies not reaped yet (for `core`)."""

    def __init__(self, core):
        self.core = core
        self.log = core.log
        self.argv = command_line()
        self.pid = None          # the new copy, while it starts
        self.read_fd = None      # its channel
        self.report = b''        # what it wrote on it so far
        self.deadline = None     # killed if not ready by then
        self.closed_at = None    # its channel closed without a report: when
        self.leaving = {}        # failed copies still running: pid -> kill at
        self.checking = False    # a check is scheduled

    # -- starting the new copy -------------------------------------------------

    def start(self):
        if self.pid is not None:
            self.log.warning("hot upgrade already under way (new pid %s)",
                             self.pid)
            return
        if self.argv is None:
            self.log.error("hot upgrade refused: no command line to start "
                           "again")
            return
        # a socket, not a pipe: the new copy's workers close inherited
        # sockets, so the channel ends when the new dispatcher does
        ours, theirs = _socket.socketpair()
        read_fd, write_fd = ours.detach(), theirs.detach()
        listening = [sock.fileno() for sock in self.core.server.listeners]
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
        self.report = b''
        self.closed_at = None
        self.deadline = _monotonic() + START_TIMEOUT
        self.core.loop.register(read_fd, EVENT_READ, self)
        self.schedule_check()
        self.log.info("hot upgrade: started a new dispatcher (pid %d): %s",
                      pid, ' '.join(self.argv))

    def _exec(self, listening, read_fd, write_fd):
        """In the forked child: fds 3... are the listening sockets; exec."""
        try:
            _os.close(read_fd)
            low = 10 + len(listening)   # above fds 3.. that they become
            socks = [_dup_high(fd, low) for fd in listening]
            ready = _dup_high(write_fd, low)
            for number, sock in enumerate(socks, 3):
                _os.dup2(sock, number, inheritable=True)
            _os.set_inheritable(ready, True)
            environ = dict(_os.environ)
            environ['LISTEN_FDS'] = str(len(socks))
            environ['LISTEN_PID'] = str(_os.getpid())
            if _systemd.watchdog_interval(environ, _os.getppid()):
                # systemd's watchdog watched this dispatcher: the new one,
                # MAINPID once it takes over, pings it from then on
                environ['WATCHDOG_PID'] = str(_os.getpid())
            environ[READY_FD] = str(ready)
            environ[READY_PID] = str(_os.getpid())
            _signal.pthread_sigmask(_signal.SIG_SETMASK, [])
            try:
                _os.chdir(START_DIR or '.')
            except OSError:
                pass  # gone: the new copy starts where this one is
            _os.execve(self.argv[0], self.argv, environ)
        except BaseException as err:  # pylint: disable=broad-except
            try:   # (the interpreter removed by a package upgrade, say)
                _os.write(write_fd, FAILED + (
                    f"cannot start {self.argv[0]}: {err}".encode(
                        'utf-8', 'replace'))[:REPORT_LIMIT])
            except BaseException:  # pylint: disable=broad-except
                pass
        _os._exit(127)

    # -- what the new copy says ------------------------------------------------

    def handle_event(self, fileobj, mask):
        if self.read_some():
            self.read_some_more()
        return None

    def read_some(self):
        """Read the channel once; False when there is nothing more to read
        now (READY handed over, the channel closed, or empty for now)."""
        try:
            data = _os.read(self.read_fd, REPORT_LIMIT)
        except BlockingIOError:
            return False
        except OSError:
            data = b''
        if not data:
            self.channel_closed()
            return False
        if len(self.report) < REPORT_LIMIT:
            self.report += data
        if self.report[:1] == READY:
            self.hand_over()
            return False
        return True

    def read_some_more(self):
        while self.read_fd is not None and self.read_some():
            pass

    def take_the_rest(self):
        """What is left on the channel of a copy that has exited."""
        while self.read_fd is not None and len(self.report) < REPORT_LIMIT:
            try:
                data = _os.read(self.read_fd, REPORT_LIMIT)
            except OSError:
                return
            if not data:
                return
            self.report += data

    def channel_closed(self):
        self.close_channel()
        if self.report[:1] == FAILED:
            self.failed(self.reported())
        else:
            self.closed_at = _monotonic()   # its exit code will say more

    def reported(self, ending=None):
        text = self.report[1:].decode('utf-8', 'replace').strip()
        return (f"failed to start: {text or 'no reason given'}"
                + (f" ({ending})" if ending else ''))

    # -- watching it start, and reaping the failed ones --------------------------

    def schedule_check(self):
        if not self.checking:
            self.checking = True
            self.core.loop.call_at(_monotonic() + POLL, self.check)

    def check(self, now):
        self.checking = False
        if self.pid is not None:
            self.watch_start(now)
        self.reap_leaving(now)
        if self.pid is not None or self.leaving:
            self.schedule_check()

    def watch_start(self, now):
        """Has the new copy ended, gone silent, or is it late?"""
        ending = _reap(self.pid)
        if ending is not None:
            self.take_the_rest()   # a report written just before it exited
            self.failed(self.reported(ending) if self.report[:1] == FAILED
                        else f"{ending} before it was ready", reaped=True)
        elif self.closed_at is not None and now > self.closed_at + CLOSE_GRACE:
            self.failed("closed its ready channel before it was ready")
        elif now > self.deadline:
            _kill(self.pid)
            self.failed(f"was not ready after {START_TIMEOUT:.0f}s; killed")

    def reap_leaving(self, now):
        for pid, kill_at in list(self.leaving.items()):
            ending = _reap(pid)
            if ending is not None:
                del self.leaving[pid]
                self.log.debug("hot upgrade: the failed new dispatcher "
                               "(pid %d) %s", pid, ending)
            elif now > kill_at:
                self.log.warning("hot upgrade: the failed new dispatcher "
                                 "(pid %d) did not exit within %.0fs; "
                                 "killing it", pid, EXIT_GRACE)
                _kill(pid)
                self.leaving[pid] = float('inf')  # reaped at a later check

    # -- the outcome -------------------------------------------------------------

    def hand_over(self):
        pid = self.pid
        self.close()
        self.log.info("hot upgrade: the new dispatcher (pid %d) is ready; "
                      "this one (pid %d) stops accepting and drains",
                      pid, _os.getpid())
        self.core.control.notifier.main_pid(pid)
        self.core.handing_over = True
        self.core.server.closing = True
        self.core.request_stop('hot upgrade')

    def failed(self, why, reaped=False):
        pid = self.pid
        self.close()
        if not reaped:
            self.leaving[pid] = _monotonic() + EXIT_GRACE
            self.schedule_check()
        self.log.error("hot upgrade failed: the new dispatcher (pid %s) %s; "
                       "this one goes on serving", pid, why)

    def abandon(self):
        """Shutdown begins while a new copy starts: stop that copy (it
        has accepted nothing yet) instead of leaving it to serve alone."""
        pid = self.pid
        if pid is None:
            return
        self.close()
        self.log.warning("hot upgrade abandoned, this dispatcher shuts "
                         "down: stopping the new one (pid %d)", pid)
        try:
            _os.kill(pid, _signal.SIGTERM)
        except ProcessLookupError:
            pass
        self.leaving[pid] = _monotonic() + EXIT_GRACE
        self.schedule_check()

    def end_leaving(self):
        """At exit: kill and reap the copies still running."""
        for pid in list(self.leaving):
            _kill(pid)
            try:
                _os.waitpid(pid, 0)
            except ChildProcessError:
                pass
        self.leaving.clear()

    def close(self):
        self.close_channel()
        self.pid = None
        self.closed_at = None

    def close_channel(self):
        if self.read_fd is not None:
            self.core.loop.unregister(self.read_fd)
            _os.close(self.read_fd)
            self.read_fd = None


class TakeOver:
    """The new copy's side (for `core`): it accepts no connection until
    every worker of every pool is ready and the old dispatcher is told. A
    worker that ends before then (its setup() raised, it was stuck
    starting) or workers not all ready within READY_TIMEOUT: the old one
    is told why, and this copy stops without having served."""

    def __init__(self, core):
        self.core = core
        self.log = core.log
        self.timeout = READY_TIMEOUT
        self.deadline = None
        self.errors = []      # the first error records since the start
        self.outcome = None   # 'ready' or 'failed', once decided

    @property
    def took_over(self):
        return self.outcome == 'ready'

    def start(self):
        """The listening socket is bound: hold it, accept nothing yet."""
        self.core.server.pause_accepting()
        self.core.log_taps.append(self.note_error)
        now = _monotonic()
        self.timeout = READY_TIMEOUT   # (as it is now: a test may lower it)
        self.deadline = now + self.timeout
        self.core.loop.call_at(now + POLL, self.check)

    def note_error(self, name, level, text):
        """A log tap: the first error lines say why workers fail to start."""
        if level >= LOG_ERROR and len(self.errors) < 2:
            line = str(text).strip().splitlines()
            if line and line[0] not in self.errors:
                self.errors.append(line[0])

    def check(self, now):
        if self.outcome is not None or self.core.stopping:
            return
        why = self.why_not_ready(now)
        if why is None:
            self.core.loop.call_at(now + POLL, self.check)
        else:
            self.give_up(why)

    def why_not_ready(self, now):
        """Why this copy can no longer take over, or None."""
        handles = [handle for pool in self.core.pools
                   for handle in pool.handles]
        for handle in handles:
            if handle.parked or handle.record.restarts:
                if self.errors:   # they name the worker
                    return ("a worker ended before it was ready: "
                            + '; '.join(self.errors))
                return f"its worker {handle.name} ended before it was ready"
        if now > self.deadline:
            ready = sum(1 for handle in handles if handle.ready)
            return (f"its workers were not all ready after {self.timeout:g}s "
                    f"({ready} of {len(handles)} ready)")
        return None

    def ready(self):
        """Every worker is ready: accept, and tell the old dispatcher."""
        if self.outcome is not None:
            return
        self.finish('ready')
        self.core.server.resume_accepting()
        report_ready()

    def give_up(self, why):
        self.finish('failed')
        self.log.warning("hot upgrade: this new dispatcher gives up, the old "
                         "one goes on serving: %s", why)
        report_failure(why)
        self.core.request_stop('hot upgrade failed')

    def finish(self, outcome):
        self.outcome = outcome
        if self.note_error in self.core.log_taps:
            self.core.log_taps.remove(self.note_error)
