"""Lingering close (http/linger.py) on a local socket pair: the answer is
followed by the end of the stream, the client's last bytes are dropped,
and a lingering socket ends at the client's close, at its byte budget, or
when its time is up."""
import selectors
import socket

from uhttp.workers.http import linger


def pair():
    ours, theirs = socket.socketpair()
    theirs.settimeout(5)
    return ours, theirs


def serve(selector):
    for key, mask in selector.select(0):
        key.data.handle_event(key.fileobj, mask)


def test_the_client_sees_the_end_and_its_bytes_are_dropped():
    selector = selectors.DefaultSelector()
    lingering = linger.Lingering(selector)
    ours, theirs = pair()
    ours.sendall(b'HTTP/1.1 413 ...')
    assert lingering.take(ours)
    ours.close()  # the connection closes its own descriptor
    assert theirs.recv(100) == b'HTTP/1.1 413 ...'
    assert theirs.recv(100) == b''  # the end of the stream follows
    theirs.sendall(b'x' * 100000)  # the rest of its body: read, dropped
    serve(selector)
    assert len(lingering) == 1
    theirs.close()
    serve(selector)
    assert len(lingering) == 0 and not selector.get_map()


def test_a_lingering_socket_ends_when_its_time_is_up():
    selector = selectors.DefaultSelector()
    lingering = linger.Lingering(selector)
    ours, theirs = pair()
    lingering.take(ours)
    ours.close()
    (lingerer,) = lingering.sockets
    lingering.expire(lingerer.deadline - 0.1)
    assert len(lingering) == 1
    lingering.expire(lingerer.deadline)
    assert len(lingering) == 0
    theirs.close()


def test_no_more_than_its_budget_is_read(monkeypatch):
    monkeypatch.setattr(linger, 'LINGER_BYTES', 1000)
    selector = selectors.DefaultSelector()
    lingering = linger.Lingering(selector)
    ours, theirs = pair()
    lingering.take(ours)
    ours.close()
    theirs.sendall(b'y' * 2000)
    serve(selector)
    assert len(lingering) == 0
    theirs.close()


def test_at_most_so_many_linger_at_once(monkeypatch):
    monkeypatch.setattr(linger, 'LINGER_AT_MOST', 2)
    lingering = linger.Lingering(selectors.DefaultSelector())
    pairs = [pair() for _ in range(3)]
    assert [lingering.take(ours) for ours, _ in pairs] == [True, True, False]
    lingering.close()
    assert len(lingering) == 0
    for ours, theirs in pairs:
        ours.close()
        theirs.close()
