"""routing.py: patterns, route tables, pool prefixes, route declarations."""

import sys

import pytest

from uhttp.workers import routing
from uhttp.workers.routing import (
    Pattern, PatternError, PrefixRoutes, RouteTable, api, compile_routes,
    declared_routes, sync)


# -- Pattern: matching --------------------------------------------------------

class TestPatternStatic:
    def test_static_pattern_matches_only_itself(self):
        pattern = Pattern('/api/items')
        assert pattern.is_static
        assert pattern.params == ()
        assert pattern.match('/api/items') == {}
        assert pattern.match('/api/items/') is None
        assert pattern.match('/api/item') is None
        assert pattern.match('/api/itemsx') is None
        assert pattern.match('/API/items') is None

    def test_root(self):
        assert Pattern('/').match('/') == {}
        assert Pattern('/').match('') is None

    def test_regex_metacharacters_are_literal(self):
        pattern = Pattern('/a.b/{x}')
        assert pattern.match('/a.b/1') == {'x': '1'}
        assert pattern.match('/aXb/1') is None
        pattern = Pattern('/v1+(x)/{n:int}')
        assert pattern.match('/v1+(x)/3') == {'n': 3}
        assert pattern.match('/v11(x)/3') is None

    def test_repr_names_the_pattern(self):
        assert '/a/{b}' in repr(Pattern('/a/{b}'))


class TestPatternParams:
    def test_str_param(self):
        pattern = Pattern('/tag/{name}')
        assert not pattern.is_static
        assert pattern.params == ('name',)
        assert pattern.match('/tag/python') == {'name': 'python'}
        assert pattern.match('/tag/a.b-c_d') == {'name': 'a.b-c_d'}

    def test_str_param_does_not_cross_slashes_or_match_empty(self):
        pattern = Pattern('/tag/{name}')
        assert pattern.match('/tag/a/b') is None
        assert pattern.match('/tag/') is None
        assert pattern.match('/tag') is None

    def test_explicit_str_converter(self):
        assert Pattern('/tag/{name:str}').match('/tag/x') == {'name': 'x'}

    def test_int_param(self):
        pattern = Pattern('/user/{id:int}')
        result = pattern.match('/user/42')
        assert result == {'id': 42}
        assert type(result['id']) is int

    def test_negative_int(self):
        result = Pattern('/n/{v:int}').match('/n/-17')
        assert result == {'v': -17}
        assert type(result['v']) is int

    def test_int_leading_zeros(self):
        assert Pattern('/n/{v:int}').match('/n/007') == {'v': 7}

    @pytest.mark.parametrize('text', [
        '/user/abc', '/user/1.5', '/user/', '/user/12a', '/user/--1',
        '/user/+1', '/user/1/2', '/user/ 1'])
    def test_int_rejects(self, text):
        assert Pattern('/user/{id:int}').match(text) is None

    @pytest.mark.parametrize('text,value', [
        ('1.5', 1.5), ('-2.25', -2.25), ('3', 3.0), ('-3', -3.0),
        ('10.0', 10.0), ('0.125', 0.125)])
    def test_float_forms(self, text, value):
        result = Pattern('/price/{amount:float}').match('/price/' + text)
        assert result == {'amount': value}
        assert type(result['amount']) is float

    @pytest.mark.parametrize('text', ['abc', '1.2.3', '', 'nan', 'inf', '1,5',
                                      '9' * 400, '-' + '9' * 400 + '.5'])
    def test_float_rejects(self, text):
        assert Pattern('/price/{amount:float}').match('/price/' + text) is None

    def test_path_param_spans_slashes(self):
        pattern = Pattern('/files/{p:path}')
        assert pattern.match('/files/a/b/c.txt') == {'p': 'a/b/c.txt'}
        assert pattern.match('/files/x') == {'p': 'x'}
        assert pattern.match('/files/') is None

    def test_path_param_in_the_middle(self):
        pattern = Pattern('/repo/{p:path}/raw')
        assert pattern.match('/repo/a/b/raw') == {'p': 'a/b'}
        assert pattern.match('/repo/a/b/blob') is None

    def test_several_params(self):
        pattern = Pattern('/shop/{shop}/item/{id:int}/price/{p:float}')
        assert pattern.params == ('shop', 'id', 'p')
        assert pattern.match('/shop/main/item/-3/price/9.5') == {
            'shop': 'main', 'id': -3, 'p': 9.5}

    def test_params_inside_a_segment(self):
        pattern = Pattern('/img/{name}.{ext}')
        assert pattern.match('/img/cat.png') is not None
        pattern = Pattern('/v{major:int}/x')
        assert pattern.match('/v2/x') == {'major': 2}

    def test_whitespace_around_name_and_converter(self):
        assert Pattern('/u/{ id : int }').match('/u/5') == {'id': 5}

    def test_conversion_failure_is_no_match(self):
        # the regex accepts the digits but int() refuses a number this long
        limit = getattr(sys, 'get_int_max_str_digits', lambda: 0)()
        if not limit:
            pytest.skip('no int string-length limit in this Python')
        huge = '9' * (limit + 10)
        assert Pattern('/n/{v:int}').match('/n/' + huge) is None
        assert Pattern('/n/{v:int}').match('/n/' + '9' * 20) == {'v': int('9' * 20)}

    def test_custom_failing_converter_is_no_match(self, monkeypatch):
        def strict(text):
            raise ValueError(text)
        monkeypatch.setitem(routing.CONVERTERS, 'strict', (r'[a-z]+', strict))
        assert Pattern('/x/{v:strict}').match('/x/abc') is None


