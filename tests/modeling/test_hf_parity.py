"""Parity with transformers' PaliGemmaForConditionalGeneration (torch CPU, float32, eager
attention) on the same random weights, directly and through a big_vision .npz."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import modeling
from modeling.convert import write_big_vision_npz
from modeling.runtime import PaliGemma
from tests.helpers.models import random_pixels

TOL = 1e-4
PROMPTS = [[2, 17, 33, 90, 41, 7, 108], [2, 250, 108], [2, 5, 6, 7, 8, 9, 10, 11, 12, 108]]


def _hf_logits(hf_model, config, pixels, ids, token_types):
    p = config.num_image_tokens
    n = ids.shape[0]
    hf_ids = np.concatenate([np.full((n, p), config.text.vocab_size), ids], 1)
    hf_types = np.concatenate([np.zeros((n, p), np.int64), token_types], 1)
    with torch.no_grad():
        out = hf_model(input_ids=torch.tensor(hf_ids, dtype=torch.long),
                       pixel_values=torch.tensor(pixels.transpose(0, 3, 1, 2)),
                       token_type_ids=torch.tensor(hf_types, dtype=torch.long),
                       attention_mask=torch.ones(hf_ids.shape, dtype=torch.long))
    # drop the rows transformers pads its vocabulary with
    return out.logits.numpy()[:, p:, : config.text.vocab_size]


def _hf_greedy(hf_model, config, pixels, prompt, steps):
    ids = torch.tensor([[config.text.vocab_size] * config.num_image_tokens + prompt])
    with torch.no_grad():
        out = hf_model.generate(input_ids=ids,
                                pixel_values=torch.tensor(pixels.transpose(0, 3, 1, 2)),
                                token_type_ids=torch.zeros_like(ids),
                                attention_mask=torch.ones_like(ids),
                                max_new_tokens=steps, do_sample=False,
                                eos_token_id=1, pad_token_id=0)
    return out[0, ids.shape[1]:].tolist()


def _prefix_suffix_batch(config, seed=0):
    rng = np.random.default_rng(seed)
    t = 14
    ids = rng.integers(4, config.text.vocab_size, (2, t)).astype(np.int32)
    ids[:, 0] = 2
    types = np.array([[0] * 6 + [1] * 8, [0] * 9 + [1] * 5])
    return random_pixels(config, 2, seed), ids, types


def test_logits_match_transformers_on_prefix_and_suffix(parity_case):
    _, config, params, _, hf_model = parity_case
    pixels, ids, types = _prefix_suffix_batch(config)
    assert config.num_image_tokens + ids.shape[1] > config.text.sliding_window
    ours = PaliGemma(config, params).logits(pixels, ids, types)
    ref = _hf_logits(hf_model, config, pixels, ids, types)
    assert ours.shape == ref.shape
    assert np.abs(ours - ref).max() <= TOL
    assert np.abs(ref).max() > 0.1  # the comparison is not between two near-zero tensors


def test_hf_directory_loads_to_the_same_model(parity_case):
    _, config, params, directory, hf_model = parity_case
    model = modeling.load_pretrained(directory)
    assert model.config == config
    pixels, ids, types = _prefix_suffix_batch(config, seed=1)
    ref = _hf_logits(hf_model, config, pixels, ids, types)
    assert np.abs(model.logits(pixels, ids, types) - ref).max() <= TOL


@pytest.mark.slow
def test_greedy_tokens_match_transformers_for_32_steps(parity_case):
    _, config, params, _, hf_model = parity_case
    pixels = random_pixels(config, len(PROMPTS), seed=3)
    ours = PaliGemma(config, params).generate(pixels, PROMPTS, 32)  # one ragged batch
    for i, prompt in enumerate(PROMPTS):
        ref = _hf_greedy(hf_model, config, pixels[i:i + 1], prompt, 32)
        eos = ref.index(1) if 1 in ref else len(ref)
        assert ours[i] == ref[:eos]
        assert len(set(ours[i])) > 4  # a real sequence, not one token repeated
    assert config.num_image_tokens + len(PROMPTS[0]) + 32 > 2 * config.text.sliding_window


@pytest.mark.slow
def test_big_vision_npz_of_the_same_weights_matches_transformers(parity_case, tmp_path):
    _, config, params, _, hf_model = parity_case
    npz = write_big_vision_npz(tmp_path / "pg.npz", params)
    model = modeling.load_pretrained(npz, config=config)
    pixels, ids, types = _prefix_suffix_batch(config, seed=2)
    ref = _hf_logits(hf_model, config, pixels, ids, types)
    assert np.abs(model.logits(pixels, ids, types) - ref).max() <= TOL
    pixels = random_pixels(config, len(PROMPTS), seed=4)
    ours = model.generate(pixels, PROMPTS, 32)[0]  # the batch shape compiled above: no new program
    ref_tokens = _hf_greedy(hf_model, config, pixels[:1], PROMPTS[0], 32)
    assert ours == ref_tokens[: ref_tokens.index(1) if 1 in ref_tokens else 32]
