"""Static files served by the dispatcher, never from outside their root.

`StaticMount.resolve()` is pure path logic (tested on its own), and so are
the content types, ETags and conditional checks; files.py sends the file
(`serve_static()`: sendfile, ranges, 304).
"""

import email.utils as _email_utils
import mimetypes as _mimetypes
import os as _os
import stat as _stat

INDEX_FILE = 'index.html'

_TYPES = {
    '.html': 'text/html; charset=UTF-8',
    '.htm': 'text/html; charset=UTF-8',
    '.css': 'text/css; charset=UTF-8',
    '.js': 'text/javascript; charset=UTF-8',
    '.mjs': 'text/javascript; charset=UTF-8',
    '.json': 'application/json',
    '.txt': 'text/plain; charset=UTF-8',
    '.svg': 'image/svg+xml',
    '.png': 'image/png',
    '.jpg': 'image/jpeg',
    '.jpeg': 'image/jpeg',
    '.gif': 'image/gif',
    '.webp': 'image/webp',
    '.ico': 'image/x-icon',
    '.wasm': 'application/wasm',
    '.woff': 'font/woff',
    '.woff2': 'font/woff2',
    '.xml': 'text/xml; charset=UTF-8',
    '.pdf': 'application/pdf',
    '.mp4': 'video/mp4',
    '.mp3': 'audio/mpeg',
}


UNKNOWN_TYPE = 'application/octet-stream'

# a compressed file is sent as the compressed file it is (no
# Content-Encoding: the client gets what is on disk)
_COMPRESSED = {
    'gzip': 'application/gzip',
    'bzip2': 'application/x-bzip2',
    'xz': 'application/x-xz',
    'compress': 'application/x-compress',
    'br': 'application/x-brotli',
}


def content_type(path):
    """Content-Type for a file name."""
    ext = _os.path.splitext(path)[1].lower()
    known = _TYPES.get(ext)
    if known:
        return known
    guessed, encoding = _mimetypes.guess_type(path, strict=False)
    if encoding is not None:   # 'log.txt.gz' is gzip data, not text
        return _COMPRESSED.get(encoding, UNKNOWN_TYPE)
    if guessed is None:
        return UNKNOWN_TYPE
    if guessed.startswith('text/'):
        return guessed + '; charset=UTF-8'
    return guessed


