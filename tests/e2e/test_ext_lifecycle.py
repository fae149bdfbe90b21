"""Worker lifecycle: teardown() once per worker on every way it stops (clean
stop, orphaned by a killed dispatcher, pipe closed), its exceptions logged;
worker_memory_limit_mb ends only the worker that runs away."""
import os
import re
import signal

import pytest

from harness import AppServer, wait_gone


def markers(directory, kind):
    """{pid: number of lines} of the marker files of one kind."""
    found = {}
    for name in os.listdir(directory):
        if name.startswith(kind + '-'):
            with open(os.path.join(directory, name), encoding='utf-8') as file:
                found[int(name.split('-', 1)[1])] = len(file.read().split())
    return found


def worker_pids(server):
    status = server.get('/_status').json
    return [worker['pid'] for pool in status['pools']
            for worker in pool['workers']]


def start_teardown_app(app_server, tmp_path, **env):
    directory = tmp_path / 'markers'
    directory.mkdir()
    env = {'EXT_MARKERS': str(directory), **env}
    server = app_server('ext_teardown', env=env)
    server.wait_until(lambda: len(markers(directory, 'setup')) == 2,
                      what='both workers set up')
    pids = worker_pids(server)
    assert sorted(pids) == sorted(markers(directory, 'setup'))
    return server, directory, pids


def wait_teardowns(server, directory, pids, timeout=10):
    server.wait_until(lambda: set(markers(directory, 'teardown')) >= set(pids),
                      timeout=timeout, what='teardown markers of every worker')
    assert wait_gone(pids, timeout=timeout), 'workers still running'
    return markers(directory, 'teardown')


# -- teardown ----------------------------------------------------------------------

def test_teardown_on_clean_stop(app_server, tmp_path):
    server, directory, pids = start_teardown_app(app_server, tmp_path)
    assert server.get('/t/pid').status == 200
    assert server.stop(signal.SIGTERM) == 0
    done = wait_teardowns(server, directory, pids)
    assert done == {pid: 1 for pid in pids}


def test_teardown_when_dispatcher_is_killed(app_server, tmp_path):
    server, directory, pids = start_teardown_app(app_server, tmp_path)
    os.kill(server.pid, signal.SIGKILL)
    server.proc.wait(timeout=10)
    done = wait_teardowns(server, directory, pids)
    assert done == {pid: 1 for pid in pids}


def test_teardown_when_pipe_closes(app_server, tmp_path):
    # The workers ignore SIGTERM (so the parent-death signal does nothing)
    # and check for orphaning only every 30 s: only the closed pipe to
    # the killed dispatcher can end them promptly.
    server, directory, pids = start_teardown_app(
        app_server, tmp_path, EXT_IGNORE_SIGTERM='1', EXT_HEARTBEAT='30')
    os.kill(server.pid, signal.SIGKILL)
    server.proc.wait(timeout=10)
    done = wait_teardowns(server, directory, pids, timeout=10)
    assert done == {pid: 1 for pid in pids}


def test_teardown_exception_is_logged(app_server, tmp_path):
    server, directory, pids = start_teardown_app(
        app_server, tmp_path, EXT_TEARDOWN_RAISE='1')
    assert server.stop(signal.SIGTERM) == 0
    done = wait_teardowns(server, directory, pids)
    assert done == {pid: 1 for pid in pids}
    log = server.log()
    assert log.count('teardown exploded') >= 2, log
    assert 'ERROR' in log


# -- worker_memory_limit_mb -------------------------------------------------------------
@pytest.fixture(scope='module')
def module_memory():
    server = AppServer('ext_memory')
    try:
        server.start()
        yield server
    finally:
        server.cleanup()


def vm_size_mb(pid):
    with open(f'/proc/{pid}/status', encoding='ascii') as status:
        for line in status:
            if line.startswith('VmSize:'):
                return int(line.split()[1]) / 1024
    raise AssertionError(f'no VmSize for {pid}')


def pools_by_name(server):
    return {pool['name']: pool
            for pool in server.get('/_status').json['pools']}


def mem_pids(server):
    pools = pools_by_name(server)
    return ([worker['pid'] for worker in pools['MemWorker']['workers']],
            pools['OtherWorker']['workers'][0]['pid'])


def all_ready(server):
    pools = pools_by_name(server)
    return all(worker['alive'] and worker['ready']
               for pool in pools.values() for worker in pool['workers'])


