"""The README's *Testing your app* examples, taken literally: its test
functions run against the ItemWorker and MyDispatcher of its *Workers and
pools* example, as a reader would paste them."""
import os
import re

import pytest

README = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), 'README.md')


def readme_blocks():
    with open(README, encoding='utf-8') as file:
        return re.findall(r'```python\n(.*?)```', file.read(), re.S)


def app_namespace():
    """The names the README's first app example defines (without its
    __main__ part, which would serve)."""
    app = next(block for block in readme_blocks()
               if 'class ItemWorker' in block and 'class MyDispatcher' in block)
    namespace = {}
    exec(app.split("if __name__ == '__main__':")[0], namespace)  # noqa: S102
    return namespace


@pytest.mark.parametrize('name', ['test_items', 'test_get_item'])
def test_the_readme_example_passes(name):
    namespace = app_namespace()
    block = next(block for block in readme_blocks()
                 if f'def {name}(' in block)
    exec(block, namespace)  # noqa: S102
    namespace[name]()
