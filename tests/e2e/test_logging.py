"""Logging over real processes: worker loggers and their levels, the
dispatcher's logger, the output style picked at start (plain, systemd,
terminal), on_log(), the automatic records, and whole multi-line records."""
import concurrent.futures
import http.client
import json
import os
import re
import select
import signal
import subprocess
import sys
import threading
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
APP = os.path.join(ROOT, 'tests', 'apps', 'logging_app.py')
MULTI_LINES = 30
LISTENING = re.compile(r'listening on https?://[^:]+:(\d+)')


import harness  # noqa: E402  (tests/harness.py)


def get_json(port, path, timeout=10):
    conn = http.client.HTTPConnection('127.0.0.1', port, timeout=timeout)
    try:
        conn.request('GET', path)
        response = conn.getresponse()
        body = response.read()
        return response.status, body
    finally:
        conn.close()


def line_with(text, needle):
    """The first line of `text` containing `needle` (AssertionError if none)."""
    for line in text.split('\n'):
        if needle in line:
            return line
    raise AssertionError(f"no line with {needle!r} in:\n{text[-3000:]}")


def record_after(text, needle, size=4000):
    """The text from the line holding `needle` on (one record and a bit)."""
    index = text.find(needle)
    assert index >= 0, f"{needle!r} not logged:\n{text[-3000:]}"
    start = text.rfind('\n', 0, index) + 1
    return text[start:start + size]


def worker_pid(server, pool_name, index=0):
    for pool in server.status()['pools']:
        if pool['name'] == pool_name:
            return pool['workers'][index]['pid']
    raise AssertionError(f"no pool {pool_name}")


def wait_new_pid(server, pool_name, old_pid, timeout=10):
    def replaced():
        for pool in server.status()['pools']:
            if pool['name'] == pool_name:
                worker = pool['workers'][0]
                if worker['alive'] and worker['pid'] not in (None, old_pid):
                    return worker['pid']
        return None
    return server.wait_until(replaced, timeout=timeout,
                             what=f'{pool_name} restarted')


# -- the full app (plain output: stderr is a file) -------------------------------------

@pytest.fixture(scope='module')
def full(tmp_path_factory):
    base = tmp_path_factory.mktemp('logging')
    records = str(base / 'records.jsonl')
    app = harness.AppServer('logging_app', ['full'], env={
        'CRASH_MARKER': str(base / 'crashed-once'),
        'LOG_RECORDS': records})
    app.records_path = records
    app.start()
    yield app
    app.cleanup()


def read_records(path):
    with open(path, encoding='utf-8') as file:
        return [json.loads(line) for line in file if line.strip()]


def test_default_pool_log_level_is_warning(full):
    reply = full.get('/quiet/emit/q1')
    assert reply.status == 200
    assert reply.json['is_debug'] is False
    assert reply.json['is_info'] is False
    assert reply.json['is_warning'] is True
    assert reply.json['is_error'] is True
    log = full.wait_log(r'emit-critical q1')
    assert 'emit-warning q1 42' in log
    assert 'emit-error q1 7' in log
    assert 'emit-info q1' not in log
    assert 'emit-debug q1' not in log


def test_pool_log_level_info(full):
    reply = full.get('/info/emit/i1')
    assert reply.status == 200
    assert reply.json['is_debug'] is False
    assert reply.json['is_info'] is True
    assert reply.json['is_warning'] is True
    log = full.wait_log(r'emit-critical i1')
    assert 'emit-info i1' in log
    assert 'emit-warning i1 42' in log
    assert 'emit-debug i1' not in log


def test_pool_log_level_debug(full):
    reply = full.get('/debug/emit/d1')
    assert reply.json['is_debug'] is True
    assert reply.json['is_info'] is True
    log = full.wait_log(r'emit-critical d1')
    for text in ('emit-debug d1', 'emit-info d1', 'emit-warning d1 42',
                 'emit-error d1 7'):
        assert text in log


