"""Graceful shutdown on SIGTERM/SIGINT, and no orphan workers when the
dispatcher is killed outright."""
import http.client
import os
import re
import signal
import threading
import time

import pytest

from harness import pid_alive, wait_gone
from supervision_util import Call, start, wait_busy, worker_pids

REFUSED = (ConnectionRefusedError, ConnectionResetError, BrokenPipeError,
           ConnectionAbortedError, http.client.RemoteDisconnected,
           http.client.BadStatusLine)


def probe(server):
    """'refused', 503 or 200 for one new connection to a sync route."""
    try:
        return server.get('/_status', timeout=5).status
    except REFUSED:
        return 'refused'


def wait_not_accepting(server, timeout=5):
    """Wait until a new connection is refused or answered 503."""
    deadline = time.monotonic() + timeout
    outcome = None
    while time.monotonic() < deadline:
        outcome = probe(server)
        if outcome in ('refused', 503):
            return outcome
        time.sleep(0.02)
    raise AssertionError(f"still accepting after the signal (last: {outcome!r})")


def markers(directory):
    return set(os.listdir(directory))


# -- graceful shutdown -------------------------------------------------------------

@pytest.mark.parametrize('sig', [signal.SIGTERM, signal.SIGINT],
                         ids=['SIGTERM', 'SIGINT'])
def test_graceful_shutdown_finishes_in_flight_requests(app_server, tmp_path, sig):
    server = start(app_server, 'sup_shutdown', env={
        'SUP_WORKERS': '4', 'SUP_SHUTDOWN_TIMEOUT': '10',
        'SUP_MARKER_DIR': str(tmp_path)})
    pids = worker_pids(server)
    calls = [Call(server, '/api/sleep/1.0') for _ in range(4)]
    wait_busy(server, 4)

    signalled = time.monotonic()
    server.send_signal(sig)
    # (1) the listener stops taking new work
    wait_not_accepting(server)
    # (2) the requests already in flight finish normally
    for call in calls:
        reply = call.result()
        assert reply.status == 200, reply
    # (4) the workers were stopped through their pipes: each ran teardown()
    assert server.proc.wait(timeout=15) == 0
    assert time.monotonic() - signalled < 8
    assert wait_gone(pids, timeout=5), [pid for pid in pids if pid_alive(pid)]
    assert markers(tmp_path) == {f'teardown-{pid}' for pid in pids}
    text = server.log()
    assert 'did not stop in time' not in text, text[-3000:]


def test_the_same_stop_signal_sent_twice_still_drains(app_server):
    """SIGTERM to the dispatcher and, a moment later, to its process group
    (what `timeout` and some supervisors send) is one stop, not an
    operator in a hurry: the requests in flight still finish."""
    server = start(app_server, 'sup_shutdown', env={
        'SUP_WORKERS': '2', 'SUP_SHUTDOWN_TIMEOUT': '10'})
    calls = [Call(server, '/api/sleep/1.0') for _ in range(2)]
    wait_busy(server, 2)
    server.send_signal(signal.SIGTERM)
    time.sleep(0.05)   # (not at once: two pending signals are one)
    server.send_signal(signal.SIGTERM)
    for call in calls:
        assert call.result().status == 200
    assert server.proc.wait(timeout=15) == 0
    assert 'did not stop in time' not in server.log()


def test_a_second_stop_signal_later_cuts_the_drain_short(app_server):
    server = start(app_server, 'sup_shutdown', env={
        'SUP_WORKERS': '2', 'SUP_SHUTDOWN_TIMEOUT': '30'})
    call = Call(server, '/api/sleep/20')
    wait_busy(server, 1)
    server.send_signal(signal.SIGTERM)
    time.sleep(0.6)
    signalled = time.monotonic()
    server.send_signal(signal.SIGTERM)
    assert server.proc.wait(timeout=15) == 0
    assert time.monotonic() - signalled < 10
    reply = call.result()
    assert reply.status == 503, reply


