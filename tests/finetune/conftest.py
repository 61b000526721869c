"""Shared fixtures for fine-tuning tests: the tiny PaliGemma 2 and batches of fake studies."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import pytest


@pytest.fixture(scope="session", autouse=True)
def compilation_cache(tmp_path_factory) -> Path:
    """Runs of the same tiny config compile the same programs: keep them on disk for the session."""
    from modeling.runtime import enable_compilation_cache

    path = tmp_path_factory.mktemp("xla-cache")
    enable_compilation_cache(path)
    return path


@pytest.fixture(scope="session")
def tiny_model():
    """(config, params, forward) of modeling's `tiny` preset (random weights)."""
    import jax

    import modeling

    config = modeling.PRESETS["tiny"].replace(text={"sliding_window": None, "vocab_size": 64})
    params = modeling.init_params(config, jax.random.PRNGKey(0))
    return config, params, partial(modeling.forward, config)


def _make_batch(config, batch: int = 4, length: int = 12, seed: int = 0) -> dict[str, np.ndarray]:
    """A batch laid out like the tokenizer's training examples: 4 prefix tokens, suffix, pad."""
    rng = np.random.default_rng(seed)
    size = config.image_size
    token_type = np.zeros((batch, length), np.int32)
    token_type[:, 4:] = 1
    input_mask = np.ones((batch, length), np.int32)
    input_mask[:, -2:] = 0  # two pads
    loss_mask = token_type * input_mask
    return {
        "pixel_values": rng.uniform(-1, 1, (batch, size, size, 3)).astype(np.float32),
        "input_ids": rng.integers(3, config.text.vocab_size, (batch, length)).astype(np.int32),
        "token_type_ids": token_type,
        "input_mask": input_mask,
        "loss_mask": loss_mask.astype(np.int32),
    }


@pytest.fixture(scope="session")
def make_batch():
    """make_batch(config, batch=4, length=12, seed=0) -> a batch dict of numpy arrays."""
    return _make_batch


@pytest.fixture(scope="session")
def synth_tree(tmp_path_factory) -> Path:
    """A small synthetic MIMIC-CXR tree (64 px images) with train, validate and test studies."""
    from radiology.synth import write_dataset

    root = tmp_path_factory.mktemp("synth") / "mimic"
    write_dataset(root, 40, seed=0, workers=1, size=(64, 64), progress=False)
    return root


def tiny_run_config(data: Path, workdir: Path, *overrides: str):
    """The `tiny` preset on `data`, writing to `workdir`, with extra `key=value` overrides."""
    from finetune.presets import load_config

    cfg = load_config("tiny", list(overrides))
    cfg.data.root = str(data)
    cfg.workdir = str(workdir)
    return cfg


@pytest.fixture(scope="session")
def tiny_config():
    """tiny_config(data, workdir, *overrides) -> TrainConfig of the `tiny` preset."""
    return tiny_run_config
