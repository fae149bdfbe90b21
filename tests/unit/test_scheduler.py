"""scheduler.py: a pool's queue and its workers' windows, without
processes: handles are plain objects, sending is a recorded call."""

import itertools

import pytest

from uhttp.workers import pending as p
from uhttp.workers.pool import WorkerHandle
from uhttp.workers.scheduler import MAX_WINDOW, STALL_AFTER, PoolScheduler


class Slot:
    """A heartbeat slot as the worker would fill it."""

    def __init__(self):
        self.started_seq = 0
        self.busy = 0.0
        self.count = 0

    def started(self):
        return self.started_seq

    def read(self):
        return 0.0, 0.0, self.started_seq, -1

    def load(self):
        return self.busy, self.count


class Pool:
    name = 'P'
    timeout = 10
    _alive = 0


class Client:
    method = 'GET'


def make(workers=2, window=2):
    scheduler = PoolScheduler()
    scheduler.window = window
    pool = Pool()
    pool.scheduler = scheduler
    handles = []
    for index in range(workers):
        handle = WorkerHandle(pool, index, Slot())
        handle.alive = True
        handle.ready = True
        handle.pid = 1000 + index
        handles.append(handle)
    sent = []
    timers = []
    recalls = []

    def send(handle, seq, item):
        sent.append((handle.index, seq, item))
        return True

    def recall(handle):
        recalls.append(handle.index)
        return True

    scheduler.attach(handles, send, lambda when, func, *args: timers.append(
        (when, func, args)), recall, lambda: None)
    scheduler.clock = lambda: 0.0
    for handle in handles:
        scheduler.offer(handle)
    return scheduler, handles, sent, timers, recalls


def request(table, pool=None):
    return table.open(Client(), pool or Pool(), 0.0)


def test_idle_workers_first_then_windows():
    scheduler, handles, sent, _, _ = make(workers=2, window=2)
    table = p.PendingTable()
    items = [request(table) for _ in range(5)]
    for item in items:
        scheduler.enqueue(item)
    # one each to the idle workers, then one more each (window 2), one waits
    assert [index for index, _, _ in sent] == [0, 1, 0, 1]
    assert len(scheduler) == 1
    assert all(item.state == p.SENT for item in items[:4])
    assert items[4].state == p.QUEUED
    # an answer frees a place: the queued request goes there
    scheduler.release(handles[0], items[0].request_id)
    assert sent[-1][0] == 0 and sent[-1][2] is items[4]
    assert len(scheduler) == 0


def test_paused_worker_gets_nothing_and_bounces_back():
    scheduler, handles, sent, _, _ = make(workers=2, window=1)
    table = p.PendingTable()
    handles[0].accepting = False
    scheduler.withdraw(handles[0])
    first, second = request(table), request(table)
    scheduler.enqueue(first)
    scheduler.enqueue(second)
    assert [index for index, _, _ in sent] == [1]     # worker 0 is paused
    # worker 1 paused too before it read `first`: it bounces it, and it
    # waits at the front of the queue, before `second`
    handles[1].accepting = False
    scheduler.withdraw(handles[1])
    scheduler.bounced(handles[1], sent[0][1])
    assert list(scheduler.queue) == [first, second]
    assert first.state == p.QUEUED and first.worker is None
    # the first worker to resume gets it
    handles[0].accepting = True
    scheduler.offer(handles[0])
    assert sent[-1][0] == 0 and sent[-1][2] is first


def test_returned_requests_go_to_the_front_in_order():
    scheduler, handles, sent, _, _ = make(workers=1, window=4)
    table = p.PendingTable()
    items = [request(table) for _ in range(4)]
    for item in items:
        scheduler.enqueue(item)
    later = request(table)
    scheduler.enqueue(later)
    handles[0].slot.started_seq = 1          # it runs the first one
    handles[0].stalled = True                # recalled: it takes nothing new
    scheduler.returned(handles[0], [2, 3, 4])
    assert list(scheduler.queue)[:3] == items[1:]
    assert all(item.state == p.QUEUED and item.worker is None
               for item in items[1:])
    assert [entry[0] for entry in handles[0].inflight] == [1]


def test_split_on_death_by_started_seq():
    scheduler, handles, _, _, _ = make(workers=1, window=4)
    table = p.PendingTable()
    items = [request(table) for _ in range(4)]
    for item in items:
        scheduler.enqueue(item)
    held = request(table)
    handles[0].held[held.request_id] = held
    handles[0].slot.started_seq = 2
    victims, requeue = scheduler.split_inflight(handles[0])
    assert [v[1] for v in victims] == [items[0], items[1], held]
    assert requeue == items[2:]
    assert not handles[0].inflight and not handles[0].held


def test_window_adapts_to_handler_time():
    scheduler, handles, _, _, _ = make(workers=2, window=2)
    for handle in handles:
        handle.slot.busy, handle.slot.count = 0.00001 * 100, 100
    scheduler.update_window()
    assert scheduler.window == MAX_WINDOW
    for handle in handles:
        handle.slot.busy, handle.slot.count = 1.0 + 0.5 * 10, 110
    scheduler.update_window()
    assert scheduler.window == 1


