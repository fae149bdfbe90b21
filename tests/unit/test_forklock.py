"""SendLock: frames written by a process and the processes it forks into
one pipe stay whole, and the lock stays a reentrant lock."""
import os
import select
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


def _worker_finding_a_torn_frame(depth, report_fd):
    """A 'worker' process whose descendant `depth` generations down finds
    a torn frame; it reports 'alive' if it outlives that."""
    lock = forklock.SendLock()           # owned by this process
    pid = os.fork()
    if pid == 0:
        for _ in range(depth - 1):       # further down the family
            below = os.fork()
            if below:
                os.waitpid(below, 0)
                os._exit(0)
        lock._torn()                     # exits 71 (EXIT_TORN)
    os.waitpid(pid, 0)
    time.sleep(0.2)                      # a SIGKILL would have come
    os.write(report_fd, b'alive')


def _run_worker(depth):
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(read_fd)
            _worker_finding_a_torn_frame(depth, write_fd)
        finally:
            os._exit(0)
    os.close(write_fd)
    try:
        ready, _, _ = select.select([read_fd], [], [], 10)
        said = os.read(read_fd, 5) if ready else b''
        _, status = os.waitpid(pid, 0)
        pid = None
        return said, status
    finally:
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        os.close(read_fd)


def test_a_torn_frame_found_by_a_child_ends_its_worker():
    said, status = _run_worker(depth=1)
    assert said == b'' and os.WIFSIGNALED(status)
    assert os.WTERMSIG(status) == signal.SIGKILL


def test_a_torn_frame_found_further_down_kills_no_one_by_pid():
    # the worker is not its parent: the pid it has may be another
    # process's by now (the worker finds the mark itself when it sends)
    said, status = _run_worker(depth=2)
    assert said == b'alive' and os.WIFEXITED(status)
