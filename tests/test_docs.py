"""The Examples in the public docstrings run and give what they show."""

import doctest
import importlib

import pytest

MODULES = ["fastxent.losses", "fastxent._dispatch", "fastxent.sklearn",
           "fastxent.sklearn._estimator", "fastxent.sklearn._metrics", "fastxent._hessian"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0
    assert result.attempted > 0 or name != "fastxent.losses"
