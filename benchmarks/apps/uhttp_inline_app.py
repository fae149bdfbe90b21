"""uhttp-server alone, answering every request inline in one process.

This is the ceiling of any dispatcher built on uhttp-server: the same HTTP
layer with no hand-off to another process. It is configured for a server
(backlog 4096, thousands of connections, unlimited keep-alive, 2 MiB bodies).
SSE uses the server's own response_stream()/send_event(), keeping the
client objects of the subscribers. The loop drives the server's selector
itself, handling every ready event of one select() (like a dispatcher
does); --loop wait uses HttpServer.wait() instead, which handles one
request per select() and falls over with thousands of busy connections.

    python benchmarks/apps/uhttp_inline_app.py --port 8080
"""

import argparse
import os
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import uhttp.server as _server  # noqa: E402

import common  # noqa: E402


def serve(server, loop):
    subscribers = set()
    running = [True]

    def stop(signum, frame):
        running[0] = False

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    if loop == 'wait':
        # the single-server API: one ready request per wait() call
        while running[0]:
            client = server.wait(timeout=0.5)
            if client is not None:
                answer(client, subscribers)
        return
    # the shared-selector API (as a dispatcher drives it): every ready
    # event of one select() is handled before the next
    select = server.selector.select
    while running[0]:
        for key, mask in select(0.5):
            client = key.data.handle_event(key.fileobj, mask)
            if client is not None:
                answer(client, subscribers)
        server.maintenance()


def answer(client, subscribers):
    try:
        handle(client, subscribers)
    except _server.HttpErrorWithResponse as err:
        client.respond({'error': str(err)}, status=err.status)
    except Exception as err:  # pylint: disable=broad-except
        sys.stderr.write(f"request failed: {err!r}\n")
        client.close()


def handle(client, subscribers):
    path = client.path
    method = client.method
    if path == common.PATH_JSON and method == 'GET':
        client.respond(common.JSON_BODY)
    elif path == common.PATH_CPU and method == 'GET':
        client.respond(common.burn_cpu())
    elif path == common.PATH_ECHO and method == 'POST':
        data = client.data
        client.respond(b'' if data is None else data)
    elif path == common.PATH_EVENTS and method == 'GET':
        if client.response_stream():
            subscribers.add(client)
    elif path == common.PATH_PUBLISH and method == 'POST':
        data = client.data
        if isinstance(data, (bytes, bytearray)):
            data = bytes(data).decode('utf-8')
        sent = 0
        for subscriber in list(subscribers):
            if subscriber.send_event(data=data, event=common.SSE_EVENT):
                sent += 1
            else:
                subscribers.discard(subscriber)  # gone: send_event closed it
        client.respond({'subscribers': sent})
    else:
        client.respond({'error': 'Not Found'}, status=404)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--host', default='127.0.0.1')
    parser.add_argument('--port', type=int, default=8080)
    parser.add_argument(
        '--loop', choices=('selector', 'wait'), default='selector',
        help="'selector': handle every event of each select() (default); "
             "'wait': HttpServer.wait(), one request per call")
    args = parser.parse_args()
    server = _server.HttpServer(
        address=args.host, port=args.port,
        listen=4096,
        max_waiting_clients=20000,
        keep_alive_max_requests=1 << 62,
        keep_alive_timeout=30,
        max_content_length=2 * _server.MB,
        max_headers_length=16 * _server.KB,
        max_send_buffer_size=256 * _server.KB,
    )
    try:
        serve(server, args.loop)
    finally:
        server.close()


if __name__ == '__main__':
    main()
