"""The same WebSocket echo and JSON route as an ASGI app, for uvicorn with
its `websockets` protocol implementation (benchmarks/ws.py)."""
import json

HELLO = json.dumps({'hello': 'world'}).encode()


async def app(scope, receive, send):
    if scope['type'] == 'websocket':
        await receive()  # websocket.connect
        await send({'type': 'websocket.accept'})
        while True:
            event = await receive()
            if event['type'] == 'websocket.disconnect':
                return
            if event.get('text') is not None:
                await send({'type': 'websocket.send', 'text': event['text']})
            else:
                await send({'type': 'websocket.send', 'bytes': event['bytes']})
    elif scope['type'] == 'http':
        await receive()
        await send({'type': 'http.response.start', 'status': 200,
                    'headers': [(b'content-type', b'application/json')]})
        await send({'type': 'http.response.body', 'body': HELLO})
    elif scope['type'] == 'lifespan':
        while True:
            event = await receive()
            if event['type'] == 'lifespan.startup':
                await send({'type': 'lifespan.startup.complete'})
            elif event['type'] == 'lifespan.shutdown':
                await send({'type': 'lifespan.shutdown.complete'})
                return
