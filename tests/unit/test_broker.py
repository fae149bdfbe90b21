"""The remote pool's protocol as plain data: key names, entry encoding,
URLs, the roster reading; the dispatcher's bookkeeping of remote workers
(remote.py). No Redis, no processes."""

import pickle

import pytest

import uhttp.workers as workers
from uhttp.workers import (broker, brokerurl, messages, pending as pending_mod,
                           remote)
from uhttp.workers.heartbeat import NO_REQUEST


class ItemWorker(workers.Worker):
    pass


def test_key_names_are_per_pool():
    keys = broker.Keys('ItemWorker')
    assert keys.requests == 'uhttp:ItemWorker:requests'
    assert keys.workers == 'uhttp:ItemWorker:workers'
    assert keys.control_of('vm:12') == 'uhttp:ItemWorker:control:vm:12'
    reply = keys.reply('vm:1:ab')
    assert reply == 'uhttp:reply:vm:1:ab:ItemWorker'
    assert keys.cancelled(reply) == reply + ':cancelled'
    assert broker.Keys('Other').requests != keys.requests
    # each pool of a dispatcher reads (and trims) answers of its own
    assert broker.Keys('Other').reply('vm:1:ab') != reply


def test_request_round_trip_as_redis_returns_it():
    message = (messages.M_REQUEST, 0, 42, 'POST', '/api/items', {'a': '1'},
               {'content-type': 'application/json'}, b'{"x": 1}', False,
               '10.0.0.1', {'user': 'ann'})
    fields = broker.encode_request(message, 'uhttp:reply:d', 2.5)
    raw = {key.encode(): value if isinstance(value, bytes) else value.encode()
           for key, value in fields.items()}  # what redis-py gives back
    request = broker.decode_request(b'1700000000000-3', raw)
    assert request.entry_id == '1700000000000-3'
    assert request.request_id == 42
    assert request.reply == 'uhttp:reply:d'
    assert request.timeout_ms == 2500
    assert request.with_seq(7) == message[:1] + (7,) + message[2:]
    assert broker.decode_request(b'1-1', {}) is None


def test_no_timeout_is_zero():
    message = (messages.M_REQUEST, 0, -1, 'GET', '/', None, {}, None, True,
               None, None)
    assert broker.encode_request(message, 'r', None)['t'] == '0'


def test_replies_started_notices_and_deaths_decode():
    fields = broker.encode_reply('vm:9', 5, (messages.W_RESPONSE, 3, 200))
    reply = broker.decode_reply(b'5-0', {k.encode(): v if isinstance(v, bytes)
                                         else v.encode()
                                         for k, v in fields.items()})
    assert (reply.kind, reply.worker, reply.number) == ('message', 'vm:9', 5)
    assert reply.message == (messages.W_RESPONSE, 3, 200)
    started = {b'w': b'vm:9', b's': b'3'}  # as START_SCRIPT writes it
    reply = broker.decode_reply('6-0', started)
    assert (reply.kind, reply.request_id) == ('started', 3)
    reply = broker.decode_reply('7-0', broker.encode_death('vm:9', 'killed'))
    assert (reply.kind, reply.reason, reply.left) == ('death', 'killed', False)
    # a worker that stopped as asked left (fields come back as bytes)
    fields = broker.encode_death('vm:9', 'exited with code 0', left=True)
    reply = broker.decode_reply('8-0', {k.encode(): v.encode()
                                        for k, v in fields.items()})
    assert (reply.kind, reply.left) == ('death', True)
    assert reply.exitcode is None


def test_a_death_carries_its_exit_code_and_keep_alives_decode():
    fields = broker.encode_death('vm:9', 'exited with code 3', exitcode=3)
    reply = broker.decode_reply('9-0', {k.encode(): v.encode()
                                        for k, v in fields.items()})
    assert (reply.kind, reply.exitcode, reply.left) == ('death', 3, False)
    killed = broker.encode_death('vm:9', 'killed by SIGKILL', exitcode=-9)
    assert broker.decode_reply('9-1', killed).exitcode == -9
    fields = broker.encode_keepalive('vm:9')
    reply = broker.decode_reply('9-2', {k.encode(): v.encode()
                                        for k, v in fields.items()})
    assert (reply.kind, reply.worker) == ('keepalive', 'vm:9')


