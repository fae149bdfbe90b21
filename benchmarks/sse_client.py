"""A selectors-based SSE load client: many raw-socket subscribers, timed publishes.

`Subscribers` opens N `GET /sse/events` streams on one selector and holds
them; `publish_and_wait()` posts one event with a unique payload and returns
the time from the POST until the LAST subscriber received it.

Used by run.py; also runnable alone against a server that is already up:

    python benchmarks/sse_client.py --port 8080 --subscribers 1000 --publishes 20
"""

import argparse
import errno
import os
import selectors
import socket
import statistics
import time

_CONNECTING = 0
_HEADERS = 1
_STREAMING = 2
_DEAD = 3

_RECV = 65536


class SubscribeError(RuntimeError):
    """Not every subscriber could be opened."""


class _Stream:
    __slots__ = ('sock', 'state', 'buffer', 'error')

    def __init__(self, sock):
        self.sock = sock
        self.state = _CONNECTING
        self.buffer = bytearray()
        self.error = None


class _Publisher:
    """One keep-alive connection that POSTs the events."""

    def __init__(self, host, port, path):
        self.host = host
        self.port = port
        self.path = path
        self.sock = None
        self.buffer = bytearray()

    def connect(self):
        self.close()
        sock = socket.create_connection((self.host, self.port), timeout=10)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setblocking(False)
        self.sock = sock
        self.buffer = bytearray()

    def request(self, payload):
        body = payload.encode('utf-8')
        return (f'POST {self.path} HTTP/1.1\r\n'
                f'Host: {self.host}:{self.port}\r\n'
                'Content-Type: text/plain; charset=utf-8\r\n'
                f'Content-Length: {len(body)}\r\n\r\n').encode('ascii') + body

    def read(self):
        """Read what is there; return (status, body) once a whole response
        arrived, else None. Raises ConnectionError on EOF."""
        while True:
            try:
                data = self.sock.recv(_RECV)
            except (BlockingIOError, InterruptedError):
                break
            if not data:
                raise ConnectionError('publisher connection closed by the server')
            self.buffer.extend(data)
        end = self.buffer.find(b'\r\n\r\n')
        if end < 0:
            return None
        head = bytes(self.buffer[:end]).decode('latin-1').split('\r\n')
        status = int(head[0].split()[1])
        length = 0
        close = False
        for line in head[1:]:
            name, _, value = line.partition(':')
            name = name.strip().lower()
            if name == 'content-length':
                length = int(value.strip())
            elif name == 'connection' and value.strip().lower() == 'close':
                close = True
        if len(self.buffer) < end + 4 + length:
            return None
        body = bytes(self.buffer[end + 4:end + 4 + length])
        del self.buffer[:end + 4 + length]
        if close:
            self.close()
        return status, body

    def close(self):
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
            self.sock = None