def test_uploads_and_downloads_under_way_finish_on_sigterm(app_server):
    """In flight are also a request still arriving (its head came before
    the signal) and an answer still being sent: both finish."""
    import socket
    # (a shutdown_timeout well above what a busy machine takes to send the
    # 48 MiB: past it the drain ends, and the download with it, by design)
    server = start(app_server, 'sup_shutdown', env={
        'SUP_WORKERS': '2', 'SUP_SHUTDOWN_TIMEOUT': '60'})
    body = b'u' * (2 << 20)
    upload = socket.create_connection(('127.0.0.1', server.port), timeout=10)
    download = socket.create_connection(('127.0.0.1', server.port),
                                        timeout=10)
    try:
        upload.sendall(b'POST /api/size HTTP/1.1\r\nHost: x\r\n'
                       b'Content-Length: %d\r\n\r\n' % len(body)
                       + body[:100000])
        download.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        download.sendall(b'GET /api/file/48 HTTP/1.1\r\nHost: x\r\n\r\n')
        got = download.recv(65536)
        assert got.startswith(b'HTTP/1.1 200'), got[:200]
        time.sleep(0.5)  # the download is well under way, the upload too
        server.send_signal(signal.SIGTERM)
        time.sleep(1.0)  # longer than a drain with nothing pending takes
        upload.sendall(body[100000:])
        answer = upload.recv(65536)
        assert answer.startswith(b'HTTP/1.1 200'), answer[:300]
        assert b'"size": %d' % len(body) in answer
        deadline = time.monotonic() + 60
        while True:
            chunk = download.recv(1 << 20)
            if not chunk:
                break
            got += chunk
            assert time.monotonic() < deadline
        head, _, data = got.partition(b'\r\n\r\n')
        assert len(data) == 48 << 20 and data.count(b'\x5a') == len(data)
    finally:
        upload.close()
        download.close()
    assert server.proc.wait(timeout=60) == 0


def test_shutdown_timeout_answers_503_and_kills_stuck_workers(app_server, tmp_path):
    server = start(app_server, 'sup_shutdown', env={
        'SUP_WORKERS': '4', 'SUP_SHUTDOWN_TIMEOUT': '0.5',
        'SUP_MARKER_DIR': str(tmp_path)})
    pids = worker_pids(server)
    calls = [Call(server, '/api/sleep/6'), Call(server, '/api/sleep/6'),
             Call(server, '/api/spin')]
    busy = wait_busy(server, 3)
    busy_pids = {w['pid'] for w in busy}
    idle_pids = set(pids) - busy_pids
    assert len(idle_pids) == 1

    signalled = time.monotonic()
    server.send_signal(signal.SIGTERM)
    for call in calls:
        reply = call.result()
        # (3) pending requests still running at shutdown_timeout get 503
        assert reply.status == 503, reply
        assert call.ended - signalled < 4.5, (
            f"503 came {call.ended - signalled:.2f}s after SIGTERM")
    # (5) workers that do not stop in time are killed; the dispatcher exits 0
    assert server.proc.wait(timeout=15) == 0
    assert time.monotonic() - signalled < 5.0
    assert wait_gone(pids, timeout=5), [pid for pid in pids if pid_alive(pid)]
    text = server.log()
    assert re.search(r'WARNING\s.*did not stop in time', text), text[-3000:]
    # killed as shutdown said it would be: warned of, not an error
    assert not re.search(r'ERROR\s.*died', text), text[-3000:]
    done = markers(tmp_path)
    # the idle worker stopped cleanly through its control pipe ...
    assert {f'teardown-{pid}' for pid in idle_pids} <= done, done
    # ... the busy ones did not get to (they were killed)
    assert not {f'teardown-{pid}' for pid in busy_pids} & done, done


def test_an_upload_completing_after_the_drain_is_refused_503(app_server):
    # it was admitted to a pool whose workers were stopping, then closed
    # without an answer (and counted as the client's leaving)
    import socket
    server = start(app_server, 'sup_shutdown', env={
        'SUP_WORKERS': '1', 'SUP_SHUTDOWN_TIMEOUT': '0.5'})
    spinning = Call(server, '/api/spin')   # holds the stop for its kill
    wait_busy(server, 1)
    body = b'u' * 200000
    upload = socket.create_connection(('127.0.0.1', server.port), timeout=10)
    try:
        upload.sendall(b'POST /api/size HTTP/1.1\r\nHost: x\r\n'
                       b'Content-Length: %d\r\n\r\n' % len(body)
                       + body[:1000])
        time.sleep(0.3)
        server.send_signal(signal.SIGTERM)
        assert spinning.result().status == 503   # the drain is over
        upload.sendall(body[1000:])
        answer = upload.recv(65536)
        assert answer.startswith(b'HTTP/1.1 503'), answer[:300]
    finally:
        upload.close()
    assert server.proc.wait(timeout=20) == 0


