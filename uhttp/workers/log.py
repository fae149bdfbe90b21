"""Log levels, the Logger every process uses, and the dispatcher's output.

Workers format a message only when its level passes, then hand the text to
a sink that carries it to the dispatcher; the dispatcher prints everything
through one place, `Dispatcher.on_log()`.
"""

import json as _json
import os as _os
import sys as _sys
import time as _time
import traceback as _traceback

LOG_DEBUG = 10
LOG_INFO = 20
LOG_WARNING = 30
LOG_ERROR = 40
LOG_CRITICAL = 50

LEVEL_NAMES = {
    LOG_DEBUG: 'DEBUG',
    LOG_INFO: 'INFO',
    LOG_WARNING: 'WARNING',
    LOG_ERROR: 'ERROR',
    LOG_CRITICAL: 'CRITICAL',
}

# syslog priorities, read by journald from a '<N>' line prefix
_SYSLOG_PRIORITY = {
    LOG_DEBUG: 7, LOG_INFO: 6, LOG_WARNING: 4, LOG_ERROR: 3, LOG_CRITICAL: 2}

_ANSI = {
    LOG_DEBUG: '\033[2m',
    LOG_WARNING: '\033[33m',
    LOG_ERROR: '\033[31m',
    LOG_CRITICAL: '\033[1;31m',
}
_ANSI_RESET = '\033[0m'

STYLE_PLAIN = 'plain'
STYLE_TTY = 'tty'
STYLE_SYSTEMD = 'systemd'
STYLE_JSON = 'json'
# Dispatcher(log_format=...) -> style; None detects it
FORMATS = {'json': STYLE_JSON, 'plain': STYLE_PLAIN, 'terminal': STYLE_TTY,
           'systemd': STYLE_SYSTEMD}
_TRACEBACK = '\nTraceback (most recent call last):'


def client_text(text):
    """Text a client sent (a request's path) for a log line: control
    characters written as \\xHH, so that a request can neither forge log
    lines nor send escape sequences to the terminal showing the log."""
    if not isinstance(text, str) or text.isprintable():
        return text
    return ''.join(char if char.isprintable() else
                   f'\\x{ord(char):02x}' if ord(char) < 0x100 else
                   f'\\u{ord(char):04x}' if ord(char) < 0x10000 else
                   f'\\U{ord(char):08x}' for char in text)


def level_name(level):
    """Name of a level; numbers between the named ones print as 'LEVEL n'."""
    return LEVEL_NAMES.get(level) or f'LEVEL {level}'


def check_level(level, where):
    """Validate a log level argument, returning it."""
    if isinstance(level, bool) or not isinstance(level, int):
        raise TypeError(f"{where} must be an int log level such as LOG_INFO, "
                        f"not {level!r}")
    if level < 0:
        raise ValueError(f"{where} must not be negative, got {level}")
    return level


_LOGGING_KEYWORDS = ('exc_info', 'stack_info', 'stacklevel', 'extra')


def format_message(message, args, kwargs):
    """Apply %-style args and/or {}-style kwargs; never raises.

    As in the standard library's logging, one mapping argument fills
    %(name)s fields, `exc_info` (True, an exception or an exc_info tuple)
    appends a traceback and `stack_info=True` the stack; `stacklevel` and
    `extra` are accepted and ignored. A message whose arguments do not fit
    is returned with them appended, so a mistake in a log call is visible
    but never costs the request.
    """
    text = message if isinstance(message, str) else _message_text(message)
    options = None
    if kwargs and any(key in kwargs for key in _LOGGING_KEYWORDS):
        kwargs = dict(kwargs)
        options = {key: kwargs.pop(key) for key in _LOGGING_KEYWORDS
                   if key in kwargs}
    try:
        if args:
            if (len(args) == 1 and isinstance(args[0], dict) and args[0]
                    and '%(' in text):
                args = args[0]
            text = text % args
        if kwargs:
            text = text.format(**kwargs)
    except Exception as err:  # pylint: disable=broad-except
        text = f"{text} [log formatting failed: {_safe_repr(err)}; " \
               f"args={_safe_repr(args)} kwargs={_safe_repr(kwargs)}]"
    if options:
        text += _traceback_text(options)
    return text


def _message_text(message):
    """str() of a message that is not a str, or what can be said of it
    when its __str__ raises."""
    try:
        return str(message)
    except Exception as err:  # pylint: disable=broad-except
        return (f"{_safe_repr(message)} [log message str() failed: "
                f"{_safe_repr(err)}]")


def _traceback_text(options):
    """The traceback and stack that logging's exc_info and stack_info ask
    for, as text to append ('' for none)."""
    parts = []
    info = options.get('exc_info')
    if info:
        if isinstance(info, BaseException):
            info = (type(info), info, info.__traceback__)
        elif not isinstance(info, tuple):
            info = _sys.exc_info()
        if info[0] is not None:
            parts.append(''.join(_traceback.format_exception(*info)))
    if options.get('stack_info'):
        parts.append('Stack (most recent call last):\n' + ''.join(
            _traceback.format_stack()[:-3]))
    return ''.join('\n' + part.rstrip() for part in parts)


def _safe_repr(value):
    try:
        return repr(value)
    except Exception:  # pylint: disable=broad-except
        return f'<{type(value).__name__} without a usable repr>'


