"""Soak tests are left out of the default run.

Run them with:  python3 -m pytest -m soak tests/soak
Without '-m soak' every test marked @pytest.mark.soak is skipped.
"""
import pytest


def _soak_selected(config):
    expression = config.getoption('-m') or ''
    return 'soak' in expression and 'not soak' not in expression


def pytest_collection_modifyitems(config, items):
    if _soak_selected(config):
        return
    skip = pytest.mark.skip(
        reason='soak test: run with python3 -m pytest -m soak tests/soak')
    for item in items:
        if item.get_closest_marker('soak') is not None:
            item.add_marker(skip)
