"""systemd.py: the notify protocol against a real datagram socket, and the
environment rules for the watchdog and socket activation."""

import socket

from uhttp.workers import systemd


def test_notifier_without_socket_does_nothing():
    notifier = systemd.Notifier({})
    assert not notifier.enabled
    assert notifier.ready() is False


def test_notifier_sends_datagrams(tmp_path):
    path = str(tmp_path / 'n.sock')
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(path)
    receiver.settimeout(2)
    try:
        notifier = systemd.Notifier({'NOTIFY_SOCKET': path})
        assert notifier.ready('serving')
        assert receiver.recv(1024) == b'READY=1\nSTATUS=serving'
        assert notifier.reloading()
        lines = receiver.recv(1024).decode().split('\n')
        assert lines[0] == 'RELOADING=1'
        assert lines[1].startswith('MONOTONIC_USEC=') and int(lines[1][15:]) > 0
        notifier.stopping()
        assert receiver.recv(1024) == b'STOPPING=1'
        notifier.close()
    finally:
        receiver.close()


def test_notifier_survives_a_missing_socket(tmp_path):
    notifier = systemd.Notifier({'NOTIFY_SOCKET': str(tmp_path / 'none')})
    assert notifier.watchdog() is False
    assert isinstance(notifier.failed, OSError)


def test_watchdog_interval_rules():
    assert systemd.watchdog_interval({}, 5) is None
    assert systemd.watchdog_interval({'WATCHDOG_USEC': '2000000'}, 5) == 1.0
    assert systemd.watchdog_interval(
        {'WATCHDOG_USEC': '2000000', 'WATCHDOG_PID': '5'}, 5) == 1.0
    assert systemd.watchdog_interval(
        {'WATCHDOG_USEC': '2000000', 'WATCHDOG_PID': '6'}, 5) is None
    assert systemd.watchdog_interval({'WATCHDOG_USEC': 'x'}, 5) is None
    assert systemd.watchdog_interval({'WATCHDOG_USEC': '0'}, 5) is None


def test_listen_fds_rules():
    assert systemd.listen_fds({}, 9) == []
    assert systemd.listen_fds({'LISTEN_FDS': '2', 'LISTEN_PID': '9'}, 9) == [3, 4]
    assert systemd.listen_fds({'LISTEN_FDS': '1', 'LISTEN_PID': '8'}, 9) == []
    assert systemd.listen_fds({'LISTEN_FDS': 'x', 'LISTEN_PID': '9'}, 9) == []
    environ = {'LISTEN_FDS': '1', 'LISTEN_PID': '9', 'LISTEN_FDNAMES': 'http'}
    systemd.forget_listen_fds(environ)
    assert environ == {}
