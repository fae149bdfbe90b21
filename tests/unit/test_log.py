"""log.py: message formatting, Logger levels, output style and rendering."""

import os
import re
import tempfile

import pytest

import uhttp.workers as workers
from uhttp.workers import log
from uhttp.workers.log import (
    LOG_CRITICAL, LOG_DEBUG, LOG_ERROR, LOG_INFO, LOG_WARNING, Logger,
    check_level, detect_style, format_message, render)

LEVELS = [LOG_DEBUG, LOG_INFO, LOG_WARNING, LOG_ERROR, LOG_CRITICAL]
SGR = re.compile(r'\x1b\[([0-9;]*)m')


def test_level_values():
    assert (LOG_DEBUG, LOG_INFO, LOG_WARNING, LOG_ERROR, LOG_CRITICAL) == (
        10, 20, 30, 40, 50)
    assert workers.LOG_WARNING == 30
    assert workers.Logger is Logger


# -- format_message ---------------------------------------------------------------

class TestFormatMessage:
    def test_percent_style(self):
        assert format_message('item %d of %s', (3, 'x'), {}) == 'item 3 of x'

    def test_percent_single_tuple_arg(self):
        assert format_message('v=%r', ((1, 2),), {}) == 'v=(1, 2)'

    def test_brace_style(self):
        assert format_message('item {id} {name!r}', (),
                              {'id': 4, 'name': 'n'}) == "item 4 'n'"

    def test_both_styles(self):
        assert format_message('%s and {b}', ('a',), {'b': 'B'}) == 'a and B'

    def test_no_args_leaves_text_alone(self):
        assert format_message('100% {done}', (), {}) == '100% {done}'

    def test_non_str_message(self):
        assert format_message(42, (), {}) == '42'
        assert format_message({'a': 1}, (), {}) == "{'a': 1}"

    def test_message_whose_str_fails(self):
        class Broken:
            def __str__(self):
                raise RuntimeError('no str')

            def __repr__(self):
                return '<Broken>'

        text = format_message(Broken(), (), {})
        assert text.startswith('<Broken> [log message str() failed: ')
        assert 'no str' in text

    def test_message_whose_str_and_repr_fail(self):
        class Broken:
            def __str__(self):
                raise RuntimeError('no str')

            def __repr__(self):
                raise RuntimeError('no repr')

        text = format_message(Broken(), ('a',), {'k': 1})
        assert text.startswith('<Broken without a usable repr> [log message')

    @pytest.mark.parametrize('message,args,kwargs', [
        ('count %d', ('many',), {}),
        ('two %s %s', ('one',), {}),
        ('none here', (1, 2), {}),
        ('{missing}', (), {'other': 1}),
        ('{0}', (), {'x': 1}),
        ('{unclosed', (), {'x': 1}),
        ('{"json": 1}', (), {'x': 1}),
    ])
    def test_bad_arguments_never_raise_and_keep_text(self, message, args,
                                                     kwargs):
        text = format_message(message, args, kwargs)
        assert isinstance(text, str)
        assert message in text
        for value in args:
            assert repr(value) in text

    def test_kwargs_failure_after_percent_keeps_text(self):
        text = format_message('%s then {bad', ('a',), {'x': 1})
        assert 'a then {bad' in text

    def test_failing_str_of_argument(self):
        class Bad:
            def __str__(self):
                raise RuntimeError('no str')

            def __repr__(self):
                return '<Bad>'

        text = format_message('value %s', (Bad(),), {})
        assert 'value %s' in text

    def test_argument_whose_str_and_repr_fail(self):
        class Broken:
            def __str__(self):
                raise RuntimeError('no str')

            def __repr__(self):
                raise RuntimeError('no repr')

        text = format_message('value %s', (Broken(),), {})
        assert 'value %s' in text
        text = format_message('value {v}', (), {'v': Broken()})
        assert 'value {v}' in text


# -- Logger ----------------------------------------------------------------------

class Sink:
    def __init__(self):
        self.records = []

    def __call__(self, name, level, text):
        self.records.append((name, level, text))


