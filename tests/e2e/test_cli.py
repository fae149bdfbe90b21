"""The command line, as a user runs it: `python -m uhttp.workers
module:attribute` from the project's directory, with flags and a TOML
config file; exit codes, --check-config, --print-config, --pid-file."""

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time

import pytest

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib

from harness import ROOT, exchange

APP = textwrap.dedent('''
    import os
    import uhttp.workers as _workers


    class ItemWorker(_workers.Worker):
        def setup(self):
            self.items = {}

        @_workers.api('/api/pid', 'GET')
        def pid(self, request):
            return {'pid': os.getpid(), 'kwargs': self.kwargs}


    class App(_workers.Dispatcher):
        def __init__(self, **kwargs):
            super().__init__(pools=[_workers.WorkerPool(
                ItemWorker, num_workers=1, routes=['/api/**'])], **kwargs)

        @_workers.sync('/status')
        def status(self, client, path_params):
            client.respond(_workers.Dispatcher.status(self))


    dispatcher = App(port=9)

    def make():
        return App(port=9, max_pending=77)

    not_a_dispatcher = 42
''')


@pytest.fixture
def project(tmp_path):
    (tmp_path / 'myapp.py').write_text(APP)
    (tmp_path / 'broken.py').write_text('import nothing_by_this_name\n')
    return tmp_path


def env():
    environ = dict(os.environ)
    inherited = [os.path.abspath(entry) for entry in
                 environ.get('PYTHONPATH', '').split(os.pathsep) if entry]
    environ['PYTHONPATH'] = os.pathsep.join([ROOT] + inherited)
    environ['PYTHONUNBUFFERED'] = '1'
    environ.pop('JOURNAL_STREAM', None)
    return environ


def run(project, *args, timeout=30):
    return subprocess.run(
        [sys.executable, '-m', 'uhttp.workers', *args], cwd=project, env=env(),
        stdin=subprocess.DEVNULL, capture_output=True, text=True,
        timeout=timeout)


