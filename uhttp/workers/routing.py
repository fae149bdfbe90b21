"""URL patterns, converters and route tables.

Pure logic, no I/O: the dispatcher uses `PrefixRoutes` to pick a pool,
workers and sync handlers use `RouteTable` to pick a handler.
"""

import inspect as _inspect
import math as _math
import re as _re
import weakref as _weakref

METHODS = frozenset((
    'GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS', 'TRACE',
    'CONNECT'))


def _finite_float(text):
    """float(text), refusing (ValueError) a number of so many digits that
    it is infinite."""
    value = float(text)
    if _math.isinf(value):
        raise ValueError(f"{text[:40]}...: beyond a float")
    return value


# converter name -> (regex for one match, function turning the text into a value)
CONVERTERS = {
    'str': (r'[^/]+', str),
    'int': (r'-?[0-9]+', int),
    'float': (r'-?[0-9]+(?:\.[0-9]+)?', _finite_float),
    'path': (r'.+', str),
}

_PARAM = _re.compile(r'\{([^{}]*)\}')
_NAME = _re.compile(r'[A-Za-z_][A-Za-z0-9_]*\Z')


class PatternError(ValueError):
    """A route pattern that cannot be compiled."""


class Pattern:
    """One compiled URL pattern such as '/user/{id:int}'.

    `match(path)` returns a dict of converted parameters, or None.
    """

    __slots__ = ('text', 'params', '_regex', '_converters')

    def __init__(self, text):
        if not isinstance(text, str):
            raise PatternError(
                f"route pattern must be a str, not {type(text).__name__}: "
                f"{text!r}")
        if text and not text.startswith('/'):
            raise PatternError(f"route pattern {text!r} must start with '/'")
        if any(part and part.strip('*') == '' for part in text.split('/')):
            raise PatternError(
                f"route pattern {text!r} is matched literally: '*' is no "
                "wildcard here; '/files/{rest:path}' takes everything below "
                "/files ('/**' prefixes are for WorkerPool(routes=...))")
        self.text = text
        regex = []
        converters = {}
        pos = 0
        for found in _PARAM.finditer(text):
            literal = text[pos:found.start()]
            if '{' in literal or '}' in literal:
                raise PatternError(f"unbalanced brace in route pattern {text!r}")
            regex.append(_re.escape(literal))
            name, _, conv = found.group(1).partition(':')
            name = name.strip()
            conv = conv.strip() or 'str'
            if not _NAME.match(name):
                raise PatternError(
                    f"bad parameter name {name!r} in route pattern {text!r}")
            if name in converters:
                raise PatternError(
                    f"parameter {name!r} appears twice in route pattern {text!r}")
            if conv not in CONVERTERS:
                raise PatternError(
                    f"unknown converter {conv!r} in route pattern {text!r} "
                    f"(known: {', '.join(sorted(CONVERTERS))})")
            part, func = CONVERTERS[conv]
            regex.append(f'(?P<{name}>{part})')
            converters[name] = func
            pos = found.end()
        tail = text[pos:]
        if '{' in tail or '}' in tail:
            raise PatternError(f"unbalanced brace in route pattern {text!r}")
        regex.append(_re.escape(tail))
        self.params = tuple(converters)
        self._converters = converters
        self._regex = _re.compile(''.join(regex) + r'\Z') if converters else None

    @property
    def is_static(self):
        """True when the pattern has no parameters (matched by equality)."""
        return self._regex is None

    def match(self, path):
        """Return the converted parameters when `path` matches, else None."""
        if self._regex is None:
            return {} if path == self.text else None
        found = self._regex.match(path)
        if found is None:
            return None
        params = {}
        for name, value in found.groupdict().items():
            try:
                params[name] = self._converters[name](value)
            except ValueError:
                return None
        return params

    def __repr__(self):
        return f"Pattern({self.text!r})"


def normalize_methods(methods, where):
    """Upper-case and check a method list; empty means every method."""
    result = []
    for method in methods:
        if not isinstance(method, str):
            raise TypeError(
                f"{where}: HTTP method must be a str, not {method!r}")
        method = method.upper()
        if method not in METHODS:
            raise ValueError(f"{where}: unknown HTTP method {method!r}")
        result.append(method)
    return tuple(result)