class TestLikeStandardLogging:
    """What a user of the standard library's logging writes works here."""

    def test_exception_logs_the_traceback_at_error(self):
        sink = Sink()
        logger = Logger('n', sink)
        try:
            {}['missing']
        except KeyError:
            logger.exception('lookup of %s failed', 'missing')
        (name, level, text), = sink.records
        assert level == LOG_ERROR
        assert text.startswith('lookup of missing failed\nTraceback')
        assert "KeyError: 'missing'" in text

    def test_exc_info_true_an_exception_or_a_tuple(self):
        sink = Sink()
        logger = Logger('n', sink, LOG_DEBUG)
        try:
            raise ValueError('bad')
        except ValueError as err:
            logger.error('a', exc_info=True)
            logger.warning('b', exc_info=err)
            logger.info('c', exc_info=(type(err), err, err.__traceback__))
        logger.info('d', exc_info=True)       # nothing being handled
        texts = [record[2] for record in sink.records]
        assert all('ValueError: bad' in text for text in texts[:3])
        assert texts[3] == 'd'

    def test_one_mapping_fills_named_fields(self):
        sink = Sink()
        logger = Logger('n', sink, LOG_DEBUG)
        logger.info('%(user)s paid %(amount)d', {'user': 'ann', 'amount': 3})
        logger.info('%s', {'a': 1})
        assert [r[2] for r in sink.records] == ['ann paid 3', "{'a': 1}"]

    def test_stack_info_extra_and_stacklevel(self):
        sink = Sink()
        logger = Logger('n', sink, LOG_DEBUG)
        logger.info('{n} items', n=2, extra={'x': 1}, stacklevel=2)
        logger.fatal('here', stack_info=True)
        assert sink.records[0][2] == '2 items'
        assert sink.records[1][1] == LOG_CRITICAL
        assert sink.records[1][2].startswith('here\nStack (most recent')
        assert 'test_stack_info_extra_and_stacklevel' in sink.records[1][2]


class TestLogger:
    def test_brace_fields_named_like_the_parameters(self):
        # {message}, {level} and {self} are fields like any other
        sink = Sink()
        logger = Logger('n', sink, LOG_DEBUG)
        logger.info('said {message}', message='hi')
        logger.warning('{self} {message}', self='me', message='m')
        logger.log(LOG_ERROR, 'level {level}', level=3)
        logger.critical('{message}', message='c')
        logger.debug('{message}', message='d')
        logger.error('{message}', message='e')
        try:
            raise ValueError('v')
        except ValueError:
            logger.exception('failed {message}', message='x')
        texts = [record[2] for record in sink.records]
        assert texts[:6] == ['said hi', 'me m', 'level 3', 'c', 'd', 'e']
        assert texts[6].startswith('failed x\nTraceback')

    def test_default_level_warning(self):
        sink = Sink()
        logger = Logger('n', sink)
        assert logger.level == LOG_WARNING
        logger.info('no')
        logger.warning('yes')
        assert sink.records == [('n', LOG_WARNING, 'yes')]

    @pytest.mark.parametrize('level', LEVELS)
    def test_filtering(self, level):
        sink = Sink()
        logger = Logger('w', sink, level)
        logger.debug('d')
        logger.info('i')
        logger.warning('w')
        logger.error('e')
        logger.critical('c')
        assert [record[1] for record in sink.records] == [
            known for known in LEVELS if known >= level]
        assert all(record[0] == 'w' for record in sink.records)

    def test_formats_only_when_passing(self):
        class Loud:
            def __str__(self):
                raise AssertionError('formatted a filtered message')

        logger = Logger('n', Sink(), LOG_ERROR)
        logger.debug('%s', Loud())
        logger.info('%s', Loud())
        logger.warning('%s', Loud())

    def test_formatting(self):
        sink = Sink()
        logger = Logger('n', sink, LOG_DEBUG)
        logger.info('a %d', 1)
        logger.info('b {x}', x=2)
        logger.error('c %d', 'bad')
        assert sink.records[0][2] == 'a 1'
        assert sink.records[1][2] == 'b 2'
        assert 'c %d' in sink.records[2][2]

    def test_generic_log(self):
        sink = Sink()
        logger = Logger('n', sink, LOG_INFO)
        logger.log(LOG_DEBUG, 'skip')
        logger.log(25, 'between %s', 'x')
        assert sink.records == [('n', 25, 'between x')]

    def test_warn_alias(self):
        sink = Sink()
        Logger('n', sink).warn('w')
        assert sink.records == [('n', LOG_WARNING, 'w')]

    @pytest.mark.parametrize('level,expected', [
        (LOG_DEBUG, (True, True, True, True)),
        (LOG_INFO, (False, True, True, True)),
        (LOG_WARNING, (False, False, True, True)),
        (LOG_ERROR, (False, False, False, True)),
        (LOG_CRITICAL, (False, False, False, False)),
    ])
    def test_is_properties(self, level, expected):
        logger = Logger('n', Sink(), level)
        assert (logger.is_debug, logger.is_info, logger.is_warning,
                logger.is_error) == expected

    def test_level_change_takes_effect(self):
        sink = Sink()
        logger = Logger('n', sink, LOG_ERROR)
        logger.info('no')
        logger.level = LOG_DEBUG
        assert logger.is_debug
        logger.info('yes')
        assert [record[2] for record in sink.records] == ['yes']


