"""The Dispatcher's settings: checked once, at construction.

Pure logic: `DispatcherSettings(...)` takes the Dispatcher keyword
arguments, raises TypeError or ValueError naming the offending one, and
holds the results (pools in order, the fallback pool, static mounts
longest prefix first, the options for the HTTP layer).
"""

import ipaddress as _ipaddress

from . import accesslog as _accesslog
from . import http as _http
from . import log as _log
from . import observe as _observe
from . import spool as _spool
from . import static as _static
from . import tlscontext as _tlscontext
from .pool import WorkerPool

UNLIMITED_REQUESTS = 1 << 62   # keep_alive_max_requests's default

# defaults the dispatcher gives the HTTP layer (uhttp-server's own are for
# microcontrollers: backlog 8, 32 connections, 512 KiB bodies, 100 requests
# per keep-alive connection)
HTTP_DEFAULTS = {
    'listen': 4096,
    'max_headers_length': 16 * 1024,
    'max_content_length': 16 * 1024 * 1024,
    'max_send_buffer_size': 256 * 1024,
    'keep_alive_timeout': 30,
    'keep_alive_max_requests': UNLIMITED_REQUESTS,
    'request_timeout': 30,
    'send_timeout': 60,
    'file_chunk_size': 4 * 1024,
    'trusted_proxies': None,
    'spool_threshold': _spool.DEFAULT_THRESHOLD,
    'spool_dir': None,
}
CONNECTIONS_PER_PENDING = 10
MAX_BACKLOG = (1 << 31) - 1   # listen(2) takes a C int

_POSITIVE_INTS = ('listen', 'max_waiting_clients', 'max_headers_length',
                  'max_content_length', 'max_send_buffer_size',
                  'keep_alive_max_requests', 'file_chunk_size')
# uhttp-server's options that the dispatcher has its own names for
_RENAMED = {'max_ws_message_length': 'ws_max_message_size'}
_POSITIVE_TIMES = ('keep_alive_timeout', 'request_timeout', 'send_timeout')


def own_paths(metrics_path, dashboard_path):
    """[(what, path)] the dispatcher answers itself before any route: the
    metrics, the dashboard page, its events and its data. A metrics_path
    among the dashboard's would never be answered: a ValueError."""
    paths = []
    if dashboard_path:
        page, events, data = _observe.dashboard_paths(dashboard_path)
        serves = f'dashboard_path {dashboard_path!r} serves'
        paths = [('dashboard_path', page), (serves, events), (serves, data)]
        if metrics_path in (events, data):
            raise ValueError(
                f"Dispatcher metrics_path {metrics_path!r} is also a path of "
                f"the dashboard ({serves} {page}, {events} and {data}); "
                "choose another path for one")
    if metrics_path:
        paths.insert(0, ('metrics_path', metrics_path))
    return paths