class Subscribers:
    """N raw-socket SSE subscribers held open on one selector."""

    def __init__(self, host, port, path):
        self.host = host
        self.port = port
        self.path = path
        self.selector = selectors.DefaultSelector()
        self.streams = []
        self._request = (f'GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n'
                         'Accept: text/event-stream\r\n\r\n').encode('ascii')

    @property
    def live(self):
        return sum(1 for stream in self.streams if stream.state == _STREAMING)

    def open(self, count, timeout=60.0, batch=200):
        """Open `count` streams (at most `batch` handshakes at a time) and wait
        until each has its response headers. Returns the seconds it took;
        raises SubscribeError if some failed or the timeout passed."""
        start = time.perf_counter()
        deadline = start + timeout
        to_open = count
        in_flight = 0
        failed = []
        while to_open or in_flight:
            while to_open and in_flight < batch:
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sock.setblocking(False)
                stream = _Stream(sock)
                self.streams.append(stream)
                code = sock.connect_ex((self.host, self.port))
                if code not in (0, errno.EINPROGRESS, errno.EWOULDBLOCK):
                    stream.state = _DEAD
                    stream.error = f'connect: {os.strerror(code)}'
                    failed.append(stream)
                    sock.close()
                else:
                    self.selector.register(sock, selectors.EVENT_WRITE, stream)
                    in_flight += 1
                to_open -= 1
            now = time.perf_counter()
            if now > deadline:
                break
            for key, _ in self.selector.select(min(0.5, deadline - now)):
                stream = key.data
                if stream.state == _CONNECTING:
                    code = stream.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    if code:
                        self._fail(stream, f'connect: {os.strerror(code)}')
                    else:
                        try:
                            stream.sock.send(self._request)
                        except OSError as err:
                            self._fail(stream, f'send: {err}')
                        else:
                            stream.state = _HEADERS
                            self.selector.modify(stream.sock, selectors.EVENT_READ, stream)
                            continue
                    in_flight -= 1
                    failed.append(stream)
                elif stream.state == _HEADERS:
                    if not self._recv(stream):
                        in_flight -= 1
                        failed.append(stream)
                        continue
                    end = stream.buffer.find(b'\r\n\r\n')
                    if end < 0:
                        continue
                    line = bytes(stream.buffer[:stream.buffer.find(b'\r\n')])
                    parts = line.split()
                    in_flight -= 1
                    if len(parts) < 2 or parts[1] != b'200':
                        self._fail(stream, f'status line {line[:80]!r}')
                        failed.append(stream)
                        continue
                    del stream.buffer[:end + 4]
                    stream.state = _STREAMING
                else:  # streaming already: drain (nothing is published yet)
                    self._recv(stream)
                    stream.buffer.clear()
        elapsed = time.perf_counter() - start
        live = self.live
        if live < count:
            reasons = {}
            for stream in self.streams:
                if stream.state != _STREAMING:
                    why = stream.error or 'no response headers before the timeout'
                    reasons[why] = reasons.get(why, 0) + 1
            detail = ', '.join(f'{n} x {why}' for why, n in sorted(
                reasons.items(), key=lambda item: -item[1]))
            raise SubscribeError(
                f'opened {live}/{count} SSE streams in {elapsed:.1f}s ({detail})')
        return elapsed

    def _recv(self, stream):
        """Read what the socket has; False (and the stream dead) on EOF/error."""
        while True:
            try:
                data = stream.sock.recv(_RECV)
            except (BlockingIOError, InterruptedError):
                return True
            except OSError as err:
                self._fail(stream, f'recv: {err}')
                return False
            if not data:
                self._fail(stream, 'closed by the server')
                return False
            stream.buffer.extend(data)
            if len(data) < _RECV:
                return True

    def _fail(self, stream, why):
        stream.state = _DEAD
        stream.error = why
        try:
            self.selector.unregister(stream.sock)
        except (KeyError, ValueError):
            pass
        stream.sock.close()

    def publish_and_wait(self, publisher, payload, timeout=10.0):
        """POST `payload` and wait until every live stream has received it.

        Returns a dict: latency_ms (None if not everyone got it in time),
        received, expected, status (of the POST), answer (its body).
        """
        waiting = {stream.sock.fileno() for stream in self.streams
                   if stream.state == _STREAMING}
        expected = len(waiting)
        token = payload.encode('utf-8')
        if publisher.sock is None:
            publisher.connect()
        request = publisher.request(payload)
        self.selector.register(publisher.sock, selectors.EVENT_READ, publisher)
        result = {'latency_ms': None, 'received': 0, 'expected': expected,
                  'status': None, 'answer': None}
        try:
            start = time.perf_counter()
            _send_all(publisher.sock, request)
            deadline = start + timeout
            last = None
            got = 0
            while True:
                now = time.perf_counter()
                if (not waiting and result['status'] is not None) or now > deadline:
                    break
                for key, _ in self.selector.select(min(0.2, deadline - now)):
                    target = key.data
                    if target is publisher:
                        try:
                            answer = publisher.read()
                        except ConnectionError as err:
                            result['status'] = f'error: {err}'
                            self.selector.unregister(key.fileobj)
                            publisher.close()
                            continue
                        if answer is not None:
                            result['status'], result['answer'] = answer
                            if publisher.sock is None:
                                self.selector.unregister(key.fileobj)
                        continue
                    stream = target
                    fd = stream.sock.fileno()
                    if not self._recv(stream):
                        waiting.discard(fd)
                        continue
                    if fd in waiting and token in stream.buffer:
                        waiting.discard(fd)
                        got += 1
                        stream.buffer.clear()
                        last = time.perf_counter()
                    elif len(stream.buffer) > 4 * len(token) + 256:
                        del stream.buffer[:-2 * len(token)]
            result['received'] = got
            if got == expected and last is not None:
                result['latency_ms'] = (last - start) * 1000.0
        finally:
            if publisher.sock is not None:
                try:
                    self.selector.unregister(publisher.sock)
                except (KeyError, ValueError):
                    pass
        return result

    def close(self):
        for stream in self.streams:
            if stream.state != _DEAD:
                try:
                    self.selector.unregister(stream.sock)
                except (KeyError, ValueError):
                    pass
                stream.sock.close()
                stream.state = _DEAD
        self.streams = []
        self.selector.close()


