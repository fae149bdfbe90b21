"""Throttle: a warning that floods is logged once per interval, the ones
held back counted and logged when the interval is over."""
from uhttp.workers import throttle as _throttle


class FakeLog:
    def __init__(self):
        self.lines = []

    def warning(self, message, *args):
        self.lines.append(message % args)


def test_a_flood_is_one_line_then_a_count(monkeypatch):
    now = [100.0]
    monkeypatch.setattr(_throttle, '_monotonic', lambda: now[0])
    log = FakeLog()
    throttle = _throttle.Throttle(log, interval=10)
    for index in range(500):
        throttle.warning('pool', "item %d dropped", index)
    assert len(log.lines) == 1 and log.lines[0].startswith('item 0 dropped')
    throttle.warning('other', "other %d", 1)  # another key: its own line
    assert len(log.lines) == 2
    now[0] += 5
    throttle.flush()
    assert len(log.lines) == 2
    now[0] += 5
    throttle.flush()
    assert log.lines[2:] == ['499 more like this in the last 10 s: item 499 dropped']
    throttle.flush()
    assert len(log.lines) == 3  # 'other' held nothing back: nothing to say
    throttle.warning('pool', "item %d dropped", 500)  # a new interval
    assert log.lines[3].startswith('item 500 dropped')


def test_a_warning_after_the_interval_says_the_count_first(monkeypatch):
    now = [0.0]
    monkeypatch.setattr(_throttle, '_monotonic', lambda: now[0])
    log = FakeLog()
    throttle = _throttle.Throttle(log, interval=10)
    throttle.warning('k', "x %d", 1)
    throttle.warning('k', "x %d", 2)
    now[0] = 12
    throttle.warning('k', "x %d", 3)
    assert log.lines[1] == '1 more like this in the last 12 s: x 2'
    assert log.lines[2].startswith('x 3 (more like it within 10 s')


class ErrorLog:
    def __init__(self):
        self.lines = []

    def error(self, message, *args):
        self.lines.append(message % args)


def test_a_timed_hook_failing_each_time_logs_one_traceback_then_a_count(
        monkeypatch):
    now = [0.0]
    monkeypatch.setattr(_throttle, '_monotonic', lambda: now[0])
    log = ErrorLog()
    repeated = _throttle.RepeatedFailure(log, 'on_idle()', interval=60)
    for _ in range(30):
        repeated.failed(ConnectionError('db down'), 'Traceback: here')
        now[0] += 1
    assert len(log.lines) == 1
    assert log.lines[0].startswith("on_idle() failed: ConnectionError('db down')")
    assert log.lines[0].endswith('Traceback: here')
    repeated.worked()   # the database is back
    assert log.lines[1] == ("on_idle() failed 29 more time(s) in the last "
                            "30 s with ConnectionError: db down")
    repeated.worked()
    assert len(log.lines) == 2   # nothing held: nothing more to say


def test_another_failure_or_a_minute_gone_logs_the_traceback_again(
        monkeypatch):
    now = [0.0]
    monkeypatch.setattr(_throttle, '_monotonic', lambda: now[0])
    log = ErrorLog()
    repeated = _throttle.RepeatedFailure(log, 'on_idle()', interval=60)
    repeated.failed(ValueError('a'), 'tb a')
    repeated.failed(ValueError('a'), 'tb a')
    repeated.failed(KeyError('b'), 'tb b')    # another failure: whole
    assert len(log.lines) == 3
    assert 'failed 1 more time(s)' in log.lines[1]
    assert log.lines[2].startswith("on_idle() failed: KeyError('b')")
    now[0] += 61
    repeated.failed(KeyError('b'), 'tb b')    # a minute on: whole again
    assert len(log.lines) == 4 and log.lines[3].endswith('tb b')
