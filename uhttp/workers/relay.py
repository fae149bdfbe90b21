"""The relay: what the workers say, turned into what the clients get.

A worker's pipe carries answers, stream chunks, logs and flow-control
messages. `Relay.worker_event()` reads them; each message kind has one
method, found in a table by kind.
"""

import traceback as _traceback

from . import channel as _channel
from . import files as _files
from . import messages as _msg
from . import pending as _pending
from . import replies as _replies
from . import sharedbody as _sharedbody
from . import streamhold as _streamhold
from .fds import close_fd as _close_fd
from .pending import PENDING_COMPLETED, PENDING_STREAM_CLOSED


class Relay:
    """Worker messages -> client writes, for one dispatcher (`core`)."""

    def __init__(self, core):
        self.core = core
        self.log = core.log
        self.hooks = core.hooks
        self.table = core.pending
        self.by_kind = {
            _msg.W_RESPONSE: self.response,
            _msg.W_FILE_RESPONSE: self.file_response,
            _msg.W_SHARED_RESPONSE: self.shared_response,
            _msg.W_STREAM_DATA: self.stream_data,
            _msg.W_DEFERRED: self.deferred,
            _msg.W_STREAM_START: self.stream_start,
            _msg.W_STREAM_END: self.stream_end,
            _msg.W_LOG: self.worker_log,
            _msg.W_READY: self.ready,
            _msg.W_BOUNCE: self.bounce,
            _msg.W_RETURNED: self.returned,
            _msg.W_PAUSE: self.pause,
            _msg.W_RESUME: self.resume,
            _msg.W_FORWARD: self.forward,
            _msg.W_ROUTES: self.routes,
            _msg.W_METRICS: self.metrics,
            _msg.W_WS_ACCEPT: self.ws_accept,
            _msg.W_WS_SEND: self.ws_send,
            _msg.W_WS_CLOSE: self.ws_close,
        }

    # -- reading a worker's pipe ---------------------------------------------

    def worker_event(self, handle, fileobj, mask):
        if fileobj != handle.from_fd:
            if fileobj == handle.to_fd:
                self.core.delivery.mark_dirty(handle)  # its pipe has room again
            # else an event polled before this turn closed the pipe (its
            # worker was reaped): the number may be a new client's socket
            # now, which a read here would rob of its request
            return
        try:
            messages = handle.reader.read()
        except _channel.ChannelError as err:
            self.log.error("%s sent a corrupt message (%s); killing it",
                           handle.name, err)
            self.core.supervisor.kill(handle, 'corrupt message')
            return
        if messages:
            out = handle.out
            if out is not None and out.lent:
                out.release()  # the bodies it has read are ours again
            self.relay(handle, messages)
        if handle.reader.eof and handle.from_fd is not None:
            # (a message of this batch may have ended the worker already:
            # then its pipes are closed and it was reaped)
            self.core.supervisor.pipe_closed(handle)

    def relay(self, handle, messages):
        by_kind = self.by_kind
        for message in messages:
            method = by_kind.get(message[0])
            if method is None:
                self.log.error("%s sent an unknown message kind %r",
                               handle.name, message[0])
                continue
            try:
                method(handle, message)
            except Exception as err:  # pylint: disable=broad-except
                # one message that cannot be handled must not lose the
                # others of the batch
                self.log.error("%s: its message of kind %r failed: %r\n%s",
                               handle.name, message[0], err,
                               _traceback.format_exc().rstrip())

    # -- answers ----------------------------------------------------------------

    def answered(self, handle, request_id, message, route_at):
        """`handle` is done with `request_id`: its credit back, and the
        pending request, with the route and start time the worker put at
        message[route_at:]; None when nobody waits for it (fire-and-forget,
        or it ended meanwhile)."""
        handle.pool.scheduler.release(handle, request_id)
        handle.held.pop(request_id, None)
        pending = self.table.get(request_id)
        if pending is not None and len(message) > route_at + 1 and (
                pending.route is None):
            pending.route, pending.started = (message[route_at],
                                              message[route_at + 1])
        return pending

    def response(self, handle, message):
        request_id, status, headers, body, kind, cookies = message[1:7]
        pending = self.answered(handle, request_id, message, 7)
        if pending is None:
            return
        client = pending.client
        hold = self.hooks.after_answer
        if hold:
            client.hold()
        status = self.send(pending, status, headers, body, cookies)
        pending.status = status
        pending.size = 0 if pending.method == 'HEAD' else len(body)
        response = None
        if 'on_response' in self.hooks.replaced:
            response = _msg.response_from_wire(  # bytes, as it was sent
                request_id, status, headers, bytes(body) if type(body) is (
                    bytearray) else body, kind, cookies)
        self.core.end(pending, PENDING_COMPLETED, response)
        if hold:
            client.release()

    def file_response(self, handle, message):
        """A worker's file answer: its descriptor came first on the
        worker's descriptor socket; it is sent with sendfile() and closed
        once sent, or at once when nobody waits for it."""
        request_id, status, headers, cookies = message[1:5]
        fd = handle.take_file(request_id)
        pending = self.answered(handle, request_id, message, 5)
        if pending is None:
            if fd is not None:
                _close_fd(fd)
            return
        client = pending.client
        hold = self.hooks.after_answer
        if hold:
            client.hold()
        headers = list(headers or ())
        size = 0
        if fd is None:
            self.log.error("%s answered request %s with a file but its "
                           "descriptor never came", handle.name, request_id)
            if client.is_open and client.pending is pending:
                client.pending = None
                _replies.answer_error(client, 500)
            status = 500
        elif not client.is_open or client.pending is not pending:
            _close_fd(fd)
        else:
            status, size = self.send_file(pending, fd, status, headers,
                                          cookies)
        pending.status = status
        pending.size = size
        response = None
        if self.hooks.overridden('on_response'):
            response = _msg.response_from_wire(
                request_id, status, headers, b'', _msg.BODY_NONE, cookies)
        self.core.end(pending, PENDING_COMPLETED, response)
        if hold:
            client.release()

    def shared_response(self, handle, message):
        """A large answer whose body is in shared memory (sharedbody.py)."""
        _sharedbody.relay_shared(self, handle, message)

    def send_file(self, pending, fd, status, headers, cookies):
        """Write a file answer; (status the client got, body bytes)."""
        client = pending.client
        head = pending.method == 'HEAD'
        try:
            status, headers, offset, length = _files.planned(
                fd, status, client.headers, pending.method, headers)
            client.send_file(status, headers, cookies, fd, offset, length,
                             head=head, close=self.core.stopping)
        except ValueError as err:
            _close_fd(fd)
            self.log.error("response to request %s refused: %s",
                           pending.request_id, err)
            client.pending = None
            _replies.answer_error(client, 500)
            return 500, 0
        except Exception as err:  # pylint: disable=broad-except
            _close_fd(fd)
            self.core.front.connection_failed(client, err)
            client.pending = None
            client.close()
            return status, 0
        return status, 0 if head or _files.bodiless(status) else length

    def send(self, pending, status, headers, body, cookies):
        """Write a worker's answer; the status the client got."""
        client = pending.client
        if not client.is_open or client.pending is not pending:
            return status
        try:
            client.send_response(status, headers, body, cookies,
                                 head=pending.method == 'HEAD',
                                 close=self.core.stopping)
        except ValueError as err:
            self.log.error("response to request %s refused: %s",
                           pending.request_id, err)
            client.pending = None
            _replies.answer_error(client, 500)
            return 500
        except Exception as err:  # pylint: disable=broad-except
            self.core.front.connection_failed(client, err)
            client.pending = None
            client.close()
        return status

    def deferred(self, handle, message):
        request_id = message[1]
        item = handle.pool.scheduler.release(handle, request_id)
        pending = self.table.get(request_id)
        if item is not None and pending is not None:
            handle.held[request_id] = item
            _pending.held(pending)
            if len(message) > 3:
                pending.route, pending.started = message[2], message[3]

    # -- streams ---------------------------------------------------------------

    def stream_start(self, handle, message):
        request_id, status, headers, cookies = message[1:5]
        item = handle.pool.scheduler.release(handle, request_id)
        pending = self.table.get(request_id)
        if pending is None:
            return
        if len(message) > 6 and pending.route is None:
            pending.route, pending.started = message[5], message[6]
        handle.held[request_id] = item if item is not None else pending
        client = pending.client
        if pending.streaming or not client.is_open or client.response_started:
            return
        self.table.stream_started(pending)
        pending.status = status
        pending.head_at = self.core.now()
        try:
            client.start_stream(status, headers, cookies)
        except Exception as err:  # pylint: disable=broad-except
            self.log.error("stream for request %s cannot start: %r",
                           request_id, err)
            client.pending = None
            _replies.answer_error(client, 500)
            pending.status = 500
            self.core.end(pending, PENDING_COMPLETED, tell_worker=True)
            return
        if pending.method == 'HEAD':  # the head is the whole answer: the
            client.end_stream()       # worker's stream ends (on_disconnect)
            self.core.end(pending, PENDING_COMPLETED, tell_worker=True)

    def stream_data(self, handle, message):
        pending = self.table.get(message[1])
        if pending is None or not pending.streaming:
            return
        client = pending.client
        if not client.is_open:
            return
        hold = self.core.streamhold
        if hold.can_hold(handle):
            if client.stream_send(message[2]):
                hold.sent(handle, client, self.stalled, pending)
        elif not client.send_chunk(message[2]):
            if not client.is_open or pending.done:
                self.log.warning(
                    "stream %s dropped: the client does not read fast enough "
                    "(send buffer limit %d bytes)", pending.request_id,
                    client.max_send_buffer_size)

    def stalled(self, pending):
        """A stream's client read nothing while it held its worker back:
        dropped, as a client that left (its worker gets on_disconnect)."""
        client = pending.client
        if client.is_open:
            self.log.warning(
                "stream %s dropped: its client read nothing for %ss with %d "
                "bytes waiting", pending.request_id, _streamhold.STALL_LIMIT,
                client.send_buffer_size)
            client.close()

    def stream_end(self, handle, message):
        request_id = message[1]
        handle.held.pop(request_id, None)
        pending = self.table.get(request_id)
        if pending is None:
            return
        client = pending.client
        if client.pending is pending:
            client.end_stream()
        self.core.end(pending, PENDING_STREAM_CLOSED)

    # -- the worker's own state -------------------------------------------------

    def worker_log(self, handle, message):
        self.core.log_record(message[1], message[2], message[3], handle)

    def ready(self, handle, message):
        self.core.supervisor.worker_ready(handle)

    def bounce(self, handle, message):
        """Taken while paused: another worker gets it."""
        handle.pool.scheduler.bounced(handle, message[2])

    def returned(self, handle, message):
        """Recalled requests the worker never started."""
        handle.pool.scheduler.returned(handle, message[1])

    def pause(self, handle, message):
        handle.accepting = False
        handle.pool.scheduler.withdraw(handle)

    def resume(self, handle, message):
        handle.accepting = True
        handle.pool.scheduler.offer(handle)

    def forward(self, handle, message):
        self.hooks.call('on_forward', message[1], message[2])

    def routes(self, handle, message):
        handle.routes = tuple(message[1])

    def metrics(self, handle, message):
        if self.core.observe is not None:
            self.core.observe.worker_metrics(handle, message[1])

    # -- WebSockets (wssession.py) ---------------------------------------------

    def ws_accept(self, handle, message):
        self.core.ws.accept(handle, message)

    def ws_send(self, handle, message):
        self.core.ws.send(handle, message)

    def ws_close(self, handle, message):
        self.core.ws.close(handle, message)
