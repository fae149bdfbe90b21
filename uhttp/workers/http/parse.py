"""HTTP/1.x requests, parsed without I/O: bytes in, values or ProtocolError out.

- `head_end()` finds where a request head ends in a receive buffer;
- `parse_head()` validates and parses a whole head into a `RequestHead`
  (request line, target, header fields, how the body is framed);
- `ChunkedBody` decodes a chunked body fed in pieces of any size.

Nothing here touches a socket or uhttp-server: a refused request raises
`ProtocolError(status, message)`, and the connection glue answers it.
"""

import re as _re
from urllib.parse import unquote_to_bytes as _unquote_to_bytes

METHODS = frozenset((
    'CONNECT', 'DELETE', 'GET', 'HEAD', 'OPTIONS', 'PATCH', 'POST', 'PUT',
    'TRACE'))
PROTOCOLS = frozenset(('HTTP/1.0', 'HTTP/1.1'))

MAX_LENGTH_DIGITS = 100  # a longer Content-Length is over any body limit
FIRST_LINE_LIMIT = 512  # what of a refused head's first line is kept

# how a request body is framed (RequestHead.framing)
NO_BODY = 'none'
LENGTH = 'length'
CHUNKED = 'chunked'

_REQUEST_LINE = _re.compile(rb'[A-Z]+ [\x21-\x7e]+ HTTP/[0-9]\.[0-9]\Z')
_HEADER_LINE = _re.compile(
    rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+:[\t\x20-\x7e\x80-\xff]*\Z")
# a whole well-formed head: optional blank lines, the request line, header
# lines (token ':' visible text), the empty line; CRLF or LF endings
_HEAD_BLOCK = _re.compile(
    rb"(?:\r?\n)*[A-Z]+ [\x21-\x7e]+ HTTP/[0-9]\.[0-9]\r?\n"
    rb"(?:[!#$%&'*+\-.^_`|~0-9A-Za-z]+:[\t\x20-\x7e\x80-\xff]*\r?\n)*"
    rb"\r?\n\Z")
_BAD_PERCENT = _re.compile(r'%(?![0-9A-Fa-f]{2})')
# chunk size, optional chunk extensions of visible characters
_CHUNK_SIZE = _re.compile(rb'([0-9A-Fa-f]+)[ \t]*(?:;[\t\x20-\x7e]*)?\Z')


class ProtocolError(Exception):
    """A request refused with HTTP `status`; `message` says why (None when
    the status says it all)."""

    def __init__(self, status, message=None):
        super().__init__(status, message)
        self.status = status
        self.message = message

    def __str__(self):
        if self.message is None:
            return str(self.status)
        return f'{self.status}: {self.message}'


class RequestHead:
    """A parsed request head.

    `target` is the request target as sent, `path` its decoded path,
    `raw_query` the query bytes after '?' (None without '?') and `query`
    what the `parse_query` given to parse_head() made of them. `headers`
    has lower-case names, repeated fields joined ('; ' for cookie, else
    ', '); `repeated` maps those names to every value (None: no repeats).
    `framing` is NO_BODY, LENGTH (`content_length` bytes) or CHUNKED;
    `content_length` is None unless framing is LENGTH. `expect_continue`:
    the client waits for '100 Continue' before it sends a body.
    """

    __slots__ = ('method', 'target', 'protocol', 'path', 'raw_query', 'query',
                 'headers', 'repeated', 'framing', 'content_length',
                 'expect_continue')

    def __init__(self, method, target, protocol, path, raw_query, query,
                 headers, repeated, framing, content_length, expect_continue):
        self.method = method
        self.target = target
        self.protocol = protocol
        self.path = path
        self.raw_query = raw_query
        self.query = query
        self.headers = headers
        self.repeated = repeated
        self.framing = framing
        self.content_length = content_length
        self.expect_continue = expect_continue

    def __repr__(self):
        return (f'<RequestHead {self.method} {self.target!r} {self.protocol} '
                f'{self.framing}>')


def head_end(buffer, scanned=0, limit=None):
    """Index just past the empty line that ends the head at the start of
    `buffer`, or -1 while it is incomplete.

    Lines end in CRLF or LF, whichever comes first. `scanned` is how much
    of the buffer an earlier call already searched (the search resumes a
    few bytes before it, so a delimiter split between reads is found). A
    head longer than `limit` bytes is a 431, once `limit` bytes are in
    (the buffer may hold more: requests pipelined after it).
    """
    start = scanned - 3
    if start < 0:
        start = 0
    stop = len(buffer) if limit is None else min(len(buffer), limit)
    crlf = buffer.find(b'\n\r\n', start, stop)
    if crlf >= 0:
        # an LF-only end only counts before it: the search stops there
        # instead of running through the body bytes read with the head
        lf = buffer.find(b'\n\n', start, crlf + 1)
        return crlf + 3 if lf < 0 else lf + 2
    lf = buffer.find(b'\n\n', start, stop)
    if lf >= 0:
        return lf + 2
    if limit is not None and len(buffer) >= limit:
        raise ProtocolError(
            431, f"Headers too large: {len(buffer)} bytes (max {limit})")
    return -1


def asks_head(block):
    """True when a head block (even a malformed one) is a HEAD request:
    its answer, refusals included, carries no body."""
    return block.lstrip(b'\r\n').startswith(b'HEAD ')


def first_line(block, limit=FIRST_LINE_LIMIT):
    """The first line of a head block (even a malformed or partial one),
    as text of at most `limit` characters, for telling a refusal apart."""
    line = block.lstrip(b'\r\n')[:limit].partition(b'\n')[0]
    return line.rstrip(b'\r').decode('latin-1')


def parse_head(block, parse_query=None):
    """Parse a complete head block (bytes up to and with its empty line).

    A head that does not match the strict grammar (token field names
    followed directly by ':', no control characters but tab, ASCII only)
    is a 400 that names the bad line. `parse_query(raw_query)` builds
    RequestHead.query; it runs before the header fields are read, so a
    bad query is what a request with several faults is refused for.
    """
    lines = None
    if _HEAD_BLOCK.match(block) is not None:
        try:
            lines = block.decode('ascii').replace('\r\n', '\n').split('\n')
        except UnicodeDecodeError:
            pass  # obs-text in a value: refuse_head() names the line
    if lines is None:
        refuse_head(block)
    while not lines[0]:
        del lines[0]  # empty lines before a request line
    method, target, protocol = lines[0].split(' ')
    if method not in METHODS:
        raise ProtocolError(501)
    if protocol not in PROTOCOLS:
        raise ProtocolError(505)
    path, mark, query = target.partition('?')
    if not path or path[0] != '/':
        path = origin_path(path, method)
    if '%' in path:
        path = unquote_path(path)
    raw_query = query.encode('ascii') if mark else None
    parsed = None
    if parse_query is not None and raw_query is not None:
        parsed = parse_query(raw_query)
    headers, repeated = parse_fields(lines)
    framing, length, expect = body_framing(protocol, headers)
    return RequestHead(method, target, protocol, path, raw_query, parsed,
                       headers, repeated, framing, length, expect)


def refuse_head(block):
    """Raise the 400 that says what is wrong with a head block that is not
    well formed: the request line, else the first bad header line."""
    lines = block.split(b'\n')
    for index, line in enumerate(lines):
        if line.endswith(b'\r'):
            lines[index] = line[:-1]
    while lines and not lines[0]:
        del lines[0]
    if not lines or not _REQUEST_LINE.match(lines[0]):
        first = lines[0] if lines else b''
        raise ProtocolError(
            400, "Malformed request line: "
                 f"{first[:200].decode('utf-8', 'replace')!r}")
    for line in lines[1:]:
        if line and not _HEADER_LINE.match(line):
            raise ProtocolError(
                400, "Malformed header line: "
                     f"{line[:200].decode('utf-8', 'replace')!r}")
        try:
            line.decode('ascii')
        except UnicodeDecodeError:
            raise ProtocolError(
                400, "Invalid non-ASCII characters in header: "
                     f"{line[:200].decode('utf-8', 'replace')}") from None
    raise ProtocolError(400, "Malformed request head")


def origin_path(target, method):
    """The path of a request target that is not origin-form: absolute-form
    ('http://host/path', as sent to proxies) gives its path; '*' is kept for
    OPTIONS; anything else is a 400."""
    lower = target[:8].lower()
    if lower.startswith('http://') or lower.startswith('https://'):
        rest = target.split('//', 1)[1]
        slash = rest.find('/')
        return rest[slash:] if slash >= 0 else '/'
    if target == '*' and method == 'OPTIONS':
        return target
    raise ProtocolError(400, f"Invalid request target: {target[:200]!r}")


def unquote_path(path):
    """Percent-decode a URL path strictly: %XX only, UTF-8 only; '+' is a
    plus sign (it means a space only in a query)."""
    if _BAD_PERCENT.search(path):
        raise ProtocolError(400, "Invalid URL path encoding")
    try:
        return _unquote_to_bytes(path).decode('utf-8')
    except UnicodeDecodeError:
        raise ProtocolError(400, "Invalid URL path encoding") from None


def parse_fields(lines):
    """(headers, repeated) from the str lines of a well-formed head (the
    request line first; reading stops at the empty line). Names are
    lower-cased, values stripped; a repeated Content-Length or Host is a
    400."""
    headers = {}
    repeated = None
    for line in lines[1:]:
        if not line:
            break
        name, _, value = line.partition(':')
        key = name.lower()
        value = value.strip()
        if key in headers:
            if key == 'content-length' or key == 'host':
                raise ProtocolError(400, f"Duplicate {key} header")
            if repeated is None:
                repeated = {}
            repeated.setdefault(key, [headers[key]]).append(value)
            value = headers[key] + ('; ' if key == 'cookie' else ', ') + value
        headers[key] = value
    return headers, repeated


def _check_codings(codings):
    """Transfer codings written other than as 'chunked'. Empty list items
    are ignored (RFC 9110 5.6.1: 'chunked,' is chunked). A request whose
    last coding is not chunked has no length anyone can tell, and chunked
    applied twice is malformed: 400 (RFC 9112 6.1, 6.3). Codings before a
    final chunked that this server does not decode (gzip): 501."""
    names = [name for name in (part.strip() for part in codings.split(','))
             if name]
    if names == ['chunked']:
        return
    if not names or names[-1] != 'chunked' or names.count('chunked') > 1:
        raise ProtocolError(400, "Transfer-Encoding must end with one "
                                 "chunked")
    raise ProtocolError(501, "Transfer-Encoding other than chunked")


def body_framing(protocol, headers):
    """(framing, content_length, expect_continue) for a request's headers.

    HTTP/1.1 needs Host. Transfer-Encoding must be exactly 'chunked' (else
    _check_codings() says 400 or 501), comes
    without Content-Length (both at once is how requests are smuggled) and
    not in HTTP/1.0. Content-Length is decimal digits only. A client asks
    for '100 Continue' only when a body follows, and not in HTTP/1.0.
    """
    if protocol == 'HTTP/1.1' and 'host' not in headers:
        raise ProtocolError(400, "Host header is required for HTTP/1.1")
    if 'transfer-encoding' in headers:
        if protocol == 'HTTP/1.0':
            raise ProtocolError(400, "Transfer-Encoding in an HTTP/1.0 request")
        if 'content-length' in headers:
            raise ProtocolError(400, "Both Transfer-Encoding and Content-Length")
        codings = headers['transfer-encoding'].strip().lower()
        if codings != 'chunked':
            _check_codings(codings)
        return CHUNKED, None, _asks_continue(headers)
    length = headers.get('content-length')
    if length is None:
        return NO_BODY, None, False
    if not length.isdigit():
        raise ProtocolError(400, f"Wrong content length {length}")
    digits = length.lstrip('0')  # (int() refuses 4300 digits and more)
    if len(digits) > MAX_LENGTH_DIGITS:
        raise ProtocolError(413, f"Content-Length of {len(digits)} digits")
    length = int(digits or '0')
    return LENGTH, length, bool(length) and protocol != 'HTTP/1.0' and (
        _asks_continue(headers))  # (RFC 9110 10.1.1: 1.0 ignores it)


def _asks_continue(headers):
    return headers.get('expect', '').lower() == '100-continue'


def _check_data_end(buffer, pos, end):
    """What follows a chunk's data must be its line end (CRLF, or a bare
    LF): anything else is refused as it arrives, not waited on for a
    newline that may never come."""
    first = buffer[pos]
    if first == 0x0a or (first == 0x0d and (
            pos + 1 == end or buffer[pos + 1] == 0x0a)):
        return
    raise ProtocolError(400, "Chunked body: data longer than its chunk size")


class ChunkedBody:
    """Decoder of a chunked request body (RFC 9112 section 7.1).

    `feed(buffer)` consumes what it can and returns how many bytes it used;
    `done` tells when the last chunk and the trailers are in. Malformed
    framing is a 400, a body above `limit` bytes a 413, trailers above
    `trailer_limit` bytes (the head's limit: they are a header section) a
    431.
    """

    _SIZE, _DATA, _DATA_END, _TRAILER = range(4)
    MAX_LINE = 4096

    def __init__(self, limit, trailer_limit=None):
        self._limit = limit
        self._trailer_limit = trailer_limit
        self._trailer_size = 0
        self._parts = []
        self._held = 0
        self._size = 0
        self._left = 0
        self._state = self._SIZE
        self.done = False
        self.lines = 0   # lines (sizes, ends of data, trailers) decoded
        # for its reader: the line count and the bytes read at its last read
        self.lines_read = self.last_read = 0

    def body(self):
        return b''.join(self._parts)

    @property
    def held(self):
        """Bytes of data decoded and not taken yet."""
        return self._held

    def take(self):
        """The data decoded so far (a list of bytes), no longer held."""
        parts, self._parts, self._held = self._parts, [], 0
        return parts

    def feed(self, buffer):
        pos = 0
        end = len(buffer)
        while pos < end and not self.done:
            if self._state == self._DATA:
                take = min(self._left, end - pos)
                self._parts.append(bytes(buffer[pos:pos + take]))
                self._held += take
                pos += take
                self._left -= take
                if not self._left:
                    self._state = self._DATA_END
                continue
            if self._state == self._DATA_END:
                _check_data_end(buffer, pos, end)
            newline = buffer.find(b'\n', pos)
            if newline < 0:
                if end - pos > self.MAX_LINE:
                    raise ProtocolError(400, "Chunked body: line too long")
                break
            line = bytes(buffer[pos:newline])
            pos = newline + 1
            self.lines += 1
            if line.endswith(b'\r'):
                line = line[:-1]
            self._line(line)
        return pos

    def _line(self, line):
        """One line outside chunk data: a size line, the end of a chunk's
        data, or a trailer field (the empty line ends the body)."""
        if self._state == self._SIZE:
            self._start_chunk(line)
        elif self._state == self._DATA_END:
            if line:
                raise ProtocolError(
                    400, "Chunked body: data longer than its chunk size")
            self._state = self._SIZE
        elif not line:  # the empty line after the trailers
            self.done = True
        elif not _HEADER_LINE.match(line):
            raise ProtocolError(400, "Chunked body: malformed trailer")
        else:
            self._trailer_size += len(line) + 2
            limit = self._trailer_limit
            if limit is not None and self._trailer_size > limit:
                raise ProtocolError(
                    431, f"Trailers too large: over {limit} bytes")

    def _start_chunk(self, line):
        found = _CHUNK_SIZE.match(line)
        if found is None or len(found.group(1)) > 16:
            raise ProtocolError(
                400, f"Chunked body: bad chunk size line {line[:40]!r}")
        size = int(found.group(1), 16)
        if size == 0:
            self._state = self._TRAILER
            return
        self._size += size
        if self._size > self._limit:
            raise ProtocolError(413)
        self._left = size
        self._state = self._DATA