# -- Pattern: errors ------------------------------------------------------------

class TestPatternErrors:
    @pytest.mark.parametrize('text', [
        '/a/{id:integer}', '/a/{x:uuid}', '/a/{x:Int}', '/a/{x:int:int}'])
    def test_unknown_converter(self, text):
        with pytest.raises(ValueError) as info:
            Pattern(text)
        assert text in str(info.value)
        assert 'converter' in str(info.value)

    def test_empty_converter_means_str(self):
        assert Pattern('/a/{id:}').match('/a/5x') == {'id': '5x'}

    @pytest.mark.parametrize('text', [
        '/a/{id', '/a/id}', '/a/{{id}}', '/a/{id}}', '/a/{{id}', '/{a}/{',
        '/a/}{'])
    def test_unbalanced_braces(self, text):
        with pytest.raises(ValueError) as info:
            Pattern(text)
        assert text in str(info.value)

    @pytest.mark.parametrize('text', [
        '/a/{}', '/a/{1x}', '/a/{a-b}', '/a/{a b}', '/a/{:int}', '/a/{a.b}'])
    def test_bad_names(self, text):
        with pytest.raises(ValueError) as info:
            Pattern(text)
        assert text in str(info.value)

    def test_duplicate_params(self):
        text = '/a/{id}/b/{id:int}'
        with pytest.raises(ValueError) as info:
            Pattern(text)
        assert text in str(info.value)
        assert 'id' in str(info.value)

    @pytest.mark.parametrize('text', ['/files/**', '/files/*', '/**',
                                      '/a/*/b'])
    def test_a_star_segment_is_no_wildcard(self, text):
        # written as in WorkerPool(routes=...), it would match only itself
        with pytest.raises(ValueError) as info:
            Pattern(text)
        assert text in str(info.value) and '{rest:path}' in str(info.value)

    def test_a_star_inside_a_segment_is_a_literal(self):
        assert Pattern('/v1/a*b').match('/v1/a*b') == {}

    def test_must_start_with_slash(self):
        with pytest.raises(ValueError) as info:
            Pattern('api/x')
        assert 'api/x' in str(info.value)

    def test_not_a_str(self):
        with pytest.raises(ValueError):
            Pattern(b'/a')
        with pytest.raises(ValueError):
            Pattern(None)

    def test_pattern_error_is_value_error(self):
        assert issubclass(PatternError, ValueError)


# -- RouteTable -----------------------------------------------------------------

