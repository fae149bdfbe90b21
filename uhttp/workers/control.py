"""What operators ask of a running dispatcher, and what it tells them.

Signals (SIGHUP reload, SIGTTIN/SIGTTOU resize, SIGUSR2 hot upgrade) and
`Dispatcher.reload()`
queue an action that the loop runs (never inside a signal handler); the
systemd notifier hears READY=1 once every worker is ready, STATUS= lines,
RELOADING=1 around reloads, STOPPING=1, and the watchdog's pings. The
command line's pid file is written once the dispatcher listens (a hot
upgrade's new copy: once it is ready to take over), so a copy that fails
to start never names itself in it.
"""

import os as _os
import threading as _threading

from . import systemd as _systemd
from . import upgrade as _upgrade


class Control:
    """Actions and notifications of one dispatcher (`core`)."""

    def __init__(self, core):
        self.core = core
        self.log = core.log
        self.notifier = _systemd.Notifier()
        self.announced_ready = False
        self.pending_actions = []  # signals and reload() waiting for the loop
        self.reload_source = None  # re-reads the configuration on reload
        self.upgrader = _upgrade.Upgrade(core)
        self.takeover = None       # a hot upgrade's new copy: its side
        self.pid_file = None       # the command line's --pid-file
        self.pid_file_written = False
        self.loop_thread = None    # the thread that runs the loop

    def call_in_loop(self, func):
        """func() now in the loop's thread (or with no loop running), else
        queued for the loop, which it wakes: only the loop writes to the
        workers' pipes (pool.send_config() from another thread)."""
        if not self.core.running or _threading.get_ident() == self.loop_thread:
            func()
        else:
            self.request_action(func)

    def start(self, now):
        self.loop_thread = _threading.get_ident()
        interval = _systemd.watchdog_interval()
        if interval is not None:
            self.core.loop.call_at(now, self.watchdog_tick, interval)
        self.workers_changed()

    def listening(self):
        """The listening socket is bound (before the log line saying so).
        A hot upgrade's new copy accepts nothing until it takes over."""
        self.takeover = None
        if _upgrade.started_by_upgrade():
            self.takeover = _upgrade.TakeOver(self.core)
            self.takeover.start()
        else:
            self.write_pid_file()

    def write_pid_file(self):
        if self.pid_file is None or self.pid_file_written:
            return
        self.pid_file_written = True
        try:
            with open(self.pid_file, 'w', encoding='ascii') as file:
                file.write(f'{_os.getpid()}\n')
        except OSError as err:
            self.log.error("cannot write the pid file %s: %s", self.pid_file,
                           err)

    def idle(self):
        if self.notifier.enabled and self.announced_ready:
            self.notifier.status(self.summary())

    def request_action(self, action):
        """Queue 'reload', 'more', 'fewer', 'upgrade' or a callable for the
        loop (from a signal handler or another thread)."""
        self.pending_actions.append(action)
        if self.core.loop.wakeup is not None:
            self.core.loop.wakeup.wake()

    def run_actions(self):
        while self.pending_actions:
            action = self.pending_actions.pop(0)
            if self.core.stopping:
                continue
            if callable(action):   # call_in_loop()
                action()
            elif action == 'reload':
                self.reload()
            elif action in ('more', 'fewer'):
                step = 1 if action == 'more' else -1
                for pool in self.core.pools:
                    # never below one (none stays none: a broker's pool
                    # with remote workers only)
                    size = max(min(pool.num_workers, 1),
                               pool.num_workers + step)
                    if size == pool.num_workers:
                        self.log.info("pool %s stays at %d worker(s)",
                                      pool.name, size)
                    else:
                        pool.resize(size)
            elif action == 'upgrade':
                self.upgrade()

    def reload(self):
        """Rolling reload: the configuration source read again (when the
        command line gave one), then every worker replaced."""
        if self.reload_source is not None:
            try:
                self.reload_source(self.core)
            except Exception as err:  # pylint: disable=broad-except
                self.log.error("reload refused, the running configuration "
                               "stays: %s", err)
                return
        self.log.info("reloading: replacing every worker")
        self.notifier.reloading()
        self.core.retirements.reload()

    def upgrade(self):
        """Hot upgrade: a new copy of this command line takes over."""
        self.upgrader.start()

    # -- systemd ----------------------------------------------------------------

    def workers_changed(self):
        """A worker got ready (or the dispatcher started): once every pool's
        workers are ready the first time, tell systemd (READY=1)."""
        if self.announced_ready or self.core.stopping:
            return
        if all(handle.ready for pool in self.core.pools
               for handle in pool.handles):
            self.announced_ready = True
            self.write_pid_file()
            self.notifier.ready(self.summary())
            if self.takeover is not None:  # a hot upgrade's new copy
                self.takeover.ready()

    def stopping(self):
        """Shutdown begins: STOPPING=1, unless another process is the
        service (the one a hot upgrade handed over to, or the old one
        when this new copy never took over)."""
        if self.core.handing_over or (self.takeover is not None
                                      and not self.takeover.took_over):
            return
        self.notifier.stopping()

    def summary(self):
        """One line for STATUS=: pools, workers ready/total, in flight."""
        handles = [handle for pool in self.core.pools for handle in pool.handles]
        ready = sum(1 for handle in handles if handle.ready)
        return (f"{len(self.core.pools)} pools, {ready}/{len(handles)} workers "
                f"ready, {len(self.core.pending)} requests in flight")

    def watchdog_tick(self, now, interval):
        self.core.loop.call_at(now + interval, self.watchdog_tick, interval)
        self.notifier.watchdog()
