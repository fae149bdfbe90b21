"""File descriptors: the standard three kept open, closing one quietly,
and users' own descriptors in a loop's selector.

Both the dispatcher and the workers let users put sockets, pipes or serial
ports into their loop: register_reader(fd, callback) and
register_writer(fd, callback) call `callback(fd)` when `fd` is ready.
"""

import os as _os
import selectors as _selectors
import traceback as _traceback

EVENT_READ = _selectors.EVENT_READ
EVENT_WRITE = _selectors.EVENT_WRITE


def open_standard_fds():
    """Point each of descriptors 0, 1 and 2 that is closed (a process
    started with `2>&-`, or a daemonizing helper that closed them) at
    /dev/null. Otherwise the next descriptors made take those numbers: the
    log, written to descriptor 2, would go into an internal pipe or to
    whichever client's socket got it."""
    for fd in (0, 1, 2):
        try:
            _os.fstat(fd)
        except OSError:
            null = _os.open(_os.devnull, _os.O_RDWR)
            if null != fd:   # (it takes the lowest free number: fd itself)
                _os.dup2(null, fd)
                _os.close(null)


def close_fd(fd):
    """Close `fd`, ignoring an error (it may be closed already, or the
    other end gone): for descriptors that are being let go of."""
    try:
        _os.close(fd)
    except OSError:
        pass


def fd_number(fd):
    """The descriptor number of an int or of an object with fileno()."""
    return fd if isinstance(fd, int) else fd.fileno()


class FdCallbacks:
    """The user-registered descriptors of one selector.

    It is the selector key's data for each of them, so a loop dispatches
    with `key.data.handle_event(key.fileobj, mask)` as for everything else.
    A callback that raises is logged; the loop goes on.
    """

    def __init__(self, selector, log):
        self._selector = selector
        self._log = log
        self._entries = {}  # fd number -> {event: (registered object, callback)}

    def register(self, fd, event, callback):
        if not callable(callback):
            raise TypeError(f"callback must be callable, not {callback!r}")
        number = fd_number(fd)
        entry = self._entries.get(number)
        if entry is None:
            entry = self._entries[number] = {event: (fd, callback)}
            self._selector.register(number, _mask(entry), self)
        else:
            entry[event] = (fd, callback)
            self._selector.modify(number, _mask(entry), self)

    def unregister(self, fd, event):
        try:
            number = fd_number(fd)
        except (OSError, ValueError):
            return
        entry = self._entries.get(number)
        if entry is None or event not in entry:
            return
        del entry[event]
        try:
            if entry:
                self._selector.modify(number, _mask(entry), self)
            else:
                del self._entries[number]
                self._selector.unregister(number)
        except (KeyError, ValueError, OSError):
            pass

    def handle_event(self, fileobj, mask):
        number = fileobj if isinstance(fileobj, int) else fileobj.fileno()
        for event in (EVENT_READ, EVENT_WRITE):
            entry = self._entries.get(number)
            if entry is None:
                return None
            if mask & event and event in entry:
                target, callback = entry[event]
                try:
                    callback(target)
                except Exception as err:  # pylint: disable=broad-except
                    self._log.error("fd callback %r failed: %r\n%s", callback,
                                    err, _traceback.format_exc().rstrip())
        return None


def _mask(entry):
    mask = 0
    for event in entry:
        mask |= event
    return mask
