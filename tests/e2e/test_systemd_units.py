"""The units of examples/systemd/ hold for the real command line: the
service's ExecStart= starts the demo as systemd would (Type=notify), its
ExecReload= gives the rolling reload systemd waits for, and the remote
workers' ExecStart= and RestartPreventExitStatus= match the worker
command."""

import configparser
import os
import shlex
import signal
import socket
import subprocess
import sys
import time

from harness import ROOT
from uhttp.workers import workercommand

UNITS = os.path.join(ROOT, 'examples', 'systemd')


def unit(name):
    parser = configparser.ConfigParser(interpolation=None, strict=False,
                                       delimiters=('=',),
                                       comment_prefixes=('#', ';'))
    parser.optionxform = str
    with open(os.path.join(UNITS, name), encoding='utf-8') as file:
        parser.read_file(file)
    return parser


def command(value, main_pid=None, **environ):
    """An Exec*= line as systemd runs it: $MAINPID and ${NAME} replaced."""
    words = shlex.split(value)
    if main_pid is not None:
        words = [word.replace('$MAINPID', str(main_pid)) for word in words]
    return [environ.get(word[2:-1], word) if word.startswith('${') else word
            for word in words]


def messages(sock, until, timeout=20):
    """Notify datagrams until one holds `until`."""
    seen = []
    deadline = time.monotonic() + timeout
    while not any(until in message for message in seen):
        assert time.monotonic() < deadline, seen
        sock.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            seen.append(sock.recv(4096).decode())
        except socket.timeout:
            pass
    return seen


def test_demo_service_starts_notifies_and_reloads_as_systemd_would(tmp_path):
    service = unit('uhttp-workers-demo.service')['Service']
    assert service['Type'] == 'notify' and service['KillMode'] == 'mixed'
    assert unit('uhttp-workers-demo.socket')['Socket']['ListenStream']
    start = command(service['ExecStart'])
    assert start[:3] == ['/usr/bin/python3', '-m', 'uhttp.workers'], start
    assert 'ExecReload' in service, "systemctl reload would be refused"
    notify_path = str(tmp_path / 'notify')
    environ = dict(os.environ)
    environ.update(kv.split('=', 1) for kv in
                   shlex.split(service.get('Environment', '')))
    inherited = [os.path.abspath(p) for p in
                 environ.get('PYTHONPATH', '').split(os.pathsep) if p]
    environ.update(PYTHONPATH=os.pathsep.join([ROOT] + inherited),
                   NOTIFY_SOCKET=notify_path, PORT='0', ADDRESS='127.0.0.1')
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind(notify_path)
        with open(tmp_path / 'out.log', 'wb') as log:
            proc = subprocess.Popen(
                [sys.executable] + start[1:],
                cwd=os.path.join(ROOT, 'examples'), env=environ,
                stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True)
        try:
            messages(notify, 'READY=1')
            reload_ = command(service['ExecReload'], main_pid=proc.pid)
            assert subprocess.run(reload_, timeout=10, check=False).returncode == 0
            seen = messages(notify, 'RELOADING=1')
            seen += messages(notify, 'READY=1')
            log_text = (tmp_path / 'out.log').read_text()
            assert 'reload finished: every worker replaced' in log_text, (
                seen, log_text)
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=30) == 0
        finally:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            proc.wait(timeout=10)


def test_remote_service_command_and_exit_statuses_match_the_worker_command():
    service = unit('uhttp-workers-remote.service')['Service']
    start = command(service['ExecStart'])
    assert start[:4] == ['/usr/bin/python3', '-m', 'uhttp.workers', 'worker']
    # the URL, password and all, from the environment file, not the
    # command line that every user can read in the process list
    assert not any('redis' in part or 'BROKER' in part for part in start)
    os.environ[workercommand.BROKER_VARIABLE] = 'redis://127.0.0.1:6379/0'
    try:
        args = workercommand.parser().parse_args(start[4:])
    finally:
        del os.environ[workercommand.BROKER_VARIABLE]
    assert args.broker == 'redis://127.0.0.1:6379/0' and args.workers == 4
    assert args.target.partition(':')[2] == args.pool
    assert set(service['RestartPreventExitStatus'].split()) == {
        str(workercommand.EXIT_USAGE), str(workercommand.EXIT_TARGET)}