class Logger:
    """Leveled logger: `log.info("x %d", 1)` or `log.info("x {n}", n=1)`.

    `sink(name, level, text)` receives every message at or above `level`.
    """

    __slots__ = ('name', 'level', '_sink')

    def __init__(self, name, sink=None, level=LOG_WARNING):
        self.name = name
        self.level = level
        self._sink = _stderr_sink if sink is None else sink

    @property
    def is_debug(self):
        return self.level <= LOG_DEBUG

    @property
    def is_info(self):
        return self.level <= LOG_INFO

    @property
    def is_warning(self):
        return self.level <= LOG_WARNING

    @property
    def is_error(self):
        return self.level <= LOG_ERROR

    @property
    def is_critical(self):
        return self.level <= LOG_CRITICAL

    def log(self, level, message, /, *args, **kwargs):
        if level < self.level:
            return
        self._sink(self.name, level, format_message(message, args, kwargs))

    def debug(self, message, /, *args, **kwargs):
        if LOG_DEBUG >= self.level:
            self._sink(self.name, LOG_DEBUG, format_message(message, args, kwargs))

    def info(self, message, /, *args, **kwargs):
        if LOG_INFO >= self.level:
            self._sink(self.name, LOG_INFO, format_message(message, args, kwargs))

    def warning(self, message, /, *args, **kwargs):
        if LOG_WARNING >= self.level:
            self._sink(self.name, LOG_WARNING, format_message(message, args, kwargs))

    warn = warning

    def error(self, message, /, *args, **kwargs):
        if LOG_ERROR >= self.level:
            self._sink(self.name, LOG_ERROR, format_message(message, args, kwargs))

    def critical(self, message, /, *args, **kwargs):
        if LOG_CRITICAL >= self.level:
            self._sink(self.name, LOG_CRITICAL, format_message(message, args, kwargs))

    fatal = critical

    def exception(self, message, /, *args, exc_info=True, **kwargs):
        """error() with the traceback of the exception being handled."""
        if LOG_ERROR >= self.level:
            self._sink(self.name, LOG_ERROR, format_message(
                message, args, dict(kwargs, exc_info=exc_info)))

    def __repr__(self):
        return f"Logger({self.name!r}, level={level_name(self.level)})"


def _stderr_sink(name, level, text):
    """Where a Logger without a sink writes: stderr, plainly."""
    try:
        _sys.stderr.write(render(STYLE_PLAIN, name, level, text))
    except (OSError, ValueError):
        pass


def detect_style(stream=None, environ=None):
    """Pick the output style for `stream`: systemd, tty or plain.

    systemd sets JOURNAL_STREAM to the device:inode of the journal socket
    it connected to stderr; when stderr still is that socket, journald reads
    '<N>' priority prefixes. Otherwise a terminal gets colours.
    """
    stream = _sys.stderr if stream is None else stream
    environ = _os.environ if environ is None else environ
    journal = environ.get('JOURNAL_STREAM')
    try:
        fileno = stream.fileno()
    except (AttributeError, OSError, ValueError):
        fileno = None
    if journal and fileno is not None:
        try:
            stat = _os.fstat(fileno)
            if journal == f'{stat.st_dev}:{stat.st_ino}':
                return STYLE_SYSTEMD
        except OSError:
            pass
    try:
        if stream.isatty():
            return STYLE_TTY
    except (AttributeError, OSError, ValueError):
        pass
    return STYLE_PLAIN


def check_format(log_format):
    """The style for Dispatcher(log_format=...): None (detect) or a name."""
    if log_format is None:
        return None
    style = FORMATS.get(log_format) if isinstance(log_format, str) else None
    if style is None:
        raise ValueError(f"Dispatcher log_format must be None or one of "
                         f"{', '.join(sorted(FORMATS))}, not {log_format!r}")
    return style


def split_traceback(message):
    """(message, traceback or None): a traceback our records carry after
    the message text is split off for structured output."""
    index = message.find(_TRACEBACK)
    if index < 0:
        return message, None
    return message[:index], message[index + 1:]


def render_json(name, level, message, now=None, source=None):
    """One JSON object per line: time, level, name, pid, message,
    traceback (and pool, worker_id for a worker's record)."""
    now = _time.time() if now is None else now
    stamp = _time.strftime('%Y-%m-%dT%H:%M:%S', _time.gmtime(now))
    text, traceback = split_traceback(message)
    record = {'time': f'{stamp}.{int(now % 1 * 1000):03d}Z',
              'level': level_name(level), 'name': name,
              'pid': (source or {}).get('pid', _os.getpid()),
              'message': text, 'traceback': traceback}
    if source and source.get('pool') is not None:
        record['pool'] = source['pool']
        record['worker_id'] = source.get('worker_id')
    return _json.dumps(record, ensure_ascii=False) + '\n'


def render(style, name, level, message, now=None, source=None):
    """Render one log record as text (with trailing newline)."""
    if style == STYLE_JSON:
        return render_json(name, level, message, now, source)
    if style == STYLE_SYSTEMD:
        prefix = f'<{_SYSLOG_PRIORITY.get(level, _syslog_nearest(level))}>'
        return ''.join(
            f'{prefix}{name}: {line}\n' for line in message.split('\n'))
    if now is None:
        now = _time.time()
    stamp = _time.strftime('%Y-%m-%d %H:%M:%S', _time.localtime(now))
    stamp += f'.{int(now % 1 * 1000):03d}'
    line = f'{stamp} {level_name(level):<8} {name}: {message}\n'
    if style == STYLE_TTY:
        colour = _ANSI.get(_nearest(level))
        if colour:
            return f'{colour}{line[:-1]}{_ANSI_RESET}\n'
    return line


def _nearest(level):
    """The named level at or below `level` (levels between names)."""
    best = LOG_DEBUG
    for known in LEVEL_NAMES:
        if known <= level and known > best:
            best = known
    return best


def _syslog_nearest(level):
    return _SYSLOG_PRIORITY[_nearest(level)]