class Running:
    """A dispatcher started from the command line, killed by pid."""

    def __init__(self, project, *args, extra_env=None, log='out.log',
                 python=sys.executable):
        self.log_path = project / log
        self.log_file = open(self.log_path, 'wb')
        self.proc = subprocess.Popen(
            [str(python), '-m', 'uhttp.workers', *args], cwd=project,
            env={**env(), **(extra_env or {})}, stdin=subprocess.DEVNULL, stdout=self.log_file,
            stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            found = re.search(r'listening on http://[^:]+:(\d+)', self.log())
            if found:
                self.port = int(found.group(1))
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        self.close()
        raise AssertionError(f"did not start:\n{self.log()}")

    def log(self):
        return self.log_path.read_text(errors='replace')

    def reload(self, config, text, logged, timeout=10):
        """Write `text` to `config`, SIGHUP, and wait until the log says
        `logged`; what the log says after it."""
        config.write_text(text)
        self.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + timeout
        while logged not in self.log():
            assert time.monotonic() < deadline, self.log()
            time.sleep(0.05)
        return self.log().split(logged, 1)[1]

    def get(self, path):
        raw = exchange(self.port, f'GET {path} HTTP/1.1\r\nHost: x\r\n'
                       'Connection: close\r\n\r\n'.encode())
        head, _, body = raw.partition(b'\r\n\r\n')
        return int(head.split()[1]), json.loads(body)

    def close(self):
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.proc.wait(timeout=10)
        self.log_file.close()


def wait_ready(server, count):
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        status, body = server.get('/status')
        workers = body['pools'][0]['workers']
        if len(workers) == count and all(w['ready'] for w in workers):
            return body
        time.sleep(0.05)
    raise AssertionError(f"workers not ready: {body}")


def test_runs_a_subclass_with_flags_and_stops_cleanly(project):
    pid_file = project / 'app.pid'
    server = Running(project, 'myapp:App', '--host', '127.0.0.1', '--port',
                     '0', '--workers', 'ItemWorker=3', '--pid-file',
                     str(pid_file))
    try:
        wait_ready(server, 3)
        assert pid_file.read_text().strip() == str(server.proc.pid)
        status, body = server.get('/api/pid')
        assert status == 200
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(timeout=20) == 0
        assert not pid_file.exists()
    finally:
        server.close()


def test_a_second_copy_that_cannot_listen_leaves_the_pid_file(project):
    pid_file = project / 'app.pid'
    server = Running(project, 'myapp:App', '--host', '127.0.0.1', '--port',
                     '0', '--pid-file', str(pid_file))
    try:
        wait_ready(server, 1)
        assert pid_file.read_text().strip() == str(server.proc.pid)
        second = subprocess.run(
            [sys.executable, '-m', 'uhttp.workers', 'myapp:App', '--host',
             '127.0.0.1', '--port', str(server.port), '--pid-file',
             str(pid_file)], cwd=project, env=env(), capture_output=True,
            timeout=30, check=False)
        assert second.returncode == 1, second.stderr
        assert b'in use' in second.stderr
        assert pid_file.read_text().strip() == str(server.proc.pid)
    finally:
        server.close()


def test_a_pid_file_that_cannot_be_written_is_refused_at_start(project):
    result = subprocess.run(
        [sys.executable, '-m', 'uhttp.workers', 'myapp:App', '--port', '0',
         '--pid-file', str(project / 'missing' / 'app.pid')], cwd=project,
        env=env(), capture_output=True, timeout=30, check=False)
    assert result.returncode == 1
    assert b'cannot write --pid-file' in result.stderr
    assert b'no directory' in result.stderr


@pytest.mark.parametrize('target', ['myapp:dispatcher', 'myapp:make'])
def test_instance_and_factory_take_command_line_settings(project, target):
    config = project / 'app.toml'
    config.write_text(textwrap.dedent('''
        [dispatcher]
        host = "127.0.0.1"
        port = 1
        max_pending = 55

        [pools.ItemWorker]
        num_workers = 2
        [pools.ItemWorker.kwargs]
        db = "reader"
    '''))
    # the command line's port wins over the file's, which wins over the app's
    server = Running(project, target, '--config', str(config), '--port', '0')
    try:
        body = wait_ready(server, 2)
        assert body['pools'][0]['name'] == 'ItemWorker'
        status, reply = server.get('/api/pid')
        assert reply['kwargs'] == {'db': 'reader'}
    finally:
        server.close()


def test_print_config_shows_the_effective_settings(project):
    config = project / 'app.toml'
    config.write_text('[dispatcher]\nmax_pending = 55\nlog_level = "warning"\n'
                      '[pools.ItemWorker]\ntimeout = 12.5\n')
    result = run(project, 'myapp:App', '--config', str(config), '--port',
                 '8181', '--workers', 'ItemWorker=4', '--print-config')
    assert result.returncode == 0, result.stderr
    printed = tomllib.loads(result.stdout)
    assert printed['dispatcher']['port'] == 8181
    assert printed['dispatcher']['max_pending'] == 55
    assert printed['dispatcher']['log_level'] == 30
    assert printed['pools']['ItemWorker']['num_workers'] == 4
    assert printed['pools']['ItemWorker']['timeout'] == 12.5
    # unlimited requests per connection, the default: no internal number
    assert 'keep_alive_max_requests' not in printed['dispatcher']
    assert '# keep_alive_max_requests is not set' in result.stdout
    assert str(1 << 62) not in result.stdout
    # every HTTP option of the configuration reference, default or not
    assert printed['dispatcher']['file_chunk_size'] == 4096
    assert '# trusted_proxies is not set' in result.stdout


def test_print_config_gives_every_setting_back_to_config(project):
    (project / 'static').mkdir()
    config = project / 'app.toml'
    config.write_text(textwrap.dedent('''
        [dispatcher]
        metrics_path = "/metrics"
        dashboard_path = "/_dashboard"
        log_format = "json"
        use_logging = true
        ws_ping_interval = 5
        ws_origins = ["https://example.com"]
        static_routes = { "/static/" = { path = "./static", headers = { "Cache-Control" = "max-age=60" }, authoritative = true } }
    '''))
    result = run(project, 'myapp:App', '--config', str(config),
                 '--access-log', '--print-config')
    assert result.returncode == 0, result.stderr
    printed = tomllib.loads(result.stdout)['dispatcher']
    assert printed['metrics_path'] == '/metrics'
    assert printed['dashboard_path'] == '/_dashboard'
    assert printed['access_log'] is True
    assert printed['log_format'] == 'json' and printed['use_logging'] is True
    assert printed['ws_ping_interval'] == 5
    assert printed['ws_origins'] == ['https://example.com']
    assert printed['static_routes'] == {'/static/': {
        'path': str((project / 'static').resolve()),
        'headers': {'Cache-Control': 'max-age=60'}, 'authoritative': True}}
    assert_reads_back(project, result.stdout)


def assert_reads_back(project, printed):
    """What --print-config printed is a config file that prints the same."""
    again = project / 'printed.toml'
    again.write_text(printed)
    second = run(project, 'myapp:App', '--config', str(again),
                 '--print-config')
    assert second.returncode == 0, second.stderr
    assert second.stdout == printed


def test_print_config_escapes_control_characters(project):
    # a worker kwarg with a carriage return or another control character
    # was printed raw inside its quotes, which is not TOML: the printed
    # configuration could not be read back
    config = project / 'app.toml'
    config.write_text('[pools.ItemWorker.kwargs]\n'
                      'banner = "one\\r\\ntwo\\u0001\\u007f\\b\\f\\t\\"\\\\"\n')
    result = run(project, 'myapp:App', '--config', str(config),
                 '--print-config')
    assert result.returncode == 0, result.stderr
    printed = tomllib.loads(result.stdout)
    assert printed['pools']['ItemWorker']['kwargs'] == {
        'banner': 'one\r\ntwo\x01\x7f\b\f\t"\\'}
    assert_reads_back(project, result.stdout)


CODE_VALUES_APP = textwrap.dedent('''
    import pathlib
    import uhttp.workers as _workers
    from myapp import ItemWorker


    class Model:
        pass


    def make():
        return _workers.Dispatcher(
            port=0, trusted_proxies={'127.0.0.1', '10.0.0.1'},
            spool_dir=pathlib.Path('.').resolve(),
            pools=[_workers.WorkerPool(ItemWorker, routes=['/api/**'],
                                       model=Model(), tags={'b', 'a'},
                                       big=2 ** 70, by_id={1: 'x'})])
''')


def test_print_config_of_values_set_in_code_reads_back(project):
    # a set was printed as its str() ("{'127.0.0.1'}"), which the file
    # then refused; an object given in code became a string
    (project / 'codeapp.py').write_text(CODE_VALUES_APP)
    result = run(project, 'codeapp:make', '--print-config')
    assert result.returncode == 0, result.stderr
    printed = tomllib.loads(result.stdout)
    assert printed['dispatcher']['trusted_proxies'] == ['10.0.0.1',
                                                        '127.0.0.1']
    assert printed['dispatcher']['spool_dir'] == str(project.resolve())
    kwargs = printed['pools']['ItemWorker'].get('kwargs', {})
    assert kwargs.get('tags') == ['a', 'b'] and 'model' not in kwargs
    assert 'big' not in kwargs and 'by_id' not in kwargs   # (64-bit ints,
    assert '# big = 1180591620717411303424' in result.stdout  # str keys)
    assert "# by_id = {1: 'x'}" in result.stdout
    assert '# model = <codeapp.Model object at' in result.stdout
    assert '(set in code; no TOML form)' in result.stdout
    again = project / 'printed.toml'
    again.write_text(result.stdout)
    checked = run(project, 'myapp:App', '--config', str(again),
                  '--check-config')
    assert checked.returncode == 0, checked.stderr


def test_check_config_lists_flag_file_and_pool_mistakes_together(project):
    config = project / 'app.toml'
    config.write_text('[pools.ItemWorker]\ntimeout = -1\n')
    result = run(project, 'myapp:App', '--config', str(config), '--port',
                 '70000', '--workers', 'Nobody=2', '--check-config')
    assert result.returncode == 1
    text = result.stderr
    for needle in ('[pools.ItemWorker] timeout', '--port: Dispatcher port',
                   "no pool named 'Nobody'"):
        assert needle in text, (needle, text)


def test_numbers_in_other_scripts_are_a_usage_problem_not_a_traceback(project):
    # '²'.isdigit() is True and int('²') raised out of main()
    result = run(project, 'myapp:App', '--workers', 'ItemWorker=\u00b2',
                 '--log-level', '\u00b2', '--check-config')
    assert result.returncode == 1, result.stderr
    assert 'Traceback' not in result.stderr, result.stderr
    assert "--workers 'ItemWorker=\u00b2': expected POOL=N" in result.stderr
    assert "--log-level: unknown log level '\u00b2'" in result.stderr


BROKER_APP = """
import uhttp.workers as _workers

class JobWorker(_workers.Worker):
    @_workers.api('/api/job', 'GET')
    def job(self, request):
        return {}

class LocalWorker(_workers.Worker):
    @_workers.api('/api/local', 'GET')
    def local(self, request):
        return {}

def make():
    return _workers.Dispatcher(port=0, pools=[
        _workers.WorkerPool(JobWorker, routes=['/api/job'], num_workers=0,
                            broker='redis://127.0.0.1:1/0'),
        _workers.WorkerPool(LocalWorker, routes=['/api/local'])])
"""


def test_a_broker_pool_may_have_no_local_worker_in_the_file(project):
    # --print-config wrote num_workers = 0 for a pool with a broker (as
    # the README allows), and the file was then refused: "must be >= 1"
    pytest.importorskip('redis')
    (project / 'brokerapp.py').write_text(BROKER_APP)
    printed = run(project, 'brokerapp:make', '--print-config')
    assert printed.returncode == 0, printed.stderr
    assert 'num_workers = 0' in printed.stdout
    config = project / 'printed.toml'
    config.write_text(printed.stdout)
    again = run(project, 'brokerapp:make', '--config', str(config),
                '--check-config')
    assert again.returncode == 0, again.stderr
    # a local pool still needs a worker, from the file or a flag
    config.write_text('[pools.LocalWorker]\nnum_workers = 0\n')
    refused = run(project, 'brokerapp:make', '--config', str(config),
                  '--check-config')
    assert refused.returncode == 1
    assert 'LocalWorker' in refused.stderr and 'num_workers' in refused.stderr
    assert run(project, 'brokerapp:make', '--workers', 'JobWorker=0',
               '--check-config').returncode == 0


def test_check_config_good(project):
    config = project / 'app.toml'
    config.write_text('[dispatcher]\nport = 8080\n')
    result = run(project, 'myapp:App', '--config', str(config),
                 '--check-config')
    assert result.returncode == 0, result.stderr
    assert 'configuration OK' in result.stderr


def test_check_config_lists_every_mistake(project):
    config = project / 'app.toml'
    config.write_text(textwrap.dedent('''
        [dispatcher]
        port = "eighty"
        prot = 1
        max_pending = 0

        [pools.ItemWorker]
        num_workers = 0
        colour = "blue"

        [pools.Nobody]
        timeout = 3

        [extra]
        x = 1
    '''))
    result = run(project, 'myapp:App', '--config', str(config),
                 '--check-config')
    assert result.returncode == 1
    text = result.stderr
    for needle in ('[dispatcher] port', '[dispatcher] prot',
                   '[dispatcher] max_pending', '[pools.ItemWorker] num_workers',
                   '[pools.ItemWorker] colour', '[extra]'):
        assert needle in text, (needle, text)


@pytest.mark.parametrize('name', ['worker_id', 'pool_name'])
def test_a_reserved_worker_kwarg_in_the_file_is_refused(project, name):
    # WorkerPool refuses these two (the pool sets them); from the file they
    # passed --check-config and every worker then died in its constructor
    config = project / 'app.toml'
    config.write_text(f'[pools.ItemWorker.kwargs]\n{name} = "x"\n')
    for extra in (['--check-config'], ['--host', '127.0.0.1', '--port', '0']):
        result = run(project, 'myapp:App', '--config', str(config), *extra)
        assert result.returncode == 1, result.stderr
        assert f'[pools.ItemWorker] kwargs.{name}: reserved' in result.stderr


def test_an_unknown_pool_is_named_with_where_it_was_named(project):
    # the message did not say which file or flag named the pool, and an
    # empty table for a misspelt pool was taken without a word
    config = project / 'app.toml'
    config.write_text('[pools.ItemWorkr]\n\n[pools.Nobody]\ntimeout = 3\n')
    result = run(project, 'myapp:App', '--config', str(config), '--workers',
                 'Elsewhere=2', '--check-config')
    assert result.returncode == 1
    text = result.stderr
    for needle in (f"{config}: [pools.ItemWorkr]: no pool named 'ItemWorkr'",
                   f"{config}: [pools.Nobody]: no pool named 'Nobody'",
                   "--workers 'Elsewhere=2': no pool named 'Elsewhere'"):
        assert needle in text, (needle, text)


def test_unknown_pool_is_a_configuration_error(project):
    result = run(project, 'myapp:App', '--workers', 'Nobody=2',
                 '--check-config')
    assert result.returncode == 1
    assert "no pool named 'Nobody'" in result.stderr


def test_bad_toml_is_a_configuration_error(project):
    config = project / 'app.toml'
    config.write_text('[dispatcher\nport = 1\n')
    result = run(project, 'myapp:App', '--config', str(config))
    assert result.returncode == 1
    assert 'not valid TOML' in result.stderr


@pytest.mark.parametrize('target,needle', [
    ('nomodule:App', "cannot import module 'nomodule'"),
    ('broken:App', 'nothing_by_this_name'),
    ('myapp:Missing', "has no attribute 'Missing'"),
    ('myapp:not_a_dispatcher', 'myapp:not_a_dispatcher: 42 is not a Dispatcher'),
    ('myapp', 'module:attribute'),
])
def test_target_problems_exit_3(project, target, needle):
    result = run(project, target, '--check-config')
    assert result.returncode == 3, result.stderr
    assert needle in result.stderr


@pytest.mark.parametrize('args', [[], ['myapp:App', '--port', 'x'],
                                  ['myapp:App', '--bogus']])
def test_usage_errors_exit_2(project, args):
    result = run(project, *args)
    assert result.returncode == 2
    assert 'usage' in result.stderr


def test_version(project):
    result = run(project, '--version')
    assert result.returncode == 0
    assert re.match(r'uhttp-workers \d+\.\d+', result.stdout)


def test_help_names_the_worker_command(project):
    # `uhttp-workers worker ...` (remote pools) was found only in the README
    result = run(project, '--help')
    assert result.returncode == 0
    assert 'uhttp-workers worker module:WorkerClass --broker URL' in (
        ' '.join(result.stdout.split())), result.stdout


def test_port_in_use_is_reported(project):
    import socket
    blocker = socket.socket()
    blocker.bind(('127.0.0.1', 0))
    blocker.listen()
    try:
        port = blocker.getsockname()[1]
        result = run(project, 'myapp:App', '--host', '127.0.0.1', '--port',
                     str(port))
        assert result.returncode == 1
        assert 'cannot listen' in result.stderr
    finally:
        blocker.close()


def test_sighup_rereads_the_config_file(project):
    config = project / 'app.toml'
    config.write_text('[pools.ItemWorker]\nnum_workers = 1\n')
    server = Running(project, 'myapp:App', '--config', str(config), '--host',
                     '127.0.0.1', '--port', '0')
    try:
        first = wait_ready(server, 1)['pools'][0]['workers'][0]['pid']
        config.write_text('[pools.ItemWorker]\nnum_workers = 2\n'
                          '[pools.ItemWorker.kwargs]\nregion = "north"\n')
        server.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 20
        while True:
            status, body = server.get('/status')
            workers = body['pools'][0]['workers']
            if (len(workers) == 2 and all(w['ready'] and not w['retiring']
                                          for w in workers)
                    and first not in {w['pid'] for w in workers}):
                break
            assert time.monotonic() < deadline, body
            time.sleep(0.05)
        assert server.get('/api/pid')[1]['kwargs'] == {'region': 'north'}
        # a file with mistakes is refused; the running configuration stays
        refusal = server.reload(config, '[pools.ItemWorker]\nnum_workers = 0\n',
                                'reload refused')
        assert 'num_workers' in refusal
        status, body = server.get('/status')
        assert len(body['pools'][0]['workers']) == 2
    finally:
        server.close()


def app_with_config(project, module, source, text):
    """(a Running server of `module`:dispatcher, written from `source`,
    with a config file holding `text`; that file)."""
    (project / f'{module}.py').write_text(source)
    config = project / f'{module}.toml'
    config.write_text(text)
    return Running(project, f'{module}:dispatcher', '--config', str(config),
                   '--host', '127.0.0.1', '--port', '0'), config


TWO_POOLS = textwrap.dedent('''
    import uhttp.workers as _workers
    from myapp import ItemWorker


    class OtherWorker(_workers.Worker):
        @_workers.api('/other', 'GET')
        def other(self, request):
            return {}


    class App(_workers.Dispatcher):
        @_workers.sync('/settings')
        def settings(self, client, path_params):
            client.respond({'log_level': self.log.level, **{
                pool.name: pool.settings() for pool in self._pools}})


    dispatcher = App(port=9, pools=[
        _workers.WorkerPool(ItemWorker, routes=['/api/**']),
        _workers.WorkerPool(OtherWorker, routes=['/other'])])
''')


def test_a_refused_reload_changes_no_pool_and_no_log_level(project):
    # a mistake found in a later pool (stuck_timeout not above the
    # heartbeat_interval) used to be found after the earlier pools and the
    # log level had taken the new values, though the ERROR says the running
    # configuration stays
    server, config = app_with_config(project, 'twopools', TWO_POOLS,
                                     '[pools.ItemWorker]\ntimeout = 30\n')
    try:
        before = server.get('/settings')[1]
        refusal = server.reload(config, '[dispatcher]\nlog_level = "debug"\n'
                                '[pools.ItemWorker]\ntimeout = 5\n'
                                '[pools.OtherWorker]\nstuck_timeout = 0.5\n',
                                'reload refused')
        assert '[pools.OtherWorker]' in refusal and 'stuck_timeout' in refusal
        after = server.get('/settings')[1]
        assert after == before
        assert after['ItemWorker']['timeout'] == 30
    finally:
        server.close()


SLOW_SETUP = textwrap.dedent('''
    import time
    import uhttp.workers as _workers


    class SlowWorker(_workers.Worker):
        def setup(self):
            for _ in range(15):
                time.sleep(0.1)
                self.keep_alive()

        @_workers.api('/api/slow', 'GET')
        def slow(self, request):
            return {}


    dispatcher = _workers.Dispatcher(port=9, pools=[
        _workers.WorkerPool(SlowWorker, num_workers=2, routes=['/api/**'])])
''')


def test_a_reload_to_a_shorter_stuck_timeout_spares_the_old_workers(project):
    # the workers still to be replaced beat at the old heartbeat_interval
    # (1 s); judged by the new stuck_timeout (0.5 s) while a replacement
    # starts, they were killed as stuck
    server, config = app_with_config(project, 'slowsetup', SLOW_SETUP,
                                     '[pools.SlowWorker]\nnum_workers = 2\n')
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if server.get('/api/slow')[0] == 200:
                    break
            except (OSError, ValueError):
                pass
            assert time.monotonic() < deadline, server.log()
            time.sleep(0.05)
        server.reload(config, '[pools.SlowWorker]\nnum_workers = 2\n'
                      'heartbeat_interval = 0.1\nstuck_timeout = 0.5\n',
                      'reload finished', timeout=30)
        assert 'stuck' not in server.log(), server.log()
        assert server.get('/api/slow')[0] == 200
    finally:
        server.close()


def test_access_log_flag(project):
    server = Running(project, 'myapp:App', '--host', '127.0.0.1', '--port', '0',
                     '--access-log')
    try:
        wait_ready(server, 1)
        assert server.get('/api/pid')[0] == 200
        deadline = time.monotonic() + 10
        while not re.search(r'access: 127\.0\.0\.1 .*"GET /api/pid" 200 ',
                            server.log()):
            assert time.monotonic() < deadline, server.log()
            time.sleep(0.05)
    finally:
        server.close()


def test_spool_flags_and_config_keys(project, tmp_path):
    spool_dir = tmp_path / 'spool'
    spool_dir.mkdir()
    result = run(project, 'myapp:App', '--print-config', '--spool-dir',
                 str(spool_dir), '--spool-threshold', '0')
    assert result.returncode == 0, result.stderr
    printed = tomllib.loads(result.stdout)['dispatcher']
    assert printed['spool_dir'] == str(spool_dir)
    assert printed['spool_threshold'] == 0
    config = tmp_path / 'spool.toml'
    config.write_text(f'[dispatcher]\nspool_threshold = 1048576\n'
                      f'spool_dir = "{spool_dir}"\n')
    result = run(project, 'myapp:App', '--print-config', '--config',
                 str(config))
    assert result.returncode == 0, result.stderr
    printed = tomllib.loads(result.stdout)['dispatcher']
    assert printed['spool_threshold'] == 1048576
    result = run(project, 'myapp:App', '--check-config', '--spool-dir',
                 str(tmp_path / 'missing'), '--spool-threshold', '-1')
    assert result.returncode == 1
    assert '--spool-dir' in result.stderr + result.stdout
    assert '--spool-threshold' in result.stderr + result.stdout


def test_a_low_open_file_limit_is_warned_about_with_what_is_needed(project):
    import resource

    def low_limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (600, 600))

    log_path = project / 'fd.log'
    with open(log_path, 'wb') as log_file:
        proc = subprocess.Popen(
            [sys.executable, '-m', 'uhttp.workers', 'myapp:App', '--host',
             '127.0.0.1', '--port', '0'], cwd=project, env=env(),
            stdin=subprocess.DEVNULL, stdout=log_file,
            stderr=subprocess.STDOUT, start_new_session=True,
            preexec_fn=low_limit)
        try:
            deadline = time.monotonic() + 15
            while 'listening on' not in log_path.read_text(errors='replace'):
                assert proc.poll() is None and time.monotonic() < deadline, (
                    log_path.read_text(errors='replace'))
                time.sleep(0.05)
        finally:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    found = re.search(r'open file limit is (\d+), below the (\d+) descriptors '
                      r'that (\d+) connections', log_path.read_text())
    assert found, log_path.read_text()
    limit, need, connections = map(int, found.groups())
    assert limit == 600 and need > connections >= 10000 > limit
    # 10 x max_pending by default: that is the setting to lower
    assert 'or lower max_pending' in log_path.read_text()