def test_percent_and_brace_formatting(full):
    full.get('/debug/emit/f1')
    log = full.wait_log(r'emit-critical f1')
    assert 'emit-debug f1' in log          # "%s"
    assert 'emit-info f1' in log           # "{tag}"
    assert 'emit-warning f1 42' in log     # "%s %d"
    assert 'emit-error f1 7' in log        # "{tag} {n}"
    assert '%s' not in line_with(log, 'emit-critical f1')
    assert '{tag}' not in line_with(log, 'emit-info f1')


def test_each_record_shows_its_level_and_source(full):
    full.get('/debug/emit/lv')
    log = full.wait_log(r'emit-critical lv')
    for text, level in (('emit-debug lv', 'DEBUG'), ('emit-info lv', 'INFO'),
                        ('emit-warning lv 42', 'WARNING'),
                        ('emit-error lv 7', 'ERROR'),
                        ('emit-critical lv', 'CRITICAL')):
        line = line_with(log, text)
        assert re.search(rf'\b{level}\b', line), line
        assert 'DebugWorker' in line, line


def test_is_checks_follow_the_pool_level(full):
    reply = full.get('/quiet/guarded/g1')
    assert reply.json == {'done': ['warning', 'error']}
    reply = full.get('/debug/guarded/g2')
    assert reply.json == {'done': ['debug', 'info', 'warning', 'error']}
    log = full.wait_log(r'guarded-error g2')
    full.wait_log(r'guarded-error g1')
    assert 'guarded-debug g2' in log and 'guarded-info g2' in log
    assert 'guarded-info g1' not in log


def test_dispatcher_logger(full):
    assert full.get('/dlog/p1').status == 200
    log = full.wait_log(r'dispatcher-critical p1')
    assert 'dispatcher-info p1' in log
    assert 'dispatcher-warning p1' in log   # {}-style on the dispatcher too
    assert re.search(r'\bERROR\b', line_with(log, 'dispatcher-error p1'))
    # the dispatcher's own start record is INFO
    assert re.search(r'\bINFO\b', line_with(log, 'listening on'))


def test_plain_output_when_stderr_is_a_file(full):
    full.get('/debug/emit/plain')
    log = full.wait_log(r'emit-critical plain')
    assert '\x1b[' not in log
    assert not re.search(r'^<\d>', log, re.M)


def test_handler_exception_logged_with_traceback(full):
    reply = full.get('/info/boom/b1')
    assert reply.status == 500
    assert b'Traceback' not in reply.body
    log = full.wait_log(r'ValueError: boom-b1')
    record = record_after(log, 'boom-b1')
    first = record.split('\n', 1)[0]
    assert re.search(r'\bERROR\b', first), first
    assert 'Traceback (most recent call last)' in record
    assert 'ValueError: boom-b1' in record
    # also for a pool at the default level (ERROR passes WARNING)
    assert full.get('/quiet/boom/b2').status == 500
    log = full.wait_log(r'ValueError: boom-b2')
    assert re.search(r'\bERROR\b', line_with(log, 'boom-b2'))


def test_setup_crash_logged_critical_and_worker_restarts(full):
    log = full.wait_log(r'setup-crash-once', timeout=10)
    record = record_after(log, 'setup-crash-once')
    first = record.split('\n', 1)[0]
    assert re.search(r'\bCRITICAL\b', first), first
    assert 'Traceback (most recent call last)' in record
    assert 'RuntimeError' in record
    # the worker comes back (its second setup() succeeds) and serves
    full.wait_until(lambda: full.get('/crash/whoami').status == 200,
                    timeout=15, what='CrashOnceWorker serving')
    # its exit was reported as an ERROR naming the worker
    log = full.log()
    assert any(re.search(r'\bERROR\b', line) and 'CrashOnceWorker' in line
               for line in log.split('\n')), log[-3000:]


