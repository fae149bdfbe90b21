"""Quick Start over real HTTP: x-api-key auth in Dispatcher.do_check, the
/health sync handler, item routes on a pool with two workers."""

APP = 'core_quickstart'
KEY = {'X-API-Key': 'key-alpha'}


def test_list_items_with_valid_key(module_server):
    reply = module_server.get('/api/items', headers=KEY)
    assert reply.status == 200
    assert reply.headers['content-type'].startswith('application/json')
    assert reply.json == {'items': [{'id': 1, 'name': 'first'},
                                    {'id': 2, 'name': 'second'}]}


def test_second_valid_key_accepted(module_server):
    reply = module_server.get('/api/item/2', headers={'x-api-key': 'key-beta'})
    assert reply.status == 200
    assert reply.json == {'id': 2, 'name': 'second'}


def test_missing_key_is_401_from_dispatcher(module_server):
    reply = module_server.get('/api/items')
    assert reply.status == 401
    assert reply.json == {'error': 'unauthorized'}


def test_wrong_key_is_401(module_server):
    reply = module_server.get('/api/item/1', headers={'X-API-Key': 'nope'})
    assert reply.status == 401
    assert reply.json == {'error': 'unauthorized'}


def test_missing_key_rejected_even_for_unknown_pool_path(module_server):
    # do_check runs before the request is queued, so the worker's 404
    # is never reached without a key
    reply = module_server.get('/api/no/such/thing')
    assert reply.status == 401


def test_get_item_and_handler_404(module_server):
    reply = module_server.get('/api/item/1', headers=KEY)
    assert reply.status == 200
    assert reply.json == {'id': 1, 'name': 'first'}
    reply = module_server.get('/api/item/999', headers=KEY)
    assert reply.status == 404
    assert reply.json == {'error': 'Not found'}


def test_int_converter_rejects_text(module_server):
    reply = module_server.get('/api/item/abc', headers=KEY)
    assert reply.status == 404


def test_health_sync_handler_needs_no_key(module_server):
    reply = module_server.get('/health')
    assert reply.status == 200
    assert reply.json == {'status': 'ok'}
    reply = module_server.get('/health', headers={'X-API-Key': 'wrong'})
    assert reply.status == 200
    assert reply.json == {'status': 'ok'}


def test_no_matching_route_and_no_fallback_is_404(module_server):
    reply = module_server.get('/elsewhere', headers=KEY)
    assert reply.status == 404
    reply = module_server.get('/elsewhere')
    assert reply.status == 404  # not routed to a pool: do_check not run


def test_repeated_requests_all_succeed(module_server):
    for _ in range(20):
        reply = module_server.get('/api/items', headers=KEY)
        assert reply.status == 200
        assert len(reply.json['items']) == 2
