"""The status of answers made by user code in the dispatcher (sync
handlers, do_check, static files), for the counts and the access log.
"""

# -- the status of answers made by user code in the dispatcher ------------------------

_PROBES = {}


def _probe_class(cls):
    """A subclass of the connection class `cls` that notes the status of
    the answer it starts (respond(), respond_file(), send_file(), streams), so a sync
    handler's or do_check()'s answer is counted with its real status."""
    probe = _PROBES.get(cls)
    if probe is not None:
        return probe

    class StatusProbe(cls):
        def respond(self, data=None, status=200, *args, **kwargs):
            self._uhttp_status = status
            return super().respond(data, status, *args, **kwargs)

        def respond_file(self, *args, **kwargs):
            self._uhttp_status = 200
            return super().respond_file(*args, **kwargs)

        def response_stream(self, *args, **kwargs):
            self._uhttp_status = 200
            return super().response_stream(*args, **kwargs)

        def start_stream(self, status, *args, **kwargs):
            self._uhttp_status = status
            return super().start_stream(status, *args, **kwargs)

        def send_response(self, status, *args, **kwargs):
            self._uhttp_status = status
            return super().send_response(status, *args, **kwargs)

        def send_file(self, status, *args, **kwargs):
            self._uhttp_status = status
            return super().send_file(status, *args, **kwargs)

    StatusProbe.__name__ = StatusProbe.__qualname__ = cls.__name__
    _PROBES[cls] = probe = StatusProbe
    return probe


class probe_status:  # pylint: disable=invalid-name
    """`with probe_status(client) as probe:` run user code that may answer
    `client`; `probe.status` is the status it answered with (None when
    it did not, or when the connection cannot be probed)."""

    __slots__ = ('client', 'cls', 'status')

    def __init__(self, client):
        self.client = client
        self.cls = None
        self.status = None

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
            client.__class__ = self.cls
        return False
