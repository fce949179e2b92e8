"""The Examples in the public docstrings run and give what they show."""

import doctest
import importlib

import pytest

MODULES = ["fastxent.losses", "fastxent.keras", "fastxent._plan", "fastxent.sklearn",
           "fastxent.sklearn._estimator", "fastxent.sklearn._metrics"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0
    assert result.attempted > 0 or name != "fastxent.losses"
