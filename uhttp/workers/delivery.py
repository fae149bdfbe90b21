"""Delivery: requests and control messages on their way to the workers.

A message for a worker is framed and added to that worker's buffer; the
loop flushes every buffer that has something (`dirty`) once per turn,
and asks to be told when a full pipe has room again. The dispatcher never
waits on a worker.
"""

from . import bodyview as _bodyview
from . import channel as _channel
from . import log as _log
from . import messages as _msg
from .loop import EVENT_WRITE
from .pending import PENDING_COMPLETED


_BODY = 7  # where a request message holds its body (messages.M_REQUEST)
_PLAIN_BODIES = (type(None), bytes, bytearray)


def _pack_request(message):
    # the body travels after the pickle, not copied into it (channel.py)
    return _channel.pack_parts(message, _BODY)


def queued_message(item, seq):
    """The M_REQUEST tuple of a Request put on a pool's queue. Its
    headers reach the worker as an HTTP request's do, with lower-case
    names (so `request.content_type` and `request.cookies` find theirs),
    and a content_type given to Request() among them."""
    return (_msg.M_REQUEST, seq, item.request_id, item.method, item.path,
            item.query, _queued_headers(item), item.data, True,
            item.remote_address, item.context)


def _queued_headers(item):
    given = item.headers or {}
    try:
        headers = {str(name).lower(): value for name, value in (
            given.items() if hasattr(given, 'items') else given)}
    except (TypeError, ValueError):  # not headers at all: sent as they are
        return given
    content_type = item.content_type or headers.get('content-type')
    if content_type:
        headers['content-type'] = content_type
    return headers


class Delivery:
    """The outgoing side of every worker's pipes (for `core`)."""

    def __init__(self, core):
        self.core = core
        self.log = core.log
        self.dirty = set()

    def send_request(self, handle, seq, item):
        """Queue `item` on `handle`'s pipe; False when it cannot be sent."""
        frame = self.request_frame(handle, seq, item)
        if frame is None:
            return False
        handle.out.add_parts(*frame)
        self.dirty.add(handle)
        return True

    def request_frame(self, handle, seq, item):
        if not hasattr(item, 'client'):  # a Request put on the queue
            try:
                return self.pack(handle, queued_message(item, seq))
            except Exception as err:  # pylint: disable=broad-except
                self.log.error("request to %s %s cannot be sent (%r); "
                               "dropped", item.method, _log.client_text(item.path),
                               err)
                return None
        client = item.client
        if not client.is_open:
            return None
        try:
            remote = client.client_ip
        except Exception:  # pylint: disable=broad-except
            remote = None
        message = (_msg.M_REQUEST, seq, item.request_id, client.method,
                   client.path, client.query, client.headers, client.body,
                   False, remote, item.context)
        try:
            try:
                return self.pack(handle, message)
            except _bodyview.PassError:
                raise
            except Exception as err:  # pylint: disable=broad-except
                if item.context is None:
                    raise
                self.log.error("on_request_accepted() returned a context "
                               "that cannot be sent to a worker (%r); "
                               "request %s goes with context=None", err,
                               item.request_id)
                item.context = None
                return self.pack(handle, message[:-1] + (None,))
        except Exception as err:  # pylint: disable=broad-except
            self.log.error("request %s cannot be sent to %s: %r",
                           item.request_id, handle.name, err)
            status = 503 if isinstance(err, _bodyview.PassError) else 500
            self.core.fail(item, status, None, PENDING_COMPLETED)
            return None

    @staticmethod
    def pack(handle, message):
        """The frame of `message`; the descriptors of the spooled bodies
        in it go over the worker's descriptor socket first (bodyview.py).
        A body of bytes (or none) without a context holds no descriptor."""
        if message[-1] is None and type(message[_BODY]) in _PLAIN_BODIES:
            return _pack_request(message)
        return _bodyview.pack_passing(message, _pack_request,
                                      handle.file_fd)

    def tell(self, handle, frame):
        if handle.alive and handle.out is not None:
            handle.out.add(frame)
            self.dirty.add(handle)

    def mark_dirty(self, handle):
        self.dirty.add(handle)

    def flush_workers(self):
        dirty = self.dirty
        self.dirty = set()
        for handle in dirty:
            out = handle.out
            if out is None:
                continue
            try:
                done = out.flush()
            except OSError:
                out.clear()
                continue  # the worker is gone; reaping handles it
            self.want_writable(handle, not done)
            if handle in self.core.ws.paused:
                self.core.ws.drained(handle)

    def want_writable(self, handle, want):
        if want == handle.writing:
            return
        handle.writing = want
        if want:
            try:
                self.core.loop.workers.register(handle.to_fd, EVENT_WRITE, handle)
            except (KeyError, ValueError, OSError):
                pass
        else:
            self.core.loop.workers.unregister(handle.to_fd)