def test_control_frames_and_settings():
    from uhttp.workers import channel
    frame = channel.pack((messages.M_CONFIG, {'rate': 5}))
    assert broker.decode_control({b'f': frame}) == frame
    assert broker.frame_message(frame) == (messages.M_CONFIG, {'rate': 5})
    blob = broker.encode_settings({'kwargs': {'db': 'x'}})
    assert broker.decode_settings(blob) == {'kwargs': {'db': 'x'}}
    assert broker.decode_info(b'not a pickle') == {}


def test_roster_parsing():
    now, beats, info = broker.parse_roster(
        [1000, [b'vm:1', b'900', b'vm:2', b'990.5'],
         [b'vm:1', pickle.dumps({'host': 'vm', 'slot': 0})]])
    assert now == 1000
    assert beats == {'vm:1': 900.0, 'vm:2': 990.5}
    assert info == {'vm:1': {'host': 'vm', 'slot': 0}}


def test_entry_ids_compare():
    assert broker.entry_ms(b'1700-3') == 1700
    assert broker.newer('10-2', '10-1') and broker.newer('11-0', '10-9')
    assert not broker.newer('10-1', '10-1')


@pytest.mark.parametrize('url', ['redis://localhost:6379/0',
                                 'rediss://:secret@cache.example:6380/2',
                                 'unix:///run/redis.sock'])
def test_broker_urls_accepted(url):
    assert brokerurl.check_url(url) == url


@pytest.mark.parametrize('url', ['http://localhost', 'localhost:6379', ''])
def test_bad_broker_urls_say_so(url):
    with pytest.raises(ValueError, match='redis://'):
        brokerurl.check_url(url)
    with pytest.raises(TypeError):
        brokerurl.check_url(6379)


@pytest.mark.parametrize('url, problem', [
    ('redis://127.0.0.1:notaport/0', "'notaport'"),
    ('redis://127.0.0.1:99999/0', 'out of range'),
    ('redis://127.0.0.1:6379/0?bogus_option=1', "unknown option 'bogus_option'"),
    ('redis://', 'no host'),
    ('redis://:6379/0', 'no host'),
    ('unix://', 'names the socket'),
    ('redis://h:6379/zero', 'database must be a number'),
    ('redis://h:6379/0?socket_timeout=soon', "'socket_timeout'"),
    ('rediss://h:6380/0?ssl_cert_reqs=sometimes', 'sometimes'),
])
def test_malformed_broker_urls_are_refused_naming_the_broker(url, problem):
    with pytest.raises(ValueError) as info:
        brokerurl.check_url(url)
    assert 'WorkerPool broker' in str(info.value)
    assert problem in str(info.value)
    with pytest.raises(ValueError, match='broker'):
        workers.WorkerPool(ItemWorker, broker=url, num_workers=0)


def test_a_malformed_url_never_shows_its_password():
    for url in ('redis://:s3cretPW@h:notaport/0',
                'redis://ann:s3cretPW@h:6379/0?bogus=1',
                'redis://h:6379/0?password=s3cretPW&socket_timeout=x'):
        with pytest.raises(ValueError) as info:
            brokerurl.check_url(url, '--broker')
        assert str(info.value).startswith('--broker ')
        assert 's3cretPW' not in str(info.value)
    assert brokerurl.scrub('bad s3cretPW here', 'redis://:s3cretPW@h/0') == (
        'bad *** here')


