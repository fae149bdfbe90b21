"""File responses: a handler answers with an open file, the dispatcher
sends it with os.sendfile().

The worker opens the file (a path may be deleted as soon as the handler
returns) and passes its descriptor to the dispatcher over the worker's
descriptor socket (a Unix SOCK_SEQPACKET pair, SCM_RIGHTS), tagged with
the request id; then it writes W_FILE_RESPONSE on its normal pipe. The
descriptor is always in the socket before the message that names it is
in the pipe, so when the dispatcher reads the message it drains the socket
(non-blocking) and finds the descriptor by request id, whatever order
threads of the worker sent several of them in.

Static files take the same way from the dispatcher's own mounts
(`serve_static()`): sendfile(), single ranges and conditional GET.

`parse_range()` and `content_disposition()` are pure (tested on their own).
"""

import array as _array
import email.utils as _email_utils
import fcntl as _fcntl
import mmap as _mmap
import os as _os
import socket as _socket
import stat as _stat
import struct as _struct
import tempfile as _tempfile
import urllib.parse as _urlparse

from . import log as _log
from . import messages as _msg
from . import static as _static
from .fds import close_fd as _close_fd
from .fileresponse import FileResponse

_TAG = _struct.Struct('>q')  # the request id that travels with a descriptor
_FD_SIZE = _array.array('i').itemsize
_O_ACCMODE = getattr(_os, 'O_ACCMODE', 3)
_PAGE = _mmap.PAGESIZE  # what a sysfs attribute file says it holds
_RECV_FLAGS = _socket.MSG_DONTWAIT | getattr(_socket, 'MSG_CMSG_CLOEXEC', 0)

UNSATISFIABLE = 'unsatisfiable'


def file_message(request_id, data, status, headers, cookies):
    """The W_FILE_RESPONSE for a FileResponse answer, still carrying it
    (item 5): the worker's runtime opens the file and sends its descriptor
    before the message (worker_messages). Raises ResponseError."""
    if status == 200:
        status = data.status
    _msg.check_status(status)
    headers = with_own_headers(_msg.check_headers(headers) or [], data)
    # the worker's runtime turns this into a descriptor and a message
    # without the FileResponse (files.worker_messages)
    return (_msg.W_FILE_RESPONSE, request_id, status, headers,
            _msg.check_cookies(cookies), data.__class__(
                data.path_or_file, data.content_type, data.download_name,
                None, status))


def with_own_headers(headers, response):
    """`headers` (a list of checked pairs, the answer's) followed by the
    FileResponse's own `headers` that they do not name; its content_type
    checked too. Raises ResponseError for a bad one."""
    extra = _msg.check_headers(response.headers) or []
    names = {name.lower() for name, _ in headers}
    headers += [item for item in extra if item[0].lower() not in names]
    if response.content_type is not None:
        _msg.check_headers([('content-type', response.content_type)])
    return headers


def planned(fd, status, request_headers, method, headers):
    """(status, headers, offset, length) of a file answer: for a 200 as
    plan() says (ranges, conditional GET), another status the whole file
    as it is."""
    if status == 200:
        return plan(fd, request_headers, method, headers)
    return status, headers, 0, _os.fstat(fd).st_size


def content_disposition(download_name):
    """`attachment; filename="..."` for `download_name`, with `filename*`
    (RFC 6266 / 5987) when the name is not plain ASCII; `attachment`
    alone for an empty name."""
    name = str(download_name).replace('\r', '').replace('\n', '')
    name = name.replace('/', '_').replace('\\', '_')
    if not name:   # an attachment without a name: the client picks one
        return 'attachment'
    fallback = ''.join(
        char if 0x20 <= ord(char) < 0x7f else '_' for char in name)
    fallback = fallback.replace('"', '_')
    value = f'attachment; filename="{fallback}"'
    if fallback != name:
        value += "; filename*=UTF-8''" + _urlparse.quote(name, safe='')
    return value


_FAR = 10 ** 18   # a byte position of more digits is past any file's end


def _position(digits):
    """A Range header's byte position; a number of more than 18 digits
    (which int() may refuse: 4300 and more) is past the end of any file,
    and so is _FAR."""
    digits = digits.lstrip('0')
    return int(digits or '0') if len(digits) <= 18 else _FAR


