"""Answers the dispatcher gives a client itself: errors for requests it
refuses or fails, and the end of a stream it cuts short. Never raises: a
client that cannot be answered is closed, so nothing is left hanging.
"""

import json as _json
import math as _math

import uhttp.server as _server

from .http.canned import Canned
from .probe import probe_status

SHUTTING_DOWN = {'error': 'Server shutting down'}
# the 503 past max_pending, serialized once: shedding costs one send
TOO_MANY_PENDING = 'Too many pending requests'
SHED = Canned(503, [('retry-after', '1'),
                    ('content-type', _server.CONTENT_TYPE_JSON)],
              _json.dumps({'error': TOO_MANY_PENDING}).encode('utf-8'))


def error_body(status, text=None):
    return {'error': text or _server.STATUS_CODES.get(status, 'Error')}


def answer_error(client, status, text=None, headers=None, before=None):
    """Answer `status` unless the request was answered already (since
    `client.responses` was `before`, when given)."""
    count = client.responses
    if client.answered_since(count if before is None else before):
        return
    try:
        client.respond(error_body(status, text), status=status,
                       headers=headers)
    except Exception:  # pylint: disable=broad-except
        client.close()
        return
    if not client.answered_since(count):
        client.close()  # could not answer: never leave it hanging


def degraded_headers(pool, now):
    """The headers of a degraded pool's 503: Retry-After with the seconds
    until it recovers (`now` monotonic), or None when it stays degraded."""
    if pool.recovers_at is None:
        return None
    return {'retry-after': str(max(1, _math.ceil(pool.recovers_at - now)))}


def shed(client):
    """Answer a request that does not fit (max_pending) with SHED; the
    connection stays open by the usual keep-alive rule."""
    try:
        if client.send_canned(SHED):
            return
    except Exception:  # pylint: disable=broad-except
        pass
    client.close()  # could not answer: never leave it hanging


def end_for(pending, status, data=None, headers=None):
    """The client side of failing `pending`: its stream is closed, or it
    gets `status` with `data` (default {'error': <reason phrase>})."""
    client = pending.client
    if client.pending is not pending:
        return
    client.pending = None
    if pending.streaming:
        client.end_stream(whole=False)  # cut: no last chunk says it is whole
    elif client.is_open and not client.response_started:
        try:
            with probe_status(client) as probe:  # its size, for the log
                client.respond(data if data is not None else
                               error_body(status), status=status,
                               headers=headers)
            pending.size = probe.size
        except Exception:  # pylint: disable=broad-except
            client.close()


def refuse_while_stopping(client):
    client.respond(SHUTTING_DOWN, status=503,
                   headers={'connection': 'close', 'retry-after': '1'})
