"""Dispatcher(use_logging=True) hands every record (dispatcher's and
workers') to the standard library's logging under uhttp.workers.<name>,
levels mapped, with pool, worker_id and pid as record attributes;
Dispatcher(log_format='json') prints one JSON object per line."""

import json
import time

import pytest


def wait_lines(read, predicate, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [line for line in read() if predicate(line)]
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError(f"no matching record in {read()!r}")


def test_records_reach_standard_logging(app_server, tmp_path):
    path = tmp_path / 'records.jsonl'
    server = app_server('log_integration', env={'LOG_MODE': 'logging',
                                                'LOG_FILE': str(path)})

    def records():
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines()]

    reply = server.get('/api/note/hello')
    assert reply.status == 200
    note = wait_lines(records, lambda r: r['message'] == 'note hello')[0]
    assert note['logger'].startswith('uhttp.workers.NoteWorker')
    assert note['levelno'] == 30
    assert note['pool'] == 'NoteWorker'
    assert note['worker_id'] == reply.json['worker']
    assert note['pid'] == reply.json['pid']
    own = wait_lines(records, lambda r: r['message'].startswith('listening on'))[0]
    assert own['logger'] == 'uhttp.workers.StatusDispatcher'
    assert own['levelno'] == 20 and own['pool'] is None
    assert own['pid'] == server.pid
    assert server.get('/api/boom').status == 500
    error = wait_lines(records, lambda r: 'kaboom' in r['message'])[0]
    assert error['levelno'] == 40


def test_json_lines_on_stderr(app_server):
    server = app_server('log_integration', env={'LOG_MODE': 'json'})
    assert server.get('/api/note/there').status == 200
    assert server.get('/api/boom').status == 500

    def lines():
        parsed = []
        for line in server.log().splitlines():
            if line.startswith('{'):
                parsed.append(json.loads(line))
        return parsed

    note = wait_lines(lines, lambda r: r['message'] == 'note there')[0]
    assert set(note) >= {'time', 'level', 'name', 'pid', 'message', 'traceback'}
    assert note['level'] == 'WARNING' and note['pool'] == 'NoteWorker'
    assert note['traceback'] is None
    boom = wait_lines(lines, lambda r: 'kaboom' in r['message'])[0]
    assert boom['level'] == 'ERROR'
    assert boom['traceback'].startswith('Traceback (most recent call last):')
    assert 'ValueError' in boom['traceback']
    # every line of the output is JSON: no line escapes the format
    text = [line for line in server.log().splitlines() if line.strip()]
    assert all(line.startswith('{') for line in text), text[:5]


@pytest.mark.parametrize('value', ['xml', 5])
def test_bad_log_format_is_refused(value):
    import uhttp.workers as workers
    with pytest.raises((TypeError, ValueError), match='log_format'):
        workers.Dispatcher(log_format=value)
