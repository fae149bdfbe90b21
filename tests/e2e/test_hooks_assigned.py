"""Dispatcher hooks assigned on the object (before run(), or in __init__
after super().__init__()) are called like those of a subclass: a do_check
assigned so is never skipped."""
import pytest


@pytest.mark.parametrize('way', ['object', 'subclass'])
def test_assigned_hooks_are_called(app_server, way):
    server = app_server('hooks_assigned', way)
    refused = server.get('/api/secret')
    assert refused.status == 401 and refused.json == {'error': 'unauthorized'}
    reply = server.get('/api/secret', headers={'X-Api-Key': 'key'})
    assert reply.status == 200
    assert reply.json == {'secret': 42, 'context': 'ctx'}
    server.wait_log('on_response saw 200')
