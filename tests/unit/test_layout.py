"""The layout holds: each module of the library is of a readable size, no
function runs on for pages, and no module reaches into another module's
private names (uhttp-server's, used by the HTTP glue, are checked by
test_uhttp_server_compat.py)."""

import ast
import os

import pytest

PACKAGE = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), 'uhttp', 'workers')
MAX_MODULE_LINES = 550
MAX_FUNCTION_LINES = 70
# private names the spec documents (they are the user's API), and the
# standard library's os._exit
DOCUMENTED = {'_accepting', '_pending', '_pools', '_find_pool', '_exit',
              '_replace', '_asdict', '_fields'}  # and namedtuple's API


def modules():
    for directory, _, names in os.walk(PACKAGE):
        for name in sorted(names):
            if name.endswith('.py'):
                path = os.path.join(directory, name)
                yield os.path.relpath(path, PACKAGE), path


def parse(path):
    with open(path, encoding='utf-8') as file:
        return ast.parse(file.read())


def own_names(tree):
    """Private names this module defines: attributes it sets, class
    members, functions."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.arg):
            names.add(node.arg)
    return names


@pytest.mark.parametrize('name,path', list(modules()))
def test_module_and_function_sizes(name, path):
    with open(path, encoding='utf-8') as file:
        lines = file.read().count('\n')
    assert lines <= MAX_MODULE_LINES, f"{name} has {lines} lines"
    for node in ast.walk(parse(path)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            length = node.end_lineno - node.lineno + 1
            assert length <= MAX_FUNCTION_LINES, (
                f"{name}: {node.name}() has {length} lines")


@pytest.mark.parametrize('name,path', [
    (name, path) for name, path in modules() if not name.startswith('http')])
def test_no_module_reaches_into_another_modules_privates(name, path):
    tree = parse(path)
    own = own_names(tree)
    foreign = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute):
            continue
        attr = node.attr
        if not attr.startswith('_') or attr.startswith('__'):
            continue
        base = node.value
        if isinstance(base, ast.Name) and base.id in ('self', 'cls'):
            continue
        if attr in own or attr in DOCUMENTED:
            continue
        foreign.append(f"line {node.lineno}: {ast.unparse(node)}")
    assert not foreign, f"{name} reaches into private names: {foreign}"
