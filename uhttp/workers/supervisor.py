"""The supervisor: worker processes started, watched, reaped and replaced.

Like a pre-fork server's arbiter, in small verbs: `spawn` a worker into a
slot; every heartbeat interval `check_health` reaps the dead and kills the
stuck; `reap` runs on SIGCHLD; `worker_exited` fails what a dead worker
was running, gives others what it had not started, and asks the restart
policy what to do with the slot (restart now, later, or park it).
"""

import os as _os
import signal as _signal
import time as _time

from . import channel as _channel
from . import policy as _policy
from . import replies as _replies
from . import spawn as _spawn
from .fds import close_fd
from .loop import EVENT_READ
from .pending import PENDING_COMPLETED, PENDING_WORKER_DIED
from .pool import WorkerHandle, describe_exit

_monotonic = _time.monotonic


class Supervisor:
    """The worker processes of every pool of one dispatcher (`core`)."""

    def __init__(self, core):
        self.core = core
        self.log = core.log
        self.loop = core.loop
        self.by_pid = {}

    # -- starting ------------------------------------------------------------

    def start_pool(self, pool):
        core = self.core
        if pool.broker is not None:
            core.remotes.start(pool)  # its workers run `uhttp-workers worker`
            return
        pool.handles[:] = [WorkerHandle(pool, index)
                           for index in range(pool.num_workers)]
        pool.scheduler.attach(
            pool.handles, core.delivery.send_request, self.loop.call_at, self.recall,
            lambda: core.check_queue(pool), core.retirements.taken)
        for handle in pool.handles:
            self.spawn(handle)

    def spawn(self, handle):
        pool = handle.pool
        try:
            pipes = _spawn.Pipes()
        except OSError as err:
            self.cannot_start(handle, f"cannot make its pipes: {err}")
            return
        handle.slot.reset()
        spec = _spawn.WorkerSpec(pool, handle.index, *pipes.child_ends,
                                 handle.slot, _os.getpid())
        try:
            pid = _spawn.fork_worker(spec, pipes, self.drop_in_child)
        except OSError as err:
            pipes.close_all()
            self.cannot_start(handle, f"fork failed: {err}")
            return
        pipes.keep_parent_ends()
        handle.started(pid, pipes.to_write, pipes.from_read,
                       pipes.recall_write, _monotonic(),
                       file_fd=pipes.file_parent)
        handle.recycle_at = self.core.retirements.recycle_limit(pool)
        handle.beats = (pool.heartbeat_interval, pool.stuck_timeout)
        handle.on_event = self.core.relay.worker_event
        self.by_pid[pid] = handle
        self.loop.workers.register(handle.from_fd, EVENT_READ, handle)
        self.log.debug("started %s (pid %d)", handle.name, pid)

    def cannot_start(self, handle, why):
        """The system refused a worker's pipes or its fork (out of
        descriptors or processes): a replacement counts as failed (the
        worker it was to replace keeps serving); any other slot is tried
        again in a second."""
        self.log.error("cannot start %s: %s", handle.name, why)
        if handle.replaces is not None:
            self.core.retirements.replacement_failed(handle, why)
        else:
            self.schedule_restart(handle, _monotonic(), 1.0)

    def drop_in_child(self, keep):
        core = self.core
        server = core.server
        fds = [fd for pool in core.pools for other in pool.handles
               for fd in other.fds + tuple(other.files.values())]
        wakeup = core.loop.wakeup
        _spawn.drop_in_child(
            keep, server.connections if server is not None else (),
            server.listeners if server is not None else (), fds,
            (wakeup.read_fd, wakeup.write_fd) if wakeup is not None else (),
            core.loop.selectors())

    def worker_ready(self, handle):
        handle.ready = True
        self.log.debug("%s ready (pid %s)", handle.name, handle.pid)
        if handle.replaces is not None:
            self.core.retirements.replacement_ready(handle)
        if not handle.stopping and not handle.retiring:
            handle.pool.scheduler.offer(handle)
        self.core.control.workers_changed()

    def recall(self, handle):
        """Ask `handle`'s worker for the requests it has not started."""
        try:
            _os.write(handle.recall_fd, b'\0')
        except BlockingIOError:
            return True  # a recall is pending already
        except (OSError, TypeError):
            return False  # it has gone: reaping requeues what it held
        return True

    # -- reaping ---------------------------------------------------------------

    def pipe_closed(self, handle):
        """EOF from a worker's pipe: it is exiting; reap it now if it has."""
        self.loop.workers.unregister(handle.from_fd)
        handle.reader.eof = True
        self.reap_one(handle)

    def reap(self):
        for pool in self.core.pools:
            for handle in list(pool.handles):
                if handle.alive:
                    self.reap_one(handle)

    def reap_one(self, handle):
        try:
            pid, status = _os.waitpid(handle.pid, _os.WNOHANG)
        except ChildProcessError:
            pid, status = handle.pid, 0
        if pid == 0:
            return False
        self.worker_exited(handle, status)
        return True

    def worker_exited(self, handle, status):
        now = _monotonic()
        reason, exitcode = describe_exit(status)
        self.read_last_words(handle)
        self.close_fds(handle)
        self.by_pid.pop(handle.pid, None)
        was_ready = handle.ready
        served = handle.slot.read()[2] > 0  # it started at least one request
        handle.exited(exitcode)
        if self.core.observe is not None:
            self.core.observe.worker_gone(handle)
        pool = handle.pool
        pool.scheduler.withdraw(handle)
        victims, requeue = pool.scheduler.split_inflight(handle)
        if requeue:   # never started: the other workers take them now
            pool.scheduler.requeue_front(requeue)
            pool.scheduler.dispatch()
        expected = handle.stopping or self.core.stopping
        self.report_death(handle, reason, expected, victims)
        if victims or not expected:
            self.core.hooks.call('on_worker_died', pool, handle.index,
                                 handle.kill_reason or reason, exitcode,
                                 victims)
            # whatever the hook did, every victim ends now, exactly once:
            # answered by the hook, or 500
            for _, pending in victims:
                self.core.fail(pending, 500, {'error': 'Worker died'},
                               PENDING_WORKER_DIED)
        if handle.replaces is not None and not expected:
            why = handle.kill_reason or reason
            self.core.retirements.replacement_failed(handle, why)
        elif handle.retiring or handle.replaced_by is not None:
            self.core.retirements.exited(handle, expected)
        elif not expected:
            self.after_death(handle, exitcode, was_ready, served, now)

    def read_last_words(self, handle):
        """Relay what a dead worker managed to write before it went."""
        try:
            if not handle.reader.eof:
                messages = handle.reader.read(budget=1 << 30)
                if messages:
                    self.core.relay.relay(handle, messages)
        except (_channel.ChannelError, OSError):
            pass

    def report_death(self, handle, reason, expected, victims):
        why = handle.kill_reason
        if expected and why is None:
            self.log.debug("%s (pid %s) %s", handle.name, handle.pid, reason)
            return
        label = f"{why}, {reason}" if why else reason
        # killed while stopping as it was told (after its WARNING): no
        # error unless requests went with it
        report = self.log.warning if expected and not victims else (
            self.log.error)
        report("worker %s (pid %s) died: %s%s", handle.name, handle.pid,
               label, f"; {len(victims)} request(s) lost" if victims else '')

    def close_fds(self, handle):
        handle.close_files()
        if handle.reader is not None:
            handle.reader.eof = True  # nothing more is read from that fd
        for fd in handle.fds:
            if fd is not None:
                if self.loop.workers is not None:
                    self.loop.workers.unregister(fd)
                close_fd(fd)
        handle.closed()
        self.core.streamhold.forget(handle)
        self.core.delivery.dirty.discard(handle)

    # -- what follows a death ---------------------------------------------------

    def after_death(self, handle, exitcode, was_ready, served, now):
        pool = handle.pool
        lived = now - (handle.started_at or now)
        decision = pool.policy.decide(handle.record, now, exitcode, was_ready,
                                      served, lived, pool.degraded)
        if decision.action == _policy.PARK:
            handle.parked = True
            self.log.warning("worker %s exited with code %s "
                             "(permanent_failure_exitcode): parked, not restarted",
                             handle.name, exitcode)
            self.after_capacity_change(pool)
            return
        if decision.degrade:
            self.degrade(pool, now)
        if self.core.observe is not None:
            self.core.observe.restarted(handle, restart_reason(handle))
        self.schedule_restart(handle, now, decision.delay)
        self.after_capacity_change(pool)

    def degrade(self, pool, now):
        pool.degraded = True
        self.log.warning(
            "pool %s degraded: %d restarts within %ss; it answers 503%s",
            pool.name, pool.max_restarts, pool.restart_window,
            f" until it recovers in {pool.recovery_interval}s"
            if pool.recovery_interval else '')
        if pool.recovery_interval:
            pool.recovers_at = now + pool.recovery_interval
            self.loop.call_at(pool.recovers_at, self.recover, pool)
        self.fail_queue(pool, 503, 'Service Unavailable',
                        _replies.degraded_headers(pool, now))

    def schedule_restart(self, handle, now, delay):
        if delay <= 0:
            self.restart(now, handle)
            return
        self.log.warning("restarting %s in %.1fs (failed %d times in a row)",
                         handle.name, delay, handle.record.streak)
        handle.restart_at = now + delay
        self.loop.call_at(now + delay, self.restart, handle)

    def restart(self, now, handle):
        handle.restart_at = None
        if self.core.stopping or handle.alive or handle.parked:
            return
        if handle not in handle.pool.handles:
            return  # its slot was removed by a resize while it waited
        self.spawn(handle)

    def after_capacity_change(self, pool):
        """With no live worker left, queued requests cannot be served."""
        if not pool.alive_count and len(pool.scheduler):
            if pool.parked_count == pool.num_workers:
                self.fail_queue(pool, 503, 'No workers available')
            else:
                self.fail_queue(pool, 503, 'No workers available',
                                {'retry-after': '1'})

    def fail_queue(self, pool, status, text, headers=None):
        for item in pool.scheduler.drain():
            if hasattr(item, 'client'):
                self.core.fail(item, status, {'error': text},
                               PENDING_COMPLETED, headers)

    def recover(self, now, pool):
        if not pool.degraded:
            return
        pool.degraded = False
        pool.recovers_at = None
        pool.policy.reset()
        for handle in pool.handles:
            handle.record.streak = 0
        self.log.info("pool %s recovered from degraded after %ss",
                      pool.name, pool.recovery_interval)

    # -- health ------------------------------------------------------------------

    def check_health(self, now, pool):
        """Every heartbeat_interval: reap the dead, kill the stuck."""
        self.loop.call_at(now + pool.heartbeat_interval, self.check_health,
                          pool)
        pool.scheduler.update_window()
        for handle in list(pool.handles):
            if not handle.alive or self.reap_one(handle):
                continue
            if handle.kill_reason is None and self.is_stuck(handle, now):
                self.kill(handle, 'stuck')
            elif pool.max_worker_rss_mb is not None:
                self.core.retirements.check_memory(handle)
        self.core.check_queue(pool)  # windows too, with the queue empty

    def is_stuck(self, handle, now):
        limit = handle.pool.stuck_timeout
        beat, limit_at_start = handle.beats
        if limit <= beat:  # a reload lowered it below what this process
            limit = limit_at_start  # beats at: it keeps its own until replaced
        if now - handle.slot.read()[0] <= limit:
            return False
        if self.core.streamhold.holds(handle, now - limit):
            return False  # its send waits (or waited) on a stream's client
        # re-read: a torn read must not kill a healthy worker
        age = _monotonic() - handle.slot.read()[0]
        if age <= limit:
            return False
        self.log.error(
            "worker %s (pid %s) stuck: no heartbeat for %.1fs "
            "(stuck_timeout=%ss); killing it", handle.name, handle.pid, age,
            limit)
        return True

    def kill(self, handle, reason):
        handle.kill_reason = reason
        handle.pool.scheduler.withdraw(handle)
        try:
            _os.kill(handle.pid, _signal.SIGKILL)
        except ProcessLookupError:
            pass

    # -- stopping ------------------------------------------------------------------

    def stop_all(self):
        """Ask every live worker to stop, through its pipe."""
        for pool in self.core.pools:
            for handle in pool.handles:
                if handle.alive and handle.out is not None:
                    handle.stopping = True
                    self.core.delivery.tell(handle, self.core.stop_frame)

    def all_gone(self):
        return not any(handle.alive for pool in self.core.pools
                       for handle in pool.handles)

    def kill_remaining(self, reason):
        for pool in self.core.pools:
            for handle in pool.handles:
                if handle.alive:
                    self.log.warning("worker %s (pid %s) did not stop in time; "
                                     "killing it", handle.name, handle.pid)
                    self.kill(handle, reason)

    def wait_all(self):
        """Block until every worker still alive is reaped (last resort)."""
        for pool in self.core.pools:
            for handle in pool.handles:
                if handle.alive:
                    try:
                        _os.waitpid(handle.pid, 0)
                    except ChildProcessError:
                        pass
                    handle.alive = False

    def cleanup(self):
        """After run(): no process, no pipe, no shared slot left."""
        for pool in self.core.pools:
            for handle in pool.handles:
                if handle.alive:
                    try:
                        _os.kill(handle.pid, _signal.SIGKILL)
                        _os.waitpid(handle.pid, 0)
                    except (ProcessLookupError, ChildProcessError):
                        pass
                    handle.alive = False
                self.close_fds(handle)
                handle.release_slot()


def restart_reason(handle):
    """Why `handle`'s worker is restarted, as a metrics label: 'died',
    'stuck', or the reason it was killed for."""
    why = handle.kill_reason
    if why is None:
        return 'died'
    return str(why).replace(' ', '_')
