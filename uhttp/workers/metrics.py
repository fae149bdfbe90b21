"""User metrics: declared on a pool, counted in its workers, exported by
the dispatcher.

    WorkerPool(JobWorker, metrics=[
        Counter('jobs_total', 'Jobs done', labels=['kind']),
        Histogram('job_seconds', 'Job time', buckets=(0.1, 1, 10)),
        Gauge('cache_items', 'Items cached')])

    # in the worker
    self.metrics['jobs_total'].inc(kind='x')

A worker adds to local deltas (`WorkerMetrics`) and sends them in one
W_METRICS message at most every FLUSH_INTERVAL seconds after a request
and once per heartbeat interval, never one message per call. The
dispatcher adds the deltas into totals kept per pool (`PoolTotals`), so a
counter keeps its total when the worker that counted dies; gauges are
kept per worker slot. Pure logic: no processes, no pipes.
"""

import bisect as _bisect
import math as _math
import re as _re
import threading as _threading

_bisect_left = _bisect.bisect_left
_INF = _math.inf
FLUSH_INTERVAL = 0.2
DEFAULT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                   10.0)
# label sets one family keeps (counters and histograms per pool, gauges
# per worker): label values taken from requests (ids, paths) would grow
# the dispatcher's memory and the scrape without end; past it a new label
# set is dropped and the dispatcher warns once per family
MAX_LABEL_SETS = 1000
COUNTER = 'counter'
GAUGE = 'gauge'
HISTOGRAM = 'histogram'

_NAME = _re.compile(r'[a-zA-Z_:][a-zA-Z0-9_:]*\Z')
_LABEL = _re.compile(r'[a-zA-Z_][a-zA-Z0-9_]*\Z')
# labels the dispatcher adds, or that the exposition format reserves
RESERVED_LABELS = frozenset(('pool', 'slot', 'le', 'quantile'))


class MetricError(ValueError):
    """A metric used against its declaration (name, labels, value)."""


class UnknownMetric(MetricError, KeyError):
    """A metric name that the pool did not declare."""

    def __str__(self):
        return str(self.args[0])


class _Declaration:
    kind = None

    def __init__(self, name, documentation, labels=()):
        if not isinstance(name, str) or not _NAME.match(name):
            raise ValueError(f"metric name {name!r} is not a valid Prometheus "
                             "name ([a-zA-Z_:][a-zA-Z0-9_:]*)")
        if name.startswith('uhttp_workers_') or name.startswith('process_'):
            raise ValueError(f"metric name {name!r}: the prefixes "
                             "'uhttp_workers_' and 'process_' are the "
                             "dispatcher's own")
        if not isinstance(documentation, str) or not documentation:
            raise TypeError(f"metric {name!r}: documentation must be a "
                            "non-empty str")
        if isinstance(labels, str) or not isinstance(labels, (list, tuple)):
            raise TypeError(f"metric {name!r}: labels must be a list of str, "
                            f"not {labels!r}")
        for label in labels:
            if not isinstance(label, str) or not _LABEL.match(label) or (
                    label.startswith('__')):
                raise ValueError(f"metric {name!r}: bad label name {label!r}")
            if label in RESERVED_LABELS:
                raise ValueError(f"metric {name!r}: the label {label!r} is "
                                 "reserved (added by the dispatcher or the "
                                 "exposition format)")
        if len(set(labels)) != len(labels):
            raise ValueError(f"metric {name!r}: a label appears twice in "
                             f"{list(labels)}")
        self.name = name
        self.documentation = documentation
        self.labels = tuple(labels)

    def same_as(self, other):
        return (type(self) is type(other) and self.labels == other.labels
                and getattr(self, 'buckets', None) == getattr(
                    other, 'buckets', None))

    def __repr__(self):
        return (f"{type(self).__name__}({self.name!r}, "
                f"labels={list(self.labels)})")


class Counter(_Declaration):
    """A count that only goes up: `.inc(amount=1, **labels)`."""

    kind = COUNTER


class Gauge(_Declaration):
    """A value that goes up and down, exported per worker slot:
    `.set(value, **labels)`, `.inc()`, `.dec()`."""

    kind = GAUGE


