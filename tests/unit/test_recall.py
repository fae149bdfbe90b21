"""Recalling requests that wait behind a running handler (no processes).

The worker side: `_Backlog` claims a request as the loop pops it and gives
back every other request on a recall, under one lock. The dispatcher side:
a stalled worker's unstarted requests are recalled, go back to the front
of the pool queue, and the pool's queue_size counts every request not
started wherever it waits.
"""

import collections
import os
import random
import threading
import time

import pytest

import uhttp.workers as workers
from uhttp.workers import channel
from uhttp.workers import scheduler as scheduler_mod
from uhttp.workers.dispatcher import core_of
from uhttp.workers import messages as msg
from uhttp.workers.pool import WorkerHandle, WorkerPool
from uhttp.workers import backlog as backlog_mod
from uhttp.workers.backlog import Backlog as _Backlog


def request(seq, request_id=None):
    return (msg.M_REQUEST, seq, seq if request_id is None else request_id,
            'GET', '/api/x', None, {}, b'', False, None, None)


class FakeReader:
    """Stands in for the request pipe's FrameReader: each read() hands out
    the next batch (a list of messages, or an exception to raise)."""

    def __init__(self, batches=()):
        self.batches = collections.deque(batches)
        self.eof = False

    def read(self):
        if not self.batches:
            return []
        batch = self.batches.popleft()
        if isinstance(batch, Exception):
            raise batch
        return batch


class Recorder:
    """The claim and send callbacks, recording what happened in order."""

    def __init__(self):
        self.events = []

    def claim(self, seq, request_id):
        self.events.append(('claim', seq))

    def send(self, message):
        self.events.append(('sent', message))

    def backlog(self, reader):
        return _Backlog(reader, self.claim, self.send)


# -- the worker side -------------------------------------------------------------

