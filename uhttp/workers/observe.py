"""What the dispatcher sees of every request, kept for operators: the
counts behind /metrics, the access log, the dashboard's history and the
last warnings.

`Observer` exists only when one of Dispatcher(metrics_path=...,
dashboard_path=..., access_log=...) is on; the places that already know
how a request ended call it (Core.end() for pooled requests, the intake
for static files, sync handlers, 404/405 and refusals, the supervisor for
restarts, expiry.expire() for timeouts). It keeps plain dicts and ints: the
Prometheus families are built from them only when /metrics is scraped
(exposition.py), so no metrics object is touched per request.
"""

import bisect as _bisect
import collections as _collections
import os as _os
import time as _time

from . import heartbeat as _heartbeat
from .accesslog import ACCESS_NAME, AccessLog, client_address, query_of
from . import log as _log
from . import metrics as _metrics
from . import feed as _feed
from . import intake as _intake
from . import routing as _routing
from . import wssession as _wssession
from .http.parse import METHODS as _METHODS
from .probe import probe_status
from .feed import TICK
from .pool import ACTIVE

_monotonic = _time.monotonic
_bisect_left = _bisect.bisect_left

# request duration and queue wait buckets (seconds)
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
           1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
SAMPLE_CAP = 20000    # durations kept per pool per second for percentiles
LOG_RING = 50         # warnings and errors the dashboard shows
DISCONNECTED = 499    # the status counted when the client left unanswered


# rejected_total reasons
MAX_PENDING, DEGRADED, NO_WORKER = (
    _intake.MAX_PENDING, _intake.DEGRADED, _intake.NO_WORKER)
CHECK = 'check'

WORKER_STATES = ('ready', 'busy', 'paused', 'starting', 'backoff', 'parked')

try:
    _TICKS = _os.sysconf('SC_CLK_TCK')
    _PAGE = _os.sysconf('SC_PAGE_SIZE')
except (AttributeError, ValueError, OSError):  # pragma: no cover
    _TICKS, _PAGE = 100, 4096


def check_path(value, name):
    """A Dispatcher metrics_path/dashboard_path: None or '/...'."""
    if value is None:
        return None
    if not isinstance(value, str) or not value.startswith('/') or (
            '?' in value or '#' in value or ' ' in value):
        raise ValueError(f"Dispatcher {name} must be None or a path such as "
                         f"'/metrics', not {value!r}")
    return value


def dashboard_paths(dashboard_path):
    """The paths `dashboard_path` serves: the page, its events, its data."""
    base = dashboard_path.rstrip('/') or ''
    return (dashboard_path, base + '/events', base + '/data')


def proc_times(pid):
    """(cpu seconds, rss bytes) of process `pid` from /proc, or None."""
    try:
        with open(f'/proc/{pid}/stat', 'rb') as stat:
            fields = stat.read().rsplit(b')', 1)[1].split()
        # after the ')': state is field 3, utime 14, stime 15, rss 24
        return (int(fields[11]) + int(fields[12])) / _TICKS, (
            int(fields[21]) * _PAGE)
    except (OSError, ValueError, IndexError):
        return None


def histogram_cell():
    return [0] * (len(BUCKETS) + 1) + [0.0]




