"""HTTP/1.1 response heads and the keep-alive rule, without I/O: values in,
bytes out.

- `response_head()`: the head of a complete response (Content-Length and
  Connection set here, CR/LF in a header or cookie refused);
- `stream_head()`: the head of a streamed response, which ends when the
  connection closes;
- `keep_alive()`: whether a connection stays open after a response.
"""

import email.utils as _email_utils
import json as _json
import re as _re
import time as _time

import uhttp.server as _server
from uhttp.server import STATUS_CODES as _REASONS

_STATUS_LINES = {}
_KEEP = 'connection: keep-alive\r\n\r\n'
_CLOSE = 'connection: close\r\n\r\n'
# a head's last line: (kept open, closing); a head with an Upgrade header
# names it in Connection too (RFC 9110 7.8: the 426 of a WebSocket route)
_ENDS = (_KEEP, _CLOSE)
_ENDS_UPGRADE = ('connection: upgrade, keep-alive\r\n\r\n',
                 'connection: upgrade, close\r\n\r\n')
# response headers that a stream head sets itself
_STREAM_OWN = frozenset(('content-length', 'connection', 'transfer-encoding'))


def status_line(status):
    """'HTTP/1.1 <status> <reason>\\r\\n' (uhttp-server's reason phrases; an
    unknown status has an empty one)."""
    line = _STATUS_LINES.get(status)
    if line is None:
        reason = _REASONS.get(status, '')
        line = _STATUS_LINES[status] = f'HTTP/1.1 {status} {reason}\r\n'
    return line


_date = [0, '']  # the second, and its Date header line


def date_line():
    """'date: <IMF-fixdate>\r\n' for now (RFC 9110 6.6.1: an origin
    server with a clock sends it), formatted once a second."""
    now = int(_time.time())
    if now != _date[0]:
        _date[1] = f'date: {_email_utils.formatdate(now, usegmt=True)}\r\n'
        _date[0] = now
    return _date[1]


def http_date():
    """The Date header's value for now."""
    return date_line()[6:-2]


def final_status(status):
    """True for an int status a complete answer may have: 200..599 (a 1xx
    is interim; bool is not a status)."""
    return (not isinstance(status, bool) and isinstance(status, int)
            and 200 <= status <= 599)


def bodiless(status):
    """True for a status whose response has no body and no Content-Length
    (1xx, 204 No Content, 304 Not Modified)."""
    return status < 200 or status in (204, 304)


def contentless(status):
    """True for a status whose response carries no body: the bodiless ones
    and 205 Reset Content (which says Content-Length: 0)."""
    return status < 200 or status in (204, 205, 304)


def keep_alive(protocol, asked, served, max_requests, closing=False,
               answer=None):
    """Whether the connection stays open after this response.

    `asked` is the request's Connection header ('' when absent), a list
    of options: HTTP/1.1 stays open unless 'close' is one of them,
    HTTP/1.0 only when 'keep-alive' is (and 'close' is not). A
    connection that has `served` `max_requests` requests closes, so does
    every one while the server is `closing`. `answer`, the
    response's own Connection header (None when absent), can only close it:
    anything but 'keep-alive' does.
    """
    if closing:
        return False
    if answer is not None and answer.lower() != 'keep-alive':
        return False
    asked = asked.lower()
    if ',' in asked:  # a list of options: 'close' among them closes
        options = [option.strip() for option in asked.split(',')]
        if 'close' in options:
            return False
        asked = 'keep-alive' if 'keep-alive' in options else ''
    if protocol == 'HTTP/1.1':
        keep = asked != 'close'
    else:
        keep = asked == 'keep-alive'
    return keep and served < max_requests


# the header names respond() may set itself unless they are given, and
# looks for (Upgrade: named in Connection then, see named_upgrade())
_RESPOND_OWN = frozenset(('content-type', 'content-length', 'connection',
                          'transfer-encoding', 'date', 'upgrade'))


