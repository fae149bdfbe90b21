"""SendLock: frames written by a process and the processes it forks into
one pipe stay whole, and the lock stays a reentrant lock."""
import os
import signal
import threading
import time

from uhttp.workers import forklock

FRAME = 200_000  # well above PIPE_BUF and the pipe's capacity


def _read_all(fd):
    chunks = []
    while True:
        chunk = os.read(fd, 1 << 20)
        if not chunk:
            return b''.join(chunks)
        chunks.append(chunk)


def test_frames_of_forked_processes_do_not_mix():
    lock = forklock.SendLock()
    read_fd, write_fd = os.pipe()
    children = []
    try:
        for letter in b'abc':
            pid = os.fork()
            if pid == 0:
                try:
                    os.close(read_fd)
                    for _ in range(5):
                        with lock:
                            _write(write_fd, bytes([letter]) * FRAME)
                finally:
                    os._exit(0)
            children.append(pid)
        data = []
        reader = threading.Thread(
            target=lambda: data.append(_read_all(read_fd)), daemon=True)
        reader.start()
        _write_frames(lock, write_fd, b'p')
        os.close(write_fd)
        write_fd = None
        for pid in children:
            os.waitpid(pid, 0)
        children = []
        reader.join(timeout=30)
        data = data[0]
    finally:
        for pid in children:
            os.waitpid(pid, 0)
        os.close(read_fd)
        if write_fd is not None:
            os.close(write_fd)
    assert len(data) == 20 * FRAME
    frames = [data[i:i + FRAME] for i in range(0, len(data), FRAME)]
    assert all(frame == frame[:1] * FRAME for frame in frames)
    assert sorted(frame[:1] for frame in frames) == sorted(
        [b'a'] * 5 + [b'b'] * 5 + [b'c'] * 5 + [b'p'] * 5)


def _write(fd, data):
    data = memoryview(data)
    while data:  # os.write() may write part of a frame
        data = data[os.write(fd, data):]


def _write_frames(lock, fd, letter):
    for _ in range(5):
        with lock:
            _write(fd, letter * FRAME)


def test_reentrant_and_usable_in_a_child():
    calls = []
    lock = forklock.SendLock(on_child=lambda: calls.append('child'))
    with lock:
        with lock:
            pass
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            with lock:
                with lock:
                    os.write(write_fd, b'ok' if calls == ['child'] else b'no')
        finally:
            os._exit(0)
    os.close(write_fd)
    try:
        assert os.read(read_fd, 2) == b'ok'
    finally:
        os.waitpid(pid, 0)
        os.close(read_fd)
    assert calls == []
    with lock:  # the parent still takes it after the child left
        pass


def test_a_child_killed_while_it_holds_the_lock_leaves_nobody_waiting():
    """A forked child SIGKILLed inside `with lock:` (a frame half written,
    a log record in a dying subprocess) must not take the lock with it:
    the worker would wait on it for every message it sends. The next
    holder is told the frame may be torn (by default it ends the worker)."""
    torn = []
    lock = forklock.SendLock(on_torn=lambda: torn.append(os.getpid()))
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            with lock:
                os.write(write_fd, b'held')
                time.sleep(60)
        finally:
            os._exit(0)
    os.close(write_fd)
    try:
        assert os.read(read_fd, 4) == b'held'
        taken = threading.Event()
        waiter = threading.Thread(target=_take, args=(lock, taken),
                                  daemon=True)
        waiter.start()
        assert not taken.wait(0.3)         # the child excludes the parent
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        pid = None
        assert taken.wait(10)              # and is gone with its lock
        assert torn == [os.getpid()]       # leaving its mark
        with lock:                         # which the next holder cleared
            pass
        assert torn == [os.getpid()]
    finally:
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        os.close(read_fd)


def _take(lock, taken):
    with lock:
        taken.set()