def check_runaway(server, path):
    server.wait_until(lambda: all_ready(server), what='all workers ready')
    before, other = mem_pids(server)
    reply = server.get(path, timeout=30)
    assert reply.status == 500
    assert reply.json == {'error': 'Internal Server Error'}, reply

    def replaced():
        if not all_ready(server):
            return False
        now, _ = mem_pids(server)
        return now != before and now
    now = server.wait_until(replaced, timeout=15, what='worker restarted')
    changed = [index for index in range(2) if now[index] != before[index]]
    assert len(changed) == 1, (before, now)
    # only that worker was replaced; the other pool is untouched
    assert mem_pids(server)[1] == other
    assert wait_gone([before[changed[0]]])
    for _ in range(4):
        assert server.get('/m/ping').status == 200
    assert server.get('/o/ping').json == {'pid': other}


def test_memory_limit_is_above_normal_use(module_memory):
    server = module_memory
    limit = server.get('/_status').json['limit_mb']
    pids, _ = mem_pids(server)
    for pid in pids:
        assert vm_size_mb(pid) + 100 < limit


def test_memory_limit_huge_allocation(module_memory):
    check_runaway(module_memory, '/m/huge')


def test_memory_limit_growing_allocation(module_memory):
    check_runaway(module_memory, '/m/grow')


def test_memory_limit_reached_by_a_leak_the_worker_holds(module_memory):
    """Memory the worker still holds as it runs out (a leak kept in self)
    left nothing for the ERROR naming the handler, nor often for the 500
    itself (the request was then lost with the worker): a reserve given
    back on the MemoryError makes room for both."""
    server = module_memory
    before = len(re.findall(r'MemWorker\.leak ran out of memory', server.log()))
    check_runaway(server, '/m/leak')
    server.wait_log(r'ERROR\s+MemWorker\[\d\]: MemWorker\.leak ran out of memory '
                    r'on GET /m/leak; the worker restarts', count=before + 1)
    assert 'request(s) lost' not in server.log()


def test_memory_limit_reached_encoding_the_answer(module_memory):
    check_runaway(module_memory, '/m/answer')


def test_memory_limit_does_not_touch_other_workers(module_memory):
    server = module_memory
    server.wait_until(lambda: all_ready(server), what='all workers ready')
    _, other = mem_pids(server)
    for _ in range(3):
        server.wait_until(lambda: all_ready(server), timeout=15,
                          what='all workers ready')
        assert server.get('/m/huge', timeout=30).status == 500
        assert server.get('/o/ping').json == {'pid': other}
    server.wait_until(lambda: all_ready(server), timeout=15,
                      what='all workers ready')
    assert not pools_by_name(server)['MemWorker']['degraded']


def test_processes_a_handler_forks_end_as_they_would_elsewhere(app_server):
    """A multiprocessing pool's children must end on Pool.terminate()'s
    SIGTERM plainly, with no traceback of the worker's own machinery, and
    always: one that got it just after fork() lost it (the worker's
    handler, inherited, had it cleared with the pending signals) and the
    request hung about one time in twenty-five."""
    server = app_server('fork_pool')
    for _ in range(60):
        reply = server.get('/api/squares')
        assert reply.status == 200
        assert reply.json['squares'] == [n * n for n in range(8)]
    log = server.log()
    assert 'StopWorker' not in log and 'Traceback' not in log, log[-2000:]
    assert server.get('/_status').json['pools'][0]['workers'][0]['restarts'] == 0


def process_ended(pid):
    """True once `pid` is gone or a zombie (its parent did not wait)."""
    try:
        with open(f'/proc/{pid}/stat', encoding='ascii') as file:
            return file.read().rpartition(')')[2].split()[0] == 'Z'
    except FileNotFoundError:
        return True