def framing_lower(headers):
    """`headers` (a dict) with the names respond() looks for in lower
    case, so that a 'Content-Type' (or 'Date') given is the one sent
    instead of being sent beside its own."""
    for name in [name for name in headers
                 if name.lower() in _RESPOND_OWN and name != name.lower()]:
        headers[name.lower()] = headers.pop(name)
    return headers


def named_upgrade(headers, streaming=False):
    """respond()'s `headers` (names as framing_lower() leaves them) with
    'upgrade' among the Connection options when there is an Upgrade header
    (RFC 9110 7.8: a 426 names the protocol it wants in both), as
    response_head() does for the heads it makes."""
    if streaming or 'upgrade' not in headers:
        return headers
    value = str(headers.get('connection') or '')
    if 'upgrade' not in value.lower():
        headers['connection'] = f'upgrade, {value}' if value else 'upgrade'
    return headers


def respond_headers(status, headers, cookies):
    """respond()'s headers (a dict, a list of pairs or None) and cookies,
    checked and as text: (headers dict, cookies dict or None). The names
    respond() looks for are in lower case (framing_lower); Content-Length
    and Transfer-Encoding are its own (dropped); a repeated name or a list
    value is joined with ', ', except Set-Cookie, whose values become
    cookies (one line each). TypeError for a status that is not an int
    200..599; ValueError as header_fields() says."""
    if not final_status(status):
        raise TypeError(f"bad HTTP status {status!r} (an int 200..599)")
    cookies = check_cookies(cookies)
    joined = {}
    given = {}   # Set-Cookie headers, as cookies
    pairs = headers.items() if isinstance(headers, dict) else headers
    for name, value in joined_fields(pairs):
        lower = name.lower()
        if lower in _RESPOND_FRAMING:
            continue
        if lower == 'set-cookie':
            key, _, rest = value.partition('=')
            given[key.strip()] = rest
            continue
        joined[name] = value
    if given:
        cookies = {**(cookies or {}), **given}
    return framing_lower(joined), cookies


_RESPOND_FRAMING = frozenset(('content-length', 'transfer-encoding'))

# why respond() is refused while user code runs for an answered request:
# [False] a second answer (sync handler, do_check), [True] one in a hook
# whose request the worker or a static file answers
REFUSED_RESPOND = (
    "respond() called again: this request was answered already",
    "respond() is refused here: this request is answered by its worker "
    "or its static file")


def check_cookies(cookies):
    """`cookies` (name -> value, None deleting it) checked as cookie lines
    take them: a dict of text, names tokens, no control characters; None
    for none. TypeError or ValueError naming the cookie."""
    if not cookies:
        return None
    if not isinstance(cookies, dict):
        raise TypeError("cookies must be a dict of name -> value, not "
                        f"{type(cookies).__name__}")
    checked = {}
    for name, value in cookies.items():
        name = name if type(name) is str else _text(name)
        if value is not None:
            value = value if type(value) is str else _text(value)
        if _bad_value(name) or (value is not None and _bad_value(value)):
            raise ValueError(f"cookie {name!r} contains CR or LF")
        if not _TOKEN.match(name):
            raise ValueError(f"cookie name {name!r} is not a token")
        if value is not None and _CONTROL.search(value):
            raise ValueError(f"cookie {name!r} contains a control character")
        checked[name] = value
    return checked


_JSON_KINDS = (dict, list, tuple, int, float)  # what respond() sends as JSON
to_json = _json.JSONEncoder(allow_nan=False).encode  # NaN, inf: no JSON


def respond_data(headers, data):
    """uhttp-server's encoding of respond()'s data, with TypeError (a bug
    in the caller, a 500) instead of its 415 for a type it cannot send,
    and ValueError for NaN or infinity, which JSON has no word for (they
    would go out as a body no JSON parser reads)."""
    if isinstance(data, _JSON_KINDS):
        try:
            body = to_json(data).encode('utf-8')
        except ValueError as err:
            raise ValueError(f"respond() cannot send {err}") from None
        if _server.CONTENT_TYPE not in headers:
            headers[_server.CONTENT_TYPE] = _server.CONTENT_TYPE_JSON
        headers[_server.CONTENT_LENGTH] = len(body)
        return body
    try:
        return _server.encode_response_data(headers, data)
    except _server.HttpErrorWithResponse:
        raise TypeError("respond() cannot send data of type "
                        f"{type(data).__name__}") from None


