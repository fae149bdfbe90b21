"""channel.py: frames over real pipes, the reader, the non-blocking writer."""

import fcntl
import os
import pickle
import select
import struct
import threading
import time

import pytest

from uhttp.workers import channel
from uhttp.workers.channel import (
    ChannelError, FrameReader, OutBuffer, pack, pack_many, write_all)

DEADLINE = 5.0


F_SETPIPE_SZ = 1031   # Linux fcntl


@pytest.fixture
def pipe():
    read_fd, write_fd = os.pipe()
    os.set_blocking(read_fd, False)
    fds = [read_fd, write_fd]
    yield fds
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


def close_writer(fds):
    os.close(fds[1])
    fds[1] = os.open(os.devnull, os.O_WRONLY)  # keep the fixture's close harmless


def read_until(reader, count, timeout=DEADLINE):
    """Read messages until `count` arrived (bounded)."""
    got = []
    deadline = time.monotonic() + timeout
    while len(got) < count:
        left = deadline - time.monotonic()
        assert left > 0, f'only {len(got)} of {count} messages arrived'
        select.select([reader.fd], [], [], left)
        got.extend(reader.read())
        if reader.eof:
            break
    return got


# -- pack ----------------------------------------------------------------------

class TestPack:
    def test_frame_layout(self):
        message = (21, 5, 200, [('a', 'b')], b'body', 1, None)
        frame = pack(message)
        (length,) = struct.unpack('>I', frame[:4])
        assert length == len(frame) - 4
        assert pickle.loads(frame[4:]) == message

    def test_pack_many_is_concatenation(self):
        messages = [(1, 'a'), (2, b'b' * 100), (3,)]
        assert pack_many(messages) == b''.join(pack(m) for m in messages)

    def test_pack_many_empty(self):
        assert pack_many([]) == b''

    def test_unpicklable(self):
        with pytest.raises(Exception):
            pack((1, lambda: None))


# -- FrameReader ------------------------------------------------------------------

