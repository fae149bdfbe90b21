"""Intake: what happens to a complete request in the dispatcher.

In order: a static file; a sync handler; a pool (after do_check), if it
admits the request; 405 when the path exists under other methods only;
404. Admission refuses with 503 when the pool is degraded, has no live
worker, or `max_pending` requests already wait for answers.
"""

import contextlib as _contextlib
import traceback as _traceback

import uhttp.server as _server

from . import log as _log
from . import messages as _msg
from .broker import BODY_LIMIT
from . import pending as _pending
from . import replies as _replies
from . import routing as _routing
from . import files as _files
from .hooks import USER_CODE_ERRORS
from . import static as _static
from . import wssession as _wssession
from .probe import probe_status


NO_RESPOND = -1  # Connection.answering: user code runs, respond() is refused


@_contextlib.contextmanager
def user_code(client, answering):
    """While user code runs for `client`: `answering` is its response
    count then (respond() may add one) or NO_RESPOND (it may add none)."""
    client.answering = answering
    try:
        yield
    finally:
        client.answering = None


def sync_table(cls):
    """The RouteTable of a Dispatcher class's @sync routes, or None.
    Targets are (name, member, pattern text): handlers are bound from the
    class."""
    table = _routing.RouteTable()
    for name, member, pattern, methods in _routing.class_routes(cls):
        table.add(pattern, methods, (name, member, pattern.text))
    return table if len(table) else None


def over_broker_limit(client, pool):
    """True when `client`'s head declares a body larger than the broker of
    `pool` (a remote pool) carries: it would be answered 413 once read."""
    return pool is not None and pool.remote is not None and (
        client.content_length or 0) > BODY_LIMIT


# where a request goes (Intake.destination)
SYNC, POOL, NOWHERE = 'sync', 'pool', 'nowhere'

# why admission refuses a request (the metrics' rejected_total reasons)
DEGRADED = 'degraded'
NO_WORKER = 'no_worker'
MAX_PENDING = 'max_pending'