def parse_range(header, size):
    """The byte range a Range header asks of a `size`-byte file.

    Returns None to send the whole file (no header, not a bytes range,
    malformed, or several ranges), (first, last) inclusive, or
    UNSATISFIABLE (416).
    """
    if not header:
        return None
    unit, sep, spec = header.partition('=')
    if not sep or unit.strip().lower() != 'bytes':
        return None
    spec = spec.strip()
    if ',' in spec:
        return None  # several ranges: the whole file is a valid answer
    first, sep, last = spec.partition('-')
    first, last = first.strip(), last.strip()
    if not sep or (first and not first.isdigit()) or (
            last and not last.isdigit()) or not (first or last):
        return None
    if not first:  # a suffix: the last N bytes
        count = _position(last)
        if count == 0 or size == 0:
            return UNSATISFIABLE
        return max(0, size - count), size - 1
    start = _position(first)
    final = _position(last) if last else None
    if final is not None and final < start:
        return None  # invalid: ignored
    end = size - 1 if final is None else min(final, size - 1)
    if start >= size:
        return UNSATISFIABLE
    return start, end


# -- worker side ---------------------------------------------------------------

SIZELESS_LIMIT = 16 << 20  # read of a file whose size says 0


def open_file(response):
    """(fd, name) for a FileResponse, opened for reading and checked to be
    a regular file. Raises FileNotFoundError, IsADirectoryError or OSError
    (with a message for the log)."""
    source = response.path_or_file
    if isinstance(source, (str, bytes, _os.PathLike)):
        # O_NONBLOCK: a FIFO's open() would wait for a writer (the worker
        # stuck); it opens at once and is refused below. For a regular
        # file the flag changes nothing.
        fd = _os.open(source, _os.O_RDONLY | _os.O_NONBLOCK
                      | getattr(_os, 'O_CLOEXEC', 0))
    else:
        try:
            fd = descriptor_of(source)
        finally:
            try:
                source.close()
            except OSError:
                pass
    try:
        info = _os.fstat(fd)
        what = response.name() or type(source).__name__
        if _stat.S_ISDIR(info.st_mode):
            raise IsADirectoryError(f"{what!r} is a directory")
        if not _stat.S_ISREG(info.st_mode):
            raise OSError(f"{what!r} is not a regular file")
        if _fcntl.fcntl(fd, _fcntl.F_GETFL) & _O_ACCMODE == _os.O_WRONLY:
            # (a file object opened 'wb' or 'ab': the dispatcher's
            # sendfile() would fail after the head had gone)
            raise OSError(f"{what!r} is open for writing only")
        if not info.st_size or (info.st_size == _PAGE
                                and not info.st_blocks):
            # /proc says 0 bytes, /sys one page: neither is what it reads
            fd = _sized(fd, info.st_size)
    except BaseException:
        _os.close(fd)
        raise
    return fd, response.name()


def _sized(fd, size):
    """`fd`, or for a file whose `size` does not tell what it holds (/proc,
    /sys: made as they are read) a memory file of what it reads, so that
    its length is known; at most SIZELESS_LIMIT bytes are read."""
    data = _os.pread(fd, SIZELESS_LIMIT, 0)
    if len(data) == size:   # (an empty file, a page of holes)
        return fd
    held = _memory_file(data)
    _os.close(fd)
    return held


def descriptor_of(source):
    """A descriptor of the response's own for the file object `source`:
    a duplicate of its fileno(), or for one that has none (a BytesIO, the
    body_file of a small body) a memory file holding its bytes, so that
    it is sent like any file, ranges and all."""
    try:
        return _os.dup(source.fileno())
    except (AttributeError, OSError, ValueError) as err:
        # (io.UnsupportedOperation is both an OSError and a ValueError)
        if not callable(getattr(source, 'read', None)) or (
                getattr(source, 'closed', False)):
            raise OSError(f"{type(source).__name__} has no descriptor and "
                          f"cannot be read: {err}") from None
    getvalue = getattr(source, 'getvalue', None)
    if callable(getvalue):
        data = getvalue()
    else:
        if source.seekable():
            source.seek(0)
        data = source.read()
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise OSError(f"{type(source).__name__} reads {type(data).__name__}, "
                      "not bytes (open it in binary mode)")
    return _memory_file(data)


