"""relay.py: worker messages fed to a real dispatcher core, without forking
a worker or opening a socket: clients are recording stand-ins."""

import json
import os

import pytest

import uhttp.workers as workers
from uhttp.workers import channel, messages as msg
from uhttp.workers.pending import (
    PENDING_COMPLETED, PENDING_DISCONNECTED, PENDING_STREAM_CLOSED)


class Client:
    """Records what the dispatcher writes to a client connection."""

    method = 'GET'
    path = '/api/x'
    query = None
    headers = {}
    body = None
    client_ip = '127.0.0.1'

    def __init__(self):
        self.pending = None
        self.is_open = True
        self.response_started = False
        self.responses = 0
        self.sent = []

    def send_response(self, status, headers, body, cookies=None, head=False,
                      close=False):
        self.sent.append(('response', status, body))
        self.response_started = True
        self.responses += 1
        self.pending = None

    def respond(self, data=None, status=200, headers=None, cookies=None):
        self.sent.append(('respond', status, data))
        self.response_started = True
        self.responses += 1
        self.pending = None

    def start_stream(self, status, headers, cookies=None):
        self.sent.append(('stream', status))
        self.response_started = True

    def send_chunk(self, data):
        self.sent.append(('chunk', data))
        return True

    stream_send = send_chunk   # (a local worker's stream: never refused)
    send_buffer_size = 0
    max_send_buffer_size = 256 * 1024

    def end_stream(self):
        self.sent.append(('end',))
        self.pending = None

    def answered_since(self, count):
        return not self.is_open or self.responses != count

    def hold(self):
        pass

    def release(self):
        pass

    def close(self):
        self.is_open = False


class Recorder(workers.Dispatcher):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.seen = []
        self.logs = []

    def on_response(self, response, pending):
        self.seen.append(('response', response.status, response.data))

    def on_pending_removed(self, request_id, pending, reason):
        self.seen.append(('removed', request_id, reason))

    def on_log(self, name, level, message):
        self.logs.append((name, level, message))


class Worker(workers.Worker):
    pass


@pytest.fixture
def setup():
    pool = workers.WorkerPool(Worker, num_workers=1)
    app = Recorder(port=0, pools=[pool])
    core = app._uhttp
    from uhttp.workers.heartbeat import SlotTable
    from uhttp.workers.pool import WorkerHandle
    pool.slots = SlotTable(1)
    handle = WorkerHandle(pool, 0, pool.slots.slot(0))
    pool.handles.append(handle)
    read_fd, write_fd = os.pipe()
    from_read, from_write = os.pipe()
    handle.started(os.getpid(), write_fd, from_read, None, 0.0)
    handle.ready = True
    pool.scheduler.attach(pool.handles, core.delivery.send_request, core.loop.call_at,
                          lambda h: True, lambda: None)
    pool.scheduler.offer(handle)
    yield app, core, pool, handle, read_fd
    for fd in (read_fd, write_fd, from_read, from_write):
        os.close(fd)
    pool.slots.close()


def accept(core, pool):
    client = Client()
    core.intake.admit(client, pool)
    return client, client.pending


def answer(request_id, status=200, data=None):
    body = json.dumps(data or {'ok': True}).encode()
    return (msg.W_RESPONSE, request_id, status,
            [('content-type', 'application/json')], body, msg.BODY_JSON, None)


def test_response_reaches_the_client_and_ends_once(setup):
    app, core, pool, handle, _ = setup
    client, pending = accept(core, pool)
    assert pending.worker is handle
    core.relay.relay(handle, [answer(pending.request_id, 201, {'a': 1})])
    assert client.sent == [('response', 201, b'{"a": 1}')]
    assert app.seen == [('response', 201, {'a': 1}),
                        ('removed', pending.request_id, PENDING_COMPLETED)]
    assert len(core.pending) == 0 and not handle.inflight
    # a second answer for the same id changes nothing
    core.relay.relay(handle, [answer(pending.request_id)])
    assert len(client.sent) == 1 and len(app.seen) == 2