def test_a_password_the_url_parsers_miss_is_never_shown():
    for url in ('redis://:Xq7?Zk9@h:6379/0', 'redis://:Xq7/Zk9@h:6379/0',
                'redis://ann:Xq7#Zk9@h/0', 'unix://:Xq7?Zk9@/run/r.sock'):
        with pytest.raises(ValueError) as info:
            brokerurl.check_url(url, '--broker')
        assert 'Xq7' not in str(info.value) and 'Zk9' not in str(info.value)
        assert '%3F' in str(info.value)  # (how to write it)
        assert 'Xq7' not in brokerurl.redact(url) and 'Zk9' not in brokerurl.redact(url)
    assert brokerurl.redact('redis://:Xq7?Zk9@h:1/0') == 'redis://***@h:1/0'
    assert brokerurl.redact('rediss://ann:Xq7/Zk9@h/0') == 'rediss://ann:***@h/0'
    assert brokerurl.redact('redis://Xq7Zk9@h/0') == 'redis://***@h/0'
    assert brokerurl.redact('unix:///run/redis@main.sock') == (
        'unix:///run/redis@main.sock')
    assert brokerurl.redact('rediss://:pw@h/0?ssl_ca_certs=/etc/a@b.pem') == (
        'rediss://***@h/0?ssl_ca_certs=/etc/a@b.pem')
    assert brokerurl.check_url('redis://:p%3Fw@h/0') == 'redis://:p%3Fw@h/0'


def test_passwords_never_shown():
    assert brokerurl.redact('redis://:s3cret@h:1/0') == 'redis://***@h:1/0'
    assert brokerurl.redact('rediss://ann:s3cret@h/0') == 'rediss://ann:***@h/0'
    assert brokerurl.redact('redis://h:1/0') == 'redis://h:1/0'
    assert brokerurl.redact('redis://h/0?password=s3cret&db=1') == (
        'redis://h/0?password=***&db=1')
    assert brokerurl.redact('rediss://:pw@h/0?ssl_ca_certs=/ca.pem') == (
        'rediss://***@h/0?ssl_ca_certs=/ca.pem')
    with pytest.raises(ValueError) as info:
        brokerurl.check_url('http://:s3cret@h')
    assert 's3cret' not in str(info.value)


def test_pool_with_broker_may_have_no_local_workers():
    pool = workers.WorkerPool(ItemWorker, broker='redis://h/0', num_workers=0)
    assert pool.num_workers == 0 and pool.broker == 'redis://h/0'
    assert pool.status()['broker'] == {'url': 'redis://h/0',
                                       'connected': False, 'error': None}
    with pytest.raises(ValueError, match='num_workers'):
        workers.WorkerPool(ItemWorker, num_workers=0)
    with pytest.raises(ValueError, match='broker'):
        workers.WorkerPool(ItemWorker, broker='localhost')


# -- the dispatcher's bookkeeping -------------------------------------------------

class Client:
    method = 'GET'
    path = '/api/x'


def pool_and_table(stuck_timeout=3):
    pool = workers.WorkerPool(ItemWorker, broker='redis://h/0', num_workers=0,
                              stuck_timeout=stuck_timeout)
    return pool, pending_mod.PendingTable()


def test_a_request_is_started_by_one_worker_and_released_once():
    pool, table = pool_and_table()
    sent = []
    scheduler = pool.scheduler
    scheduler.submit = lambda item: sent.append(item.request_id) or True
    item = table.open(Client(), pool, 0.0)
    scheduler.enqueue(item)
    assert sent == [item.request_id] and len(scheduler) == 1
    roster = remote.Roster(pool, lambda worker, frame: None)
    first = roster.get('vm:1', 0.0)
    second = roster.get('vm:2', 0.0)
    assert scheduler.started(first, item.request_id) is item
    assert item.worker is first and len(scheduler) == 0
    assert scheduler.started(second, item.request_id) is None  # not twice
    assert scheduler.release(first, item.request_id) is item
    assert scheduler.release(first, item.request_id) is None


def test_broker_down_refuses_and_cancels():
    pool, table = pool_and_table()
    refused, cancelled = [], []
    scheduler = pool.scheduler
    scheduler.submit = lambda item: False
    scheduler.refuse = refused.append
    scheduler.cancel = cancelled.extend
    item = table.open(Client(), pool, 0.0)
    scheduler.enqueue(item)
    assert refused == [item] and len(scheduler) == 0
    scheduler.submit = lambda item: True
    waiting = [table.open(Client(), pool, 0.0) for _ in range(3)]
    for each in waiting:
        scheduler.enqueue(each)
    assert scheduler.drain() == waiting
    assert cancelled == [each.request_id for each in waiting]


