"""1,000 concurrent SSE subscribers on one worker: one publish reaches
every one of them within a few seconds, and when they all leave the
dispatcher's pending table empties."""
import resource
import selectors
import socket
import time

SUBSCRIBERS = 1000
DELIVERY_SECONDS = 10


def raise_fd_limit(need):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < need:
        target = need if hard == resource.RLIM_INFINITY else min(need, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    assert soft == resource.RLIM_INFINITY or soft >= need, (
        f"open file limit {soft} is below the {need} this test needs")


def test_one_publish_reaches_1000_subscribers(app_server):
    raise_fd_limit(SUBSCRIBERS + 200)
    server = app_server('stream_many')
    selector = selectors.DefaultSelector()
    socks = []
    buffers = {}
    try:
        request = b'GET /events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n'
        for _ in range(SUBSCRIBERS):
            sock = socket.create_connection(('127.0.0.1', server.port),
                                            timeout=10)
            sock.sendall(request)
            sock.setblocking(False)
            socks.append(sock)
            buffers[sock] = b''
            selector.register(sock, selectors.EVENT_READ)

        count = server.wait_until(
            lambda: (lambda c: c if c['subscribers'] == SUBSCRIBERS else None)(
                server.get('/count', timeout=10).json),
            timeout=40, interval=0.2, what=f'{SUBSCRIBERS} subscribers')
        assert count['disconnects'] == 0

        start = time.monotonic()
        reply = server.post('/publish', json_body={'data': 'to-everyone',
                                                   'id': 'p1'}, timeout=30)
        assert reply.status == 200
        assert reply.json == {'sent': SUBSCRIBERS, 'failed': 0}

        marker = b'id: p1\nevent: news\ndata: to-everyone\n\n'
        waiting = set(socks)
        while waiting and time.monotonic() - start < DELIVERY_SECONDS:
            for key, _ in selector.select(0.2):
                sock = key.fileobj
                try:
                    chunk = sock.recv(65536)
                except BlockingIOError:
                    continue
                assert chunk, "a subscriber's stream was closed"
                buffers[sock] += chunk
                if marker in buffers[sock]:
                    waiting.discard(sock)
        elapsed = time.monotonic() - start
        assert not waiting, (
            f"{len(waiting)} of {SUBSCRIBERS} subscribers got nothing within "
            f"{DELIVERY_SECONDS}s")
        for data in buffers.values():
            head, _, body = data.partition(b'\r\n\r\n')
            assert head.startswith(b'HTTP/1.1 200')
            assert b'text/event-stream' in head.lower()
            assert body.count(marker) == 1 and body.endswith(marker)
        assert elapsed < DELIVERY_SECONDS
    finally:
        selector.close()
        for sock in socks:
            sock.close()

    server.wait_until(lambda: server.get('/_status').json['pending'] == 0,
                      timeout=30, interval=0.2, what='pending back to 0')
    count = server.wait_until(
        lambda: (lambda c: c if c['subscribers'] == 0 else None)(
            server.get('/count').json),
        timeout=30, interval=0.2, what='every on_disconnect')
    assert count['disconnects'] == SUBSCRIBERS
