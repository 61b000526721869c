"""Greedy report generation for validation, from in-memory parameters (no bundle round-trip).

Each step re-runs the pure `forward` over the whole fixed-length buffer (no KV cache): simple,
exact and shape-static, which is what validation of small and mid-size runs needs. Serving and
offline evaluation use `modeling`'s cached decoder on exported bundles.

Buffer layout per example (right-padded, as `forward` expects):

    [BOS prefix "\\n"] [generated ... EOS] [pad]
    token_type 0 ...   1 ...                1
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from modeling.generate import greedy_token


def prompt_arrays(
    tokenizer: Any, prompts: Sequence[str], prompt_len: int
) -> tuple[np.ndarray, np.ndarray]:
    """(ids [B, prompt_len] right-padded, lengths [B]) of `[BOS prefix "\\n"]` for each prompt."""
    ids = np.zeros((len(prompts), prompt_len), np.int32)
    lengths = np.zeros((len(prompts),), np.int32)
    for row, prompt in enumerate(prompts):
        input_ids, token_type_ids, input_mask, _ = tokenizer.training_example(
            prompt, "", prompt_len + 8)
        input_ids = np.asarray(input_ids)
        keep = (np.asarray(token_type_ids) == 0) & (np.asarray(input_mask) == 1)
        prompt_ids = input_ids[keep][:prompt_len]
        ids[row, : len(prompt_ids)] = prompt_ids
        lengths[row] = len(prompt_ids)
    return ids, lengths


def make_greedy_decoder(
    forward: Callable[..., jax.Array], eos_id: int, max_new_tokens: int
) -> Callable[[Any, jax.Array, jax.Array, jax.Array], jax.Array]:
    """decode(params, pixels, prompt_ids [B, P], prompt_lengths [B]) -> new tokens [B, max_new].

    Tokens after the first EOS are EOS. `forward(params, pixels, ids, token_type_ids, input_mask)`.
    """

    def decode(params: Any, pixels: jax.Array, prompt_ids: jax.Array,
               lengths: jax.Array) -> jax.Array:
        batch, prompt_len = prompt_ids.shape
        total = prompt_len + max_new_tokens
        ids = jnp.zeros((batch, total), jnp.int32).at[:, :prompt_len].set(prompt_ids)
        positions = jnp.arange(total)[None, :]
        token_type = (positions >= lengths[:, None]).astype(jnp.int32)
        rows = jnp.arange(batch)

        def body(i: int, carry: tuple[jax.Array, jax.Array, jax.Array]):
            ids, out, done = carry
            cur = lengths + i  # next write position per example
            input_mask = positions < cur[:, None]
            logits = forward(params, pixels, ids, token_type, input_mask)
            next_token = greedy_token(logits[rows, cur - 1])
            next_token = jnp.where(done, eos_id, next_token)
            ids = ids.at[rows, cur].set(next_token)
            out = out.at[:, i].set(next_token)
            return ids, out, done | (next_token == eos_id)

        out = jnp.full((batch, max_new_tokens), eos_id, jnp.int32)
        done = jnp.zeros((batch,), bool)
        _, out, _ = jax.lax.fori_loop(0, max_new_tokens, body, (ids, out, done))
        return out

    return decode


def tokens_to_text(tokenizer: Any, tokens: np.ndarray, eos_id: int) -> list[str]:
    """Decoded strings, each cut at its first EOS."""
    texts = []
    for row in np.asarray(tokens):
        ids = row.tolist()
        if eos_id in ids:
            ids = ids[: ids.index(eos_id)]
        texts.append(tokenizer.decode(ids).strip())
    return texts
