"""Pool policies over real HTTP: 503 with Retry-After when a pool has no
live worker (alive_count), recovery_interval versus sticky degraded, and
permanent_failure_exitcode parking workers."""
import re

APP = 'ext_policies'


def status(server):
    return server.get('/_status').json


def pool(server, name):
    return status(server)['pools'][name]


def ready(server, name):
    workers = pool(server, name)['workers']
    return all(worker['alive'] and worker['ready'] for worker in workers)


def test_alive_count_of_healthy_pool(module_server):
    module_server.wait_until(lambda: ready(module_server, 'HealthyWorker'),
                             what='healthy pool ready')
    data = status(module_server)
    assert data['pools']['HealthyWorker']['alive_count'] == 2
    assert data['alive']['HealthyWorker'] == 2


def test_no_live_worker_is_503_with_retry_after(module_server):
    def no_live_worker():
        data = status(module_server)
        return (data['pools']['BrokenWorker']['alive_count'] == 0
                and data['alive']['BrokenWorker'] == 0)
    module_server.wait_until(no_live_worker, timeout=15,
                             what='BrokenWorker without a live worker')
    reply = module_server.get('/broken/ping')
    assert reply.status == 503
    assert reply.headers.get('retry-after') == '1'
    # whenever the request lands (a restart may be under way), the answer is
    # the same
    for _ in range(3):
        reply = module_server.get('/broken/ping')
        assert reply.status == 503
        assert reply.headers.get('retry-after') == '1'
    assert not pool(module_server, 'BrokenWorker')['degraded']
    assert module_server.get('/ok/ping').status == 200
    assert 'setup always fails' in module_server.log()


def _degrade(server, name):
    prefix = '/' + name.lower().replace('worker', '')
    for _ in range(2):
        server.wait_until(lambda: ready(server, name) or pool(
            server, name)['degraded'], timeout=15, what=f'{name} ready')
        if pool(server, name)['degraded']:
            break
        reply = server.get(prefix + '/die')
        assert reply.status in (500, 503)
    server.wait_until(lambda: pool(server, name)['degraded'], timeout=10,
                      what=f'{name} degraded')


def test_degraded_is_sticky_without_recovery_interval_and_recovers_with_it(
        module_server):
    server = module_server
    assert server.get('/sticky/ping').status == 200
    assert server.get('/flaky/ping').status == 200
    _degrade(server, 'StickyWorker')
    server.wait_log(r'WARNING .*StickyWorker.*degraded')
    sticky = server.get('/sticky/ping')
    # degraded for good: no time to come back is promised
    assert (sticky.status, sticky.headers.get('retry-after')) == (503, None)
    _degrade(server, 'FlakyWorker')
    server.wait_log(r'WARNING .*FlakyWorker.*degraded')
    flaky = server.get('/flaky/ping')
    # recovery_interval=2: the 503 says when to come back
    assert flaky.status == 503
    assert flaky.headers.get('retry-after') in ('1', '2'), flaky.headers
    # recovery_interval=2: back by itself, with an INFO line
    server.wait_log(r'INFO .*FlakyWorker.*recover', timeout=15)
    server.wait_until(lambda: not pool(server, 'FlakyWorker')['degraded'],
                      what='FlakyWorker not degraded')
    server.wait_until(lambda: server.get('/flaky/ping').status == 200,
                      timeout=10, what='FlakyWorker serving again')
    # the pool without recovery_interval stayed degraded all along
    assert pool(server, 'StickyWorker')['degraded']
    assert server.get('/sticky/ping').status == 503
    assert not re.search(r'StickyWorker.*recover', server.log())


def test_permanent_failure_parks_workers(module_server):
    server = module_server
    server.wait_until(lambda: ready(server, 'ParkWorker'), what='ParkWorker ready')
    # another exit code restarts the worker as usual
    before = {w['id']: w['pid'] for w in pool(server, 'ParkWorker')['workers']}
    assert server.get('/park/exit/1').status == 500

    def restarted():
        workers = pool(server, 'ParkWorker')['workers']
        return all(w['alive'] and w['ready'] for w in workers) and {
            w['id']: w['pid'] for w in workers} != before
    server.wait_until(restarted, timeout=10, what='ParkWorker restarted')
    assert pool(server, 'ParkWorker')['parked_count'] == 0
    assert pool(server, 'ParkWorker')['restarts_in_window'] == 1

    # exit code 42: parked, not restarted
    assert server.get('/park/exit/42').status == 500
    server.wait_until(lambda: pool(server, 'ParkWorker')['parked_count'] == 1,
                      what='one worker parked')
    data = pool(server, 'ParkWorker')
    assert data['alive_count'] == 1
    assert sorted(w['parked'] for w in data['workers']) == [False, True]
    for _ in range(3):   # the other worker still serves
        assert server.get('/park/ping').status == 200

    assert server.get('/park/exit/42').status == 500
    server.wait_until(lambda: pool(server, 'ParkWorker')['parked_count'] == 2,
                      what='both workers parked')
    data = status(server)
    park = data['pools']['ParkWorker']
    assert data['parked']['ParkWorker'] == 2
    assert park['alive_count'] == 0
    assert all(w['parked'] and not w['alive'] for w in park['workers'])
    # parking does not count toward max_restarts=2
    assert not park['degraded']
    assert park['restarts_in_window'] == 1

    reply = server.get('/park/ping')
    assert reply.status == 503
    assert 'retry-after' not in reply.headers
    # and they stay parked
    assert pool(server, 'ParkWorker')['alive_count'] == 0
    assert server.get('/ok/ping').status == 200