def test_deferred_then_answered_later(setup):
    app, core, pool, handle, _ = setup
    client, pending = accept(core, pool)
    core.relay.relay(handle, [(msg.W_DEFERRED, pending.request_id)])
    assert pending.request_id in handle.held and not handle.inflight
    assert pending.state == 'held'
    core.relay.relay(handle, [answer(pending.request_id)])
    assert client.sent[0][:2] == ('response', 200)
    assert not handle.held


def test_stream_start_chunks_end(setup):
    app, core, pool, handle, _ = setup
    client, pending = accept(core, pool)
    rid = pending.request_id
    core.relay.relay(handle, [
        (msg.W_STREAM_START, rid, 200, [], None),
        (msg.W_STREAM_DATA, rid, b'data: 1\n\n'),
        (msg.W_STREAM_END, rid)])
    assert client.sent == [('stream', 200), ('chunk', b'data: 1\n\n'), ('end',)]
    assert app.seen == [('removed', rid, PENDING_STREAM_CLOSED)]
    assert core.pending.streams == 0


def test_client_leaving_a_stream_tells_the_worker(setup):
    app, core, pool, handle, read_fd = setup
    client, pending = accept(core, pool)
    rid = pending.request_id
    core.relay.relay(handle, [(msg.W_STREAM_START, rid, 200, [], None)])
    core.front.client_gone(pending)
    assert app.seen == [('removed', rid, PENDING_DISCONNECTED)]
    core.delivery.flush_workers()
    frames = channel.FrameReader(read_fd).read()
    assert frames[-1] == (msg.M_DISCONNECT, rid)


def test_returned_requests_go_back_to_the_queue(setup):
    app, core, pool, handle, _ = setup
    client, pending = accept(core, pool)
    seq = handle.inflight[0][0]
    handle.stalled = True
    # paused meanwhile: it stays in the queue
    core.relay.relay(handle, [(msg.W_PAUSE,), (msg.W_RETURNED, [seq])])
    assert list(pool.scheduler.queue) == [pending]
    assert pending.worker is None and not handle.inflight
    assert pending.state == 'queued'
    # resumed: it is sent again, with a new seq
    core.relay.relay(handle, [(msg.W_RESUME,)])
    assert handle.inflight[0][0] == seq + 1 and pending.worker is handle


def test_unknown_kind_is_logged_and_the_rest_relayed(setup):
    app, core, pool, handle, _ = setup
    client, pending = accept(core, pool)
    core.relay.relay(handle, [(99, 'x'), answer(pending.request_id)])
    assert any('unknown message kind 99' in text for _, _, text in app.logs)
    assert client.sent[0][0] == 'response'


def test_worker_log_records_reach_on_log(setup):
    app, core, pool, handle, _ = setup
    core.relay.relay(handle, [(msg.W_LOG, 'Worker[0]', 30, 'careful')])
    assert ('Worker[0]', 30, 'careful') in app.logs


def test_pause_and_resume(setup):
    app, core, pool, handle, _ = setup
    core.relay.relay(handle, [(msg.W_PAUSE,)])
    client, pending = accept(core, pool)
    assert pending.worker is None and len(pool.scheduler) == 1
    core.relay.relay(handle, [(msg.W_RESUME,)])
    assert pending.worker is handle


# -- what the relay keeps for metrics and the access log ---------------------------------
# (route index, start time, status, size), with metrics on; and the
# worker side of `self.metrics` (WorkerClient)

from uhttp.workers.testing import WorkerClient  # noqa: E402


@pytest.fixture
def observed():
    import os
    from uhttp.workers.heartbeat import SlotTable
    from uhttp.workers.pool import WorkerHandle
    pool = workers.WorkerPool(Worker, num_workers=1)
    app = Recorder(port=0, pools=[pool], metrics_path='/metrics')
    core = app._uhttp
    pool.slots = SlotTable(1)
    handle = WorkerHandle(pool, 0, pool.slots.slot(0))
    pool.handles.append(handle)
    read_fd, write_fd = os.pipe()
    from_read, from_write = os.pipe()
    handle.started(os.getpid(), write_fd, from_read, None, 0.0)
    handle.ready = True
    pool.scheduler.attach(pool.handles, core.delivery.send_request,
                          core.loop.call_at, lambda h: True, lambda: None)
    pool.scheduler.offer(handle)
    yield core, pool, handle
    for fd in (read_fd, write_fd, from_read, from_write):
        os.close(fd)
    pool.slots.close()