def test_killed_worker_logged_as_error_with_reason(full):
    assert full.get('/victim/whoami').status == 200
    pid = worker_pid(full, 'VictimWorker')
    os.kill(pid, signal.SIGKILL)
    log = full.wait_log(rf'\bERROR\b[^\n]*(VictimWorker|\b{pid}\b)')
    line = next(line for line in log.split('\n')
                if re.search(r'\bERROR\b', line) and (
                    'VictimWorker' in line or str(pid) in line))
    assert re.search(r'died|killed|SIGKILL|signal', line), line
    new_pid = wait_new_pid(full, 'VictimWorker', pid)
    reply = full.wait_until(lambda: full.get('/victim/whoami'), what='victim')
    assert reply.status == 200 and reply.json['pid'] == new_pid


def test_request_timeout_logged_as_warning(full):
    started = time.monotonic()
    reply = full.get('/slow/sleep/1500')
    elapsed = time.monotonic() - started
    assert reply.status == 504
    assert elapsed < 1.4
    log = full.wait_log(r'sleep-start request_id=\d+')
    request_id = re.findall(r'sleep-start request_id=(\d+)', log)[-1]
    timed_out = rf'\bWARNING\b[^\n]*\brequest {request_id}\b[^\n]*timed out'
    log = full.wait_log(timed_out)
    line = next(line for line in log.split('\n') if re.search(timed_out, line))
    assert '0.5' in line, line


def _multi_expected(tag):
    lines = [f'{tag} line {i:02d} ' + 'x' * 150 for i in range(MULTI_LINES)]
    return lines + [f'multi-end {tag}']


def test_concurrent_multiline_records_stay_whole(full):
    paths = ([f'/info/multi/m{i}' for i in range(24)]
             + [f'/debug/multi/n{i}' for i in range(4)]
             + [f'/quiet/multi/q{i}' for i in range(4)])
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        replies = list(pool.map(full.get, paths))
    assert all(reply.status == 200 for reply in replies)
    assert len({reply.json['worker'] for reply in replies[:24]}) >= 2
    tags = [path.rsplit('/', 1)[1] for path in paths]
    full.wait_log(r'multi-end [mnq]\d+\n', count=len(tags))
    lines = full.log().split('\n')
    for tag in tags:
        starts = [i for i, line in enumerate(lines)
                  if line.endswith(f'multi-begin {tag}')]
        assert len(starts) == 1, (tag, starts)
        first = starts[0]
        assert re.search(r'\bWARNING\b', lines[first]), lines[first]
        block = lines[first + 1:first + 2 + MULTI_LINES]
        assert block == _multi_expected(tag), (tag, block[:3])
        assert sum(1 for line in lines if f'{tag} line ' in line) == MULTI_LINES


def test_records_of_processes_a_worker_forks_stay_whole(full):
    # the children write into the worker's pipe too: frames above PIPE_BUF
    # of several processes must not mix (a corrupt frame killed the worker)
    reply = full.get('/info/forked/f1', timeout=60)
    assert reply.status == 200, reply
    full.wait_log(r'forked f1 parent 29 p+\n', timeout=30)
    lines = full.log().split('\n')
    for who, filler in (('c0', 'z'), ('c1', 'z'), ('c2', 'z'),
                        ('parent', 'p')):
        found = [line for line in lines if f'forked f1 {who} ' in line]
        numbers = [int(line.split(f'forked f1 {who} ')[1].split()[0])
                   for line in found]
        assert numbers == list(range(30)), who
        assert all(line.endswith(' ' + filler * 100000) for line in found), who
    assert 'corrupt' not in full.log()


def test_a_forked_process_logs_on_quietly_after_its_worker_died(full,
                                                                tmp_path):
    # its records have nowhere to go then: dropped, no exception of the
    # library's own (a BaseException) thrown into the user's process
    result = tmp_path / 'outcome'
    reply = full.get(f'/victim/outlive/k1?result={result}')
    assert reply.status == 200, reply
    assert full.get('/victim/exit').status == 500
    wait_new_pid(full, 'VictimWorker', reply.json['pid'])
    full.wait_until(result.exists, timeout=20, what='the child finished')
    assert result.read_text() == 'ok'


