"""The command line's configuration file (TOML) and the effective
configuration printed back as TOML.

    [dispatcher]
    address = "127.0.0.1"       # or host
    port = 8080
    max_pending = 1000
    log_level = "info"          # or a number
    keep_alive_timeout = 30     # any HTTP option of the Dispatcher
    static_routes = { "/static/" = "./static" }

    [pools.ItemWorker]          # a pool, by name (its worker class's name)
    num_workers = 4
    timeout = 30
    [pools.ItemWorker.kwargs]   # more keyword arguments for its workers
    db_login = "reader"

Loading never raises for a mistake in the file: every problem is returned,
naming its table and key, so `--check-config` can list them all.
"""

import math as _math
import os as _os
import re as _re

from . import config as _config
from . import http as _http
from . import log as _log
from .pool import RESERVED_KWARGS, SETTINGS as POOL_SETTINGS, broker_pool_count

try:
    import tomllib as _toml
except ImportError:  # Python 3.10
    import tomli as _toml

LEVELS = {'debug': _log.LOG_DEBUG, 'info': _log.LOG_INFO,
          'warning': _log.LOG_WARNING, 'error': _log.LOG_ERROR,
          'critical': _log.LOG_CRITICAL}
DISPATCHER_KEYS = frozenset((
    'port', 'address', 'host', 'static_routes', 'shutdown_timeout',
    'max_pending', 'log_level', 'use_logging', 'log_format',
    'access_log', 'metrics_path', 'dashboard_path', 'ws_ping_interval',
    'ws_max_message_size', 'ws_origins', 'ws_deflate')) | _http.HTTP_OPTIONS


class Overrides:
    """What a configuration file (or the command line) sets: Dispatcher
    keyword arguments, and settings and worker kwargs per pool name."""

    def __init__(self):
        self.dispatcher = {}
        self.pools = {}        # pool name -> {setting: value}
        self.pool_kwargs = {}  # pool name -> {kwarg: value}
        self.pool_sources = {}  # pool name -> where it was named

    def update(self, other):
        self.dispatcher.update(other.dispatcher)
        self.pool_sources.update(other.pool_sources)  # the last one wins
        for name, values in other.pools.items():
            self.pools.setdefault(name, {}).update(values)
        for name, values in other.pool_kwargs.items():
            self.pool_kwargs.setdefault(name, {}).update(values)


def level(value, where):
    """A log level from a name ('info') or a number."""
    if isinstance(value, str):
        found = LEVELS.get(value.strip().lower())
        if found is None:
            raise ValueError(f"{where}: unknown log level {value!r} "
                             f"(known: {', '.join(LEVELS)})")
        return found
    return _log.check_level(value, where)


def load(path):
    """(Overrides, problems) from the TOML file at `path`."""
    overrides = Overrides()
    try:
        with open(path, 'rb') as file:
            raw = file.read()
    except OSError as err:
        return overrides, [f"{path}: cannot read: {err.strerror or err}"]
    if raw.startswith(b'\xef\xbb\xbf'):
        return overrides, [f"{path}: not valid TOML: it begins with a byte "
                           "order mark (save it as UTF-8 without one)"]
    try:
        data = _toml.loads(raw.decode('utf-8'))
    except UnicodeDecodeError as err:
        line = raw[:err.start].count(b'\n') + 1
        return overrides, [f"{path}: not valid TOML: line {line} is not "
                           f"UTF-8 text (byte {raw[err.start]:#04x})"]
    except _toml.TOMLDecodeError as err:
        return overrides, [f"{path}: not valid TOML: {err}"]
    problems = []
    for key in data:
        if key not in ('dispatcher', 'pools'):
            problems.append(f"{path}: unknown table [{key}] "
                            "(known: [dispatcher], [pools.NAME])")
    table = data.get('dispatcher', {})
    if not isinstance(table, dict):
        problems.append(f"{path}: 'dispatcher' must be a table")
    else:
        if 'host' in table and 'address' in table:
            problems.append(f"{path}: [dispatcher] host and address name the "
                            "same setting: give one of them")
        for key, value in table.items():
            where = f"{path}: [dispatcher] {key}"
            checked = _checked(where, check_dispatcher_key, key, value,
                               problems)
            if checked is not None:
                overrides.dispatcher[checked[0]] = checked[1]
    pools = data.get('pools', {})
    if not isinstance(pools, dict):
        problems.append(f"{path}: 'pools' must hold [pools.NAME] tables")
        pools = {}
    for name, table in pools.items():
        _load_pool(path, name, table, overrides, problems)
    return overrides, problems