class TestBacklog:
    def test_pop_claims_requests_in_order(self):
        recorder = Recorder()
        backlog = recorder.backlog(FakeReader([[request(1), request(2)]]))
        assert backlog.fill() is False
        assert backlog.pop(True)[1] == 1
        assert recorder.events == [('claim', 1)]
        assert backlog.pop(True)[1] == 2
        assert backlog.pop(True) is None
        assert recorder.events == [('claim', 1), ('claim', 2)]

    def test_pop_while_paused_claims_nothing(self):
        recorder = Recorder()
        backlog = recorder.backlog(FakeReader([[request(1)]]))
        backlog.fill()
        assert backlog.pop(False)[1] == 1  # the loop bounces it
        assert recorder.events == []

    def test_control_messages_are_not_claimed(self):
        recorder = Recorder()
        backlog = recorder.backlog(FakeReader([[(msg.M_CONFIG, {'a': 1})]]))
        backlog.fill()
        assert backlog.pop(True) == (msg.M_CONFIG, {'a': 1})
        assert recorder.events == []

    def test_a_request_whose_client_left_while_it_waited_is_bounced(self):
        recorder = Recorder()
        gone = (msg.M_DISCONNECT, 2)
        backlog = recorder.backlog(FakeReader([[request(1), request(2),
                                                request(3), gone]]))
        backlog.fill()
        assert backlog.pop(True)[1] == 1
        assert backlog.pop(True)[1] == 3   # 2 is never started
        assert backlog.pop(True) == gone   # (the loop's own bookkeeping)
        assert backlog.pop(True) is None
        assert recorder.events == [('claim', 1), ('sent', (msg.W_BOUNCE, 2, 2)),
                                   ('claim', 3)]

    def test_a_disconnect_for_a_request_already_run_skips_nothing_later(self):
        recorder = Recorder()
        backlog = recorder.backlog(FakeReader([[(msg.M_DISCONNECT, 7)],
                                               [request(8, 7)]]))
        backlog.fill()
        assert backlog.pop(True) == (msg.M_DISCONNECT, 7)
        backlog.fill()     # (a request id is never used twice: this is only
        assert backlog.pop(True)[1] == 8   # the set being emptied)
        assert recorder.events == [('claim', 8)]

    def test_gone_reads_the_pipe_for_a_sender_on_the_loop_thread(self):
        recorder = Recorder()
        backlog = recorder.backlog(FakeReader([
            [request(1), (msg.M_DISCONNECT, 5)], [(msg.M_WS_CLOSED, 6, 1000, '')]]))
        assert backlog.gone(5) is False         # not the loop's thread
        backlog.loop_thread = threading.get_ident()
        assert backlog.gone(5) is True
        assert backlog.gone(6) is False         # read again only later
        time.sleep(backlog_mod.GONE_READ_INTERVAL)
        assert backlog.gone(6) is True
        # what it read stays for the loop, in order, unclaimed until popped
        assert len(backlog) == 3 and recorder.events == []
        assert backlog.pop(True)[1] == 1
        assert backlog.pop(True) == (msg.M_DISCONNECT, 5)
        assert backlog.pop(True)[0] == msg.M_WS_CLOSED
        assert not backlog.gone(5) and not backlog.gone(6)

    def test_gone_beats_the_heartbeat_while_the_client_is_there(self):
        beats = []
        backlog = _Backlog(FakeReader([[], [(msg.M_DISCONNECT, 5)], []]),
                           Recorder().claim, Recorder().send, beats.append)
        assert backlog.gone(5) is False         # not the loop's thread
        assert beats == []
        backlog.loop_thread = threading.get_ident()
        assert backlog.gone(5) is False         # a read: the client is there
        assert len(beats) == 1
        assert backlog.gone(5) is False         # no read this soon, no beat
        assert len(beats) == 1
        time.sleep(backlog_mod.GONE_READ_INTERVAL)
        assert backlog.gone(5) is True          # it left: sending on is no
        time.sleep(backlog_mod.GONE_READ_INTERVAL)   # sign of life
        assert backlog.gone(5) is True
        assert len(beats) == 1

    def test_fill_reports_eof(self):
        reader = FakeReader()
        backlog = Recorder().backlog(reader)
        reader.eof = True
        assert backlog.fill() is True

    def test_give_back_returns_backlog_and_pipe_requests_in_order(self):
        recorder = Recorder()
        reader = FakeReader([[request(1), request(2), request(3)],
                             [request(4), (msg.M_DISCONNECT, 9), request(5)]])
        backlog = recorder.backlog(reader)
        backlog.fill()
        assert backlog.pop(True)[1] == 1          # running
        assert backlog.give_back() is True        # M_DISCONNECT is left
        assert recorder.events == [
            ('claim', 1), ('sent', (msg.W_RETURNED, [2, 3, 4, 5]))]
        assert len(backlog) == 1
        assert backlog.pop(True) == (msg.M_DISCONNECT, 9)
        assert backlog.pop(True) is None

    def test_control_messages_keep_their_order(self):
        recorder = Recorder()
        controls = [(msg.M_CONFIG, 1), (msg.M_DISCONNECT, 5), (msg.M_STOP,)]
        batch = [request(1), controls[0], request(2), controls[1], controls[2],
                 request(3)]
        backlog = recorder.backlog(FakeReader([batch]))
        assert backlog.give_back() is True
        assert recorder.events == [('sent', (msg.W_RETURNED, [1, 2, 3]))]
        assert [backlog.pop(True) for _ in range(3)] == controls

    def test_give_back_with_nothing_left_answers_empty(self):
        recorder = Recorder()
        backlog = recorder.backlog(FakeReader([[request(1)]]))
        backlog.fill()
        backlog.pop(True)
        assert backlog.give_back() is False      # nothing for the loop
        assert recorder.events[-1] == ('sent', (msg.W_RETURNED, []))

    def test_give_back_after_a_corrupt_frame_still_answers(self):
        recorder = Recorder()
        reader = FakeReader([[request(1), request(2)],
                             channel.ChannelError('corrupt frame')])
        backlog = recorder.backlog(reader)
        backlog.fill()
        assert backlog.give_back() is True       # the loop must look
        assert recorder.events == [('sent', (msg.W_RETURNED, [1, 2]))]

    def test_give_back_at_eof_wakes_the_loop(self):
        reader = FakeReader()
        backlog = Recorder().backlog(reader)
        reader.eof = True
        assert backlog.give_back() is True

    def test_claim_and_give_back_share_one_lock(self):
        entered = threading.Event()
        release = threading.Event()
        events = []

        def slow_claim(seq, request_id):
            events.append(('claim', seq))
            entered.set()
            release.wait(5)

        backlog = _Backlog(FakeReader([[request(1), request(2)]]), slow_claim,
                           lambda message: events.append(('sent', message)))
        backlog.fill()
        loop = threading.Thread(target=backlog.pop, args=(True,))
        loop.start()
        assert entered.wait(5)
        recall = threading.Thread(target=backlog.give_back)
        recall.start()
        recall.join(0.1)
        assert recall.is_alive()  # waits for the claim to finish
        release.set()
        loop.join(5)
        recall.join(5)
        assert events == [('claim', 1), ('sent', (msg.W_RETURNED, [2]))]


