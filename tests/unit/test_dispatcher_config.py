"""dispatcher.py construction: argument checks, defaults, routing to pools.

Nothing here calls run(), so no socket is opened and no worker started.
"""

import ssl

import pytest
import trustme

import uhttp.workers as workers
from uhttp.workers import log
from uhttp.workers.core import POOL_PATHS
from uhttp.workers.dispatcher import core_of


class AWorker(workers.Worker):
    pass


class BWorker(workers.Worker):
    pass


class CWorker(workers.Worker):
    pass


def pool(cls=AWorker, routes=None, **kwargs):
    return workers.WorkerPool(cls, routes=routes, **kwargs)


def assert_names(exc_type, name, **kwargs):
    with pytest.raises(exc_type) as info:
        workers.Dispatcher(**kwargs)
    assert name in str(info.value), str(info.value)
    return info.value


# -- argument validation ---------------------------------------------------------------

@pytest.mark.parametrize('port', [-1, 65536, 100000])
def test_port_out_of_range(port):
    assert_names(ValueError, 'port', port=port)


@pytest.mark.parametrize('port', ['8080', 80.0, None, True])
def test_port_wrong_type(port):
    assert_names((TypeError, ValueError), 'port', port=port)


@pytest.mark.parametrize('port', [0, 1, 65535])
def test_port_bounds_accepted(port):
    assert workers.Dispatcher(port=port).port == port


def test_address_type():
    assert_names(TypeError, 'address', address=127001)


@pytest.mark.parametrize('address', ['', ' '])
def test_an_empty_address_is_refused(address):
    # (an unset variable in `--host "$HOST"` must not mean every interface)
    assert_names(ValueError, 'address', address=address)


@pytest.mark.parametrize('pools', ['pool', pool(), {'a': 1}, 5])
def test_pools_not_a_list(pools):
    assert_names(TypeError, 'pools', pools=pools)


@pytest.mark.parametrize('item', [AWorker, 'AWorker', None, object()])
def test_pools_items_must_be_worker_pools(item):
    assert_names(TypeError, 'pools', pools=[item])


def test_two_fallback_pools():
    error = assert_names(ValueError, 'pools',
                         pools=[pool(AWorker), pool(BWorker)])
    assert 'fallback' in str(error) or 'routes=None' in str(error)


def test_one_fallback_and_routed_pools_ok():
    dispatcher = workers.Dispatcher(pools=[
        pool(AWorker, ['/a/**']), pool(BWorker, ['/b/**']), pool(CWorker)])
    assert len(dispatcher._pools) == 3


def test_same_pool_twice():
    shared = pool(AWorker, ['/a/**'])
    assert_names(ValueError, 'pools', pools=[shared, shared])


def test_two_pools_of_one_worker_class_are_named_apart():
    # the name keys metrics, broker streams and config-file entries
    first, second, third = (pool(AWorker, ['/a/**']), pool(BWorker, ['/b/**']),
                            pool(AWorker, ['/c/**']))
    workers.Dispatcher(pools=[first, second, third])
    assert [first.name, second.name, third.name] == [
        'AWorker', 'BWorker', 'AWorker-2']


def test_init_without_super_is_named():
    # a subclass __init__ that forgets super().__init__(**kwargs) got
    # KeyError: '_uhttp' from run(), status() and the read-only properties
    class KeyDispatcher(workers.Dispatcher):
        def __init__(self, valid_keys, **kwargs):
            self.valid_keys = valid_keys

    dispatcher = KeyDispatcher({'k'}, port=0)
    for use in (dispatcher.run, dispatcher.status, lambda: dispatcher.port,
                lambda: dispatcher.is_running, lambda: dispatcher._find_pool('/')):
        with pytest.raises(TypeError) as caught:
            use()
        assert 'KeyDispatcher.__init__() did not call super().__init__' in str(
            caught.value)


def test_pool_of_another_dispatcher():
    shared = pool(AWorker, ['/a/**'])
    workers.Dispatcher(pools=[shared])
    assert_names(ValueError, 'pools', pools=[shared])