class StaticMount:
    """One URL prefix mapped to a directory.

    `headers` are added to every file served; an `authoritative` mount owns
    its prefix (a miss is a 404, not a fall-through).
    """

    def __init__(self, prefix, root, headers=None, authoritative=False,
                 where='static_routes'):
        if not isinstance(prefix, str) or not prefix.startswith('/'):
            raise ValueError(
                f"{where}: URL prefix {prefix!r} must be a str starting with '/'")
        if not isinstance(root, (str, _os.PathLike)):
            raise TypeError(
                f"{where}[{prefix!r}]: path must be a str, not "
                f"{type(root).__name__}")
        root = _os.path.realpath(_os.path.expanduser(_os.fspath(root)))
        if not _os.path.isdir(root):
            raise ValueError(
                f"{where}[{prefix!r}]: {root!r} is not a directory"
                if _os.path.exists(root) else
                f"{where}[{prefix!r}]: directory {root!r} does not exist")
        if not isinstance(authoritative, bool):   # "no" in a file: truthy
            raise TypeError(f"{where}[{prefix!r}]: authoritative must be "
                            f"True or False, not {authoritative!r}")
        if headers is not None and not isinstance(headers, dict):
            raise TypeError(f"{where}[{prefix!r}]: headers must be a dict")
        for name, value in (headers or {}).items():
            text = f'{name}{value}'
            if '\r' in text or '\n' in text:
                raise ValueError(
                    f"{where}[{prefix!r}]: header {name!r} contains CR or LF")
        self.prefix = prefix
        self.root = root
        self.headers = dict(headers or {})
        self.authoritative = authoritative
        self._inside = root if root.endswith(_os.sep) else root + _os.sep
        # '/static/' and '/static' both mount below '/static/'
        self._base = prefix.rstrip('/')

    def relative(self, path):
        """The part of `path` below this mount, or None when outside it."""
        base = self._base
        if not path.startswith(base):
            return None
        rest = path[len(base):]
        if rest and rest[0] != '/':
            return None  # '/static' does not own '/staticfoo'
        return rest

    def resolve(self, rest):
        """The real file path for the URL part `rest`, or None when the
        request is not for a file inside the root (missing, hostile, or a
        directory without an index)."""
        if '\x00' in rest or '\\' in rest:
            return None
        parts = []
        for part in rest.split('/'):
            if part in ('', '.'):
                continue
            if part == '..' or ':' in part and _os.name == 'nt':
                return None
            parts.append(part)
        candidate = _os.path.join(self.root, *parts) if parts else self.root
        try:
            real = _os.path.realpath(candidate)
        except (OSError, ValueError):
            return None
        if real != self.root and not real.startswith(self._inside):
            return None  # a symlink out of the root
        try:
            info = _os.stat(real)
        except (OSError, ValueError):
            return None
        if (not _stat.S_ISDIR(info.st_mode)
                and rest.rsplit('/', 1)[-1] in ('', '.')):
            return None  # 'file.txt/' names a directory, which it is not
        if _stat.S_ISDIR(info.st_mode):
            index = _os.path.join(real, INDEX_FILE)
            try:
                info = _os.stat(index)
            except OSError:
                return None
            real = _os.path.realpath(index)
            if not real.startswith(self._inside):
                return None
        if not _stat.S_ISREG(info.st_mode):
            return None
        return real


def directory_location(rest, real, target):
    """Where to send a request that names a directory without its
    trailing slash (its index's relative links would resolve one level
    up): the path of `target` (the request target as sent) with the
    slash added before its query; None when `rest` does not name one that
    way. The location is always a path on this server: an absolute-form
    target loses its scheme and host, and leading slashes are one, since a
    browser reads '//name/' (or '///name/') as another host's URL."""
    if rest.endswith('/') or _os.path.basename(real) != INDEX_FILE or (
            rest.rsplit('/', 1)[-1] == INDEX_FILE):
        return None
    path, sep, query = target.partition('?')
    if not path.startswith('/'):  # 'http://host/docs'
        path = path.partition('://')[2].partition('/')[2]
    path = '/' + path.lstrip('/')
    return f"{path.rstrip('/')}/{sep}{query}"


def etag(info):
    return f'"{info.st_mtime_ns:x}-{info.st_size:x}"'


def not_modified(request_headers, tag, mtime):
    """True when the conditional request headers say the client's copy is
    current (If-None-Match wins over If-Modified-Since)."""
    match = request_headers.get('if-none-match')
    if match is not None:
        if match.strip() == '*':
            return True
        # the weak comparison: W/"x" and "x" match either way round (a
        # handler's own ETag may be weak)
        return any(_opaque(candidate) == _opaque(tag)
                   for candidate in match.split(','))
    when = http_time(request_headers.get('if-modified-since'))
    if when is None:
        return False
    return int(mtime) <= when


def strong_match(candidate, tag):
    """If-Range's comparison: the same tag, and neither of them weak."""
    candidate, tag = candidate.strip(), tag.strip()
    return candidate == tag and not tag.startswith('W/')


def _opaque(tag):
    tag = tag.strip()
    return tag[2:] if tag.startswith('W/') else tag


def http_time(text):
    """An HTTP date (If-Modified-Since, Last-Modified) as a timestamp, or
    None for none or one that cannot be read."""
    if not text:
        return None
    try:
        when = _email_utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None  # (OverflowError: a year too large for a C long)
    return None if when is None else when.timestamp()
