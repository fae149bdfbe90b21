"""Malformed HTTP against a real dispatcher (app tests/apps/hard_http.py).

Every case sends raw bytes on a fresh connection and checks that the
request gets exactly one well-formed response (status line, token header
names, exactly one Content-Length and that many body bytes) or a clean
close, never a 5xx other than 501/505, and that the dispatcher is alive and
answers a probe afterwards.

Case kinds:
  reject  a 4xx/501/505 answer or a close without answer
  any     as reject, or a 2xx (inputs some servers accept)
  ok      exactly one 200
  400     exactly one 400 (RFC 9112 says MUST), then the connection closes
  clean   rejected, or accepted with the offending bytes (NUL, bare CR) not
          reaching the application as part of a header (RFC 9110 5.5)
"""
import json
import socket
import time

import pytest

from hard_util import exchange, parse_responses, pid_alive, probe, request_bytes

APP = 'hard_http'
REJECT_STATUSES = set(range(400, 500)) | {501, 505}
ANY_STATUSES = REJECT_STATUSES | set(range(200, 300))
HOST = 'Host: 127.0.0.1\r\n'
TARGETS = ('/sync/echo', '/api/echo')


def _line(line, headers=HOST, body=b''):
    raw = line if isinstance(line, bytes) else line.encode('latin-1')
    head = headers if isinstance(headers, bytes) else headers.encode('latin-1')
    return raw + b'\r\n' + head + b'\r\n' + body


def _request_line_cases(target):
    t = target
    cases = {
        'missing-version': f'GET {t}',
        'method-only': 'GET',
        'missing-method': f'{t} HTTP/1.1',
        'double-space-after-method': f'GET  {t} HTTP/1.1',
        'double-space-before-version': f'GET {t}  HTTP/1.1',
        'trailing-space': f'GET {t} HTTP/1.1 ',
        'leading-space': f' GET {t} HTTP/1.1',
        'tabs': f'GET\t{t}\tHTTP/1.1',
        'extra-part': f'GET {t} HTTP/1.1 extra',
        'two-parts-trailing-space': f'GET {t} ',
        'root-two-parts-trailing-space': 'GET / ',
        'empty-line-only': '',
        'single-space': ' ',
        'lower-case-method': f'get {t} HTTP/1.1',
        'mixed-case-method': f'Get {t} HTTP/1.1',
        'unknown-method': f'FOO {t} HTTP/1.1',
        'nul-in-method': f'G\x00ET {t} HTTP/1.1',
        'non-ascii-method': 'G\u00c9T '.encode('utf-8') + f'{t} HTTP/1.1'.encode(),
        'version-1.2': f'GET {t} HTTP/1.2',
        'version-2.0': f'GET {t} HTTP/2.0',
        'version-0.9': f'GET {t} HTTP/0.9',
        'version-lower-case': f'GET {t} http/1.1',
        'version-nul': f'GET {t} HTTP/1.1\x00',
        'version-no-number': f'GET {t} HTTP/',
        'version-no-minor': f'GET {t} HTTP/1',
        'version-11': f'GET {t} HTTP/11',
        'version-1.10': f'GET {t} HTTP/1.10',
        'version-1.1.1': f'GET {t} HTTP/1.1.1',
        'version-xttp': f'GET {t} XTTP/1.1',
        'space-in-target': f'GET {t[:3]} {t[3:]} HTTP/1.1',
        'target-without-slash': f'GET {t[1:]} HTTP/1.1',
        'target-asterisk': 'GET * HTTP/1.1',
        'non-ascii-target': f'GET {t}'.encode() + b'\xff HTTP/1.1',
        'nul-in-target': f'GET {t}\x00 HTTP/1.1',
        'tls-client-hello': b'\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03' + bytes(range(32)),
        'h2-preface': 'PRI * HTTP/2.0\r\n\r\nSM',
    }
    result = [(f'line:{name}:{t}', _line(value), 'reject', False)
              for name, value in cases.items()]
    lenient = {
        'absolute-form': f'GET http://127.0.0.1{t} HTTP/1.1',
        'double-slash': f'GET /{t} HTTP/1.1',
        'connect': 'CONNECT 127.0.0.1:80 HTTP/1.1',
        'leading-empty-line': f'\r\nGET {t} HTTP/1.1',
        'options-asterisk': 'OPTIONS * HTTP/1.1',
    }
    result += [(f'line:{name}:{t}', _line(value), 'any', False)
               for name, value in lenient.items()]
    return result