def positive(value, name, allow_zero=False):
    """`value` when it is a number > 0 (or >= 0), else TypeError/ValueError."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"Dispatcher {name} must be a number, not {value!r}")
    if value != value or value < 0 or (value == 0 and not allow_zero):
        raise ValueError(
            f"Dispatcher {name} must be {'>= 0' if allow_zero else '> 0'}, "
            f"got {value}")
    return value


class DispatcherSettings:
    """Every Dispatcher keyword argument, checked."""

    def __init__(self, port=8080, address='0.0.0.0', pools=None,
                 static_routes=None, shutdown_timeout=10, max_pending=1000,
                 ssl_context=None, log_level=_log.LOG_INFO, use_logging=False,
                 log_format=None, access_log=False, metrics_path=None,
                 dashboard_path=None, ws_ping_interval=20,
                 ws_max_message_size=1 << 20, ws_origins=None, ws_deflate=True,
                 owner=None, **http_options):
        self.given = dict(
            port=port, address=address, pools=pools,
            static_routes=static_routes, shutdown_timeout=shutdown_timeout,
            max_pending=max_pending, ssl_context=ssl_context,
            log_level=log_level, use_logging=use_logging,
            log_format=log_format, access_log=access_log,
            metrics_path=metrics_path, dashboard_path=dashboard_path,
            ws_ping_interval=ws_ping_interval,
            ws_max_message_size=ws_max_message_size, ws_origins=ws_origins,
            ws_deflate=ws_deflate, **http_options)
        self.port = check_port(port)
        if not isinstance(address, str):
            raise TypeError(f"Dispatcher address must be a str, not {address!r}")
        if not address.strip():  # (an unset $HOST, say): never every interface
            raise ValueError("Dispatcher address is empty; give '0.0.0.0' "
                             "(or '::') to listen on every interface")
        self.address = address
        self.pools, self.fallback = check_pools(pools, owner)
        self.routed_pools = [pool for pool in self.pools if not pool.is_fallback]
        self.shutdown_timeout = positive(
            shutdown_timeout, 'shutdown_timeout', allow_zero=True)
        self.max_pending = check_max_pending(max_pending)
        self.ssl_context = _tlscontext.check_ssl_context(ssl_context)
        self.log_level = _log.check_level(log_level, 'Dispatcher log_level')
        self.use_logging = check_flag(use_logging, 'use_logging')
        self.log_style = _log.check_format(log_format)
        self.access_log = check_access_log(access_log)
        self.access_format = _accesslog.check_access_format(self.access_log)
        self.metrics_path = _observe.check_path(metrics_path, 'metrics_path')
        self.dashboard_path = _observe.check_path(dashboard_path,
                                                  'dashboard_path')
        if self.metrics_path and self.metrics_path == self.dashboard_path:
            raise ValueError("Dispatcher metrics_path and dashboard_path "
                             f"are the same path {self.metrics_path!r}")
        self.own_paths = own_paths(self.metrics_path, self.dashboard_path)
        self.static = static_mounts(static_routes)
        self.http_options = http_settings(http_options, self.max_pending)
        self.ws_ping_interval = positive(
            ws_ping_interval, 'ws_ping_interval', allow_zero=True)
        self.ws_max_message_size = positive(
            ws_max_message_size, 'ws_max_message_size')
        if not isinstance(ws_max_message_size, int):
            raise TypeError("Dispatcher ws_max_message_size must be an int "
                            f"(bytes), not {ws_max_message_size!r}")
        self.ws_origins = check_origins(ws_origins)
        self.ws_deflate = check_flag(ws_deflate, 'ws_deflate')


def check_origins(origins):
    """ws_origins: None, one origin or a collection of them (str)."""
    if origins is None:
        return None
    if isinstance(origins, str):
        origins = (origins,)
    try:
        origins = frozenset(origins)
    except TypeError:
        raise TypeError("Dispatcher ws_origins must be an origin (str) or a "
                        f"list of them, not {origins!r}") from None
    for origin in origins:
        if not isinstance(origin, str):
            raise TypeError("Dispatcher ws_origins must hold origins (str), "
                            f"not {origin!r}")
    return origins


def check_flag(value, name):
    if not isinstance(value, bool):
        raise TypeError(f"Dispatcher {name} must be True or False, not {value!r}")
    return value


def check_access_log(value):
    """access_log: False, True (the default format) or a format string."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value:
        return value
    raise TypeError("Dispatcher access_log must be True, False or a format "
                    f"string, not {value!r}")


def check_port(port):
    if isinstance(port, bool) or not isinstance(port, int) or not (
            0 <= port <= 65535):
        raise ValueError(f"Dispatcher port must be an int 0..65535, not {port!r}")
    return port


def check_max_pending(max_pending):
    if isinstance(max_pending, bool) or not isinstance(max_pending, int):
        raise TypeError(
            f"Dispatcher max_pending must be an int, not {max_pending!r}")
    if max_pending < 1:
        raise ValueError(f"Dispatcher max_pending must be >= 1, got {max_pending}")
    return max_pending


