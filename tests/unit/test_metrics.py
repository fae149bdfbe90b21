"""User metrics: declarations, label checks, delta batching in the worker,
merging in the dispatcher (pure, no processes)."""

import pytest

import uhttp.workers as workers
from uhttp.workers import messages as msg
from uhttp.workers import metrics as m


def declared():
    return [m.Counter('jobs_total', 'Jobs done', labels=['kind']),
            m.Gauge('cache_items', 'Items cached'),
            m.Histogram('job_seconds', 'Job time', buckets=(0.1, 1, 10))]


# -- declarations -------------------------------------------------------------------

class TestDeclarations:
    def test_public_names(self):
        assert workers.Counter is m.Counter
        assert workers.Gauge is m.Gauge
        assert workers.Histogram is m.Histogram

    @pytest.mark.parametrize('name', ['', '1abc', 'a-b', 'a b', None])
    def test_bad_name(self, name):
        with pytest.raises(ValueError, match='not a valid Prometheus name'):
            m.Counter(name, 'doc')

    @pytest.mark.parametrize('name', ['uhttp_workers_x', 'process_x'])
    def test_reserved_prefix(self, name):
        with pytest.raises(ValueError, match="dispatcher's own"):
            m.Gauge(name, 'doc')

    @pytest.mark.parametrize('label', ['pool', 'slot', 'le', 'quantile'])
    def test_reserved_label(self, label):
        with pytest.raises(ValueError, match='reserved'):
            m.Counter('x_total', 'doc', labels=[label])

    def test_bad_labels(self):
        with pytest.raises(TypeError, match='list of str'):
            m.Counter('x_total', 'doc', labels='kind')
        with pytest.raises(ValueError, match='bad label name'):
            m.Counter('x_total', 'doc', labels=['a-b'])
        with pytest.raises(ValueError, match='twice'):
            m.Counter('x_total', 'doc', labels=['a', 'a'])

    def test_documentation_required(self):
        with pytest.raises(TypeError, match='documentation'):
            m.Counter('x_total', '')

    def test_buckets(self):
        assert m.Histogram('h', 'doc', buckets=(1, 2, float('inf'))).buckets == (
            1.0, 2.0)
        with pytest.raises(ValueError, match='increasing'):
            m.Histogram('h', 'doc', buckets=(2, 1))
        with pytest.raises(ValueError, match='increasing'):
            m.Histogram('h', 'doc', buckets=())
        with pytest.raises(TypeError, match='numbers'):
            m.Histogram('h', 'doc', buckets=('a',))

    def test_pool_checks_declarations(self):
        class W(workers.Worker):
            pass
        pool = workers.WorkerPool(W, metrics=declared())
        assert [d.name for d in pool.metrics] == [
            'jobs_total', 'cache_items', 'job_seconds']
        assert 'metrics' not in pool.kwargs
        with pytest.raises(ValueError, match='declared twice'):
            workers.WorkerPool(W, metrics=[m.Counter('a', 'd'),
                                           m.Gauge('a', 'd')])
        with pytest.raises(TypeError, match='not a Counter'):
            workers.WorkerPool(W, metrics=['jobs'])
        with pytest.raises(TypeError, match='must be a list'):
            workers.WorkerPool(W, metrics=m.Counter('a', 'd'))

    def test_same_name_two_pools_must_agree(self):
        class A(workers.Worker):
            pass

        class B(workers.Worker):
            pass
        with pytest.raises(ValueError, match='declared differently'):
            workers.Dispatcher(metrics_path='/metrics', pools=[
                workers.WorkerPool(A, routes=['/a/**'],
                                   metrics=[m.Counter('n_total', 'd')]),
                workers.WorkerPool(B, metrics=[m.Gauge('n_total', 'd')])])


    @pytest.mark.parametrize('first,second', [
        (m.Counter('jobs', 'd'), m.Counter('jobs_total', 'd')),
        (m.Histogram('lat', 'd'), m.Gauge('lat_bucket', 'd')),
        (m.Counter('reqs', 'd'), m.Gauge('reqs_total', 'd')),
        (m.Histogram('lat', 'd'), m.Counter('lat_count', 'd'))])
    def test_names_that_would_export_the_same_series_are_refused(
            self, first, second):
        # both were exported under one name (two '# TYPE jobs_total'
        # blocks), a scrape Prometheus refuses as a whole
        class A(workers.Worker):
            pass

        class B(workers.Worker):
            pass
        with pytest.raises(ValueError, match='same series'):
            workers.WorkerPool(A, metrics=[first, second])
        with pytest.raises(ValueError, match='same series'):
            workers.Dispatcher(metrics_path='/metrics', pools=[
                workers.WorkerPool(A, routes=['/a/**'], metrics=[first]),
                workers.WorkerPool(B, metrics=[second])])

    def test_names_that_only_look_alike_are_fine(self):
        class A(workers.Worker):
            pass
        workers.WorkerPool(A, metrics=[
            m.Counter('a', 'd'), m.Counter('a_created', 'd'),
            m.Histogram('lat', 'd'), m.Gauge('lat_total', 'd'),
            m.Gauge('lat_max', 'd')])


