"""Graceful shutdown, as named phases.

1. stop accepting connections;
2. let the requests in flight finish, up to `shutdown_timeout`;
3. answer the rest 503 (and close open streams);
4. ask every worker to stop, through its pipe;
5. wait for them, kill those still alive at the deadline;
6. give answers already written a moment to reach slow clients.

A second SIGTERM/SIGINT cuts every wait short.
"""

import time as _time

from . import replies as _replies
from .pending import PENDING_SHUTDOWN

SHUTDOWN_WORKER_GRACE = 1.0
FLUSH_GRACE = 2.0
KILL_WAIT = 5.0
HANDOVER_WAIT = 3.0   # a hot upgrade: open connections get this long at most
IDLE_GRACE = 0.3      # ... and requests on idle ones this long to arrive

_monotonic = _time.monotonic


class Shutdown:
    """The shutdown of one dispatcher (`core`)."""

    def __init__(self, core):
        self.core = core
        self.log = core.log
        self.supervisor = core.supervisor

    def run(self):
        core = self.core
        core.stopping = True
        core.stop_began = _time.time()  # (requests begun before: in flight)
        core.control.stopping()  # (not after a hot upgrade's hand-over)
        upgrader = core.control.upgrader
        if not core.handing_over:
            upgrader.abandon()  # a new copy still starting stops too
        self.log.info("shutting down (%s): %d pending request(s)",
                      core.stop_requested or 'stop', len(core.pending))
        core.server.stop_listening()
        core.server.closing = True  # every answer from now on closes
        deadline = _monotonic() + core.settings.shutdown_timeout
        self.drain(deadline)
        if core.handing_over:
            self.finish_connections(deadline)
        self.refuse_the_rest()
        self.supervisor.stop_all()
        self.wait_for_workers(deadline)
        core.run_until(lambda: not upgrader.leaving, _monotonic() + KILL_WAIT)
        upgrader.end_leaving()
        core.run_until(self.clients_flushed, _monotonic() + FLUSH_GRACE)
        core.hooks.end_timed()
        self.log.info("stopped")

    def drain(self, deadline):
        """Serve until no request waits for an answer and none is still
        arriving or being sent (a download, an upload); streams and
        WebSockets aside: they are closed next."""
        table = self.core.pending
        server = self.core.server

        def drained():
            return table.waiting <= 0 and not any(
                connection.in_flight for connection in server.connections)

        self.core.run_until(drained, deadline)

    def finish_connections(self, deadline):
        """A hot upgrade: requests still arriving on open connections are
        served (each answer closes its connection), until none is busy."""
        server = self.core.server
        table = self.core.pending

        def settled():
            return table.waiting <= 0 and not any(
                not connection.is_idle or connection.has_data_to_send
                for connection in server.connections)

        limit = min(deadline, _monotonic() + HANDOVER_WAIT)
        self.core.run_until(settled, limit)
        # a connection accepted just before the socket was handed over may
        # not have sent its request yet: serve a moment more, then settle
        self.core.run_until(lambda: False, min(limit, _monotonic() + IDLE_GRACE))
        self.core.run_until(settled, limit)

    def refuse_the_rest(self):
        core = self.core
        core.drained = True   # what completes from now on is refused too
        for pending in list(core.pending.requests.values()):
            core.fail(pending, 503, _replies.SHUTTING_DOWN, PENDING_SHUTDOWN)
        for pool in core.pools:
            for item in pool.scheduler.drain():
                if hasattr(item, 'client'):
                    core.fail(item, 503, _replies.SHUTTING_DOWN,
                              PENDING_SHUTDOWN)

    def wait_for_workers(self, deadline):
        run_until = self.core.run_until
        gone = self.supervisor.all_gone
        run_until(gone, max(deadline, _monotonic() + SHUTDOWN_WORKER_GRACE))
        self.supervisor.kill_remaining('shutdown')
        run_until(gone, _monotonic() + KILL_WAIT)
        self.supervisor.wait_all()

    def clients_flushed(self):
        return not any(connection.has_data_to_send
                       for connection in self.core.server.connections)
