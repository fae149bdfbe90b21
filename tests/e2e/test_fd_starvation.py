"""Out of descriptors when a worker must be started: the restart of a
dead worker and the replacement of a reload are tried again (or given up
with an ERROR, the old worker serving), and nothing made before the
failure leaks. The dispatcher's own limit is cut for real (setrlimit)."""
import json
import os
import signal


def _call(conn, method, path):
    conn.request(method, path, body=b'' if method == 'POST' else None)
    response = conn.getresponse()
    return response.status, json.loads(response.read() or b'null')


def _worker_pid(server):
    return server.status()['pools'][0]['workers'][0]['pid']


def test_a_restart_without_descriptors_is_tried_again(app_server):
    server = app_server('fd_starved')
    server.wait_until(lambda: _worker_pid(server) is not None)
    conn = server.connection()   # kept open: new ones cannot be accepted
    try:
        assert _call(conn, 'GET', '/api/pid')[0] == 200
        before = _call(conn, 'GET', '/fds/count')[1]['open']
        old = _worker_pid(server)
        assert _call(conn, 'POST', '/fds/starve')[0] == 200
        os.kill(old, signal.SIGKILL)
        server.wait_log(r'cannot start ItemWorker\[0\]: cannot make its pipes: '
                        r'\[Errno 24\]')
        server.wait_log(r'restarting ItemWorker\[0\] in 1\.0s')
        assert _call(conn, 'POST', '/fds/restore')[0] == 200
        server.wait_until(lambda: _worker_pid(server) not in (None, old),
                          what='the slot started again')
        assert server.get('/api/pid').status == 200
        # the failed tries left nothing open
        server.wait_until(
            lambda: _call(conn, 'GET', '/fds/count')[1]['open'] == before,
            what=f'back to {before} descriptors')
    finally:
        conn.close()


def test_a_replacement_without_descriptors_fails_and_the_old_worker_serves(
        app_server):
    server = app_server('fd_starved')
    server.wait_until(lambda: _worker_pid(server) is not None)
    conn = server.connection()
    try:
        before = _call(conn, 'GET', '/fds/count')[1]['open']
        old = _worker_pid(server)
        assert _call(conn, 'POST', '/fds/starve')[0] == 200
        server.send_signal(signal.SIGHUP)
        server.wait_log(r"ItemWorker\[0\]'s replacement \(reload\) failed "
                        r"before it was ready: cannot make its pipes")
        server.wait_log(r'reload finished with old workers left in pool\(s\) '
                        r'ItemWorker')
        assert _call(conn, 'GET', '/api/pid') == (200, {'pid': old})
        assert _call(conn, 'GET', '/fds/count')[1]['open'] == before
        assert _call(conn, 'POST', '/fds/restore')[0] == 200
        server.send_signal(signal.SIGHUP)   # fixed: the next reload works
        server.wait_log(r'reload finished: every worker replaced')
        assert server.get('/api/pid').json['pid'] != old
    finally:
        conn.close()
