"""The status and body size of answers made by user code in the
dispatcher (sync handlers, do_check, static files) and of its own error
answers, for the counts and the access log.
"""

# -- the status of answers made by user code in the dispatcher ------------------------

_PROBES = {}
_NOTES = ('_uhttp_status', '_uhttp_size')


def _probe_class(cls):
    """A subclass of the connection class `cls` that notes the status of
    the answer it starts (respond(), respond_file(), send_file(), streams), so a sync
    handler's or do_check()'s answer is counted with its real status."""
    probe = _PROBES.get(cls)
    if probe is not None:
        return probe

    class StatusProbe(cls):
        def _noted(self, status, size, call, *args, **kwargs):
            # noted before the call, so that an answer it makes of its own
            # (respond_file()'s 404) wins; put back when it raises, since a
            # call refused (a second respond(), a bad header) sent nothing
            noted = {name: self.__dict__[name] for name in _NOTES
                     if name in self.__dict__}
            self._uhttp_status = status
            if size is not None:
                self._uhttp_size = 0 if self.method == 'HEAD' else size
            try:
                return call(*args, **kwargs)
            except BaseException:
                for name in _NOTES:
                    self.__dict__.pop(name, None)
                self.__dict__.update(noted)
                raise

        def respond(self, data=None, status=200, *args, **kwargs):
            return self._noted(status, None, super().respond, data, status,
                               *args, **kwargs)

        def respond_file(self, *args, **kwargs):
            return self._noted(200, None, super().respond_file, *args,
                               **kwargs)

        def response_stream(self, *args, **kwargs):
            return self._noted(200, None, super().response_stream, *args,
                               **kwargs)

        def start_stream(self, status, *args, **kwargs):
            return self._noted(status, None, super().start_stream, status,
                               *args, **kwargs)

        def send_response(self, status, headers, body, *args, **kwargs):
            return self._noted(status, len(body), super().send_response,
                               status, headers, body, *args, **kwargs)

        def send_file(self, status, headers, cookies, fd, offset, length,
                      *args, **kwargs):
            return self._noted(status, length, super().send_file, status,
                               headers, cookies, fd, offset, length, *args,
                               **kwargs)

        def _prepare_response(self, headers=None, is_streaming=False):
            headers = super()._prepare_response(headers, is_streaming)
            size = None if is_streaming or headers is None else headers.get(
                'content-length')
            self._uhttp_size = 0 if self._head else size
            return headers

    StatusProbe.__name__ = StatusProbe.__qualname__ = cls.__name__
    _PROBES[cls] = probe = StatusProbe
    return probe


class probe_status:  # pylint: disable=invalid-name
    """`with probe_status(client) as probe:` run user code that may answer
    `client`; `probe.status` is the status it answered with and
    `probe.size` its body's length (None when it did not answer, for a
    stream, or when the connection cannot be probed)."""

    __slots__ = ('client', 'cls', 'status', 'size')

    def __init__(self, client):
        self.client = client
        self.cls = None
        self.status = None
        self.size = None

    def __enter__(self):
        client = self.client
        cls = type(client)
        try:
            client.__class__ = _probe_class(cls)
            self.cls = cls
        except TypeError:
            self.cls = None
        return self

    def __exit__(self, *exc):
        if self.cls is not None:
            client = self.client
            self.status = client.__dict__.pop('_uhttp_status', None)
            size = client.__dict__.pop('_uhttp_size', None)
            self.size = None if size is None else int(size)
            client.__class__ = self.cls
        return False
