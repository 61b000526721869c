"""Fixtures for the modeling tests: a tokenizer the tests train themselves, and transformers'
PaliGemma built from the same random weights as ours."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.models import PARITY_CONFIGS, REPORTS, random_params


@pytest.fixture(scope="session")
def tokenizer_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from modeling.tokenizer import train_tokenizer

    path = tmp_path_factory.mktemp("tok") / "tokenizer.model"
    return train_tokenizer(REPORTS * 10 + ["describe en", "findings"], path, vocab_size=300)


@pytest.fixture(scope="session", params=sorted(PARITY_CONFIGS))
def parity_case(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """(config, params, HF checkpoint dir, transformers model) for each parity configuration."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from modeling.convert import write_hf_checkpoint

    config = PARITY_CONFIGS[request.param]
    params = random_params(config, seed=ord(request.param))
    directory = tmp_path_factory.mktemp(f"hf_{request.param}")
    # small shards, so the loader must follow the index across files
    write_hf_checkpoint(directory, config, params, max_shard_bytes=256 * 1024)
    torch.manual_seed(0)
    model = transformers.PaliGemmaForConditionalGeneration.from_pretrained(
        directory, attn_implementation="eager", dtype=torch.float32).eval()
    return request.param, config, params, directory, model
