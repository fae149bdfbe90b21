"""The access log: one line per finished request, in a format the
operator chooses (Dispatcher(access_log=...)), its fields made safe to
read in a log whatever the client sent. `duration` and `duration_ms` are
numbers that print with fixed decimals unless the template asks for
another format (`{duration_ms:.1f}`), and `status` is an int."""

import time as _time

from . import log as _log

DEFAULT_ACCESS_FORMAT = ('{remote} - - [{time}] "{method} {target}" {status} '
                         '{bytes} {duration_ms}ms {pool}[{slot}]')
ACCESS_FIELDS = ('remote', 'time', 'method', 'path', 'query', 'target',
                 'status', 'bytes', 'duration', 'duration_ms', 'pool',
                 'slot', 'route', 'request_id')
ACCESS_NAME = 'access'

_FLOAT_TYPES = frozenset('eEfFgGn%')


class Seconds(float):
    """A duration in a line: PLACES decimals by default, as the template
    asks otherwise ('>9' keeps the decimals, '.1f' chooses them)."""

    __slots__ = ()
    PLACES = 6

    def __format__(self, spec):
        if not spec or (spec[-1] not in _FLOAT_TYPES and '.' not in spec):
            spec = f'{spec}.{self.PLACES}f'
        return float.__format__(self, spec)

    def __str__(self):
        return self.__format__('')


class Milliseconds(Seconds):
    __slots__ = ()
    PLACES = 3


def client_address(client):
    """The client's address as the access log gives it (X-Forwarded-For
    from a trusted proxy while the request is there), None when it cannot
    be told."""
    try:
        return client.client_ip
    except Exception:  # pylint: disable=broad-except
        return None


def query_of(client):
    """The query string of `client`'s request as it was sent (after the
    '?'; '' for a bare '?'), None without one."""
    url = client.url
    if url is None:
        return None
    mark = url.find('?')
    return None if mark < 0 else url[mark + 1:]


def check_access_format(value):
    """The access log format of Dispatcher(access_log=...), or None."""
    if value is False:
        return None
    if value is True:
        return DEFAULT_ACCESS_FORMAT
    sample = {name: '-' for name in ACCESS_FIELDS}
    sample.update(status=200, duration=Seconds(0.0),
                  duration_ms=Milliseconds(0.0))
    try:
        value.format(**sample)
    except (KeyError, IndexError, ValueError, AttributeError) as err:
        raise ValueError(
            f"Dispatcher access_log format {value!r} does not format "
            f"({err!r}); fields: {', '.join(ACCESS_FIELDS)}") from None
    return value


def log_safe(text):
    """`text` from a client (path, method, address) made safe for a log
    line: quotes and backslashes escaped, control characters as \\xHH
    (log.client_text()), so a request cannot forge a line or end the
    quoted field early."""
    if text.isprintable() and '"' not in text and '\\' not in text:
        return text
    return _log.client_text(text.replace('\\', '\\\\').replace('"', '\\"'))


class AccessLog:
    """Formats one access log line per finished request."""

    def __init__(self, template):
        self.template = template
        self._second = None
        self._stamp = ''

    def stamp(self, when):
        second = int(when)
        if second != self._second:
            self._second = second
            self._stamp = _time.strftime('%d/%b/%Y:%H:%M:%S %z',
                                         _time.localtime(second))
        return self._stamp

    def line(self, remote, method, path, status, size, duration, pool, slot,
             route, request_id, when=None, query=None):
        path = log_safe(path) if path else '-'
        query = None if query is None else log_safe(query)
        return self.template.format(
            remote=log_safe(remote) if remote else '-', time=self.stamp(
                _time.time() if when is None else when),
            method=log_safe(method) if method else '-', path=path,
            query='-' if query is None else query,
            target=path if query is None else f'{path}?{query}',
            status=status,
            bytes='-' if size is None else size,
            duration=Seconds(duration),
            duration_ms=Milliseconds(duration * 1000),
            pool=pool or '-', slot='-' if slot is None else slot,
            route=route or '-', request_id='-' if request_id is None
            else request_id)