class RouteTable:
    """Maps (method, path) to a target.

    Static patterns are looked up in a dict; patterns with parameters are
    tried in the order they were added. `lookup()` answers one of:
    (target, params) on a match, (None, allowed_methods) when the path is
    known under other methods only, (None, None) when nothing matches.
    A route without methods accepts every method. HEAD falls back to GET.
    """

    def __init__(self):
        self._static = {}    # path -> {method or None: target}
        self._dynamic = []   # [(Pattern, {method or None: target})]
        self._dynamic_index = {}
        self.patterns = []   # pattern texts, in the order first added
        self._position = {}  # pattern text -> its index in `patterns`

    def __len__(self):
        return (sum(len(v) for v in self._static.values())
                + sum(len(v) for _, v in self._dynamic))

    def add(self, pattern, methods, target):
        """Add a route; `pattern` is a str or Pattern, methods a tuple."""
        if not isinstance(pattern, Pattern):
            pattern = Pattern(pattern)
        if pattern.text not in self._position:
            self._position[pattern.text] = len(self.patterns)
            self.patterns.append(pattern.text)
        if pattern.is_static:
            by_method = self._static.setdefault(pattern.text, {})
        else:
            by_method = self._dynamic_index.get(pattern.text)
            if by_method is None:
                by_method = self._dynamic_index[pattern.text] = {}
                self._dynamic.append((pattern, by_method))
        for method in methods or (None,):
            by_method.setdefault(method, target)

    @staticmethod
    def _pick(by_method, method):
        target = by_method.get(method)
        if target is None and method == 'HEAD':
            target = by_method.get('GET')
        if target is None:
            target = by_method.get(None)
        return target

    def lookup(self, method, path):
        allowed = None
        by_method = self._static.get(path)
        if by_method is not None:
            target = self._pick(by_method, method)
            if target is not None:
                return target, {}
            allowed = set(by_method)
        for pattern, by_method in self._dynamic:
            params = pattern.match(path)
            if params is None:
                continue
            target = self._pick(by_method, method)
            if target is not None:
                return target, params
            if allowed is None:
                allowed = set()
            allowed.update(by_method)
        if allowed:
            if 'GET' in allowed:
                allowed.add('HEAD')
            return None, sorted(allowed)
        return None, None

    def find(self, method, path):
        """lookup() plus which pattern matched: (target, params, index),
        `index` being the pattern's position in `patterns` (None when no
        target was found)."""
        by_method = self._static.get(path)
        if by_method is not None:
            target = self._pick(by_method, method)
            if target is not None:
                return target, {}, self._position[path]
        for pattern, by_method in self._dynamic:
            params = pattern.match(path)
            if params is None:
                continue
            target = self._pick(by_method, method)
            if target is not None:
                return target, params, self._position[pattern.text]
        return (None,) + self.lookup(method, path)[1:] + (None,)


class PrefixRoutes:
    """The dispatcher's pool routes: exact paths and '/prefix/**' prefixes.

    '/api/**' matches '/api' and everything below '/api/'; a route without
    '**' matches only that exact path.
    """

    def __init__(self, routes, where='routes'):
        if isinstance(routes, (str, bytes)) or not isinstance(
                routes, (list, tuple)):
            raise TypeError(
                f"{where} must be a list of str patterns, "
                f"not {type(routes).__name__}")
        self.routes = tuple(routes)
        self._exact = set()
        self._prefixes = []
        for route in routes:
            if not isinstance(route, str):
                raise TypeError(
                    f"{where} must be a list of str patterns, "
                    f"found {route!r}")
            if not route.startswith('/'):
                raise ValueError(f"{where}: route {route!r} must start with '/'")
            if route.endswith('/**'):
                base = route[:-3]
                check = base
            else:
                base = None
                check = route
            if '*' in check or '{' in check or '}' in check:
                raise ValueError(
                    f"{where}: route {route!r} is neither an exact path nor a "
                    "prefix ending in '/**'")
            if base is None:
                self._exact.add(route)
            else:
                self._prefixes.append((base, base + '/'))

    def match(self, path):
        if path in self._exact:
            return True
        for base, prefix in self._prefixes:
            if path.startswith(prefix) or path == base:
                return True
        return False


# -- route declarations -----------------------------------------------------

_API_ROUTES = '_uhttp_api_routes'
_SYNC_ROUTES = '_uhttp_sync_routes'


def _function_of(member):
    """The function of a staticmethod or classmethod, else `member`."""
    if isinstance(member, (staticmethod, classmethod)):
        return member.__func__
    return member


def _declare(attr, kind, pattern, methods):
    if not isinstance(pattern, str):
        raise TypeError(
            f"@{kind}() pattern must be a str, not {type(pattern).__name__}")
    methods = normalize_methods(methods, f"@{kind}({pattern!r})")

    def decorator(func):
        if not callable(func):
            raise TypeError(f"@{kind}({pattern!r}) must decorate a function")
        marked = _function_of(func)  # where route_marks() looks
        not_plain = not_a_plain_function(marked)
        if not_plain:
            raise TypeError(
                f"@{kind}({pattern!r}) cannot mark {marked.__qualname__}, "
                f"{not_plain}: handlers are called, not awaited or iterated, "
                "and answer with what they return" + (
                    " (stream with request.response_stream())"
                    if kind == 'api' else ''))
        routes = list(getattr(marked, attr, ()))
        routes.append((pattern, methods))
        try:
            setattr(marked, attr, tuple(routes))
        except AttributeError as err:
            raise TypeError(
                f"@{kind}({pattern!r}) cannot mark {func!r}") from err
        return func
    return decorator


