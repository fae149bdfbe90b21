"""/metrics: the dispatcher's counts as Prometheus families.

Built with prometheus_client from a registry of our own (no global state,
no multiprocess directory): one custom collector reads the Observer's
plain dicts and the pools' state when a scrape comes, next to
prometheus_client's collector of the dispatcher's own process. Imported
only when Dispatcher(metrics_path=...) is set.
"""

import time as _time

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import (
    CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily)
from prometheus_client.exposition import choose_encoder

from . import metrics as _metrics
from . import observe as _observe

P = 'uhttp_workers_'


def _buckets(cell):
    return _metrics.cumulative(_observe.BUCKETS, cell)


class Collector:
    """Every uhttp_workers_* family and the pools' user metrics."""

    def __init__(self, observer):
        self.observer = observer

    def describe(self):
        return []   # families are built at collect() time only

    def collect(self):
        yield from self.requests()
        yield from self.pools()
        yield from self.workers()
        yield from self.user_metrics()

    def requests(self):
        observer = self.observer
        total = CounterMetricFamily(
            P + 'requests_total', 'Requests answered, by pool, matched route '
            '(pattern, static prefix or sync path; "" when none matched), '
            'method and status (499: the client left first)',
            labels=['pool', 'route', 'method', 'status'])
        for (pool, route, method, status), count in list(
                observer.requests.items()):
            total.add_metric([pool, route, method, str(status)], count)
        yield total
        duration = HistogramMetricFamily(
            P + 'request_duration_seconds', 'From the request read to its '
            'response (or stream head) handed to the socket',
            labels=['pool', 'route'])
        for (pool, route), cell in list(observer.durations.items()):
            buckets, total_sum = _buckets(cell)
            duration.add_metric([pool, route], buckets, total_sum)
        yield duration
        wait = HistogramMetricFamily(
            P + 'queue_wait_seconds', 'From admission to a worker starting '
            'the request', labels=['pool'])
        for pool, cell in list(observer.queue_waits.items()):
            buckets, total_sum = _buckets(cell)
            wait.add_metric([pool], buckets, total_sum)
        yield wait
        timeouts = CounterMetricFamily(
            P + 'timeouts_total', 'Requests answered 504 (pool timeout)',
            labels=['pool'])
        rejected = CounterMetricFamily(
            P + 'rejected_total', 'Requests refused at admission, by reason '
            '(max_pending, degraded, no_worker, check)',
            labels=['pool', 'reason'])
        restarts = CounterMetricFamily(
            P + 'worker_restarts_total', 'Worker processes restarted after an '
            'unexpected end, by reason (died, stuck, ...)',
            labels=['pool', 'reason'])
        retired = CounterMetricFamily(
            P + 'worker_retirements_total', 'Workers retired gracefully, by '
            'reason (reload, max_requests, memory, resize)',
            labels=['pool', 'reason'])
        for pool in observer.core.pools:
            timeouts.add_metric([pool.name], observer.timeouts.get(pool.name, 0))
            for reason, count in list(pool.retired.items()):
                retired.add_metric([pool.name, reason], count)
        for (pool, reason), count in list(observer.rejected.items()):
            rejected.add_metric([pool, reason], count)
        for (pool, reason), count in list(observer.restarts.items()):
            restarts.add_metric([pool, reason], count)
        yield timeouts
        yield rejected
        yield restarts
        yield retired

    def pools(self):
        observer = self.observer
        core = observer.core
        depth = GaugeMetricFamily(
            P + 'queue_depth', 'Requests not started yet (pool queue and '
            'worker windows)', labels=['pool'])
        in_flight = GaugeMetricFamily(
            P + 'requests_in_flight', 'Requests handed to the pool and not '
            'answered yet (streams not counted)', labels=['pool'])
        streams = GaugeMetricFamily(
            P + 'streams_open', 'Open streamed responses (SSE, NDJSON; '
            'WebSockets are websockets_open)', labels=['pool'])
        degraded = GaugeMetricFamily(
            P + 'pool_degraded', '1 while the pool is degraded (answers 503)',
            labels=['pool'])
        counts = observer.pool_counts()
        for pool in core.pools:
            depth.add_metric([pool.name], pool.queue_size)
            flying, open_streams, _ = counts.get(pool.name, (0, 0, 0))
            in_flight.add_metric([pool.name], flying)
            streams.add_metric([pool.name], open_streams)
            degraded.add_metric([pool.name], 1 if pool.degraded else 0)
        yield depth
        yield in_flight
        yield streams
        yield degraded
        server = core.server
        connections = GaugeMetricFamily(
            P + 'connections_open', 'Client connections the dispatcher holds')
        connections.add_metric([], 0 if server is None else len(
            server.connections))
        yield connections
        websockets = GaugeMetricFamily(
            P + 'websockets_open', 'Accepted WebSocket connections')
        hub = getattr(core, 'ws', None)
        websockets.add_metric([], 0 if hub is None else hub.count)
        yield websockets

    def workers(self):
        observer = self.observer
        observer.sample_workers(_time.monotonic())
        states = GaugeMetricFamily(
            P + 'workers', 'Worker processes by state (ready, busy, paused, '
            'starting, backoff, parked)', labels=['pool', 'state'])
        rss = GaugeMetricFamily(
            P + 'worker_rss_bytes', 'Resident memory of the worker in a slot',
            labels=['pool', 'slot'])
        cpu = CounterMetricFamily(
            P + 'worker_cpu_seconds', 'CPU time of every process that ran in '
            'a slot', labels=['pool', 'slot'])
        remote = GaugeMetricFamily(
            P + 'remote_workers', 'Remote worker processes (a pool with a '
            'broker) by host and state; dead: died or silent for '
            'stuck_timeout; left: stopped as its command asked',
            labels=['pool', 'host', 'state'])
        for pool in observer.core.pools:
            by_state = dict.fromkeys(_observe.WORKER_STATES, 0)
            slots = set()
            for handle in pool.handles:
                by_state[observer.worker_state(handle)] += 1
                slots.add(handle.index)
            if pool.remote is not None:
                self.remote_workers(pool, remote, by_state)
            for state, count in by_state.items():
                states.add_metric([pool.name, state], count)
            for index in sorted(slots):
                owner = observer.slot_owner(pool, index)
                seen = observer.cpu_seen.get(owner.pid) if (
                    owner is not None and owner.alive) else None
                if seen is not None:
                    rss.add_metric([pool.name, str(index)], seen[3])
                cpu.add_metric([pool.name, str(index)],
                               observer.slot_cpu(pool, index))
        yield states
        yield rss
        yield cpu
        yield remote

    def remote_workers(self, pool, family, by_state):
        counts = {}
        for handle in pool.remote.roster.handles.values():
            state = 'left' if handle.left else 'dead'
            if handle.alive:
                state = self.observer.worker_state(handle)
                by_state[state] += 1
            key = (handle.host, state)
            counts[key] = counts.get(key, 0) + 1
        for (host, state), count in sorted(counts.items()):
            family.add_metric([pool.name, host, state], count)

    def user_metrics(self):
        """The pools' declared metrics, one family per name (the pool as a
        label; gauges per slot)."""
        families = {}
        for pool, totals in self.observer.user.items():
            for declaration in pool.metrics:
                name = declaration.name
                labels = list(declaration.labels)
                family = families.get(name)
                if declaration.kind == _metrics.COUNTER:
                    if family is None:
                        family = families[name] = CounterMetricFamily(
                            name, declaration.documentation,
                            labels=['pool'] + labels)
                    for key, value in list(totals.counters[name].items()):
                        family.add_metric([pool.name, *key], value)
                elif declaration.kind == _metrics.HISTOGRAM:
                    if family is None:
                        family = families[name] = HistogramMetricFamily(
                            name, declaration.documentation,
                            labels=['pool'] + labels)
                    for key, cell in list(totals.histograms[name].items()):
                        buckets, total_sum = _metrics.cumulative(
                            declaration.buckets, cell)
                        family.add_metric([pool.name, *key], buckets,
                                          total_sum)
                else:
                    if family is None:
                        family = families[name] = GaugeMetricFamily(
                            name, declaration.documentation,
                            labels=['pool', 'slot'] + labels)
                    for slot, key, value in totals.gauge_values(
                            name, lambda handle, pool=pool: _shown_slot(
                                pool, handle)):
                        family.add_metric([pool.name, str(slot), *key], value)
        yield from families.values()


