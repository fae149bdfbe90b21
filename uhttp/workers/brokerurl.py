"""A broker's URL (remote pools): checked when a pool is made, without
connecting, as the redis client would parse it; and shown without its
password wherever it is logged or reported (status, metrics, errors)."""

import re as _re
from importlib.util import find_spec as _find_spec
from urllib import parse as _parse


def check_url(url, name='WorkerPool broker'):
    """The broker URL, checked without connecting: redis://host...,
    rediss://host... (TLS) or unix:///path, as the redis client parses it
    (`name` says whose URL it is in the error)."""
    if not isinstance(url, str):
        raise TypeError(f"{name} must be a URL string, not {url!r}")
    scheme = url.partition('://')[0].lower()
    if scheme not in ('redis', 'rediss', 'unix') or '://' not in url:
        raise ValueError(
            f"{name} must be a redis://, rediss:// or unix:// URL, "
            f"not {redact(url)!r}")
    problem = url_problem(url)
    if problem is not None:  # (the parsers' words may quote a hidden one)
        raise ValueError(f"{name} {redact(url)!r} is not a usable URL: " + (
            "a password's '/', '?', '#' and '@' are written %2F, %3F, %23 "
            "and %40" if hidden_credentials(url) else scrub(problem, url)))
    return url


def url_problem(url):
    """What the redis client finds wrong in `url` (a port that is no
    number, an unknown option, no host...), or None. Nothing connects."""
    try:
        parts = _parse.urlsplit(url)
        _ = parts.port  # (a port that is no number, or above 65535, raises)
    except ValueError as err:
        return str(err)
    database = parts.path.strip('/')
    if parts.scheme.lower() == 'unix':
        if not parts.path:
            return 'a unix:// URL names the socket: unix:///run/redis.sock'
    elif not parts.hostname:
        return 'no host (redis://host:6379/0)'
    elif database and not database.isdigit():
        return f"the database must be a number, not {database!r}"
    return client_refuses(url)


def client_refuses(url):
    """The redis client's own objection to `url`, or None (also when the
    client is not installed: require_client() says so)."""
    try:
        from redis.connection import ConnectionPool  # pylint: disable=import-outside-toplevel
    except ImportError:
        return None
    try:
        ConnectionPool.from_url(url).make_connection()  # (not connected)
    except Exception as err:  # pylint: disable=broad-except
        unknown = _re.search(r"unexpected keyword argument '([^']*)'", str(err))
        return (f"unknown option {unknown.group(1)!r}" if unknown
                else str(err) or type(err).__name__)
    return None


def secrets_in(url):
    """The passwords `url` carries (its credentials, a `password=` query)."""
    try:
        parts = _parse.urlsplit(url)
        found = [parts.password, _parse.unquote(parts.password or '')]
        found += _parse.parse_qs(parts.query).get('password', [])
    except ValueError:  # (then no text of the client's quotes it)
        found = []
    return sorted({each for each in found if each}, key=len, reverse=True)


def scrub(text, url):
    """`text` with every password of `url` replaced by ***."""
    for secret in secrets_in(url):
        text = text.replace(secret, '***')
    return text


def require_client(owner):
    """ImportError naming `owner` when the redis client library is missing."""
    if _find_spec('redis') is None:
        raise ImportError(
            f"{owner} has a broker: it needs the redis client library "
            "(pip install 'uhttp-workers[redis]')")


def hidden_credentials(url):
    """True when `url` has credentials its parsers do not see (a password
    with an unencoded '/', '?' or '#')."""
    rest = url.partition('://')[2]
    return _credentials_end(rest) >= 0 and '@' not in _re.split('[/?#]', rest)[0]


def _credentials_end(rest):
    """Where the credentials in a URL's part after `://` end (their '@'),
    or -1: the last '@' before the first '/', else the last '@' of all (a
    password with a '/': wrong only by hiding too much)."""
    head = rest.partition('/')[0]
    return head.rfind('@') if '@' in head or not head else rest.rfind('@')


def redact(url):
    """The URL without its password (in its credentials, even one with an
    unencoded '?' or '/', or a `password=` query), for logs and status."""
    url = _re.sub(r'([?&]password=)[^&#]*', r'\1***', url, flags=_re.I)
    start = url.find('://') + 3 if '://' in url else 0
    at = start + _credentials_end(url[start:])
    if at < start:
        return url
    user, colon, _ = url[start:at].partition(':')
    return f"{url[:start]}{user + ':' if colon and user else ''}***{url[at:]}"