# -- detect_style -------------------------------------------------------------------

def journal_value(fd):
    info = os.fstat(fd)
    return f'{info.st_dev}:{info.st_ino}'


@pytest.fixture
def pipe_stream():
    read_fd, write_fd = os.pipe()
    stream = os.fdopen(write_fd, 'w')
    yield stream
    stream.close()
    os.close(read_fd)


@pytest.fixture
def tty_stream():
    try:
        master, slave = os.openpty()
    except OSError as err:
        pytest.skip(f'no pty: {err}')
    stream = os.fdopen(slave, 'w')
    yield stream
    stream.close()
    os.close(master)


class TestDetectStyle:
    def test_pipe_is_plain(self, pipe_stream):
        assert detect_style(pipe_stream, {}) == log.STYLE_PLAIN

    def test_file_is_plain(self):
        with tempfile.TemporaryFile('w') as stream:
            assert detect_style(stream, {}) == log.STYLE_PLAIN

    def test_tty(self, tty_stream):
        assert detect_style(tty_stream, {}) == log.STYLE_TTY

    def test_stream_without_fileno_is_plain(self):
        import io
        assert detect_style(io.StringIO(), {}) == log.STYLE_PLAIN

    def test_systemd_when_journal_stream_matches(self, pipe_stream):
        environ = {'JOURNAL_STREAM': journal_value(pipe_stream.fileno())}
        assert detect_style(pipe_stream, environ) == log.STYLE_SYSTEMD

    def test_systemd_wins_over_tty(self, tty_stream):
        environ = {'JOURNAL_STREAM': journal_value(tty_stream.fileno())}
        assert detect_style(tty_stream, environ) == log.STYLE_SYSTEMD

    def test_mismatched_journal_stream_is_not_systemd(self, pipe_stream):
        info = os.fstat(pipe_stream.fileno())
        for value in (f'{info.st_dev}:{info.st_ino + 1}',
                      f'{info.st_dev + 1}:{info.st_ino}', 'garbage', '1:2'):
            environ = {'JOURNAL_STREAM': value}
            assert detect_style(pipe_stream, environ) == log.STYLE_PLAIN

    def test_mismatched_journal_stream_on_tty_is_tty(self, tty_stream):
        environ = {'JOURNAL_STREAM': '0:0'}
        assert detect_style(tty_stream, environ) == log.STYLE_TTY

    def test_journal_stream_of_another_file(self, pipe_stream):
        with tempfile.TemporaryFile('w') as other:
            environ = {'JOURNAL_STREAM': journal_value(other.fileno())}
            assert detect_style(pipe_stream, environ) == log.STYLE_PLAIN

    def test_closed_stream(self):
        read_fd, write_fd = os.pipe()
        stream = os.fdopen(write_fd, 'w')
        stream.close()
        os.close(read_fd)
        assert detect_style(stream, {'JOURNAL_STREAM': '1:1'}) == log.STYLE_PLAIN


# -- render ----------------------------------------------------------------------------

NOW = 1700000000.25