def _encoding_cases(target):
    t = target
    bad = {
        'pct-invalid-hex': f'{t}%ZZ',
        'pct-invalid-utf8': f'{t}/%C3%28',
        'pct-truncated': f'{t}%',
        'pct-truncated-one': f'{t}%2',
        'pct-g0': f'{t}%G0',
        'pct-nul': f'{t}%00',
        'pct-overlong-dot': f'{t}/%c0%ae%c0%ae/',
        'pct-surrogate': f'{t}/%ED%A0%80',
        'pct-beyond-unicode': f'{t}/%F4%90%80%80',
        'pct-ff': f'{t}/%FF',
        'query-invalid-hex': f'{t}?%ZZ',
        'query-invalid-utf8': f'{t}?a=%C3%28',
        'query-truncated': f'{t}?a=%',
        'query-key-invalid-utf8': f'{t}?%C3%28=1',
    }
    result = [(f'pct:{name}:{t}', _line(f'GET {value} HTTP/1.1'), 'reject', False)
              for name, value in bad.items()]
    good = {
        'query-euro': f'{t}?x=%E2%82%AC',
        'query-plus': f'{t}?x=a+b',
        'query-repeated': f'{t}?a=1&a=2&a=3',
        'query-empty-parts': f'{t}?&&a=1&&',
    }
    result += [(f'pct:{name}:{t}', _line(f'GET {value} HTTP/1.1'), 'ok', False)
               for name, value in good.items()]
    return result


def _header_cases(target):
    line = f'GET {target} HTTP/1.1'
    t = target
    reject = {
        'no-colon': HOST + 'NoColonHere\r\n',
        'empty-name': HOST + ': value\r\n',
        'space-in-name': HOST + 'X A: v\r\n',
        'obs-fold-space': HOST + 'X-A: v\r\n continued\r\n',
        'obs-fold-tab': HOST + 'X-A: v\r\n\tcontinued\r\n',
        'nul-in-name': HOST + 'X-\x00A: v\r\n',
        'non-ascii-name': HOST + 'X-\xe9: v\r\n',
        'paren-in-name': HOST + 'X(A): v\r\n',
        'at-in-name': HOST + 'X@A: v\r\n',
        'missing-host': 'X-A: v\r\n',
        'header-line-17k': HOST + 'X-Big: ' + 'a' * 17000 + '\r\n',
        'many-headers-20k': HOST + ''.join(f'X-{i}: v\r\n' for i in range(2500)),
    }
    result = [(f'hdr:{name}:{t}', _line(line, value), 'reject', False)
              for name, value in reject.items()]
    strict = {
        'whitespace-before-colon': HOST + 'X-A : v\r\n',
        'duplicate-host': HOST + 'Host: other\r\n',
    }
    result += [(f'hdr:{name}:{t}', _line(line, value), '400', False)
               for name, value in strict.items()]
    result.append((f'hdr:missing-host-strict:{t}', _line(line, 'X-A: v\r\n'),
                   '400', False))
    lenient = {
        'utf8-value': HOST + 'X-A: caf\xc3\xa9\r\n',
        'latin1-value': HOST + 'X-A: \xe9t\xe9\r\n',
        'del-in-value': HOST + 'X-A: a\x7fb\r\n',
        'control-in-value': HOST + 'X-A: a\x01b\r\n',
        'empty-value': HOST + 'X-A:\r\n',
        'empty-host': 'Host:\r\n',
        'value-15k': HOST + 'X-Big: ' + 'a' * 15000 + '\r\n',
        'lower-case-host': 'host: 127.0.0.1\r\n',
        'tab-before-value': HOST + 'X-A:\tv\t\r\n',
    }
    result += [(f'hdr:{name}:{t}', _line(line, value), 'any', False)
               for name, value in lenient.items()]
    clean = {
        'nul-in-value': HOST + 'X-A: a\x00b\r\n',
        'bare-cr-in-value': HOST + 'X-A: a\rX-Injected: yes\r\n',
        'cr-cr-lf-terminator': HOST.replace('\r\n', '\r\r\n'),
    }
    result += [(f'hdr:{name}:{t}', _line(line, value), 'clean', False)
               for name, value in clean.items()]
    result.append((f'hdr:lf-only-lines:{t}',
                   f'{line}\nHost: 127.0.0.1\n\n'.encode(), 'any', False))
    result.append((f'hdr:version-1.0-without-host:{t}',
                   _line(f'GET {t} HTTP/1.0', ''), 'ok', False))
    return result