def check_pools(pools, owner=None):
    """(list of pools, the fallback pool or None); `owner` is the core the
    pools may already belong to (a configuration applied again)."""
    pools = [] if pools is None else pools
    if not isinstance(pools, (list, tuple)):
        raise TypeError(
            f"Dispatcher pools must be a list of WorkerPool, "
            f"not {type(pools).__name__}")
    fallback = None
    for pool in pools:
        if not isinstance(pool, WorkerPool):
            raise TypeError(
                f"Dispatcher pools must hold WorkerPool instances, "
                f"found {pool!r}")
        if pool.core is not None and pool.core is not owner:
            raise ValueError(f"Dispatcher pools: {pool!r} already belongs "
                             "to a dispatcher")
        if pools.count(pool) > 1:
            raise ValueError(f"Dispatcher pools: {pool!r} listed twice")
        if pool.is_fallback:
            if fallback is not None:
                raise ValueError(
                    "Dispatcher pools: only one pool may have routes=None "
                    f"(the fallback): {fallback!r} and {pool!r}")
            fallback = pool
    name_apart(pools)
    return list(pools), fallback


def name_apart(pools):
    """A pool is named after its worker class, and the name keys its
    metrics, its broker stream and its config-file entry; so the second pool
    of one class is named 'Class-2', the third 'Class-3', in list order."""
    taken = {}
    for pool in pools:
        base = pool.worker_class.__name__
        taken[base] = taken.get(base, 0) + 1
        pool.name = base if taken[base] == 1 else f"{base}-{taken[base]}"


def static_mounts(static_routes):
    """StaticMounts from static_routes, the longest prefix first."""
    if static_routes is None:
        return []
    if not isinstance(static_routes, dict):
        raise TypeError(
            "Dispatcher static_routes must be a dict of URL prefix -> "
            f"directory, not {type(static_routes).__name__}")
    mounts = []
    for prefix, value in static_routes.items():
        if isinstance(value, dict):
            unknown = set(value) - {'path', 'headers', 'authoritative'}
            if unknown:
                raise ValueError(
                    f"static_routes[{prefix!r}]: unknown keys "
                    f"{sorted(unknown)} (known: path, headers, authoritative)")
            if 'path' not in value:
                raise ValueError(f"static_routes[{prefix!r}] needs a 'path'")
            mount = _static.StaticMount(
                prefix, value['path'], value.get('headers'),
                value.get('authoritative', False))
        else:
            mount = _static.StaticMount(prefix, value)
        mounts.append(mount)
    # the longest prefix first: '/static/img/' before '/static/'
    mounts.sort(key=lambda mount: len(mount.prefix), reverse=True)
    return mounts


def http_settings(given, max_pending):
    """The HTTP layer's options: our defaults, then what the user gave."""
    for name in given:
        if name in _RENAMED:
            raise TypeError(f"Dispatcher() takes no {name!r}: its WebSockets "
                            f"take {_RENAMED[name]!r}")
        if name not in _http.HTTP_OPTIONS:
            raise TypeError(
                f"Dispatcher() got an unexpected keyword argument {name!r} "
                f"(HTTP server options: {', '.join(sorted(_http.HTTP_OPTIONS))})")
    options = dict(HTTP_DEFAULTS)
    options['max_waiting_clients'] = CONNECTIONS_PER_PENDING * max_pending
    options.update(given)
    if options.get('keep_alive_max_requests', 0) is None:  # "unlimited"
        options['keep_alive_max_requests'] = UNLIMITED_REQUESTS
    for name in _POSITIVE_INTS:
        if name in options:
            value = options[name]
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(
                    f"Dispatcher {name} must be a positive int, got {value!r}")
    if options.get('listen', 1) > MAX_BACKLOG:   # what listen(2) takes
        raise ValueError(f"Dispatcher listen must be at most {MAX_BACKLOG} "
                         f"(the kernel caps it at net.core.somaxconn), got "
                         f"{options['listen']!r}")
    for name in _POSITIVE_TIMES:
        positive(options[name], name)
    _spool.check_threshold(options['spool_threshold'])
    _spool.check_directory(options['spool_dir'])
    proxies = options.get('trusted_proxies')
    if proxies is not None and (isinstance(proxies, str) or not isinstance(
            proxies, (list, tuple, set, frozenset))):
        raise TypeError(
            "Dispatcher trusted_proxies must be a list of IP addresses")
    for proxy in proxies or ():
        try:
            if not isinstance(proxy, str):
                raise ValueError(proxy)
            _ipaddress.ip_address(proxy)
        except ValueError:
            raise ValueError("Dispatcher trusted_proxies: not an IP address: "
                             f"{proxy!r}") from None
    return options