def _send_all(sock, data):
    view = memoryview(data)
    while view:
        try:
            sent = sock.send(view)
        except (BlockingIOError, InterruptedError):
            time.sleep(0.0005)
            continue
        view = view[sent:]


def percentile(values, pct):
    """Nearest-rank percentile of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, int(round(pct / 100.0 * len(ordered) + 0.4999)))
    return ordered[min(rank, len(ordered)) - 1]


def run_publishes(host, port, subscribers, publishes, warmup=2, gap=0.05,
                  timeout=10.0, events_path='/sse/events',
                  publish_path='/sse/publish', open_timeout=60.0):
    """Open `subscribers` streams, publish `warmup` + `publishes` times;
    return a dict with the measured latencies and delivery counts."""
    subs = Subscribers(host, port, events_path)
    publisher = _Publisher(host, port, publish_path)
    try:
        opened_s = subs.open(subscribers, timeout=open_timeout)
        latencies = []
        failures = []
        tag = os.urandom(4).hex()
        for index in range(warmup + publishes):
            payload = f'bench-{tag}-{index:04d}-' + 'x' * 40
            result = subs.publish_and_wait(publisher, payload, timeout=timeout)
            if index >= warmup:
                if result['latency_ms'] is not None and result['status'] == 200:
                    latencies.append(result['latency_ms'])
                else:
                    failures.append({k: (v.decode('utf-8', 'replace')
                                         if isinstance(v, bytes) else v)
                                     for k, v in result.items()})
            time.sleep(gap)
        return {'open_s': opened_s, 'latencies_ms': latencies,
                'failures': failures, 'live_after': subs.live}
    finally:
        publisher.close()
        subs.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--host', default='127.0.0.1')
    parser.add_argument('--port', type=int, required=True)
    parser.add_argument('--subscribers', type=int, default=1000)
    parser.add_argument('--publishes', type=int, default=20)
    args = parser.parse_args()
    result = run_publishes(args.host, args.port, args.subscribers, args.publishes)
    lat = result['latencies_ms']
    print(f"opened {args.subscribers} streams in {result['open_s']:.2f}s")
    if lat:
        print(f"publish -> last subscriber: p50 {statistics.median(lat):.1f} ms, "
              f"p99 {percentile(lat, 99):.1f} ms, max {max(lat):.1f} ms "
              f"({len(lat)} publishes)")
    for failure in result['failures']:
        print('failed publish:', failure)


if __name__ == '__main__':
    main()