class Observer(_feed.DashboardFeed):
    """The dispatcher's counts, access log, history and log ring."""

    def __init__(self, core, metrics_path, dashboard_path, access_format):
        self.core = core
        self.metrics_path = metrics_path
        self.dashboard_path = dashboard_path
        self.access = AccessLog(access_format) if access_format else None
        # behind trusted proxies the client's address comes from the
        # request's X-Forwarded-For, gone once the answer reset the
        # connection: it is read while the request is there
        self.forwarded = self.access is not None and bool(
            core.settings.http_options.get('trusted_proxies'))
        self.remote = None      # that address, for the request on_request() routes
        self.query = None       # and its query string, for the access log
        self.started = _time.time()
        self.requests = {}      # (pool, route, method, status) -> count
        self.durations = {}     # (pool, route) -> histogram cell
        self.route_tables = {}  # worker route patterns -> RouteTable
        self.queue_waits = {}   # pool -> histogram cell
        self.timeouts = {}      # pool -> count
        self.rejected = {}      # (pool, reason) -> count
        self.restarts = {}      # (pool, reason) -> count
        self.user = {pool: _metrics.PoolTotals(pool.metrics)
                     for pool in core.pools}
        self.cpu_base = {}      # (pool, slot) -> cpu seconds of ended processes
        self.cpu_seen = {}      # pid -> [pool, slot, cpu seconds, rss, when]
        self.cpu_rate = {}      # pid -> cpu percent over the last tick
        self.log_ring = _collections.deque(maxlen=LOG_RING)
        self.samples = {}       # pool name -> durations of this second
        self.counted = {}       # pool name -> requests this second beyond the samples
        self.history = {}       # pool name -> deque of [t, rps, p50, p99]
        self.viewers = []       # dashboard event streams
        self.endpoints = {}
        self.collector = None
        if metrics_path:
            from . import exposition  # pylint: disable=import-outside-toplevel
            self.collector = exposition.Exposition(self)
            self.endpoints[metrics_path] = self.serve_metrics
        if dashboard_path:
            _, events, data = dashboard_paths(dashboard_path)
            self.endpoints[dashboard_path] = self.serve_dashboard
            self.endpoints[events] = self.serve_events
            self.endpoints[data] = self.serve_data
            self.events_path = events
        declared = {}
        for pool in core.pools:
            for declaration in pool.metrics:
                other = declared.setdefault(declaration.name, declaration)
                if not other.same_as(declaration):
                    raise ValueError(
                        f"metric {declaration.name!r} is declared differently "
                        f"on two pools ({other!r} and {declaration!r})")
        _metrics.check_series(list(declared.values()), 'the pools\' metrics')
        core.log_taps.append(self.tap)

    # -- life ------------------------------------------------------------------------

    def start(self, now):
        self.last_tick = now
        self.core.loop.call_at(now + TICK, self.tick)

    def tap(self, name, level, text):
        if level >= _log.LOG_WARNING:
            self.log_ring.append((_time.time(), level, name, text[:2000]))

    # -- requests ----------------------------------------------------------------------

    def pooled(self, pending):
        """A pooled request ended (from Core.end()). Runs once per request:
        kept to a few dict operations."""
        now = _monotonic()
        pool = pending.pool.name
        handle = pending.worker
        route = ''
        index = pending.route
        if index is not None and index >= 0 and handle is not None:
            routes = handle.routes
            if index < len(routes):
                route = routes[index]
        elif index is None:   # no answer said it (a crash, a timeout, a refusal)
            route = self.route_of(pending, handle)
        status = pending.status
        if status is None:
            status = DISCONNECTED
        head = pending.head_at
        accepted = pending.accepted
        duration = (now if head is None else head) - accepted
        self.count(pool, route, pending.method, status, duration)
        started = pending.started
        if started is not None:
            wait = started - accepted
            if wait < 0:
                wait = 0.0
            cell = self.queue_waits.get(pool)
            if cell is None:
                cell = self.queue_waits[pool] = histogram_cell()
            cell[_bisect_left(BUCKETS, wait)] += 1
            cell[-1] += wait
        if self.access is not None:
            self.access_line(pending.client, pending.method, pending.path,
                             status, pending.size, duration, pool,
                             None if handle is None else handle.index, route,
                             pending.request_id, pending.remote, pending.query)

    def route_of(self, pending, handle):
        """The route pattern a request no answer labelled would have taken,
        matched here against its worker's (or its pool's) route table; ''
        when none matches. Off the common path: answers carry the index."""
        return self.route_for(pending.pool, handle, pending.method,
                              pending.path)

    def route_for(self, pool, handle, method, path):
        routes = handle.routes if handle is not None else ()
        if not routes:
            others = pool.handles
            if isinstance(others, dict):    # a remote pool's, by name
                others = others.values()
            routes = next((other.routes for other in others
                           if other.routes), ())
        if not routes or path is None:
            return ''
        table = self.route_tables.get(routes)
        if table is None:
            table = _routing.RouteTable()
            for position, text in enumerate(routes):
                try:
                    table.add(text, None, position)
                except _routing.PatternError:
                    continue
            if len(self.route_tables) > 64:
                self.route_tables.clear()
            self.route_tables[routes] = table
        target, _ = table.lookup(method, path)
        return '' if target is None else routes[target]

    def count(self, pool, route, method, status, duration):
        requests = self.requests
        key = (pool, route, method, status)
        requests[key] = requests.get(key, 0) + 1
        cell = self.durations.get((pool, route))
        if cell is None:
            cell = self.durations[(pool, route)] = histogram_cell()
        cell[_bisect_left(BUCKETS, duration)] += 1
        cell[-1] += duration
        samples = self.samples.get(pool)
        if samples is None:
            samples = self.samples[pool] = []
        if len(samples) < SAMPLE_CAP:
            samples.append(duration)
        else:
            self.counted[pool] = self.counted.get(pool, 0) + 1

    def served(self, client, began, status, route='', pool='', size=None,
               method=None, path=None):
        """A request the dispatcher answered itself (static, sync, 404,
        405, refusals); `began` is when the intake got it."""
        duration = _monotonic() - began
        method = method or client.method
        self.count(pool, route, method, status, duration)
        if self.access is not None:
            self.access_line(client, method, path or client.path, status,
                             size, duration, pool, None, route, None,
                             self.remote, self.query)

    def refused(self, client, began, pool, reason, status, method=None,
                path=None, size=None):
        """Admission refused a request for `pool` (503, or do_check's
        answer of `size` bytes)."""
        key = (pool.name, reason)
        self.rejected[key] = self.rejected.get(key, 0) + 1
        route = ''
        if reason == MAX_PENDING:  # the canned answer
            size = 0 if (method or client.method) == 'HEAD' else size
        elif reason == CHECK:      # do_check's 401 or 403, per route
            route = self.route_for(pool, None, method or client.method,
                                   path or client.path)
        self.served(client, began, status, route, pool.name, size=size,
                    method=method, path=path)

    def answered_early(self, client, began, status, size, pool, reason):
        """A request answered from its head (intake.answer_before_body())."""
        self.remote = client_address(client) if self.forwarded else None
        self.query = query_of(client)
        if reason is None:
            return self.served(client, began, status, size=size)
        return self.refused(client, began, pool, reason, status, size=size)

    def refused_early(self, client, status, size=None):
        """The HTTP layer answered before a request was routed (`size`
        bytes of body): counted with pool and route '', and its method
        when the head was read; the access line gives the method and
        target as sent when the head could not be parsed."""
        sent, path, query = client.method, client.path, query_of(client)
        if sent is None and client.refused_line:
            sent, _, path = client.refused_line.partition(' ')
            path, query = path.rpartition(' HTTP/')[0] or path, None
        if sent == 'HEAD':
            size = 0
        started = client.request_started
        duration = max(0.0, _time.time() - started) if started else 0.0
        self.count('', '', client.method if client.method in _METHODS else '',
                   status, duration)
        if self.access is not None:
            self.access_line(client, sent or '', path, status, size, duration,
                             '', None, '', None, query=query)

    def timed_out(self, pool):
        self.timeouts[pool.name] = self.timeouts.get(pool.name, 0) + 1

    def access_line(self, client, method, path, status, size, duration, pool,
                    slot, route, request_id, remote=None, query=None):
        if remote is None:
            remote = client_address(client)
        try:
            text = self.access.line(remote, method, path, status, size,
                                    duration, pool, slot, route, request_id,
                                    query=query)
        except Exception as err:  # pylint: disable=broad-except
            text = f"access log format failed: {err!r}"
        self.core.log_record(ACCESS_NAME, _log.LOG_INFO, text)

    # -- workers -----------------------------------------------------------------------

    def routes(self, handle, patterns):
        handle.routes = tuple(patterns)

    def worker_metrics(self, handle, deltas):
        totals = self.user.get(handle.pool)
        if totals is not None:
            for name in totals.add(handle, deltas):
                self.core.log.warning(
                    "pool %s: metric %r has %d label sets; new ones are "
                    "dropped (label values taken from requests, such as "
                    "ids, grow without end)", handle.pool.name, name,
                    _metrics.MAX_LABEL_SETS)

    def restarted(self, handle, reason):
        key = (handle.pool.name, reason)
        self.restarts[key] = self.restarts.get(key, 0) + 1

    def worker_gone(self, handle):
        """A worker process ended: its CPU time stays with its slot, its
        gauges go."""
        seen = self.cpu_seen.pop(handle.pid, None)
        self.cpu_rate.pop(handle.pid, None)
        if seen is not None:
            key = (seen[0], seen[1])
            self.cpu_base[key] = self.cpu_base.get(key, 0.0) + seen[2]
        self.forget_gauges(handle)

    def forget_gauges(self, handle):
        """A worker's gauges go with it (a remote one's too: its pid is
        another host's, so it has no CPU time here to keep)."""
        totals = self.user.get(handle.pool)
        if totals is not None:
            totals.forget(handle)

    def sample_workers(self, now):
        """Read every live worker's CPU and RSS from /proc."""
        for pool in self.core.pools:
            for handle in pool.handles:
                if not handle.alive or handle.pid is None:
                    continue
                found = proc_times(handle.pid)
                if found is None:
                    continue
                cpu, rss = found
                seen = self.cpu_seen.get(handle.pid)
                if seen is not None and now > seen[4]:
                    self.cpu_rate[handle.pid] = max(
                        0.0, (cpu - seen[2]) / (now - seen[4]) * 100)
                self.cpu_seen[handle.pid] = [pool.name, handle.index, cpu,
                                             rss, now]

    def slot_cpu(self, pool, index):
        total = self.cpu_base.get((pool.name, index), 0.0)
        for handle in pool.handles:
            if handle.index == index and handle.alive:
                seen = self.cpu_seen.get(handle.pid)
                if seen is not None:
                    total += seen[2]
        return total

    @staticmethod
    def worker_state(handle):
        if handle.parked:
            return 'parked'
        if not handle.alive:
            return 'backoff' if handle.restart_at is not None else 'starting'
        if not handle.ready:
            return 'starting'
        if not handle.accepting:
            return 'paused'
        if handle.slot.read()[3] != _heartbeat.NO_REQUEST:
            return 'busy'
        return 'ready'

    @staticmethod
    def slot_owner(pool, index):
        """The handle whose values show for slot `index`: the active one."""
        fallback = None
        for handle in pool.handles:
            if handle.index == index:
                if handle.role == ACTIVE:
                    return handle
                fallback = fallback or handle
        return fallback

    def pool_counts(self):
        """{pool name: [in flight, streams, websockets]} from the pending
        table (an accepted WebSocket is not a stream, as in status())."""
        counts = {pool.name: [0, 0, 0] for pool in self.core.pools}
        hub = getattr(self.core, 'ws', None)
        sockets = {} if hub is None else hub.sessions
        for pending in list(self.core.pending.requests.values()):
            entry = counts.get(pending.pool.name)
            if entry is not None:
                if pending.request_id in sockets:
                    entry[2] += 1
                elif pending.streaming:
                    entry[1] += 1
                else:
                    entry[0] += 1
        return counts

    def on_request(self, intake, client):
        """Intake.on_request() with every answer counted: the same
        routing, through the intake's own steps."""
        began = intake.core.now()
        path = client.path
        method = client.method
        if self.forwarded:
            self.remote = client_address(client)
        if self.access is not None:
            self.query = query_of(client)
        if intake.core.stopping:
            with probe_status(client) as probe:
                refused = intake.refused_while_stopping(client)
            if refused:
                self.served(client, began, 503, size=probe.size,
                            method=method, path=path)
                return
        handler = self.endpoints.get(path)
        if handler is not None:
            self.serve(intake, client, handler, began)
            return
        if intake.static and (method == 'GET' or method == 'HEAD'):
            mount, rest = intake.mount_for(path)
            if mount is not None:
                with probe_status(client) as probe:
                    answered = intake.serve_file(client, mount, rest)
                if answered:
                    self.served(client, began, probe.status or 200,
                                mount.prefix, size=probe.size, method=method,
                                path=path)
                    return
        kind, target, params = intake.destination(method, path)
        if kind is _intake.SYNC:
            with probe_status(client) as probe:
                intake.run_sync(client, target, params)
            self.served(client, began, probe.status or 500, target[2],
                        size=probe.size, method=method, path=path)
            return
        if kind is _intake.NOWHERE:
            with probe_status(client) as probe:
                status = intake.not_found(client, target)
            self.served(client, began, status, size=probe.size,
                        method=method, path=path)
            return
        pool = target
        if intake.hooks.overridden('do_check'):
            with probe_status(client) as probe:
                admitted = intake.check(client, 'do_check')
            if not admitted:
                self.refused(client, began, pool, CHECK,
                             probe.status or 500, method, path, probe.size)
                return
        if _wssession.is_upgrade(client):
            with probe_status(client) as probe:
                refused = intake.core.ws.refuse(client)
            if refused:
                self.served(client, began, probe.status or 400,
                            size=probe.size, method=method, path=path)
                return
        reason = intake.admit(client, pool)
        if reason is not None:  # admission refused it (and answered 503)
            self.refused(client, began, pool, reason, 503, method, path,
                         intake.refused_size)


def create(core):
    """The Observer for `core`'s settings, or None when all is off."""
    settings = core.settings
    if not (settings.metrics_path or settings.dashboard_path
            or settings.access_format):
        return None
    return Observer(core, settings.metrics_path, settings.dashboard_path,
                    settings.access_format)
