"""pipelend.py: large buffers lent to a real pipe (vmsplice), held until the
reader has taken them, and the writer that lends them (channel.OutBuffer)."""

import os
import select
import threading
import time

import pytest

from uhttp.workers import channel, pipelend
from uhttp.workers.channel import FrameReader, OutBuffer, pack_parts

DEADLINE = 5.0

needs_lending = pytest.mark.skipif(
    not pipelend.available(), reason='vmsplice() not usable on this system')


@pytest.fixture
def pipe():
    read_fd, write_fd = channel.make_pipe()
    os.set_blocking(read_fd, False)
    os.set_blocking(write_fd, False)
    fds = [read_fd, write_fd]
    yield fds
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


def drain(fd, limit=None):
    data = bytearray()
    while limit is None or len(data) < limit:
        try:
            chunk = os.read(fd, 1 << 20 if limit is None else (
                min(1 << 20, limit - len(data))))
        except BlockingIOError:
            break
        if not chunk:
            break
        data += chunk
    return bytes(data)


def read_messages(read_fd):
    """The messages of the first read that brings any (bounded)."""
    reader = FrameReader(read_fd, tail_type=bytes)
    got = []
    deadline = time.monotonic() + DEADLINE
    while not got:
        left = deadline - time.monotonic()
        assert left > 0, 'no message came'
        select.select([read_fd], [], [], left)
        got += reader.read()
    return got


def flush_all(out, read_fd):
    """Flush `out` while reading its pipe: every byte written."""
    received = bytearray()
    deadline = time.monotonic() + DEADLINE
    while not out.flush():
        assert time.monotonic() < deadline, 'flush never completed'
        select.select([read_fd], [], [], 0.1)
        received += drain(read_fd)
    return received + drain(read_fd)


@pytest.mark.parametrize('release, expected', [
    ('6.18.44-fc-v669', (6, 18)), ('5.9.0', (5, 9)),
    ('5.4.0-150-generic', (5, 4)), ('4.19.0-25-amd64', (4, 19)),
    ('6.1', (6, 1)), ('5.10rc1', (5, 10)), ('linux', None), ('', None)])
def test_kernel_release_is_read(release, expected):
    assert pipelend._kernel(release) == expected


def test_lending_needs_linux_5_9():
    version = pipelend._kernel(os.uname().release)
    if os.uname().sysname == 'Linux' and version >= (5, 9):
        assert pipelend.available()
    else:
        assert not pipelend.available()