def test_on_log_receives_worker_and_dispatcher_records(full):
    full.get('/info/emit/o1')
    full.get('/dlog/o1')
    assert full.get('/info/boom/o1').status == 500
    full.get('/info/multi/o1')
    full.wait_log(r'multi-end o1')
    full.wait_log(r'dispatcher-critical o1')
    full.wait_log(r'ValueError: boom-o1')
    records = read_records(full.records_path)

    def find(message):
        found = [r for r in records if r['message'] == message]
        assert found, (message, [r['message'][:60] for r in records][-30:])
        return found[0]

    info = find('emit-info o1')
    assert info['level'] == 20 and 'InfoWorker' in info['name']
    assert find('emit-warning o1 42')['level'] == 30
    assert find('emit-error o1 7')['level'] == 40
    assert find('emit-critical o1')['level'] == 50
    assert not [r for r in records if r['message'] == 'emit-debug o1']
    assert find('dispatcher-info o1')['level'] == 20
    assert find('dispatcher-warning o1')['level'] == 30
    dispatcher_name = find('dispatcher-info o1')['name']
    assert 'InfoWorker' not in dispatcher_name
    listening = [r for r in records if r['message'].startswith('listening on')]
    assert listening and listening[0]['level'] == 20
    assert listening[0]['name'] == dispatcher_name
    # a traceback is one record, not one call per line
    boom = [r for r in records if 'ValueError: boom-o1' in r['message']]
    assert len(boom) == 1
    assert boom[0]['level'] == 40
    assert 'Traceback (most recent call last)' in boom[0]['message']
    multi = [r for r in records if r['message'].startswith('multi-begin o1')]
    assert len(multi) == 1
    assert multi[0]['message'].split('\n')[1:] == _multi_expected('o1')
    # automatic records go through on_log as well
    assert any(r['level'] == 50 and 'setup-crash-once' in r['message']
               for r in records)


# -- output styles ------------------------------------------------------------------------

def _exercise_style_app(port):
    for path in ('/debug/emit/s1', '/dlog/s1', '/debug/boom/s1'):
        get_json(port, path)


def test_systemd_priority_prefixes():
    app = harness.AppServer('logging_app', ['style'])
    info = os.stat(app.log_path)
    app.env['JOURNAL_STREAM'] = f'{info.st_dev}:{info.st_ino}'
    try:
        app.start()
        _exercise_style_app(app.port)
        app.wait_log(r'emit-critical s1')
        app.wait_log(r'dispatcher-critical s1')
        log = app.wait_log(r'ValueError: boom-s1')
        for text, priority in (('emit-debug s1', 7), ('emit-info s1', 6),
                               ('emit-warning s1 42', 4),
                               ('emit-error s1 7', 3), ('emit-critical s1', 2),
                               ('dispatcher-debug s1', 7),
                               ('dispatcher-info s1', 6),
                               ('dispatcher-warning s1', 4),
                               ('dispatcher-error s1', 3),
                               ('dispatcher-critical s1', 2),
                               ('listening on', 6)):
            line = line_with(log, text)
            assert line.startswith(f'<{priority}>'), line
        assert '\x1b[' not in log
        # journald reads one entry per line: every line carries a priority,
        # the traceback's lines included
        for line in log.split('\n'):
            if line:
                assert re.match(r'<[0-7]>', line), line
        assert line_with(log, 'ValueError: boom-s1').startswith('<3>')
    finally:
        app.cleanup()


def test_journal_stream_of_another_file_means_plain():
    app = harness.AppServer('logging_app', ['style'],
                            env={'JOURNAL_STREAM': '1:1'})
    try:
        app.start()
        get_json(app.port, '/debug/emit/j1')
        log = app.wait_log(r'emit-critical j1')
        assert not re.search(r'^<\d>', log, re.M)
        assert '\x1b[' not in log
        assert 'emit-warning j1 42' in log
    finally:
        app.cleanup()