def _memory_file(data):
    """A descriptor of an unnamed file holding `data`, at its start."""
    if hasattr(_os, 'memfd_create'):
        fd = _os.memfd_create('fileresponse', _os.MFD_CLOEXEC)
    else:  # pragma: no cover - (not Linux)
        with _tempfile.TemporaryFile() as file:
            fd = _os.dup(file.fileno())
    try:
        with memoryview(data) as view:
            while view:
                view = view[_os.write(fd, view):]
        _os.lseek(fd, 0, _os.SEEK_SET)
    except BaseException:
        _os.close(fd)
        raise
    return fd


def read_whole(fd):
    """Every byte of the file `fd`, from its start whatever its offset (a
    duplicate shares its file object's position)."""
    parts = []
    offset = 0
    while True:
        data = _os.pread(fd, 1 << 20, offset)
        if not data:
            return b''.join(parts)
        parts.append(data)
        offset += len(data)


def response_headers(response, name, headers):
    """`headers` (a list) with Content-Type and Content-Disposition added
    unless they are there already."""
    names = {key.lower() for key, _ in headers}
    if 'content-type' not in names:
        headers.append(('content-type', response.content_type
                        or guessed_type(name, response.download_name)))
    if response.download_name is not None and (
            'content-disposition' not in names):
        headers.append(('content-disposition',
                        content_disposition(response.download_name)))
    return headers


def guessed_type(name, download_name):
    """The Content-Type of a file answer without one given: from the
    file's name, else (a temporary file, a memory file) from the name it
    is downloaded as."""
    guessed = _static.content_type(name or '')
    if guessed == _static.UNKNOWN_TYPE and download_name:
        return _static.content_type(download_name)
    return guessed


def carries_file(message):
    """True for a W_FILE_RESPONSE that still holds its FileResponse."""
    return len(message) > 5 and isinstance(message[5], FileResponse)


def worker_socket(fd):
    """The worker's end of its descriptor socket, or None (no such fd)."""
    if fd is None:
        return None
    return _socket.socket(_socket.AF_UNIX, _socket.SOCK_SEQPACKET, fileno=fd)


def send_fd(sock, request_id, fd):
    """Pass `fd` to the dispatcher, tagged with `request_id` (blocking)."""
    _socket.send_fds(sock, [_TAG.pack(request_id)], [fd])


def worker_messages(message, sock, log_name='worker'):
    """What a worker sends for the W_FILE_RESPONSE `message` that still
    carries its FileResponse (item 5): the descriptor goes on `sock` first,
    then the message without it. A missing file is a 404, a directory or
    unreadable file a 500, each with an error log line. Without a socket
    (a WorkerClient in a test) the file is read into a plain W_RESPONSE."""
    request_id, status, headers, cookies, response = message[1:6]
    rest = message[6:]
    what = response.name() or repr(response.path_or_file)
    try:
        fd, name = open_file(response)
    except FileNotFoundError:
        return [(_msg.W_LOG, log_name, _log.LOG_ERROR,
                 f"FileResponse for request {request_id}: {what!r} does not "
                 "exist; answering 404"),
                _msg.error_message(request_id, 404) + rest]
    except OSError as err:
        return [(_msg.W_LOG, log_name, _log.LOG_ERROR,
                 f"FileResponse for request {request_id}: {what!r} cannot be "
                 f"sent: {err}; answering 500"),
                _msg.error_message(request_id, 500) + rest]
    headers = response_headers(response, name, list(headers or ()))
    try:
        if sock is None:
            body = read_whole(fd)
            return [(_msg.W_RESPONSE, request_id, status, headers, body,
                     _msg.BODY_BYTES, cookies) + rest]
        send_fd(sock, request_id, fd)
    except OSError as err:  # the dispatcher is going: the pipe will tell
        return [(_msg.W_LOG, log_name, _log.LOG_ERROR,
                 f"FileResponse for request {request_id}: the descriptor "
                 f"could not be passed: {err}"),
                _msg.error_message(request_id, 500) + rest]
    finally:
        _os.close(fd)
    return [(_msg.W_FILE_RESPONSE, request_id, status, headers, cookies)
            + rest]


def make_socketpair():
    """The descriptor socket pair of a worker: (dispatcher end, worker end)
    as plain close-on-exec fds."""
    parent, child = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_SEQPACKET)
    return parent.detach(), child.detach()


# -- dispatcher side -------------------------------------------------------------

