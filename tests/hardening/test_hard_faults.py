"""Exceptions in every hook and handler, unsendable and huge results (app
tests/apps/hard_faults.py).

Where a request is involved and nothing was sent yet, the answer is one
well-formed 500; hooks that run after the answer went out (on_response,
on_pending_removed, on_static_served) leave the handler's answer as it is.
Every fault leaves an ERROR (or CRITICAL) log line naming it, no worker of
the faulty pool dies (unless the fault is the death), and the dispatcher
and the workers keep serving.
"""
import hashlib
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import pytest

from hard_util import (AppServer, exchange, parse_responses, pid_alive, probe,
                       request_bytes, wait_for)

STATIC_BODY = b'static file body'
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DIED = re.compile(r'worker FaultWorker\S* \(pid \d+\) died')


@pytest.fixture(scope='module')
def server():
    static = tempfile.mkdtemp(prefix='uw-hard-faults-')
    with open(os.path.join(static, 'f.txt'), 'wb') as file:
        file.write(STATIC_BODY)
    app = AppServer('hard_faults', env={'HARD_FAULTS_STATIC': static})
    app.start()
    yield app
    app.cleanup()
    shutil.rmtree(static, ignore_errors=True)


def _count(server, pattern):
    return len(re.findall(pattern, server.log()))


def _deaths(server):
    return len(DIED.findall(server.log()))


def _probe(server):
    probe(server, ('/probe', '/w/ok', '/s/ok'))


def fault(server, path, status, pattern, headers=None, count=1, head=None):
    """One request that trips a fault: exactly one response with `status`,
    `count` new log lines matching `pattern`, no FaultWorker death."""
    before = _count(server, pattern)
    deaths = _deaths(server)
    outcome = exchange(server.port, request_bytes(
        'GET', path, dict(headers or {}, Connection='close')), timeout=30)
    assert outcome.rest == b'', outcome
    assert len(outcome.finals) == 1, f"GET {path}: {outcome}"
    resp = outcome.finals[0]
    assert resp.status == status, f"GET {path}: {resp}"
    server.wait_log(pattern, timeout=10, count=before + count)
    assert _deaths(server) == deaths, server.log()[-3000:]
    _probe(server)
    return resp


WORKER_FAULTS = [
    ('/w/raise', 500, r'ERROR .*boom-handler'),
    ('/w/check-raise', 500, r'ERROR .*boom-worker-do-check'),
    ('/w/error-hook-raise', 500, r'ERROR .*boom-on-request-error'),
]
RESULT_KINDS = ['set', 'lambda', 'object', 'nested-object', 'tuple-key', 'circular',
                'generator', 'set-with-status', 'response-set', 'response-bad-status',
                'bad-status', 'bad-headers', 'deferred-set', 'deferred-lambda']


@pytest.mark.parametrize('path,status,pattern', WORKER_FAULTS,
                         ids=[case[0] for case in WORKER_FAULTS])
def test_worker_handler_faults(server, path, status, pattern):
    fault(server, path, status, pattern)


def test_a_path_cannot_forge_log_lines(server):
    """The decoded path went raw into the library's log lines (a handler's
    failure, a timeout, a lost request): CR LF in it forged whole records,
    ESC sequences reached the terminal showing the log. Control
    characters are written as \\xHH, as in the access log."""
    forged = '2026-01-01 00:00:00.000 CRITICAL forged'
    path = ('/w/raise-named/x%0d%0a' + forged.replace(' ', '%20')
            + '%1b%5b2J')
    fault(server, path, 500, r'ERROR .*boom-named')
    log = server.log()
    assert not any(line.startswith(forged) for line in log.splitlines())
    assert '\x1b' not in log and '\r' not in log
    assert re.search(r'GET /w/raise-named/x\\x0d\\x0a2026-01-01 .*forged'
                     r'\\x1b\[2J failed in FaultWorker\.raise_named', log)


@pytest.mark.parametrize('kind', RESULT_KINDS)
def test_unsendable_result(server, kind):
    path = f'/w/result/{kind}'
    resp = fault(server, path, 500, r'(?m)^\S+ \S+ ERROR .*' + re.escape(path))
    assert resp.header('content-type', '').startswith('application/json')


def test_stream_with_unsendable_item(server):
    path = '/w/result/ndjson-object'
    before = _count(server, r'ERROR .*Unsendable')
    outcome = exchange(server.port, request_bytes('GET', path), timeout=15)
    assert outcome.closed and outcome.rest == b'', outcome
    assert len(outcome.finals) == 1 and outcome.finals[0].status == 200, outcome
    assert outcome.finals[0].body == b'{"first": true}\n', outcome
    server.wait_log(r'ERROR .*Unsendable', timeout=10, count=before + 1)
    _probe(server)


