"""exits: exit codes of a worker's end, and knowing a fork of the worker."""

import os

from uhttp.workers import exits


def _forked_in_child():
    """What forked() says in a child forked from this process."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.write(write_fd, b'1' if exits.forked() else b'0')
        os._exit(0)
    os.close(write_fd)
    try:
        return os.read(read_fd, 1) == b'1'
    finally:
        os.close(read_fd)
        os.waitpid(pid, 0)


def test_a_fork_of_the_worker_knows_it_is_one():
    saved = exits.WORKER_PID[0]
    exits.WORKER_PID[0] = os.getpid()   # this process plays the worker
    try:
        assert exits.forked() is False
        assert _forked_in_child() is True
        assert exits.forked() is False   # the parent stays the worker
    finally:
        exits.WORKER_PID[0] = saved


def test_a_fork_of_a_process_that_is_no_worker_is_not_one():
    saved = exits.WORKER_PID[0]
    exits.WORKER_PID[0] = None          # the dispatcher starting a worker
    try:
        assert _forked_in_child() is False
    finally:
        exits.WORKER_PID[0] = saved