def _load_pool(path, name, table, overrides, problems):
    overrides.pool_sources[name] = f"{path}: [pools.{name}]"
    if not isinstance(table, dict):
        problems.append(f"{path}: pools.{name} must be a table")
        return
    for key, value in table.items():
        where = f"{path}: [pools.{name}] {key}"
        if key == 'kwargs':
            if not isinstance(value, dict):
                problems.append(f"{where}: must be a table of keyword arguments")
                continue
            for reserved in RESERVED_KWARGS:  # the pool sets them itself
                if reserved in value:
                    problems.append(f"{where}.{reserved}: reserved, set by the pool")
            overrides.pool_kwargs.setdefault(name, {}).update(
                {k: v for k, v in value.items() if k not in RESERVED_KWARGS})
            continue
        checked = _checked(where, check_pool_key, key, value, problems)
        if checked is not None:
            overrides.pools.setdefault(name, {})[key] = checked[1]


def _checked(where, check, key, value, problems):
    try:
        return check(key, value, where)
    except (TypeError, ValueError) as err:
        problems.append(f"{where}: {err}")
        return None


def check_dispatcher_key(key, value, where):
    """(Dispatcher keyword, checked value) for one [dispatcher] key."""
    if key not in DISPATCHER_KEYS:
        raise ValueError(f"unknown key (known: {', '.join(sorted(DISPATCHER_KEYS))})")
    if key == 'host':
        key = 'address'
    if key == 'log_level':
        value = level(value, 'log_level')
    _config.DispatcherSettings(**{key: value})  # the checks of the Dispatcher
    return key, value


def check_pool_key(key, value, where):
    """(setting, checked value) for one [pools.NAME] key."""
    check = POOL_SETTINGS.get(key)
    if check is None:
        raise ValueError(f"unknown key (known: {', '.join(sorted(POOL_SETTINGS))}, "
                         "and a kwargs table)")
    if key == 'log_level':
        value = level(value, 'log_level')
    if key == 'num_workers':  # 0 is for a pool with a broker: the pool
        check = broker_pool_count  # itself refuses it for a local one
    return key, check(value)


# -- printing the effective configuration ---------------------------------------

_BARE_KEY = _re.compile(r'[A-Za-z0-9_-]+\Z')
# what a TOML basic string may not hold as it is: the quote, the backslash
# and control characters (tab may, but reads better escaped)
_ESCAPED = _re.compile(r'["\\\x00-\x1f\x7f]')
_SHORT = {'"': '\\"', '\\': '\\\\', '\b': '\\b', '\t': '\\t', '\n': '\\n',
          '\f': '\\f', '\r': '\\r'}


def _escape(match):
    char = match.group()
    return _SHORT.get(char) or f'\\u{ord(char):04x}'


def toml_key(key):
    return key if _BARE_KEY.match(key) else toml_value(key)


def toml_value(value):
    """`value` in TOML; TypeError for what TOML cannot hold."""
    if isinstance(value, _os.PathLike):       # spool_dir=Path(...)
        value = _os.fspath(value)
    if isinstance(value, bool):
        return 'true' if value else 'false'
    if isinstance(value, int):
        if not -(1 << 63) <= value < (1 << 63):   # TOML's integers
            raise TypeError("an int beyond 64 bits has no TOML form")
        return str(value)
    if isinstance(value, float):
        if _math.isinf(value):
            return 'inf' if value > 0 else '-inf'
        return repr(value)
    if isinstance(value, str):
        return '"' + _ESCAPED.sub(_escape, value) + '"'
    if isinstance(value, (set, frozenset)):   # trusted_proxies={...}
        value = sorted(value, key=repr)
    if isinstance(value, (list, tuple)):
        return '[' + ', '.join(toml_value(item) for item in value) + ']'
    if isinstance(value, dict):
        if not all(isinstance(key, str) for key in value):
            raise TypeError("a dict with keys other than str has no TOML "
                            "form (they would come back as str)")
        return '{ ' + ', '.join(f'{toml_key(key)} = {toml_value(v)}'
                                for key, v in value.items()) + ' }'
    raise TypeError(f"{type(value).__name__} has no TOML form")


def dump(dispatcher, pools):
    """TOML text: a [dispatcher] table and a [pools.NAME] table each;
    unset values (None) are shown as comments."""
    lines = ['[dispatcher]']
    lines.extend(_lines(dispatcher))
    for name, (settings, kwargs) in pools.items():
        lines.append('')
        lines.append(f'[pools.{toml_key(name)}]')
        lines.extend(_lines(settings))
        if kwargs:
            lines.append(f'[pools.{toml_key(name)}.kwargs]')
            lines.extend(_lines(kwargs))
    return '\n'.join(lines) + '\n'


def _lines(values):
    for key, value in values.items():
        if value is None:
            yield f'# {toml_key(key)} is not set'
            continue
        try:
            yield f'{toml_key(key)} = {toml_value(value)}'
        except TypeError:   # an object given in code: shown, not loadable
            shown = ' '.join(repr(value).split())[:200]
            yield f'# {toml_key(key)} = {shown} (set in code; no TOML form)'
