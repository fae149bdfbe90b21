"""5,000 concurrent connections: all opened first, then each sends a request
to a pool route, and each gets its own answer."""
import errno
import resource
import selectors
import socket
import time

APP = 'core_many'
CONNECTIONS = 5000


def raise_fd_limit(need):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < need:
        target = need if hard == resource.RLIM_INFINITY else min(need, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def parse(buffer):
    """(status, body) once one complete response is in `buffer`, else None."""
    end = buffer.find(b'\r\n\r\n')
    if end < 0:
        return None
    head = buffer[:end].decode('latin-1').split('\r\n')
    length = 0
    for line in head[1:]:
        name, _, value = line.partition(':')
        if name.strip().lower() == 'content-length':
            length = int(value)
    if len(buffer) < end + 4 + length:
        return None
    return int(head[0].split()[1]), buffer[end + 4:end + 4 + length]


def test_five_thousand_concurrent_connections(module_server):
    limit = raise_fd_limit(CONNECTIONS + 1000)
    assert limit >= CONNECTIONS + 100, f"open file limit {limit} too low"
    address = ('127.0.0.1', module_server.port)
    selector = selectors.DefaultSelector()
    socks = []
    deadline = time.monotonic() + 30
    try:
        # 1: open every connection (non-blocking connects, completed in a loop)
        connecting = set()
        for number in range(CONNECTIONS):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            code = sock.connect_ex(address)
            assert code in (0, errno.EINPROGRESS), errno.errorcode.get(code)
            socks.append(sock)
            selector.register(sock, selectors.EVENT_WRITE, number)
            connecting.add(number)
        while connecting:
            assert time.monotonic() < deadline, f"{len(connecting)} never connected"
            for key, _ in selector.select(1.0):
                number = key.data
                sock = socks[number]
                error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                assert error == 0, f"connection {number}: {errno.errorcode.get(error)}"
                selector.unregister(sock)
                connecting.discard(number)
        opened = time.monotonic()

        # 2: every connection is open at once; now each sends its request
        for number, sock in enumerate(socks):
            request = (f'GET /many/{number} HTTP/1.1\r\nHost: 127.0.0.1\r\n'
                       '\r\n').encode()
            sent = sock.send(request)
            assert sent == len(request)
            selector.register(sock, selectors.EVENT_READ, number)

        # 3: read every answer
        buffers = {}
        answers = {}
        while len(answers) < CONNECTIONS:
            assert time.monotonic() < deadline, (
                f"only {len(answers)} of {CONNECTIONS} answered")
            for key, _ in selector.select(1.0):
                number = key.data
                sock = socks[number]
                try:
                    chunk = sock.recv(65536)
                except ConnectionResetError:
                    chunk = b''
                assert chunk, f"connection {number} closed without an answer"
                buffers[number] = buffers.get(number, b'') + chunk
                parsed = parse(buffers[number])
                if parsed is not None:
                    answers[number] = parsed
                    selector.unregister(sock)
        served = time.monotonic()
    finally:
        selector.close()
        for sock in socks:
            sock.close()
    bad = {number: answer for number, answer in answers.items()
           if answer != (200, f'{{"n": {number}}}'.encode())}
    assert not bad, dict(list(bad.items())[:5])
    assert served - opened < 20
    assert module_server.get('/_count').json == {'pending': 0}
