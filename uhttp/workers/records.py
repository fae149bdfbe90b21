"""Where the dispatcher's log records go.

Every record of every process (the dispatcher's own, its workers', the
access log) goes to the taps (the test client, the dashboard, a hot
upgrade listen there), then to the app's `on_log()`; the default
`on_log()` writes it out (`write_record`). A record that cannot go through
`on_log()` (it raised, or it is logged by `on_log()` itself, which would
call it again without end) goes to the default output instead.
"""

import logging as _logging
import os as _os
import time as _time
import traceback as _traceback

from . import log as _log
from .hooks import USER_CODE_ERRORS
from .logoutput import LogOutput


class Records:
    """Core's part that routes records (state set up by Core.__init__:
    log_taps, record_source, on_log_quiet_until, in_on_log, log_output)."""

    def log_record(self, name, level, text, source=None):
        """Every record of every process goes through the app's on_log()
        (and to the taps). `source` is the worker handle a worker's record
        came from."""
        for tap in self.log_taps:
            try:
                tap(name, level, text)
            except Exception:  # pylint: disable=broad-except
                pass
        outer = self.record_source
        self.record_source = source
        if self.in_on_log:  # logged by on_log() itself: not through it again
            try:
                self.base.on_log(self.app, name, level, text)
            except Exception:  # pylint: disable=broad-except
                pass
            self.record_source = outer
            return
        self.in_on_log = True
        try:
            self.app.on_log(name, level, text)
        except USER_CODE_ERRORS as err:
            self.on_log_failed(name, level, text, err)
        finally:
            self.in_on_log = False
            self.record_source = None

    def on_log_failed(self, name, level, text, err):
        """The record to the default output, and why (at most every 10 s)."""
        try:
            self.base.on_log(self.app, name, level, text)
            now = _time.monotonic()
            if now >= self.on_log_quiet_until:
                self.on_log_quiet_until = now + 10.0
                self.base.on_log(self.app, self.log.name, _log.LOG_ERROR, (
                    f"on_log() raised {err!r}; its records go to the "
                    f"default output meanwhile\n"
                    + _traceback.format_exc().rstrip()))
        except Exception:  # pylint: disable=broad-except
            pass

    def source_fields(self):
        """pool, worker_id and pid of the record being logged."""
        handle = self.record_source
        if handle is None:
            return {'pool': None, 'worker_id': None, 'pid': _os.getpid()}
        return {'pool': handle.pool.name, 'worker_id': handle.index,
                'pid': handle.pid}

    def write_record(self, name, level, text):
        """The default on_log(): the standard library's logging when
        use_logging is on, else a line on the log stream."""
        if self.settings.use_logging:
            _logging.getLogger(f'uhttp.workers.{name}').log(
                level, '%s', text, extra=self.source_fields())
            return
        output = self.log_output
        if output.stream is not self.log_stream:
            output = self.log_output = LogOutput(
                self.log_stream, self.log_output.render)
        output.write(_log.render(self.log_style, name, level, text,
                                 source=self.source_fields()))