def make_table(*routes):
    table = RouteTable()
    for pattern, methods, target in routes:
        table.add(pattern, methods, target)
    return table


class TestRouteTable:
    def test_static_match(self):
        table = make_table(('/a', ('GET',), 'a'))
        assert table.lookup('GET', '/a') == ('a', {})

    def test_dynamic_match_with_params(self):
        table = make_table(('/u/{id:int}', ('GET',), 'user'))
        assert table.lookup('GET', '/u/3') == ('user', {'id': 3})

    def test_no_match_is_none_none(self):
        table = make_table(('/a', ('GET',), 'a'), ('/u/{id:int}', ('GET',), 'u'))
        assert table.lookup('GET', '/b') == (None, None)
        assert table.lookup('GET', '/u/x') == (None, None)
        assert RouteTable().lookup('GET', '/') == (None, None)

    def test_static_beats_dynamic_regardless_of_order(self):
        table = make_table(('/u/{name}', ('GET',), 'dynamic'),
                           ('/u/me', ('GET',), 'static'))
        assert table.lookup('GET', '/u/me') == ('static', {})
        assert table.lookup('GET', '/u/you') == ('dynamic', {'name': 'you'})

    def test_dynamic_routes_tried_in_order(self):
        table = make_table(('/u/{id:int}', ('GET',), 'int'),
                           ('/u/{name}', ('GET',), 'str'))
        assert table.lookup('GET', '/u/5') == ('int', {'id': 5})
        assert table.lookup('GET', '/u/bob') == ('str', {'name': 'bob'})

    def test_methods_pick_targets(self):
        table = make_table(('/x', ('GET',), 'get'), ('/x', ('POST',), 'post'),
                           ('/y/{id}', ('PUT',), 'put'),
                           ('/y/{id}', ('DELETE',), 'delete'))
        assert table.lookup('GET', '/x') == ('get', {})
        assert table.lookup('POST', '/x') == ('post', {})
        assert table.lookup('PUT', '/y/1') == ('put', {'id': '1'})
        assert table.lookup('DELETE', '/y/1') == ('delete', {'id': '1'})

    def test_several_methods_one_target(self):
        table = make_table(('/x', ('GET', 'POST'), 't'))
        assert table.lookup('GET', '/x') == ('t', {})
        assert table.lookup('POST', '/x') == ('t', {})
        assert table.lookup('PUT', '/x') == (None, ['GET', 'HEAD', 'POST'])

    @pytest.mark.parametrize('method', sorted(routing.METHODS))
    def test_route_without_methods_accepts_every_method(self, method):
        table = make_table(('/any', (), 'any'), ('/d/{x}', (), 'dyn'))
        assert table.lookup(method, '/any') == ('any', {})
        assert table.lookup(method, '/d/1') == ('dyn', {'x': '1'})

    def test_specific_method_beats_catch_all(self):
        table = make_table(('/x', (), 'all'), ('/x', ('POST',), 'post'))
        assert table.lookup('POST', '/x') == ('post', {})
        assert table.lookup('GET', '/x') == ('all', {})

    def test_head_falls_back_to_get(self):
        table = make_table(('/x', ('GET',), 'get'),
                           ('/d/{id:int}', ('GET',), 'dget'))
        assert table.lookup('HEAD', '/x') == ('get', {})
        assert table.lookup('HEAD', '/d/4') == ('dget', {'id': 4})

    def test_explicit_head_wins_over_get(self):
        table = make_table(('/x', ('GET',), 'get'), ('/x', ('HEAD',), 'head'))
        assert table.lookup('HEAD', '/x') == ('head', {})
        assert table.lookup('GET', '/x') == ('get', {})

    def test_get_does_not_fall_back_to_head(self):
        table = make_table(('/x', ('HEAD',), 'head'))
        target, allowed = table.lookup('GET', '/x')
        assert target is None
        assert allowed == ['HEAD']

    def test_405_static(self):
        table = make_table(('/x', ('POST',), 'post'), ('/x', ('PUT',), 'put'))
        assert table.lookup('GET', '/x') == (None, ['POST', 'PUT'])

    def test_405_includes_head_when_get_allowed(self):
        table = make_table(('/x', ('GET',), 'get'))
        assert table.lookup('POST', '/x') == (None, ['GET', 'HEAD'])
        table = make_table(('/d/{id}', ('GET',), 'get'))
        assert table.lookup('DELETE', '/d/1') == (None, ['GET', 'HEAD'])

    def test_405_head_not_added_without_get(self):
        table = make_table(('/x', ('POST',), 'post'))
        target, allowed = table.lookup('GET', '/x')
        assert target is None
        assert 'HEAD' not in allowed
        target, allowed = table.lookup('HEAD', '/x')
        assert target is None and allowed == ['POST']

    def test_405_collects_across_static_and_dynamic(self):
        table = make_table(('/u/me', ('GET',), 'me'),
                           ('/u/{name}', ('DELETE',), 'del'),
                           ('/u/{name}', ('PATCH',), 'patch'))
        target, allowed = table.lookup('POST', '/u/me')
        assert target is None
        assert allowed == ['DELETE', 'GET', 'HEAD', 'PATCH']

    def test_dynamic_match_under_other_method_continues_to_next_pattern(self):
        table = make_table(('/u/{id:int}', ('DELETE',), 'del'),
                           ('/u/{name}', ('GET',), 'get'))
        assert table.lookup('GET', '/u/5') == ('get', {'name': '5'})

    def test_static_under_other_method_falls_to_dynamic(self):
        table = make_table(('/u/me', ('POST',), 'post-me'),
                           ('/u/{name}', ('GET',), 'get'))
        assert table.lookup('GET', '/u/me') == ('get', {'name': 'me'})

    def test_first_added_target_wins_for_same_route(self):
        table = make_table(('/x', ('GET',), 'first'), ('/x', ('GET',), 'second'))
        assert table.lookup('GET', '/x') == ('first', {})

    def test_accepts_compiled_pattern(self):
        table = RouteTable()
        table.add(Pattern('/p/{id:int}'), ('GET',), 't')
        assert table.lookup('GET', '/p/1') == ('t', {'id': 1})

    def test_add_bad_pattern_raises(self):
        with pytest.raises(ValueError):
            RouteTable().add('/a/{x', ('GET',), 't')

    def test_len_counts_routes(self):
        table = make_table(('/x', ('GET', 'POST'), 't'), ('/d/{a}', (), 'd'))
        assert len(table) == 3
        assert len(RouteTable()) == 0


