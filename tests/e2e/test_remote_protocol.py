"""The START script against a real redis-server: a request entry is started
by one worker at most, whether it was read by XREADGROUP or taken over by
XAUTOCLAIM; requests past their timeout or cancelled by their dispatcher
never start."""

import time

import pytest

from uhttp.workers import broker, messages

from remote_util import REDIS, RedisServer

pytestmark = pytest.mark.skipif(
    REDIS is None, reason='redis-server not installed (Debian: redis-server)')

KEYS = broker.Keys('ItemWorker')
REPLY = KEYS.reply('test-dispatcher')


@pytest.fixture
def client():
    server = RedisServer().start()
    redis = server.client()
    redis.xgroup_create(KEYS.requests, broker.GROUP, id='0', mkstream=True)
    yield redis
    server.kill()


def add_request(client, request_id, timeout=10):
    message = (messages.M_REQUEST, 0, request_id, 'GET', '/api/pid', None, {},
               None, False, None, None)
    return client.xadd(KEYS.requests, broker.encode_request(
        message, REPLY, timeout)).decode()


def start(client, worker, entry_id, request_id, timeout_ms=10_000):
    return client.eval(broker.START_SCRIPT, 3, KEYS.requests, REPLY,
                       KEYS.cancelled(REPLY), broker.GROUP, entry_id, worker,
                       request_id, timeout_ms, broker.REPLY_MAXLEN,
                       broker.REPLY_TTL)


def started_notices(client):
    return [broker.decode_reply(entry_id, fields)
            for entry_id, fields in client.xrange(REPLY)]


def test_read_then_claimed_starts_once(client):
    entry_id = add_request(client, 1)
    got = client.xreadgroup(broker.GROUP, 'vm:1', {KEYS.requests: '>'},
                            count=1)
    assert got[0][1][0][0].decode() == entry_id
    time.sleep(0.05)
    claimed = client.xautoclaim(KEYS.requests, broker.GROUP, 'vm:2',
                                min_idle_time=10, start_id='0-0', count=1)
    assert claimed[1][0][0].decode() == entry_id  # vm:1 looked dead
    assert start(client, 'vm:2', entry_id, 1) == broker.STARTED
    assert start(client, 'vm:1', entry_id, 1) == broker.TAKEN  # too late
    notices = started_notices(client)
    assert [(n.kind, n.worker, n.request_id) for n in notices] == [
        ('started', 'vm:2', 1)]
    # the entry is gone: nothing left to deliver or claim
    assert client.xlen(KEYS.requests) == 0
    assert client.xpending(KEYS.requests, broker.GROUP)['pending'] == 0


def test_each_request_goes_to_one_reader_at_a_time(client):
    ids = [add_request(client, number) for number in range(1, 4)]
    first = client.xreadgroup(broker.GROUP, 'vm:1', {KEYS.requests: '>'},
                              count=1)
    second = client.xreadgroup(broker.GROUP, 'vm:2', {KEYS.requests: '>'},
                               count=1)
    assert first[0][1][0][0].decode() == ids[0]
    assert second[0][1][0][0].decode() == ids[1]
    assert client.xpending(KEYS.requests, broker.GROUP)['pending'] == 2


def test_past_its_timeout_never_starts(client):
    entry_id = add_request(client, 5)
    client.xreadgroup(broker.GROUP, 'vm:1', {KEYS.requests: '>'}, count=1)
    time.sleep(0.03)
    assert start(client, 'vm:1', entry_id, 5, timeout_ms=10) == broker.EXPIRED
    assert started_notices(client) == []
    assert client.xlen(KEYS.requests) == 0


def test_cancelled_by_its_dispatcher_never_starts(client):
    entry_id = add_request(client, 6)
    client.sadd(KEYS.cancelled(REPLY), '6')
    client.xreadgroup(broker.GROUP, 'vm:1', {KEYS.requests: '>'}, count=1)
    assert start(client, 'vm:1', entry_id, 6) == broker.CANCELLED
    assert started_notices(client) == []
    assert not client.sismember(KEYS.cancelled(REPLY), '6')


def roster(client, forget_ms=broker.FORGET_MS):
    return broker.parse_roster(client.eval(
        broker.ROSTER_SCRIPT, 3, KEYS.workers, KEYS.info, KEYS.requests,
        forget_ms, broker.GROUP))


def test_heartbeat_and_roster_use_the_servers_clock(client):
    now = client.eval(broker.HEARTBEAT_SCRIPT, 2, KEYS.workers, KEYS.info,
                      'vm:1', 1500, broker.encode_info({'host': 'vm'}))
    server_ms, beats, info = roster(client)
    assert server_ms >= now
    assert now - 1500 - 1 <= beats['vm:1'] <= now - 1500 + 1
    assert info['vm:1'] == {'host': 'vm'}
    client.xreadgroup(broker.GROUP, 'vm:1', {KEYS.requests: '>'}, count=1)
    client.eval(broker.LEAVE_SCRIPT, 3, KEYS.workers, KEYS.info,
                KEYS.requests, 'vm:1', broker.GROUP)
    assert [c['name'] for c in client.xinfo_consumers(
        KEYS.requests, broker.GROUP)] == []  # it held nothing: gone
    add_request(client, 9)
    client.xreadgroup(broker.GROUP, 'vm:2', {KEYS.requests: '>'}, count=1)
    client.eval(broker.LEAVE_SCRIPT, 3, KEYS.workers, KEYS.info,
                KEYS.requests, 'vm:2', broker.GROUP)
    assert [c['name'] for c in client.xinfo_consumers(
        KEYS.requests, broker.GROUP)] == [b'vm:2']  # its entry is not lost
    assert roster(client)[1] == {}