def test_every_answer_during_shutdown_closes_its_connection(app_server):
    """A worker's answer and the dispatcher's own 503 at shutdown_timeout
    alike say Connection: close: the server is about to go, and a client
    that reused the connection would find it gone."""
    server = start(app_server, 'sup_shutdown', env={
        'SUP_WORKERS': '2', 'SUP_SHUTDOWN_TIMEOUT': '1'})
    quick, slow = Call(server, '/api/sleep/0.5'), Call(server, '/api/sleep/6')
    wait_busy(server, 2)
    server.send_signal(signal.SIGTERM)
    for call, status in ((quick, 200), (slow, 503)):
        reply = call.result()
        assert reply.status == status, reply
        assert reply.headers.get('connection') == 'close', (
            status, reply.headers)
    assert server.proc.wait(timeout=15) == 0


def test_shutdown_under_load_answers_every_request_once(app_server):
    server = start(app_server, 'sup_shutdown', env={
        'SUP_WORKERS': '4', 'SUP_SHUTDOWN_TIMEOUT': '10'})
    pids = worker_pids(server)
    signalled = []          # [monotonic time just before the signal]
    outcomes = []           # (started, outcome)
    lock = threading.Lock()

    def client(persistent):
        connection = server.connection(timeout=15) if persistent else None
        while True:
            started = time.monotonic()
            try:
                if persistent:
                    connection.request('GET', '/api/sleep/0.02')
                    response = connection.getresponse()
                    response.read()
                    outcome = response.status
                    if response.getheader('connection', '').lower() == 'close':
                        connection.close()
                else:
                    outcome = server.get('/api/sleep/0.02', timeout=15).status
            except REFUSED:
                outcome = 'closed'
            except OSError as err:          # socket.timeout included
                outcome = f'error {err!r}'
            with lock:
                outcomes.append((started, outcome))
            if outcome == 'closed' or outcome not in (200, 503):
                if connection is not None:
                    connection.close()
                return
            if signalled and time.monotonic() - signalled[0] > 10:
                return

    threads = [threading.Thread(target=client, args=(index % 2 == 0,),
                                daemon=True) for index in range(6)]
    for thread in threads:
        thread.start()
    server.wait_until(lambda: sum(1 for _, o in outcomes if o == 200) >= 100,
                      timeout=15, what='requests served before the signal')
    signalled.append(time.monotonic())
    server.send_signal(signal.SIGTERM)
    for thread in threads:
        thread.join(timeout=20)
    assert not any(thread.is_alive() for thread in threads), "a client hangs"
    assert server.proc.wait(timeout=15) == 0

    counts = {}
    for _, outcome in outcomes:
        counts[outcome] = counts.get(outcome, 0) + 1
    assert set(counts) <= {200, 503, 'closed'}, counts
    assert counts.get(200, 0) >= 100
    # every client ended on a closed listener, never on a hang
    assert counts.get('closed', 0) == len(threads), counts
    # requests sent before the signal were answered, not dropped
    early_drops = [(started - signalled[0], outcome) for started, outcome
                   in outcomes if outcome == 'closed' and started < signalled[0]]
    assert not early_drops, early_drops
    assert wait_gone(pids, timeout=5)
    # the workers' last messages and their pipes' EOF arrive together:
    # the shutdown handles both without an error
    log = server.log()
    assert 'Traceback' not in log and ' failed: ' not in log, log[-3000:]
    print('outcomes:', counts)


# -- no orphans ----------------------------------------------------------------------

def test_no_orphans_when_dispatcher_is_killed_while_idle(app_server):
    server = start(app_server, 'sup_shutdown', env={'SUP_WORKERS': '3'})
    pids = worker_pids(server)
    assert sorted(pids) == sorted(server.children())
    os.kill(server.pid, signal.SIGKILL)
    server.proc.wait(timeout=5)
    assert wait_gone(pids, timeout=5), [pid for pid in pids if pid_alive(pid)]


def test_no_orphans_when_dispatcher_is_killed_while_workers_are_busy(app_server):
    server = start(app_server, 'sup_shutdown', env={'SUP_WORKERS': '3'})
    pids = worker_pids(server)
    sleeper = Call(server, '/api/sleep/60', timeout=10)
    spinner = Call(server, '/api/spin', timeout=10)
    busy = wait_busy(server, 2)
    assert len({w['pid'] for w in busy}) == 2
    os.kill(server.pid, signal.SIGKILL)
    server.proc.wait(timeout=5)
    assert wait_gone(pids, timeout=5), [pid for pid in pids if pid_alive(pid)]
    # the clients see their connection closed, not a hang
    for call in (sleeper, spinner):
        call.join(timeout=15)
        assert not call.is_alive()
        assert call.error is not None or call.reply.status >= 500
