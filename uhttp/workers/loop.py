"""The dispatcher's event loop machinery: one selector, a timer heap, the
wake-up pipe that signals (and stop() from another thread) write to, and
the signal handlers.

A signal handler does nothing but note the signal; the work happens in the
loop when the wake-up pipe is read, so no handler runs in the middle of
the dispatcher's bookkeeping.
"""

import collections.abc as _abc
import heapq as _heapq
import os as _os
import select as _select
import selectors as _selectors
import signal as _signal
import threading as _threading
import traceback as _traceback

EVENT_READ = _selectors.EVENT_READ
EVENT_WRITE = _selectors.EVENT_WRITE
STOP_SIGNALS = (_signal.SIGTERM, _signal.SIGINT)
# client events one turn of the loop takes from the kernel at most
CLIENT_EVENTS = 256
# the loop's own events in one turn at most (worker pipes, the wake-up pipe,
# the user's descriptors and the clients' side)
LOOP_EVENTS = 4096
# SIGHUP: rolling reload; SIGTTIN / SIGTTOU: one worker more / fewer per
# pool; SIGUSR2: hot upgrade
ACTION_SIGNALS = {_signal.SIGHUP: 'reload', _signal.SIGTTIN: 'more',
                  _signal.SIGTTOU: 'fewer', _signal.SIGUSR2: 'upgrade'}


class Wakeup:
    """The self-pipe; its handle_event() hands what it read to `on_wake`."""

    def __init__(self, on_wake):
        self._on_wake = on_wake
        self.read_fd, self.write_fd = _os.pipe()
        for fd in (self.read_fd, self.write_fd):
            _os.set_blocking(fd, False)
            _os.set_inheritable(fd, False)

    def handle_event(self, fileobj, mask):
        try:
            data = _os.read(self.read_fd, 512)
        except (BlockingIOError, InterruptedError):
            return None
        self._on_wake(data)
        return None

    def wake(self):
        try:
            _os.write(self.write_fd, b'\0')
        except OSError:
            pass

    def close(self):
        for fd in (self.read_fd, self.write_fd):
            try:
                _os.close(fd)
            except OSError:
                pass


class Timers:
    """A heap of (when, func, args); func(now, *args) runs once when due."""

    def __init__(self, log):
        self._log = log
        self._heap = []
        self._seq = 0

    def call_at(self, when, func, *args):
        self._seq += 1
        _heapq.heappush(self._heap, (when, self._seq, func, args))

    def entries(self):
        """The timers waiting, soonest first: [(when, func, args)]."""
        return [(when, func, args) for when, _, func, args in sorted(self._heap)]

    def next_due(self):
        """When the next timer is due, or None."""
        return self._heap[0][0] if self._heap else None

    def run_due(self, now):
        heap = self._heap
        while heap and heap[0][0] <= now:
            _, _, func, args = _heapq.heappop(heap)
            try:
                func(now, *args)
            except Exception as err:  # pylint: disable=broad-except
                self._log.error("timer %s failed: %r\n%s",
                                getattr(func, '__name__', func), err,
                                _traceback.format_exc().rstrip())

    def clear(self):
        self._heap = []


class Signals:
    """SIGTERM/SIGINT (stop), SIGCHLD (a worker ended) and the action
    signals (reload, resize, upgrade) for the loop.

    Installed only in the main thread; elsewhere `installed` stays False
    and the loop polls for ended workers instead.
    """

    def __init__(self, wakeup, on_stop, on_action=None):
        self._wakeup = wakeup
        self._on_stop = on_stop
        self._on_action = on_action
        self._saved = {}
        self._saved_wakeup = -1
        self.installed = False

    def install(self):
        if _threading.current_thread() is not _threading.main_thread():
            return
        try:
            self._saved_wakeup = _signal.set_wakeup_fd(self._wakeup.write_fd)
        except ValueError:
            return
        signals = STOP_SIGNALS + (_signal.SIGCHLD,)
        if self._on_action is not None:
            signals += tuple(ACTION_SIGNALS)
        for sig in signals:
            self._saved[sig] = _signal.signal(sig, self._handler)
        self.installed = True

    def restore(self):
        if not self.installed:
            return
        for sig, handler in self._saved.items():
            try:
                _signal.signal(sig, handler)
            except (ValueError, TypeError):
                pass
        try:
            _signal.set_wakeup_fd(self._saved_wakeup)
        except ValueError:
            pass
        self._saved = {}
        self.installed = False

    def _handler(self, signum, frame):
        if signum in STOP_SIGNALS:
            self._on_stop(_signal.Signals(signum).name)
        elif signum in ACTION_SIGNALS and self._on_action is not None:
            self._on_action(ACTION_SIGNALS[signum])

    @staticmethod
    def child_ended(data):
        """True when the bytes read from the wake-up pipe include SIGCHLD."""
        return _signal.SIGCHLD in data