class TestFrameReader:
    def test_single_frame(self, pipe):
        reader = FrameReader(pipe[0])
        os.write(pipe[1], pack((1, 'hello')))
        assert reader.read() == [(1, 'hello')]
        assert not reader.eof
        assert reader.buffered == 0

    def test_nothing_available(self, pipe):
        reader = FrameReader(pipe[0])
        assert reader.read() == []
        assert not reader.eof

    def test_frame_split_across_writes(self, pipe):
        reader = FrameReader(pipe[0])
        frame = pack((7, 'x' * 1000, {'k': [1, 2, 3]}))
        os.write(pipe[1], frame[:2])            # half a header
        assert reader.read() == []
        os.write(pipe[1], frame[2:10])          # header and a bit
        assert reader.read() == []
        os.write(pipe[1], frame[10:-1])         # all but the last byte
        assert reader.read() == []
        assert reader.buffered == len(frame) - 1
        os.write(pipe[1], frame[-1:])
        assert reader.read() == [(7, 'x' * 1000, {'k': [1, 2, 3]})]
        assert reader.buffered == 0

    def test_byte_by_byte(self, pipe):
        reader = FrameReader(pipe[0])
        data = pack_many([(1, 'a'), (2, 'b')])
        got = []
        for index in range(len(data)):
            os.write(pipe[1], data[index:index + 1])
            got.extend(reader.read())
        assert got == [(1, 'a'), (2, 'b')]

    def test_many_frames_in_one_read(self, pipe):
        reader = FrameReader(pipe[0])
        messages = [(24, index, b'd' * index) for index in range(200)]
        os.write(pipe[1], pack_many(messages))
        assert reader.read() == messages

    def test_frames_and_a_partial_one(self, pipe):
        reader = FrameReader(pipe[0])
        tail = pack((3, 'third'))
        os.write(pipe[1], pack((1,)) + pack((2,)) + tail[:5])
        assert reader.read() == [(1,), (2,)]
        os.write(pipe[1], tail[5:])
        assert reader.read() == [(3, 'third')]

    def test_large_frame(self, pipe):
        reader = FrameReader(pipe[0])
        payload = os.urandom(5 * 1024 * 1024)
        frame = pack((24, 1, payload))
        writer_fd = pipe[1]
        errors = []

        def write():
            try:
                write_all(writer_fd, frame)
            except Exception as err:  # reported below
                errors.append(err)

        thread = threading.Thread(target=write, daemon=True)
        thread.start()
        got = read_until(reader, 1)
        thread.join(DEADLINE)
        assert not thread.is_alive()
        assert not errors
        assert len(got) == 1
        assert got[0][0] == 24 and got[0][2] == payload
        assert reader.buffered == 0

    def test_frame_above_the_first_read_in_one_call(self):
        """A frame the pipe holds whole comes out of one read(), however
        much larger than the first, small read it is."""
        read_fd, write_fd = channel.make_pipe()
        try:
            os.set_blocking(read_fd, False)
            reader = FrameReader(read_fd)
            payload = os.urandom(channel.FIRST_READ * 3 + 5)
            frame = pack((24, 1, payload))
            write_all(write_fd, frame)
            got = reader.read()
            assert [(m[0], m[2]) for m in got] == [(24, payload)]
            assert reader.buffered == 0
        finally:
            os.close(read_fd)
            os.close(write_fd)

    def test_eof(self, pipe):
        reader = FrameReader(pipe[0])
        os.write(pipe[1], pack((1, 'last')))
        close_writer(pipe)
        messages = reader.read()
        if not reader.eof:
            messages += reader.read()
        assert messages == [(1, 'last')]
        assert reader.eof

    def test_eof_with_partial_frame_buffered(self, pipe):
        reader = FrameReader(pipe[0])
        frame = pack((1, 'cut'))
        os.write(pipe[1], frame[:-3])
        close_writer(pipe)
        assert reader.read() == []
        if not reader.eof:
            assert reader.read() == []
        assert reader.eof
        assert reader.buffered == len(frame) - 3

    def test_eof_on_empty_pipe(self, pipe):
        reader = FrameReader(pipe[0])
        close_writer(pipe)
        assert reader.read() == []
        assert reader.eof

    def test_corrupt_frame(self, pipe):
        reader = FrameReader(pipe[0])
        os.write(pipe[1], struct.pack('>I', 5) + b'\xffjunk')
        with pytest.raises(ChannelError):
            reader.read()

    def test_corrupt_frame_after_good_ones(self, pipe):
        reader = FrameReader(pipe[0])
        os.write(pipe[1], pack((1,)) + struct.pack('>I', 3) + b'abc')
        with pytest.raises(ChannelError):
            reader.read()

    def test_truncated_pickle_inside_frame(self, pipe):
        reader = FrameReader(pipe[0])
        payload = pickle.dumps((1, 'x' * 50))[:-10]
        os.write(pipe[1], struct.pack('>I', len(payload)) + payload)
        with pytest.raises(ChannelError):
            reader.read()

    def test_messages_only_decodes_buffer(self, pipe):
        reader = FrameReader(pipe[0])
        assert reader.messages() == []


# -- OutBuffer / write_all ------------------------------------------------------------

def drain(fd):
    data = bytearray()
    while True:
        try:
            chunk = os.read(fd, 1 << 20)
        except BlockingIOError:
            return bytes(data)
        if not chunk:
            return bytes(data)
        data += chunk