def test_ended_while_queued_is_cancelled():
    pool, table = pool_and_table()
    cancelled = []
    scheduler = pool.scheduler
    scheduler.submit = lambda item: True
    scheduler.cancel = cancelled.extend
    items = [table.open(Client(), pool, 0.0) for _ in range(3)]
    for each in items:
        scheduler.enqueue(each)
    table.finish(items[1], pending_mod.PENDING_TIMEOUT)
    scheduler.prune()
    assert cancelled == [items[1].request_id] and len(scheduler) == 2


def test_a_dead_workers_started_and_held_requests_are_its_victims():
    pool, table = pool_and_table()
    scheduler = pool.scheduler
    scheduler.submit = lambda item: True
    roster = remote.Roster(pool, lambda worker, frame: None)
    handle = roster.get('vm:1', 0.0)
    running, deferred = (table.open(Client(), pool, 0.0) for _ in range(2))
    for each in (running, deferred):
        scheduler.enqueue(each)
        scheduler.started(handle, each.request_id)
    scheduler.release(handle, deferred.request_id)
    handle.held[deferred.request_id] = deferred
    victims = scheduler.victims(handle)
    assert sorted(pending.request_id for _, pending in victims) == [
        running.request_id, deferred.request_id]
    assert not handle.started and not handle.held


def test_bounced_goes_back_to_the_queue():
    pool, table = pool_and_table()
    scheduler = pool.scheduler
    scheduler.submit = lambda item: True
    handle = remote.Roster(pool, None).get('vm:1', 0.0)
    item = table.open(Client(), pool, 0.0)
    scheduler.enqueue(item)
    scheduler.started(handle, item.request_id)
    scheduler.bounced(handle, item.request_id)
    assert item.state == pending_mod.QUEUED and len(scheduler) == 1


def test_roster_judges_by_heartbeat_age_on_the_servers_clock():
    pool, _ = pool_and_table(stuck_timeout=3)
    roster = remote.Roster(pool, None)
    revived, dead = roster.beats(100.0, 50_000, {'vm:1:ab': 49_000,
                                                 'vm:2:cd': 40_000}, {})
    assert (revived, dead) == ([], [])
    assert list(roster.handles) == ['vm:1:ab']  # vm:2 was long gone
    handle = roster.handles['vm:1:ab']
    assert handle.alive and handle.host == 'vm' and handle.pid == 1
    assert handle.slot.read()[0] == pytest.approx(99.0)
    revived, dead = roster.beats(104.0, 54_000, {'vm:1:ab': 50_500},
                                 {'vm:1:ab': {'request': 7, 'slot': 2}})
    assert dead == [handle]
    roster.died(handle)
    assert roster.alive_count == 0
    revived, dead = roster.beats(105.0, 55_000, {'vm:1:ab': 55_000}, {})
    assert revived == [handle] and handle.alive


def test_roster_missing_worker_dies_after_stuck_timeout_unless_broker_was_down():
    pool, _ = pool_and_table(stuck_timeout=3)
    roster = remote.Roster(pool, None)
    roster.beats(100.0, 1000, {'vm:1': 1000}, {})
    handle = roster.handles['vm:1']
    assert roster.beats(102.0, 0, {}, {}) == ([], [])
    roster.grace(110.0)  # the broker came back: nobody judged on the gap
    assert roster.beats(111.0, 0, {}, {}) == ([], [])
    assert roster.beats(114.0, 0, {}, {}) == ([], [handle])


def test_info_sets_what_status_shows():
    pool, _ = pool_and_table()
    roster = remote.Roster(pool, None)
    roster.beats(10.0, 1000, {'box:77:ff': 1000},
                 {'box:77:ff': {'host': 'box', 'slot': 3, 'request': 9,
                                'keepalive_age': 0.5, 'accepting': False}})
    status = roster.handles['box:77:ff'].status(10.0)
    assert status['host'] == 'box' and status['pid'] == 77
    assert status['slot'] == 3 and status['current_request'] == 9
    assert status['accepting'] is False and status['remote'] is True
    assert roster.handles['box:77:ff'].slot.read()[1] == pytest.approx(9.5)


