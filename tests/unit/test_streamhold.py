"""StreamHold's bookkeeping, without processes: a worker is held while a
stream's client lags, and is not taken for stuck while held nor for its
stuck_timeout once let go (the flaky kill of a slow reader's worker)."""

from time import monotonic

from uhttp.workers import streamhold as _streamhold


class Selector:
    def __init__(self):
        self.held = {}

    def hold(self, fd, held):
        self.held[fd] = held


class Loop:
    def __init__(self):
        self.workers = Selector()
        self.timers = []

    def call_at(self, when, callback, *args):
        self.timers.append((when, callback, args))


class Core:
    def __init__(self):
        self.loop = Loop()

    @staticmethod
    def now():
        return monotonic()


class Client:
    """The few Connection attributes StreamHold reads."""
    max_send_buffer_size = 1000
    is_open = True

    def __init__(self, queued):
        self.send_buffer_size = queued
        self.drained = []

    def when_drained(self, size, callback):
        self.drained.append((size, callback))


class Handle:
    from_fd = 7


def held_stream():
    core, handle, client = Core(), Handle(), Client(queued=5000)
    hold = _streamhold.StreamHold(core)
    hold.sent(handle, client, lambda: None)
    return core, hold, handle, client


def test_a_lagging_client_holds_its_workers_pipe_until_half_is_out():
    core, hold, handle, client = held_stream()
    assert hold.holds(handle)
    assert core.loop.workers.held == {7: True}
    assert [size for size, _ in client.drained] == [500]
    client.drained[0][1](client)
    assert not hold.holds(handle)
    assert core.loop.workers.held == {7: False}


def test_a_client_within_the_limit_holds_nothing():
    core, handle = Core(), Handle()
    hold = _streamhold.StreamHold(core)
    hold.sent(handle, Client(queued=1000), lambda: None)
    assert not hold.holds(handle, monotonic() - 60)
    assert core.loop.workers.held == {}


def test_a_worker_let_go_counts_as_held_for_what_came_before():
    _, hold, handle, client = held_stream()
    before = monotonic() - 0.001
    client.drained[0][1](client)
    assert not hold.holds(handle)
    assert hold.holds(handle, before)            # let go after `since`
    assert not hold.holds(handle, monotonic())   # but not after now


def test_a_worker_never_held_is_not_excused():
    hold = _streamhold.StreamHold(Core())
    assert not hold.holds(Handle(), monotonic() - 60)


def test_a_new_process_in_the_slot_starts_with_nothing_to_excuse():
    _, hold, handle, client = held_stream()
    client.drained[0][1](client)
    hold.forget(handle)
    assert not hold.holds(handle, monotonic() - 60)
