"""Jit generation: the KV-cached decode loop agrees with the full forward pass, ragged batches,
EOS, sampling, beam search and a bounded number of compiled programs."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from modeling.runtime import GenerationError, PaliGemma
from tests.helpers.models import CONFIG_A, random_params, random_pixels

PROMPTS = [[2, 17, 33, 90, 41, 7, 108], [2, 250, 108], [2, 5, 6, 7, 8, 9, 10, 11, 12, 108]]
# One bucket each, shared by all tests here (and the parity tests), so few programs compile.
BUCKETS = dict(batch_buckets=(4,), prompt_buckets=(16,), new_token_buckets=(32,))


@pytest.fixture(scope="module")
def model() -> PaliGemma:
    return PaliGemma(CONFIG_A, random_params(CONFIG_A, seed=ord("A")), **BUCKETS)


@pytest.fixture(scope="module")
def pixels() -> np.ndarray:
    return random_pixels(CONFIG_A, len(PROMPTS), seed=3)


def _teacher_forced(model: PaliGemma, pixels: np.ndarray, prompt: list[int], new: list[int]):
    """Logits of the full forward pass that predicted each new token (padded to one shape, so
    one program serves every call)."""
    n = len(prompt) + len(new)
    ids = np.zeros((1, 48), np.int32)
    ids[0, :n] = prompt + new
    types = np.ones((1, 48), np.int32)
    types[0, : len(prompt)] = 0
    mask = np.arange(48)[None] < n
    logits = model.logits(pixels[None], ids, types, input_mask=mask)[0]
    return logits[len(prompt) - 1: n - 1]


def _logp(model, pixels, prompt, new) -> float:
    logits = _teacher_forced(model, pixels, prompt, new)
    logp = jax.nn.log_softmax(logits, axis=-1)
    return float(np.sum(np.take_along_axis(np.asarray(logp), np.array(new)[:, None], 1)))


def test_greedy_decode_equals_argmax_of_the_full_forward_pass(model, pixels):
    out = model.generate(pixels, PROMPTS, 32)
    for i, prompt in enumerate(PROMPTS):
        assert len(out[i]) == 32
        # window 8 < 4 image + prompt + 32 tokens: the ring-buffer caches must wrap correctly
        assert _teacher_forced(model, pixels[i], prompt, out[i]).argmax(-1).tolist() == out[i]


def test_one_layer_model_decodes_the_argmax_of_its_forward_pass(pixels):
    """The prefill runs its last layer apart from a scan over the others: with one layer that
    scan is empty."""
    import dataclasses

    config = dataclasses.replace(CONFIG_A, text=dataclasses.replace(CONFIG_A.text, depth=1))
    one = PaliGemma(config, random_params(config, seed=1), **BUCKETS)
    out = one.generate(pixels, PROMPTS, 12)
    for i, prompt in enumerate(PROMPTS):
        assert _teacher_forced(one, pixels[i], prompt, out[i]).argmax(-1).tolist() == out[i]


def test_ragged_batch_gives_each_row_what_it_gets_alone(model, pixels):
    batch = model.generate(pixels, PROMPTS, 12)
    alone = [model.generate(pixels[i:i + 1], [p], 12)[0] for i, p in enumerate(PROMPTS)]
    assert batch == alone


def test_generation_stops_at_eos_and_excludes_it(model, pixels):
    full = model.generate(pixels[:1], PROMPTS[:1], 20)[0]
    k = next(i for i, tok in enumerate(full) if tok not in full[:i] and i > 0)
    stopper = PaliGemma(model.config, model.params, eos_id=full[k], **BUCKETS)
    assert stopper.generate(pixels[:1], PROMPTS[:1], 20)[0] == full[:k]


def test_max_new_tokens_is_respected_below_the_bucket(model, pixels):
    assert [len(t) for t in model.generate(pixels, PROMPTS, 5)] == [5, 5, 5]


def test_sampling_is_reproducible_per_seed_and_varies_across_seeds(model, pixels):
    run = lambda seed: model.generate(pixels, PROMPTS, 16, "sample", seed=seed, temperature=2.0)  # noqa: E731
    assert run(1) == run(1)
    assert run(1) != run(2)


def test_top_k_of_one_is_greedy(model, pixels):
    greedy = model.generate(pixels, PROMPTS, 16)
    assert model.generate(pixels, PROMPTS, 16, "sample", top_k=1, seed=5) == greedy


def test_tiny_top_p_is_greedy(model, pixels):
    greedy = model.generate(pixels, PROMPTS, 16)
    assert model.generate(pixels, PROMPTS, 16, "sample", top_p=1e-6, seed=5) == greedy


@pytest.mark.slow
def test_beam_search_finds_a_sequence_at_least_as_likely_as_greedy(model, pixels):
    prompt = PROMPTS[0]
    no_eos = PaliGemma(model.config, model.params, eos_id=-1, **BUCKETS)  # compare full lengths
    greedy = no_eos.generate(pixels[:1], [prompt], 8)[0]
    beam = no_eos.generate(pixels[:1], [prompt], 8, "beam", beam_size=4, length_penalty=0.0)[0]
    assert len(beam) == 8
    assert _logp(model, pixels[0], prompt, beam) >= _logp(model, pixels[0], prompt, greedy) - 1e-5


@pytest.mark.slow
def test_beam_search_of_width_one_is_greedy(model, pixels):
    no_eos = PaliGemma(model.config, model.params, eos_id=-1, **BUCKETS)
    greedy = no_eos.generate(pixels, PROMPTS, 10)
    assert no_eos.generate(pixels, PROMPTS, 10, "beam", beam_size=1) == greedy


def test_unknown_option_and_oversized_request_are_refused(model, pixels):
    with pytest.raises(GenerationError, match="temprature"):
        model.generate(pixels, PROMPTS, 4, "sample", temprature=0.5)
    with pytest.raises(ValueError, match="max_new_tokens 33 exceeds"):
        model.generate(pixels, PROMPTS, 33)


@pytest.mark.slow
def test_after_warmup_100_varied_requests_compile_nothing_new():
    model = PaliGemma(CONFIG_A, random_params(CONFIG_A, seed=7), batch_buckets=(1,),
                      prompt_buckets=(32, 64), new_token_buckets=(128,))
    assert model.warmup() == 2
    compiles = []

    def listener(event: str, duration: float, **_: object) -> None:
        if event == "/jax/core/compile/backend_compile_duration":
            compiles.append(event)

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        rng = np.random.default_rng(0)
        pixels = random_pixels(CONFIG_A, 1)
        for _ in range(100):
            prompt = [2, *rng.integers(4, 500, rng.integers(0, 64)).tolist()]
            out = model.generate(pixels, [prompt], int(rng.integers(1, 129)))
            assert len(out) == 1
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    assert compiles == []


def test_greedy_token_is_argmax_with_ties_going_to_the_first_index():
    from modeling.generate import greedy_token

    rng = np.random.default_rng(0)
    logits = rng.normal(size=(6, 1000)).astype(np.float32)
    logits[1, [7, 500, 999]] = 50.0  # a three-way tie: the first wins
    logits[2, :] = -3.0  # all equal
    logits[3, 999] = 1e9  # the last index
    got = np.asarray(jax.jit(greedy_token)(logits))
    np.testing.assert_array_equal(got, np.argmax(logits, axis=-1))
    assert got[1] == 7 and got[2] == 0 and got[3] == 999 and got.dtype == np.int32