class _Keys(_abc.Mapping):
    """A selector's keys by file object (what get_map() returns)."""

    def __init__(self, selector):
        self._selector = selector

    def __len__(self):
        return len(self._selector.keys)

    def __getitem__(self, fileobj):
        key = self._selector.keys.get(_selectors_fd(fileobj))
        if key is None:
            raise KeyError(fileobj)
        return key

    def __iter__(self):
        return iter(self._selector.keys)


def _selectors_fd(fileobj):
    return fileobj if isinstance(fileobj, int) else fileobj.fileno()


class BoundedSelector(_selectors.BaseSelector):
    """An epoll selector whose select() returns at most `limit` events.

    With thousands of ready connections, the standard selector builds a
    list of all of them on every call, though a turn of the loop serves
    only a batch; epoll keeps the rest ready (level-triggered) and hands
    them out in turn, so a bounded call costs what it serves.
    """

    def __init__(self, limit):
        self.limit = limit
        self.keys = {}            # fd -> SelectorKey
        self._epoll = _select.epoll()

    @staticmethod
    def _events(events):
        mask = 0
        if events & EVENT_READ:
            mask |= _select.EPOLLIN
        if events & EVENT_WRITE:
            mask |= _select.EPOLLOUT
        return mask

    def register(self, fileobj, events, data=None):
        fd = _selectors_fd(fileobj)
        if fd in self.keys:
            raise KeyError(f"{fileobj!r} (fd {fd}) is already registered")
        key = _selectors.SelectorKey(fileobj, fd, events, data)
        self._epoll.register(fd, self._events(events))
        self.keys[fd] = key
        return key

    def unregister(self, fileobj):
        fd = _selectors_fd(fileobj)
        key = self.keys.pop(fd)
        try:
            self._epoll.unregister(fd)
        except OSError:
            pass  # closed already: the kernel forgot it
        return key

    def mute(self, fileobj, muted):
        """Stop (or start again) reporting a registered descriptor's
        events, keeping it registered: re-adding an epoll descriptor that
        holds thousands of others costs the kernel a walk over all of
        them, muting it costs nothing."""
        key = self.keys[_selectors_fd(fileobj)]
        self._epoll.modify(key.fd, 0 if muted else self._events(key.events))

    def modify(self, fileobj, events, data=None):
        fd = _selectors_fd(fileobj)
        key = self.keys.get(fd)
        if key is None:
            raise KeyError(f"{fileobj!r} is not registered")
        if events != key.events:
            self._epoll.modify(fd, self._events(events))
        key = key._replace(events=events, data=data)
        self.keys[fd] = key
        return key

    def select(self, timeout=None, most=None):
        """Up to `most` (else the selector's limit) ready (key, events)."""
        timeout = -1 if timeout is None else max(timeout, 0)
        limit = self.limit if most is None else min(self.limit, most)
        try:
            ready = self._epoll.poll(timeout, min(limit,
                                                  max(1, len(self.keys))))
        except InterruptedError:
            return []
        result = []
        keys = self.keys
        for fd, flags in ready:
            key = keys.get(fd)
            if key is None:
                continue
            events = 0
            if flags & ~_select.EPOLLOUT:
                events |= EVENT_READ
            if flags & ~_select.EPOLLIN:
                events |= EVENT_WRITE
            result.append((key, events & key.events))
        return result

    def readable(self, most):
        """How many registered descriptors have something to read now
        (up to `most`), without taking their events: epoll keeps them
        ready. The cost is that of the ready ones, not of `most`."""
        try:
            ready = self._epoll.poll(0, max(1, most))
        except InterruptedError:
            return 0
        return sum(1 for _, flags in ready if flags & ~_select.EPOLLOUT)

    def get_map(self):
        return _Keys(self)

    def fileno(self):
        return self._epoll.fileno()

    def close(self):
        self._epoll.close()
        self.keys.clear()


def bounded_selector(limit):
    """A BoundedSelector where epoll exists, else the platform's default."""
    if hasattr(_select, 'epoll'):
        return BoundedSelector(limit)
    return _selectors.DefaultSelector()


