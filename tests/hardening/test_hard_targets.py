"""Request targets: the forms of RFC 9112 section 3.2 and path decoding.

Origin-form is the usual '/path?query'; absolute-form ('http://host/path')
is what clients send to proxies and a server must accept; asterisk-form is
for OPTIONS only; anything else is a 400. Paths are percent-decoded once,
strictly, and '+' in a path is a plus sign (a space only in a query).
"""

import json

import pytest

from hard_util import exchange, request_bytes

APP = 'hard_http'


@pytest.fixture(scope='module')
def server(module_server):
    return module_server


def one(server, method, target):
    outcome = exchange(server.port, request_bytes(
        method, target, {'Connection': 'close'}), timeout=10)
    assert outcome.rest == b'' and len(outcome.finals) == 1, outcome
    return outcome.finals[0]


@pytest.mark.parametrize('target', [
    'http://example.com/api/path/a/b?x=1',
    'HTTP://EXAMPLE.COM:8080/api/path/a/b?x=1',
    'https://user@example.com/api/path/a/b?x=1',
])
def test_absolute_form_is_served_as_its_path(server, target):
    reply = one(server, 'GET', target)
    assert reply.status == 200, reply
    data = json.loads(reply.body)
    assert data['path'] == '/api/path/a/b'
    assert data['query'] == {'x': '1'}


def test_absolute_form_without_path_is_the_root(server):
    reply = one(server, 'GET', 'http://example.com')
    assert reply.status == 404  # '/' is not routed in this app, but parsed


@pytest.mark.parametrize('target', ['api/path/x', '*', 'example.com/x',
                                    'ftp://example.com/api/path/x', '?x', '?'])
def test_other_target_forms_are_refused(server, target):
    reply = one(server, 'GET', target)
    assert reply.status == 400, reply
    assert reply.body.startswith(b'400 Bad Request: Invalid request target'), reply


def test_a_query_without_a_path_is_refused_without_an_error_log(server):
    reply = one(server, 'GET', '?x=1')
    assert reply.status == 400, reply
    assert 'IndexError' not in server.log()


def test_asterisk_form_is_accepted_for_options(server):
    reply = one(server, 'OPTIONS', '*')
    assert reply.status in (404, 405), reply  # parsed; no route serves it


@pytest.mark.parametrize('target,rest', [
    ('/api/path/a+b', 'a+b'),
    ('/api/path/a%2Bb', 'a+b'),
    ('/api/path/a%20b', 'a b'),
    ('/api/path/%C3%A9t%C3%A9', '\u00e9t\u00e9'),
    ('/api/path/%252e', '%2e'),          # decoded once, not twice
])
def test_path_is_percent_decoded_once(server, target, rest):
    reply = one(server, 'GET', target)
    assert reply.status == 200, reply
    assert json.loads(reply.body)['rest'] == rest


def test_a_float_parameter_too_long_for_a_float_does_not_match(server):
    # 400 digits make float() infinite: a handler must never get inf (nor
    # the client the invalid JSON 'Infinity' of an echo)
    assert json.loads(one(server, 'GET', '/api/ratio/-2.5').body) == {'x': -2.5}
    for text in ('9' * 400, '-' + '9' * 400 + '.5'):
        assert one(server, 'GET', '/api/ratio/' + text).status == 404


def test_plus_in_query_is_a_space(server):
    reply = one(server, 'GET', '/api/path/x?q=a+b')
    assert json.loads(reply.body)['query'] == {'q': 'a b'}


@pytest.mark.parametrize('target', ['/api/path/%zz', '/api/path/%4',
                                    '/api/path/%C3%28', '/api/path/%ff'])
def test_bad_path_encoding_is_a_400(server, target):
    reply = one(server, 'GET', target)
    assert reply.status == 400, reply
