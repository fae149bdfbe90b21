"""The access log's lines, formats and escapes, without a server."""

import re

from uhttp.workers import accesslog


# -- the access log -------------------------------------------------------------------

class TestAccessLog:
    def test_default_line(self):
        log = accesslog.AccessLog(accesslog.DEFAULT_ACCESS_FORMAT)
        line = log.line('10.0.0.1', 'GET', '/api/item/3', 200, 17, 0.0012,
                        'Jobs', 1, '/api/item/{id:int}', 5, when=0)
        assert line.startswith('10.0.0.1 - - [')
        assert line.endswith('] "GET /api/item/3" 200 17 1.200ms Jobs[1]')

    def test_what_a_client_sends_cannot_forge_a_line(self):
        log = accesslog.AccessLog(accesslog.DEFAULT_ACCESS_FORMAT)
        forged = '/x" 200 1 0.1ms P[0]\r\n1.2.3.4 - - [now] "GET /admin'
        line = log.line('10.0.0.1', 'GET', forged, 404, 22, 0.001, '', None,
                        '', None, when=0)
        assert '\r' not in line and '\n' not in line
        assert len(re.findall(r'(?<!\\)"', line)) == 2   # its own quotes only
        assert '\\x0d\\x0a' in line and '/x\\" 200' in line

    def test_log_safe_keeps_text_and_escapes_controls(self):
        assert accesslog.log_safe('/caf\u00e9/ok') == '/caf\u00e9/ok'
        assert accesslog.log_safe('a\\b') == 'a\\\\b'
        assert accesslog.log_safe('\x00\x1b\x7f') == '\\x00\\x1b\\x7f'
        assert accesslog.log_safe('\u2028') == '\\u2028'

    def test_unknowns_are_dashes(self):
        log = accesslog.AccessLog('{remote} {bytes} {pool}[{slot}] {route} '
                           '{request_id}')
        assert log.line(None, 'GET', '/', 404, None, 0.0, '', None, '',
                        None) == '- - -[-] - -'

    def test_every_field(self):
        template = ' '.join('{%s}' % name for name in accesslog.ACCESS_FIELDS)
        log = accesslog.AccessLog(accesslog.check_access_format(template))
        parts = log.line('1.2.3.4', 'POST', '/x', 201, 3, 0.5, 'P', 0, '/x',
                         9, when=86400, query='a=1').split(' ')
        assert parts[0] == '1.2.3.4' and parts[3:] == [
            'POST', '/x', 'a=1', '/x?a=1', '201', '3', '0.500000', '500.000',
            'P', '0', '/x', '9']

    def test_the_default_line_has_the_query_the_client_sent(self):
        log = accesslog.AccessLog(accesslog.DEFAULT_ACCESS_FORMAT)
        line = log.line('10.0.0.1', 'GET', '/find', 200, 2, 0.001, 'P', 0,
                        '/find', 1, when=0, query='q=caf%C3%A9&page=2')
        assert '"GET /find?q=caf%C3%A9&page=2" 200' in line

    def test_an_empty_query_keeps_its_mark_and_none_has_no_mark(self):
        log = accesslog.AccessLog('{target} {query}')
        assert log.line(None, 'GET', '/a', 200, 0, 0.0, '', None, '', None,
                        query='') == '/a? '
        assert log.line(None, 'GET', '/a', 200, 0, 0.0, '', None, '',
                        None) == '/a -'

    def test_a_query_cannot_forge_a_line_either(self):
        log = accesslog.AccessLog(accesslog.DEFAULT_ACCESS_FORMAT)
        line = log.line('1.2.3.4', 'GET', '/a', 200, 0, 0.0, '', None, '',
                        None, when=0, query='x="\n')
        assert '\n' not in line
        assert '"GET /a?x=\\"\\x0a" 200' in line
        assert len(re.findall(r'(?<!\\)"', line)) == 2

    def test_durations_and_status_take_format_specs(self):
        # '{duration_ms:.1f}' was refused at construction ("Unknown format
        # code 'f' for object of type 'str'"): the durations were text
        template = accesslog.check_access_format(
            '{duration_ms:.1f}ms {duration:.2f}s {status:d} {duration_ms:>9}'
            ' {duration}')
        log = accesslog.AccessLog(template)
        assert log.line('1.2.3.4', 'GET', '/x', 200, 3, 0.01234, 'P', 0,
                        '/x', 9, when=0) == (
            '12.3ms 0.01s 200    12.340 0.012340')

    def test_the_stamp_is_cached_per_second(self):
        log = accesslog.AccessLog(accesslog.DEFAULT_ACCESS_FORMAT)
        assert log.stamp(100.2) is log.stamp(100.9)
