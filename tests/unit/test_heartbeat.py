"""heartbeat.py: shared-memory slots, including across fork()."""

import os
import time

import pytest

from uhttp.workers.heartbeat import NO_REQUEST, SlotTable


@pytest.fixture
def table():
    slots = SlotTable(3)
    yield slots
    slots.close()


class TestSlot:
    def test_reset(self, table):
        slot = table.slot(0)
        slot.reset(now=5.0)
        assert slot.read() == (5.0, 0.0, 0, NO_REQUEST)

    def test_reset_default_time(self, table):
        before = time.monotonic()
        table.slot(1).reset()
        heartbeat = table.slot(1).read()[0]
        assert before <= heartbeat <= time.monotonic()

    def test_beat_changes_only_heartbeat(self, table):
        slot = table.slot(0)
        slot.reset(now=1.0)
        slot.start(2.0, 7, 99)
        slot.beat(3.5)
        assert slot.read() == (3.5, 0.0, 7, 99)

    def test_keep_alive_sets_both_times(self, table):
        slot = table.slot(0)
        slot.reset(now=1.0)
        slot.keep_alive(8.0)
        assert slot.read() == (8.0, 8.0, 0, NO_REQUEST)

    def test_start_and_idle(self, table):
        slot = table.slot(2)
        slot.reset(now=1.0)
        slot.keep_alive(2.0)
        slot.start(9.0, 3, 42)
        assert slot.read() == (9.0, 2.0, 3, 42)
        slot.idle()
        assert slot.read() == (9.0, 2.0, 3, NO_REQUEST)

    def test_negative_request_id(self, table):
        slot = table.slot(0)
        slot.reset(now=0.0)
        slot.start(1.0, 1, -1)
        assert slot.read()[3] == -1
        assert NO_REQUEST != -1

    def test_large_values(self, table):
        slot = table.slot(0)
        slot.start(1e9, 2 ** 62, 2 ** 40)
        assert slot.read()[2:] == (2 ** 62, 2 ** 40)

    def test_slots_are_independent(self, table):
        for index in range(3):
            table.slot(index).reset(now=float(index))
        table.slot(1).start(50.0, 5, 500)
        table.slot(1).keep_alive(60.0)
        assert table.slot(0).read() == (0.0, 0.0, 0, NO_REQUEST)
        assert table.slot(2).read() == (2.0, 0.0, 0, NO_REQUEST)
        assert table.slot(1).read() == (60.0, 60.0, 5, 500)

    def test_two_views_of_one_slot(self, table):
        writer, reader = table.slot(1), table.slot(1)
        writer.reset(now=4.0)
        writer.start(4.5, 2, 11)
        assert reader.read() == (4.5, 0.0, 2, 11)

    def test_count(self, table):
        assert table.count == 3

    def test_zero_slots_table(self):
        SlotTable(0).close()

    def test_close_twice(self):
        slots = SlotTable(1)
        slots.close()
        slots.close()


def test_slot_written_in_forked_child_is_seen_by_parent(table):
    table.slot(0).reset(now=1.0)
    table.slot(1).reset(now=1.0)
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            slot = table.slot(1)
            slot.keep_alive(123.5)
            slot.start(124.0, 9, 777)
            code = 0
        finally:
            os._exit(code)
    deadline = time.monotonic() + 10
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        assert time.monotonic() < deadline, 'child did not exit'
        time.sleep(0.005)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    assert table.slot(1).read() == (124.0, 123.5, 9, 777)
    assert table.slot(0).read() == (1.0, 0.0, 0, NO_REQUEST)


def test_parent_writes_seen_by_forked_child(table):
    table.slot(0).reset(now=1.0)
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(write_fd)
            os.read(read_fd, 1)       # wait for the parent's write
            code = 0 if table.slot(0).read()[3] == 31337 else 2
        finally:
            os._exit(code)
    os.close(read_fd)
    table.slot(0).start(2.0, 1, 31337)
    os.write(write_fd, b'x')
    os.close(write_fd)
    deadline = time.monotonic() + 10
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        assert time.monotonic() < deadline, 'child did not exit'
        time.sleep(0.005)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
