"""The runnable examples in examples/ (the README's tour and the demo)
start and answer as their docstrings say."""

import http.client
import json
import os
import time

import pytest

from harness import ROOT, AppServer

EXAMPLES = os.path.join(ROOT, 'examples')


@pytest.fixture
def example():
    started = []

    def start(name, **env):
        server = AppServer(os.path.join(EXAMPLES, name + '.py'), (),
                           dict({'PORT': '0'}, **env))
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.cleanup()


def test_quickstart(example):
    server = example('quickstart')
    key = {'X-API-Key': 'secret'}
    assert server.get('/health').json == {'status': 'ok'}
    assert server.get('/api/items').status == 401
    assert server.get('/api/items', headers=key).json == {'items': []}
    added = server.post('/api/items', json_body={'name': 'pen'}, headers=key)
    assert added.status == 201 and added.json['name'] == 'pen'
    assert server.get(f"/api/item/{added.json['id']}", headers=key).json == added.json
    assert server.get('/api/item/99', headers=key).status == 404


def test_handlers(example):
    server = example('handlers')
    users = server.get('/api/user').json
    assert users['login'] == 'demo:demo' and len(users['users']) == 3
    assert server.request('DELETE', '/api/user/2').json == {'deleted': 2}
    assert server.get('/admin/user/1').json == {'name': 'ada'}
    assert server.get('/api/compute/primes?n=100').json['primes'] == 25
    fallback = server.get('/anything/else').json
    assert fallback == {'served_by': 'fallback', 'path': '/anything/else'}


def test_streaming(example):
    server = example('streaming')
    conn = server.connection(timeout=10)
    conn.request('GET', '/events')
    stream = conn.getresponse()
    assert stream.getheader('content-type') == 'text/event-stream'
    assert stream.readline() == b'event: hello\n'
    while stream.readline() != b'\n':
        pass
    assert server.post('/publish', json_body={'msg': 'hi'}).json == {'sent': 1}
    lines = [stream.readline() for _ in range(3)]
    assert lines == [b'event: update\n', b'data: {"msg": "hi"}\n', b'\n']
    conn.close()
    started = time.monotonic()
    assert server.get('/later').json == {'waited': True}
    assert time.monotonic() - started >= 0.9
    counted = server.get('/count?n=3')
    assert counted.headers['content-type'] == 'application/x-ndjson'
    assert [json.loads(line) for line in counted.body.splitlines()] == [
        {'value': value} for value in range(4)]


def test_hooks(example):
    server = example('hooks')
    assert server.post('/lpr/recognize', body=b'ABC123').json == {'plate': '321CBA'}
    saved = server.wait_until(
        lambda: server.get('/internal/storage/list').json['saved'],
        what='the forwarded result stored')
    assert saved == [{'image': 'ABC123', 'result': {'plate': '321CBA'}}]
    assert server.post('/config?rate=5').json == {'sent': 5}
    server.wait_until(lambda: server.get('/lpr/config').json['rate_limit'] == 5,
                      what='the config reaching a worker')
    monitor = server.get('/monitor').json
    assert [pool['name'] for pool in monitor['pools']] == ['LprWorker', 'StorageWorker']
    assert monitor['pending'] == 0


def test_demo(example):
    server = example('demo')
    assert b'uhttp-workers demo' in server.get('/').body
    icon = server.get('/favicon.svg')     # the page's icon, no 404 per visit
    assert icon.status == 200 and icon.body.startswith(b'<svg')
    assert server.get('/style.css').headers['content-type'].startswith('text/css')
    assert server.get('/health').json == {'status': 'ok'}
    assert server.post('/api/notes', json_body={'text': 'x'}).status == 401
    note = server.post('/api/notes', json_body={'text': 'hello'},
                       headers={'X-API-Key': 'demo-key'})
    assert note.status == 201 and note.json['text'] == 'hello'
    texts = [n['text'] for n in server.get('/api/notes').json['notes']]
    assert 'hello' in texts
    primes = server.get('/api/compute/primes?n=1000').json
    assert primes['primes'] == 168
    conn = http.client.HTTPConnection('127.0.0.1', server.port, timeout=10)
    conn.request('GET', '/api/notes/events')
    stream = conn.getresponse()
    assert stream.readline() == b'event: hello\n'
    conn.close()
    assert b'/_dashboard/events' in server.get('/_dashboard').body
    deadline = time.monotonic() + 10
    while True:  # the workers' metrics arrive batched
        metrics = server.get('/metrics').body.decode()
        if 'demo_computations_total{kind="primes",pool="ComputeWorker"} 1.0' in metrics:
            break
        assert time.monotonic() < deadline, metrics[-2000:]
        time.sleep(0.2)
    assert 'uhttp_workers_requests_total{' in metrics
    assert 'demo_notes{pool="NotesWorker",slot="0"} 2.0' in metrics
    import asyncio
    from websockets.asyncio.client import connect

    async def panel():
        async with connect(f'ws://127.0.0.1:{server.port}/api/notes/ws') as ws:
            assert json.loads(await ws.recv())['event'] == 'hello'
            await ws.send('ping?')
            assert json.loads(await ws.recv())['text'] == 'ping?'
            server.post('/api/notes', json_body={'text': 'live'},
                        headers={'X-API-Key': 'demo-key'})
            pushed = json.loads(await ws.recv())
            assert pushed['event'] == 'created'
            assert pushed['data']['text'] == 'live'
    asyncio.run(asyncio.wait_for(panel(), 20))


def test_chat(example):
    """A message said on one worker reaches the room's clients on both."""
    import asyncio
    from websockets.asyncio.client import connect
    server = example('chat')
    assert b'WebSocket' in server.get('/').body

    async def talk():
        url = f'ws://127.0.0.1:{server.port}/ws/chat/room1'
        # an idle worker is served first, so which one takes a connection
        # depends on timing: open them six at a time until both have some
        clients, workers = [], set()
        for _ in range(20):
            batch = await asyncio.gather(*(connect(url) for _ in range(6)))
            for ws in batch:
                workers.add(json.loads(await ws.recv())['system'].split()[-1])
            clients += batch
            if len(workers) == 2:
                break
        other = await connect(f'ws://127.0.0.1:{server.port}/ws/chat/room2')
        await other.recv()
        await clients[0].send('hello all')
        got = [json.loads(await ws.recv()) for ws in clients]
        assert {m['text'] for m in got} == {'hello all'}
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(other.recv(), 0.5)  # another room
        for ws in clients + [other]:
            await ws.close()
        return workers
    workers = asyncio.run(asyncio.wait_for(talk(), 20))
    assert len(workers) == 2  # both workers had members of the room