# -- PrefixRoutes -------------------------------------------------------------------

class TestPrefixRoutes:
    def test_prefix_matches_base_and_below(self):
        routes = PrefixRoutes(['/api/**'])
        assert routes.match('/api')
        assert routes.match('/api/')
        assert routes.match('/api/x')
        assert routes.match('/api/x/y')

    def test_prefix_does_not_match_siblings(self):
        routes = PrefixRoutes(['/api/**'])
        assert not routes.match('/apix')
        assert not routes.match('/apix/y')
        assert not routes.match('/ap')
        assert not routes.match('/')
        assert not routes.match('/other/api/x')

    def test_exact_route(self):
        routes = PrefixRoutes(['/api/status'])
        assert routes.match('/api/status')
        assert not routes.match('/api/status/')
        assert not routes.match('/api/status/x')
        assert not routes.match('/api/statusx')
        assert not routes.match('/api')

    def test_several_routes(self):
        routes = PrefixRoutes(['/api/items/**', '/api/item/**', '/health'])
        assert routes.match('/api/items/1')
        assert routes.match('/api/item/2')
        assert routes.match('/health')
        assert not routes.match('/api/itemz')
        assert not routes.match('/api')

    def test_root_prefix_matches_everything(self):
        routes = PrefixRoutes(['/**'])
        assert routes.match('/')
        assert routes.match('/anything/at/all')

    def test_empty_list_matches_nothing(self):
        assert not PrefixRoutes([]).match('/')

    def test_tuple_accepted(self):
        assert PrefixRoutes(('/a/**',)).match('/a/b')

    @pytest.mark.parametrize('routes', ['/api/**', b'/api', None, 5, {'/a': 1}])
    def test_not_a_list_is_type_error(self, routes):
        with pytest.raises(TypeError) as info:
            PrefixRoutes(routes)
        assert 'routes' in str(info.value)

    @pytest.mark.parametrize('routes', [[1], ['/a', None], [b'/a']])
    def test_non_str_items_are_type_error(self, routes):
        with pytest.raises(TypeError) as info:
            PrefixRoutes(routes)
        assert 'routes' in str(info.value)

    @pytest.mark.parametrize('route', [
        'api/**', '', '/api/*', '/a/**/b', '/api**', '/a/{id}', '/a/*/b',
        'x'])
    def test_bad_routes_are_value_error(self, route):
        with pytest.raises(ValueError) as info:
            PrefixRoutes([route])
        assert 'routes' in str(info.value)
        assert repr(route) in str(info.value)

    def test_where_names_the_owner(self):
        with pytest.raises(TypeError) as info:
            PrefixRoutes('x', where='WorkerPool routes')
        assert 'WorkerPool routes' in str(info.value)

    def test_routes_kept(self):
        assert PrefixRoutes(['/a', '/b/**']).routes == ('/a', '/b/**')