class Feed:
    """A thread-safe stand-in for the pipe: the test's 'dispatcher' puts
    batches in; each read() takes what is there."""

    def __init__(self):
        self.lock = threading.Lock()
        self.items = collections.deque()
        self.eof = False

    def put(self, messages):
        with self.lock:
            self.items.extend(messages)

    def read(self):
        with self.lock:
            taken = list(self.items)
            self.items.clear()
            return taken


def split_after_death(sent, events):
    """What the dispatcher does with a worker that died after `events` (a
    prefix of what it did): it reads every message the worker wrote, drops
    what they released, then fails in-flight requests at or below the
    started seq and requeues the rest. (victims, requeued, claimed)."""
    inflight = set(sent)
    claimed = set()
    started = 0
    for kind, value in events:
        if kind == 'claim':
            claimed.add(value)
            started = value
        elif kind == 'bounce':
            inflight.discard(value)
        elif kind == 'answer':
            inflight.discard(value)
        elif kind == 'sent':
            assert value[0] == msg.W_RETURNED
            inflight.difference_update(value[1])
    victims = {seq for seq in inflight if seq <= started}
    requeued = inflight - victims
    return victims, requeued, claimed


@pytest.mark.parametrize('run', range(5))
def test_every_request_is_started_once_or_returned_under_races(run):
    """A loop thread and a recall thread race over one backlog; at every
    point of the recorded history, a death would fail only requests that
    were started and requeue only requests that were not."""
    rng = random.Random(run)
    events = []   # appended under the backlog lock, or by the loop thread
    backlog = _Backlog(None, lambda seq, request_id: events.append(
        ('claim', seq)), lambda message: events.append(('sent', message)))
    feed = Feed()
    backlog.reader = feed
    total = 3000
    done = threading.Event()

    def loop():
        while not done.is_set() or len(feed.items) or len(backlog):
            backlog.fill()
            while True:
                accepting = rng.random() > 0.05
                message = backlog.pop(accepting)
                if message is None:
                    time.sleep(0.0001)  # waiting in select()
                    break
                if message[0] != msg.M_REQUEST:
                    continue
                if accepting:
                    if rng.random() < 0.05:
                        time.sleep(0.0005)  # a slower handler
                    events.append(('answer', message[1]))
                else:
                    events.append(('bounce', message[1]))

    def recall():
        while not done.is_set():
            backlog.give_back()
            time.sleep(0.0002)

    threads = [threading.Thread(target=loop), threading.Thread(target=recall)]
    for thread in threads:
        thread.start()
    sent = []
    seq = 0
    while seq < total:
        batch = []
        for _ in range(rng.randint(1, 8)):
            seq += 1
            batch.append(request(seq))
            sent.append(seq)
        if rng.random() < 0.2:
            batch.insert(rng.randrange(len(batch) + 1), (msg.M_CONFIG, seq))
        feed.put(batch)
        time.sleep(0.0001)
    done.set()
    for thread in threads:
        thread.join(20)
        assert not thread.is_alive()
    backlog.give_back()

    claims = [value for kind, value in events if kind == 'claim']
    returned = [seq for kind, value in events if kind == 'sent'
                for seq in value[1]]
    bounced = [value for kind, value in events if kind == 'bounce']
    assert claims == sorted(claims)
    assert len(claims) == len(set(claims))
    assert len(returned) == len(set(returned))
    assert not set(claims) & set(returned)
    assert not set(claims) & set(bounced)
    assert not set(returned) & set(bounced)
    assert sorted(claims + returned + bounced) == sent
    assert returned, "the recall thread never returned anything"

    # a death after any prefix of the history
    step = max(1, len(events) // 2000)
    for cut in list(range(0, len(events) + 1, step)) + [len(events)]:
        victims, requeued, claimed = split_after_death(sent, events[:cut])
        assert not requeued & claimed, cut      # would run twice
        assert victims <= claimed, cut          # failed without running


# -- the dispatcher side ---------------------------------------------------------

class EchoWorker(workers.Worker):
    @workers.api('/api/echo', 'POST')
    def echo(self, request):
        return request.data


@pytest.fixture
def rig():
    """A dispatcher (not running) with one pool of two live-looking handles;
    their recall pipes are real, their slots shared memory."""
    pool = WorkerPool(EchoWorker, num_workers=2)
    dispatcher = workers.Dispatcher(pools=[pool])
    core = core_of(dispatcher)
    pool.scheduler.window = 8
    pool.handles[:] = [WorkerHandle(pool, index) for index in range(2)]
    pool.scheduler.attach(pool.handles, core.delivery.send_request,
                          core.loop.call_at, core.supervisor.recall,
                          lambda: None, core.retirements.taken)
    fds = []
    for index, handle in enumerate(pool.handles):
        handle.slot.reset()
        out_read, out_write = os.pipe()
        recall_read, recall_write = os.pipe()
        os.set_blocking(recall_read, False)
        fds += [out_read, out_write, recall_read, recall_write]
        handle.started(1000 + index, out_write, None, recall_write, 0.0)
        handle.ready = True
        handle.recall_read = recall_read
        pool.scheduler.place(handle)
    yield core, pool, pool.handles
    for fd in fds:
        os.close(fd)
    for handle in pool.handles:
        handle.release_slot()


def forwarded(name):
    return workers.Request(method='POST', path='/api/echo', data={'n': name})


def recalled(handle):
    try:
        return os.read(handle.recall_read, 16)
    except BlockingIOError:
        return b''


def run_due_timers(core, now):
    core.loop.timers.run_due(now)


class TestStallCheck:
    def test_a_request_behind_another_schedules_one_check(self, rig):
        core, pool, (first, second) = rig
        for name in 'abcd':
            pool.scheduler.enqueue(forwarded(name))
        # idle workers first: a, b; then c, d behind them
        assert [e[0] for e in first.inflight] == [1, 2]
        assert [e[0] for e in second.inflight] == [1, 2]
        assert first.stall_check and second.stall_check
        checks = [timer for timer in core.loop.timers.entries()
                  if timer[1] == pool.scheduler.check_stall]
        assert len(checks) == 2
        pool.scheduler.enqueue(forwarded('e'))
        checks = [timer for timer in core.loop.timers.entries()
                  if timer[1] == pool.scheduler.check_stall]
        assert len(checks) == 2  # one pending check per handle at most

    def test_no_check_for_a_request_sent_to_an_idle_worker(self, rig):
        core, pool, (first, second) = rig
        pool.scheduler.enqueue(forwarded('a'))
        assert not first.stall_check
        assert core.loop.timers.entries() == []

    def test_stalled_worker_is_recalled_and_its_requests_requeued(self, rig):
        core, pool, (first, second) = rig
        for name in 'abc':
            pool.scheduler.enqueue(forwarded(name))
        # first holds a (started, running long) and c (waiting behind it)
        first.slot.start(0.0, 1, -1)
        second.slot.start(0.0, 1, -1)
        core.relay.relay(second, [(msg.W_RESPONSE, -1, 200, None,
                                              b'', msg.BODY_NONE, None)])
        assert not second.inflight
        due = core.loop.timers.next_due()
        # scheduled when a was not started yet: the start counts as progress
        run_due_timers(core, due)
        assert recalled(first) == b''
        due = core.loop.timers.next_due()
        run_due_timers(core, due)
        assert recalled(first) == b'\0'
        assert first.stalled and first.recalled and first.recalls == 1
        assert first.waiting is None
        assert pool.status()['workers'][0]['queued'] == 1
        # no second recall while the first is unanswered
        run_due_timers(core, core.loop.timers.next_due())
        assert recalled(first) == b''

        item_c = first.inflight[-1][2]
        core.relay.relay(first, [(msg.W_RETURNED, [2])])
        assert not first.recalled
        assert [e[0] for e in first.inflight] == [1]
        # c went to the free worker, not back to the stalled one
        assert second.inflight[-1][2] is item_c
        assert first.stalled and first.waiting is None
        # answering a releases first: it takes work again
        core.relay.relay(first, [(msg.W_RESPONSE, -1, 200, None,
                                             b'', msg.BODY_NONE, None)])
        assert not first.stalled
        assert first.waiting is pool.scheduler.idle

    def test_a_worker_that_gave_back_everything_takes_work_again(self, rig):
        # slow to start (descheduled), not busy: it ran nothing it holds, so
        # no release would ever end the stall
        core, pool, (first, second) = rig
        second.accepting = False
        pool.scheduler.withdraw(second)
        for name in 'ab':
            pool.scheduler.enqueue(forwarded(name))
        second.accepting = True
        pool.scheduler.offer(second)
        run_due_timers(core, core.loop.timers.next_due())
        assert recalled(first) == b'\0' and first.stalled
        core.relay.relay(first, [(msg.W_RETURNED, [1, 2])])
        assert not first.inflight
        assert not first.stalled
        assert first.waiting is not None  # eligible again
        assert len(second.inflight) == 2

    def test_no_recall_while_the_worker_makes_progress(self, rig):
        core, pool, (first, second) = rig
        for name in 'abc':
            pool.scheduler.enqueue(forwarded(name))
        core.relay.relay(second, [(msg.W_RESPONSE, -1, 200, None,
                                              b'', msg.BODY_NONE, None)])
        for seq in (1, 2):
            first.slot.start(0.0, seq, -1)
            run_due_timers(core, core.loop.timers.next_due())
            assert recalled(first) == b''
        # it started everything it holds: no further checks
        assert not first.stall_check
        assert core.loop.timers.entries() == []

    def test_no_recall_when_no_other_worker_could_take_work(self, rig):
        core, pool, (first, second) = rig
        pool.scheduler.window = 2
        for name in 'abcd':
            pool.scheduler.enqueue(forwarded(name))  # both windows full
        for handle in (first, second):
            handle.slot.start(0.0, 1, -1)
        for _ in range(3):
            run_due_timers(core, core.loop.timers.next_due())
        assert recalled(first) == b'' and recalled(second) == b''
        assert first.stall_check  # it keeps checking

    def test_returned_requests_go_to_the_front_in_their_order(self, rig):
        core, pool, (first, second) = rig
        second.accepting = False
        pool.scheduler.withdraw(second)
        items = [forwarded(name) for name in 'abcd']
        for item in items:
            pool.scheduler.enqueue(item)
        assert [e[2] for e in first.inflight] == items
        pool.scheduler.queue.append(forwarded('later'))
        first.slot.start(0.0, 1, -1)
        pool.scheduler.recall_now(first)
        core.relay.relay(first, [(msg.W_RETURNED, [2, 3, 4])])
        assert list(pool.scheduler.queue)[:3] == items[1:]
        assert pool.scheduler.queue[3].data == {'n': 'later'}
        assert pool.status()['queue_size'] == 4

    def test_returned_seqs_it_no_longer_holds_are_ignored(self, rig):
        core, pool, (first, second) = rig
        pool.scheduler.enqueue(forwarded('a'))
        core.relay.relay(first, [(msg.W_RETURNED, [7, 8])])
        assert len(first.inflight) == 1 and not pool.scheduler.queue

    def test_bounce_is_matched_by_seq(self, rig):
        core, pool, (first, second) = rig
        second.accepting = False
        pool.scheduler.withdraw(second)
        items = [forwarded(name) for name in 'ab']
        for item in items:
            pool.scheduler.enqueue(item)
        first.slot.start(0.0, 1, -1)
        first.accepting = False
        pool.scheduler.withdraw(first)
        # both have request_id -1: the bounce names the second by its seq
        core.relay.relay(first, [(msg.W_BOUNCE, -1, 2)])
        assert [e[2] for e in first.inflight] == items[:1]
        assert list(pool.scheduler.queue) == items[1:]

    def test_check_for_a_replaced_process_does_nothing(self, rig):
        core, pool, (first, second) = rig
        for name in 'abc':
            pool.scheduler.enqueue(forwarded(name))
        first.pid = 4242  # the slot runs another process now
        first.stall_check = False
        for _ in range(3):
            if core.loop.timers.entries():
                run_due_timers(core, core.loop.timers.next_due())
        assert recalled(first) == b''
        assert not first.stall_check


class TestQueueSize:
    def test_counts_queue_and_unstarted_requests_in_windows(self, rig):
        core, pool, (first, second) = rig
        pool.scheduler.window = 3
        for name in 'abcdefgh':
            pool.scheduler.enqueue(forwarded(name))
        # 3 each in the windows, 2 in the queue; nothing started yet
        status = pool.status()
        assert [w['queued'] for w in status['workers']] == [3, 3]
        assert status['queue_size'] == 8
        assert pool.queue_size == 8
        first.slot.start(0.0, 2, -1)     # first runs its second request
        second.slot.start(0.0, 1, -1)
        status = pool.status()
        assert [w['queued'] for w in status['workers']] == [1, 2]
        assert status['queue_size'] == 2 + 1 + 2

    def test_released_requests_are_not_counted(self, rig):
        core, pool, (first, second) = rig
        for name in 'abc':
            pool.scheduler.enqueue(forwarded(name))
        first.slot.start(0.0, 2, -1)
        core.relay.relay(first, [(msg.W_RESPONSE, -1, 200, None,
                                             b'', msg.BODY_NONE, None)] * 2)
        assert pool.status()['workers'][0]['queued'] == 0

    def test_a_dead_worker_counts_nothing(self, rig):
        core, pool, (first, second) = rig
        for name in 'abc':
            pool.scheduler.enqueue(forwarded(name))
        first.alive = False
        assert pool.status()['workers'][0]['queued'] == 0


def test_stall_after_is_a_few_milliseconds():
    assert 0.0005 <= scheduler_mod.STALL_AFTER <= 0.01