class PtyApp:
    """The app with stdout and stderr on a pseudo-terminal; a thread drains
    the master side so the app never blocks on a full terminal buffer."""

    def __init__(self, args, env=None):
        self.args = list(args)
        self.env = env or {}
        self.proc = None
        self.port = None
        self.master = None
        self._buffer = bytearray()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = None

    def start(self, timeout=15):
        master, slave = os.openpty()
        self.master = master
        env = dict(os.environ)
        env['PYTHONPATH'] = ROOT + os.pathsep + env.get('PYTHONPATH', '')
        env['PYTHONUNBUFFERED'] = '1'
        env.pop('JOURNAL_STREAM', None)
        env.update(self.env)
        try:
            self.proc = subprocess.Popen(
                [sys.executable, APP, *self.args], cwd=ROOT, env=env,
                stdin=subprocess.DEVNULL, stdout=slave, stderr=slave,
                start_new_session=True)
        finally:
            os.close(slave)
        self._thread = threading.Thread(target=self._drain, daemon=True)
        self._thread.start()
        found = self.wait_text(LISTENING.pattern, timeout)
        self.port = int(LISTENING.search(found).group(1))
        return self

    def _drain(self):
        while not self._stop.is_set():
            try:
                ready, _, _ = select.select([self.master], [], [], 0.1)
            except (OSError, ValueError):
                return
            if not ready:
                continue
            try:
                data = os.read(self.master, 65536)
            except OSError:
                return  # EIO: every writer closed the terminal
            if not data:
                return
            with self._lock:
                self._buffer.extend(data)

    def text(self):
        with self._lock:
            data = bytes(self._buffer)
        return data.decode('utf-8', errors='replace').replace('\r\n', '\n')

    def wait_text(self, pattern, timeout=10):
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            text = self.text()
            if regex.search(text):
                return text
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"terminal never showed {pattern!r}:\n{text[-3000:]!r}")
            if self.proc.poll() is not None and not regex.search(self.text()):
                raise AssertionError(
                    f"app exited ({self.proc.returncode}):\n{self.text()[-3000:]}")
            time.sleep(0.02)

    def cleanup(self):
        if self.proc is not None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self.master is not None:
            try:
                os.close(self.master)
            except OSError:
                pass
            self.master = None


BOLD_RED = r'(?:\x1b\[1;31m|\x1b\[31;1m|\x1b\[1m\x1b\[31m|\x1b\[31m\x1b\[1m)'


def test_terminal_gets_ansi_colours():
    app = PtyApp(['style'])
    try:
        app.start()
        for path in ('/debug/emit/t1', '/dlog/t1'):
            status, _ = get_json(app.port, path)
            assert status == 200
        app.wait_text(r'emit-critical t1')
        text = app.wait_text(r'dispatcher-critical t1')
        for source in ('emit', 'dispatcher'):
            error = 'emit-error t1 7' if source == 'emit' else 'dispatcher-error t1'
            warning = ('emit-warning t1 42' if source == 'emit'
                       else 'dispatcher-warning t1')
            assert re.search(r'\x1b\[31m[^\n]*' + re.escape(error), text), text
            assert re.search(re.escape(error) + r'[^\n]*\x1b\[0?m', text)
            assert re.search(r'\x1b\[33m[^\n]*' + re.escape(warning), text)
            assert re.search(BOLD_RED + r'[^\n]*' + re.escape(
                f'{source}-critical t1'), text)
            assert re.search(r'\x1b\[2m[^\n]*' + re.escape(
                f'{source}-debug t1'), text)
        # a warning is not painted red, an error not yellow
        assert '\x1b[31m' not in line_with(text, 'emit-warning t1 42')
        assert '\x1b[33m' not in line_with(text, 'emit-error t1 7')
        assert not re.search(r'^<\d>', text, re.M)
    finally:
        app.cleanup()


# -- the dispatcher's own level ------------------------------------------------------------

