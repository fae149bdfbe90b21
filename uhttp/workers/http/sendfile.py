"""File bodies sent with os.sendfile(): the part of the connection glue
that answers with a file descriptor (a worker's FileResponse).

The descriptor sits where uhttp-server keeps its file handle, so its
has_data_to_send, close() and reset() see it and close it; only filling
the socket differs (sendfile instead of read-and-buffer; over TLS, pread
chunks through the send buffer).
"""

import os as _os

import uhttp.server as _server

from . import serialize as _serialize
from .. import files as _files
from ..bodyview import SpooledBytes
from ..fds import close_fd
from ..fileresponse import FileResponse

# what respond() sends from a file: a spooled body's view, a FileResponse
FILE_ANSWERS = (SpooledBytes, FileResponse)


class _FileBody:
    """A file descriptor being sent (`offset` up to `end`), where
    uhttp-server keeps its file handle: has_data_to_send, close() and
    reset() see it there and close it."""

    __slots__ = ('fd', 'offset', 'end')

    def __init__(self, fd, offset, length):
        self.fd = fd
        self.offset = offset
        self.end = offset + length

    def tell(self):
        return self.offset

    def close(self):
        fd, self.fd = self.fd, -1
        if fd >= 0:
            close_fd(fd)


class SendFile:
    """Mixin of Connection: send_file() and what drives it."""

    @property
    def unsent_size(self):
        """Bytes of the answer not sent yet: the send buffer's and the
        rest of a file being sent."""
        body = self._file_handle
        rest = body.end - body.offset if isinstance(body, _FileBody) else 0
        return self.send_buffer_size + rest

    def send_file(self, status, headers, cookies, fd, offset, length,
                  head=False, close=False):
        """Send a complete response whose body is `length` bytes of the
        file `fd` from `offset`, with os.sendfile() (read in chunks over
        TLS). The connection owns `fd` from here on: it is closed once
        sent, or when the connection closes. Raises ValueError (nothing
        sent, `fd` still the caller's) for a header containing CR/LF, and
        HttpError when a response was already started."""
        if self._socket is None:
            _FileBody(fd, 0, 0).close()
            return False
        if self._response_started:
            raise _server.HttpError("Response already sent for this request")
        keep = self.keep_alive_after(close)
        data, keep = _serialize.response_head(
            status, headers, cookies, length, keep)
        self._response_started = True
        self.responses += 1
        self._is_streaming = False
        self._response_keep_alive = keep
        self.pending = None
        if head or not length or _serialize.contentless(status):
            _FileBody(fd, 0, 0).close()
            self._write(data)
            return True
        self._close_file_handle()
        self._file_handle = _FileBody(fd, offset, length)
        try:
            self._send(data)
        except OSError:
            self.close()
        return True

    def send_answer_file(self, status, headers, cookies, data):
        """respond() of one of FILE_ANSWERS; `headers` is its dict."""
        if isinstance(data, FileResponse):
            return self.send_file_response(status, headers, cookies, data)
        return self.send_view(status, headers, cookies, data)

    def send_view(self, status, headers, cookies, view):
        """respond() of a spooled body's view (a SpooledBytes, what
        `client.data` is for a body above spool_threshold): its file, sent
        like a FileResponse's, never read into the dispatcher's memory.
        `headers` is respond()'s dict."""
        headers.setdefault(_server.CONTENT_TYPE,
                           _server.CONTENT_TYPE_OCTET_STREAM)
        fd = _os.dup(view.fileno())
        try:
            return self.send_file(status, list(headers.items()), cookies, fd,
                                  0, len(view), head=self._head)
        except BaseException:
            close_fd(fd)   # refused, nothing sent: the descriptor is ours
            raise

    def send_file_response(self, status, headers, cookies, response):
        """respond() of a FileResponse (a sync handler's answer): opened
        here and sent as a worker's is, with Content-Type and
        Content-Disposition, and for a 200 ranges and conditional GET. A
        missing file answers 404, one that cannot be sent 500, each with
        an ERROR line. `headers` is respond()'s dict."""
        status = response.status if status == 200 else status
        pairs = _files.with_own_headers(list(headers.items()), response)
        try:
            fd, name = _files.open_file(response)
        except OSError as err:
            error = 404 if isinstance(err, FileNotFoundError) else 500
            self._server.file_refused(self, response, err, error)
            return self.respond({'error': _server.STATUS_CODES[error]},
                                status=error)
        try:
            status, pairs, offset, length = _files.planned(
                fd, status, self.headers, self.method,
                _files.response_headers(response, name, pairs))
            return self.send_file(status, pairs, cookies, fd, offset, length,
                                  head=self._head)
        except BaseException:
            close_fd(fd)   # refused, nothing sent: the descriptor is ours
            raise

    def forget_file(self):
        """In a forked child: close its copy of the descriptor being sent
        (the dispatcher's stays open and goes on sending)."""
        body = self._file_handle
        if isinstance(body, _FileBody):
            body.close()

    def _refill_from_file(self):
        body = self._file_handle
        if not isinstance(body, _FileBody):
            return super()._refill_from_file()
        if self.send_buffer_size or self._socket is None:
            return True  # the head (or a chunk read over TLS) goes first
        left = body.end - body.offset
        try:
            if self._server.is_secure:
                chunk = _os.pread(body.fd, min(left, self._file_chunk_size),
                                  body.offset)
                self._send_buffer.extend(chunk)
                sent = len(chunk)
            else:
                sent = _os.sendfile(self._socket.fileno(), body.fd,
                                    body.offset, left)
        except (BlockingIOError, InterruptedError):
            return True
        except OSError:
            self._close_file_handle()
            self.close()
            return False
        if not sent:  # the file shrank under us: the length cannot be kept
            self._close_file_handle()
            self.close()
            return False
        body.offset += sent
        if body.offset >= body.end:
            self._close_file_handle()
        return True

    def try_send(self):
        super().try_send()
        body = self._file_handle
        if isinstance(body, _FileBody) and self._socket is not None and (
                not self.send_buffer_size):
            super().try_send()  # the head is out: start the file at once