# -- in the worker -----------------------------------------------------------------

class TestWorkerMetrics:
    def test_unknown_name_is_clear(self):
        metrics = m.WorkerMetrics(declared(), 'Jobs')
        with pytest.raises(KeyError) as caught:
            metrics['nope']
        text = str(caught.value)
        assert "'nope'" in text and 'Jobs' in text and 'jobs_total' in text
        assert isinstance(caught.value, workers.UnknownMetric)

    def test_wrong_labels_raise_at_the_call(self):
        metrics = m.WorkerMetrics(declared())
        with pytest.raises(workers.MetricError, match=r"labels \['kind'\]"):
            metrics['jobs_total'].inc()
        with pytest.raises(workers.MetricError, match='knd'):
            metrics['jobs_total'].inc(knd='x')
        with pytest.raises(workers.MetricError):
            metrics['jobs_total'].inc(kind='x', extra='y')
        with pytest.raises(workers.MetricError):
            metrics['cache_items'].set(3, kind='x')
        assert not metrics.dirty

    def test_bad_values(self):
        metrics = m.WorkerMetrics(declared())
        with pytest.raises(workers.MetricError, match='>= 0'):
            metrics['jobs_total'].inc(-1, kind='x')
        with pytest.raises(workers.MetricError):
            metrics['cache_items'].set('3')
        with pytest.raises(workers.MetricError):
            metrics['job_seconds'].observe(float('nan'))
        with pytest.raises(AttributeError):
            metrics['jobs_total'].set(1, kind='x')

    @pytest.mark.parametrize('amount', [
        10 ** 400, float('inf'), float('-inf'), float('nan'), -1, -0.5, True,
        '3', None], ids=['10**400', 'inf', '-inf', 'nan', '-1', '-0.5', 'True',
                         "'3'", 'None'])
    def test_a_counter_refuses_what_no_scrape_could_show(self, amount):
        # 10**400 summed as an int made every later scrape an OverflowError
        metrics = m.WorkerMetrics(declared())
        with pytest.raises(workers.MetricError,
                           match="counter 'jobs_total': inc.. takes a finite "
                                 "amount >= 0"):
            metrics['jobs_total'].inc(amount, kind='x')
        assert not metrics.dirty and metrics.take() == {}

    def test_accepted_values_are_kept_as_floats(self):
        metrics = m.WorkerMetrics(declared())
        metrics['jobs_total'].inc(kind='x')
        metrics['jobs_total'].inc(2 ** 70, kind='y')   # large, within a float
        metrics['cache_items'].set(3)
        metrics['job_seconds'].observe(2)
        deltas = metrics.take()
        assert deltas['c']['jobs_total'] == {('x',): 1.0, ('y',): 2.0 ** 70}
        values = [deltas['c']['jobs_total'][('x',)],
                  deltas['g']['cache_items'][()],
                  deltas['h']['job_seconds'][()][-1]]
        assert all(type(value) is float for value in values), values

    @pytest.mark.parametrize('call', ['set', 'inc', 'dec'])
    @pytest.mark.parametrize('value', [
        10 ** 400, -10 ** 400, float('inf'), float('-inf'), float('nan')],
        ids=['10**400', '-10**400', 'inf', '-inf', 'nan'])
    def test_a_gauge_refuses_values_that_are_not_finite(self, call, value):
        metrics = m.WorkerMetrics(declared())
        with pytest.raises(workers.MetricError,
                           match=f"gauge 'cache_items': {call}.. takes a "
                                 "finite number"):
            getattr(metrics['cache_items'], call)(value)
        assert not metrics.dirty and metrics.take() == {}

    @pytest.mark.parametrize('value', [
        10 ** 400, float('inf'), float('-inf'), float('nan'), '1'],
        ids=['10**400', 'inf', '-inf', 'nan', "'1'"])
    def test_a_histogram_refuses_values_that_are_not_finite(self, value):
        # inf then -inf made its _sum NaN
        metrics = m.WorkerMetrics(declared())
        with pytest.raises(workers.MetricError,
                           match="histogram 'job_seconds': observe.. takes a "
                                 "finite number"):
            metrics['job_seconds'].observe(value)
        assert not metrics.dirty and metrics.take() == {}

    def test_negative_observations_need_a_negative_bucket(self):
        # with no negative bound _sum is exported, and OpenMetrics refuses
        # a negative one; with one, prometheus_client leaves _sum out
        metrics = m.WorkerMetrics(declared() + [
            m.Histogram('delta', 'doc', buckets=(-1, 0, 1)),
            m.Histogram('from_zero', 'doc', buckets=(0, 1))])
        for name in ('job_seconds', 'from_zero'):
            with pytest.raises(workers.MetricError,
                               match=f"histogram {name!r}: observe.. takes a "
                                     "finite number >= 0 .*not -0.5"):
                metrics[name].observe(-0.5)
        assert not metrics.dirty
        metrics['from_zero'].observe(0)
        metrics['from_zero'].observe(-0.0)
        metrics['delta'].observe(-2)
        deltas = metrics.take()['h']
        assert deltas['delta'][()] == [1, 0, 0, 0, -2.0]
        assert deltas['from_zero'][()] == [2, 0, 0, 0.0]

    def test_a_huge_int_is_told_briefly(self):
        metrics = m.WorkerMetrics(declared())
        with pytest.raises(workers.MetricError) as caught:
            metrics['jobs_total'].inc(10 ** 5000, kind='x')  # no repr() of it
        assert str(caught.value).endswith(
            'not an int too large for a float (16610 bits)')

    def test_deltas_are_batched_and_reset(self):
        metrics = m.WorkerMetrics(declared())
        counter = metrics['jobs_total']
        for _ in range(3):
            counter.inc(kind='a')
        counter.inc(2, kind='b')
        metrics['cache_items'].set(7)
        metrics['cache_items'].inc()
        metrics['job_seconds'].observe(0.05)
        metrics['job_seconds'].observe(5)
        metrics['job_seconds'].observe(50)
        assert metrics.dirty
        deltas = metrics.take()
        assert deltas['c'] == {'jobs_total': {('a',): 3, ('b',): 2}}
        assert deltas['g'] == {'cache_items': {(): 8}}
        assert deltas['h'] == {'job_seconds': {(): [1, 0, 1, 1, 55.05]}}
        assert not metrics.dirty
        assert metrics.take() == {}
        counter.inc(kind='a')
        assert metrics.take() == {'c': {'jobs_total': {('a',): 1}}}

    def test_flush_sends_one_message_at_most_every_interval(self):
        metrics = m.WorkerMetrics(declared())
        sent = []
        for now in (10.0, 10.05, 10.1):
            metrics['jobs_total'].inc(kind='a')
            metrics.flush_due(sent.append, now)
        assert len(sent) == 1  # the first; the others wait for the interval
        assert sent[0][0] == msg.W_METRICS
        metrics.flush_due(sent.append, 10.0 + m.FLUSH_INTERVAL + 0.01)
        assert len(sent) == 2
        assert sent[1][1]['c'] == {'jobs_total': {('a',): 2}}
        metrics.flush(sent.append, 11.0)  # nothing new: nothing sent
        assert len(sent) == 2

    def test_label_values_are_text(self):
        metrics = m.WorkerMetrics(declared())
        metrics['jobs_total'].inc(kind=3)
        assert metrics.take()['c'] == {'jobs_total': {('3',): 1}}