CHDIR_APP = textwrap.dedent('''
    import os
    import uhttp.workers as _workers
    from myapp import ItemWorker


    class App(_workers.Dispatcher):
        def __init__(self, **kwargs):
            os.chdir('www')   # the app works from a directory of its own
            super().__init__(pools=[_workers.WorkerPool(
                ItemWorker, num_workers=1, routes=['/api/**'])], **kwargs)

        @_workers.sync('/status')
        def status(self, client, path_params):
            client.respond(_workers.Dispatcher.status(self))
''')


def test_relative_paths_hold_for_an_app_that_changes_directory(project):
    """--config and --pid-file name files of the directory it started in,
    for the pid file, a reload and a hot upgrade's new copy alike."""
    (project / 'chdirapp.py').write_text(CHDIR_APP)
    (project / 'www').mkdir()
    (project / 'app.toml').write_text('[pools.ItemWorker]\nnum_workers = 1\n')
    pid_file = project / 'app.pid'
    server = Running(project, 'chdirapp:App', '--config', 'app.toml',
                     '--pid-file', 'app.pid', '--host', '127.0.0.1',
                     '--port', '0')
    try:
        wait_ready(server, 1)
        deadline = time.monotonic() + 10
        while not pid_file.exists():
            assert time.monotonic() < deadline, server.log()
            time.sleep(0.05)
        assert pid_file.read_text().strip() == str(server.proc.pid)
        server.reload(project / 'app.toml',
                      '[pools.ItemWorker]\nnum_workers = 2\n',
                      'reload finished')
        assert 'reload refused' not in server.log()
        wait_ready(server, 2)
        server.proc.send_signal(signal.SIGUSR2)
        assert server.proc.wait(timeout=30) == 0, server.log()
        assert 'hot upgrade failed' not in server.log(), server.log()
        new_pid = int(pid_file.read_text().strip())
        assert new_pid != server.proc.pid
        assert wait_ready(server, 2)
    finally:
        try:
            os.kill(int(pid_file.read_text().strip()), signal.SIGKILL)
        except (OSError, ValueError):
            pass
        server.close()


