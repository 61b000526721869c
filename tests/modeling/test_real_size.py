"""Real sizes: a PaliGemma 2 3B checkpoint as transformers saves it loads in bfloat16 and
generates within 1.5x its bytes of resident memory (the full 3B: `bench/real_size.py`)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bench.real_size import checkpoint_bytes, measure

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_a_3b_checkpoint_saved_by_transformers_generates_within_1_5x_its_bytes(tmp_path):
    """The 3B-224 architecture (full widths, 257k-token embedding) with 8 decoder layers and 1
    vision layer, random bfloat16 weights written by transformers' own `save_pretrained` in
    shards; `load_pretrained(dtype="bfloat16")` and greedy generation run in a fresh process
    whose peak resident set (VmHWM, the interpreter and XLA's compiler included) stays
    within 1.5x the checkpoint's bytes: no float32 or second copy of the model ever exists.
    (With fewer layers the fixed part, the interpreter and one extra copy of the embedding
    while it loads, would dominate a small checkpoint.)"""
    out = tmp_path / "pg2-3b-8-layers"
    subprocess.run([sys.executable, str(ROOT / "bench" / "real_size.py"), str(out), "--make",
                    "--text-depth", "8", "--vision-depth", "1", "--shard", "1GB"],
                   check=True, cwd=ROOT, capture_output=True)
    assert len(list(out.glob("*.safetensors"))) > 1
    result = measure("ours", out, new_tokens=4, batch=1)
    assert "error" not in result, result
    assert len(result["tokens"]) == 4
    assert result["peak_rss"] <= 1.5 * checkpoint_bytes(out), (
        f"peak RSS {result['peak_rss'] / 1e9:.2f} GB for a "
        f"{checkpoint_bytes(out) / 1e9:.2f} GB checkpoint")
