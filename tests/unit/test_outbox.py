"""The remote worker's outbox: a full one holds the sender's writers while
the broker takes entries, and drops the oldest only while it is down."""

import threading

from uhttp.workers import broker, outbox


def _messages(box):
    return [broker.decode_reply('0-0', item[1]).message
            for item in box.items]


def test_a_full_outbox_waits_for_the_broker_and_drops_nothing(monkeypatch):
    monkeypatch.setattr(outbox, 'LIMIT', 3)
    box = outbox.Outbox('w', on_wait=lambda now: None)
    for number in range(3):
        box.put('s', ('chunk', number))
    put = threading.Thread(target=box.put, args=('s', ('chunk', 3)))
    put.start()
    put.join(0.3)
    assert put.is_alive()          # held: the outbox is full
    batch = box.take(2)
    box.done(batch)                # the broker took two
    put.join(10)
    assert not put.is_alive()
    assert _messages(box) == [('chunk', 2), ('chunk', 3)]
    assert box.dropped == 0


def test_while_the_broker_is_down_the_oldest_give_way(monkeypatch):
    monkeypatch.setattr(outbox, 'LIMIT', 3)
    box = outbox.Outbox('w')
    box.stalled()
    for number in range(5):
        box.put('s', ('chunk', number))
    assert _messages(box) == [('chunk', 2), ('chunk', 3), ('chunk', 4)]
    assert box.dropped == 2


def test_a_waiting_writer_drops_once_the_broker_goes_down(monkeypatch):
    monkeypatch.setattr(outbox, 'LIMIT', 2)
    box = outbox.Outbox('w')
    box.put('s', ('chunk', 0))
    box.put('s', ('chunk', 1))
    put = threading.Thread(target=box.put, args=('s', ('chunk', 2)))
    put.start()
    put.join(0.3)
    assert put.is_alive()
    box.stalled()
    put.join(10)
    assert not put.is_alive()
    assert _messages(box) == [('chunk', 1), ('chunk', 2)]
    assert box.dropped == 1


def test_entries_are_numbered_per_stream():
    box = outbox.Outbox('w')
    box.put('a', ('x',))
    box.put('b', ('y',))
    box.put('a', ('z',))
    assert [(item[0], item[1]['n']) for item in box.items] == [
        ('a', '1'), ('b', '1'), ('a', '2')]


def test_while_the_broker_is_down_the_oldest_give_way_past_the_bytes_too(
        monkeypatch):
    monkeypatch.setattr(outbox, 'BYTES_LIMIT', 1000)
    box = outbox.Outbox('w')
    box.stalled()
    for number in range(10):  # some 300 bytes each, far below LIMIT
        box.put('s', ('chunk', number, b'x' * 300))
    assert box.size <= 1000
    assert [message[1] for message in _messages(box)] == [7, 8, 9]
    assert box.dropped == 7