def test_huge_result_arrives_intact(server):
    sock = socket.create_connection(('127.0.0.1', server.port), timeout=30)
    try:
        sock.sendall(request_bytes('GET', '/w/huge', {'Connection': 'close'}))
        data = bytearray()
        while True:
            chunk = sock.recv(1 << 20)
            if not chunk:
                break
            data += chunk
    finally:
        sock.close()
    responses, rest = parse_responses(data)
    assert rest == b'' and len(responses) == 1, (responses, rest[:100])
    resp = responses[0]
    assert resp.status == 200
    assert len(resp.body) == 20 * 1024 * 1024
    assert hashlib.sha256(resp.body).hexdigest() == resp.header('x-sha256')
    _probe(server)


DISPATCHER_FAULTS = [
    ('/w/ok', {'X-Boom': 'do_check'}, 500, r'ERROR .*boom-dispatcher-do-check'),
    ('/s/ok', {'X-Boom': 'do_check_sync'}, 500, r'ERROR .*boom-do-check-sync'),
    ('/s/raise', {}, 500, r'ERROR .*boom-sync-handler'),
    ('/s/no-answer', {}, 500, r'ERROR .*returned without answering'),
    # a raising on_request_accepted: 500, and the handler never runs
    # without the context the hook was to give it
    ('/w/accepted-raise', {}, 500, r'ERROR .*boom-on-request-accepted'),
    # these hooks run after the answer was sent: it stays the handler's
    ('/w/on-response', {}, 200, r'ERROR .*boom-on-response'),
    ('/w/removed-raise', {}, 200, r'ERROR .*boom-on-pending-removed'),
    # fire-and-forget forwards: the request itself is fine
    ('/w/forward', {}, 200, r'ERROR .*boom-on-forward'),
    # named by the call and its route, not by an internal message number
    ('/w/forward-unpicklable', {}, 200,
     r"ERROR .*forward\('/w/ok', \.\.\.\) dropped: its data could not be sent"),
]


@pytest.mark.parametrize('path,headers,status,pattern', DISPATCHER_FAULTS,
                         ids=[case[3].split('*')[-1] for case in DISPATCHER_FAULTS])
def test_dispatcher_hook_faults(server, path, headers, status, pattern):
    fault(server, path, status, pattern, headers)


def test_unsendable_context(server):
    before = _count(server, r'ERROR .*cannot be sent')
    outcome = exchange(server.port, request_bytes(
        'GET', '/w/context-unsendable', {'Connection': 'close'}), timeout=15)
    assert outcome.rest == b'' and len(outcome.finals) == 1, outcome
    assert outcome.finals[0].status in (200, 500), outcome
    server.wait_log(r'ERROR .*cannot be sent', timeout=10, count=before + 1)
    _probe(server)


def test_on_static_served_fault(server):
    resp = fault(server, '/files/f.txt', 200, r'ERROR .*boom-on-static-served')
    assert resp.body == STATIC_BODY


def test_on_log_fault_for_one_message(server):
    """on_log raises for one record: the record still gets printed (by the
    default output), nothing recurses, serving goes on."""
    fault(server, '/w/log-marker', 200, r'BOOM-LOG marker from worker')
    assert pid_alive(server.pid)


def test_on_log_fault_for_every_message(server):
    assert server.get('/s/arm-log').status == 200
    start = time.monotonic()
    statuses = []
    while time.monotonic() - start < 1.0:
        statuses.append(server.get('/w/raise').status)
        statuses.append(server.get('/w/ok').status)
    assert set(statuses[0::2]) == {500} and set(statuses[1::2]) == {200}
    time.sleep(0.6)
    assert pid_alive(server.pid)
    # every handler failure was still printed, through the default output
    assert _count(server, r'ERROR .*boom-handler') >= len(statuses) // 2
    _probe(server)


def test_dispatcher_on_idle_fault(server):
    before = _count(server, r'ERROR .*boom-dispatcher-on-idle')
    assert server.get('/s/arm-idle').status == 200
    server.wait_log(r'ERROR .*boom-dispatcher-on-idle', timeout=10, count=before + 2)
    _probe(server)


def test_dispatcher_fd_callback_fault(server):
    fault(server, '/s/fd-reader', 200, r'ERROR .*boom-dispatcher-fd-reader')
    time.sleep(0.5)
    assert _count(server, r'ERROR .*boom-dispatcher-fd-reader') == 1, (
        'the callback keeps failing')


def test_worker_on_idle_fault(server):
    # three failures in a row: the first logged whole, the other two
    # counted and told once on_idle() works again
    fault(server, '/w/arm-idle', 200, r'ERROR .*boom-worker-on-idle', count=2)
    server.wait_log(r'ERROR .*on_idle\(\) failed 2 more time\(s\) in the '
                    r'last \d+ s with RuntimeError: boom-worker-on-idle',
                    timeout=10)