def test_answers_carry_the_dispatchers_start_time():
    message = (messages.W_RESPONSE, 1, 200, [], b'', 0, None, 0, 123.0)
    assert remote.with_local_start(message, 5.0)[8] == 5.0
    deferred = (messages.W_DEFERRED, 1, 0, 123.0)
    assert remote.with_local_start(deferred, 5.0)[3] == 5.0
    log = (messages.W_LOG, 'x', 30, 'text')
    assert remote.with_local_start(log, 5.0) == log
    assert remote.split_name('host.example:42:a1b2c3') == ('host.example', 42)
    assert remote.split_name('odd') == ('odd', None)
    assert NO_REQUEST == remote.RemoteSlot(0.0).read()[3]


def test_a_worker_whose_connection_closed_dies_after_two_heartbeats():
    pool, _ = pool_and_table(stuck_timeout=30)
    roster = remote.Roster(pool, None)
    roster.beats(100.0, 10_000, {'vm:1:a': 10_000, 'vm:2:b': 10_000}, {},
                 {'vm:1:a', 'vm:2:b'})
    # vm:1's connection closed (killed); vm:2 is connected but silent
    revived, dead = roster.beats(102.5, 12_500, {'vm:1:a': 10_000,
                                                  'vm:2:b': 10_000}, {},
                                 {'vm:2:b'})
    assert dead == [roster.handles['vm:1:a']]
    # without CLIENT LIST (None), only stuck_timeout counts
    roster = remote.Roster(pool, None)
    roster.beats(100.0, 10_000, {'vm:1:a': 10_000}, {})
    assert roster.beats(105.0, 15_000, {'vm:1:a': 10_000}, {}, None) == (
        [], [])


def test_connection_names():
    name = broker.connection_name('vm:1:ab')
    assert broker.connected_workers([name, None, 'other', '']) == {'vm:1:ab'}


def test_request_entries_go_long_after_their_timeout():
    assert broker.stale_before(100_000, None) is None
    assert broker.stale_before(100_000, 0) is None
    before = broker.stale_before(100_000, 10)
    assert before == f'{100_000 - 20_000 - broker.STALE_MARGIN_MS}-0'
    assert broker.newer('100000-0', before)
    assert broker.stale_before(1_000, 30) == '0-0'


def test_a_start_the_worker_never_got_is_judged_by_heartbeats_after_it():
    pool, table = pool_and_table(stuck_timeout=30)
    roster = remote.Roster(pool, None)
    handle = roster.get('vm:1:ab', 100.0)
    pool.scheduler.submit = lambda item: True
    item = table.open(Client(), pool, 0.0)
    pool.scheduler.enqueue(item)
    pool.scheduler.started(handle, item.request_id)
    handle.start_ms[item.request_id] = 50_000   # its START notice's entry
    idle = {'request': None, 'recent': [], 'taking': False}
    # written before the worker could have the START reply: not judged
    for last in (49_000, 50_000, 50_000 + remote.LOST_AFTER_MS):
        roster.beats(101.0, last, {'vm:1:ab': last}, {'vm:1:ab': idle})
    # later, but a START under way, or the request received: not judged
    for info in (dict(idle, taking=True), dict(idle, request=item.request_id),
                 dict(idle, recent=[item.request_id]), {'request': None}):
        roster.beats(102.0, 52_000, {'vm:1:ab': 52_000}, {'vm:1:ab': info})
    assert roster.take_lost() == [] and item.request_id in handle.started
    roster.beats(103.0, 53_000, {'vm:1:ab': 53_000}, {'vm:1:ab': idle})
    assert roster.take_lost() == [(handle, item.request_id, item)]
    roster.beats(104.0, 54_000, {'vm:1:ab': 54_000}, {'vm:1:ab': idle})
    assert roster.take_lost() == [] and not handle.started  # once only