class Histogram(_Declaration):
    """Observations counted in buckets: `.observe(value, **labels)`."""

    kind = HISTOGRAM
    floor = -_INF   # (set per declaration: see __init__)

    def __init__(self, name, documentation, labels=(),
                 buckets=DEFAULT_BUCKETS):
        super().__init__(name, documentation, labels)
        try:
            bounds = [float(bound) for bound in buckets]
        except (TypeError, ValueError) as err:
            raise TypeError(f"histogram {name!r}: buckets must be numbers, "
                            f"not {buckets!r}") from err
        if bounds and bounds[-1] == _math.inf:
            bounds.pop()
        if not bounds or any(b != b for b in bounds) or any(
                a >= b for a, b in zip(bounds, bounds[1:])):
            raise ValueError(f"histogram {name!r}: buckets must be a "
                             f"non-empty increasing sequence, not {buckets!r}")
        self.buckets = tuple(bounds)
        # the least value observe() takes: with no negative bucket the
        # _sum is exported, and the exposition formats want it >= 0 (with
        # one, prometheus_client leaves _sum and _count out)
        self.floor = 0.0 if bounds[0] >= 0 else -_INF


def check_declarations(declarations, where='WorkerPool metrics'):
    """The declarations as a tuple, refusing duplicates and non-metrics."""
    if declarations is None:
        return ()
    if isinstance(declarations, _Declaration) or not isinstance(
            declarations, (list, tuple)):
        raise TypeError(f"{where} must be a list of Counter, Gauge and "
                        f"Histogram, not {declarations!r}")
    seen = {}
    for declaration in declarations:
        if not isinstance(declaration, _Declaration):
            raise TypeError(f"{where}: {declaration!r} is not a Counter, "
                            "Gauge or Histogram")
        if declaration.name in seen:
            raise ValueError(f"{where}: {declaration.name!r} declared twice")
        seen[declaration.name] = declaration
    check_series(declarations, where)
    return tuple(declarations)


def series_names(declaration):
    """The names a declaration takes in an exposition: its family's and
    its samples' (a counter 'jobs' and 'jobs_total' both are jobs_total)."""
    name = declaration.name
    if declaration.kind == COUNTER:
        base = name[:-len('_total')] if name.endswith('_total') else name
        return {base, base + '_total'}
    if declaration.kind == HISTOGRAM:
        return {name, name + '_bucket', name + '_count', name + '_sum'}
    return {name}


def check_series(declarations, where):
    """ValueError when two declarations of other names would export the
    same series: one scrape with both is refused by Prometheus."""
    taken = {}
    for declaration in declarations:
        for series in series_names(declaration):
            other = taken.setdefault(series, declaration)
            if other.name != declaration.name:
                raise ValueError(
                    f"{where}: {other!r} and {declaration!r} would export the "
                    f"same series {series!r}; rename one")


def label_key(declaration, labels, what):
    """The label values of a call, in declared order (str), or MetricError."""
    names = declaration.labels
    if len(labels) != len(names) or (names and not all(
            name in labels for name in names)):
        raise MetricError(
            f"metric {declaration.name!r} has labels {list(names)}; "
            f"{what}() got {sorted(labels)}")
    if not names:
        return ()
    return tuple(str(labels[name]) for name in names)


def bucket_index(bounds, value):
    """Index of the bucket `value` falls in (len(bounds) for +Inf): the
    first bound >= value, as Prometheus' `le` counts."""
    return _bisect_left(bounds, value)


# -- in the worker ------------------------------------------------------------------

class _Recorder:
    __slots__ = ('declaration', 'owner')

    def __init__(self, declaration, owner):
        self.declaration = declaration
        self.owner = owner

    def __repr__(self):
        return f"<{type(self).__name__} {self.declaration.name!r}>"


class CounterRecorder(_Recorder):
    __slots__ = ()

    def inc(self, amount=1, /, **labels):
        """Add `amount` (a finite number >= 0) to the counter with these
        label values."""
        value = _finite(amount)
        if value is None or value < 0.0:
            raise MetricError(f"counter {self.declaration.name!r}: inc() takes "
                              f"a finite amount >= 0, not {_shown(amount)}")
        key = label_key(self.declaration, labels, 'inc')
        owner = self.owner
        with owner.lock:
            values = owner.counters[self.declaration.name]
            values[key] = values.get(key, 0.0) + value
            owner.dirty = True


