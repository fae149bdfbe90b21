"""pending.py: the pending table's states, finish() exactly once, streams
and deadlines (pure, no processes)."""

import itertools
import time

import pytest

from uhttp.workers import pending as p


class Pool:
    def __init__(self, name='P', timeout=10):
        self.name = name
        self.timeout = timeout


class Client:
    method = 'GET'


class LoggedTable(p.PendingTable):
    """A table that records the calls of finish() that ended a request."""

    def __init__(self, ended):
        super().__init__()
        self.ended = ended

    def finish(self, pending, reason):
        done = super().finish(pending, reason)
        if done:
            self.ended.append((pending.request_id, reason))
        return done


def table_with_log():
    ended = []
    return LoggedTable(ended), ended


def test_open_assigns_increasing_ids_and_deadlines():
    table, _ = table_with_log()
    pool = Pool(timeout=5)
    first = table.open(Client(), pool, 100.0)
    second = table.open(Client(), pool, 101.0)
    assert (first.request_id, second.request_id) == (1, 2)
    assert first.state == p.QUEUED and first.deadline == 105.0
    assert len(table) == 2 and table.waiting == 2
    assert table.next_deadline() == 105.0


def test_finish_ends_exactly_once_and_calls_back():
    table, ended = table_with_log()
    pending = table.open(Client(), Pool(), 0.0)
    assert table.finish(pending, p.PENDING_COMPLETED) is True
    assert table.finish(pending, p.PENDING_TIMEOUT) is False
    assert ended == [(1, p.PENDING_COMPLETED)]
    assert pending.done and len(table) == 0 and table.next_deadline() is None


def test_stream_counts_and_loses_its_deadline():
    table, _ = table_with_log()
    pending = table.open(Client(), Pool(), 0.0)
    p.sent(pending, worker=object())
    assert table.stream_started(pending) is True
    assert table.stream_started(pending) is False
    assert table.streams == 1 and table.waiting == 0
    assert table.next_deadline() is None
    table.finish(pending, p.PENDING_STREAM_CLOSED)
    assert table.streams == 0


def test_no_transition_revives_a_finished_request():
    table, _ = table_with_log()
    pending = table.open(Client(), Pool(), 0.0)
    table.finish(pending, p.PENDING_DISCONNECTED)
    p.sent(pending, object())
    p.returned(pending)
    p.held(pending)
    assert table.stream_started(pending) is False
    assert pending.state == p.DONE and table.streams == 0


STEPS = ['sent', 'returned', 'held', 'stream', 'finish']


@pytest.mark.parametrize('steps', list(itertools.product(STEPS, repeat=4)))
def test_every_sequence_keeps_the_counts_right(steps):
    table, ended = table_with_log()
    pending = table.open(Client(), Pool(), 0.0)
    for step in steps:
        if step == 'sent':
            p.sent(pending, object())
        elif step == 'returned':
            p.returned(pending)
        elif step == 'held':
            p.held(pending)
        elif step == 'stream':
            table.stream_started(pending)
        else:
            table.finish(pending, p.PENDING_COMPLETED)
    table.finish(pending, p.PENDING_SHUTDOWN)
    assert len(ended) == 1
    assert table.streams == 0 and len(table) == 0
    assert table.next_deadline() is None


def test_pop_due_in_deadline_order_per_pool():
    table, _ = table_with_log()
    fast, slow = Pool('fast', 1), Pool('slow', 10)
    a = table.open(Client(), slow, 0.0)
    b = table.open(Client(), fast, 0.5)
    c = table.open(Client(), fast, 0.6)
    assert table.next_deadline() == 1.5
    assert table.pop_due(fast, 1.4) is None
    assert table.pop_due(fast, 1.55) is b
    assert table.pop_due(fast, 1.55) is None
    assert table.pop_due(fast, 2.0) is c
    assert table.pop_due(slow, 9.0) is None
    assert table.pop_due(slow, 10.0) is a


def test_pop_due_skips_finished():
    table, _ = table_with_log()
    pool = Pool(timeout=1)
    a = table.open(Client(), pool, 0.0)
    b = table.open(Client(), pool, 0.0)
    a.state = p.DONE   # ended without the table (never happens; still safe)
    assert table.pop_due(pool, 5.0) is b


def test_extend_puts_the_deadline_back_in_order():
    table, _ = table_with_log()
    pool = Pool(timeout=10)
    items = [table.open(Client(), pool, float(t)) for t in range(5)]
    first = table.pop_due(pool, 10.0)
    assert first is items[0]
    table.extend(first, 12.5)       # between items[2] (12) and items[3] (13)
    order = []
    while True:
        due = table.pop_due(pool, 100.0)
        if due is None:
            break
        order.append(due.request_id)
    assert order == [2, 3, 1, 4, 5]


def test_an_extension_far_back_still_leaves_the_deadlines_in_order():
    # more than 64 later deadlines: it stayed ahead of some of them, and
    # pop_due() (which stops at the first not due) hid it behind them
    table, _ = table_with_log()
    pool = Pool(timeout=10)
    items = [table.open(Client(), pool, t / 10) for t in range(300)]
    first = table.pop_due(pool, 10.0)
    assert first is items[0]
    table.extend(first, 10.15)      # due after items[1], before the rest
    assert table.pop_due(pool, 10.16) is items[1]
    assert table.pop_due(pool, 10.16) is first
    assert table.next_deadline() == items[2].deadline
    order = []
    while True:
        due = table.pop_due(pool, 1000.0)
        if due is None:
            break
        order.append(due.deadline)
    assert order == sorted(order) and len(order) == 298


def test_ids_start_at_one_without_a_remote_pool_and_from_the_clock_with():
    assert p.first_request_id(False) == 1
    first = p.first_request_id(True)
    time.sleep(0.002)
    assert p.first_request_id(True) > first > 10 ** 12
    table = p.PendingTable(first)
    assert table.opened == 0
