"""loop.py: the bounded epoll selector and pausing the clients' side."""

import os
import select
import socket

import pytest

from uhttp.workers import loop as _loop

pytestmark = pytest.mark.skipif(not hasattr(select, 'epoll'),
                                reason='epoll only')


@pytest.fixture
def pipe():
    read_fd, write_fd = os.pipe()
    yield read_fd, write_fd
    os.close(read_fd)
    os.close(write_fd)


@pytest.fixture
def readable():
    """register(count, selector): `count` socket pairs registered for
    reading in `selector`, each with a byte waiting."""
    pairs = []

    def register(count, selector):
        for _ in range(count):
            left, right = socket.socketpair()
            pairs.append((left, right))
            selector.register(left, _loop.EVENT_READ, left)
            right.send(b'x')

    yield register
    for left, right in pairs:
        left.close()
        right.close()


def test_bounded_select_returns_at_most_the_limit(readable):
    selector = _loop.BoundedSelector(2)
    try:
        readable(5, selector)
        assert len(selector.select(0)) == 2
    finally:
        selector.close()


def test_a_side_polls_no_more_than_asked_and_keeps_the_rest_ready(readable):
    side = _loop.Side('clients', 8)
    try:
        readable(6, side)
        assert len(side.poll(2)) == 2
        assert len(side.poll(100)) == 6      # the selector's limit is 8
        assert len(side.poll()) == 6         # nothing was taken: still ready
    finally:
        side.selector.close()


def test_a_muted_descriptor_stays_registered_and_silent(pipe):
    read_fd, write_fd = pipe
    selector = _loop.BoundedSelector(16)
    try:
        selector.register(read_fd, _loop.EVENT_READ, 'data')
        os.write(write_fd, b'x')
        assert [key.data for key, _ in selector.select(0)] == ['data']
        selector.mute(read_fd, True)
        assert selector.select(0) == []
        assert selector.get_map()[read_fd].data == 'data'
        selector.mute(read_fd, False)
        assert [(key.data, mask) for key, mask in selector.select(0)] == [
            ('data', _loop.EVENT_READ)]
    finally:
        selector.close()


def test_a_paused_side_holds_its_events_until_resumed():
    loop = _loop.Loop(log=None)
    loop.open(on_wake=lambda data: None)
    left, right = socket.socketpair()
    try:
        loop.clients.register(left, _loop.EVENT_READ, 'client')
        right.send(b'GET')
        assert [key.data for key, _ in loop.select(0)] == [loop.clients]
        loop.pause(loop.clients)
        assert loop.select(0) == []
        loop.resume(loop.clients)
        assert [key.data for key, _ in loop.select(0)] == [loop.clients]
        assert [key.data for key, _ in loop.clients.poll()] == ['client']
    finally:
        loop.close()
        left.close()
        right.close()
