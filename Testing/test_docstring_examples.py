"""The ``Example:`` blocks of public docstrings run: each listed module's doctests pass, and it has some."""

import doctest
import importlib

import pytest

#: Modules whose docstring examples must run (add yours).
MODULES = [
    "reactkd.graph.regions",
    "reactkd.graph.settings",
    "reactkd.losses",
    "reactkd.images.masks",
    "reactkd.preprocessing",
    "reactkd.package.model_package",
    "reactkd.cohort.manifest",
    "reactkd.inference.classifier",
    "reactkd.scores",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.attempted > 0, f"{name} has no docstring examples"
    assert result.failed == 0, f"{result.failed} of {result.attempted} docstring examples of {name} failed"