def response_head(status, headers, cookies, length, keep, dated=True):
    """The head of a complete response with a body of `length` bytes, and
    whether the connection stays open: (bytes, keep).

    `headers` is a list of (name, value), sent in order; their
    Content-Length, Transfer-Encoding and Connection are replaced by this
    function's (a Connection other than 'keep-alive' turns `keep` off).
    `cookies` maps a name to a Set-Cookie value (None deletes the
    cookie). Bodiless
    statuses get no Content-Length. A Date goes in unless `dated` is
    false (a head kept to be sent later). Raises ValueError, naming it,
    for a header or cookie that holds CR or LF.
    """
    if status == 205:   # Reset Content: no content, and a length of 0
        length = 0
    known = None
    if not cookies:
        key = (status, tuple(headers) if headers else ())
        try:
            known = _HEADS.get(key)
            if known is None:
                known = _remember_head(key)
        except TypeError:  # a header that cannot be a key: built each time
            known = None
    if known is not None:
        start, own_keep, bodied, own_date, ends = known
        keep = keep and own_keep
        date = date_line() if dated and not own_date else ''
        end = ends[0] if keep else ends[1]
        return (f'{start}{date}content-length: {length}\r\n{end}' if bodied
                else start + date + end).encode(
                    'utf-8', 'surrogateescape'), keep
    parts, own_keep, own_date, ends = _head_lines(status, headers)
    keep = keep and own_keep
    if cookies:
        _cookie_lines(parts, cookies)
    if dated and not own_date:
        parts.append(date_line())
    if not bodiless(status):
        parts.append(f'content-length: {length}\r\n')
    parts.append(ends[0] if keep else ends[1])
    return ''.join(parts).encode('utf-8', 'surrogateescape'), keep


def header_fields(headers):
    """(name, lower name, value) of each header given, as text: bytes are
    read as Latin-1, numbers and the like by str(), and a list or tuple
    value gives one line per item. Raises ValueError, naming the header,
    for CR or LF, another control character, a name that is not a token,
    or a value of None."""
    for name, value in headers or ():
        if type(name) is not str:
            name = _text(name)
        if _bad_value(name):
            raise ValueError(f"header {name!r} contains CR or LF")
        if not _TOKEN.match(name):
            raise ValueError(f"header name {name!r} is not a token")
        lower = name.lower()
        values = value if isinstance(value, (list, tuple)) else (value,)
        for item in values:
            if item is None:
                raise ValueError(f"header {name!r} has no value (None)")
            item = item if type(item) is str else _text(item)
            if _bad_value(item):
                raise ValueError(f"header {name!r} contains CR or LF")
            bad = _CONTROL.search(item)
            if bad:
                raise ValueError(
                    f"header {name!r} contains a control character"
                    if bad.group() < '\ud800' else f"header {name!r} "
                    "contains text that cannot be sent (a lone surrogate)")
            yield name, lower, item


def joined_fields(headers):
    """header_fields() as a list of (name, value) lines, a repeated name
    (in any case) or a list value joined with ', ' at its first place,
    except Set-Cookie, which stays one line per value."""
    lines = []
    where = {}   # lower name -> its index in lines
    for name, lower, value in header_fields(headers):
        at = where.get(lower)
        if at is None:
            if lower != 'set-cookie':
                where[lower] = len(lines)
            lines.append((name, value))
        else:
            lines[at] = (lines[at][0], f'{lines[at][1]}, {value}')
    return lines


def _text(value):
    # bytes stay those bytes on the wire: UTF-8 decodes as itself, any
    # other byte as a lone surrogate that encoding a head
    # with 'surrogateescape' turns back into it
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode('utf-8', 'surrogateescape')
    return str(value)


