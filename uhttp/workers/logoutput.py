"""The dispatcher's log stream, written without ever stalling its loop.

The default on_log() writes every record of every process to stderr. When
stderr is a pipe or a socket its reader does not empty (a paused pager, a
log shipper that hangs), a plain write() would block the dispatcher's one
thread: no connection served, no signal handled. The stream's file
description is shared with the workers, so it cannot be made non-blocking.

`LogOutput` writes a record at once when that cannot block: a regular
file, a stream without a descriptor, or a record of at most PIPE_BUF bytes
while poll() says the pipe has room (which is then at least PIPE_BUF).
Otherwise, and while earlier records wait, records are queued, in order,
for a writer thread, up to `limit` characters; what does not fit is
dropped and counted, and a WARNING line saying how many records were
dropped is written once the stream takes records again.
"""

import collections as _collections
import os as _os
import select as _select
import stat as _stat
import threading as _threading

LIMIT = 16 * 1024 * 1024   # characters queued at most (one record more)


class LogOutput:
    """`write(text)` never blocks for long; `drain(timeout)` at the end."""

    def __init__(self, stream, render, limit=LIMIT):
        self.stream = stream
        self.render = render      # render(message) -> a WARNING record's text
        self.limit = limit
        self.queue = _collections.deque()
        self.queued = 0           # characters in the queue
        self.busy = False         # the writer thread holds a record
        self.dropped = 0          # records dropped since the last notice
        self.dropped_chars = 0
        self.dropped_total = 0    # records dropped since the start
        self.cond = _threading.Condition()
        self.thread = None
        self._kind = None         # (stream, fd or None, always writable)

    def write(self, text):
        with self.cond:
            if not self.queue and not self.busy and not self.dropped \
                    and self._writable(text):
                _write(self.stream, text)
                return
            if self.queued + len(text) > self.limit and self.queue:
                self.dropped += 1
                self.dropped_chars += len(text)
                self.dropped_total += 1
                return
            if self.dropped:  # said where the records are missing
                self._append(self.notice())
            self._append(text)
            if self.thread is None:
                self.thread = _threading.Thread(
                    target=self._run, name='log-output', daemon=True)
                self.thread.start()
            self.cond.notify()

    def notice(self):
        """The record saying what was dropped (and forgetting it)."""
        text = self.render(
            f"{self.dropped} log record(s) ({self.dropped_chars} characters) "
            f"dropped: the log output did not take them fast enough")
        self.dropped = self.dropped_chars = 0
        return text

    def _append(self, text):
        self.queue.append(text)
        self.queued += len(text)

    def drain(self, timeout):
        """Wait up to `timeout` seconds for the queued records to be
        written; True when none is left."""
        with self.cond:
            return self.cond.wait_for(
                lambda: not (self.queue or self.busy or self.dropped), timeout)

    def _writable(self, text):
        stream = self.stream
        kind = self._kind
        if kind is None or kind[0] is not stream:
            kind = self._kind = (stream,) + _describe(stream)
        if kind[2]:
            return True
        if len(text) > _select.PIPE_BUF or (
                len(text) > _select.PIPE_BUF // 4 and not text.isascii()):
            return False  # more than PIPE_BUF bytes could block half-way
        poller = _select.poll()
        poller.register(kind[1], _select.POLLOUT)
        try:
            return bool(poller.poll(0))
        except OSError:
            return True

    def _run(self):
        while True:
            with self.cond:
                self.cond.wait_for(lambda: self.queue or self.dropped)
                if self.queue:
                    text = self.queue.popleft()
                    self.queued -= len(text)
                else:  # only a notice of records dropped is left
                    text = self.notice()
                self.busy = True
            try:
                _write(self.stream, text)
            finally:
                with self.cond:
                    self.busy = False
                    self.cond.notify_all()


def _describe(stream):
    """(fd or None, True when a write to it cannot wait for a reader)."""
    try:
        fd = stream.fileno()
        mode = _os.fstat(fd).st_mode
    except (AttributeError, OSError, ValueError):
        return None, True
    if _stat.S_ISREG(mode):
        return fd, True
    # /dev/null, /dev/full, ... take a write at once; a terminal may not
    return fd, _stat.S_ISCHR(mode) and not _os.isatty(fd)


def _write(stream, text):
    try:
        stream.write(text)
        stream.flush()
    except (OSError, ValueError):
        pass
