"""Dispatcher hooks over real HTTP: on_response() sees the response and the
pending request and forwards to a storage pool with request_id=-1; on_idle()
runs every SELECT_TIMEOUT seconds (0.2 in the app)."""
import re
import time

import pytest

APP = 'core_hooks'


def stored(server):
    reply = server.get('/storage/list')
    assert reply.status == 200
    return reply.json


def seen(server):
    reply = server.get('/_seen')
    assert reply.status == 200
    return reply.json


def wait_record(server, result):
    """The stored record whose 'result' is `result` (forwarded by on_response)."""
    def find():
        for record in stored(server)['saved']:
            if isinstance(record, dict) and record.get('result') == result:
                return record
        return None
    return server.wait_until(find, timeout=5, what=f'forward of {result!r}')


def wait_seen(server, predicate, what):
    def find():
        for entry in reversed(seen(server)['seen']):
            if predicate(entry):
                return entry
        return None
    return server.wait_until(find, timeout=5, what=what)


def test_on_response_forwards_to_storage_pool(module_server):
    before = len(stored(module_server)['saved'])
    reply = module_server.post('/lpr/recognize', json_body={'image': 'abc123'})
    assert reply.status == 200
    assert reply.json == {'plate': '321CBA'}
    record = wait_record(module_server, {'plate': '321CBA'})
    listing = stored(module_server)
    assert len(listing['saved']) == before + 1
    assert listing['request_ids'][-1] == -1
    # 'image' is pending.client.data: the original request's JSON body
    assert record == {'image': {'image': 'abc123'},
                      'result': {'plate': '321CBA'}}


def test_on_response_sees_status_data_and_pool(module_server):
    reply = module_server.post('/lpr/recognize', json_body={'image': 'zz9'})
    assert reply.status == 200
    entry = wait_seen(module_server, lambda e: e['data'] == {'plate': '9ZZ'},
                      'on_response call')
    assert entry['status'] == 200
    assert entry['pool'] == 'LprWorker'
    assert entry['is_pending_request']


@pytest.mark.parametrize('connection', ['keep-alive', 'close'])
def test_on_response_pending_client_is_the_request(module_server, connection):
    image = f'pc-{connection}'
    plate = image[::-1].upper()
    reply = module_server.post('/lpr/recognize', json_body={'image': image},
                               headers={'Connection': connection})
    assert reply.status == 200
    entry = wait_seen(module_server, lambda e: e['data'] == {'plate': plate},
                      'on_response call')
    assert entry['client_path'] == '/lpr/recognize'
    assert entry['client_method'] == 'POST'


def test_on_response_sees_error_status_and_does_not_forward(module_server):
    reply = module_server.post('/lpr/recognize', json_body={'nothing': 1})
    assert reply.status == 422
    entry = wait_seen(module_server, lambda e: e['status'] == 422,
                      'on_response for the 422')
    assert entry['data'] == {'error': 'no image'}
    assert entry['pool'] == 'LprWorker'
    # a later 200 is forwarded, the 422 never is
    assert module_server.post('/lpr/recognize',
                              json_body={'image': 'q'}).status == 200
    wait_record(module_server, {'plate': 'Q'})
    for record in stored(module_server)['saved']:
        assert record.get('result') != {'error': 'no image'}


def test_on_response_for_other_pool_with_text_data(module_server):
    before = len(stored(module_server)['saved'])
    reply = module_server.get('/text/plain')
    assert reply.status == 200
    assert reply.text == 'just text'
    entry = wait_seen(module_server, lambda e: e['data'] == 'just text',
                      'on_response for /text/plain')
    assert entry['pool'] == 'TextWorker'
    assert entry['status'] == 200
    time.sleep(0.2)
    assert len(stored(module_server)['saved']) == before  # not forwarded