# -- decorators ----------------------------------------------------------------------

class TestDecorators:
    def test_api_marks_function_and_returns_it(self):
        def handler(self, request):
            return 1
        marked = api('/x', 'GET')(handler)
        assert marked is handler
        assert handler._uhttp_api_routes == (('/x', ('GET',)),)

    def test_methods_upper_cased(self):
        @api('/x', 'get', 'Post')
        def handler(self, request):
            pass
        assert handler._uhttp_api_routes == (('/x', ('GET', 'POST')),)

    def test_no_methods_means_all(self):
        @api('/x')
        def handler(self, request):
            pass
        assert handler._uhttp_api_routes == (('/x', ()),)

    def test_stacked_decorators(self):
        @api('/b', 'POST')
        @api('/a', 'GET')
        def handler(self, request):
            pass
        assert set(handler._uhttp_api_routes) == {
            ('/a', ('GET',)), ('/b', ('POST',))}

    def test_unknown_method(self):
        with pytest.raises(ValueError) as info:
            api('/x', 'FETCH')
        assert 'FETCH' in str(info.value)
        assert '/x' in str(info.value)

    def test_non_str_method(self):
        with pytest.raises(TypeError):
            api('/x', 1)

    def test_non_str_pattern(self):
        with pytest.raises(TypeError):
            api(5)
        with pytest.raises(TypeError):
            sync(None)

    def test_decorating_a_non_callable(self):
        with pytest.raises(TypeError):
            api('/x')(42)

    def test_sync_uses_its_own_marker(self):
        @sync('/health', 'GET')
        def health(self, client, path_params):
            pass
        assert health._uhttp_sync_routes == (('/health', ('GET',)),)
        assert not hasattr(health, '_uhttp_api_routes')

    def test_decorator_does_not_compile(self):
        # a bad pattern is reported when the owning class is built
        @api('/a/{x')
        def handler(self, request):
            pass
        assert handler._uhttp_api_routes == (('/a/{x', ()),)


# -- declared_routes / compile_routes -------------------------------------------------

def shape(routes):
    """Routes without the class member they carry: (name, pattern, methods)."""
    return [(route[0],) + tuple(route[2:]) for route in routes]


