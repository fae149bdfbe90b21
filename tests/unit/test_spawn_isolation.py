"""spawn.fork_worker: a forked worker that cannot let go of what belongs
to the dispatcher (its sockets above all) does not run the worker."""
import os
import resource

from uhttp.workers import exits, spawn


def test_a_child_that_cannot_drop_the_dispatchers_fds_ends_at_once(capfd):
    pipes = spawn.Pipes()

    def failing_drop(keep):
        raise OSError(9, 'a descriptor would not close')

    try:
        pid = spawn.fork_worker(None, pipes, failing_drop)  # no spec needed:
        _, status = os.waitpid(pid, 0)                      # it never runs
    finally:
        pipes.close_all()
    assert os.WIFEXITED(status), status
    assert os.WEXITSTATUS(status) == exits.EXIT_NOT_ISOLATED
    assert "could not close" in exits.EXIT_REASONS[exits.EXIT_NOT_ISOLATED]
    assert 'a descriptor would not close' in capfd.readouterr().err


def test_pipes_that_cannot_all_be_made_leave_none_open():
    saved = resource.getrlimit(resource.RLIMIT_NOFILE)
    before = sorted(os.listdir('/proc/self/fd'))
    taken = {int(fd) for fd in before}
    limit, free = 0, 0
    while free < 3:   # the lowest numbers are given first: three free ones
        free += limit not in taken
        limit += 1
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, saved[1]))
    try:
        try:
            spawn.Pipes()   # eight descriptors: room for about three
        except OSError as err:
            assert err.errno == 24
        else:
            raise AssertionError('Pipes() made eight fds with room for three')
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, saved)
    assert sorted(os.listdir('/proc/self/fd')) == before