class TestOutBuffer:
    def test_small_write(self, pipe):
        os.set_blocking(pipe[1], False)
        out = OutBuffer(pipe[1])
        out.add(pack((1, 'x')))
        assert len(out) > 0
        assert out.flush() is True
        assert len(out) == 0
        assert FrameReader(pipe[0]).read() == [(1, 'x')]

    def test_empty_flush(self, pipe):
        assert OutBuffer(pipe[1]).flush() is True

    def test_full_pipe_then_drained(self, pipe):
        os.set_blocking(pipe[1], False)
        out = OutBuffer(pipe[1])
        messages = [(24, index, os.urandom(64 * 1024)) for index in range(40)]
        data = pack_many(messages)
        for message in messages:
            out.add(pack(message))
        assert len(out) == len(data)
        assert out.flush() is False              # the pipe is full
        left = len(out)
        assert 0 < left < len(data)
        received = bytearray()
        deadline = time.monotonic() + DEADLINE
        done = False
        while not done:
            assert time.monotonic() < deadline, 'flush never completed'
            received += drain(pipe[0])
            done = out.flush()
        received += drain(pipe[0])
        assert len(out) == 0
        assert bytes(received) == data
        reader = FrameReader(pipe[0])
        reader._buffer += received
        assert reader.messages() == messages

    def test_keeps_order_across_adds_while_full(self, pipe):
        os.set_blocking(pipe[1], False)
        out = OutBuffer(pipe[1])
        first = b'a' * (1 << 20)
        out.add(first)
        assert out.flush() is False
        out.add(b'b' * 10)
        received = bytearray()
        deadline = time.monotonic() + DEADLINE
        while True:
            assert time.monotonic() < deadline
            received += drain(pipe[0])
            if out.flush():
                break
        received += drain(pipe[0])
        assert bytes(received) == first + b'b' * 10

    @pytest.mark.parametrize('pipe_size', [64 * 1024, 1 << 20])
    def test_small_frames_joined_then_lent_lose_nothing(self, pipe,
                                                         pipe_size):
        """Small frames queued while the pipe is busy are joined into one
        part; past pipelend.LEND_MIN that part is lent to the pipe, partly
        (a small pipe) or whole (a large one). A frame added afterwards
        must not be appended to the lent part (resizing it while pinned
        raised BufferError; appending once it was written lost the frame
        without a word)."""
        fcntl.fcntl(pipe[1], F_SETPIPE_SZ, pipe_size)
        os.set_blocking(pipe[0], False)
        os.set_blocking(pipe[1], False)
        out = OutBuffer(pipe[1])
        sent = bytearray()
        for index in range(12):   # 12 x 8 KiB: joined, 96 KiB
            sent += bytes([65 + index]) * 8192
            out.add(sent[-8192:])
        received = bytearray()
        deadline = time.monotonic() + DEADLINE
        for index in range(3):
            out.flush()
            received += drain(pipe[0])
            out.release()
            sent += bytes([97 + index]) * 100
            out.add(sent[-100:])
        while not out.flush():
            assert time.monotonic() < deadline, 'flush never completed'
            received += drain(pipe[0])
        received += drain(pipe[0])
        assert len(out) == 0
        assert bytes(received) == bytes(sent)

    def test_closed_buffer_ignores_adds(self, pipe):
        out = OutBuffer(pipe[1])
        out.closed = True
        out.add(b'xyz')
        assert len(out) == 0

    def test_clear(self, pipe):
        out = OutBuffer(pipe[1])
        out.add(b'xyz')
        out.clear()
        assert len(out) == 0
        assert out.flush() is True

    def test_reader_gone(self, pipe):
        os.set_blocking(pipe[1], False)
        out = OutBuffer(pipe[1])
        os.close(pipe[0])
        pipe[0] = os.open(os.devnull, os.O_RDONLY)
        out.add(b'data')
        with pytest.raises(BrokenPipeError):
            out.flush()


class TestWriteAll:
    def test_small(self, pipe):
        write_all(pipe[1], b'hello')
        assert drain(pipe[0]) == b'hello'

    def test_more_than_the_pipe_holds(self, pipe):
        data = os.urandom(3 * 1024 * 1024)
        received = bytearray()

        def read():
            deadline = time.monotonic() + DEADLINE
            while len(received) < len(data) and time.monotonic() < deadline:
                select.select([pipe[0]], [], [], 0.5)
                received.extend(drain(pipe[0]))

        thread = threading.Thread(target=read, daemon=True)
        thread.start()
        write_all(pipe[1], data)
        thread.join(DEADLINE)
        assert not thread.is_alive()
        assert bytes(received) == data

    def test_accepts_bytearray_and_memoryview(self, pipe):
        write_all(pipe[1], bytearray(b'ab'))
        write_all(pipe[1], memoryview(b'cd'))
        assert drain(pipe[0]) == b'abcd'

    def test_reader_gone(self, pipe):
        os.close(pipe[0])
        pipe[0] = os.open(os.devnull, os.O_RDONLY)
        with pytest.raises(BrokenPipeError):
            write_all(pipe[1], b'x')


