"""systemd integration: readiness and status notifications, the watchdog,
and socket activation.

The notify protocol is a datagram of `KEY=value` lines sent to the Unix
socket named by NOTIFY_SOCKET (a path, or '@name' for an abstract socket).
Socket activation hands the listening sockets over as fds 3.. with
LISTEN_FDS (how many) and LISTEN_PID (for whom). Without these variables
every call here does nothing, so the dispatcher uses them unconditionally.
"""

import os as _os
import socket as _socket
import time as _time

LISTEN_FDS_START = 3


class Notifier:
    """Sends sd_notify messages; a no-op without NOTIFY_SOCKET."""

    def __init__(self, environ=None):
        environ = _os.environ if environ is None else environ
        address = environ.get('NOTIFY_SOCKET') or None
        if address and address.startswith('@'):
            address = '\0' + address[1:]
        self.address = address
        self._socket = None
        self.failed = None   # the last error, for a log line

    @property
    def enabled(self):
        return self.address is not None

    def send(self, *lines):
        """Send one datagram of `lines` ('KEY=value'); False on failure."""
        if self.address is None:
            return False
        try:
            if self._socket is None:
                self._socket = _socket.socket(_socket.AF_UNIX,
                                              _socket.SOCK_DGRAM)
                self._socket.setblocking(False)
            self._socket.sendto('\n'.join(lines).encode('utf-8'),
                                self.address)
        except OSError as err:
            self.failed = err
            return False
        return True

    def ready(self, status=None):
        lines = ['READY=1']
        if status:
            lines.append(f'STATUS={status}')
        return self.send(*lines)

    def status(self, text):
        return self.send(f'STATUS={text}')

    def stopping(self):
        return self.send('STOPPING=1')

    def reloading(self):
        usec = int(_time.clock_gettime(_time.CLOCK_MONOTONIC) * 1_000_000)
        return self.send('RELOADING=1', f'MONOTONIC_USEC={usec}')

    def main_pid(self, pid):
        """Process `pid` (a hot upgrade's new copy) is the service now,
        and ready: one datagram, so systemd never sees one without the
        other."""
        return self.send(f'MAINPID={pid}', 'READY=1')

    def watchdog(self):
        return self.send('WATCHDOG=1')

    def close(self):
        if self._socket is not None:
            try:
                self._socket.close()
            except OSError:
                pass
            self._socket = None


def watchdog_interval(environ=None, pid=None):
    """Seconds between WATCHDOG=1 pings (half systemd's WatchdogSec), or
    None when no watchdog is asked of this process."""
    environ = _os.environ if environ is None else environ
    pid = _os.getpid() if pid is None else pid
    usec = environ.get('WATCHDOG_USEC')
    if not usec:
        return None
    owner = environ.get('WATCHDOG_PID')
    if owner and owner.strip() != str(pid):
        return None
    try:
        value = int(usec)
    except ValueError:
        return None
    if value <= 0:
        return None
    return value / 1_000_000 / 2


def listen_fds(environ=None, pid=None):
    """The sockets systemd passed to this process (fd numbers), or []."""
    environ = _os.environ if environ is None else environ
    pid = _os.getpid() if pid is None else pid
    count = environ.get('LISTEN_FDS')
    owner = environ.get('LISTEN_PID')
    if not count or not owner:
        return []
    try:
        if int(owner) != pid:
            return []
        count = int(count)
    except ValueError:
        return []
    return list(range(LISTEN_FDS_START, LISTEN_FDS_START + max(0, count)))


def forget_listen_fds(environ=None):
    """Remove the socket-activation variables, so that processes started
    later (workers, a new copy of the dispatcher) do not take them as theirs."""
    environ = _os.environ if environ is None else environ
    for name in ('LISTEN_FDS', 'LISTEN_PID', 'LISTEN_FDNAMES'):
        environ.pop(name, None)


def inherited_socket(fd):
    """The listening socket object for an inherited fd (TCP or Unix),
    non-blocking and not inherited further. OSError for an fd that is not a
    listening stream socket (ListenDatagram=, or Accept=yes, which passes
    one connection): accepting on it would fail at every turn of the loop."""
    try:
        sock = _socket.socket(fileno=fd)
    except OSError as err:
        raise OSError(err.errno, f"socket activation: fd {fd} is not a "
                      f"socket ({err.strerror})") from None
    listening = (sock.type == _socket.SOCK_STREAM and sock.getsockopt(
        _socket.SOL_SOCKET, _socket.SO_ACCEPTCONN))
    if not listening:
        sock.detach()
        raise OSError(f"socket activation: fd {fd} is not a listening stream "
                      "socket (use ListenStream= with Accept=no)")
    _os.set_inheritable(fd, False)
    sock.setblocking(False)
    return sock