class TestRender:
    @pytest.mark.parametrize('level,priority', [
        (LOG_CRITICAL, 2), (LOG_ERROR, 3), (LOG_WARNING, 4), (LOG_INFO, 6),
        (LOG_DEBUG, 7)])
    def test_systemd_priority(self, level, priority):
        text = render(log.STYLE_SYSTEMD, 'Pool[0]', level, 'hello', NOW)
        assert text.endswith('\n')
        assert text.startswith(f'<{priority}>')
        assert 'Pool[0]' in text and 'hello' in text
        assert '\x1b' not in text

    def test_systemd_prefix_on_every_line(self):
        text = render(log.STYLE_SYSTEMD, 'w', LOG_ERROR,
                      'Traceback:\n  line 1\n  line 2', NOW)
        lines = text.split('\n')
        assert lines[-1] == ''
        lines = lines[:-1]
        assert len(lines) == 3
        assert all(line.startswith('<3>') for line in lines)
        assert 'line 2' in lines[2]

    def test_systemd_level_between_names(self):
        text = render(log.STYLE_SYSTEMD, 'w', 35, 'x', NOW)
        assert text.startswith('<4>')

    def test_plain(self):
        for level, name in [(LOG_DEBUG, 'DEBUG'), (LOG_INFO, 'INFO'),
                            (LOG_WARNING, 'WARNING'), (LOG_ERROR, 'ERROR'),
                            (LOG_CRITICAL, 'CRITICAL')]:
            text = render(log.STYLE_PLAIN, 'Pool[1]', level, 'msg text', NOW)
            assert text.endswith('msg text\n')
            assert text.count('\n') == 1
            assert name in text
            assert 'Pool[1]' in text
            assert '\x1b' not in text
            assert not text.startswith('<')

    def test_plain_timestamp(self):
        text = render(log.STYLE_PLAIN, 'n', LOG_INFO, 'm', NOW)
        assert re.match(r'\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.250 ', text)

    def test_plain_default_time(self):
        text = render(log.STYLE_PLAIN, 'n', LOG_INFO, 'm')
        assert re.match(r'\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} ', text)

    def test_plain_unnamed_level(self):
        text = render(log.STYLE_PLAIN, 'n', 25, 'm', NOW)
        assert '25' in text

    @staticmethod
    def colour(text):
        found = SGR.match(text)
        assert found, f'no colour at start of {text!r}'
        return set(found.group(1).split(';'))

    def test_tty_critical_bold_red(self):
        text = render(log.STYLE_TTY, 'n', LOG_CRITICAL, 'boom', NOW)
        assert {'1', '31'} <= self.colour(text)

    def test_tty_error_red(self):
        text = render(log.STYLE_TTY, 'n', LOG_ERROR, 'bad', NOW)
        codes = self.colour(text)
        assert '31' in codes and '1' not in codes

    def test_tty_warning_yellow(self):
        text = render(log.STYLE_TTY, 'n', LOG_WARNING, 'hm', NOW)
        assert '33' in self.colour(text)

    def test_tty_debug_dim(self):
        text = render(log.STYLE_TTY, 'n', LOG_DEBUG, 'dbg', NOW)
        assert '2' in self.colour(text)

    @pytest.mark.parametrize('level', LEVELS)
    def test_tty_text_and_reset(self, level):
        text = render(log.STYLE_TTY, 'Pool[2]', level, 'the message', NOW)
        assert text.endswith('\n')
        assert 'the message' in text and 'Pool[2]' in text
        assert log.level_name(level) in text
        if '\x1b' in text:
            assert text.rstrip('\n').endswith('\x1b[0m')

    def test_tty_info_uncoloured_or_neutral(self):
        text = render(log.STYLE_TTY, 'n', LOG_INFO, 'info', NOW)
        found = SGR.match(text)
        if found:
            assert not ({'31', '33', '2', '1'} & set(found.group(1).split(';')))


# -- check_level ---------------------------------------------------------------------

class TestCheckLevel:
    @pytest.mark.parametrize('level', LEVELS + [0, 25, 100])
    def test_valid(self, level):
        assert check_level(level, 'log_level') == level

    @pytest.mark.parametrize('level', ['INFO', 10.0, None, True, [10]])
    def test_type_errors_name_the_parameter(self, level):
        with pytest.raises(TypeError) as info:
            check_level(level, 'WorkerPool log_level')
        assert 'WorkerPool log_level' in str(info.value)

    def test_negative(self):
        with pytest.raises(ValueError) as info:
            check_level(-1, 'Dispatcher log_level')
        assert 'Dispatcher log_level' in str(info.value)


def test_client_text_escapes_control_characters():
    from uhttp.workers.log import client_text
    assert client_text('/api/item/42') == '/api/item/42'
    assert client_text('/a\r\nb\x1b[2J\x00') == '/a\\x0d\\x0ab\\x1b[2J\\x00'
    assert client_text('/caf\u00e9/\u2028') == '/caf\u00e9/\\u2028'
    assert client_text(None) is None