class TestDeclaredRoutes:
    def test_collects_api_routes(self):
        class Base:
            @api('/a', 'GET')
            def a(self, request):
                pass

            @api('/b')
            def b(self, request):
                pass

            def plain(self):
                pass

        routes = shape(declared_routes(Base))
        assert sorted(routes) == [('a', '/a', ('GET',)), ('b', '/b', ())]

    def test_kind_sync(self):
        class Owner:
            @sync('/s')
            def s(self, client, params):
                pass

            @api('/a')
            def a(self, request):
                pass

        assert shape(declared_routes(Owner, 'sync')) == [('s', '/s', ())]
        assert shape(declared_routes(Owner, 'api')) == [('a', '/a', ())]

    def test_inherited(self):
        class Base:
            @api('/a', 'GET')
            def a(self, request):
                pass

        class Child(Base):
            @api('/c', 'GET')
            def c(self, request):
                pass

        assert sorted(shape(declared_routes(Child))) == [
            ('a', '/a', ('GET',)), ('c', '/c', ('GET',))]
        assert shape(declared_routes(Base)) == [('a', '/a', ('GET',))]

    def test_override_in_subclass_wins(self):
        class Base:
            @api('/old', 'GET')
            def a(self, request):
                pass

        class Child(Base):
            @api('/new', 'POST')
            def a(self, request):
                pass

        assert shape(declared_routes(Child)) == [('a', '/new', ('POST',))]

    def test_override_without_decorator_removes_route(self):
        class Base:
            @api('/a', 'GET')
            def a(self, request):
                pass

        class Child(Base):
            def a(self, request):
                pass

        assert shape(declared_routes(Child)) == []
        assert shape(declared_routes(Base)) == [('a', '/a', ('GET',))]

    def test_override_by_non_function_removes_route(self):
        class Base:
            @api('/a', 'GET')
            def a(self, request):
                pass

        class Child(Base):
            a = None

        assert shape(declared_routes(Child)) == []

    def test_grandchild_sees_nearest_definition(self):
        class A:
            @api('/1')
            def h(self, request):
                pass

        class B(A):
            def h(self, request):
                pass

        class C(B):
            pass

        assert shape(declared_routes(C)) == []

    def test_staticmethod_routes(self):
        class Owner:
            @staticmethod
            @api('/s')
            def s(request):
                pass

        assert shape(declared_routes(Owner)) == [('s', '/s', ())]

    def test_one_route_twice_in_a_class_body(self):
        # the second handler was never reached, without a word
        with pytest.raises(PatternError) as info:
            class Items:
                @api('/items', 'GET')
                def list_items(self, request):
                    pass

                @api('/items', 'POST', 'GET')
                def all_items(self, request):
                    pass

            declared_routes(Items)
        message = str(info.value)
        assert 'Items.all_items' in message and 'Items.list_items' in message
        assert "'/items' (GET)" in message

    def test_a_subclass_may_replace_a_route_of_its_base(self):
        class Base:
            @api('/items', 'GET')
            def list_items(self, request):
                pass

        class Child(Base):
            @api('/items', 'GET')
            def list_all(self, request):
                pass

            @api('/items', 'POST')
            @api('/other', 'POST')
            def add(self, request):
                pass
        assert [route[0] for route in declared_routes(Child)] == [
            'list_all', 'add', 'add', 'list_items']

    def test_route_on_top_of_staticmethod(self):
        # @api written above @staticmethod marked the staticmethod object,
        # where nothing looked: the route was dropped without a word (404)
        class Owner:
            @api('/s', 'GET')
            @staticmethod
            def s(request):
                pass

        assert shape(declared_routes(Owner)) == [('s', '/s', ('GET',))]


class TestCompileRoutes:
    def test_compiles_with_prefix(self):
        compiled = compile_routes('H', [('a', None, '/{id:int}', ('GET',))], '/api')
        assert len(compiled) == 1
        name, _, pattern, methods = compiled[0]
        assert name == 'a' and methods == ('GET',)
        assert isinstance(pattern, Pattern)
        assert pattern.text == '/api/{id:int}'
        assert pattern.match('/api/5') == {'id': 5}

    def test_error_names_owner_method_and_pattern(self):
        with pytest.raises(ValueError) as info:
            compile_routes('MyWorker', [('get_item', None, '/item/{id:number}', ())])
        message = str(info.value)
        assert 'MyWorker.get_item' in message
        assert '/item/{id:number}' in message

    def test_error_shows_prefixed_pattern(self):
        with pytest.raises(ValueError) as info:
            compile_routes('H', [('m', None, '/{x', ())], '/api')
        assert 'H.m' in str(info.value)
        assert '/api/{x' in str(info.value)
