"""The worked examples in the radiology modules' docstrings are true."""

from __future__ import annotations

import doctest
import importlib

import pytest


@pytest.mark.parametrize(
    "module",
    ["radiology.reports", "radiology.deid", "radiology.dicom.pixels", "radiology.dicom.parse",
     "radiology.images", "radiology.synth.dataset", "radiology.synth.findings"],
)
def test_docstring_examples(module: str):
    result = doctest.testmod(importlib.import_module(module))
    assert result.attempted > 0 and result.failed == 0