class GaugeRecorder(_Recorder):
    __slots__ = ()

    def set(self, value, /, **labels):
        """Set the gauge (of this worker's slot) to `value`."""
        self._store(value, labels, 'set', None)

    def inc(self, amount=1, /, **labels):
        self._store(amount, labels, 'inc', 1.0)

    def dec(self, amount=1, /, **labels):
        self._store(amount, labels, 'dec', -1.0)

    def _store(self, value, labels, what, sign):
        number = _finite(value)
        if number is None:
            raise MetricError(f"gauge {self.declaration.name!r}: {what}() "
                              f"takes a finite number, not {_shown(value)}")
        key = label_key(self.declaration, labels, what)
        owner = self.owner
        with owner.lock:
            values = owner.gauges[self.declaration.name]
            if sign is not None:
                number = values.get(key, 0.0) + sign * number
            values[key] = number
            owner.changed.setdefault(self.declaration.name, set()).add(key)
            owner.dirty = True


class HistogramRecorder(_Recorder):
    __slots__ = ()

    def observe(self, value, /, **labels):
        """Count one observation of `value`: a finite number, >= 0 unless
        a bucket bound is negative."""
        declaration = self.declaration
        number = _finite(value)
        if number is None or number < declaration.floor:
            wanted = 'a finite number' if declaration.floor else (
                'a finite number >= 0 (no bucket bound is negative, so its '
                '_sum is exported, which must not go down)')
            raise MetricError(f"histogram {declaration.name!r}: observe() "
                              f"takes {wanted}, not {_shown(value)}")
        key = label_key(declaration, labels, 'observe')
        bounds = declaration.buckets
        owner = self.owner
        with owner.lock:
            values = owner.histograms[declaration.name]
            cell = values.get(key)
            if cell is None:
                cell = values[key] = [0] * (len(bounds) + 1) + [0.0]
            cell[bucket_index(bounds, number)] += 1
            cell[-1] += number
            owner.dirty = True


def _finite(value):
    """`value` (an int or a float, not a bool) as a finite float, or None
    (NaN, an infinity, an int too large for a float, not a number): the
    dispatcher's totals and the exposition take floats only."""
    cls = value.__class__
    if cls is float:
        return value if -_INF < value < _INF else None
    if cls is not int and (isinstance(value, bool) or not isinstance(
            value, (int, float))):
        return None
    try:
        value = float(value)
    except OverflowError:
        return None
    return value if -_INF < value < _INF else None