def test_make_pipe_ends_not_inheritable():
    read_fd, write_fd = channel.make_pipe()
    try:
        assert not os.get_inheritable(read_fd)
        assert not os.get_inheritable(write_fd)
        os.write(write_fd, pack((1,)))
        assert FrameReader(read_fd).read() == [(1,)]
    finally:
        os.close(read_fd)
        os.close(write_fd)


# -- tail frames: a large body after the pickle ------------------------------

class TestTailFrames:
    def test_small_body_stays_in_the_pickle(self):
        parts = channel.pack_parts((21, 5, b'short', 1), 2)
        assert len(parts) == 2
        assert pickle.loads(parts[1]) == (21, 5, b'short', 1)

    def test_large_body_is_not_copied_into_the_frame(self):
        body = bytearray(channel.TAIL_MIN)
        parts = channel.pack_parts((1, 7, body, 'x'), 2)
        assert parts[-1] is body
        assert pickle.loads(parts[1]) == (1, 7, None, 'x')

    def test_tail_read_into_its_own_buffer(self, pipe):
        body = os.urandom(300_000)
        out = OutBuffer(pipe[1])
        os.set_blocking(pipe[1], False)
        out.add_parts(*channel.pack_parts((1, 7, body, 'x'), 2))
        out.add(pack(('next',)))
        reader = FrameReader(pipe[0])
        got = []
        deadline = time.monotonic() + DEADLINE
        while len(got) < 2:
            assert time.monotonic() < deadline
            out.flush()
            got.extend(reader.read())
        assert got[0][:2] == (1, 7) and got[0][3] == 'x'
        assert type(got[0][2]) is bytearray and got[0][2] == body
        assert got[1] == ('next',)
        assert reader.buffered == 0 and len(out) == 0

    def test_tail_arriving_byte_by_byte(self, pipe):
        body = bytes(range(256)) * 300
        frame = b''.join(channel.pack_parts((1, body, 2), 1))
        reader = FrameReader(pipe[0], tail_type=bytes)
        got = []
        for index in range(0, len(frame), 4093):
            os.write(pipe[1], frame[index:index + 4093])
            got.extend(reader.read())
        assert got == [(1, body, 2)] and type(got[0][1]) is bytes

    def test_whole_tail_frame_in_the_buffer(self, pipe):
        body = b'b' * channel.TAIL_MIN
        frame = b''.join(channel.pack_parts((3, body), 1))
        reader = FrameReader(pipe[0], tail_type=bytes)
        reader._buffer += frame + pack((4,))  # pylint: disable=protected-access
        assert reader.messages() == [(3, body), (4,)]

    def test_tail_without_a_place_is_corrupt(self, pipe):
        frame = bytearray(b''.join(channel.pack_parts((3, b'z' * 70000), 1)))
        frame[9] = 5  # the tail's index, past the end of the message
        os.write(pipe[1], frame[:60000])
        reader = FrameReader(pipe[0])
        reader.read()
        os.write(pipe[1], frame[60000:])
        with pytest.raises(ChannelError):
            read_until(reader, 1)

    def test_worker_write_parts(self, pipe):
        body = os.urandom(200_000)
        parts = channel.pack_parts((21, body), 1)
        writer = threading.Thread(
            target=channel.write_parts, args=(pipe[1], *parts))
        writer.start()
        reader = FrameReader(pipe[0])
        got = read_until(reader, 1)
        writer.join(DEADLINE)
        assert got == [(21, bytearray(body))]
