"""The command line: `uhttp-workers TARGET` (or `python -m uhttp.workers`).

`uhttp-workers worker module:WorkerClass --broker URL --pool NAME
--workers N` runs worker processes of a remote pool instead (see
workercommand.py).

TARGET is `module:attribute`, imported with the working directory on the
path: a Dispatcher subclass (built with the settings of the command line
and the config file as keyword arguments), a Dispatcher instance, or a
callable returning one. For all three, the command line's settings win
over the config file's, which win over what the app declared.

Exit codes: 0 after a clean shutdown (or a good --check-config), 1 for a
bad configuration, 2 for a usage error, 3 when TARGET cannot be imported
or is not a dispatcher.
"""

import argparse as _argparse
import importlib as _importlib
import os as _os
import sys as _sys
import traceback as _traceback

from . import configfile as _configfile
from . import upgrade as _upgrade
from .config import UNLIMITED_REQUESTS
from .dispatcher import Dispatcher, core_of

EXIT_OK = 0
EXIT_CONFIG = 1
EXIT_USAGE = 2
EXIT_TARGET = 3


class TargetError(Exception):
    """TARGET cannot be imported or is not a dispatcher (exit code 3)."""


class ConfigError(Exception):
    """The configuration has problems (exit code 1); `problems` lists them."""

    def __init__(self, problems):
        super().__init__('; '.join(problems))
        self.problems = list(problems)


def parser():
    from . import __version__  # pylint: disable=import-outside-toplevel
    parse = _argparse.ArgumentParser(
        prog='uhttp-workers',
        description='Run a uhttp-workers dispatcher: TARGET is module:attribute '
                    '(a Dispatcher subclass, instance, or a callable returning one).',
        epilog='uhttp-workers worker module:WorkerClass --broker URL runs '
               'worker processes of a remote pool instead (see: uhttp-workers '
               'worker --help).')
    parse.add_argument('target', metavar='TARGET')
    parse.add_argument('--host', help='listen address')
    parse.add_argument('--port', type=int, help='listen port (0: a free one)')
    parse.add_argument('--workers', action='append', default=[],
                       metavar='POOL=N', help='worker processes of a pool '
                       '(by pool or worker class name); repeatable')
    parse.add_argument('--config', metavar='FILE',
                       help='TOML file: [dispatcher] and [pools.NAME] tables')
    parse.add_argument('--log-level', help='debug, info, warning, error, '
                       'critical, or a number')
    parse.add_argument('--access-log', action='store_true',
                       help='log one line per finished request')
    parse.add_argument('--spool-dir', metavar='DIR',
                       help='where request bodies above the spool threshold '
                            'are written as they arrive (default: the '
                            'system\'s temporary directory)')
    parse.add_argument('--spool-threshold', type=int, metavar='BYTES',
                       help='bodies above this go to a file (0: every body)')
    parse.add_argument('--pid-file', metavar='FILE',
                       help='write the dispatcher\'s pid here while it runs')
    parse.add_argument('--check-config', action='store_true',
                       help='load and check everything, print each problem, '
                            'exit 0 or 1; binds no port')
    parse.add_argument('--print-config', action='store_true',
                       help='print the effective configuration as TOML')
    parse.add_argument('--version', action='version',
                       version=f'uhttp-workers {__version__}')
    return parse


def load_target(spec):
    """The object TARGET names (TargetError when there is none)."""
    module_name, sep, attribute = spec.partition(':')
    if not sep or not module_name or not attribute:
        raise TargetError(f"TARGET must be module:attribute, not {spec!r}")
    if _os.getcwd() not in _sys.path and '' not in _sys.path:
        _sys.path.insert(0, _os.getcwd())
    try:
        module = _importlib.import_module(module_name)
    except Exception as err:  # pylint: disable=broad-except
        raise TargetError(f"cannot import module {module_name!r}: "
                          f"{type(err).__name__}: {err}"
                          f"{raised_at(err)}") from err
    value = module
    for part in attribute.split('.'):
        try:
            value = getattr(value, part)
        except AttributeError:
            raise TargetError(f"module {module_name!r} has no attribute "
                              f"{attribute!r}") from None
    return value


def raised_at(err):
    """' (file.py, line N)': where in the app's code an import failed (the
    innermost frame outside the import machinery), or '' (a SyntaxError
    names its place itself)."""
    if isinstance(err, SyntaxError):
        return ''
    machinery = (__file__, _importlib.__file__)
    frames = [frame for frame in _traceback.extract_tb(err.__traceback__)
              if not frame.filename.startswith('<')
              and frame.filename not in machinery]
    if not frames:
        return ''
    return f" ({frames[-1].filename}, line {frames[-1].lineno})"


