"""Remote pools in the dispatcher: what their broker links bring in, applied
in the loop.

A remote pool's requests go to its Redis stream; its workers (on any
host, started with `uhttp-workers worker`) take them one at a time, say
so (the START notice) and answer on this dispatcher's answer stream. Here
those entries become what the relay, the pending table and `Core.end()`
know: worker handles, answers, stream chunks, logs and deaths. When the
broker cannot be reached the pool answers 503 with Retry-After; requests
sent and not started then are answered 503 at once, the others wait for
their answer (or their timeout) and come through once it is back.
"""

import os as _os
import secrets as _secrets
import socket as _socket
import time as _time

from . import broker as _broker
from . import brokerurl as _brokerurl
from . import channel as _channel
from . import delivery as _delivery
from . import heartbeat as _heartbeat
from . import messages as _msg
from . import remote as _remote
from . import remotelink as _remotelink
from . import spawn as _spawn
from . import workercommand as _workercommand
from .bodyview import BYTES_LIKE
from .loop import EVENT_READ, Wakeup
from .pending import PENDING_COMPLETED, PENDING_WORKER_DIED

_monotonic = _time.monotonic

BROKER_DOWN = 'broker_down'   # the metrics' rejected_total reason
RETRY_AFTER = {'retry-after': '1'}
_REQUEST_KINDS = frozenset((_msg.W_RESPONSE, _msg.W_FILE_RESPONSE,
                            _msg.W_STREAM_START, _msg.W_DEFERRED))
SAY_AGAIN_AFTER = 10.0        # a repeated broker problem: logged this often (s)


def dispatcher_name():
    """This dispatcher's name on the broker: unique per run."""
    return f"{_socket.gethostname()}:{_os.getpid()}:{_secrets.token_hex(3)}"


def request_message(item):
    """The M_REQUEST tuple for a pending request or a queued Request (its
    seq is the worker's to set)."""
    if not hasattr(item, 'client'):
        return _delivery.queued_message(item, 0)
    client = item.client
    try:
        remote = client.client_ip
    except Exception:  # pylint: disable=broad-except
        remote = None
    body = client.body
    if (body is not None and type(body) is not bytes
            and len(body) <= _broker.BODY_LIMIT):  # (larger: refused)
        # a remote worker gets the request's bytes only (not the buffer a
        # large body was read into, nor a spooled body's file)
        body = bytes(body)
    return (_msg.M_REQUEST, 0, item.request_id, client.method, client.path,
            client.query, client.headers, body, False, remote, item.context)


def pool_settings(pool):
    """What remote workers of `pool` take from the dispatcher."""
    return {
        'kwargs': pool.kwargs,
        'log_level': pool.log_level,
        'heartbeat_interval': pool.heartbeat_interval,
        'stuck_timeout': pool.stuck_timeout,
        'timeout': pool.timeout,
        'metrics': pool.metrics,
        'permanent_failure_exitcode': pool.permanent_failure_exitcode,
    }


class Burst:
    """A problem that comes in bursts (requests the broker did not take):
    said at once, then at most every SAY_AGAIN_AFTER s, with the count of
    those kept quiet meanwhile."""

    def __init__(self):
        self.count = 0
        self.said_at = None

    def add(self, count, now):
        """How many to tell of now (these and the quiet ones), or 0."""
        self.count += count
        if self.said_at is not None and now - self.said_at < SAY_AGAIN_AFTER:
            return 0
        self.said_at = now
        told, self.count = self.count, 0
        return told


def dead_reason(pool, handle, now, connected):
    """Why the roster found `handle` dead."""
    silent = now - handle.slot.heartbeat
    if silent <= pool.stuck_timeout and connected is not None:
        return f'silent for {silent:.1f}s and its connection to the broker closed'
    return f'no heartbeat for {pool.stuck_timeout}s (stuck_timeout)'


class RemotePool:
    """One remote pool's link, roster and state in the dispatcher."""

    def __init__(self, owner, pool, link):
        self.owner = owner
        self.pool = pool
        self.link = link
        self.roster = _remote.Roster(pool, link.control)
        self.up = False
        self.local_pid = None     # the process running its local workers
        self.down_reason = 'not connected yet'
        self.unsent = 0           # requests answered 503: the broker was down
        self.not_taken = Burst()  # requests the broker refused or lost
        self.last_error = None    # the link's last error, logged once

    @property
    def alive_count(self):
        return self.roster.alive_count

    def refusal(self):
        if not self.up:
            return BROKER_DOWN, 'Broker unavailable', RETRY_AFTER
        return None

    def status(self, now):
        return [handle.status(now) for handle in self.roster.handles.values()]

    def broker_status(self):
        return {'url': _brokerurl.redact(self.pool.broker), 'connected': self.up,
                'error': None if self.up else self.down_reason}


