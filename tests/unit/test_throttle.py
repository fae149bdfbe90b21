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