def test_a_forked_child_that_returns_from_the_handler_ends(app_server):
    """A child forked in a handler that returns from it (no os._exit())
    came back into the worker's loop: its answer went to the client in
    place of the worker's, and for up to a second it read the worker's
    pipe and served the requests meant for the worker. It ends with an
    ERROR naming the request; the worker's own answer is sent."""
    server = app_server('fork_pool')
    worker = server.get('/_status').json['pools'][0]['workers'][0]['pid']
    children = []
    for _ in range(5):
        reply = server.get('/api/forked-returns')
        assert reply.status == 200
        assert reply.json['pid'] == worker and reply.json['child'] > 0, reply
        children.append(reply.json['child'])
        for _ in range(10):
            assert server.get('/api/pid').json == {'pid': worker}
    for child in children:
        server.wait_until(lambda child=child: process_ended(child), timeout=10,
                          what=f'forked child {child} ended')
    server.wait_log(r'ERROR\s+ComputeWorker\[0\]: the handler of GET '
                    r'/api/forked-returns: process \d+, which the worker',
                    timeout=10)
    assert server.get('/_status').json['pools'][0]['workers'][0]['restarts'] == 0
    log = server.log()
    assert 'Traceback' not in log, log[-2000:]


def test_a_forked_child_ending_with_sys_exit_leaves_the_worker_alone(app_server):
    """sys.exit() in a forked child, the usual way to end one, ran the
    worker's teardown() in the child (closing what it shares with the
    worker, a database connection say). It only ends the child."""
    server = app_server('fork_pool')
    worker = server.get('/_status').json['pools'][0]['workers'][0]['pid']
    reply = server.get('/api/forked-exits')
    assert reply.status == 200
    assert reply.json['pid'] == worker and reply.json['code'] == 3, reply
    child = reply.json['child']
    server.wait_log(rf'child {child} ended with 3')
    assert f'teardown in pid {child}' not in server.log()
    assert server.get('/api/pid').json == {'pid': worker}


def test_a_forked_child_that_raises_from_the_handler_ends(app_server):
    """An exception in a forked child went to on_request_error() in the
    child, which logged the request as failed and answered it 500 in
    place of the worker. The child ends with an ERROR naming what it
    raised; the worker's answer is sent."""
    server = app_server('fork_pool')
    worker = server.get('/_status').json['pools'][0]['workers'][0]['pid']
    for _ in range(3):
        reply = server.get('/api/forked-raises')
        assert reply.status == 200, reply
        assert reply.json['pid'] == worker, reply
        assert reply.json['code'] == 71, reply
        server.wait_log(rf"child {reply.json['child']} ended with 71")
    log = server.log()
    assert len(re.findall(
        r"ERROR\s+ComputeWorker\[0\]: the handler of GET /api/forked-raises: "
        r"process \d+, which the worker \(pid \d+\) forked, raised "
        r"RuntimeError\('failed in the child'\)", log)) == 3, log[-3000:]
    assert 'failed in ComputeWorker' not in log, log[-3000:]
    assert 'teardown in pid' not in log


def test_a_child_killed_halfway_through_a_record_restarts_its_worker(app_server):
    """A forked child killed while it sends a large record leaves a torn
    frame on the worker's pipe, which the dispatcher would fill with the
    worker's later messages: every answer of the worker was lost (504s,
    for as long as it lived, no ERROR). The worker's next message finds
    the torn frame and ends the worker, which is restarted."""
    server = app_server('fork_pool')
    first = server.get('/_status').json['pools'][0]['workers'][0]['pid']
    assert server.get('/api/torn', timeout=15).status in (200, 500)
    server.wait_until(lambda: server.get('/_status').json['pools'][0][
        'workers'][0]['pid'] != first, timeout=15, what='the worker restarted')
    for _ in range(3):
        reply = server.get('/api/squares', timeout=15)
        assert reply.status == 200, reply
    log = server.log()
    assert re.search(r'ERROR\s.*died: exited with code 71', log), log[-2000:]


def test_a_memory_limit_no_rlimit_can_hold_starts_uncapped_with_a_warning():
    # worker_memory_limit_mb=1e300: every worker died in an OverflowError
    # traceback before it was ready, and the pool answered 503
    import uhttp.workers as _workers
    from uhttp.workers.testing import TestServer

    class RoomyWorker(_workers.Worker):
        @_workers.api('/api/data', 'GET')
        def data(self, request):
            return {'ok': True}

    pool = _workers.WorkerPool(RoomyWorker, num_workers=1,
                               worker_memory_limit_mb=1e300)
    with TestServer(_workers.Dispatcher, pools=[pool]) as server:
        assert server.get('/api/data').json() == {'ok': True}
        warned = [record.message for record in server.logs
                  if 'not applied' in record.message]
        assert warned and "more than the system's limit" in warned[0], (
            server.logs)
        server.assert_no_errors()