def test_failed_construction_does_not_claim_pools():
    shared = pool(AWorker, ['/a/**'])
    with pytest.raises(ValueError):
        workers.Dispatcher(pools=[shared], max_pending=0)
    dispatcher = workers.Dispatcher(pools=[shared])
    assert dispatcher._pools == [shared]


@pytest.mark.parametrize('value,exc', [
    (-1, ValueError), (-0.1, ValueError), ('10', TypeError), (None, TypeError),
    (float('nan'), ValueError)])
def test_shutdown_timeout(value, exc):
    assert_names(exc, 'shutdown_timeout', shutdown_timeout=value)


def test_shutdown_timeout_zero_allowed():
    assert workers.Dispatcher(shutdown_timeout=0)._uhttp.settings.shutdown_timeout == 0


@pytest.mark.parametrize('value,exc', [
    (0, ValueError), (-5, ValueError), ('100', TypeError), (1.5, TypeError),
    (True, TypeError)])
def test_max_pending(value, exc):
    assert_names(exc, 'max_pending', max_pending=value)


@pytest.mark.parametrize('value', ['ctx', object(), 5, True])
def test_ssl_context_type(value):
    assert_names(TypeError, 'ssl_context', ssl_context=value)


def server_context():
    """A server context with a certificate for 127.0.0.1 (trustme)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    trustme.CA().issue_cert('127.0.0.1').configure_cert(context)
    return context


def test_ssl_context_accepted():
    context = server_context()
    assert workers.Dispatcher(ssl_context=context)._uhttp.settings.ssl_context is context


def test_ssl_context_asking_client_certificates_accepted():
    context = server_context()
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_default_certs(ssl.Purpose.CLIENT_AUTH)
    assert workers.Dispatcher(ssl_context=context)._uhttp.settings.ssl_context is context


def test_ssl_context_without_a_certificate():
    # it would listen on https:// and fail every handshake, silently
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    with pytest.raises(ValueError, match=r'ssl_context.*load_cert_chain'):
        workers.Dispatcher(ssl_context=context)


@pytest.mark.parametrize('make', [
    ssl.create_default_context,
    lambda: ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)])
def test_ssl_context_of_a_client(make):
    context = make()
    context.check_hostname = False
    trustme.CA().issue_cert('127.0.0.1').configure_cert(context)
    with pytest.raises(ValueError, match=r'ssl_context is a client-side'):
        workers.Dispatcher(ssl_context=context)


@pytest.mark.parametrize('value', [['/s/', '.'], '/s/', 5])
def test_static_routes_not_a_dict(value):
    assert_names(TypeError, 'static_routes', static_routes=value)


def test_static_routes_missing_directory(tmp_path):
    error = assert_names(ValueError, 'static_routes', static_routes={
        '/assets/': str(tmp_path / 'missing')})
    assert '/assets/' in str(error)


def test_static_routes_to_a_file_says_it_is_not_a_directory(tmp_path):
    # it said "does not exist" of a file that does
    path = tmp_path / 'index.html'
    path.write_text('x')
    error = assert_names(ValueError, 'static_routes',
                         static_routes={'/s/': str(path)})
    assert f"{str(path)!r} is not a directory" in str(error)


def test_static_routes_bad_prefix(tmp_path):
    assert_names(ValueError, 'static_routes',
                 static_routes={'assets/': str(tmp_path)})


def test_static_routes_dict_without_path(tmp_path):
    error = assert_names(ValueError, 'static_routes', static_routes={
        '/s/': {'headers': {'X': '1'}}})
    assert 'path' in str(error)
    assert '/s/' in str(error)


def test_static_routes_unknown_key(tmp_path):
    error = assert_names(ValueError, 'static_routes', static_routes={
        '/s/': {'path': str(tmp_path), 'cache': 60}})
    assert 'cache' in str(error)


@pytest.mark.parametrize('value', [5, None, ['.']])
def test_static_routes_path_wrong_type(value):
    assert_names(TypeError, 'static_routes', static_routes={'/s/': value})


def test_static_routes_headers_not_a_dict(tmp_path):
    assert_names(TypeError, 'static_routes', static_routes={
        '/s/': {'path': str(tmp_path), 'headers': ['X: 1']}})


def test_static_routes_accepted(tmp_path):
    (tmp_path / 'img').mkdir()
    dispatcher = workers.Dispatcher(static_routes={
        '/static/': str(tmp_path),
        '/static/img/': {'path': str(tmp_path / 'img'),
                         'headers': {'Cache-Control': 'max-age=60'},
                         'authoritative': True}})
    prefixes = [mount.prefix for mount in dispatcher._uhttp.settings.static]
    # the longer prefix is tried first
    assert prefixes == ['/static/img/', '/static/']
    assert dispatcher._uhttp.settings.static[0].authoritative is True


@pytest.mark.parametrize('name', ['prot', 'max_connections', 'backlog',
                                  'worker_class'])
def test_unknown_keyword(name):
    error = assert_names(TypeError, name, **{name: 1})
    assert repr(name) in str(error) or name in str(error)


@pytest.mark.parametrize('name,value', [
    ('listen', 0), ('listen', -1), ('listen', '128'), ('listen', True),
    # listen(2) takes a C int: past it the start ended in an OverflowError
    ('listen', 1 << 31),
    ('max_waiting_clients', 0), ('max_headers_length', 1.5),
    ('max_content_length', 0), ('max_send_buffer_size', -1),
    ('keep_alive_max_requests', 0), ('file_chunk_size', 'x'),
    ('keep_alive_timeout', 0), ('keep_alive_timeout', -1),
    ('request_timeout', 'x'), ('send_timeout', -2)])
def test_bad_http_option_values(name, value):
    assert_names((TypeError, ValueError), name, **{name: value})


@pytest.mark.parametrize('value', ['127.0.0.1', 5])
def test_trusted_proxies_must_be_a_list(value):
    assert_names(TypeError, 'trusted_proxies', trusted_proxies=value)


def test_http_options_accepted():
    dispatcher = workers.Dispatcher(
        listen=128, max_content_length=1024, keep_alive_timeout=2.5,
        trusted_proxies=['127.0.0.1'])
    assert dispatcher._uhttp.settings.http_options['listen'] == 128
    assert dispatcher._uhttp.settings.http_options['max_content_length'] == 1024
    assert dispatcher._uhttp.settings.http_options['keep_alive_timeout'] == 2.5


@pytest.mark.parametrize('value,exc', [('INFO', TypeError), (-1, ValueError)])
def test_log_level(value, exc):
    assert_names(exc, 'log_level', log_level=value)


# -- defaults -----------------------------------------------------------------------------

class TestDefaults:
    def test_defaults(self):
        dispatcher = workers.Dispatcher()
        assert dispatcher.port == 8080
        assert dispatcher.address == '0.0.0.0'
        assert dispatcher._uhttp.settings.max_pending == 1000
        assert dispatcher._uhttp.settings.shutdown_timeout == 10
        assert dispatcher._uhttp.settings.ssl_context is None
        assert dispatcher._pools == []
        assert dispatcher._pending == {}
        assert dispatcher._uhttp.settings.static == []
        assert workers.Dispatcher.SELECT_TIMEOUT == 1
        assert dispatcher.SELECT_TIMEOUT == 1

    def test_not_running(self):
        dispatcher = workers.Dispatcher()
        assert dispatcher.is_running is False
        assert dispatcher.pending_count == 0

    def test_http_defaults_sized_for_a_server(self):
        options = workers.Dispatcher(max_pending=50)._uhttp.settings.http_options
        assert options['listen'] >= 1024
        assert options['keep_alive_max_requests'] > 100
        assert options['max_waiting_clients'] >= 50

    def test_keep_alive_max_requests_none_is_the_unlimited_default(self):
        default = workers.Dispatcher()._uhttp.settings.http_options
        unlimited = workers.Dispatcher(
            keep_alive_max_requests=None)._uhttp.settings.http_options
        assert unlimited['keep_alive_max_requests'] == default[
            'keep_alive_max_requests']

    def test_values_kept(self):
        dispatcher = workers.Dispatcher(port=9000, address='127.0.0.1',
                                        max_pending=5, shutdown_timeout=2.5)
        assert dispatcher.port == 9000
        assert dispatcher.address == '127.0.0.1'
        assert dispatcher._uhttp.settings.max_pending == 5
        assert dispatcher._uhttp.settings.shutdown_timeout == 2.5

    def test_pools_attribute_is_the_list(self):
        pools = [pool(AWorker, ['/a/**']), pool(BWorker)]
        dispatcher = workers.Dispatcher(pools=pools)
        assert dispatcher._pools == pools
        assert dispatcher.pools == pools

    def test_tuple_of_pools(self):
        pools = (pool(AWorker, ['/a/**']),)
        assert workers.Dispatcher(pools=pools)._pools == list(pools)


# -- _find_pool ----------------------------------------------------------------------------

class TestFindPool:
    def test_first_matching_pool_then_fallback(self):
        compute = pool(AWorker, ['/api/compute/**'])
        general = pool(BWorker, ['/api/**'])
        fallback = pool(CWorker)
        dispatcher = workers.Dispatcher(pools=[compute, general, fallback])
        assert dispatcher._find_pool('/api/compute/x') is compute
        assert dispatcher._find_pool('/api/compute') is compute
        assert dispatcher._find_pool('/api/items/1') is general
        assert dispatcher._find_pool('/api') is general
        assert dispatcher._find_pool('/other') is fallback
        assert dispatcher._find_pool('/') is fallback

    def test_order_of_pools_decides(self):
        general = pool(BWorker, ['/api/**'])
        compute = pool(AWorker, ['/api/compute/**'])
        dispatcher = workers.Dispatcher(pools=[general, compute])
        assert dispatcher._find_pool('/api/compute/x') is general

    def test_fallback_listed_first_does_not_shadow_routes(self):
        fallback = pool(CWorker)
        routed = pool(AWorker, ['/api/**'])
        dispatcher = workers.Dispatcher(pools=[fallback, routed])
        assert dispatcher._find_pool('/api/x') is routed
        assert dispatcher._find_pool('/x') is fallback

    def test_exact_routes(self):
        status = pool(AWorker, ['/api/status'])
        dispatcher = workers.Dispatcher(pools=[status])
        assert dispatcher._find_pool('/api/status') is status
        assert dispatcher._find_pool('/api/status/x') is None

    def test_remembered_answers_are_the_same_answers(self):
        compute = pool(AWorker, ['/api/compute/**'])
        general = pool(BWorker, ['/api/**'])
        dispatcher = workers.Dispatcher(pools=[compute, general])
        paths = ['/api/compute/x', '/api/x', '/other', '/api/compute'] * 3
        assert [dispatcher._find_pool(path) for path in paths] == [
            compute, general, None, compute] * 3

    def test_the_remembered_paths_are_bounded_and_still_right(self):
        general = pool(BWorker, ['/api/**'])
        fallback = pool(CWorker)
        dispatcher = workers.Dispatcher(pools=[general, fallback])
        for number in range(2000):
            path = f'/api/items/{number}' if number % 2 else f'/x/{number}'
            assert dispatcher._find_pool(path) is (
                general if number % 2 else fallback)
        assert len(core_of(dispatcher).pool_by_path[1]) <= POOL_PATHS

    def test_configure_routes_with_the_new_pools(self):
        first = pool(AWorker, ['/api/**'])
        dispatcher = workers.Dispatcher(pools=[first])
        assert dispatcher._find_pool('/api/x') is first
        second = pool(BWorker, ['/api/**'])
        core_of(dispatcher).configure(pools=[second])
        assert dispatcher._find_pool('/api/x') is second

    def test_none_without_fallback(self):
        dispatcher = workers.Dispatcher(pools=[pool(AWorker, ['/api/**'])])
        assert dispatcher._find_pool('/apix') is None
        assert dispatcher._find_pool('/') is None
        assert workers.Dispatcher()._find_pool('/api') is None


# -- sync routes ---------------------------------------------------------------------------

def sync_lookup(dispatcher, method, path):
    """(handler name, params) from the dispatcher's sync table."""
    target, params = dispatcher._uhttp.intake.sync.lookup(method, path)
    return (None if target is None else target[0]), params


