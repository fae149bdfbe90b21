"""The dispatcher's cost per event does not grow with the number of pending
requests: a simple request is about as fast with 500 deferred requests held
open as with none. A sanity check with a generous margin, not a benchmark."""
import socket
import statistics
import time

from supervision_util import start

HELD = 500
SAMPLES = 200


def median_latency(server, samples=SAMPLES):
    connection = server.connection(timeout=10)
    try:
        times = []
        for _ in range(samples):
            started = time.perf_counter()
            connection.request('GET', '/fast/ping')
            response = connection.getresponse()
            body = response.read()
            times.append(time.perf_counter() - started)
            assert response.status == 200, body
        return statistics.median(times)
    finally:
        connection.close()


def test_latency_does_not_grow_with_pending_requests(app_server):
    server = start(app_server, 'sup_latency')
    median_latency(server, 20)                       # warm up
    idle = median_latency(server)

    held = []
    try:
        for index in range(HELD):
            sock = socket.create_connection(('127.0.0.1', server.port), timeout=10)
            sock.sendall(f'GET /hold/{index} HTTP/1.1\r\nHost: 127.0.0.1\r\n'
                         '\r\n'.encode())
            held.append(sock)
        server.wait_until(lambda: server.status()['pending'] == HELD,
                          timeout=20, what=f'{HELD} pending requests')
        loaded = median_latency(server)
        assert server.status()['pending'] == HELD
    finally:
        for sock in held:
            sock.close()

    print(f"median idle {idle * 1e3:.3f} ms, loaded {loaded * 1e3:.3f} ms")
    # generous: 3x the idle median, plus 2 ms for timer noise
    assert loaded < 3 * idle + 0.002, (
        f"median {loaded * 1000:.2f} ms with {HELD} pending vs "
        f"{idle * 1000:.2f} ms with none")
    # closing the clients empties the pending table
    server.wait_until(lambda: server.status()['pending'] == 0, timeout=10,
                      what='pending table empty after the clients left')