class RemotePools:
    """Every remote pool of one dispatcher (`core`)."""

    def __init__(self, core):
        self.core = core
        self.log = core.log
        self.name = dispatcher_name()
        self.pools = []
        self.wakeup = None

    def start(self, pool):
        """Connect `pool` to its broker (its workers come by themselves)."""
        if self.wakeup is None:
            self.wakeup = Wakeup(self.drain)
            self.core.loop.register(self.wakeup.read_fd, EVENT_READ,
                                    self.wakeup)
        keys = _broker.Keys(pool.name)
        try:
            settings = _broker.encode_settings(pool_settings(pool))
        except Exception as err:  # pylint: disable=broad-except
            raise TypeError(f"WorkerPool {pool.name}: its keyword arguments "
                            f"cannot be sent to remote workers: {err!r}") from err
        link = _remotelink.DispatcherLink(
            pool.broker, keys, keys.reply(self.name), pool.heartbeat_interval,
            self.wakeup.wake, settings, pool.timeout)
        if pool.configs:
            link.config = _channel.pack((_msg.M_CONFIG, pool.configs[-1]))
        state = RemotePool(self, pool, link)
        pool.remote = state
        pool.scheduler.submit = lambda item: self.submit(state, item)
        pool.scheduler.refuse = self.refuse
        pool.scheduler.cancel = link.cancel
        self.pools.append(state)
        if pool.num_workers:  # (forked before this link's threads start)
            self.start_local(state)
        link.start()
        self.core.loop.call_at(_monotonic() + pool.heartbeat_interval,
                               self.tick, state)

    def start_local(self, state):
        """num_workers > 0: this host serves the pool's stream too, with the
        worker command's processes (forked, holding none of our sockets)."""
        pool = state.pool
        _spawn.flush_std()
        pid = _os.fork()
        if pid == 0:
            code = 1
            try:
                self.core.supervisor.drop_in_child(set())
                code = _workercommand.WorkerCommand(
                    pool.worker_class, pool.broker, pool.name,
                    pool.num_workers).run_forked()
            finally:
                _os._exit(code)
        state.local_pid = pid
        self.log.debug("pool %s: %d local worker(s) of its stream (pid %d)",
                       pool.name, pool.num_workers, pid)

    def stop_local(self, state, timeout=5.0):
        pid, state.local_pid = state.local_pid, None
        if pid is None:
            return
        _workercommand.stop_process(pid, timeout)

    def close(self):
        for state in self.pools:
            state.pool.scheduler.drain()  # never to start: cancelled
            self.stop_local(state)
            state.link.stop()   # every link's threads end at once: each
        for state in self.pools:  # waits out its blocking read only once
            state.link.close()
        self.pools = []
        if self.wakeup is not None:
            loop = self.core.loop
            if loop.selector is not None:
                try:
                    loop.unregister(self.wakeup.read_fd)
                except (KeyError, ValueError, OSError):
                    pass
            self.wakeup.close()
            self.wakeup = None

    # -- requests out ------------------------------------------------------------

    def submit(self, state, item):
        """Send `item` to the pool's stream; False when the broker is down."""
        if not state.up:
            return False
        message = request_message(item)
        body = message[7]
        if isinstance(body, BYTES_LIKE) and len(body) > _broker.BODY_LIMIT:
            self.log.error("request %s to %s %s: its body (%d bytes) is above "
                           "the %d bytes pool %s sends to remote workers; "
                           "answering 413", message[2], message[3], message[4],
                           len(body), _broker.BODY_LIMIT, state.pool.name)
            state.pool.scheduler.queued.pop(message[2], None)
            if hasattr(item, 'client'):
                self.core.fail(item, 413, {'error': 'Payload Too Large'},
                               PENDING_COMPLETED)
            return True
        try:
            fields = _broker.encode_request(message, state.link.reply_stream,
                                            state.pool.timeout)
        except Exception as err:  # pylint: disable=broad-except
            self.log.error("request %s to %s %s cannot be sent to pool %s: %r",
                           message[2], message[3], message[4], state.pool.name,
                           err)
            state.pool.scheduler.queued.pop(message[2], None)
            if hasattr(item, 'client'):
                self.core.fail(item, 500, None, PENDING_COMPLETED)
            return True
        state.link.submit(message[2], fields)
        return True

    def refuse(self, pending):
        self.core.fail(pending, 503, {'error': 'Broker unavailable'},
                       PENDING_COMPLETED, RETRY_AFTER)

    # -- what the links brought in ------------------------------------------------

    def drain(self, data=None):
        del data
        for state in list(self.pools):
            for item in state.link.take():
                try:
                    self.apply(state, item)
                except Exception as err:  # pylint: disable=broad-except
                    self.log.error("pool %s: broker entry %r not applied: %r",
                                   state.pool.name, item[0], err)

    def apply(self, state, item):
        kind = item[0]
        now = _monotonic()
        if kind in ('replies', 'events'):
            handler = self.reply if kind == 'replies' else self.event
            for reply in item[1]:  # (one that fails costs itself only)
                try:
                    handler(state, reply, now)
                except Exception as err:  # pylint: disable=broad-except
                    self.log.error("pool %s: broker entry %s from %s not "
                                   "applied: %r", state.pool.name,
                                   reply.entry_id, reply.worker, err)
        elif kind == 'roster':
            connected = item[4]
            revived, dead = state.roster.beats(now, *item[1:])
            for handle in revived:
                self.log.warning("remote worker %s (pool %s) is heard from "
                                 "again", handle.worker, state.pool.name)
            for handle in dead:
                self.declare_dead(state, handle, dead_reason(
                    state.pool, handle, now, connected))
            for handle, request_id, pending in state.roster.take_lost():
                self.log.error("pool %s: remote worker %s lost request %s "
                               "(started in the broker, its reply lost; "
                               "the worker runs no such request); "
                               "answering 500", state.pool.name,
                               handle.worker, request_id)
                self.core.fail(pending, 500, {'error': 'Worker lost the '
                                              'request'}, PENDING_WORKER_DIED)
        elif kind == 'up':
            self.broker_up(state, now)
        elif kind == 'down':
            self.broker_down(state, item[1])
        elif kind in ('unsent', 'refused'):  # (the reader says if it is down)
            self.not_sent(state, item[1], item[2], now, kind == 'refused')
        elif kind == 'error':
            self.link_error(state, item[1])
        elif kind == 'warning':
            self.log.warning("pool %s: broker %s: %s", state.pool.name,
                             _brokerurl.redact(state.pool.broker), item[1])

    def not_sent(self, state, request_ids, reason, now, refused):
        """Requests the broker refused (not in Redis) or that were lost with
        the connection (maybe in Redis: cancelled): 503 now, and the
        broker's reason in the log, once per burst."""
        for pending in state.pool.scheduler.take(request_ids,
                                                 cancel=not refused):
            self.refuse(pending)
        told = state.not_taken.add(len(request_ids), now)
        if told:
            self.log.warning(
                "pool %s: %d request(s) not sent to broker %s, %s (%s); "
                "answered 503", state.pool.name, told,
                _brokerurl.redact(state.pool.broker), 'the broker refused them'
                if refused else 'the connection failed', reason)

    def link_error(self, state, text):
        """Said once (the link retries every half second), until the link
        is up again."""
        if text == state.last_error:
            return
        state.last_error = text
        self.log.error("pool %s: broker %s: %s", state.pool.name,
                       _brokerurl.redact(state.pool.broker), text)

    def broker_up(self, state, now):
        state.last_error = None
        if state.up:
            return
        state.up = True
        state.roster.grace(now)
        self.log.info("pool %s: broker %s reachable", state.pool.name,
                      _brokerurl.redact(state.pool.broker))

    def broker_down(self, state, reason):
        first = state.down_reason != reason
        state.down_reason = reason
        if not state.up:
            if first:  # (at start: the broker was never reached)
                self.log.error("pool %s: broker %s unreachable (%s); "
                               "answering 503 until it is reached",
                               state.pool.name,
                               _brokerurl.redact(state.pool.broker), reason)
            return
        state.up = False
        waiting = state.pool.scheduler.drain()
        self.log.error("pool %s: broker %s unreachable (%s); answering 503 "
                       "until it is back%s", state.pool.name,
                       _brokerurl.redact(state.pool.broker), reason,
                       f"; {len(waiting)} request(s) not started answered 503"
                       if waiting else '')
        for pending in waiting:
            if hasattr(pending, 'client'):
                state.unsent += 1
                self.refuse(pending)

    def reply(self, state, reply, now):
        handle = state.roster.get(reply.worker, now)
        if reply.kind == 'started':
            pending = state.pool.scheduler.started(handle, reply.request_id)
            if pending is not None:
                pending.started = now
                handle.slot.request_id = reply.request_id
                handle.start_ms[reply.request_id] = _broker.entry_ms(
                    reply.entry_id)
            return
        if reply.kind == 'keepalive':  # (its requests' deadlines move on)
            handle.slot.keepalive = handle.slot.heartbeat = now
            return
        if reply.kind != 'message':
            return
        if reply.number <= handle.last_number:
            self.log.debug("duplicate entry %s from %s dropped",
                           reply.number, handle.worker)
            return
        handle.last_number = reply.number
        message = reply.message
        kind = message[0]
        if kind == _msg.W_BOUNCE:
            state.pool.scheduler.bounced(handle, message[1])
            return
        if kind in _REQUEST_KINDS:
            request_id = message[1]
            pending = self.core.pending.get(request_id)
            if pending is None or pending.worker is not handle:
                handle.started.pop(request_id, None)
                handle.held.pop(request_id, None)
                if request_id != -1:
                    self.log.warning(
                        "late answer from remote worker %s for request %s "
                        "(already answered); dropped", handle.worker,
                        request_id)
                return
            message = _remote.with_local_start(message, pending.started)
            if kind in _remote.ANSWERS:
                handle.slot.request_id = _heartbeat.NO_REQUEST
        self.core.relay.relay(handle, [message])

    def event(self, state, reply, now):
        handle = state.roster.get(reply.worker, now)
        if reply.kind == 'death':
            self.declare_dead(state, handle, reply.reason, reply.left,
                              reply.exitcode)
            return
        if reply.kind != 'message':
            return
        message = reply.message
        kind = message[0]
        if kind == _msg.W_READY:
            handle.ready = True
            handle.alive = True
            self.log.debug("remote worker %s ready (pool %s)", handle.worker,
                           state.pool.name)
            self.core.control.workers_changed()
        elif kind in (_msg.W_LOG, _msg.W_ROUTES, _msg.W_METRICS,
                      _msg.W_FORWARD, _msg.W_PAUSE, _msg.W_RESUME):
            self.core.relay.relay(handle, [message])

    def declare_dead(self, state, handle, reason, left=False, exitcode=None):
        """A remote worker is gone: what it started ends with 500 now. One
        that `left` (its command stopping it, after the requests in hand)
        is no death: logged at INFO, not counted as a restart. `exitcode`:
        as its worker command saw it end (None: it went silent)."""
        if not handle.alive:
            return
        state.roster.died(handle)
        victims = state.pool.scheduler.victims(handle)
        if self.core.observe is not None:
            self.core.observe.forget_gauges(handle)
        if left and not victims:
            handle.left = True
            self.log.info("remote worker %s (pool %s, host %s, pid %s) left: "
                          "%s", handle.worker, state.pool.name, handle.host,
                          handle.pid, reason)
            return
        self.log.error("remote worker %s (pool %s, host %s, pid %s) died: %s%s",
                       handle.worker, state.pool.name, handle.host, handle.pid,
                       reason, f"; {len(victims)} request(s) lost"
                       if victims else '')
        if self.core.observe is not None:
            self.core.observe.restarted(handle, 'remote_died')
        self.core.hooks.call('on_worker_died', state.pool, handle.index,
                             reason, exitcode, victims)
        for _, pending in victims:
            self.core.fail(pending, 500, {'error': 'Worker died'},
                           PENDING_WORKER_DIED)

    def tick(self, now, state):
        if state not in self.pools:
            return
        self.core.loop.call_at(now + state.pool.heartbeat_interval, self.tick,
                               state)
        state.pool.scheduler.prune()
        state.roster.forget_dead()
        if state.local_pid is not None and _workercommand.ended(state.local_pid):
            self.log.error("pool %s: the process of its local workers ended; "
                           "starting it again", state.pool.name)
            state.local_pid = None
            if not self.core.stopping:
                self.start_local(state)