def test_forwarded_response_is_ignored_by_dispatcher(module_server):
    count = len(stored(module_server)['saved'])
    for number in range(5):
        assert module_server.post(
            '/lpr/recognize', json_body={'image': f'n{number}'}).status == 200
    module_server.wait_until(
        lambda: len(stored(module_server)['saved']) >= count + 5, timeout=5,
        what='five forwarded records')
    state = seen(module_server)
    # the storage pool's answers to the -1 requests reach neither a client
    # nor on_response: only answers to real clients appear there
    # (a save answer is {'saved': <count>}; only the listing reached clients)
    for entry in state['seen']:
        if entry['pool'] == 'StorageWorker':
            assert isinstance(entry['data']['saved'], list), entry
    assert state['pending'] == 0
    log = module_server.log()
    assert ' ERROR ' not in log and ' WARNING ' not in log, log[-3000:]


def test_forwarded_request_headers_and_content_type_reach_the_worker(module_server):
    # a Request put on a pool's queue is seen as an HTTP request is:
    # lower-case header names, content_type and cookies read from them, and
    # a content_type given to Request() kept
    assert module_server.get('/_forward_meta/t1').status == 200

    def records():
        found = [record for record in stored(module_server)['saved']
                 if isinstance(record, dict) and 'headers' in record
                 and str(record['headers'].get('x-tag', '')).startswith('t1')]
        return found if len(found) == 2 else None
    first, second = sorted(module_server.wait_until(
        records, timeout=5, what='two forwarded requests'),
        key=lambda record: record['headers']['x-tag'])
    assert first['headers'] == {'x-tag': 't1', 'content-type': 'application/json',
                                'cookie': 'sid=s1'}
    assert first['content_type'] == 'application/json'
    assert first['cookies'] == {'sid': 's1'}
    assert second['content_type'] == 'text/csv'
    assert second['headers'] == {'x-tag': 't1-2', 'content-type': 'text/csv'}


def test_requests_put_from_another_thread_all_arrive_in_order(module_server):
    """request_queue.put() from a thread of the user's: the loop queues
    them (woken), none lost, in the order they were put."""
    assert module_server.get('/_forward_thread/300').status == 200

    def arrived():
        got = [record['thread'] for record in stored(module_server)['saved']
               if isinstance(record, dict) and 'thread' in record]
        return got if len(got) >= 300 else None
    assert module_server.wait_until(
        arrived, timeout=10, what='300 requests put from a thread') == list(
            range(300))
    assert module_server.get('/text/plain').status == 200


def test_storage_reachable_directly(module_server):
    reply = module_server.post('/internal/storage/save', json_body={'direct': True})
    assert reply.status == 200
    assert {'direct': True} in stored(module_server)['saved']
    entry = wait_seen(module_server,
                      lambda e: e['pool'] == 'StorageWorker'
                      and not isinstance(e['data']['saved'], list),
                      'on_response for a direct save')
    assert entry['status'] == 200
    assert entry['data'] == reply.json


def test_dispatcher_on_idle_every_select_timeout(module_server):
    first = module_server.get('/_idle').json
    time.sleep(1.0)
    second = module_server.get('/_idle').json
    calls = second['idle_calls'] - first['idle_calls']
    elapsed = second['now'] - first['now']
    # SELECT_TIMEOUT = 0.2: about five calls a second
    assert 0.6 * elapsed / 0.2 <= calls <= 1.4 * elapsed / 0.2 + 1, (calls, elapsed)
    times = second['times']
    gaps = [later - earlier for earlier, later in zip(times, times[1:])]
    assert gaps and all(0.1 <= gap <= 0.45 for gap in gaps[-4:]), gaps


def test_dispatcher_on_idle_runs_under_traffic(module_server):
    first = module_server.get('/_idle').json
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        assert module_server.get('/text/plain').status == 200
    second = module_server.get('/_idle').json
    assert second['idle_calls'] - first['idle_calls'] >= 3


def test_fire_and_forget_request_refused_by_its_worker_is_logged(module_server):
    # a request_id=-1 request to a path its pool has no route for (a typo
    # in on_response) was answered 404 into the void: the data was lost
    # without a word
    assert module_server.get('/_forward/internal/storage/sav').status == 200
    module_server.wait_log(re.escape(
        'POST /internal/storage/sav (request_id=-1, fire-and-forget) was '
        'answered 404'), timeout=5)