def test_directories_a_file_or_flag_names_hold_for_an_app_that_changes_directory(
        project):
    """static_routes roots and --spool-dir are of the starting directory
    too, as the README says; they were resolved after the app's chdir."""
    (project / 'chdirapp.py').write_text(CHDIR_APP)
    (project / 'www').mkdir()
    (project / 'static').mkdir()
    (project / 'static' / 'a.txt').write_text('from the start directory')
    (project / 'spool').mkdir()
    (project / 'app.toml').write_text(
        '[dispatcher]\nstatic_routes = { "/static/" = "./static", '
        '"/files/" = { path = "static", authoritative = true } }\n')
    printed = run(project, 'chdirapp:App', '--config', 'app.toml',
                  '--spool-dir', 'spool', '--print-config')
    assert printed.returncode == 0, printed.stderr
    assert f'spool_dir = "{project / "spool"}"' in printed.stdout
    assert f'"/static/" = "{project / "static"}"' in printed.stdout
    server = Running(project, 'chdirapp:App', '--config', 'app.toml',
                     '--spool-dir', 'spool', '--host', '127.0.0.1',
                     '--port', '0')
    try:
        for prefix in ('/static/', '/files/'):
            raw = exchange(server.port, f'GET {prefix}a.txt HTTP/1.1\r\n'
                           'Host: x\r\nConnection: close\r\n\r\n'.encode())
            assert raw.startswith(b'HTTP/1.1 200'), raw[:200]
            assert raw.endswith(b'from the start directory')
    finally:
        server.close()


