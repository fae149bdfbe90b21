"""Shared helpers of the fault and bad-input suite (tests/hardening, tests/soak).

- a strict parser for what a server wrote on one connection
  (`parse_responses`): status line, token header names, visible header
  values, exactly one Content-Length, its body; anything else is an error;
- `exchange()`: send raw bytes on a fresh connection and collect what
  comes back (until close, or until the expected answers and a quiet spell);
- process probes: open fds and RSS of a pid, liveness, a probe request.
"""

import os
import re
import socket
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TESTS = os.path.dirname(HERE)


import harness  # noqa: E402  (tests/harness.py)

AppServer = harness.AppServer
pid_alive = harness.pid_alive

_TOKEN = re.compile(rb"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_STATUS_LINE = re.compile(rb'^HTTP/1\.[01] ([1-5][0-9][0-9])(?: [\x20-\x7e\t]*)?$')


class MalformedResponse(AssertionError):
    """The server wrote bytes that are not a well-formed HTTP/1.x response."""


class Resp:
    """One parsed response."""

    def __init__(self, status, headers, body, head, to_close=False):
        self.status = status
        self.headers = headers      # [(lower-case name, value)]
        self.body = body
        self.head = head            # the raw header block
        self.to_close = to_close    # body delimited by the connection's close

    @property
    def interim(self):
        return 100 <= self.status < 200

    def header(self, name, default=None):
        name = name.lower()
        for key, value in self.headers:
            if key == name:
                return value
        return default

    def header_all(self, name):
        name = name.lower()
        return [value for key, value in self.headers if key == name]

    def __repr__(self):
        return f"<Resp {self.status} {self.body[:120]!r}>"


def parse_responses(data, closed=True, head_request=False):
    """Cut `data` into responses; return (responses, unparsed rest).

    The rest is an incomplete response (or nothing). A response without
    Content-Length is accepted only as the last one on a closed connection
    (a stream). Raises MalformedResponse on anything not well-formed.
    """
    data = bytes(data)
    responses = []
    pos = 0
    while pos < len(data):
        end = data.find(b'\r\n\r\n', pos)
        if end < 0:
            tail = data[pos:]
            if not (tail.startswith(b'HTTP/1.') or b'HTTP/1.'.startswith(tail)):
                raise MalformedResponse(f"garbage instead of a response: {tail[:200]!r}")
            break
        head = data[pos:end]
        lines = head.split(b'\r\n')
        match = _STATUS_LINE.match(lines[0])
        if not match:
            raise MalformedResponse(f"bad status line {lines[0][:200]!r}")
        status = int(match.group(1))
        headers = []
        for line in lines[1:]:
            name, sep, value = line.partition(b':')
            if not sep or not _TOKEN.match(name):
                raise MalformedResponse(f"bad header line {line[:200]!r} in {head[:400]!r}")
            value = value.strip(b' \t')
            if any((byte < 0x20 and byte != 0x09) or byte == 0x7f for byte in value):
                raise MalformedResponse(f"control byte in header {line[:200]!r}")
            headers.append((name.decode('ascii').lower(), value.decode('latin-1')))
        start = end + 4
        lengths = [value for key, value in headers if key == 'content-length']
        if len(lengths) > 1:
            raise MalformedResponse(f"{len(lengths)} Content-Length headers: {head!r}")
        if 100 <= status < 200:
            if lengths:
                raise MalformedResponse(f"interim response with a body length: {head!r}")
            responses.append(Resp(status, headers, b'', head))
            pos = start
            continue
        if status in (204, 304) or head_request:
            responses.append(Resp(status, headers, b'', head))
            pos = start
            continue
        if not lengths:
            if not closed:
                break  # a stream, still open
            responses.append(Resp(status, headers, data[start:], head, to_close=True))
            pos = len(data)
            continue
        if not lengths[0].isdigit() or not lengths[0].isascii():
            raise MalformedResponse(f"bad Content-Length {lengths[0]!r}")
        length = int(lengths[0])
        if len(data) - start < length:
            break
        responses.append(Resp(status, headers, data[start:start + length], head))
        pos = start + length
    return responses, data[pos:]


class Outcome:
    """What came back on one connection."""

    def __init__(self, raw, closed, reset, head_request=False):
        self.raw = raw
        self.closed = closed
        self.reset = reset
        self.responses, self.rest = parse_responses(raw, closed, head_request)

    @property
    def finals(self):
        return [resp for resp in self.responses if not resp.interim]

    def __repr__(self):
        return (f"<Outcome finals={self.finals} closed={self.closed} "
                f"reset={self.reset} rest={self.rest[:80]!r}>")


def exchange(port, data, timeout=5.0, shut_wr=False, expect=None, quiet=0.25,
             pause_after=None, head_request=False):
    """Send `data` on a new connection and collect the reply.

    Reads until the server closes, or (with `expect`) until that many final
    responses arrived and nothing more came for `quiet` seconds, or until
    `timeout`. `shut_wr` half-closes after sending (the request ends there).
    """
    sock = socket.create_connection(('127.0.0.1', port), timeout=timeout)
    buf = bytearray()
    closed = reset = False
    try:
        try:
            if pause_after is None:
                sock.sendall(data)
            else:
                for part in pause_after:
                    sock.sendall(part)
                    time.sleep(0.05)
            if shut_wr:
                sock.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            reset = True
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            wait = left
            satisfied = False
            if expect is not None:
                try:
                    responses, _ = parse_responses(buf, False, head_request)
                except MalformedResponse:
                    responses = []
                if sum(1 for resp in responses if not resp.interim) >= expect:
                    satisfied = True
                    wait = min(quiet, left)
            sock.settimeout(wait)
            try:
                chunk = sock.recv(262144)
            except socket.timeout:
                if satisfied:
                    break
                continue
            except (ConnectionResetError, BrokenPipeError):
                closed = reset = True
                break
            if not chunk:
                closed = True
                break
            buf += chunk
    finally:
        sock.close()
    return Outcome(bytes(buf), closed, reset, head_request)


def request_bytes(method, path, headers=None, body=b'', version='HTTP/1.1',
                  host=True):
    """A well-formed request as bytes (Content-Length set when body)."""
    lines = [f'{method} {path} {version}']
    if host:
        lines.append('Host: 127.0.0.1')
    for name, value in (headers or {}).items():
        lines.append(f'{name}: {value}')
    if body:
        lines.append(f'Content-Length: {len(body)}')
    return ('\r\n'.join(lines) + '\r\n\r\n').encode('latin-1') + body


# -- the dispatcher process ---------------------------------------------------

def fd_count(pid):
    return len(os.listdir(f'/proc/{pid}/fd'))


def rss_kb(pid):
    with open(f'/proc/{pid}/status', encoding='ascii') as status:
        for line in status:
            if line.startswith('VmRSS:'):
                return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")


def wait_for(predicate, timeout, interval=0.05, what='condition'):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def probe(server, paths=('/probe', '/api/probe')):
    """The dispatcher is alive and answers a normal request on each path."""
    assert pid_alive(server.pid), f"dispatcher {server.pid} is gone:\n{server.log()[-3000:]}"
    for path in paths:
        reply = server.get(path, timeout=10)
        assert reply.status == 200, (path, reply, server.log()[-3000:])
    assert pid_alive(server.pid)


def settled_fds(server, timeout=15):
    """The dispatcher's fd count once it stopped changing (no traffic)."""
    previous = None
    stable = 0
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = fd_count(server.pid)
        if now == previous:
            stable += 1
            if stable >= 5:
                return now
        else:
            stable = 0
        previous = now
        time.sleep(0.1)
    return previous


class _Conn:
    __slots__ = ('index', 'out', 'buf', 'offset', 'responses', 'closed', 'done')

    def __init__(self, index, data):
        self.index = index
        self.out = memoryview(data)
        self.buf = bytearray()
        self.offset = 0
        self.responses = []
        self.closed = False
        self.done = False


def many_exchanges(port, payloads, expect, timeout=60):
    """Open one connection per payload (all of them first), then send every
    payload and read until `expect[i]` final responses came back on
    connection i, or it closed, or `timeout`. Returns a list of
    (responses, closed, unparsed rest) in payload order."""
    import selectors  # pylint: disable=import-outside-toplevel
    socks = []
    selector = selectors.DefaultSelector()
    try:
        for _ in payloads:
            socks.append(socket.create_connection(('127.0.0.1', port), timeout=30))
        conns = {}
        for index, (sock, data) in enumerate(zip(socks, payloads)):
            sock.setblocking(False)
            conns[sock] = _Conn(index, data)
            selector.register(sock, selectors.EVENT_READ | selectors.EVENT_WRITE)
        left = len(socks)
        deadline = time.monotonic() + timeout
        while left and time.monotonic() < deadline:
            for key, mask in selector.select(0.5):
                sock = key.fileobj
                conn = conns[sock]
                if mask & selectors.EVENT_WRITE and conn.out:
                    try:
                        sent = sock.send(conn.out)
                        conn.out = conn.out[sent:]
                    except BlockingIOError:
                        pass
                    except OSError:
                        conn.out = memoryview(b'')
                    if not conn.out:
                        selector.modify(sock, selectors.EVENT_READ)
                if mask & selectors.EVENT_READ:
                    try:
                        chunk = sock.recv(262144)
                    except BlockingIOError:
                        continue
                    except OSError:
                        chunk = b''
                    if chunk:
                        conn.buf += chunk
                        parsed, rest = parse_responses(conn.buf[conn.offset:], closed=False)
                        conn.offset = len(conn.buf) - len(rest)
                        conn.responses.extend(resp for resp in parsed if not resp.interim)
                    else:
                        conn.closed = True
                    if conn.closed or len(conn.responses) >= expect[conn.index]:
                        conn.done = True
                        selector.unregister(sock)
                        left -= 1
        result = [None] * len(socks)
        for sock, conn in conns.items():
            rest = bytes(conn.buf[conn.offset:])
            result[conn.index] = (conn.responses, conn.closed, rest)
        return result
    finally:
        selector.close()
        for sock in socks:
            sock.close()


def raise_fd_limit(need):
    import resource  # pylint: disable=import-outside-toplevel
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < need:
        target = need if hard == resource.RLIM_INFINITY else min(need, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    assert soft == resource.RLIM_INFINITY or soft >= need, (
        f"open file limit {soft} is below the {need} this test needs")
