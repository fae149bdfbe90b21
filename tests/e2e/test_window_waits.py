"""Requests given to a worker and waiting in its window, not started: the
pool's timeout holds for them even while that worker keeps its running
handler alive, and when the worker dies they go to an idle sibling at
once (not when its replacement is ready, or as a 504)."""
import threading
import time


def _timed_get(server, path, results, key, timeout=30):
    began = time.monotonic()
    reply = server.get(path, timeout=timeout)
    results[key] = (reply.status, reply.json, time.monotonic() - began)


def _in_background(server, path, results, key):
    thread = threading.Thread(target=_timed_get,
                              args=(server, path, results, key), daemon=True)
    thread.start()
    return thread


def test_a_request_waiting_behind_a_kept_alive_handler_times_out(app_server,
                                                                 tmp_path):
    server = app_server('window_waits',
                        env={'WINDOW_SLOW_SETUP': str(tmp_path / 'slow')})
    for _ in range(200):   # fast answers widen the worker's window
        assert server.get('/one/fast').status == 200
    results = {}
    export = _in_background(server, '/one/export/6', results, 'export')
    time.sleep(0.3)
    _timed_get(server, '/one/fast', results, 'fast')
    status, _, took = results['fast']
    # 504 at the pool's timeout (2 s), not the 200 after the export's 6 s
    assert status == 504, results
    assert took < 4.5, results
    export.join(15)
    assert results['export'][0] == 200   # the handler kept itself alive
    server.wait_log(r'request \d+ \(GET /one/fast\) timed out after 2s in '
                    r'pool OneWorker')


def test_requests_a_dead_worker_never_started_go_to_its_idle_sibling(
        app_server, tmp_path):
    slow = tmp_path / 'slow'
    server = app_server('window_waits', env={'WINDOW_SLOW_SETUP': str(slow)})
    server.wait_until(lambda: all(
        worker['ready'] for pool in server.status()['pools']
        for worker in pool['workers']), what='every worker ready')
    slow.write_text('')   # the dead worker's replacement takes 4 s
    results = {}
    stuck = _in_background(server, '/two/gil/3000000000', results, 'stuck')
    time.sleep(0.2)
    busy = _in_background(server, '/two/sleep/0.4', results, 'busy')
    time.sleep(0.2)
    waiting = _in_background(server, '/two/fast', results, 'fast')
    for thread in (busy, waiting, stuck):
        thread.join(25)
    status, body, took = results['fast']
    assert status == 200, results
    # the stuck worker is killed at ~1.5 s; its sibling has been idle since
    # ~0.8 s: the request it never started is answered then, not once the
    # replacement is ready (4 s later)
    assert took < 3.5, results
    assert results['stuck'][0] == 500, results