def command_line_overrides(args):
    """Overrides from the flags, with their problems."""
    overrides = _configfile.Overrides()
    problems = []
    if args.host is not None:
        overrides.dispatcher['address'] = args.host
    if args.access_log:
        overrides.dispatcher['access_log'] = True
    for name in ('port', 'spool_dir', 'spool_threshold'):
        value = getattr(args, name)
        if value is not None:
            try:
                overrides.dispatcher[name] = _configfile.check_dispatcher_key(
                    name, value, '--' + name.replace('_', '-'))[1]
            except (TypeError, ValueError) as err:
                problems.append(f"--{name.replace('_', '-')}: {err}")
    if args.log_level is not None:
        try:
            value = args.log_level
            overrides.dispatcher['log_level'] = _configfile.level(
                int(value) if _is_number(value) else value, '--log-level')
        except (TypeError, ValueError) as err:
            problems.append(str(err))
    for item in args.workers:
        name, sep, count = item.partition('=')
        if not sep or not name or not _is_number(count.strip()):
            problems.append(f"--workers {item!r}: expected POOL=N")
            continue
        overrides.pools.setdefault(name.strip(), {})['num_workers'] = int(count)
        overrides.pool_sources[name.strip()] = f"--workers {item!r}"
    return overrides, problems


def _is_number(text):
    """ASCII digits only: '²'.isdigit() is True, and int('²') raises."""
    return text.isascii() and text.isdigit()


def build(target, overrides):
    """The Dispatcher TARGET names, with `overrides` applied."""
    if isinstance(target, type):
        if not issubclass(target, Dispatcher):
            raise TargetError(f"{target!r} is not a Dispatcher subclass")
        dispatcher = _construct(target, overrides.dispatcher)
    elif isinstance(target, Dispatcher):
        dispatcher = target
    elif callable(target):
        try:
            dispatcher = target()
        except Exception as err:  # pylint: disable=broad-except
            raise ConfigError([failed("TARGET factory", err)]) from err
        if not isinstance(dispatcher, Dispatcher):
            raise TargetError(f"TARGET returned {dispatcher!r}, not a Dispatcher")
    else:
        raise TargetError(f"{target!r} is not a Dispatcher, a Dispatcher "
                          "subclass or a callable returning one")
    apply(dispatcher, overrides)
    return dispatcher


def _construct(cls, kwargs):
    try:
        return cls(**kwargs)
    except TypeError as err:
        if kwargs and 'unexpected keyword argument' in str(err):
            try:
                return cls()  # settings are applied afterwards
            except (TypeError, ValueError) as again:
                raise ConfigError([f"{cls.__name__}(): {again}"]) from again
            except Exception as again:  # pylint: disable=broad-except
                raise ConfigError([failed(f"{cls.__name__}()", again)]) from again
        raise ConfigError([f"{cls.__name__}(): {err}"]) from err
    except ValueError as err:
        raise ConfigError([f"{cls.__name__}(): {err}"]) from err
    except Exception as err:  # pylint: disable=broad-except
        # the app's own (a missing environment variable, a database down)
        raise ConfigError([failed(f"{cls.__name__}()", err)]) from err


def failed(what, err):
    """What the app's code raised, said on one line, with where."""
    return f"{what} failed: {type(err).__name__}: {err}{raised_at(err)}"


def apply(dispatcher, overrides):
    """Apply Dispatcher and pool overrides; ConfigError lists the problems."""
    core = core_of(dispatcher)
    problems = []
    if overrides.dispatcher:
        try:
            core.configure(**overrides.dispatcher)
        except (TypeError, ValueError) as err:
            problems.append(str(err))
    pools = {pool.name: pool for pool in core.pools}
    for name in (set(overrides.pools) | set(overrides.pool_kwargs)
                 | set(overrides.pool_sources)):
        pool = pools.get(name)
        if pool is None:
            problems.append(f"{unknown_pool(overrides, name)} (pools: "
                            f"{', '.join(pools) or 'none'})")
            continue
        values = dict(overrides.pools.get(name, {}))
        if 'num_workers' in values:  # 0 is for a pool with a broker only
            try:
                pool.configure(num_workers=values.pop('num_workers'))
            except (TypeError, ValueError) as err:
                problems.append(f"{overrides.pool_sources.get(name, name)} "
                                f"num_workers: {err}")
        try:
            pool.configure(**values)
        except (TypeError, ValueError) as err:
            problems.append(f"pool {name}: {err}")
        pool.kwargs.update(overrides.pool_kwargs.get(name, {}))
    if problems:
        raise ConfigError(problems)