# -- in the dispatcher ----------------------------------------------------------------

class TestPoolTotals:
    def test_values_no_exposition_shows_are_left_out(self):
        # a worker of older code (a remote one) may still send them: one
        # would make every later scrape fail
        totals = m.PoolTotals(declared())
        totals.add('w0', {'c': {'jobs_total': {('a',): 10 ** 400, ('b',): -1,
                                               ('c',): float('nan'),
                                               ('d',): 2}},
                          'g': {'cache_items': {(): float('nan')}},
                          'h': {'job_seconds': {
                              (): [1, 0, 0, 0, float('nan')],
                              ('y',): [1, 0, 0, 0, -2.0],
                              ('x',): []}}})
        assert totals.counters['jobs_total'] == {('d',): 2.0}
        totals.add('w0', {'c': {'jobs_total': {('d',): float('inf')}}})
        assert totals.counters['jobs_total'] == {('d',): float('inf')}
        assert totals.gauge_values('cache_items', lambda source: 0) == []
        assert totals.histograms['job_seconds'] == {}
        totals.add('w0', {'g': {'cache_items': {(): 3}}})
        assert totals.gauge_values('cache_items', lambda source: 0) == [
            (0, (), 3.0)]

    def test_counters_keep_totals_across_workers(self):
        totals = m.PoolTotals(declared())
        first, second = object(), object()
        totals.add(first, {'c': {'jobs_total': {('a',): 3}}})
        totals.forget(first)  # the worker died
        totals.add(second, {'c': {'jobs_total': {('a',): 2, ('b',): 1}}})
        assert totals.counters['jobs_total'] == {('a',): 5, ('b',): 1}

    def test_histograms_merge_element_wise(self):
        totals = m.PoolTotals(declared())
        totals.add(1, {'h': {'job_seconds': {(): [1, 0, 0, 0, 0.05]}}})
        totals.add(2, {'h': {'job_seconds': {(): [0, 2, 0, 1, 31.0]}}})
        cell = totals.histograms['job_seconds'][()]
        assert cell == [1, 2, 0, 1, 31.05]
        buckets, total = m.cumulative((0.1, 1.0, 10.0), cell)
        assert buckets == [('0.1', 1), ('1.0', 3), ('10.0', 3), ('+Inf', 4)]
        assert total == 31.05

    def test_gauges_per_worker_and_forgotten_when_it_ends(self):
        totals = m.PoolTotals(declared())
        totals.add('w0', {'g': {'cache_items': {(): 4}}})
        totals.add('w1', {'g': {'cache_items': {(): 9}}})
        slots = {'w0': 0, 'w1': 1}
        assert sorted(totals.gauge_values('cache_items', slots.get)) == [
            (0, (), 4), (1, (), 9)]
        totals.forget('w0')
        assert totals.gauge_values('cache_items', slots.get) == [(1, (), 9)]

    def test_unknown_names_are_ignored(self):
        totals = m.PoolTotals(declared())
        totals.add(1, {'c': {'other': {(): 1}}, 'h': {'other': {(): [1]}},
                       'g': {'other': {(): 1}}})
        assert totals.counters == {'jobs_total': {}}
        assert totals.gauge_values('other', lambda _: 0) == []


    def test_label_sets_stop_at_the_limit_and_the_first_drop_is_told(
            self, monkeypatch):
        monkeypatch.setattr(m, 'MAX_LABEL_SETS', 3)
        totals = m.PoolTotals(declared())
        many = {(str(i),): 1 for i in range(5)}
        assert totals.add(1, {'c': {'jobs_total': many}}) == ['jobs_total']
        assert sorted(totals.counters['jobs_total']) == [('0',), ('1',), ('2',)]
        # the kept ones still count; new ones are dropped, told only once
        assert totals.add(1, {'c': {'jobs_total': {('0',): 4, ('9',): 1}}}) == []
        assert totals.counters['jobs_total'][('0',)] == 5
        assert ('9',) not in totals.counters['jobs_total']
        assert totals.dropped == {'jobs_total': 3}

    def test_histograms_and_gauges_have_the_limit_too(self, monkeypatch):
        monkeypatch.setattr(m, 'MAX_LABEL_SETS', 2)
        totals = m.PoolTotals([
            m.Histogram('h', 'doc', labels=['k'], buckets=(1,)),
            m.Gauge('g', 'doc', labels=['k'])])
        cells = {(str(i),): [1, 0, 0.5] for i in range(3)}
        gauges = {(str(i),): i for i in range(3)}
        assert sorted(totals.add('w0', {'h': {'h': cells}, 'g': {'g': gauges}})
                      ) == ['g', 'h']
        assert len(totals.histograms['h']) == 2
        assert len(totals.gauge_values('g', lambda _: 0)) == 2
        totals.add('w0', {'g': {'g': {('0',): 7}}})   # a kept one changes
        assert (0, ('0',), 7) in totals.gauge_values('g', lambda _: 0)


def test_bucket_index():
    bounds = (0.1, 1.0, 10.0)
    assert [m.bucket_index(bounds, v) for v in (0, 0.1, 0.5, 1.0, 10, 11)] == [
        0, 0, 1, 1, 2, 3]
