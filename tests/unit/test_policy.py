"""policy.py: what a slot's death leads to (pure, no processes)."""

import pytest

from uhttp.workers.policy import (
    BACKOFF_CAP, BACKOFF_FIRST, PARK, RESTART, STABLE_AFTER, RestartPolicy,
    SlotRecord, backoff)


def deaths(policy, record, count, start=0.0, step=0.01, **kwargs):
    args = dict(exitcode=1, was_ready=True, served=True, lived=0.1,
                degraded=False)
    args.update(kwargs)
    return [policy.decide(record, start + index * step, **args)
            for index in range(count)]


def test_served_worker_restarts_at_once_every_time():
    policy = RestartPolicy(max_restarts=1000, window=300)
    record = SlotRecord()
    decisions = deaths(policy, record, 50)
    assert all(d.action == RESTART and d.delay == 0 for d in decisions)
    assert record.restarts == 50 and record.streak == 1


def test_ready_but_not_served_short_life_backs_off():
    policy = RestartPolicy(max_restarts=1000, window=300)
    record = SlotRecord()
    delays = [d.delay for d in deaths(policy, record, 4, served=False,
                                      lived=STABLE_AFTER / 10)]
    assert delays == [0, BACKOFF_FIRST, 2 * BACKOFF_FIRST, 4 * BACKOFF_FIRST]


def test_ready_and_lived_long_enough_restarts_at_once():
    policy = RestartPolicy(max_restarts=1000, window=300)
    record = SlotRecord()
    delays = {d.delay for d in deaths(policy, record, 5, served=False,
                                      lived=STABLE_AFTER)}
    assert delays == {0}


def test_never_ready_backs_off_up_to_the_cap():
    policy = RestartPolicy(max_restarts=10 ** 6, window=300)
    record = SlotRecord()
    delays = [d.delay for d in deaths(policy, record, 200, was_ready=False,
                                      served=False)]
    assert delays[:3] == [0, BACKOFF_FIRST, 2 * BACKOFF_FIRST]
    assert delays == sorted(delays)
    assert delays[-1] == BACKOFF_CAP


def test_a_served_death_ends_a_failure_streak():
    policy = RestartPolicy(max_restarts=1000, window=300)
    record = SlotRecord()
    deaths(policy, record, 5, was_ready=False, served=False)
    assert record.streak == 5
    (decision,) = deaths(policy, record, 1)
    assert decision.delay == 0 and record.streak == 1


@pytest.mark.parametrize('max_restarts', [1, 2, 10])
def test_degrades_once_at_the_limit(max_restarts):
    policy = RestartPolicy(max_restarts=max_restarts, window=300)
    record = SlotRecord()
    degraded = False
    flags = []
    for decision in deaths(policy, record, max_restarts + 3):
        flags.append(decision.degrade)
        degraded = degraded or decision.degrade
    assert flags.index(True) == max_restarts - 1
    # the caller passes the pool's state: once degraded, never "again"
    policy2 = RestartPolicy(max_restarts=max_restarts, window=300)
    later = deaths(policy2, SlotRecord(), max_restarts + 3, degraded=True)
    assert not any(d.degrade for d in later)


def test_restarts_outside_the_window_do_not_degrade():
    policy = RestartPolicy(max_restarts=3, window=10)
    record = SlotRecord()
    decisions = deaths(policy, record, 10, step=6.0)
    assert not any(d.degrade for d in decisions)


def test_permanent_exit_code_parks_without_counting():
    policy = RestartPolicy(max_restarts=1, window=300, permanent_exitcode=3)
    record = SlotRecord()
    decision = policy.decide(record, 0.0, exitcode=3, was_ready=True,
                             served=True, lived=5, degraded=False)
    assert decision.action == PARK and not decision.degrade
    assert record.restarts == 0 and policy.count(0.0) == 0
    decision = policy.decide(record, 0.0, exitcode=4, was_ready=True,
                             served=True, lived=5, degraded=False)
    assert decision.action == RESTART and decision.degrade


def test_backoff_doubles_to_its_cap_even_after_endless_failures():
    assert [backoff(n, 1.0, 60.0) for n in range(1, 9)] == [
        1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0]
    assert backoff(10 ** 6, 1.0, 60.0) == 60.0   # no float overflow