def take(client, worker):
    return broker.parse_take(client.eval(
        broker.TAKE_SCRIPT, 1, KEYS.requests, broker.GROUP, worker,
        broker.REPLY_MAXLEN, broker.REPLY_TTL))


def test_take_reads_and_starts_in_one_step(client):
    assert take(client, 'vm:1') is None  # nothing waiting
    first = add_request(client, 11)
    second = add_request(client, 12)
    outcome, entry_id, fields = take(client, 'vm:1')
    assert (outcome, entry_id.decode()) == (broker.STARTED, first)
    assert broker.decode_request(entry_id, fields).request_id == 11
    outcome, entry_id, _ = take(client, 'vm:2')
    assert (outcome, entry_id.decode()) == (broker.STARTED, second)
    assert take(client, 'vm:1') is None
    assert [(n.worker, n.request_id) for n in started_notices(client)] == [
        ('vm:1', 11), ('vm:2', 12)]
    assert client.xlen(KEYS.requests) == 0
    assert client.xpending(KEYS.requests, broker.GROUP)['pending'] == 0


def test_take_skips_cancelled_and_expired(client):
    add_request(client, 21)
    client.sadd(KEYS.cancelled(REPLY), '21')
    assert take(client, 'vm:1')[0] == broker.CANCELLED
    add_request(client, 22, timeout=0.01)
    time.sleep(0.03)
    assert take(client, 'vm:1')[0] == broker.EXPIRED
    assert started_notices(client) == []
    assert client.xlen(KEYS.requests) == 0


def requeue(client, entry_id, fields, number=1):
    notice = broker.flat(broker.encode_reply(
        'vm:1', number, (messages.W_BOUNCE, 31)))
    return client.eval(
        broker.REQUEUE_SCRIPT, 3, KEYS.requests, REPLY,
        broker.requeue_guard(KEYS, entry_id), broker.REQUEUE_GUARD_TTL,
        broker.REQUESTS_MAXLEN, broker.REPLY_MAXLEN, broker.REPLY_TTL,
        len(notice), *notice, *broker.flat(fields))


def test_a_requeue_written_twice_puts_the_request_back_once(client):
    add_request(client, 31)
    outcome, entry_id, fields = take(client, 'vm:1')  # then vm:1 pauses
    assert outcome == broker.STARTED
    assert requeue(client, entry_id, fields) == 1
    assert requeue(client, entry_id, fields) == 0  # a retried write
    assert client.xlen(KEYS.requests) == 1
    outcome, copy_id, copy = take(client, 'vm:2')
    assert outcome == broker.STARTED and copy_id != entry_id
    assert broker.decode_request(copy_id, copy).request_id == 31
    assert take(client, 'vm:3') is None  # it runs once
    # the dispatcher reads the bounce before the copy's start
    kinds = [(n.kind, n.worker) for n in started_notices(client)]
    assert kinds == [('started', 'vm:1'), ('message', 'vm:1'),
                     ('started', 'vm:2')]
    assert 0 < client.ttl(broker.requeue_guard(KEYS, entry_id))


def test_answer_streams_get_a_lifetime(client):
    client.eval(broker.REPLY_SCRIPT, 1, REPLY, broker.REPLY_MAXLEN,
                broker.REPLY_TTL, *broker.flat(broker.encode_reply(
                    'vm:1', 1, (messages.W_BOUNCE, 5))))
    assert 0 < client.ttl(REPLY) <= broker.REPLY_TTL
    client.expire(REPLY, 3 * broker.REPLY_TTL)  # its dispatcher renews it
    add_request(client, 41)
    assert take(client, 'vm:1')[0] == broker.STARTED
    assert client.ttl(REPLY) > broker.REPLY_TTL  # (kept, not shortened)
    client.delete(REPLY)  # its dispatcher stopped
    add_request(client, 42)
    assert take(client, 'vm:1')[0] == broker.STARTED
    assert 0 < client.ttl(REPLY) <= broker.REPLY_TTL


def test_forgotten_workers_leave_the_consumer_group(client):
    add_request(client, 51)
    client.xreadgroup(broker.GROUP, 'vm:holds', {KEYS.requests: '>'}, count=1)
    client.xreadgroup(broker.GROUP, 'vm:empty', {KEYS.requests: '>'}, count=1)
    for worker in ('vm:holds', 'vm:empty'):  # both killed long ago
        client.eval(broker.HEARTBEAT_SCRIPT, 2, KEYS.workers, KEYS.info,
                    worker, 10_000, broker.encode_info({}))
    assert roster(client, forget_ms=5_000)[1] == {}
    assert [c['name'] for c in client.xinfo_consumers(
        KEYS.requests, broker.GROUP)] == [b'vm:holds']  # its entry waits
