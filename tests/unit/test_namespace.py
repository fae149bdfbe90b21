"""namespace.py and the subclass checks: a route or attribute named like a
documented API name raises TypeError at class definition, naming the class,
the member and what it collides with; every other name is the user's."""

import pytest

import uhttp.workers as workers
from uhttp.workers import namespace
from uhttp.workers.routing import bind, class_routes
from uhttp.workers.workerloop import build_table as _build_table

BASES = [
    (workers.Worker, namespace.WORKER, 'api'),
    (workers.ApiHandler, namespace.API_HANDLER, 'api'),
    (workers.Dispatcher, namespace.DISPATCHER, 'sync'),
]


def route(kind, name):
    decorate = workers.api if kind == 'api' else workers.sync

    def handler(self, *args):
        return name
    handler.__name__ = name
    return decorate(f'/{name}')(handler)


def define(base, members):
    return type('UserClass', (base,), members)


def cases(kind_filter=None):
    for base, names, kind in BASES:
        for name in sorted(names.all):
            yield pytest.param(base, names, kind, name,
                               id=f'{base.__name__}.{name}')


@pytest.mark.parametrize('base,names,kind,name', list(cases()))
def test_route_named_like_an_api_name_raises(base, names, kind, name):
    with pytest.raises(TypeError) as info:
        define(base, {name: route(kind, name)})
    message = str(info.value)
    assert f'UserClass.{name}' in message
    assert f'{names.base}.{name}' in message


@pytest.mark.parametrize('base,names,kind,name', [
    pytest.param(base, names, kind, name, id=f'{base.__name__}.{name}')
    for base, names, kind in BASES for name in sorted(names.members)])
def test_attribute_named_like_a_member_raises(base, names, kind, name):
    with pytest.raises(TypeError) as info:
        define(base, {name: 42})
    assert f'UserClass.{name}' in str(info.value)
    assert 'part of the uhttp.workers API' in str(info.value)


@pytest.mark.parametrize('base,names,kind,name', [
    pytest.param(base, names, kind, name, id=f'{base.__name__}.{name}')
    for base, names, kind in BASES
    for name in sorted(names.hooks | names.settings)])
def test_hooks_and_settings_may_be_overridden(base, names, kind, name):
    value = (lambda self, *args: None) if name in names.hooks else getattr(
        base, name)
    define(base, {name: value})


def test_every_collision_is_named_at_once():
    with pytest.raises(TypeError) as info:
        define(workers.Worker, {'setup': route('api', 'setup'), 'log': 1})
    assert 'UserClass.setup' in str(info.value)
    assert 'UserClass.log' in str(info.value)


@pytest.mark.parametrize('base,names,kind,name', [
    pytest.param(base, names, kind, name, id=f'{base.__name__}.{name}')
    for base, names, kind in BASES for name in sorted(names.members)])
@pytest.mark.parametrize('order', ['mixin first', 'mixin last'])
def test_a_mixin_member_named_like_a_member_raises(base, names, kind, name,
                                                   order):
    # a plain class mixed in gives the subclass its members as its own:
    # first in the MRO they replace the library's, after the base a
    # route of the same name would never be served
    mixin_route = type('Routes', (), {name: route(kind, name)})
    mixin_attr = type('Attrs', (), {name: 42})
    for mixin in (mixin_route, mixin_attr):
        bases = (mixin, base) if order == 'mixin first' else (base, mixin)
        with pytest.raises(TypeError) as info:
            type('UserClass', bases, {})
        message = str(info.value)
        assert f'UserClass.{name} (from {mixin.__name__})' in message
        assert f'{names.base}.{name}' in message


def test_mixins_of_ordinary_names_and_hooks_are_free():
    class Routes:
        def setup(self):
            self.items = []

        @workers.api('/api/items')
        def items_route(self, request):
            return self.items

    class ItemWorker(Routes, workers.Worker):
        pass

    class MoreItems(ItemWorker):    # checked once, where it was mixed in
        pass

    assert [name for name, _, _, _ in class_routes(MoreItems)] == [
        'items_route']


def test_route_of_the_wrong_kind_is_refused():
    with pytest.raises(TypeError, match='@sync'):
        define(workers.Worker, {'health': route('sync', 'health')})
    with pytest.raises(TypeError, match='@api'):
        define(workers.Dispatcher, {'health': route('api', 'health')})


def introspected(base, instance):
    names = set(vars(instance)) | set(dir(base))
    return {name for name in names
            if not (name.startswith('__') and name.endswith('__'))}