def _length_cases(target):
    line = f'POST {target} HTTP/1.1'
    t = target
    bad_values = {
        'alpha': 'abc', 'negative': '-5', 'plus': '+5', 'decimal': '5.0',
        'exponent': '1e3', 'hex': '0x5', 'empty': '', 'two-numbers': '5 5',
        'list-different': '5, 6', 'arabic-digit': '\u0665', 'superscript': '\u00b2',
    }
    result = []
    for name, value in bad_values.items():
        head = HOST + f'Content-Length: {value}\r\n'
        result.append((f'cl:{name}:{t}',
                       _line(line, head.encode('utf-8'), b'hello'), '400', False))
    result.append((f'cl:duplicate-different:{t}',
                   _line(line, HOST + 'Content-Length: 5\r\nContent-Length: 6\r\n',
                         b'hello!'), '400', False))
    result.append((f'cl:duplicate-same:{t}',
                   _line(line, HOST + 'Content-Length: 5\r\nContent-Length: 5\r\n',
                         b'hello'), 'any', False))
    result.append((f'cl:list-same:{t}',
                   _line(line, HOST + 'Content-Length: 5, 5\r\n', b'hello'),
                   'any', False))
    for name, value in {'huge': '9' * 30, 'beyond-u64': '18446744073709551621',
                        'over-limit-17m': '17000000'}.items():
        result.append((f'cl:{name}:{t}',
                       _line(line, HOST + f'Content-Length: {value}\r\n', b'x' * 10),
                       'reject', True))
    result.append((f'cl:body-shorter-than-length:{t}',
                   _line(line, HOST + 'Content-Length: 50\r\n', b'short'),
                   'reject', True))
    result.append((f'cl:zero-with-get:{t}',
                   _line(f'GET {t} HTTP/1.1', HOST + 'Content-Length: 0\r\n'),
                   'ok', False))
    result.append((f'cl:leading-zeros:{t}',
                   _line(line, HOST + 'Content-Length: 0005\r\n', b'hello'),
                   'any', False))
    return result