def receive_fds(sock_fd, into):
    """Drain the descriptor socket `sock_fd` into `into` (request_id -> fd)
    without blocking."""
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_SEQPACKET,
                          fileno=sock_fd)
    try:
        while True:
            try:
                data, ancdata, _flags, _addr = sock.recvmsg(
                    _TAG.size, _socket.CMSG_SPACE(4 * _FD_SIZE), _RECV_FLAGS)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            fds = _array.array('i')
            for level, kind, payload in ancdata:
                if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
                    fds.frombytes(payload[:len(payload) - len(payload) % _FD_SIZE])
            if not data and not fds:
                return  # the worker's end has closed
            for extra in fds[1:]:
                _close_fd(extra)
            if not fds:
                continue
            if len(data) != _TAG.size:
                _close_fd(fds[0])
                continue
            request_id = _TAG.unpack(data)[0]
            old = into.pop(request_id, None)
            if old is not None:
                _close_fd(old)
            into[request_id] = fds[0]
    finally:
        sock.detach()


_NOT_FOR_304 = ('content-type', 'content-disposition')


def plan(fd, request_headers, method, headers):
    """What to send for a 200 file answer: (status, headers, offset,
    length) given the request's conditional and Range headers. `headers`
    (a list) gets ETag, Last-Modified, Accept-Ranges and, for 206/416,
    Content-Range (the last two are the server's own: a handler's would
    contradict them)."""
    info = _os.fstat(fd)
    size = info.st_size
    headers[:] = [(key, value) for key, value in headers
                  if key.lower() not in ('accept-ranges', 'content-range')]
    own = {key.lower(): value for key, value in headers}
    # the handler's own validators, when it gave them, are the ones the
    # client has seen and sends back
    tag = own.get('etag') or _static.etag(info)
    modified = own.get('last-modified') or _email_utils.formatdate(
        info.st_mtime, usegmt=True)
    if 'etag' not in own:
        headers.append(('etag', tag))
    if 'last-modified' not in own:
        headers.append(('last-modified', modified))
    headers.append(('accept-ranges', 'bytes'))
    tag, modified = tag.strip(), modified.strip()
    mtime = _static.http_time(modified) if 'last-modified' in own else None
    if mtime is None:   # (also for a handler's date that cannot be read)
        mtime = info.st_mtime
    request_headers = request_headers or {}
    if method in ('GET', 'HEAD') and _static.not_modified(
            request_headers, tag, mtime):
        # only what guides a cache's update: not the representation's own
        # metadata (as static files answer it)
        return 304, [(key, value) for key, value in headers
                     if key.lower() not in _NOT_FOR_304], 0, 0
    wanted = request_headers.get('range')
    if_range = request_headers.get('if-range')
    if wanted and if_range and not _static.strong_match(if_range, tag) and (
            if_range.strip() != modified):
        wanted = None  # (a weak ETag cannot vouch for the bytes of a range)
    found = parse_range(wanted, size) if method in ('GET', 'HEAD') else None
    if found is None:
        return 200, headers, 0, size
    if found == UNSATISFIABLE:
        headers = [(key, value) for key, value in headers
                   if key.lower() != 'content-type']
        headers.append(('content-range', f'bytes */{size}'))
        return 416, headers, 0, 0
    first, last = found
    headers.append(('content-range', f'bytes {first}-{last}/{size}'))
    return 206, headers, first, last - first + 1


def serve_static(client, mount, real_path, close=False):
    """Answer `client` with the file at `real_path` (resolved inside
    `mount`) as plan() says: 200, 206, 304 or 416, sent with sendfile()
    (read in chunks over TLS); HEAD gets the headers alone. The status
    sent, or None when the file went meanwhile; OSError when it cannot be
    opened otherwise (the open-file limit: not a missing file, whose
    request would fall through to the pools)."""
    try:
        fd = _os.open(real_path, _os.O_RDONLY | getattr(_os, 'O_CLOEXEC', 0))
    except (FileNotFoundError, NotADirectoryError):
        return None
    try:
        headers = list(mount.headers.items())
        if not any(name.lower() == 'content-type' for name, _ in headers):
            headers.append(('content-type', _static.content_type(real_path)))
        status, headers, offset, length = plan(
            fd, client.headers, client.method, headers)
    except BaseException:
        _close_fd(fd)
        raise
    if bodiless(status):
        headers = [(name, value) for name, value in headers
                   if name.lower() != 'content-type']
    # the connection owns fd from here on (closed once sent, or with it)
    client.send_file(status, headers, None, fd, offset, length,
                     head=client.method == 'HEAD', close=close)
    return status


def bodiless(status):
    return status in (204, 304) or 100 <= status < 200