def test_dispatcher_log_level():
    app = harness.AppServer('logging_app', ['quiet'])
    try:
        app.start()
        assert get_json(app.port, '/dlog/q1')[0] == 200
        log = app.wait_log(r'dispatcher-critical q1')
        assert 'dispatcher-error q1' in log
        assert 'dispatcher-warning q1' not in log
        assert 'dispatcher-info q1' not in log
        assert 'dispatcher-debug q1' not in log
        # its own INFO start record is below the level too
        assert not re.search(r'\bINFO\b[^\n]*listening on', log)
    finally:
        app.cleanup()



def test_library_records_of_a_worker_with_its_own_self_log():
    # a worker that keeps a standard library logger of its own at self.log
    # (as much code does): the library's own records (a handler's
    # traceback, a result that cannot be sent) went to that logger, outside
    # the dispatcher, on_log() and assert_no_errors(); they reach the
    # dispatcher
    import logging
    import uhttp.workers as _workers
    from uhttp.workers.testing import TestServer

    class OwnLoggerWorker(_workers.Worker):
        def setup(self):
            self.log = logging.getLogger('own-logger-worker')

        @_workers.api('/fails', 'GET')
        def fails(self, request):
            raise ValueError('handler failed')

        @_workers.api('/unsendable', 'GET')
        def unsendable(self, request):
            return {1, 2}

    pool = _workers.WorkerPool(OwnLoggerWorker, num_workers=1)
    with TestServer(_workers.Dispatcher, [pool]) as server:
        assert server.get('/fails').status == 500
        assert server.get('/unsendable').status == 500
        deadline = time.monotonic() + 10
        while True:
            text = '\n'.join(record.message for record in list(server.logs)
                             if record.level >= _workers.LOG_ERROR)
            if 'handler failed' in text and 'cannot be sent' in text:
                break
            assert time.monotonic() < deadline, text
            time.sleep(0.02)


# -- a log output nobody reads ----------------------------------------------------

def _start_with_stderr_pipe():
    """logging_app 'style' with stderr a pipe: (proc, read end, port)."""
    read_fd, write_fd = os.pipe()
    env = dict(os.environ)
    env['PYTHONPATH'] = ROOT + os.pathsep + env.get('PYTHONPATH', '')
    env.pop('JOURNAL_STREAM', None)
    proc = subprocess.Popen(
        [sys.executable, APP, 'style'], cwd=ROOT, env=env,
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=write_fd,
        start_new_session=True)
    os.close(write_fd)
    seen = b''
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        ready, _, _ = select.select([read_fd], [], [], 0.2)
        if ready:
            seen += os.read(read_fd, 65536)
            found = LISTENING.search(seen.decode('utf-8', 'replace'))
            if found:
                return proc, read_fd, int(found.group(1))
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    os.close(read_fd)
    raise AssertionError(f"no 'listening on':\n{seen[-3000:]!r}")


def test_dispatcher_serves_while_nobody_reads_its_log_output():
    # the default on_log() wrote to stderr with a blocking write: once the
    # pipe was full the dispatcher stopped answering, and did not even stop
    # on SIGTERM
    proc, read_fd, port = _start_with_stderr_pipe()
    try:
        for i in range(40):  # ~200 KiB of records, above a pipe's 64 KiB
            assert get_json(port, f'/debug/multi/p{i}')[0] == 200
        for i in range(5):
            assert get_json(port, f'/dlog/p{i}')[0] == 200
            assert get_json(port, f'/debug/emit/p{i}')[0] == 200
        # read at last: what was queued meanwhile comes out, in order (or
        # a WARNING says how many records were dropped)
        chunks = []

        def read_all():
            while True:
                chunk = os.read(read_fd, 1 << 20)
                if not chunk:
                    return
                chunks.append(chunk)

        reader = threading.Thread(target=read_all, daemon=True)
        reader.start()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        reader.join(timeout=20)
        text = b''.join(chunks)
        text = text.decode('utf-8', 'replace')
        assert 'multi-begin p39' in text
        assert text.index('multi-end p0') < text.index('multi-begin p39') \
            < text.index('emit-critical p4') < text.index(': stopped')
        assert 'dropped' not in text  # 200 KiB is far from the queue's limit
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        os.close(read_fd)