def unknown_pool(overrides, name):
    """The problem of a pool name no pool has, saying where it was named."""
    where = overrides.pool_sources.get(name)
    return f"{where + ': ' if where else ''}no pool named {name!r}"


def effective_config(dispatcher):
    core = core_of(dispatcher)
    settings = core.settings
    values = {'address': settings.address, 'port': settings.port,
              'max_pending': settings.max_pending,
              'shutdown_timeout': settings.shutdown_timeout,
              'log_level': settings.log_level}
    for key in ('use_logging', 'log_format', 'access_log', 'metrics_path',
                'dashboard_path', 'ws_ping_interval', 'ws_max_message_size',
                'ws_deflate'):
        values[key] = settings.given.get(key)
    values['ws_origins'] = (None if settings.ws_origins is None
                            else sorted(settings.ws_origins))
    values.update(settings.http_options)
    if values.get('keep_alive_max_requests') == UNLIMITED_REQUESTS:
        values['keep_alive_max_requests'] = None   # its default: unlimited
    if settings.static:
        values['static_routes'] = {mount.prefix: static_entry(mount)
                                   for mount in settings.static}
    pools = {pool.name: (pool.settings(), dict(pool.kwargs))
             for pool in core.pools}
    return _configfile.dump(values, pools)


def static_entry(mount):
    """A static mount as static_routes takes it: its path, or a table when
    it has headers or is authoritative."""
    if not mount.headers and not mount.authoritative:
        return mount.root
    entry = {'path': mount.root}
    if mount.headers:
        entry['headers'] = dict(mount.headers)
    if mount.authoritative:
        entry['authoritative'] = True
    return entry


def anchor_paths(values):
    """The directories a config file or a flag names (`spool_dir`, the
    roots of `static_routes`) are of the directory the command started
    in: made absolute before the app is imported, which may change it.
    Values of the wrong type are left for the Dispatcher to refuse."""
    if isinstance(values.get('spool_dir'), str):
        values['spool_dir'] = _os.path.abspath(values['spool_dir'])
    routes = values.get('static_routes')
    if isinstance(routes, dict):
        values['static_routes'] = {
            prefix: _anchored_mount(entry) for prefix, entry in routes.items()}


def _anchored_mount(entry):
    if isinstance(entry, str):
        return _os.path.abspath(entry)
    if isinstance(entry, dict) and isinstance(entry.get('path'), str):
        return {**entry, 'path': _os.path.abspath(entry['path'])}
    return entry


def prepare(args):
    """(dispatcher) from parsed args; raises TargetError or ConfigError."""
    overrides = _configfile.Overrides()
    problems = []
    if args.config:
        loaded, problems = _configfile.load(args.config)
        overrides.update(loaded)
    flags, flag_problems = command_line_overrides(args)
    problems.extend(flag_problems)
    overrides.update(flags)
    anchor_paths(overrides.dispatcher)  # before the app may change directory
    target = load_target(args.target)
    try:
        dispatcher = build(target, overrides)  # what is valid, checked too
    except TargetError as err:  # naming the module and the attribute
        raise TargetError(f"{args.target}: {err}") from None
    except ConfigError as err:
        raise ConfigError(problems + err.problems) from None
    if problems:
        raise ConfigError(problems)
    return dispatcher


def main(argv=None):
    argv = _sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] == 'worker':  # remote pool workers (workercommand.py)
        from . import workercommand  # pylint: disable=import-outside-toplevel
        return workercommand.main(argv[1:])
    try:
        args = parser().parse_args(argv)
    except SystemExit as exit_:
        return EXIT_OK if exit_.code in (0, None) else EXIT_USAGE
    for name in ('config', 'pid_file'):   # of this directory, should the
        if getattr(args, name):             # app change it (reload, exit)
            setattr(args, name, _os.path.abspath(getattr(args, name)))
    try:
        dispatcher = prepare(args)
    except TargetError as err:
        print(f"uhttp-workers: {err}", file=_sys.stderr)
        _upgrade.report_failure(err)   # a hot upgrade's new copy: to the old
        return EXIT_TARGET
    except ConfigError as err:
        for problem in err.problems:
            print(f"uhttp-workers: configuration: {problem}", file=_sys.stderr)
        _upgrade.report_failure('configuration: ' + '; '.join(err.problems))
        return EXIT_CONFIG
    if args.check_config:
        problem = args.pid_file and pid_file_problem(args.pid_file)
        if problem:   # what serve() would refuse
            print(f"uhttp-workers: configuration: --pid-file "
                  f"{args.pid_file}: {problem}", file=_sys.stderr)
            return EXIT_CONFIG
        print("uhttp-workers: configuration OK", file=_sys.stderr)
        return EXIT_OK
    if args.print_config:
        _sys.stdout.write(effective_config(dispatcher))
        return EXIT_OK
    if args.config:
        core_of(dispatcher).control.reload_source = lambda core: reread(args, core)
    return serve(dispatcher, args.pid_file)