def instances():
    worker = workers.Worker(worker_id=3, pool_name='P')
    return [(workers.Worker, namespace.WORKER, 'api', worker),
            (workers.ApiHandler, namespace.API_HANDLER, 'api',
             workers.ApiHandler(worker)),
            (workers.Dispatcher, namespace.DISPATCHER, 'sync',
             workers.Dispatcher(port=0))]


@pytest.mark.parametrize('index', range(3))
def test_every_other_runtime_name_is_free(index):
    base, names, kind, instance = instances()[index]
    free = introspected(base, instance) - names.all
    assert namespace.STATE in free or base is workers.ApiHandler
    cls = define(base, {name: route(kind, name) for name in free})
    assert {name for name, _, _, _ in class_routes(cls)} == free


def test_the_instance_keeps_only_documented_names_and_its_state():
    base, names, _, worker = instances()[0]
    assert set(vars(worker)) - names.all == {namespace.STATE}
    dispatcher = instances()[2][3]
    assert set(vars(dispatcher)) - namespace.DISPATCHER.all == {namespace.STATE}


def test_handler_bound_from_the_class_not_the_instance():
    class PidWorker(workers.Worker):
        @workers.api('/api/pid', 'GET')
        def pid(self, request):
            return {'pid': 'from the handler'}

        @workers.api('/api/name', 'GET')
        def name(self, request):
            return 'name handler'

    worker = PidWorker(worker_id=1)
    worker.name = 'an attribute the user set'   # shadows on the instance
    table = _build_table(worker)
    handler, _ = table.lookup('GET', '/api/pid')
    assert handler(None) == {'pid': 'from the handler'}
    handler, _ = table.lookup('GET', '/api/name')
    assert handler(None) == 'name handler'


def test_conveniences_may_be_replaced_or_assigned():
    class MyWorker(workers.Worker):
        def setup(self):
            self.pool_name = 'mine'

    worker = MyWorker(worker_id=4, pool_name='Pool')
    assert worker.worker_id == 4 and worker.pool_name == 'Pool'
    worker.setup()
    assert worker.pool_name == 'mine'       # the user's value, no error
    assert 'worker_id=4' in repr(worker)   # the library still knows its own


def test_dispatcher_info_may_be_assigned():
    class MyDispatcher(workers.Dispatcher):
        def __init__(self, pools, **kwargs):
            super().__init__(pools=pools, **kwargs)
            self.pools = 'the user keeps a list of their own'

    dispatcher = MyDispatcher(pools=[], port=0)
    assert dispatcher.pools == 'the user keeps a list of their own'
    assert workers.Dispatcher.status(dispatcher)['pools'] == []


def test_bind_keeps_static_and_class_methods():
    class Owner:
        @staticmethod
        def s(request):
            return 's'

        @classmethod
        def c(cls, request):
            return cls.__name__

    owner = Owner()
    assert bind(vars(Owner)['s'], owner)(None) == 's'
    assert bind(vars(Owner)['c'], owner)(None) == 'Owner'


@pytest.mark.parametrize('decorate', [
    lambda: workers.api('/api/items'), lambda: workers.websocket('/ws'),
    lambda: workers.sync('/health')], ids=['api', 'websocket', 'sync'])
def test_a_route_that_calling_does_not_run_raises(decorate):
    # an async def or a generator would give a coroutine or a generator
    # object back, never run its body, and answer 500 at every request
    async def items(self, request):
        return []

    def pages(self, request):
        yield 'page'

    for handler, kind in ((items, 'an async def'), (pages, 'a generator')):
        with pytest.raises(TypeError) as info:
            decorate()(handler)
        assert handler.__qualname__ in str(info.value)
        assert kind in str(info.value)


@pytest.mark.parametrize('base,names,kind,name', [
    pytest.param(base, names, kind, name, id=f'{base.__name__}.{name}')
    for base, names, kind in BASES for name in sorted(names.hooks)])
def test_an_async_hook_raises(base, names, kind, name):
    async def hook(self, *args):
        return None

    with pytest.raises(TypeError) as info:
        define(base, {name: hook})
    assert f'UserClass.{name} is an async def' in str(info.value)


def test_async_helpers_of_the_users_own_are_free():
    class Helpers(workers.Worker):
        async def fetch(self):
            return 1

        def walk(self):
            yield 1

    assert class_routes(Helpers) == []