def _head_lines(status, headers):
    """The status line and the header lines of a complete response, without
    Content-Length and Connection; whether its own Connection header (if
    any) lets the connection stay open; whether it has its own Date; and
    its possible last lines, _ENDS or, with an Upgrade header, _ENDS_UPGRADE:
    (parts, keep, dated, ends). Raises ValueError as header_fields() does."""
    parts = [status_line(status)]
    keep = True
    dated = False
    ends = _ENDS
    for name, lower, value in header_fields(headers):
        if lower == 'content-length' or lower == 'transfer-encoding':
            continue  # the framing is this function's (RFC 9112 6.2)
        if lower == 'connection':
            keep = keep and value.lower() == 'keep-alive'
            continue
        if lower == 'date':
            dated = True
        elif lower == 'upgrade':
            ends = _ENDS_UPGRADE
        parts.append(f'{name}: {value}\r\n')
    return parts, keep, dated, ends


_HEADS = {}
_HEADS_MAX = 256


def _remember_head(key):
    """The head of (status, headers) without its length and Connection:
    (start, keep allowed, whether it has a body, whether it has its own
    Date, its last lines), remembered for the next response with the same
    status and headers when they are all text (a handler's answers repeat
    them). Raises ValueError as response_head() does."""
    status, headers = key
    parts, keep, dated, ends = _head_lines(status, headers)
    known = (''.join(parts), keep, not bodiless(status), dated, ends)
    if all(type(name) is str and type(value) is str
           for name, value in headers):
        # (only text: 1, 1.0 and True are equal keys that print apart)
        if len(_HEADS) >= _HEADS_MAX:
            _HEADS.clear()
        _HEADS[key] = known
    return known


def stream_head(status, headers, cookies, chunked=False):
    """The head of a streamed response: no Content-Length; the stream ends
    when the connection closes, and when `chunked` its body is framed in
    chunks too (each says its size, a last, empty one that the stream is
    whole). Content-Type defaults to
    text/event-stream and Cache-Control to no-cache (names matched
    without regard to case); the caller's Content-Length, Connection and
    Transfer-Encoding are dropped. Raises ValueError for CR/LF."""
    parts = [status_line(status)]
    names = set()
    for name, lower, value in header_fields(headers):
        if lower in _STREAM_OWN:
            continue
        names.add(lower)
        parts.append(f'{name}: {value}\r\n')
    if 'content-type' not in names:
        parts.append('content-type: text/event-stream\r\n')
    if 'cache-control' not in names:
        parts.append('cache-control: no-cache\r\n')
    if cookies:
        _cookie_lines(parts, cookies)
    if 'date' not in names:
        parts.append(date_line())
    if chunked:
        parts.append('transfer-encoding: chunked\r\n')
    parts.append(_CLOSE)
    return ''.join(parts).encode('utf-8', 'surrogateescape')


def asks_chunked(headers):
    """True when a stream's own headers ask for Transfer-Encoding:
    chunked (the stream's head then says it itself, see stream_head())."""
    return any(lower == 'transfer-encoding' and value.strip().lower() == (
        'chunked') for _, lower, value in header_fields(headers))


def chunk_bytes(data):
    """A stream chunk's bytes: str as UTF-8, bytes-like objects (bytearray,
    memoryview...) as they hold; anything else is a TypeError, never
    bytes(data), which makes an int so many NUL bytes and a list of ints
    bytes."""
    if isinstance(data, bytes):
        return data
    if isinstance(data, str):
        return data.encode('utf-8')
    try:
        with memoryview(data) as view:
            return view.tobytes()
    except TypeError:
        raise TypeError("send_chunk() takes bytes, a bytes-like object or "
                        f"str, not {type(data).__name__}") from None


def _cookie_lines(parts, cookies):
    for name, value in check_cookies(cookies).items():
        value = '; Max-Age=0' if value is None else value
        parts.append(f'set-cookie: {name}={value}\r\n')


def _bad_value(text):
    return '\r' in text or '\n' in text


_TOKEN = _re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
# control characters (tab is allowed), and lone surrogates but those that
# stand for bytes (_text): text that has no bytes to be sent as
_CONTROL = _re.compile('[\x00-\x08\x0a-\x1f\x7f\ud800-\udc7f\udd00-\udfff]')
