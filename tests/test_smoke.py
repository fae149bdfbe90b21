"""The harness starts a real dispatcher and talks HTTP to it."""
import signal


def test_round_trip(app_server):
    server = app_server('smoke')
    reply = server.get('/api/hello')
    assert reply.status == 200
    assert reply.json['hello'] == 'world'
    reply = server.post('/api/echo', json_body={'x': [1, 2]})
    assert reply.json == {'data': {'x': [1, 2]}}
    status = server.status()
    assert status['pending'] == 0
    assert [w['alive'] for w in status['pools'][0]['workers']] == [True, True]
    assert server.stop(signal.SIGTERM) == 0