def test_a_slow_pool_gets_a_window_of_one_from_few_requests():
    scheduler, handles, _, _, _ = make(workers=1, window=2)
    handles[0].slot.busy, handles[0].slot.count = 0.0001, 1
    scheduler.update_window()          # one quick request: too few to judge
    assert scheduler.window == 2
    handles[0].slot.busy, handles[0].slot.count = 0.0002, 2
    scheduler.update_window()
    assert scheduler.window == 2
    handles[0].slot.busy, handles[0].slot.count = 0.3002, 3
    scheduler.update_window()          # one of 0.3 s: plainly slow
    assert scheduler.window == 1


def test_requests_too_few_to_judge_are_kept_for_the_next_update():
    scheduler, handles, _, _, _ = make(workers=1, window=1)
    for count in (1, 2, 3):
        handles[0].slot.busy, handles[0].slot.count = 0.00001 * count, count
        scheduler.update_window()
        assert scheduler.window == 1
    handles[0].slot.busy, handles[0].slot.count = 0.00004, 4
    scheduler.update_window()          # four quick ones, over four updates
    assert scheduler.window == MAX_WINDOW


def stall_setup():
    scheduler, handles, sent, timers, recalls = make(workers=2, window=4)
    table = p.PendingTable()
    items = [request(table) for _ in range(3)]
    for item in items:
        scheduler.enqueue(item)
    # worker 0 got items 0 and 2; worker 1 got item 1
    return scheduler, handles, sent, timers, recalls, items


def run_timers(timers):
    due, timers[:] = list(timers), []
    for when, func, args in due:
        func(when, *args)


def test_stall_check_scheduled_when_a_request_waits_behind_another():
    scheduler, handles, _, timers, _, _ = stall_setup()
    assert handles[0].stall_check
    assert timers and timers[0][0] == STALL_AFTER


def test_recall_when_the_worker_made_no_progress_and_another_is_free():
    scheduler, handles, _, timers, recalls, items = stall_setup()
    handles[0].slot.started_seq = 1      # running item 0, item 2 waits
    scheduler.release(handles[1], items[1].request_id)   # worker 1 is free
    timers[:] = [(t, f, (a[0], a[1], 1)) for t, f, a in timers]
    run_timers(timers)
    assert recalls == [0]
    assert handles[0].stalled and handles[0].recalled
    assert handles[0].waiting is None    # it gets nothing new meanwhile


def test_no_recall_while_the_worker_progresses():
    scheduler, handles, _, timers, recalls, items = stall_setup()
    scheduler.release(handles[1], items[1].request_id)
    handles[0].slot.started_seq = 2      # it moved on since the check was set
    run_timers(timers)
    assert recalls == []


def test_no_recall_when_no_other_worker_is_free():
    scheduler, handles, _, timers, recalls, items = stall_setup()
    handles[0].slot.started_seq = 1
    handles[1].accepting = False
    scheduler.withdraw(handles[1])
    timers[:] = [(t, f, (a[0], a[1], 1)) for t, f, a in timers]
    run_timers(timers)
    assert recalls == []
    assert timers, "it keeps watching while requests wait"


def test_release_ends_a_stall():
    scheduler, handles, _, timers, recalls, items = stall_setup()
    handles[0].slot.started_seq = 1
    scheduler.release(handles[1], items[1].request_id)
    timers[:] = [(t, f, (a[0], a[1], 1)) for t, f, a in timers]
    run_timers(timers)
    scheduler.release(handles[0], items[0].request_id)
    assert not handles[0].stalled
    assert handles[0].waiting is not None


# -- every interleaving of start, return and death keeps each request once ----

EVENTS = ['start', 'return', 'die', 'answer']


@pytest.mark.parametrize('events', list(itertools.product(EVENTS, repeat=4)))
def test_each_request_is_started_or_requeued_never_both(events):
    """A worker holding 4 requests starts them in order; recalls return
    what it has not started (the worker's lock guarantees that a start and
    a return never overlap); death splits by the started seq. Whatever the
    order, every request ends up exactly once: answered, a victim, or back
    in the queue."""
    scheduler, handles, sent, _, _ = make(workers=1, window=4)
    table = p.PendingTable()
    items = [request(table) for _ in range(4)]
    for item in items:
        scheduler.enqueue(item)
    handle = handles[0]
    answered, victims = [], []
    started = 0
    claimed = []
    dead = False
    for event in events:
        if dead:
            break
        unstarted = [entry[0] for entry in handle.inflight if entry[0] > started]
        if event == 'start' and unstarted:
            started = unstarted[0]
            claimed.append(started)
            handle.slot.started_seq = started
        elif event == 'return':
            handle.stalled = True   # as the stall check leaves it
            scheduler.returned(handle, unstarted)
        elif event == 'answer':
            running = [e for e in handle.inflight if e[0] <= started]
            if running:
                item = scheduler.release(handle, running[0][1])
                answered.append(item)
        elif event == 'die':
            dead_victims, requeue = scheduler.split_inflight(handle)
            victims.extend(item for _, item in dead_victims)
            handle.alive = False
            scheduler.withdraw(handle)
            scheduler.requeue_front(requeue)
            dead = True
    in_window = [entry[2] for entry in handle.inflight]
    queued = list(scheduler.queue)
    everything = answered + victims + in_window + queued
    assert sorted(item.request_id for item in everything) == [1, 2, 3, 4]
    # nothing started was requeued, nothing requeued was started
    by_seq = {seq: item for _, seq, item in sent}
    started_ids = {by_seq[seq].request_id for seq in claimed}
    assert not started_ids & {item.request_id for item in queued}
