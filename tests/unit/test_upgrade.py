"""What a hot upgrade's new copy says to the old dispatcher over the
channel named by its environment: READY, or FAILED and why, once."""

import os
import socket

import pytest

from uhttp.workers import upgrade

from harness import read_to_end


@pytest.fixture
def channel():
    """(the old one's end, an environment naming the new copy's end)."""
    ours, theirs = socket.socketpair()
    ours.settimeout(5)
    environ = {upgrade.READY_FD: str(theirs.detach()),
               upgrade.READY_PID: str(os.getpid())}
    yield ours, environ
    ours.close()
    value = environ.get(upgrade.READY_FD)
    if value is not None:
        os.close(int(value))


def test_a_copy_that_gives_up_says_why_and_closes_the_channel(channel):
    ours, environ = channel
    assert upgrade.started_by_upgrade(environ)
    assert upgrade.report_failure("cannot import module 'app'", environ)
    assert read_to_end(ours) == b"Fcannot import module 'app'"
    assert not upgrade.started_by_upgrade(environ)
    assert not upgrade.report_ready(environ)   # once only


def test_a_ready_copy_says_ready(channel):
    ours, environ = channel
    assert upgrade.report_ready(environ)
    assert read_to_end(ours) == upgrade.READY


def test_an_old_dispatcher_that_knows_only_ready_sees_the_channel_close(channel):
    ours, environ = channel
    del environ[upgrade.READY_PID]   # an older version started this copy
    assert upgrade.report_failure('no workers', environ)
    assert read_to_end(ours) == b''   # never mistaken for READY


def test_a_channel_inherited_by_another_process_is_left_alone(channel):
    ours, environ = channel
    environ[upgrade.READY_PID] = str(os.getpid() + 1)
    value = environ[upgrade.READY_FD]
    assert not upgrade.report_failure('not mine', environ)
    environ[upgrade.READY_FD] = value   # still open: the fixture closes it
    os.write(int(value), b'R')
    assert ours.recv(16) == b'R'


def test_a_long_reason_is_cut_to_the_report_limit(channel):
    ours, environ = channel
    upgrade.report_failure('x' * (3 * upgrade.REPORT_LIMIT), environ)
    assert len(read_to_end(ours)) == upgrade.REPORT_LIMIT


def test_no_channel_no_report():
    assert not upgrade.report_failure('why', {})
    assert not upgrade.report_ready({})