def test_worker_on_config_fault(server):
    deaths = _deaths(server)
    before = _count(server, r'ERROR .*boom-on-config')
    assert server.get('/s/config?boom=1').status == 200
    server.wait_log(r'ERROR .*boom-on-config', timeout=10, count=before + 2)
    assert server.get('/s/config?boom=0').status == 200
    assert _deaths(server) == deaths
    _probe(server)


def test_worker_on_disconnect_fault(server):
    deaths = _deaths(server)
    before = _count(server, r'ERROR .*boom-on-disconnect')
    sock = socket.create_connection(('127.0.0.1', server.port), timeout=10)
    try:
        sock.sendall(request_bytes('GET', '/w/sse'))
        data = b''
        while b'event: hello' not in data:
            chunk = sock.recv(4096)
            assert chunk
            data += chunk
    finally:
        sock.close()
    server.wait_log(r'ERROR .*boom-on-disconnect', timeout=10, count=before + 1)
    wait_for(lambda: server.get('/_status').json['pending'] == 0, 10, 0.1, 'no pending')
    assert _deaths(server) == deaths
    _probe(server)


@pytest.mark.parametrize('path,pattern', [
    ('/w/fd-reader', r'ERROR .*boom-worker-fd-reader'),
    ('/w/fd-writer', r'ERROR .*boom-worker-fd-writer'),
])
def test_worker_fd_callback_fault(server, path, pattern):
    fault(server, path, 200, pattern)
    time.sleep(0.5)
    assert _count(server, pattern) == 1, 'the callback keeps failing'


def test_setup_fails_in_one_worker_only(server):
    server.wait_log(r'CRITICAL .*boom-setup-worker-1', timeout=15)
    for _ in range(20):
        reply = server.get('/setup/ok', timeout=10)
        assert reply.status == 200 and reply.json == {'worker': 0}, reply
    assert 'boom-setup-worker-1' in server.log()
    _probe(server)


def test_on_worker_died_fault(server):
    """A worker dies holding a request and on_worker_died() raises: the
    request still gets its 500, the worker is replaced."""
    before = _count(server, r'ERROR .*boom-on-worker-died')
    outcome = exchange(server.port, request_bytes('GET', '/w/die', {'Connection': 'close'}),
                       timeout=30)
    assert outcome.rest == b'' and len(outcome.finals) == 1, outcome
    assert outcome.finals[0].status == 500, outcome
    server.wait_log(r'ERROR .*boom-on-worker-died', timeout=10, count=before + 1)
    wait_for(lambda: server.get('/_status').json['pools']['FaultWorker'] == [True, True],
             15, 0.1, 'the worker to be replaced')
    _probe(server)


def test_alive_after_all_faults(server):
    _probe(server)
    status = server.get('/_status').json
    assert status['pending'] == 0
    assert 'dispatcher loop error' not in server.log()


# -- a dispatcher started with its standard descriptors closed -------------------

def _free_port():
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def _get(port, path):
    conn = http.client.HTTPConnection('127.0.0.1', port, timeout=5)
    try:
        conn.request('GET', path)
        reply = conn.getresponse()
        return reply.status, reply.read()
    finally:
        conn.close()


def test_started_with_stdio_closed(tmp_path):
    """Started with descriptors 0..2 closed (`2>&-`), the dispatcher's own
    pipes and sockets took those numbers and its log, written to
    descriptor 2, went into one of them (or a client's socket). They
    are opened on /dev/null first."""
    def close_stdio():
        for fd in (0, 1, 2):
            os.close(fd)

    port = _free_port()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [ROOT, os.environ.get('PYTHONPATH', '')]))
    proc = subprocess.Popen(
        [sys.executable, os.path.join(ROOT, 'tests', 'apps', 'closed_stdio.py'),
         str(port)], env=env, preexec_fn=close_stdio, start_new_session=True)
    try:
        def up():
            try:
                return _get(port, '/fds')
            except OSError:
                return None
        status, body = wait_for(up, 15, what='the app listening')
        assert status == 200
        assert json.loads(body) == {str(fd): os.devnull for fd in (0, 1, 2)}
        idle = [socket.create_connection(('127.0.0.1', port)) for _ in range(3)]
        try:
            time.sleep(0.2)  # accepted
            assert _get(port, '/api/fail')[0] == 500   # an ERROR is logged
            for sock in idle:
                sock.settimeout(0.5)
                with pytest.raises(socket.timeout):
                    sock.recv(1024)   # no log text lands in a client socket
        finally:
            for sock in idle:
                sock.close()
        assert _get(port, '/api/ok') == (200, b'{"ok": true}')
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(10)
