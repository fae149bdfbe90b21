"""A slow reader cannot grow the dispatcher's memory without bound: with
max_send_buffer_size=64 KiB, a client that opens a stream and never reads
is dropped while its worker pushes tens of MB at it."""
import select
import socket
import threading
import time

PUSH_MB = 48
MAX_GROWTH = 12 * 1024 * 1024


def rss(pid):
    with open(f'/proc/{pid}/status') as status:
        for line in status:
            if line.startswith('VmRSS:'):
                return int(line.split()[1]) * 1024
    raise AssertionError('no VmRSS')


class RssSampler(threading.Thread):
    """Records the highest RSS of `pid` until stopped."""

    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid = pid
        self.peak = rss(pid)
        self.done = threading.Event()

    def run(self):
        while not self.done.is_set():
            try:
                self.peak = max(self.peak, rss(self.pid))
            except (OSError, AssertionError):
                return
            self.done.wait(0.005)

    def stop(self):
        self.done.set()
        self.join(5)


def test_slow_reader_is_dropped_and_memory_stays_bounded(app_server):
    server = app_server('stream_slow')
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(10)
    sock.connect(('127.0.0.1', server.port))
    try:
        sock.sendall(b'GET /events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n')
        info = server.wait_until(
            lambda: (lambda i: i if i['subscribers'] else None)(
                server.get('/info').json),
            timeout=10, what='the stream to start')
        request_id = info['subscribers'][0]

        base = rss(server.pid)
        sampler = RssSampler(server.pid)
        sampler.start()
        try:
            reply = server.post('/flood', json_body={'mb': PUSH_MB}, timeout=60)
            assert reply.status == 200
            # every event was either sent or refused (False: its client
            # was dropped, which the worker can hear of while it floods)
            assert reply.json['sent'] + reply.json['refused'] == PUSH_MB * 4
            # the dispatcher says so in its log
            server.wait_log(r'(?:WARNING|ERROR)\s+App: .*(?i:drop|slow|read)',
                            timeout=10)
            info = server.wait_until(
                lambda: (lambda i: i if request_id in i['disconnected'] else None)(
                    server.get('/info').json),
                timeout=10, what='on_disconnect in the worker')
            assert info['subscribers'] == []
        finally:
            sampler.stop()
        growth = sampler.peak - base
        assert growth <= MAX_GROWTH, (
            f"dispatcher RSS grew by {growth / 1e6:.1f} MB while "
            f"{PUSH_MB} MiB were pushed at a client that does not read")

        # the client finds its stream closed after what was buffered
        received = 0
        deadline = time.monotonic() + 15
        while True:
            assert time.monotonic() < deadline, "no EOF on the dropped stream"
            readable, _, _ = select.select([sock], [], [], 1)
            if not readable:
                continue
            try:
                chunk = sock.recv(1 << 20)
            except ConnectionResetError:
                break
            if not chunk:
                break
            received += len(chunk)
        assert received < PUSH_MB * 1024 * 1024 // 2, received
    finally:
        sock.close()

    # the dispatcher and the worker go on serving
    assert server.get('/_status').json['pending'] == 0
    assert server.get('/info').status == 200
    reply = server.post('/flood', json_body={'mb': 1})
    assert reply.json['sent'] == 0