def not_a_plain_function(func):
    """What kind of function `func` is when calling it runs nothing (an
    async def, a generator), else ''."""
    if _inspect.iscoroutinefunction(func):
        return 'an async def'
    if _inspect.isasyncgenfunction(func):
        return 'an async generator'
    if _inspect.isgeneratorfunction(func):
        return 'a generator'
    return ''


def api(pattern, *methods):
    """Mark a Worker or ApiHandler method as the handler of `pattern`.

    No methods means every method. On an ApiHandler the pattern is
    prefixed with the handler's PATTERN.
    """
    return _declare(_API_ROUTES, 'api', pattern, methods)


_WEBSOCKET = '_uhttp_websocket'


def websocket(pattern):
    """Mark a Worker or ApiHandler method as the WebSocket handler of
    `pattern` (same patterns and converters as @api). It is called with a
    WebSocket (see wsworker.py) and accepts or rejects it."""
    mark = _declare(_API_ROUTES, 'websocket', pattern, ('GET',))

    def decorator(func):
        func = mark(func)
        setattr(_function_of(func), _WEBSOCKET, True)
        return func
    return decorator


def is_websocket(member):
    """True for a member marked with @websocket."""
    return getattr(_function_of(member), _WEBSOCKET, False)


def sync(pattern, *methods):
    """Mark a Dispatcher method as a sync handler, run in the dispatcher."""
    return _declare(_SYNC_ROUTES, 'sync', pattern, methods)


def declared_routes(cls, kind='api'):
    """The routes declared on `cls` and its bases:
    [(attr name, member, pattern, methods)], where `member` is the class
    attribute itself (a function, staticmethod, ...).

    A name overridden in a subclass takes the subclass's declaration (or
    none), as Python's attribute lookup does.
    """
    result = []
    seen = set()
    for klass in cls.__mro__:
        here = {}   # (pattern, method) -> name, in this class body
        for name, value in vars(klass).items():
            if name in seen:
                continue
            seen.add(name)
            for pattern, methods in route_marks(value, kind):
                result.append((name, value, pattern, methods))
                if klass is cls:
                    _check_unique(cls, here, name, pattern, methods)
    return result


def _check_unique(cls, here, name, pattern, methods):
    """Two members of one class body on the same pattern and method: the
    second would never run, so it is a mistake (a subclass replacing a
    base class's route is not)."""
    for method in methods or ('*',):
        other = here.setdefault((pattern, method), name)
        if other != name:
            raise PatternError(
                f"{cls.__name__}.{name}: route {pattern!r} "
                f"({'every method' if method == '*' else method}) is "
                f"{cls.__name__}.{other}'s too; only one of them would run")


def route_marks(value, kind='api'):
    """The (pattern, methods) pairs a class member was marked with by
    @api (kind 'api') or @sync (kind 'sync')."""
    attr = _API_ROUTES if kind == 'api' else _SYNC_ROUTES
    return getattr(_function_of(value), attr, ())


def bind(member, instance):
    """The callable for a route member as seen from `instance`, taken from
    the class, so that no instance attribute can shadow a handler."""
    get = getattr(type(member), '__get__', None)
    if get is None:
        return member
    return get(member, instance, type(instance))


def compile_routes(owner, routes, prefix=''):
    """Compile declared routes, raising ValueError that names the owner."""
    compiled = []
    for name, member, pattern, methods in routes:
        if prefix.endswith('/') and pattern.startswith('/'):
            text = prefix + pattern[1:]
        else:
            text = prefix + pattern
        try:
            compiled.append((name, member, Pattern(text), methods))
        except PatternError as err:
            raise PatternError(f"{owner}.{name}: {err}") from None
    return compiled


def check_distinct(owner, groups):
    """`groups`: (label, compiled routes) in the order a worker's route
    table takes them (its own, then each of its HANDLERS). Two of them on
    the same pattern and method are a PatternError: only the first would
    ever run."""
    taken = {}
    for index, (label, routes) in enumerate(groups):
        for name, _, pattern, methods in routes:
            for method in methods or ('*',):
                first = taken.setdefault((pattern.text, method),
                                         (index, f'{label}.{name}'))
                if first[0] != index:
                    raise PatternError(
                        f"{owner}: route {pattern.text!r} "
                        f"({'every method' if method == '*' else method}) "
                        f"of {label}.{name} is {first[1]}'s too; only "
                        f"{first[1]} would run")


# compiled routes of each Worker, ApiHandler and Dispatcher class, kept
# here rather than on the class, out of the user's namespace
_COMPILED = _weakref.WeakKeyDictionary()


def set_class_routes(cls, routes):
    _COMPILED[cls] = routes


def class_routes(cls):
    """The compiled routes of `cls` ([] for a class that declares none)."""
    return _COMPILED.get(cls, [])
