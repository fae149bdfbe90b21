"""An on_idle() that fails every time logs its traceback once, then counts
the repeats, and says how many when it works again (worker and dispatcher
alike): an hour of a database being down is not 3,600 tracebacks."""
import re
import time


def test_on_idle_failing_each_time_is_one_traceback_then_a_count(app_server):
    server = app_server('idle_failing')
    # 20 calls a second each: wait for a good number of failures
    server.wait_until(lambda: server.get('/_status').status == 200)
    time.sleep(1.0)
    text = server.log()
    for where in ('worker', 'dispatcher'):
        failures = text.count(
            f"on_idle() failed: ConnectionError('db down in the {where}')")
        assert failures == 1, (where, text[-3000:])
    assert text.count('Traceback (most recent call last)') == 2, text[-3000:]
    assert server.post('/api/db/up', body=b'').status == 200
    assert server.post('/db/up', body=b'').status == 200
    text = server.wait_log(r'on_idle\(\) failed \d+ more time\(s\) in the '
                           r'last \d+ s with ConnectionError: db down', count=2)
    for where in ('worker', 'dispatcher'):
        line = next(line for line in text.splitlines()
                    if f'more time(s)' in line and f'in the {where}' in line)
        count = int(line.split(' failed ')[1].split()[0])
        assert count >= 5, line
    assert server.get('/_status').status == 200


def test_the_count_held_back_is_logged_when_the_server_stops(app_server):
    server = app_server('idle_failing')
    server.wait_until(lambda: server.get('/_status').status == 200)
    time.sleep(0.6)   # some failures counted, the minute far from over
    assert server.stop() == 0
    text = server.log()
    for where in ('worker', 'dispatcher'):
        assert re.search(r'on_idle\(\) failed \d+ more time\(s\) in the '
                         rf'last \d+ s with ConnectionError: db down in the '
                         rf'{where}', text), text[-3000:]