class TestSyncRoutes:
    def test_sync_table(self):
        class MyDispatcher(workers.Dispatcher):
            @workers.sync('/health')
            def health(self, client, path_params):
                pass

            @workers.sync('/item/{id:int}', 'GET')
            def item(self, client, path_params):
                pass

        dispatcher = MyDispatcher()
        assert sync_lookup(dispatcher, 'GET', '/health') == ('health', {})
        assert sync_lookup(dispatcher, 'GET', '/item/3') == ('item', {'id': 3})
        assert sync_lookup(dispatcher, 'POST', '/item/3') == (
            None, ['GET', 'HEAD'])

    def test_no_sync_routes(self):
        assert workers.Dispatcher()._uhttp.intake.sync is None

    def test_unknown_converter_raises_at_class_definition(self):
        with pytest.raises(ValueError) as info:
            class BadDispatcher(workers.Dispatcher):
                @workers.sync('/item/{id:uuid}')
                def item(self, client, path_params):
                    pass
        assert '/item/{id:uuid}' in str(info.value)
        assert 'BadDispatcher.item' in str(info.value)

    def test_inherited_sync_routes(self):
        class Base(workers.Dispatcher):
            @workers.sync('/a')
            def a(self, client, path_params):
                pass

        class Child(Base):
            def a(self, client, path_params):
                pass

            @workers.sync('/b')
            def b(self, client, path_params):
                pass

        child = Child()
        assert sync_lookup(child, 'GET', '/a') == (None, None)
        assert sync_lookup(child, 'GET', '/b') == ('b', {})


