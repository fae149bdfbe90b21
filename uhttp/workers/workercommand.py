"""`uhttp-workers worker module:WorkerClass --broker URL --pool NAME --workers N`

Runs N worker processes of a remote pool on this host and keeps them
alive like the dispatcher keeps its own: a dead process is restarted
(policy.py: at once after it served, with back-off while it keeps failing
to start, parked on `permanent_failure_exitcode`), a process silent for
`stuck_timeout` is killed and restarted, and a death is reported to the
dispatchers at once so its requests end with 500 without waiting for the
heartbeat to go stale. SIGTERM/SIGINT stop it gracefully: each process
finishes the request in hand, then leaves.

The pool's settings (the workers' keyword arguments, log level, heartbeat
interval, stuck_timeout) come from the dispatcher through the broker; the
command waits until a dispatcher has published them.
"""

import argparse as _argparse
import os as _os
import secrets as _secrets
import select as _select
import signal as _signal
import sys as _sys
import time as _time

from . import broker as _broker
from . import brokerurl as _brokerurl
from . import heartbeat as _heartbeat
from . import log as _log
from . import policy as _policy
from . import remoteworker as _remoteworker
from . import sharedbody as _sharedbody
from . import spawn as _spawn
from . import workerloop as _workerloop
from .remotelink import broker_errors, connect, describe, refused_url
from .worker import Worker

_monotonic = _time.monotonic

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_TARGET = 3
STOP_TIMEOUT = 30.0
SUSPECT_FOR = 0.5


class RemoteSpec:
    """What a remote worker process needs to start (workerloop.child_main)."""

    def __init__(self, worker_class, pool_name, index, settings, slot,
                 in_fd, out_fd, transport, configs):
        self.worker_class = worker_class
        self.worker_id = index
        self.pool_name = pool_name
        self.kwargs = settings.get('kwargs') or {}
        self.in_fd = in_fd
        self.out_fd = out_fd
        self.recall_fd = None     # one request at a time: nothing to recall
        self.file_fd = None       # no descriptors: file answers go as bytes
        self.share_above = _sharedbody.NEVER  # nor shared memory: bytes
        self.slot = slot
        self.log_level = settings.get('log_level', _log.LOG_WARNING)
        self.heartbeat_interval = settings.get('heartbeat_interval', 1)
        self.memory_limit_mb = None
        self.configs = configs
        self.metrics = settings.get('metrics')
        self.parent_pid = _os.getppid()
        self.transport = transport


class Child:
    """One slot of the command and its current process."""

    def __init__(self, index, slot):
        self.index = index
        self.slot = slot
        self.pid = None
        self.stop_write = None
        self.started_at = None
        self.record = _policy.SlotRecord()
        self.restart_at = None
        self.parked = False
        self.killed = None
        self.suspect_since = None
        self.name = None      # its process's name on the broker


