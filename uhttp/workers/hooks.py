"""The user's Dispatcher hooks, called so that none can break the loop.

`Hooks.call(name, *args)` runs the hook and logs an exception (with its
traceback) instead of raising it; `Hooks.overridden(name)` (or `name in
Hooks.replaced`, on the hot path) tells whether the user's class replaced a
hook (in its class, or assigned on the object before run()), so the
dispatcher can skip the work a default hook does not need.
"""

import traceback as _traceback

from .throttle import RepeatedFailure

# What user code run by the dispatcher may raise without ending it: any
# exception, including the BaseExceptions a handler lets escape by mistake
# (asyncio.CancelledError, KeyboardInterrupt, SystemExit from sys.exit()).
# The dispatcher's own stop comes by signal or stop(), never so.
USER_CODE_ERRORS = BaseException


_AFTER_ANSWER = frozenset(('on_response', 'on_pending_removed'))


class Hooks:
    """Guarded calls of one Dispatcher object's hooks."""

    def __init__(self, app, base, log):
        self.app = app
        self._base = base
        self._log = log
        self._repeated = {}  # name -> RepeatedFailure, for call_timed()
        self.refresh()

    def refresh(self):
        """Find the hooks replaced, by the user's class or on the object
        itself (`dispatcher.do_check = check`, assigned after it was
        made: run() calls this again as it starts)."""
        cls = type(self.app)
        own = vars(self.app)
        self.replaced = frozenset(
            name for name in ('do_check', 'do_check_sync',
                              'on_request_accepted', 'on_response',
                              'on_pending_removed', 'on_static_served')
            if name in own or getattr(cls, name) is not getattr(
                self._base, name))
        # True when a hook runs once a worker's answer is sent (on_response
        # or on_pending_removed): the client is held until then
        self.after_answer = bool(self.replaced & _AFTER_ANSWER)

    def overridden(self, name):
        return name in self.replaced

    def call(self, name, *args, default=None):
        """app.name(*args); on an exception, log it and return `default`."""
        try:
            return getattr(self.app, name)(*args)
        except USER_CODE_ERRORS as err:
            self.failed(name, err)
            return default

    def call_timed(self, name):
        """app.name() for a hook called on a timer (on_idle): a failure
        that comes again each time is counted, not logged each time."""
        repeated = self._repeated.get(name)
        if repeated is None:
            repeated = self._repeated[name] = RepeatedFailure(
                self._log, f'{name}()')
        try:
            getattr(self.app, name)()
        except USER_CODE_ERRORS as err:
            repeated.failed(err, _traceback_text(err))
        else:
            repeated.worked()

    def end_timed(self):
        """The loop ends: the failures of timed hooks counted and not
        logged yet are logged."""
        for repeated in self._repeated.values():
            repeated.worked()

    def failed(self, name, err):
        self._log.error("%s() failed: %r\n%s", name, err,
                        _traceback_text(err))


def _traceback_text(err):
    return ''.join(_traceback.format_exception(
        type(err), err, err.__traceback__)).rstrip()