# -- LOG_NAME -------------------------------------------------------------------------------

class Recording(workers.Dispatcher):
    def on_log(self, name, level, message):
        records = self.__dict__.setdefault('records', [])
        records.append((name, level, message))


class TestLogName:
    def test_default(self):
        assert workers.Dispatcher.LOG_NAME == '{cls}'
        dispatcher = Recording()
        assert dispatcher.log.name == 'Recording'
        assert dispatcher.__dict__.get('records', []) == []

    def test_custom_template(self):
        class Named(Recording):
            LOG_NAME = 'front-{cls}'

        assert Named().log.name == 'front-Named'

    @pytest.mark.parametrize('template', ['{nope}', '{cls', '{0}', '{cls.x}'])
    def test_bad_placeholder_warns_and_falls_back(self, template):
        class Named(Recording):
            LOG_NAME = template

        dispatcher = Named()
        assert dispatcher.log.name == 'Named'
        records = dispatcher.__dict__.get('records', [])
        assert len(records) == 1
        name, level, message = records[0]
        assert level == log.LOG_WARNING
        assert 'LOG_NAME' in message
        assert template in message

    def test_log_goes_through_on_log(self):
        dispatcher = Recording(log_level=log.LOG_DEBUG)
        dispatcher.log.info('hello %s', 'there')
        assert dispatcher.records[-1] == ('Recording', log.LOG_INFO,
                                          'hello there')

    def test_log_level_filters(self):
        dispatcher = Recording(log_level=log.LOG_ERROR)
        dispatcher.log.warning('dropped')
        assert dispatcher.__dict__.get('records', []) == []

    def test_failing_on_log_does_not_raise(self, capsys):
        class Broken(workers.Dispatcher):
            def on_log(self, name, level, message):
                raise RuntimeError('sink down')

        dispatcher = Broken()
        dispatcher.log.error('still delivered')
        assert 'still delivered' in capsys.readouterr().err

    def test_a_failing_on_log_is_reported_once_with_its_traceback(
            self, capsys):
        # its records reached the default output, but nothing said why:
        # a broken log sink went unnoticed
        class Broken(workers.Dispatcher):
            def on_log(self, name, level, message):
                raise RuntimeError('sink down')

        dispatcher = Broken()
        dispatcher.log.error('first')
        dispatcher.log.error('second')
        err = capsys.readouterr().err
        assert 'first' in err and 'second' in err
        assert err.count("on_log() raised RuntimeError('sink down')") == 1, err
        assert 'Traceback (most recent call last)' in err
        assert "raise RuntimeError('sink down')" in err

    def test_a_record_logged_inside_on_log_goes_to_the_default_output(
            self, capsys):
        # a sink that logs what it forwarded through self.log was called
        # again for that record, hundreds of calls deep until a
        # RecursionError: one record came out hundreds of times
        class Chatty(workers.Dispatcher):
            def on_log(self, name, level, message):
                self.__dict__.setdefault('seen', []).append(message)
                self.log.warning('forwarded %d characters', len(message))

        dispatcher = Chatty()
        dispatcher.log.error('one record')
        dispatcher.log.error('another')
        assert dispatcher.seen == ['one record', 'another']
        err = capsys.readouterr().err
        assert err.count('forwarded 10 characters') == 1, err[-2000:]
        assert err.count('forwarded 7 characters') == 1, err[-2000:]
        assert err.count('forwarded') == 2, err[-2000:]


