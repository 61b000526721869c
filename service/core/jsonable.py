"""Plain JSON values (dict, list, str, number, bool, None) from what `evaluation` returns."""

from __future__ import annotations

import dataclasses
import enum
from typing import Any


def jsonable(value: Any) -> Any:
    """`value` as JSON-ready data: dataclasses and mappings become dicts, sequences and arrays
    lists, enums their value (or name), anything else unknown its `str`."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return jsonable(dataclasses.asdict(value))
    if isinstance(value, enum.Enum):
        return value.value if isinstance(value.value, str | int | float) else value.name
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(v) for v in value]
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)
