"""Large answers through shared memory instead of the pipe.

A handler's bytes (or text, or JSON) answer above the dispatcher's
spool_threshold is written by the worker into an anonymous shared-memory
file (memfd, sealed against changes), whose descriptor is passed over the
worker's descriptor socket before W_SHARED_RESPONSE names it, as a file
answer's is (files.py). The dispatcher sends it with os.sendfile() and
closes it; nothing of the body is pickled, copied through the pipe or
held in the dispatcher. `on_response()` still sees `response.data` (for
a bytes answer, a SpooledBytes view of the shared memory).

Where memfd is missing, or passing fails, the answer takes the pipe.
"""

import fcntl as _fcntl
import os as _os

from . import channel as _channel
from . import files as _files
from . import messages as _msg
from . import replies as _replies
from .bodyview import SpooledBytes
from .fds import close_fd as _close_fd
from .pending import PENDING_COMPLETED

_MEMFD_FLAGS = getattr(_os, 'MFD_CLOEXEC', 0) | getattr(
    _os, 'MFD_ALLOW_SEALING', 0)
_SEALS = sum(getattr(_fcntl, name, 0) for name in (
    'F_SEAL_SEAL', 'F_SEAL_SHRINK', 'F_SEAL_GROW', 'F_SEAL_WRITE'))
NEVER = float('inf')


def threshold_for(pool):
    """Bytes above which `pool`'s workers answer through shared memory
    (the dispatcher's spool_threshold; never without memfd)."""
    if not hasattr(_os, 'memfd_create'):
        return NEVER
    core = pool.core
    if core is None:
        return NEVER
    return core.settings.http_options.get('spool_threshold', NEVER)


def wanted(message, threshold, sock):
    """True for a W_RESPONSE whose body goes through shared memory."""
    return (message[0] == _msg.W_RESPONSE and sock is not None
            and message[1] != -1 and len(message[4]) > threshold)


def shared_memory(body):
    """A sealed memfd holding `body` (OSError when it cannot be made)."""
    fd = _os.memfd_create('uhttp-answer', _MEMFD_FLAGS)
    try:
        _channel.write_all(fd, body)
        if _SEALS:
            try:
                _fcntl.fcntl(fd, _fcntl.F_ADD_SEALS, _SEALS)
            except OSError:
                pass
    except BaseException:
        _os.close(fd)
        raise
    return fd


def share(message, sock):
    """In a worker: the W_SHARED_RESPONSE for the W_RESPONSE `message`,
    its body's descriptor passed on `sock` first (a SpooledBytes body, a
    request's own spooled body answered back, passes its own file);
    `message` itself when that cannot be done (the pipe carries it)."""
    request_id, status, headers, body, kind, cookies = message[1:7]
    try:
        if isinstance(body, SpooledBytes):  # a body's own file goes back
            fd = _os.dup(body.fileno())
        else:
            fd = shared_memory(body)
    except OSError:
        return message
    try:
        _files.send_fd(sock, request_id, fd)
    except OSError:
        return message
    finally:
        _os.close(fd)
    return (_msg.W_SHARED_RESPONSE, request_id, status, headers, kind,
            cookies) + tuple(message[7:])


# -- dispatcher side -------------------------------------------------------------

def relay_shared(relay, handle, message):
    """In the dispatcher: a worker's W_SHARED_RESPONSE, sent to its client
    with sendfile() (`relay` is the dispatcher's Relay)."""
    request_id = message[1]
    fd = handle.take_file(request_id)
    pending = relay.answered(handle, request_id, message, 6)
    if pending is None:
        _close(fd)
        return
    client = pending.client
    hold = relay.hooks.after_answer
    if hold:
        client.hold()
    try:
        _answer(relay, handle, pending, fd, message)
    finally:
        if hold:
            client.release()


def _answer(relay, handle, pending, fd, message):
    request_id, status, headers, kind, cookies = message[1:6]
    client = pending.client
    view = None
    if fd is None:
        relay.log.error("%s answered request %s through shared memory but "
                        "its descriptor never came", handle.name, request_id)
        status = _answer_500(client, pending)
    else:
        try:
            size = _os.fstat(fd).st_size
            if relay.hooks.overridden('on_response'):
                view = _view_of(relay, fd, size, request_id)
        except BaseException:
            _close(fd)
            raise
        status = _send(relay, pending, fd, size, status, headers, cookies)
    pending.status = status
    pending.size = 0 if fd is None or pending.method == 'HEAD' else size
    response = None
    if view is not None:
        body = view if kind == _msg.BODY_BYTES else view[:]
        response = _msg.response_from_wire(
            request_id, status, headers, body, kind, cookies)
    relay.core.end(pending, PENDING_COMPLETED, response)


def _view_of(relay, fd, size, request_id):
    """What on_response() sees of the answer in `fd`: a SpooledBytes on a
    descriptor of its own, or, when none can be had (the open-file limit
    is reached: mmap takes a descriptor too), a copy of its bytes; None
    when even that fails. The client's answer goes out either way."""
    try:
        copy = _os.dup(fd)
    except OSError as err:
        reason = err
    else:
        try:
            return SpooledBytes(copy, size)
        except (OSError, ValueError) as err:
            _close_fd(copy)
            reason = err
    relay.log.warning("no view of the answer to request %s for "
                      "on_response (%s); it gets a copy of its %d bytes",
                      request_id, reason, size)
    try:
        return _files.read_whole(fd)
    except (OSError, MemoryError) as err:
        relay.log.error("the answer to request %s could not be read for "
                        "on_response: %s", request_id, err)
        return None


def _send(relay, pending, fd, size, status, headers, cookies):
    """Send the answer whose body is `fd`; the status the client got."""
    client = pending.client
    if not client.is_open or client.pending is not pending:
        _close(fd)
        return status
    try:
        client.send_file(status, headers, cookies, fd, 0, size,
                         head=pending.method == 'HEAD',
                         close=relay.core.stopping)
    except ValueError as err:
        _close(fd)
        relay.log.error("response to request %s refused: %s",
                        pending.request_id, err)
        return _answer_500(client, pending)
    except Exception as err:  # pylint: disable=broad-except
        _close(fd)
        relay.core.front.connection_failed(client, err)
        client.pending = None
        client.close()
    return status


def _answer_500(client, pending):
    if client.is_open and client.pending is pending:
        client.pending = None
        _replies.answer_error(client, 500)
    return 500


def _close(fd):
    if fd is not None:
        _close_fd(fd)