def _chunked_cases(target):
    line = f'POST {target} HTTP/1.1'
    t = target
    te = HOST + 'Transfer-Encoding: chunked\r\n'
    bodies = {
        'short-chunk': b'5\r\nhel\r\n0\r\n\r\n',
        'bad-size': b'zz\r\nhello\r\n0\r\n\r\n',
        'negative-size': b'-1\r\nhello\r\n0\r\n\r\n',
        'huge-size': b'ffffffffffffffffffff\r\nhello\r\n0\r\n\r\n',
        'no-crlf-after-data': b'5\r\nhelloXX0\r\n\r\n',
        'bad-extension': b'5;\x00\r\nhello\r\n0\r\n\r\n',
    }
    result = [(f'te:{name}:{t}', _line(line, te, body), 'reject', True)
              for name, body in bodies.items()]
    result.append((f'te:no-last-chunk:{t}',
                   _line(line, te, b'5\r\nhello\r\n'), 'reject', True))
    headers = {
        'chunked-not-last': HOST + 'Transfer-Encoding: chunked, gzip\r\n',
        'gzip-only': HOST + 'Transfer-Encoding: gzip\r\n',
        'unknown-coding': HOST + 'Transfer-Encoding: xchunked\r\n',
        'space-before-colon': HOST + 'Transfer-Encoding : chunked\r\n',
        'with-content-length': te + 'Content-Length: 5\r\n',
        'http10': 'Transfer-Encoding: chunked\r\n',
    }
    for name, head in headers.items():
        request_line = f'POST {t} HTTP/1.0' if name == 'http10' else line
        result.append((f'te:{name}:{t}',
                       _line(request_line, head, b'5\r\nhello\r\n0\r\n\r\n'),
                       'reject', True))
    result.append((f'te:valid-chunked:{t}',
                   _line(line, te, b'5\r\nhello\r\n0\r\n\r\n'), 'any', True))
    return result


def _expect_cases(target):
    t = target
    line = f'POST {t} HTTP/1.1'
    return [
        (f'expect:continue-body-at-once:{t}',
         _line(line, HOST + 'Expect: 100-continue\r\nContent-Length: 5\r\n', b'hello'),
         'ok', False),
        (f'expect:continue-no-body:{t}',
         _line(f'GET {t} HTTP/1.1', HOST + 'Expect: 100-continue\r\n'), 'ok', False),
        (f'expect:unknown-expectation:{t}',
         _line(line, HOST + 'Expect: teapot\r\nContent-Length: 5\r\n', b'hello'),
         'any', False),
    ]


CASES = []
for _target in TARGETS:
    CASES += _request_line_cases(_target)
    CASES += _encoding_cases(_target)
    CASES += _header_cases(_target)
    CASES += _length_cases(_target)
    CASES += _chunked_cases(_target)
    CASES += _expect_cases(_target)
_seen = set()
CASES = [case for case in CASES if not (case[0] in _seen or _seen.add(case[0]))]


def _echoed_headers(resp):
    data = json.loads(resp.body)
    return data.get('headers') or {}


def check_case(outcome, kind):
    """Assert the single-request contract for one outcome."""
    assert outcome.rest == b'', f"incomplete or trailing bytes {outcome.rest[:200]!r}"
    finals = outcome.finals
    assert len(finals) <= 1, f"{len(finals)} responses to one request: {finals}"
    if not finals:
        assert kind in ('reject', 'any', 'clean'), (
            f"no response (closed={outcome.closed}) where one was due")
        assert outcome.closed, "neither a response nor a close"
        return None
    resp = finals[0]
    if kind == 'ok':
        assert resp.status == 200, resp
    elif kind == '400':
        assert resp.status == 400, f"{resp} (RFC 9112 requires 400)"
        assert outcome.closed, "the connection stays open after a framing error"
    elif kind == 'reject':
        assert resp.status in REJECT_STATUSES, resp
    elif kind == 'any':
        assert resp.status in ANY_STATUSES, resp
    elif kind == 'clean':
        assert resp.status in ANY_STATUSES, resp
        if 200 <= resp.status < 300:
            headers = _echoed_headers(resp)
            for name, value in headers.items():
                assert '\x00' not in name + value and '\r' not in name + value, (
                    f"header {name!r}: {value!r} reached the application")
            assert 'x-injected' not in headers, (
                f"a bare CR made a new header: {headers}")
    return resp


@pytest.fixture(scope='module')
def server(module_server):
    return module_server


@pytest.mark.parametrize('name,data,kind,shut', CASES, ids=[case[0] for case in CASES])
def test_malformed_request(server, name, data, kind, shut):
    outcome = exchange(server.port, data, timeout=8, shut_wr=shut, expect=1,
                       quiet=0.15)
    try:
        check_case(outcome, kind)
    except AssertionError as err:
        raise AssertionError(f"sent {data[:300]!r}: {err}") from None
    assert pid_alive(server.pid)
    assert server.get('/probe').status == 200


