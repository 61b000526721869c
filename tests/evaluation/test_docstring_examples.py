"""The worked examples in the evaluation modules' docstrings run as written."""

from __future__ import annotations

import doctest
import importlib

import pytest


@pytest.mark.parametrize(
    "module_name",
    ["evaluation", "evaluation.nlg", "evaluation.tokenize", "evaluation.radgraph",
     "evaluation.clinical", "evaluation.registry", "evaluation.chexpert", "evaluation.extractor",
     "evaluation.extractor.rules"],
)
def test_docstring_examples_hold(module_name):
    module = importlib.import_module(module_name)
    failures, attempted = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert attempted > 0, f"{module_name} has no worked example"
    assert failures == 0