def test_check_config_refuses_a_pid_file_the_start_would_refuse(project):
    # --check-config said OK, then the real start exited 1 over it
    missing = project / 'missing' / 'app.pid'
    result = run(project, 'myapp:App', '--pid-file', str(missing),
                 '--check-config')
    assert result.returncode == 1, result.stderr
    assert f'--pid-file {missing}: no directory' in result.stderr
    assert 'configuration OK' not in result.stderr
    assert not missing.parent.exists()
    good = run(project, 'myapp:App', '--pid-file', 'app.pid', '--check-config')
    assert good.returncode == 0, good.stderr
    assert not (project / 'app.pid').exists()


def test_an_import_error_names_the_line_of_the_app_that_raised(project):
    # the error alone ("NameError: name 'undefined_name' is not defined")
    # left the user searching every module the app imports
    (project / 'helper.py').write_text('x = 1\n\n\ndef f():\n'
                                       '    return undefined_name\n\n\nf()\n')
    (project / 'lines.py').write_text('import helper\n')
    result = run(project, 'lines:App')
    assert result.returncode == 3, result.stderr
    assert ("cannot import module 'lines': NameError: name 'undefined_name' "
            f"is not defined ({project / 'helper.py'}, line 5)") in result.stderr
    missing = run(project, 'nomodule:App')
    assert missing.returncode == 3
    assert missing.stderr.strip().endswith("No module named 'nomodule'"), (
        missing.stderr)


