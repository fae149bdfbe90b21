"""A tiny ASGI app for uvicorn, no framework.

    uvicorn --workers 2 --host 127.0.0.1 --port 8080 --app-dir benchmarks/apps asgi_app:app

SSE keeps one asyncio.Queue per subscriber in the worker process that
accepted it; /sse/publish puts the event on every queue of its own process.
"""

import asyncio
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402

_JSON = [(b'content-type', b'application/json')]
_BYTES = [(b'content-type', b'application/octet-stream')]
_SSE = [(b'content-type', b'text/event-stream'),
        (b'cache-control', b'no-cache')]

_subscribers = set()


async def _respond(send, status, headers, body):
    await send({'type': 'http.response.start', 'status': status,
                'headers': headers + [
                    (b'content-length', str(len(body)).encode('ascii'))]})
    await send({'type': 'http.response.body', 'body': body})


async def _read_body(receive):
    chunks = []
    while True:
        message = await receive()
        if message['type'] == 'http.disconnect':
            return None
        chunks.append(message.get('body', b''))
        if not message.get('more_body', False):
            return b''.join(chunks)


async def _events(receive, send):
    queue = asyncio.Queue()
    _subscribers.add(queue)
    try:
        await send({'type': 'http.response.start', 'status': 200,
                    'headers': _SSE})
        await send({'type': 'http.response.body', 'body': b'',
                    'more_body': True})
        disconnect = asyncio.ensure_future(_wait_disconnect(receive))
        try:
            while True:
                get = asyncio.ensure_future(queue.get())
                done, _ = await asyncio.wait(
                    {get, disconnect}, return_when=asyncio.FIRST_COMPLETED)
                if disconnect in done:
                    get.cancel()
                    return
                await send({'type': 'http.response.body',
                            'body': get.result(), 'more_body': True})
        finally:
            disconnect.cancel()
    except OSError:
        pass
    finally:
        _subscribers.discard(queue)


async def _wait_disconnect(receive):
    while True:
        message = await receive()
        if message['type'] == 'http.disconnect':
            return


async def _lifespan(receive, send):
    while True:
        message = await receive()
        if message['type'] == 'lifespan.startup':
            await send({'type': 'lifespan.startup.complete'})
        elif message['type'] == 'lifespan.shutdown':
            await send({'type': 'lifespan.shutdown.complete'})
            return


async def app(scope, receive, send):
    if scope['type'] == 'lifespan':
        await _lifespan(receive, send)
        return
    if scope['type'] != 'http':
        return
    path = scope['path']
    method = scope['method']
    if path == common.PATH_JSON and method == 'GET':
        body = json.dumps(common.JSON_BODY).encode('utf-8')
        await _respond(send, 200, _JSON, body)
    elif path == common.PATH_CPU and method == 'GET':
        body = json.dumps(common.burn_cpu()).encode('utf-8')
        await _respond(send, 200, _JSON, body)
    elif path == common.PATH_ECHO and method == 'POST':
        body = await _read_body(receive)
        if body is not None:
            await _respond(send, 200, _BYTES, body)
    elif path == common.PATH_EVENTS and method == 'GET':
        await _events(receive, send)
    elif path == common.PATH_PUBLISH and method == 'POST':
        body = await _read_body(receive)
        if body is None:
            return
        frame = common.format_sse(body.decode('utf-8'))
        for queue in _subscribers:
            queue.put_nowait(frame)
        await _respond(send, 200, _JSON, json.dumps(
            {'subscribers': len(_subscribers)}).encode('utf-8'))
    else:
        await _respond(send, 404, _JSON, b'{"error": "Not Found"}')