class WorkerCommand:
    """N worker processes of pool `pool_name` served from `url`."""

    def __init__(self, worker_class, url, pool_name, workers, out=_sys.stderr):
        self.worker_class = worker_class
        self.url = url
        self.keys = _broker.Keys(pool_name)
        self.pool_name = pool_name
        self.workers = workers
        self.out = out
        self.settings = None
        self.refused = False      # the broker refused our credentials
        self.style = _log.detect_style(out)
        self.stopping = False
        self.slots = _heartbeat.SlotTable(workers)
        self.children = [Child(index, self.slots.slot(index))
                         for index in range(workers)]
        self.policy = _policy.RestartPolicy(10, 300)
        self.wake_read, self.wake_write = _os.pipe()
        for fd in (self.wake_read, self.wake_write):
            _os.set_blocking(fd, False)

    def say(self, level, text):
        self.out.write(_log.render(self.style, f'worker-command[{self.pool_name}]',
                                   level, text))
        self.out.flush()

    # -- running -------------------------------------------------------------------

    def run(self):
        self.install_signals()
        if not self.wait_for_settings():
            return EXIT_USAGE if self.refused else EXIT_OK
        self.policy.permanent_exitcode = self.settings.get(
            'permanent_failure_exitcode')
        for child in self.children:
            self.spawn(child)
        self.say(_log.LOG_INFO, f"{self.workers} worker(s) of pool "
                 f"{self.pool_name} serving {_brokerurl.redact(self.url)}")
        while not self.stopping:
            self.wait(0.2)
            self.reap()
            self.check_stuck()
            self.restart_due()
        self.stop_all()
        return EXIT_OK

    def run_forked(self):
        """run() in a process forked by a dispatcher (its local workers of
        a pool with a broker): the dispatcher's signals are not ours, and
        the process ends with the dispatcher."""
        for sig in (_signal.SIGHUP, _signal.SIGTTIN, _signal.SIGTTOU,
                    _signal.SIGUSR2):
            _signal.signal(sig, _signal.SIG_IGN)
        die_with_parent()
        if _os.getppid() == 1:
            return EXIT_OK
        return self.run()

    def install_signals(self):
        _signal.set_wakeup_fd(self.wake_write)
        for sig in (_signal.SIGTERM, _signal.SIGINT):
            _signal.signal(sig, self.on_stop)
        _signal.signal(_signal.SIGCHLD, lambda *_: None)

    def on_stop(self, signum, frame):
        del signum, frame
        self.stopping = True

    def wait(self, timeout):
        try:
            _select.select([self.wake_read], [], [], timeout)
            while _os.read(self.wake_read, 512):
                pass
        except (BlockingIOError, InterruptedError):
            pass

    def wait_for_settings(self):
        """The pool's settings, published by its dispatcher."""
        said = 0.0
        errors = broker_errors()
        while not self.stopping:
            try:
                blob = connect(self.url).get(self.keys.settings)
                if blob is not None:
                    self.settings = _broker.decode_settings(blob)
                    return True
                why = 'no dispatcher has published pool settings yet'
            except errors as err:
                if refused_url(err):
                    self.say(_log.LOG_ERROR, f"{_brokerurl.redact(self.url)}: "
                             f"{describe(err)}")
                    self.refused = True
                    return False
                why = f'broker unreachable: {describe(err, self.url)}'
            if _monotonic() - said > 10:
                said = _monotonic()
                self.say(_log.LOG_WARNING, f"waiting for pool "
                         f"{self.pool_name}: {why}")
            self.wait(0.5)
        return False

    def latest_settings(self):
        """The settings its dispatcher published last (a dispatcher
        restarted since the command started may have changed them): a
        process started now gets them."""
        try:
            blob = connect(self.url).get(self.keys.settings)
        except broker_errors():
            return
        if blob is not None:
            self.settings = _broker.decode_settings(blob)
            self.policy.permanent_exitcode = self.settings.get(
                'permanent_failure_exitcode')

    def configs(self):
        try:
            frame = connect(self.url).get(self.keys.config)
        except broker_errors():
            return []
        if not frame:
            return []
        return [_broker.frame_message(frame)[1]]

    # -- one process -----------------------------------------------------------------

    def spawn(self, child):
        child.slot.reset()
        self.latest_settings()
        configs = self.configs()
        stop_read, stop_write = _os.pipe()
        token = _secrets.token_hex(3)
        _spawn.flush_std()
        pid = _os.fork()
        if pid == 0:
            _os.close(stop_write)
            self.child_process(child, stop_read, configs, token)
        _os.close(stop_read)
        child.pid = pid
        child.name = _remoteworker.worker_name(pid, token)
        child.stop_write = stop_write
        child.started_at = _monotonic()
        child.killed = None
        child.suspect_since = None
        child.restart_at = None

    def child_process(self, child, stop_read, configs, token):
        """In the new process: never returns."""
        try:
            _signal.set_wakeup_fd(-1)
            for other in self.children:
                if other.stop_write is not None:
                    _os.close(other.stop_write)
            _os.close(self.wake_read)
            _os.close(self.wake_write)
            interval = self.settings.get('heartbeat_interval', 1)
            link = _remoteworker.WorkerLink(self.url, self.keys, child.slot,
                                            child.index, interval, stop_read,
                                            token, self.settings.get('timeout'))
            out_fd = _os.open(_os.devnull, _os.O_WRONLY)
            spec = RemoteSpec(self.worker_class, self.pool_name, child.index,
                              self.settings, child.slot, link.in_read, out_fd,
                              link, configs)
        except BaseException:  # pylint: disable=broad-except
            _os._exit(_workerloop.EXIT_LOOP_FAILED)
        _workerloop.child_main(spec)

    def reap(self):
        while True:
            try:
                pid, status = _os.waitpid(-1, _os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            for child in self.children:
                if child.pid == pid:
                    self.exited(child, status)

    def exited(self, child, status):
        from .pool import describe_exit  # pylint: disable=import-outside-toplevel
        reason, exitcode = describe_exit(status)
        name = child.name
        if child.stop_write is not None:
            _os.close(child.stop_write)
            child.stop_write = None
        child.pid = None
        if child.killed:
            reason = f"{child.killed}, {reason}"
        self.report_death(name, reason, left=self.stopping and (
            exitcode == 0 and not child.killed), exitcode=exitcode)
        if self.stopping:
            return
        self.say(_log.LOG_ERROR, f"worker {name} (slot {child.index}) "
                 f"died: {reason}")
        now = _monotonic()
        served = child.slot.read()[2] > 0
        decision = self.policy.decide(
            child.record, now, exitcode,
            exitcode != _workerloop.EXIT_SETUP_FAILED, served,
            now - child.started_at, False)
        if decision.action == _policy.PARK:
            child.parked = True
            self.say(_log.LOG_WARNING, f"slot {child.index} parked "
                     f"(exit code {exitcode}): not restarted")
            return
        child.restart_at = now + decision.delay

    def report_death(self, name, reason, left=False, exitcode=None):
        """Tell the dispatchers now: what it started ends with 500 (`left`:
        it ended as the command asked, stopping)."""
        try:
            client = connect(self.url, timeout=2.0)
            pipe = client.pipeline(transaction=False)
            pipe.xadd(self.keys.events,
                      _broker.encode_death(name, reason, left, exitcode),
                      maxlen=_broker.EVENTS_MAXLEN, approximate=True)
            pipe.eval(_broker.LEAVE_SCRIPT, 3, self.keys.workers,
                      self.keys.info, self.keys.requests, name,
                      _broker.GROUP)
            pipe.execute()
        except broker_errors():
            pass  # its heartbeat goes stale: the dispatchers notice anyway

    def check_stuck(self):
        """Kill a process silent for stuck_timeout, seen so twice at least
        half a second apart (one just continued after SIGSTOP beats at once)."""
        limit = self.settings.get('stuck_timeout', 60)
        now = _monotonic()
        for child in self.children:
            if child.pid is None or child.killed:
                continue
            if now - child.slot.read()[0] <= limit:
                child.suspect_since = None
                continue
            if child.suspect_since is None:
                child.suspect_since = now
                continue
            if now - child.suspect_since < SUSPECT_FOR:
                continue
            child.killed = 'stuck'
            self.say(_log.LOG_ERROR, f"worker slot {child.index} (pid "
                     f"{child.pid}) stuck: no heartbeat for {limit}s; "
                     "killing it")
            try:
                _os.kill(child.pid, _signal.SIGKILL)
            except ProcessLookupError:
                pass

    def restart_due(self):
        now = _monotonic()
        for child in self.children:
            if (child.pid is None and not child.parked
                    and child.restart_at is not None and child.restart_at <= now):
                self.spawn(child)

    # -- stopping -------------------------------------------------------------------------

    def stop_all(self):
        """Each process finishes the request in hand, then leaves."""
        for child in self.children:
            if child.stop_write is not None:
                _os.close(child.stop_write)
                child.stop_write = None
        deadline = _monotonic() + STOP_TIMEOUT
        while any(child.pid for child in self.children):
            if _monotonic() > deadline:
                for child in self.children:
                    if child.pid:
                        try:
                            _os.kill(child.pid, _signal.SIGKILL)
                        except ProcessLookupError:
                            pass
                deadline = _monotonic() + 5
            self.wait(0.1)
            self.reap()


def die_with_parent():
    """Linux: SIGTERM when the parent process dies."""
    try:
        import ctypes  # pylint: disable=import-outside-toplevel
        ctypes.CDLL(None, use_errno=True).prctl(1, int(_signal.SIGTERM), 0, 0, 0)
    except (OSError, AttributeError):
        pass


def ended(pid):
    """True (and reaped) when child `pid` has ended."""
    try:
        return _os.waitpid(pid, _os.WNOHANG)[0] != 0
    except ChildProcessError:
        return True


def stop_process(pid, timeout):
    """SIGTERM child `pid` (it stops gracefully), SIGKILL it after
    `timeout` seconds; reaped either way."""
    try:
        _os.kill(pid, _signal.SIGTERM)
    except ProcessLookupError:
        pass
    deadline = _monotonic() + timeout
    while not ended(pid):
        if _monotonic() > deadline:
            try:
                _os.kill(pid, _signal.SIGKILL)
                _os.waitpid(pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
            return
        _time.sleep(0.05)


BROKER_VARIABLE = 'UHTTP_WORKERS_BROKER'  # the broker URL, when not given


def parser():
    parse = _argparse.ArgumentParser(
        prog='uhttp-workers worker',
        description='Run worker processes of a remote pool (a WorkerPool '
                    'with broker=...) on this host.')
    parse.add_argument('target', metavar='module:WorkerClass')
    parse.add_argument('--broker', metavar='URL',
                       default=_os.environ.get(BROKER_VARIABLE) or None,
                       help='redis://[:password@]host:port/db or rediss://... '
                            f'(default: ${BROKER_VARIABLE}, which keeps a '
                            'password out of the process list)')
    parse.add_argument('--pool', metavar='NAME',
                       help='the pool name (default: the worker class name)')
    parse.add_argument('--workers', type=int, default=1, metavar='N',
                       help='worker processes to run (default 1)')
    return parse


def main(argv):
    """The `worker` subcommand; its exit code."""
    from . import cli as _cli  # pylint: disable=import-outside-toplevel
    try:
        args = parser().parse_args(argv)
    except SystemExit as exit_:
        return EXIT_OK if exit_.code in (0, None) else EXIT_USAGE
    if not args.broker:
        print(f"uhttp-workers worker: give --broker URL or set "
              f"{BROKER_VARIABLE}", file=_sys.stderr)
        return EXIT_USAGE
    try:
        _brokerurl.check_url(args.broker, '--broker')
        _brokerurl.require_client('uhttp-workers worker')
    except (ValueError, ImportError) as err:
        print(f"uhttp-workers worker: {err}", file=_sys.stderr)
        return EXIT_USAGE
    try:
        worker_class = _cli.load_target(args.target)
    except _cli.TargetError as err:
        print(f"uhttp-workers worker: {err}", file=_sys.stderr)
        return EXIT_TARGET
    if not (isinstance(worker_class, type) and issubclass(worker_class, Worker)):
        print(f"uhttp-workers worker: {args.target} is not a Worker subclass",
              file=_sys.stderr)
        return EXIT_TARGET
    if args.workers < 1:
        print("uhttp-workers worker: --workers must be >= 1", file=_sys.stderr)
        return EXIT_USAGE
    command = WorkerCommand(worker_class, args.broker,
                            args.pool or worker_class.__name__, args.workers)
    return command.run()