class Intake:
    """Routes and admits requests for one dispatcher (`core`)."""

    def __init__(self, core):
        self.core = core
        self.app = core.app
        self.log = core.log
        self.hooks = core.hooks
        self.static = core.settings.static
        self.sync = sync_table(type(core.app))
        self.max_pending = core.settings.max_pending
        self.refused_size = None  # of the last 503 admit() answered
        self.check_own_paths(core.settings)

    def check_own_paths(self, settings):
        """metrics_path and dashboard_path (its events and data too) answer
        before any sync route or pool: a sync route or a pool's exact route
        on the same path would never be reached, so it is a mistake (a
        pool's prefix route that covers it is not)."""
        for key, path in settings.own_paths:
            target = self.sync.lookup('GET', path)[0] if (
                self.sync is not None) else None
            if target is not None:
                raise ValueError(
                    f"Dispatcher {key} {path!r} is also the path of the sync "
                    f"handler {target[0]}(); choose another path for one")
            for pool in self.core.pools:
                if path in (pool.routes or ()):
                    raise ValueError(
                        f"Dispatcher {key} {path!r} is also a route of pool "
                        f"{pool.name!r}, which would never be asked for it; "
                        "choose another path for one")

    # -- routing -------------------------------------------------------------

    def on_request(self, client):
        observe = self.core.observe
        if observe is not None:
            observe.on_request(self, client)  # the same, with every answer counted
            return
        if self.core.stopping and self.refused_while_stopping(client):
            return
        if self.static and (client.method == 'GET' or client.method == 'HEAD'):
            if self.serve_static(client):
                return
        kind, target, params = self.destination(client.method, client.path)
        if kind is SYNC:
            self.run_sync(client, target, params)
        elif kind is NOWHERE:
            self.not_found(client, target)
        elif self.passes_checks(client):
            self.admit(client, target)

    def passes_checks(self, client):
        """do_check (when it is replaced), then a WebSocket upgrade's own
        checks; False when one refused (answered) the request."""
        if 'do_check' in self.hooks.replaced and not self.check(
                client, 'do_check'):
            return False
        return not (_wssession.is_upgrade(client) and
                    self.core.ws.refuse(client))

    def destination(self, method, path):
        """Where a request goes once no static file answered it:
        (SYNC, route, params), (POOL, pool, None), or (NOWHERE, the
        methods the path is served under or None, None)."""
        allowed = None
        if self.sync is not None:
            route, params = self.sync.lookup(method, path)
            if route is not None:
                return SYNC, route, params
            allowed = params
        pool = self.core.find_pool(path)
        if pool is None:
            return NOWHERE, allowed, None
        return POOL, pool, None

    def answer_before_body(self, client):
        """`client`'s request asks for 100 Continue and its body has not
        come: answer it now when the body could not change its answer
        (the shutdown's 503; 404 or 405: no route serves it; the 503 its
        pool's admission gives now; the 413 of a body larger than a remote
        pool's broker takes), so that no body is sent for nothing;
        True when it was answered. Sync routes, static files, the
        dispatcher's own paths and the check hooks see the whole request,
        as always."""
        core = self.core
        method, path = client.method, client.path
        began = core.now()
        if core.stopping:
            with probe_status(client) as probe:
                refused = self.refused_while_stopping(client)
            if refused and core.observe is not None:
                core.observe.answered_early(client, began, 503, probe.size,
                                            None, None)
            return refused
        if core.observe is not None and path in core.observe.endpoints:
            return False
        if self.static and (method == 'GET' or method == 'HEAD') and (
                self.mount_for(path)[0] is not None):
            return False
        kind, target, _ = self.destination(method, path)
        if kind is SYNC:
            return False
        pool = target if kind is POOL else None
        refused = None if pool is None else self.refusal(pool)
        too_large = refused is None and over_broker_limit(client, pool)
        if pool is not None and refused is None and not too_large:
            return False
        with probe_status(client) as probe:
            if too_large:
                status = 413
                client.respond({'error': 'Payload Too Large'}, status=413)
            elif refused is None:
                status = self.not_found(client, target)
            else:
                status = 503
                _replies.answer_error(client, 503, *refused[1:])
        if core.observe is not None:
            core.observe.answered_early(client, began, status, probe.size,
                                        pool, refused and refused[0])
        return True

    def refused_while_stopping(self, client):
        """While the dispatcher stops, a request begun after the stop is
        answered 503 (closing); one whose first bytes came before it is in
        flight and is served, unless it completes once the drain is over.
        True when it was refused."""
        core = self.core
        started = client.request_started
        if not core.drained and (core.handing_over or (
                started is not None and started < core.stop_began)):
            return False   # (past the drain, no worker would take it)
        _replies.refuse_while_stopping(client)
        return True

    def not_found(self, client, allowed):
        """405 when the path is served under other methods (a static file
        under GET and HEAD), else 404; the status."""
        if self.static and client.method not in ('GET', 'HEAD') and (
                self.static_file(client.path)):
            allowed = ['GET', 'HEAD'] + [method for method in allowed or ()
                                         if method not in ('GET', 'HEAD')]
        if allowed:
            client.respond({'error': 'Method Not Allowed'}, status=405,
                           headers={'allow': ', '.join(allowed)})
            return 405
        client.respond({'error': 'Not Found'}, status=404)
        return 404

    def check(self, client, name):
        """Run a do_check hook; False when it refused (answered) the request."""
        before = client.responses
        method, path = client.method, _log.client_text(client.path)
        try:   # (both gone once it is answered)
            with user_code(client, before):
                result = getattr(self.app, name)(client)
            if result is not None and not client.answered_since(before):
                return self.refused_by_result(client, name, result, before)
        except _msg.RejectRequest as reject:
            self.answer_reject(client, reject, f"{name}()", before)
            return False
        except _server.HttpErrorWithResponse as err:  # e.g. reading bad JSON
            _replies.answer_error(client, err.status, str(err), before=before)
            return False
        except USER_CODE_ERRORS as err:
            self.log.error("%s() failed for %s %s: %r\n%s", name,
                           method, path, err,
                           _traceback.format_exc().rstrip())
            _replies.answer_error(client, 500, before=before)
            return False
        return not client.answered_since(before)  # it may answer without raising

    def answer_reject(self, client, reject, where, before):
        """A RejectRequest raised by a hook or a sync handler: its data
        with its status, unless the request was answered before it."""
        if client.answered_since(before):
            return
        try:
            client.respond(reject.data, status=reject.status)
        except Exception as err:  # pylint: disable=broad-except
            self.log.error("%s: RejectRequest data cannot be sent: %r",
                           where, err)
            _replies.answer_error(client, 500, before=before)

    def refused_by_result(self, client, name, result, before):
        """A do_check hook returned a value, as a worker's do_check() may:
        a (data, status[, headers]) tuple is its refusal (never ignored:
        that would let the request through); anything else is a mistake,
        a 500 with an ERROR. Always False (the request goes no further)."""
        try:
            if isinstance(result, _msg.Response):
                raise _msg.ResponseError(
                    f"{name}() must return None or (data, status), not a "
                    "Response")
            data, status, headers = _msg.split_result(
                _msg.checked_refusal(result, name))
            client.respond(data, status=status, headers=headers)
        except Exception as err:  # pylint: disable=broad-except
            self.log.error("%s() for %s %s: %s", name, client.method,
                           _log.client_text(client.path), err)
            _replies.answer_error(client, 500, before=before)
        return False

    # -- static files ----------------------------------------------------------

    def mount_for(self, path):
        """(the static mount that owns `path`, the rest of it), or
        (None, None)."""
        for mount in self.static:
            rest = mount.relative(path)
            if rest is not None:
                return mount, rest
        return None, None

    def serve_static(self, client):
        """True when a static mount answered the request."""
        mount, rest = self.mount_for(client.path)
        return mount is not None and self.serve_file(client, mount, rest)

    def static_file(self, path):
        """True when a static mount has a file at `path`."""
        mount, rest = self.mount_for(path)
        return mount is not None and mount.resolve(rest) is not None

    def serve_file(self, client, mount, rest):
        real = mount.resolve(rest)
        if real is None:
            if not mount.authoritative:
                return False
            client.respond({'error': 'Not Found'}, status=404)
            self.static_served(client, None, 404)
            return True
        location = _static.directory_location(rest, real, client.url)
        if location is not None:  # /docs -> /docs/ (as web servers do)
            client.respond(None, status=301, headers={'location': location})
            self.static_served(client, real, 301)
            return True
        try:
            status = _files.serve_static(
                client, mount, real,
                close=self.core.stopping or self.core.server.closing)
        except Exception as err:  # pylint: disable=broad-except
            self.log.error("static file %s failed: %r", real, err)
            _replies.answer_error(client, 500)
            return True
        if status is None:  # gone since it was resolved
            if not mount.authoritative:
                return False
            client.respond({'error': 'Not Found'}, status=404)
            self.static_served(client, None, 404)
            return True
        self.static_served(client, real, status)
        return True

    def static_served(self, client, path, status):
        if self.hooks.overridden('on_static_served'):
            with user_code(client, NO_RESPOND):  # the file was the answer
                self.hooks.call('on_static_served', client, path, status)

    # -- sync handlers -----------------------------------------------------------

    def run_sync(self, client, route, params):
        name, member = route[:2]
        if self.hooks.overridden('do_check_sync') and not self.check(
                client, 'do_check_sync'):
            return
        before = client.responses
        method, path = client.method, _log.client_text(client.path)
        try:   # (both gone once it is answered)
            with user_code(client, before):
                result = _routing.bind(member, self.app)(client, params)
        except _server.HttpErrorWithResponse as err:
            _replies.answer_error(client, err.status, str(err), before=before)
            return
        except _msg.RejectRequest as reject:  # as from do_check or a worker
            if client.answered_since(before) and client.is_streaming:
                client.close()   # a stream it began cannot go on
                return
            self.answer_reject(client, reject, f"sync handler {name}", before)
            return
        except USER_CODE_ERRORS as err:
            self.log.error("sync handler %s for %s %s failed: %r\n%s", name,
                           method, path, err,
                           _traceback.format_exc().rstrip())
            if client.answered_since(before) and client.is_streaming:
                client.close()   # a stream it began cannot go on
                return
            _replies.answer_error(client, 500, before=before)
            return
        if not client.answered_since(before):
            self.log.error(
                "sync handler %s returned without answering %s %s%s", name,
                method, path, '' if result is None else (
                    f" (it returned a {type(result).__name__}: a sync handler "
                    "answers with client.respond(data, status=...))"))
            _replies.answer_error(client, 500)

    # -- admission -------------------------------------------------------------

    def refusal(self, pool):
        """(reason, text, headers) of the 503 `pool` answers now, or None;
        the reason is what the metrics count (rejected_total)."""
        if pool.degraded:
            return DEGRADED, 'Service Unavailable', _replies.degraded_headers(
                pool, self.core.now())
        if pool.remote is not None and pool.remote.refusal() is not None:
            return pool.remote.refusal()
        if not pool.alive_count:
            if pool.num_workers and pool.parked_count == pool.num_workers:
                return NO_WORKER, 'No workers available', None  # for good
            return NO_WORKER, 'No workers available', {'retry-after': '1'}
        if self.core.pending.waiting >= self.max_pending:
            return (MAX_PENDING, _replies.TOO_MANY_PENDING,
                    {'retry-after': '1'})
        return None

    def admit(self, client, pool):
        """Queue the request for `pool`, or answer 503: the refusal's
        reason then (and `refused_size`, its body's size, for the access
        log), else None."""
        refused = self.refusal(pool)
        if refused is not None:
            if refused[0] == MAX_PENDING:
                _replies.shed(client)  # pre-serialized: one send
                self.refused_size = _replies.SHED.size
            else:
                with probe_status(client) as probe:
                    _replies.answer_error(client, 503, *refused[1:])
                self.refused_size = probe.size
            return refused[0]
        pending = self.core.pending.open(client, pool, self.core.now())
        pending.path = client.path
        observe = self.core.observe
        if observe is not None and observe.access is not None:
            pending.query = observe.query
            if observe.forwarded:
                pending.remote = client.client_ip
        client.pending = pending
        if self.core.backpressure.may_have_waited() and client.has_left():
            client.close()  # ends it as disconnected (499): nobody waits
            return None
        if 'on_request_accepted' in self.hooks.replaced and (
                not self.accepted(pending, client, pool)):
            return None
        pool.scheduler.enqueue(pending)
        return None

    def accepted(self, pending, client, pool):
        """The user's on_request_accepted(): its value is the request's
        context. When it raises, the request goes no further: it is logged
        and answered 500 (the handler must not run without its context)."""
        try:
            with user_code(client, NO_RESPOND):  # the worker answers it
                pending.context = self.app.on_request_accepted(
                    pending.request_id, client, pool)
        except USER_CODE_ERRORS as err:
            self.hooks.failed('on_request_accepted', err)
            self.core.fail(pending, 500, None, _pending.PENDING_COMPLETED)
            return False
        return True