def test_a_sync_route_on_the_metrics_or_dashboard_path_is_refused():
    class App(workers.Dispatcher):
        @workers.sync('/metrics')
        def metrics(self, client, path_params):
            client.respond({'mine': True})

    with pytest.raises(ValueError, match=r"metrics_path '/metrics' is also "
                       r"the path of the sync handler metrics\(\)"):
        App(port=0, metrics_path='/metrics')
    with pytest.raises(ValueError, match='dashboard_path'):
        App(port=0, dashboard_path='/metrics')
    App(port=0, metrics_path='/prometheus')


@pytest.mark.parametrize('kwargs, message', [
    ({'trusted_proxies': [5]}, 'trusted_proxies: not an IP address: 5'),
    ({'trusted_proxies': ['not-an-ip']}, "not an IP address: 'not-an-ip'"),
    ({'ws_origins': 5}, 'ws_origins must be an origin'),
    ({'ws_origins': [5]}, 'ws_origins must hold origins'),
    ({'ws_max_message_size': 1.5}, 'ws_max_message_size must be an int'),
])
def test_values_that_would_fail_later_are_refused_at_construction(kwargs,
                                                                   message):
    with pytest.raises((TypeError, ValueError), match=message):
        workers.Dispatcher(port=0, **kwargs)
    workers.Dispatcher(port=0, trusted_proxies=['10.0.0.1', '::1'],
                       ws_origins=['https://example.com'])