def _shown_slot(pool, handle):
    """The slot a worker's gauges show under: the slot's active worker
    (a retiring one's values give way to its replacement's)."""
    owner = _observe.Observer.slot_owner(pool, handle.index)
    if owner is handle or owner is None:
        return handle.index
    return None


class Exposition:
    """The registry and its rendering for one Observer."""

    def __init__(self, observer):
        self.registry = CollectorRegistry(auto_describe=False)
        self.collector = Collector(observer)
        self.registry.register(self.collector)
        self.registry.register(ProcessCollector(registry=None))

    def render(self, accept):
        """(body bytes, content type) for a scrape's Accept header:
        OpenMetrics when asked for, else the Prometheus text format (also
        when prometheus_client cannot read the header: a client must not
        make the scrape fail)."""
        try:
            encoder, content_type = choose_encoder(by_preference(accept or ''))
        except Exception:  # pylint: disable=broad-except
            encoder, content_type = choose_encoder('')
        return encoder(self.registry), content_type


def by_preference(accept):
    """An Accept header's media ranges, most wanted first (by q, stable),
    without those refused (q=0): prometheus_client's choose_encoder()
    takes the first it knows, whatever its weight."""
    ranked = []
    for index, item in enumerate(accept.split(',')):
        weight = 1.0
        for param in item.split(';')[1:]:
            key, _, value = param.partition('=')
            if key.strip().lower() == 'q':
                try:
                    weight = float(value)
                except ValueError:
                    weight = 0.0
                if not 0.0 <= weight <= 1.0:  # (nan, inf, a typo)
                    weight = 0.0
        if weight > 0 and item.strip():
            ranked.append((-weight, index, item))
    wanted = []
    for _, _, item in sorted(ranked):
        wanted.append(item)
        if item.split(';')[0].strip().lower() in _TEXT_RANGES:
            break   # the text format is preferred to what follows
    return ','.join(wanted)


_TEXT_RANGES = ('text/plain', 'text/*', '*/*')