def _exportable(value):
    """`value` as a float the exposition can show (an infinity that a sum
    reached included), or None: NaN, an int beyond a float, no number."""
    try:
        value = float(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return None if value != value else value


def _shown(value):
    """`value` for an error message, short (a huge int's repr is long, or
    refused past sys.get_int_max_str_digits())."""
    if isinstance(value, int) and value.bit_length() > 1024:
        return f"an int too large for a float ({value.bit_length()} bits)"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + '...'


_RECORDERS = {COUNTER: CounterRecorder, GAUGE: GaugeRecorder,
              HISTOGRAM: HistogramRecorder}


class WorkerMetrics:
    """A worker's `self.metrics`: the pool's metrics by name, and the
    deltas not sent to the dispatcher yet."""

    def __init__(self, declarations, pool_name='pool'):
        self.pool_name = pool_name
        self.lock = _threading.Lock()
        self.recorders = {}
        self.counters = {}
        self.gauges = {}
        self.histograms = {}
        self.changed = {}
        self.dirty = False
        self.last_flush = 0.0
        for declaration in declarations:
            self.recorders[declaration.name] = _RECORDERS[declaration.kind](
                declaration, self)
            {COUNTER: self.counters, GAUGE: self.gauges,
             HISTOGRAM: self.histograms}[declaration.kind][
                 declaration.name] = {}

    def __getitem__(self, name):
        recorder = self.recorders.get(name)
        if recorder is None:
            declared = ', '.join(sorted(self.recorders)) or 'none'
            raise UnknownMetric(
                f"no metric {name!r} is declared on pool {self.pool_name} "
                f"(declared: {declared}); add it to WorkerPool(metrics=[...])")
        return recorder

    def __contains__(self, name):
        return name in self.recorders

    def __iter__(self):
        return iter(self.recorders)

    def __len__(self):
        return len(self.recorders)

    def take(self):
        """The deltas since the last take() (and start new ones):
        {'c': {name: {labels: amount}}, 'g': {name: {labels: value}},
        'h': {name: {labels: [bucket counts..., sum]}}}."""
        with self.lock:
            deltas = {}
            counters = {name: values for name, values in self.counters.items()
                        if values}
            if counters:
                deltas['c'] = counters
                for name in counters:
                    self.counters[name] = {}
            histograms = {name: values for name, values
                          in self.histograms.items() if values}
            if histograms:
                deltas['h'] = histograms
                for name in histograms:
                    self.histograms[name] = {}
            if self.changed:
                deltas['g'] = {name: {key: self.gauges[name][key]
                                      for key in keys}
                               for name, keys in self.changed.items()}
                self.changed = {}
            self.dirty = False
        return deltas

    def flush(self, send, now):
        """Send the deltas (one W_METRICS message) when there are any."""
        self.last_flush = now
        if not self.dirty:
            return
        from .messages import W_METRICS  # pylint: disable=import-outside-toplevel
        deltas = self.take()
        if deltas:
            send((W_METRICS, deltas))

    def flush_due(self, send, now):
        """flush() when FLUSH_INTERVAL has passed since the last one."""
        if now - self.last_flush >= FLUSH_INTERVAL:
            self.flush(send, now)


# -- in the dispatcher ----------------------------------------------------------------

class PoolTotals:
    """A pool's user metrics as the dispatcher keeps them: counter and
    histogram totals over every worker that ever ran, gauges per worker
    (exported with its slot)."""

    def __init__(self, declarations):
        self.declarations = {d.name: d for d in declarations}
        self.counters = {d.name: {} for d in declarations if d.kind == COUNTER}
        self.histograms = {d.name: {} for d in declarations
                           if d.kind == HISTOGRAM}
        self.gauges = {}   # worker handle -> {name: {labels: value}}
        self.dropped = {}  # name -> label sets dropped past MAX_LABEL_SETS

    def add(self, source, deltas):
        """Add one W_METRICS message's deltas from worker `source`; the
        names whose label sets first went past MAX_LABEL_SETS (a list,
        for the caller to warn about once)."""
        full = []
        for name, values in deltas.get('c', {}).items():
            totals = self.counters.get(name)
            if totals is None:
                continue
            for key, amount in values.items():
                amount = _exportable(amount)  # (a worker of older code
                if amount is None or amount < 0.0:   # may send what no
                    continue                         # exposition shows)
                if key in totals:
                    totals[key] += amount
                elif self._room(totals, name, full):
                    totals[key] = amount
        for name, values in deltas.get('h', {}).items():
            totals = self.histograms.get(name)
            if totals is None:
                continue
            for key, cell in values.items():
                total = _exportable(cell[-1]) if cell else None
                if total is None or total < self.declarations[name].floor:
                    continue
                mine = totals.get(key)
                if mine is None:
                    if self._room(totals, name, full):
                        totals[key] = list(cell)
                elif len(mine) == len(cell):
                    for index, count in enumerate(cell):
                        mine[index] += count
        gauges = deltas.get('g')
        if gauges:
            mine = self.gauges.setdefault(source, {})
            for name, values in gauges.items():
                if name in self.declarations:
                    kept = mine.setdefault(name, {})
                    for key, value in values.items():
                        value = _exportable(value)
                        if value is not None and (
                                key in kept or self._room(kept, name, full)):
                            kept[key] = value
        return full

    def _room(self, kept, name, full):
        """Whether `kept` takes one more label set of `name`; a refusal is
        counted in `dropped`, and the first one listed in `full`."""
        if len(kept) < MAX_LABEL_SETS:
            return True
        if name not in self.dropped:
            full.append(name)
        self.dropped[name] = self.dropped.get(name, 0) + 1
        return False

    def forget(self, source):
        """A worker ended: its gauges go (a new one starts from nothing)."""
        self.gauges.pop(source, None)

    def gauge_values(self, name, slot_of):
        """[(slot, labels, value)] of gauge `name`; `slot_of(source)` is the
        slot a worker's values show under, or None to leave them out."""
        result = []
        for source, names in self.gauges.items():
            values = names.get(name)
            if not values:
                continue
            slot = slot_of(source)
            if slot is None:
                continue
            for key, value in values.items():
                result.append((slot, key, value))
        return result


def cumulative(bounds, cell):
    """[(le, cumulative count)] with '+Inf' last, and the sum, of a
    histogram cell [bucket counts..., sum]."""
    buckets = []
    total = 0
    for bound, count in zip(bounds, cell):
        total += count
        buckets.append((_float_text(bound), total))
    total += cell[len(bounds)]
    buckets.append(('+Inf', total))
    return buckets, cell[-1]


def _float_text(value):
    text = repr(float(value))
    return text