# -- SELECT_TIMEOUT ----------------------------------------------------------------------
# 0 or a negative value made the loop re-run on_idle() forever without
# serving a request; None or a str crashed run() after it listened

@pytest.mark.parametrize('value, exc', [
    (0, ValueError), (-1, ValueError), (float('inf'), ValueError),
    (float('nan'), ValueError), (None, TypeError), ('1', TypeError),
    (True, TypeError)])
def test_select_timeout_checked_when_the_class_is_defined(value, exc):
    with pytest.raises(exc) as info:
        type('IdleDispatcher', (workers.Dispatcher,), {'SELECT_TIMEOUT': value})
    assert 'IdleDispatcher.SELECT_TIMEOUT' in str(info.value), str(info.value)


def test_select_timeout_set_on_the_object_is_checked():
    class Later(workers.Dispatcher):
        def __init__(self, **kwargs):
            self.SELECT_TIMEOUT = 0
            super().__init__(**kwargs)
    with pytest.raises(ValueError, match='SELECT_TIMEOUT'):
        Later(pools=[pool()])


@pytest.mark.parametrize('value', [0.001, 0.5, 1, 30])
def test_select_timeout_accepted(value):
    cls = type('IdleDispatcher', (workers.Dispatcher,), {'SELECT_TIMEOUT': value})
    assert cls(pools=[pool()]).SELECT_TIMEOUT == value