def admit(core, pool):
    client = Client()
    core.intake.admit(client, pool)
    return client, client.pending


def test_the_route_and_start_of_an_answer_are_counted(observed):
    core, pool, handle = observed
    core.relay.relay(handle, [(msg.W_ROUTES, ('/api/a', '/api/x/{n:int}'))])
    assert handle.routes == ('/api/a', '/api/x/{n:int}')
    _, pending = admit(core, pool)
    started = pending.accepted + 0.25
    core.relay.relay(handle, [answer(pending.request_id, 201) + (1, started)])
    observer = core.observe
    assert observer.requests == {('Worker', '/api/x/{n:int}', 'GET', 201): 1}
    assert pending.status == 201 and pending.size == len(b'{"ok": true}')
    wait = observer.queue_waits['Worker']
    assert sum(wait[:-1]) == 1 and abs(wait[-1] - 0.25) < 1e-9


def test_an_answer_without_route_fields_counts_as_no_route(observed):
    core, pool, handle = observed
    _, pending = admit(core, pool)
    core.relay.relay(handle, [answer(pending.request_id)])
    assert core.observe.requests == {('Worker', '', 'GET', 200): 1}
    assert 'Worker' not in core.observe.queue_waits


def test_deferred_carries_the_route_for_the_later_answer(observed):
    core, pool, handle = observed
    core.relay.relay(handle, [(msg.W_ROUTES, ('/api/x',))])
    _, pending = admit(core, pool)
    core.relay.relay(handle, [(msg.W_DEFERRED, pending.request_id, 0,
                               pending.accepted)])
    core.relay.relay(handle, [answer(pending.request_id) + (-1, None)])
    assert core.observe.requests == {('Worker', '/api/x', 'GET', 200): 1}


def test_a_client_that_left_counts_as_499(observed):
    core, pool, handle = observed
    client, pending = admit(core, pool)
    core.front.client_gone(pending)
    assert core.observe.requests == {('Worker', '', 'GET', 499): 1}


def test_user_metrics_from_a_worker_add_up(observed):
    core, pool, handle = observed
    pool.metrics = (workers.Counter('n_total', 'n'),)
    from uhttp.workers.metrics import PoolTotals
    core.observe.user[pool] = PoolTotals(pool.metrics)
    for _ in range(2):
        core.relay.relay(handle, [(msg.W_METRICS, {'c': {'n_total': {(): 3}}})])
    assert core.observe.user[pool].counters['n_total'] == {(): 6}


# -- the worker's self.metrics -----------------------------------------------------------

class Counting(workers.Worker):
    @workers.api('/count/{n:int}', 'GET')
    def count(self, request):
        self.metrics['hits_total'].inc(request.path_params['n'], kind='a')
        return {'ok': True}

    @workers.api('/bad', 'GET')
    def bad(self, request):
        self.metrics['missing'].inc()


def test_worker_client_with_metrics():
    client = WorkerClient(Counting, metrics=[
        workers.Counter('hits_total', 'Hits', labels=['kind'])])
    assert client.get('/count/3').status == 200
    assert client.get('/count/2').status == 200
    assert client.metric_totals.counters == {'hits_total': {('a',): 5}}
    reply = client.get('/bad')
    assert reply.status == 500
    assert any("no metric 'missing'" in record.message
               for record in client.logs)


def test_a_member_named_metrics_is_the_users():
    class Own(workers.Worker):
        def metrics(self):
            return 'mine'

    class Assigns(workers.Worker):
        def setup(self):
            self.metrics = {'mine': 1}

    assert WorkerClient(Own).worker.metrics() == 'mine'
    assert WorkerClient(Assigns).worker.metrics == {'mine': 1}
