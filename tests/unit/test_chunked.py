"""ChunkedBody: the chunked request body decoder (pure, no sockets)."""

import pytest
import uhttp.server as _server

from uhttp.workers.http import ChunkedBody


def decode(data, limit=1 << 20, step=None):
    decoder = ChunkedBody(limit)
    buffer = bytearray()
    pieces = [data] if step is None else [
        data[i:i + step] for i in range(0, len(data), step)]
    for piece in pieces:
        buffer += piece
        used = decoder.feed(buffer)
        del buffer[:used]
        if decoder.done:
            break
    return decoder, bytes(buffer)


def test_whole_body_and_rest_left_for_the_next_request():
    decoder, rest = decode(b'3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\nNEXT')
    assert decoder.done and decoder.body() == b'abcde' and rest == b'NEXT'


@pytest.mark.parametrize('step', [1, 2, 3, 7])
def test_any_split_gives_the_same_body(step):
    decoder, rest = decode(b'a\r\n0123456789\r\n1\r\n!\r\n0\r\nT: v\r\n\r\n',
                           step=step)
    assert decoder.done and decoder.body() == b'0123456789!' and rest == b''


def test_incomplete_body_is_not_done():
    decoder, _ = decode(b'5\r\nab')
    assert not decoder.done


def test_body_over_the_limit_is_413():
    with pytest.raises(_server.HttpErrorWithResponse) as err:
        decode(b'8\r\n12345678\r\n8\r\n12345678\r\n0\r\n\r\n', limit=10)
    assert err.value.status == 413


@pytest.mark.parametrize('data', [b'x\r\n', b'1\r\nab\r\n', b'0\r\nno colon\r\n\r\n',
                                  b'1' * 20 + b'\r\n', b'f' * 5000])
def test_malformed_is_400(data):
    with pytest.raises(_server.HttpErrorWithResponse) as err:
        decode(data)
    assert err.value.status == 400