class Side:
    """A selector of its own (the clients'), itself registered in the
    loop's selector: the loop sees one event when any of its descriptors is
    ready, and the side is polled when the loop chooses. Pausing a side
    (muting it in the loop's selector) leaves its events waiting in the
    kernel: that is how the clients are held back when the workers are
    full."""

    def __init__(self, name, limit):
        self.name = name
        self.selector = bounded_selector(limit)
        self.paused = False

    def fileno(self):
        return self.selector.fileno()

    def poll(self, most=None):
        """The events ready now (up to `most`), without waiting."""
        try:
            if most is None or not isinstance(self.selector, BoundedSelector):
                return self.selector.select(0)
            return self.selector.select(0, most)
        except InterruptedError:
            return ()

    def readable(self, most):
        """How many of the side's descriptors have something to read now
        (up to `most`; `most` where that cannot be told cheaply)."""
        if isinstance(self.selector, BoundedSelector):
            return self.selector.readable(most)
        return most

    def register(self, fd, events, data):
        self.selector.register(fd, events, data)

    def unregister(self, fd):
        forget(self.selector, fd)

    def close(self):
        try:
            self.selector.close()
        except Exception:  # pylint: disable=broad-except
            pass


def forget(selector, fd):
    """Unregister `fd`; a descriptor the selector does not hold is fine."""
    try:
        selector.unregister(fd)
    except (KeyError, ValueError, OSError):
        pass


class Direct:
    """The workers' pipes, registered straight in the loop's selector (no
    selector of their own: their events come with the loop's, without a
    second system call); `poll()` serves them between batches of client
    events by asking the loop's selector and keeping only theirs."""

    def __init__(self, selector):
        self.selector = selector
        self.fds = set()
        self.held = {}   # fd -> SelectorKey, unregistered while held

    def register(self, fd, events, data):
        self.selector.register(fd, events, data)
        self.fds.add(fd)

    def unregister(self, fd):
        self.fds.discard(fd)
        if self.held.pop(fd, None) is None:
            forget(self.selector, fd)

    def hold(self, fd, held):
        """Stop (or start again) reading a worker's pipe, left registered
        (streamhold.py)."""
        if fd in self.fds:
            if isinstance(self.selector, BoundedSelector):
                self.selector.mute(fd, held)
            elif held:
                self.held[fd] = self.selector.unregister(fd)
            elif fd in self.held:
                key = self.held.pop(fd)
                self.selector.register(fd, key.events, key.data)

    def poll(self):
        try:
            events = self.selector.select(0)
        except InterruptedError:
            return ()
        fds = self.fds
        return [(key, mask) for key, mask in events if key.fd in fds]

    def close(self):
        self.fds.clear()   # the loop's selector is closed by the loop


class Loop:
    """The selector, the timers and the wake-up pipe of one dispatcher.

    Its selector holds the wake-up pipe, the user's descriptors and two
    sides: `clients` (the listening socket and every connection) and
    `workers` (every worker's pipes), so the loop can serve the workers'
    pipes between batches of client events, and hold the clients back
    while the workers are full.
    """

    def __init__(self, log):
        self.log = log
        self.selector = None
        self.timers = Timers(log)
        self.wakeup = None
        self.clients = None
        self.workers = None

    def ensure_selector(self):
        if self.selector is None:
            self.selector = bounded_selector(LOOP_EVENTS)
        return self.selector

    def open(self, on_wake):
        self.ensure_selector()
        self.wakeup = Wakeup(on_wake)
        self.selector.register(self.wakeup.read_fd, EVENT_READ, self.wakeup)
        self.clients = Side('clients', CLIENT_EVENTS)
        self.workers = Direct(self.selector)
        self.selector.register(self.clients, EVENT_READ, self.clients)

    def pause(self, side):
        if not side.paused:
            side.paused = True
            if isinstance(self.selector, BoundedSelector):
                self.selector.mute(side, True)
            else:
                self.unregister(side)

    def resume(self, side):
        if side.paused:
            side.paused = False
            if isinstance(self.selector, BoundedSelector):
                self.selector.mute(side, False)
            else:
                self.selector.register(side, EVENT_READ, side)

    def call_at(self, when, func, *args):
        self.timers.call_at(when, func, *args)

    def select(self, timeout):
        try:
            return self.selector.select(timeout)
        except InterruptedError:
            return ()

    def register(self, fd, events, data):
        self.selector.register(fd, events, data)

    def unregister(self, fd):
        forget(self.selector, fd)

    def selectors(self):
        """Every selector the loop owns (for a forked worker to close)."""
        return ([self.clients.selector] if self.clients is not None else []) + (
            [self.selector] if self.selector is not None else [])

    def close(self):
        if self.wakeup is not None:
            self.wakeup.close()
            self.wakeup = None
        for side in (self.clients, self.workers):
            if side is not None:
                side.close()
        self.clients = self.workers = None
        if self.selector is not None:
            try:
                self.selector.close()
            except Exception:  # pylint: disable=broad-except
                pass
            self.selector = None
        self.timers.clear()
