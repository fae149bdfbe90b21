"""Worker.do_check validation, handler exceptions (default and custom
on_request_error) and handler results that cannot be serialised."""
import re

APP = 'core_checks'


def calls(server):
    reply = server.get('/check/calls')
    assert reply.status == 200
    return reply.json['calls']


# -- Worker.do_check --------------------------------------------------------------

def test_do_check_none_lets_request_through(module_server):
    before = calls(module_server)
    reply = module_server.get('/check/open')
    assert reply.status == 200
    assert reply.json == {'ok': True, 'session': None}
    assert calls(module_server) == before + 1


def test_do_check_can_leave_attributes_of_its_own_on_the_request(
        module_server):
    reply = module_server.get('/check/whoami',
                              headers={'X-Check': 'user', 'X-User': 'ada'})
    assert reply.status == 200, reply
    assert reply.json == {'user': {'name': 'ada'}, 'started': 'checked'}
    # the next request starts without them
    reply = module_server.get('/check/whoami')
    assert reply.json == {'user': None, 'started': None}


def test_do_check_tuple_rejects(module_server):
    before = calls(module_server)
    reply = module_server.get('/check/open', headers={'X-Check': 'tuple'})
    assert reply.status == 401
    assert reply.json == {'error': 'unauthorized'}
    assert calls(module_server) == before  # the handler did not run


def test_do_check_on_cookie(module_server):
    before = calls(module_server)
    reply = module_server.get('/check/open', headers={'X-Check': 'cookie'})
    assert reply.status == 401
    assert reply.json == {'error': 'no session'}
    reply = module_server.get('/check/open', headers={
        'X-Check': 'cookie', 'Cookie': 'other=1; session=tok-9'})
    assert reply.status == 200
    assert reply.json == {'ok': True, 'session': 'tok-9'}
    assert calls(module_server) == before + 1


def test_do_check_raise_reject_with_data_and_status(module_server):
    reply = module_server.get('/check/open', headers={'X-Check': 'reject'})
    assert reply.status == 403
    assert reply.json == {'error': 'forbidden'}
    reply = module_server.get('/check/open', headers={'X-Check': 'reject-custom'})
    assert reply.status == 418
    assert reply.json == {'error': 'teapot'}


def test_do_check_reject_defaults(module_server):
    before = calls(module_server)
    reply = module_server.get('/check/open', headers={'X-Check': 'reject-default'})
    assert reply.status == 403
    assert reply.json == {'error': 'Rejected'}
    assert calls(module_server) == before


def test_do_check_runs_before_routing(module_server):
    # an unknown path is refused by do_check, not answered 404
    reply = module_server.get('/nowhere/at/all', headers={'X-Check': 'tuple'})
    assert reply.status == 401
    assert reply.json == {'error': 'unauthorized'}
    reply = module_server.get('/nowhere/at/all')
    assert reply.status == 404


def test_reject_request_raised_in_handler(module_server):
    reply = module_server.get('/err/reject')
    assert reply.status == 409
    assert reply.json == {'error': 'from handler'}


# -- errors ----------------------------------------------------------------------------

def error_lines(text, marker):
    return [line for line in text.splitlines()
            if ' ERROR ' in line and marker in line]


def test_handler_exception_is_500_with_logged_traceback(module_server):
    reply = module_server.get('/err/boom')
    assert reply.status == 500
    assert reply.headers['content-type'].startswith('application/json')
    assert 'kaboom-marker-1' not in reply.text  # no details leak to the client
    text = module_server.wait_log(r'kaboom-marker-1')
    lines = error_lines(text, 'explode_default')
    assert lines, text[-3000:]
    start = text.index(lines[0])
    tail = text[start:start + 3000]
    assert 'Traceback (most recent call last)' in tail
    assert "ValueError: kaboom-marker-1" in tail
    reply = module_server.get('/err/ok')
    assert reply.status == 200
    assert reply.json['ok'] is True


def test_worker_keeps_serving_after_many_errors(module_server):
    for _ in range(5):
        assert module_server.get('/err/boom').status == 500
        assert module_server.get('/err/ok').status == 200


def test_custom_on_request_error_calls_super(module_server):
    reply = module_server.get('/custom/db')
    assert reply.status == 500
    text = module_server.wait_log(r'connection lost marker-2')
    lines = error_lines(text, 'db_fails')
    assert lines, text[-3000:]
    state = module_server.get('/custom/state').json
    assert state['reconnects'] >= 1
    assert ['/custom/db', 'DatabaseError', 'connection lost marker-2'] in state['seen']


def test_custom_on_request_error_own_answer(module_server):
    reply = module_server.get('/custom/lookup')
    assert reply.status == 503
    assert reply.json == {'error': 'custom', 'missing': 'marker-3'}
    state = module_server.get('/custom/state').json
    assert ['/custom/lookup', 'LookupError', 'marker-3'] in state['seen']
    # handled without super(): nothing logged as an error for it
    assert not error_lines(module_server.log(), 'marker-3')


def test_custom_error_worker_keeps_serving(module_server):
    before = module_server.get('/custom/state').json['reconnects']
    for _ in range(3):
        assert module_server.get('/custom/db').status == 500
    assert module_server.get('/custom/state').json['reconnects'] == before + 3


# -- results that cannot be serialised -----------------------------------------------

def check_unserialisable(server, path, handler_name):
    reply = server.get(path)
    assert reply.status == 500
    text = server.wait_log(re.escape(handler_name))
    assert error_lines(text, handler_name), text[-3000:]
    reply = server.get('/err/ok')
    assert reply.status == 200
    assert reply.json['ok'] is True


def test_returning_a_set_is_500_and_logged(module_server):
    check_unserialisable(module_server, '/err/set', 'returns_set')


def test_returning_an_object_is_500_and_logged(module_server):
    check_unserialisable(module_server, '/err/object', 'returns_object')


def test_returning_nested_set_with_status_is_500_and_logged(module_server):
    check_unserialisable(module_server, '/err/nested', 'returns_nested_set')


def test_dispatcher_survives_and_nothing_pending(module_server):
    for path in ('/err/set', '/err/object', '/err/boom', '/custom/db'):
        assert module_server.get(path).status == 500
    for _ in range(3):
        assert module_server.get('/err/ok').status == 200
        assert module_server.get('/check/open').status == 200
    assert 'CRITICAL' not in module_server.log()
