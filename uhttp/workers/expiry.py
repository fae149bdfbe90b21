"""Request timeouts: a request past its pool's `timeout` is answered 504,
unless its worker called keep_alive() since; the WARNING says where the
request was (its handler running, deferred, never started and why)."""

from . import heartbeat as _heartbeat
from . import log as _log
from .pending import PENDING_TIMEOUT


def expire(core, now):
    """504 for the requests of `core` past their deadline at `now`."""
    table = core.pending
    due = table.next_deadline()
    if due is None or due > now:
        return
    # the loop may have been held up (a slow sync handler or hook, no CPU
    # for a while): answers the workers already sent are read before a 504
    core.serve_workers()
    for pool in core.pools:
        while True:
            pending = table.pop_due(pool, now)
            if pending is None:
                break
            if kept_alive(table, pending, now):
                continue
            core.log.warning(
                "request %s (%s %s) timed out after %ss in pool %s%s",
                pending.request_id, pending.method,
                _log.client_text(pending.client.path),
                pool.timeout, pool.name, where(pending, pool))
            if core.observe is not None:
                core.observe.timed_out(pool)
            core.fail(pending, 504, {'error': 'Gateway Timeout'},
                      PENDING_TIMEOUT)


def kept_alive(table, pending, now):
    """True (and a new deadline) when its worker called keep_alive() since
    the deadline was set, having started it: one still waiting in the
    worker's window (behind a long handler that keeps itself alive) times
    out as it would in the pool's queue."""
    handle = pending.worker
    if handle is None or not handle.alive or not started_by(handle, pending):
        return False
    timeout = pending.pool.timeout
    keepalive = handle.slot.read()[1]
    if keepalive > pending.deadline - timeout and keepalive + timeout > now:
        table.extend(pending, keepalive + timeout)
        return True
    return False


def started_by(handle, pending):
    """True once `handle` started `pending` (deferred or streaming since,
    it has left the worker's window)."""
    for seq, request_id, _ in handle.inflight:
        if request_id == pending.request_id:
            return seq <= handle.slot.started()
    return True


def where(pending, pool):
    """Where a request was when it timed out, for its WARNING."""
    if pool.broker is not None:
        return ''   # (a remote worker's state is not known here)
    handle = pending.worker
    if handle is None:
        live = [each for each in pool.handles if each.alive and each.ready]
        if live and not any(each.accepting for each in live):
            return ": never started, every worker of the pool is paused"
        return (f": never started, {pool.queue_size} request(s) queued "
                "for a free worker")
    name = f"{handle.name} (pid {handle.pid})"
    if pending.request_id in handle.held:
        return f": deferred by {name}"
    current = handle.slot.read()[3] if handle.alive else None
    if current == pending.request_id:
        return f": its handler still running in {name}"
    if current is not None and current != _heartbeat.NO_REQUEST:
        return f": waiting in {name}, busy with request {current}"
    return f": taken by {name}"