@needs_lending
@pytest.mark.parametrize('kind', [bytes, bytearray])
def test_a_lent_buffer_is_held_until_read(pipe, kind):
    lent = pipelend.LentBuffers(pipe[1])
    body = kind(os.urandom(200 * 1024))
    sent = lent.lend(body, 0)
    assert 0 < sent <= len(body)
    assert lent.release() == 1           # nothing read: still lent
    got = drain(pipe[0], sent // 2)
    assert lent.release() == 1           # half read: still lent
    got += drain(pipe[0])
    assert got == bytes(body[:sent])
    assert lent.release() == 0           # all read: let go


@needs_lending
def test_a_lent_bytearray_cannot_be_resized_until_released(pipe):
    lent = pipelend.LentBuffers(pipe[1])
    body = bytearray(os.urandom(128 * 1024))
    sent = lent.lend(body, 0)
    if sent == len(body):
        with pytest.raises(BufferError):
            body.extend(b'x')
    drain(pipe[0])
    assert lent.release() == 0
    body.extend(b'x')  # free again


@needs_lending
def test_a_full_pipe_raises_blocking_io_error(pipe):
    lent = pipelend.LentBuffers(pipe[1])
    body = os.urandom(4 * channel.PIPE_SIZE)
    offset = 0
    with pytest.raises(BlockingIOError):
        while True:
            offset += lent.lend(body, offset)
    assert 0 < offset < len(body)
    assert lent.written == offset
    assert drain(pipe[0]) == body[:offset]


@needs_lending
def test_a_pipe_without_reader_is_broken(pipe):
    lent = pipelend.LentBuffers(pipe[1])
    os.close(pipe[0])
    with pytest.raises(BrokenPipeError):
        lent.lend(os.urandom(128 * 1024), 0)


@needs_lending
def test_a_fork_while_lent_does_not_reach_the_pipe(pipe):
    """A child forked while pages are lent (a worker started) writes its
    copy of the buffer: the reader still gets the bytes as they were."""
    lent = pipelend.LentBuffers(pipe[1])
    body = bytearray(os.urandom(256 * 1024))
    expected = bytes(body)
    sent = lent.lend(body, 0)
    pid = os.fork()
    if pid == 0:  # the child scribbles on its copy, then goes
        try:
            with memoryview(body) as view:
                view[:] = b'\0' * len(body)
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    assert drain(pipe[0]) == expected[:sent]


class TestOutBufferLending:
    @pytest.mark.parametrize('lend', [True, False])
    def test_frames_small_and_large_arrive_in_order(self, pipe, lend):
        out = OutBuffer(pipe[1], lend=lend)
        messages = []
        for index in range(12):
            body = os.urandom(70 * 1024 + index * 4099) if index % 3 else (
                b'small %d' % index)
            message = (7, index, body, 'x')
            messages.append(message)
            out.add_parts(*pack_parts(message, 2))
        received = flush_all(out, pipe[0])
        reader = FrameReader(pipe[0], tail_type=bytes)
        reader._buffer += received
        got = reader.messages()
        while reader._tail is not None:  # a tail frame's body after its head
            got += reader.read()
        assert [tuple(message) for message in got] == messages
        assert len(out) == 0

    @needs_lending
    def test_lent_bodies_are_let_go_once_read(self, pipe):
        out = OutBuffer(pipe[1])
        body = os.urandom(300 * 1024)
        out.add_parts(*pack_parts((7, 1, body, 'x'), 2))
        assert out.flush() is False or out.lent
        assert out.lent >= 1
        flush_all(out, pipe[0])
        out.release()
        assert out.lent == 0

    @needs_lending
    def test_clear_forgets_lent_bodies(self, pipe):
        out = OutBuffer(pipe[1])
        out.add(os.urandom(100 * 1024))
        out.flush()
        assert out.lent == 1
        out.clear()
        assert out.lent == 0 and len(out) == 0

    def test_not_lending_lends_nothing(self, pipe):
        out = OutBuffer(pipe[1], lend=False)
        out.add(os.urandom(100 * 1024))
        out.flush()
        assert out.lent == 0
        assert len(drain(pipe[0])) == 100 * 1024

    def test_reader_gone_raises(self, pipe):
        out = OutBuffer(pipe[1])
        os.close(pipe[0])
        out.add(os.urandom(100 * 1024))
        with pytest.raises(BrokenPipeError):
            out.flush()


class TestWriteParts:
    """The worker's blocking writes: large bytes lent, the rest copied."""

    @needs_lending
    def test_a_large_bytes_answer_is_lent_and_arrives_whole(self, pipe):
        os.set_blocking(pipe[1], True)
        lent = pipelend.LentBuffers(pipe[1])
        body = os.urandom(256 * 1024)
        channel.write_parts(pipe[1], *pack_parts((3, 'ok', body), 2),
                            lent=lent)
        assert len(lent) >= 1                 # lent, not yet read
        got = read_messages(pipe[0])
        assert got == [(3, 'ok', body)]
        assert lent.release() == 0
        assert lent.written > len(body)

    @needs_lending
    def test_a_bytearray_answer_is_copied_not_lent(self, pipe):
        """The user may change a bytearray after answering with it."""
        os.set_blocking(pipe[1], True)
        lent = pipelend.LentBuffers(pipe[1])
        body = bytearray(os.urandom(256 * 1024))
        expected = bytes(body)
        channel.write_parts(pipe[1], *pack_parts((3, 'ok', body), 2),
                            lent=lent)
        assert len(lent) == 0
        body[:] = b'\0' * len(body)             # changed at once
        got = read_messages(pipe[0])
        assert got == [(3, 'ok', expected)]

    @needs_lending
    def test_more_than_the_pipe_holds_waits_for_the_reader(self, pipe):
        os.set_blocking(pipe[1], True)
        lent = pipelend.LentBuffers(pipe[1])
        bodies = [os.urandom(700 * 1024) for _ in range(4)]
        received = []

        def read_all():
            reader = FrameReader(pipe[0], tail_type=bytes)
            deadline = time.monotonic() + DEADLINE
            while len(received) < len(bodies) and (
                    time.monotonic() < deadline):
                select.select([pipe[0]], [], [], 0.1)
                received.extend(reader.read())

        thread = threading.Thread(target=read_all)
        thread.start()
        try:
            for index, body in enumerate(bodies):
                channel.write_parts(pipe[1], *pack_parts((3, index, body), 2),
                                    lent=lent)
        finally:
            thread.join(DEADLINE)
        assert [message[2] for message in received] == bodies
        assert lent.release() == 0
