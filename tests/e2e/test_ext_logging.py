"""Dispatcher.log (through on_log, usable in __init__), the Dispatcher's
log_level, and LOG_NAME templates on workers and dispatchers."""
import re

import uhttp.workers as _workers

APP = 'ext_logging'


def line(level, name, message):
    """Regex for one rendered log line."""
    return (rf'(?m)^\S+ \S+ {level}\s+{re.escape(name)}: '
            rf'{re.escape(message)}$')


def pids(server):
    pools = server.get('/_status').json['pools']
    return {name: pool['workers'][0]['pid'] for name, pool in pools.items()}


def test_dispatcher_log_in_init_goes_through_on_log(app_server):
    server = app_server(APP)
    name = f'front-LogDispatcher-{server.pid}'
    text = server.wait_log(line('INFO', name, 'init log from __init__ before workers'))
    # written before the workers started and before listening
    assert text.index('init log from __init__') < text.index('listening on')
    records = server.get('/_captured').json['records']
    assert [name, _workers.LOG_INFO,
            'init log from __init__ before workers'] in records
    # worker records pass through the same on_log()
    worker = f"NamedWorker/NamedWorker#0@{pids(server)['NamedWorker']}"
    server.wait_until(
        lambda: [worker, _workers.LOG_INFO, 'named worker ready'] in server.get(
            '/_captured').json['records'], what='worker record in on_log')


def test_dispatcher_debug_hidden_by_default(app_server):
    server = app_server(APP)
    name = f'front-LogDispatcher-{server.pid}'
    assert server.get('/_log').json == {'logged': True}
    text = server.wait_log(line('INFO', name, 'info probe from sync'))
    assert 'debug probe' not in text
    assert not re.search(r'(?m)^\S+ \S+ DEBUG ', text)
    records = server.get('/_captured').json['records']
    assert not [record for record in records if 'debug probe' in record[2]]


def test_dispatcher_debug_shown_with_log_debug(app_server):
    server = app_server(APP, env={'EXT_LOG_LEVEL': 'debug'})
    name = f'front-LogDispatcher-{server.pid}'
    server.wait_log(line('DEBUG', name, 'debug probe from __init__'))
    assert server.get('/_log').json == {'logged': True}
    server.wait_log(line('DEBUG', name, 'debug probe from sync'))
    server.wait_log(line('INFO', name, 'info probe from sync'))


def test_worker_log_name_template(app_server):
    server = app_server(APP)
    pid = pids(server)['NamedWorker']
    name = f'NamedWorker/NamedWorker#0@{pid}'
    server.wait_log(line('INFO', name, 'named worker ready'))
    reply = server.get('/n/log')
    assert reply.json == {'pid': pid, 'worker_id': 0}
    server.wait_log(line('INFO', name, 'named handler for /n/log'))


def test_worker_default_log_name(app_server):
    server = app_server(APP)
    server.wait_log(line('INFO', 'DefaultWorker[0]', 'default worker ready'))


def test_worker_invalid_log_name_falls_back(app_server):
    server = app_server(APP)
    text = server.wait_log(line('INFO', 'BadNameWorker[0]', 'badname worker ready'))
    assert re.search(r'(?m)^\S+ \S+ WARNING\s+BadNameWorker\[0\]: .*LOG_NAME', text)
    assert server.get('/b/log').status == 200
    text = server.wait_log(line('INFO', 'BadNameWorker[0]', 'badname handler'))
    assert '{missing}' not in ''.join(
        found.group(1) for found in re.finditer(r'(?m)^\S+ \S+ \w+\s+([^:]+):', text))


def test_dispatcher_invalid_log_name_falls_back(app_server):
    server = app_server(APP, env={'EXT_DISP_LOG_NAME': '{bogus}'})
    text = server.wait_log(line('INFO', 'LogDispatcher',
                                'init log from __init__ before workers'))
    assert re.search(r'(?m)^\S+ \S+ WARNING\s+LogDispatcher: .*LOG_NAME', text)
    assert re.search(r'(?m)^\S+ \S+ INFO\s+LogDispatcher: listening on', text)
    assert '{bogus}:' not in text