def test_http09_request_line(server):
    """'GET /' with no version, then nothing: answered (400/408) or closed
    within the request timeout (2 s) and the maintenance period."""
    for data in (b'GET /\r\n', b'GET /\r\n\r\n', b'GET /sync/echo\r\n\r\n'):
        start = time.monotonic()
        outcome = exchange(server.port, data, timeout=12, expect=1, quiet=0.2)
        check_case(outcome, 'reject')
        assert outcome.finals or outcome.closed, outcome
        assert time.monotonic() - start < 12
    probe(server)


@pytest.mark.parametrize('size', [100 * 1024, 1024 * 1024])
def test_huge_header_block(server, size):
    data = (b'GET /sync/echo HTTP/1.1\r\n' + HOST.encode()
            + b''.join(b'X-Pad-%d: %s\r\n' % (i, b'v' * 90)
                       for i in range(size // 100)) + b'\r\n')
    outcome = exchange(server.port, data, timeout=10, expect=1)
    check_case(outcome, 'reject')
    if outcome.finals:
        assert outcome.finals[0].status in (400, 413, 431), outcome
    probe(server)


@pytest.mark.parametrize('target', TARGETS)
def test_very_long_url(server, target):
    data = _line(f'GET {target}?q=' + 'a' * (100 * 1024) + ' HTTP/1.1')
    outcome = exchange(server.port, data, timeout=10, expect=1)
    check_case(outcome, 'reject')
    if outcome.finals:
        assert outcome.finals[0].status in (400, 414, 431), outcome
    probe(server)


# -- pipelining -----------------------------------------------------------------

def _seq_json(resp):
    assert resp.status == 200, resp
    return json.loads(resp.body)


def test_pipelined_gets_answered_in_order(server):
    data = b''.join(request_bytes('GET', f'/api/seq/{i}') for i in range(20))
    outcome = exchange(server.port, data, timeout=10, expect=20)
    assert outcome.rest == b''
    assert [_seq_json(r)['n'] for r in outcome.finals] == list(range(20))
    assert not outcome.closed


def test_pipelined_sync_and_pooled_mixed(server):
    parts = []
    for i in range(12):
        if i % 2:
            parts.append(request_bytes('GET', f'/sync/echo?i={i}'))
        else:
            parts.append(request_bytes('GET', f'/api/seq/{i}'))
    outcome = exchange(server.port, b''.join(parts), timeout=10, expect=12)
    assert outcome.rest == b''
    seen = []
    for resp in outcome.finals:
        body = _seq_json(resp)
        seen.append(int(body['query']['i']) if 'query' in body else body['n'])
    assert seen == list(range(12))


def test_pipelined_with_bodies(server):
    parts = []
    expected = []
    for i in range(10):
        if i % 3 == 0:
            body = json.dumps({'i': i, 'pad': 'x' * i}).encode()
            parts.append(request_bytes('POST', f'/api/seq/{i}',
                                       {'Content-Type': 'application/json'}, body))
            expected.append({'i': i, 'pad': 'x' * i})
        elif i % 3 == 1:
            body = bytes(range(256))[i:] + b'\r\n\r\nGET / HTTP/1.1\r\n\r\n'
            parts.append(request_bytes('POST', f'/api/seq/{i}',
                                       {'Content-Type': 'application/octet-stream'}, body))
            expected.append({'bytes': body.decode('latin-1')})
        else:
            parts.append(request_bytes('GET', f'/api/seq/{i}'))
            expected.append(None)
    outcome = exchange(server.port, b''.join(parts), timeout=10, expect=10)
    assert outcome.rest == b''
    got = [_seq_json(r) for r in outcome.finals]
    assert [g['n'] for g in got] == list(range(10))
    assert [g['data'] for g in got] == expected


def test_pipelined_last_asks_close(server):
    data = b''.join(request_bytes('GET', f'/api/seq/{i}') for i in range(5))
    data += request_bytes('GET', '/api/seq/5', {'Connection': 'close'})
    outcome = exchange(server.port, data, timeout=10)
    assert outcome.closed
    assert [_seq_json(r)['n'] for r in outcome.finals] == list(range(6))
    assert outcome.finals[-1].header('connection') == 'close'


def test_pipelined_200_requests_in_one_send(server):
    data = b''.join(request_bytes('GET', f'/api/seq/{i}') for i in range(200))
    outcome = exchange(server.port, data, timeout=30, expect=200)
    assert outcome.rest == b''
    assert [_seq_json(r)['n'] for r in outcome.finals] == list(range(200))


def test_a_pipeline_far_longer_than_the_header_limit(server):
    # 1,000 requests in one send (about 40 KB, over max_headers_length):
    # the ones that come while another is out wait in the buffer, each in
    # its turn
    data = b''.join(request_bytes('GET', f'/api/seq/{i}') for i in range(1000))
    assert len(data) > 32 * 1024
    outcome = exchange(server.port, data, timeout=60, expect=1000)
    assert outcome.rest == b'' and not outcome.closed
    assert [_seq_json(r)['n'] for r in outcome.finals] == list(range(1000))


def test_a_pipelined_upload_after_a_get(server):
    # the upload's head and the start of its body come with the GET, more
    # than a head may be long: both are answered, the body whole
    body = bytes(range(256)) * 160
    data = request_bytes('GET', '/api/seq/0') + request_bytes(
        'POST', '/api/seq/1', {'Content-Type': 'application/octet-stream'},
        body)
    outcome = exchange(server.port, data, timeout=20, expect=2)
    assert outcome.rest == b'' and not outcome.closed
    first, second = (_seq_json(r) for r in outcome.finals)
    assert (first['n'], second['n']) == (0, 1)
    assert second['data'] == {'bytes': body.decode('latin-1')}


def test_pipelined_then_garbage(server):
    data = b''.join(request_bytes('GET', f'/api/seq/{i}') for i in range(3))
    data += b'THIS IS NOT HTTP\r\n\r\n'
    outcome = exchange(server.port, data, timeout=10, expect=4)
    assert outcome.rest == b''
    finals = outcome.finals
    assert [_seq_json(r)['n'] for r in finals[:3]] == [0, 1, 2]
    assert len(finals) <= 4
    if len(finals) == 4:
        assert finals[3].status in REJECT_STATUSES
    else:
        assert outcome.closed


def test_pipelined_mixed_line_endings(server):
    """An LF-only request followed by a CRLF one: both answered in order, or
    the first answered and the connection closed - never a request dropped
    while the connection stays open."""
    data = (b'GET /api/seq/1 HTTP/1.1\nHost: 127.0.0.1\n\n'
            b'GET /api/seq/2 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n')
    # the app's keep-alive timeout is 3 s: a close must come before that
    outcome = exchange(server.port, data, timeout=2, expect=2, quiet=0.3)
    assert outcome.rest == b''
    finals = outcome.finals
    assert len(finals) <= 2, finals
    if len(finals) == 2:
        assert [_seq_json(r)['n'] for r in finals] == [1, 2]
    else:
        assert outcome.closed, (
            f"sent {data!r}: {len(finals)} response(s) to 2 requests and the "
            f"connection stays open: {finals}")
    probe(server)


@pytest.mark.parametrize('target', ['/api/seq/1', '/sync/echo'])
def test_bare_cr_does_not_smuggle_content_length(server, target):
    """'X-A: a<CR>Content-Length: 32' is one (invalid) header line: the
    request is rejected, or answered as a GET without body - then the next
    pipelined request (32 bytes) is answered too, not eaten as a body."""
    second = b'GET /probe HTTP/1.1\r\nHost: x\r\n\r\n'
    assert len(second) == 32
    data = (f'GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n'
            'X-A: a\rContent-Length: 32\r\n\r\n').encode() + second
    # below the app's keep-alive timeout (3 s)
    outcome = exchange(server.port, data, timeout=2.5, expect=2, quiet=0.3)
    assert outcome.rest == b''
    finals = outcome.finals
    assert finals, f"sent {data!r}: no response ({outcome})"
    if finals[0].status in REJECT_STATUSES:
        assert len(finals) == 1 or finals[1].status in REJECT_STATUSES | {200}
    else:
        assert len(finals) == 2, (
            f"sent {data!r}: the bare CR was taken as a line break, the second "
            f"request became a body: {finals}")
        assert json.loads(finals[1].body) == {'ok': True}
    probe(server)


@pytest.mark.parametrize('target', ['/api/seq/1', '/sync/echo'])
def test_body_longer_than_content_length(server, target):
    data = request_bytes('POST', target, {'Content-Length': '5'}) + b'helloEXTRA\r\n\r\n'
    outcome = exchange(server.port, data, timeout=8, expect=2, quiet=0.3)
    assert outcome.rest == b''
    finals = outcome.finals
    assert 1 <= len(finals) <= 2, outcome
    first = _seq_json(finals[0])
    assert first.get('data', first.get('body')) in ({'bytes': 'hello'}, 'hello')
    if len(finals) == 2:
        assert finals[1].status in REJECT_STATUSES
    else:
        assert outcome.closed
    probe(server)


@pytest.mark.parametrize('target', TARGETS)
def test_expect_100_continue_waits_for_body(server, target):
    sock = socket.create_connection(('127.0.0.1', server.port), timeout=5)
    try:
        sock.sendall(request_bytes('POST', target, {
            'Expect': '100-continue', 'Content-Length': '11',
            'Content-Type': 'application/octet-stream'}))
        interim = b''
        deadline = time.monotonic() + 5
        while b'\r\n\r\n' not in interim and time.monotonic() < deadline:
            chunk = sock.recv(4096)
            assert chunk, "closed instead of 100 Continue"
            interim += chunk
        assert interim.startswith(b'HTTP/1.1 100'), interim
        assert interim.endswith(b'\r\n\r\n'), f"more than the interim response: {interim!r}"
        sock.sendall(b'hello world')
        data = b''
        while True:
            chunk = sock.recv(65536)
            data += chunk
            responses, rest = parse_responses(data, closed=not chunk)
            if responses or not chunk:
                break
        assert len(responses) == 1 and rest == b'', (responses, rest)
        body = _seq_json(responses[0])
        assert body.get('data', body.get('body')) in ({'bytes': 'hello world'}, 'hello world')
    finally:
        sock.close()


def test_expect_100_continue_over_limit(server):
    data = request_bytes('POST', '/api/echo', {
        'Expect': '100-continue', 'Content-Length': str(17 * 1024 * 1024)})
    outcome = exchange(server.port, data, timeout=8, expect=1)
    assert outcome.rest == b''
    assert len(outcome.finals) == 1 and outcome.finals[0].status in (413, 417), outcome
    # refused before the body is asked for: no 100 Continue first
    assert [resp.status for resp in outcome.responses] == [
        outcome.finals[0].status], outcome
    probe(server)


def test_content_length_of_thousands_of_digits(server):
    # int() refuses 4300 digits and more: that must not be a failed
    # connection in the log, but the body limit the number is far beyond,
    # or (leading zeros) the length it says
    for digits, status in ((b'9' * 5000, 413), (b'0' * 5000 + b'5', 200)):
        data = (b'POST /api/echo HTTP/1.1\r\nHost: 127.0.0.1\r\n'
                b'Connection: close\r\n'
                b'Content-Length: ' + digits + b'\r\n\r\nhello')
        outcome = exchange(server.port, data, timeout=8)
        assert [final.status for final in outcome.finals] == [status], outcome
    probe(server)
    assert 'failed: ValueError' not in server.log()


def test_alive_after_all(server):
    probe(server)
    status = server.get('/_status').json
    assert status['pending'] == 0
    assert 'dispatcher loop error' not in server.log()