def reread(args, core):
    """On a reload: the config file read again; pool settings (sizes,
    timeouts, log levels) and the dispatcher's log level applied. A file
    with problems raises ConfigError and changes nothing (every pool's
    settings are checked before any is applied); a changed
    dispatcher setting other than log_level waits for the next start."""
    loaded, problems = _configfile.load(args.config)
    flags, _ = command_line_overrides(args)
    loaded.update(flags)          # the command line still wins
    pools = {pool.name: pool for pool in core.pools}
    for name in (set(loaded.pools) | set(loaded.pool_kwargs)
                 | set(loaded.pool_sources)):
        if name not in pools:
            problems.append(unknown_pool(loaded, name))
    for name, values in loaded.pools.items():
        values = dict(values)
        size = values.pop('num_workers', None)
        where = loaded.pool_sources.get(name, name)
        if name in pools and size is not None and (
                size != pools[name].num_workers):
            try:  # what resize() takes (0 only at start, for a broker's)
                _configfile.POOL_SETTINGS['num_workers'](size)
            except (TypeError, ValueError) as err:
                problems.append(f"{where} num_workers: {err}")
        try:  # together, as configure() takes them (stuck > heartbeat)
            if name in pools:
                pools[name].check_settings(values)
        except (TypeError, ValueError) as err:
            problems.append(f"{where}: {err}")
    if problems:
        raise ConfigError(problems)
    given = core.settings.given
    for key, value in loaded.dispatcher.items():
        if key != 'log_level' and given.get(key) != value:
            core.log.warning("reload: [dispatcher] %s changed; it takes "
                             "effect at the next start", key)
    if 'log_level' in loaded.dispatcher:
        core.log.level = core.log_level = loaded.dispatcher['log_level']
    for name, values in loaded.pools.items():
        values = dict(values)
        size = values.pop('num_workers', None)
        pools[name].configure(**values)
        if size is not None and size != pools[name].num_workers:
            pools[name].resize(size)
    for name, kwargs in loaded.pool_kwargs.items():
        pools[name].kwargs.update(kwargs)


def serve(dispatcher, pid_file):
    if pid_file:
        problem = pid_file_problem(pid_file)
        if problem:
            print(f"uhttp-workers: cannot write --pid-file {pid_file}: "
                  f"{problem}", file=_sys.stderr)
            _upgrade.report_failure(f"cannot write --pid-file {pid_file}: "
                                    f"{problem}")
            return EXIT_CONFIG
        core_of(dispatcher).control.pid_file = pid_file  # once listening
    try:
        dispatcher.run()
    except OSError as err:
        print(f"uhttp-workers: {err}", file=_sys.stderr)
        _upgrade.report_failure(err)
        return EXIT_CONFIG
    finally:
        if pid_file:
            remove_pid_file(pid_file)
    return EXIT_OK


def pid_file_problem(pid_file):
    """Why the pid file could not be written (checked before starting; it is
    written once the dispatcher listens), or None."""
    if _os.path.isdir(pid_file):
        return "it is a directory"
    if _os.path.exists(pid_file):
        return None if _os.access(pid_file, _os.W_OK) else "permission denied"
    folder = _os.path.dirname(_os.path.abspath(pid_file))
    if not _os.path.isdir(folder):
        return f"no directory {folder}"
    return None if _os.access(folder, _os.W_OK | _os.X_OK) else (
        f"permission denied in {folder}")


def remove_pid_file(pid_file):
    """Remove the pid file if it still names this process: after a hot
    upgrade it names the new dispatcher, which goes on serving."""
    try:
        with open(pid_file, encoding='ascii') as file:
            if file.read().strip() != str(_os.getpid()):
                return
        _os.unlink(pid_file)
    except (OSError, ValueError):
        pass
