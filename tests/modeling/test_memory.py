"""Device memory from XLA's memory analysis: sizes, and the generate batch a memory holds."""

from __future__ import annotations

import pytest

import modeling
from modeling.memory import (
    MemoryPlanError,
    format_bytes,
    generate_batch_for_memory,
    generate_memory,
    parse_bytes,
)

CONFIG = modeling.PRESETS["tiny"]


def test_memory_sizes_read_decimal_and_binary_units_and_refuse_anything_else() -> None:
    assert parse_bytes("80GB") == parse_bytes("80 gb") == parse_bytes("80G") == 80 * 10**9
    assert parse_bytes("16GiB") == 16 * 2**30
    assert parse_bytes("512MiB") == 512 * 2**20
    assert parse_bytes("1.5TB") == 1_500_000_000_000
    assert parse_bytes(1234) == parse_bytes("1234") == 1234
    assert parse_bytes(format_bytes(54.3e9)) == 54_300_000_000
    for bad in ("eighty", "80 GX", "-1GB", ""):
        with pytest.raises(MemoryPlanError, match="80GB"):
            parse_bytes(bad)


def test_the_generate_program_needs_more_memory_for_more_rows() -> None:
    one, four = (generate_memory(CONFIG, b, 16, 16) for b in (1, 4))
    assert one.arguments > 0 and one.temporaries > 0
    assert four.peak > one.peak


def test_the_chosen_generate_batch_is_the_largest_whose_compiled_program_fits() -> None:
    peaks = {b: generate_memory(CONFIG, b, 16, 16).peak for b in (1, 2, 4)}
    memory = int((peaks[2] + peaks[4]) / 2 / 0.9)  # 2 rows fit 90% of it, 4 do not
    assert generate_batch_for_memory(CONFIG, memory, prompt_len=16, new_tokens=16) == 2


def test_a_memory_too_small_for_one_row_is_refused_with_what_it_needs() -> None:
    with pytest.raises(MemoryPlanError, match="even one study does not fit"):
        generate_batch_for_memory(CONFIG, "1MB", prompt_len=16, new_tokens=16)