def test_host_and_address_both_in_the_file_is_a_mistake(project):
    # one of them was silently dropped: the server listened where the
    # other one said
    config = project / 'app.toml'
    config.write_text('[dispatcher]\nhost = "127.0.0.1"\n'
                      'address = "0.0.0.0"\n')
    result = run(project, 'myapp:App', '--config', str(config),
                 '--check-config')
    assert result.returncode == 1, result.stderr
    assert 'host and address name the same setting' in result.stderr


@pytest.mark.parametrize('content, needle', [
    (b'[dispatcher]\nport = 8080  # caf\xe9\n',
     'not valid TOML: line 2 is not UTF-8 text (byte 0xe9)'),
    (b'\xef\xbb\xbf[dispatcher]\nport = 8080\n',
     'not valid TOML: it begins with a byte order mark'),
])
def test_a_config_file_that_is_not_utf8_is_a_configuration_error(
        project, content, needle):
    # a Latin-1 comment ended in a UnicodeDecodeError traceback
    config = project / 'app.toml'
    config.write_bytes(content)
    result = run(project, 'myapp:App', '--config', str(config),
                 '--check-config')
    assert result.returncode == 1, result.stderr
    assert f'configuration: {config}: {needle}' in result.stderr
    assert 'Traceback' not in result.stderr


def test_a_dispatcher_class_whose_init_raises_is_reported_on_one_line(project):
    # os.environ['...'] in __init__ without the variable set: a raw
    # KeyError traceback, and a hot upgrade's old copy was not told why
    (project / 'needs.py').write_text(textwrap.dedent('''
        import os
        import uhttp.workers as _workers


        class App(_workers.Dispatcher):
            def __init__(self, **kwargs):
                self.database = os.environ['NEEDED_DATABASE']
                super().__init__(**kwargs)
    '''))
    result = run(project, 'needs:App', '--port', '0')
    assert result.returncode == 1, result.stderr
    assert 'Traceback' not in result.stderr, result.stderr
    assert ("configuration: App() failed: KeyError: 'NEEDED_DATABASE' "
            f"({project / 'needs.py'}, line 8)") in result.stderr
