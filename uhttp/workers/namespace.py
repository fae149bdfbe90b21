"""The user's namespace: which member names of Worker, ApiHandler and
Dispatcher are the library's API, and the check that a subclass does not
collide with them.

Users subclass the three classes and pick ordinary names for their
handlers and attributes (`pid`, `status`, `name`, `items`). The library
keeps its own state under one attribute (`_uhttp`) and binds route
handlers from the class, so any other name is the user's. The names below
are the documented API: hooks a subclass is meant to override, settings
it may set, and members it must leave alone. A route named like any of
them, or a plain attribute named like a member, raises TypeError when the
subclass is defined.

Pure logic: no processes, no sockets.
"""

from . import routing as _routing

# the one attribute the library keeps on an instance
STATE = '_uhttp'


class Names:
    """The API names of one base class."""

    def __init__(self, base, hooks=(), settings=(), members=()):
        self.base = base
        self.hooks = frozenset(hooks)        # meant to be overridden
        self.settings = frozenset(settings)  # class attributes a subclass sets
        self.members = frozenset(members)    # the library's: leave alone

    def what(self, name):
        """How the API uses `name`, or None when it is free."""
        if name in self.hooks:
            return f"the hook {self.base}.{name}()"
        if name in self.settings:
            return f"the setting {self.base}.{name}"
        if name in self.members:
            return f"{self.base}.{name}, part of the uhttp.workers API"
        return None

    @property
    def all(self):
        return self.hooks | self.settings | self.members


WORKER = Names(
    'Worker',
    hooks=('setup', 'teardown', 'on_config', 'on_idle', 'on_disconnect',
           'do_check', 'on_request_error', 'on_ws_message', 'on_ws_close'),
    settings=('HANDLERS', 'LOG_NAME'),
    members=('log', 'kwargs', '_accepting', 'keep_alive', 'pause', 'resume',
             'forward', 'register_reader', 'register_writer',
             'unregister_reader', 'unregister_writer'))

API_HANDLER = Names('ApiHandler', settings=('PATTERN',), members=('worker',))

DISPATCHER = Names(
    'Dispatcher',
    hooks=('do_check', 'do_check_sync', 'on_request_accepted', 'on_response',
           'on_pending_removed', 'on_worker_died', 'on_forward',
           'on_static_served', 'on_idle', 'on_log'),
    settings=('SELECT_TIMEOUT', 'LOG_NAME'),
    members=('run', 'stop', 'log', 'port', '_pools', '_pending', '_find_pool',
             'register_reader', 'register_writer', 'unregister_reader',
             'unregister_writer'))


def state(instance):
    """The library's state of `instance` (read from the instance dict, so
    no class member of the user's can stand in for it); a TypeError naming
    the class when its __init__ did not call the base class's."""
    try:
        return instance.__dict__[STATE]
    except KeyError:
        name = type(instance).__name__
        raise TypeError(
            f"{name}.__init__() did not call super().__init__(...): {name} "
            "has no log, settings or state of the library; call it first "
            "in your __init__") from None


class Info:
    """A read-only view of the library's state of an instance: `read(state)`
    gives the value. A non-data descriptor: a subclass's own member of the
    same name replaces it, and assigning to it on an instance stores the
    user's value, so these conveniences never take a name from the user."""

    def __init__(self, read, doc):
        self.read = read
        self.__doc__ = doc

    def __get__(self, instance, owner=None):
        if instance is None:
            return self
        return self.read(state(instance))


def collisions(cls, names, route_kind, base=None):
    """Problems of the members `cls` itself defines, and of those it takes
    from mixins (bases that are not `base` or a subclass of it, which are
    checked when they are defined), as messages.

    `route_kind` is the kind of route this class may declare ('api' or
    'sync'); a route of the other kind is reported too, since it would
    never be served.
    """
    problems = []
    for klass in [cls] + (mixins(cls, base) if base is not None else []):
        where = cls.__name__ + '.{}'
        if klass is not cls:
            where += f' (from {klass.__name__})'
        problems += _body_collisions(klass, where, names, route_kind)
    return problems


def mixins(cls, base):
    """The classes `cls` inherits from that are neither `base`, a base of
    it, nor a subclass of it: their members become the subclass's own."""
    return [klass for klass in cls.__mro__[1:]
            if klass not in base.__mro__ and not issubclass(klass, base)]


def _body_collisions(klass, where, names, route_kind):
    """Problems of the members of one class body; `where` formats a
    member's name for the messages."""
    problems = []
    other_kind = 'sync' if route_kind == 'api' else 'api'
    for name, value in vars(klass).items():
        if name.startswith('__') and name.endswith('__'):
            continue
        is_route = bool(_routing.route_marks(value, route_kind))
        if _routing.route_marks(value, other_kind):
            problems.append(
                f"{where.format(name)} is marked @{other_kind}, which has "
                f"no effect on a {names.base} subclass (use @{route_kind})")
        what = names.what(name)
        if what is None:
            continue
        not_plain = (name in names.hooks
                     and _routing.not_a_plain_function(value))
        if not_plain:
            problems.append(
                f"{where.format(name)} is {not_plain}: {what} is called, "
                "not awaited or iterated, so its body would never run")
        if is_route:
            problems.append(
                f"the route {where.format(name)} collides with {what}; "
                "give the handler another name")
        elif name in names.members:
            problems.append(
                f"{where.format(name)} collides with {what}; "
                "choose another name")
    return problems


def check_subclass(cls, names, route_kind, base=None):
    """Raise TypeError naming every collision of the subclass `cls` of
    `base`, its mixins' included."""
    problems = collisions(cls, names, route_kind, base)
    if problems:
        raise TypeError('; '.join(problems))
