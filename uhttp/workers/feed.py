"""The dashboard's feed: the dispatcher's own endpoints (/metrics, the
dashboard page, its data and its live events) and the once-a-second tick
that keeps the history the dashboard plots. A mixin of observe.Observer.
"""

import collections as _collections
import json as _json
import os as _os
import time as _time
import traceback as _traceback

from . import heartbeat as _heartbeat
from . import log as _log
from . import replies as _replies
from .pool import RETIRING
from .probe import probe_status

_monotonic = _time.monotonic

HISTORY = 300         # seconds of per-second samples the dashboard plots
TICK = 1.0


def percentile(ordered, fraction):
    if not ordered:
        return None
    index = min(len(ordered) - 1, max(0, int(round(fraction * (len(ordered) - 1)))))
    return ordered[index]


def ms(value):
    return None if value is None else round(value * 1000, 3)


class DashboardFeed:
    """The endpoints and the tick (state and counting live in Observer)."""

    # -- the dispatcher's own endpoints ------------------------------------------------

    def endpoint(self, client):
        """The handler for one of our paths, or None."""
        return self.endpoints.get(client.path)

    def serve(self, intake, client, handler, began):
        """Answer one of our paths (GET or HEAD; gated by do_check_sync)."""
        path = client.path
        method = client.method
        if method not in ('GET', 'HEAD'):
            client.respond({'error': 'Method Not Allowed'}, status=405,
                           headers={'allow': 'GET, HEAD'})
            self.served(client, began, 405, path, method=method, path=path)
            return
        if intake.hooks.overridden('do_check_sync'):
            with probe_status(client) as probe:
                allowed = intake.check(client, 'do_check_sync')
            if not allowed:
                self.served(client, began, probe.status or 500, path,
                            method=method, path=path)
                return
        try:
            status, size = handler(client)
        except Exception as err:  # pylint: disable=broad-except
            self.core.log.error("%s failed: %r\n%s", path, err,
                                _traceback.format_exc().rstrip())
            with probe_status(client) as probe:  # its size, for the log
                _replies.answer_error(client, 500)
            status, size = 500, probe.size
        if method == 'HEAD':
            size = 0   # the head only, as for every other HEAD answer
        self.served(client, began, status, path, size=size, method=method,
                    path=path)

    def serve_metrics(self, client):
        body, content_type = self.collector.render(
            client.headers.get('accept', ''))
        client.respond(body, status=200, headers={
            'content-type': content_type, 'cache-control': 'no-cache'})
        return 200, len(body)

    def serve_dashboard(self, client):
        from . import dashboard  # pylint: disable=import-outside-toplevel
        body = dashboard.page(self.events_path)
        client.respond(body, status=200, headers={
            'content-type': 'text/html; charset=UTF-8',
            'cache-control': 'no-cache'})
        return 200, len(body)

    def serve_data(self, client):
        body = _json.dumps(self.snapshot()).encode()
        client.respond(body, status=200, headers={
            'content-type': 'application/json', 'cache-control': 'no-cache'})
        return 200, len(body)

    def serve_events(self, client):
        if not client.start_stream(200, [('content-type', 'text/event-stream'),
                                         ('cache-control', 'no-cache')]):
            return 200, None
        if self.push(client, self.snapshot_text()):
            self.viewers.append(client)
        else:
            client.end_stream()   # a HEAD request: the head was all of it
        return 200, None

    @staticmethod
    def push(client, text):
        return client.send_chunk(b'event: status\ndata: ' + text + b'\n\n')

    # -- the tick: history, samples, the dashboard's events -------------------------

    def tick(self, now):
        self.core.loop.call_at(now + TICK, self.tick)
        try:
            self.sample_workers(now)
            stamp = round(_time.time(), 3)
            for pool in [p.name for p in self.core.pools] + [
                    name for name in self.samples if name not in
                    {p.name for p in self.core.pools}]:
                samples = self.samples.pop(pool, None) or []
                count = len(samples) + self.counted.pop(pool, 0)
                samples.sort()
                ring = self.history.get(pool)
                if ring is None:
                    ring = self.history[pool] = _collections.deque(
                        maxlen=HISTORY)
                elapsed = max(now - self.last_tick, 1e-6)
                ring.append([stamp, round(count / elapsed, 2),
                             ms(percentile(samples, 0.5)),
                             ms(percentile(samples, 0.99))])
            self.last_tick = now
            if self.viewers:
                text = self.snapshot_text()
                for client in list(self.viewers):
                    if not client.is_open or not self.push(client, text):
                        self.viewers.remove(client)
                        if client.is_open:
                            client.close()
        except Exception as err:  # pylint: disable=broad-except
            self.core.log.error("metrics tick failed: %r\n%s", err,
                                _traceback.format_exc().rstrip())

    def snapshot_text(self):
        return _json.dumps(self.snapshot(), separators=(',', ':')).encode()

    def worker_row(self, handle, now):
        """One worker's line on the dashboard."""
        core = self.core
        current = None
        if handle.alive:
            request_id = handle.slot.read()[3]
            pending = core.pending.get(request_id) if (
                request_id != _heartbeat.NO_REQUEST) else None
            if pending is not None:
                current = {'id': request_id, 'method': pending.method,
                           'path': pending.path,
                           'age': round(now - pending.accepted, 3)}
            elif request_id != _heartbeat.NO_REQUEST:
                current = {'id': request_id, 'method': None,
                           'path': None, 'age': None}
        seen = self.cpu_seen.get(handle.pid) if handle.alive else None
        remote = getattr(handle, 'remote', False)
        return {
            'slot': handle.index, 'pid': handle.pid,
            'host': handle.host if remote else None,
            'state': ('left' if handle.left else 'dead')
            if remote and not handle.alive else self.worker_state(handle),
            'role': handle.role,
            'retiring': handle.retire_reason
            if handle.role == RETIRING else None,
            'request': current,
            'rss': None if seen is None else seen[3],
            'cpu': None if seen is None else round(
                self.cpu_rate.get(handle.pid, 0.0), 1),
            'restarts': handle.record.restarts,
            'held': len(handle.held),
        }

    def snapshot(self):
        """The dashboard's view: pools, workers, history, last warnings."""
        core = self.core
        now = _monotonic()
        counts = self.pool_counts()
        pools = []
        for pool in core.pools:
            handles = sorted(pool.handles, key=lambda h: (h.index, h.role))
            if pool.remote is not None:
                handles += list(pool.remote.roster.handles.values())
            workers = [self.worker_row(handle, now) for handle in handles]
            in_flight, streams, sockets = counts.get(pool.name, (0, 0, 0))
            pools.append({
                'name': pool.name, 'degraded': pool.degraded,
                'queue': pool.queue_size, 'in_flight': in_flight,
                'streams': streams, 'websockets': sockets,
                'parked': pool.parked_count,
                'workers': workers,
                'restarts': sum(value for (name, _), value
                                in self.restarts.items() if name == pool.name),
                'timeouts': self.timeouts.get(pool.name, 0),
                'rejected': sum(value for (name, _), value
                                in self.rejected.items() if name == pool.name),
                'requests': sum(value for key, value in self.requests.items()
                                if key[0] == pool.name),
                'history': list(self.history.get(pool.name, ())),
            })
        server = core.server
        return {
            'time': round(_time.time(), 3),
            'uptime': round(_time.time() - self.started, 1),
            'pid': _os.getpid(),
            'connections': 0 if server is None else len(server.connections),
            'pending': len(core.pending),
            'requests': sum(self.requests.values()),
            'dispatcher': list(self.history.get('', ())),
            'pools': pools,
            'log': [{'time': round(when, 3), 'level': _log.level_name(level),
                     'name': name, 'message': text}
                    for when, level, name, text in self.log_ring],
        }
