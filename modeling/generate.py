"""Jit-compiled generation: prefill and the whole decode loop in one XLA program.

One call = vision tower + prefill + `lax.while_loop` over decode steps, on a KV cache sized once
(prompt bucket + new-token bucket); sliding-window layers keep a ring buffer of only their window.
Strategies: greedy, sampling (temperature / top-k / top-p, seeded) and beam search with a length
penalty. Rows of a batch may have different prompt lengths.

Cache layout (the long comment the subtle part deserves): the prefill runs on the natural,
right-padded layout [image P][text Tp] (the same code as training). Its keys/values are then
*right-aligned* per row (row b shifted by Tp - len_b) so that every row's last prompt token sits
at cache index S0 - 1 (S0 = P + Tp) and decode step t writes all rows at one shared index S0 + t
with a single `dynamic_update_slice`. Each cache slot also records the position of the token it
holds (and whether it holds one), so masks are computed from positions, never from indices:
a key is visible when it is valid and, on local layers, when query_pos - key_pos < window. A
local layer's ring buffer holds the last R = min(window, cache length) slots (slot = index % R);
right-alignment makes those the last R positions of every row, which is all the window needs.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from modeling import cpu_kernels
from modeling.config import ModelConfig
from modeling.model import (
    MASK_VALUE,
    Params,
    decode_layers,
    embed_inputs,
    embed_tokens,
    fused_block_weights,
    geglu,
    make_attn_mask,
    rms_norm,
    rope_sincos,
    rotate,
    sequence_layout,
    sliding_window_mask,
    split_qkv,
)

STRATEGIES = ("greedy", "sample", "beam")


@dataclass(frozen=True)
class Plan:
    """Static shape of one compiled generate program."""

    batch: int
    prompt_len: int  # text tokens (bucketed)
    new_tokens: int  # decode buffer (bucketed)
    strategy: str = "greedy"
    beam_size: int = 1


# ----------------------------------------------------------------------------- decode weights


def uses_cpu_kernel(config: ModelConfig) -> bool:
    """Whether the decode loop should multiply with `cpu_kernels` here (CPU backend, float32
    compute, the kernel built)."""
    return jnp.dtype(config.compute_dtype) == jnp.float32 and cpu_kernels.available()


def streams_bfloat16(params: Params) -> bool:
    """Whether generation reads bfloat16 language-model weights where they are, one layer at a
    time (`cpu_kernels.take_f32`, `cpu_kernels.matmul_t_bf16`): bfloat16 parameters on the CPU
    backend with the kernels built. There XLA would otherwise keep a float32 copy of every
    weight for the whole program (twice the model's bytes again); `decode_weights` then makes
    no copy at all ("layers" None)."""
    return _all_bfloat16(params["llm"]) and cpu_kernels.available()


def _all_bfloat16(tree: Params) -> bool:
    dtypes = {jnp.dtype(a.dtype) for a in jax.tree_util.tree_leaves(tree)}
    return dtypes == {jnp.dtype(jnp.bfloat16)}


def decode_weights(config: ModelConfig, params: Params, kernel: bool) -> dict[str, Any]:
    """The decode loop's weights (see `_decode_weights`); with `streams_bfloat16(params)` none
    are copied: {"layers": None, "table": None} makes the loop read each layer from `params`."""
    if streams_bfloat16(params):
        return {"layers": None, "table": None}
    return _decode_weights(config, params, kernel)


def streamed_layer(layers: Params, i: int, after: jax.Array) -> Params:
    """Layer i of the stacked bfloat16 `layers`, widened to float32 by `cpu_kernels.take_f32`
    after `after` is computed (the layer's input): one layer's float32 copy at a time."""
    return jax.tree_util.tree_map(lambda a: cpu_kernels.take_f32(a, i, after), layers)


def _streamed_block_weights(config: ModelConfig, layers: Params, i: int, x: jax.Array
                            ) -> dict[str, Any]:
    """What `_decode_weights` holds for layer i, taken from the stacked bfloat16 params."""
    p = streamed_layer(layers, i, x)
    mats = fused_block_weights(config.text, p, jnp.dtype(config.compute_dtype))
    return {**mats, **{name: p[name]["scale"] for name in
                       ("pre_attention_norm", "post_attention_norm", "pre_ffw_norm",
                        "post_ffw_norm")}}


@functools.partial(jax.jit, static_argnums=(0, 2))
def _decode_weights(config: ModelConfig, params: Params, kernel: bool) -> dict[str, Any]:
    """The decode loop's matmul-ready weights, in the compute dtype: "layers", per layer
    `fused_block_weights` plus the norm scales, and "table", the output embedding for the
    logits. With `kernel` (`uses_cpu_kernel`) the matrices are `cpu_kernels.Panels` (the
    embedding transposed to [D, V] first); otherwise "table" is None and the logits read the
    embedding as it is.

    A copy of the language model's weights: `runtime.PaliGemma` builds it once per model
    (packing the 65M bench model took ~140 ms, ~20 of its batch-1 decode steps) and passes it
    to every `generate_tokens` call."""
    llm = params["llm"]
    t = config.text
    dt = jnp.dtype(config.compute_dtype)
    layers = []
    for i in range(t.depth):
        p = jax.tree_util.tree_map(lambda a, i=i: a[i], llm["layers"])
        mats = fused_block_weights(t, p, dt)
        if kernel:
            mats = {name: cpu_kernels.pack(w) for name, w in mats.items()}
        layers.append({**mats, **{name: p[name]["scale"] for name in
                                  ("pre_attention_norm", "post_attention_norm", "pre_ffw_norm",
                                   "post_ffw_norm")}})
    table = cpu_kernels.pack(llm["embedder"]["input_embedding"].T) if kernel else None
    return {"layers": layers, "table": table}


def _packed(w: jax.Array | cpu_kernels.Panels | None) -> bool:
    """Whether a decode weight was packed for the CPU kernels (`decode_weights(..., kernel=True)`):
    the one signal the decode loop reads to use them (matmuls, attention, greedy argmax)."""
    return isinstance(w, cpu_kernels.Panels)


def _mm(x: jax.Array, w: jax.Array | cpu_kernels.Panels) -> jax.Array:
    """x [B, K] @ w [K, N], with the CPU kernel when `w` was packed for it."""
    return cpu_kernels.matmul(x, w) if _packed(w) else x @ w


def _step_block(config: ModelConfig, w: dict[str, Any], x: jax.Array,
                rope: tuple[jax.Array, jax.Array], cache: tuple[jax.Array, jax.Array],
                slot: jax.Array, visible: jax.Array) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
    """One decoder block for one new token per row. x [B, D]; this layer's cache k, v
    [B, K, R, H] (heads before slots, so attention needs no transposes; one array per layer,
    so the in-place update and the attention read need no per-step slice of a stacked cache).
    With weights packed for the CPU kernel (`decode_weights`), the attention is the kernel's
    too (`cpu_kernels.attention`) where the cache is float32."""
    t = config.text
    N, K, H = t.num_heads, t.num_kv_heads, t.head_dim
    b = x.shape[0]
    h = rms_norm(t, x, w["pre_attention_norm"])
    q, k, v = split_qkv(t, _mm(h, w["qkv"])[:, None])  # [B, 1, heads, H]
    q = rotate(q, *rope)
    if t.query_scale_before_matmul:
        q = q * jnp.asarray(t.query_pre_attn_scalar ** -0.5, q.dtype)
    k = rotate(k, *rope).reshape(b, K, 1, H)
    v = v.reshape(b, K, 1, H)
    ck, cv = cache
    ck = jax.lax.dynamic_update_slice(ck, k.astype(ck.dtype), (0, 0, slot, 0))
    cv = jax.lax.dynamic_update_slice(cv, v.astype(cv.dtype), (0, 0, slot, 0))
    qg = q.reshape(b, K, N // K, H)
    scale = 1.0 if t.query_scale_before_matmul else t.query_pre_attn_scalar ** -0.5
    if _packed(w["qkv"]) and cpu_kernels.attention_fits(qg, ck):
        a = cpu_kernels.attention(qg, ck, cv, visible, scale=scale,
                                  softcap=t.attn_logits_softcap, mask_value=MASK_VALUE)
    else:
        logits = jnp.einsum("BKGH,BKSH->BKGS", qg, ck.astype(q.dtype)).astype(jnp.float32)
        if not t.query_scale_before_matmul:
            logits = logits * scale
        if t.attn_logits_softcap:
            logits = jnp.tanh(logits / t.attn_logits_softcap) * t.attn_logits_softcap
        logits = jnp.where(visible[:, None, None, :], logits, MASK_VALUE)
        probs = jax.nn.softmax(logits, axis=-1).astype(x.dtype)
        a = jnp.einsum("BKGS,BKSH->BKGH", probs, cv.astype(x.dtype))
    a = a.astype(x.dtype).reshape(b, N * H)
    x = x + rms_norm(t, _mm(a, w["o"]), w["post_attention_norm"])
    h = rms_norm(t, x, w["pre_ffw_norm"])
    x = x + rms_norm(t, _mm(geglu(t, _mm(h, w["gate_up"])), w["down"]), w["post_ffw_norm"])
    return x, (ck, cv)


def _final_logits(config: ModelConfig, llm: Params, x: jax.Array,
                  table: cpu_kernels.Panels | None = None) -> jax.Array:
    """Soft-capped float32 logits [B, V] of the last hidden states x [B, D]; `table` is the
    embedding packed for the CPU kernel (`decode_weights`), else the embedding is read as is."""
    t = config.text
    x = rms_norm(t, x, llm["final_norm"]["scale"])
    if table is not None:
        logits = cpu_kernels.matmul(x, table)
    elif _all_bfloat16(llm) and cpu_kernels.available():
        logits = cpu_kernels.matmul_t_bf16(x, llm["embedder"]["input_embedding"])
    else:
        embedding = llm["embedder"]["input_embedding"]
        logits = jax.lax.dot_general(x, embedding.astype(x.dtype), (((1,), (1,)), ((), ())))
    logits = logits.astype(jnp.float32)
    if t.final_logits_softcap:
        logits = jnp.tanh(logits / t.final_logits_softcap) * t.final_logits_softcap
    return logits


# ----------------------------------------------------------------------------- prefill


def _ring_sources(s0: int, r: int) -> np.ndarray:
    """For a ring of r slots after a prefill of s0 tokens: the prefill index each slot holds
    (-1 = empty). Slot j holds the largest index i < s0 with i % r == j."""
    j = np.arange(r)
    src = j + r * ((s0 - 1 - j) // r)
    return np.where(j <= s0 - 1, src, -1)


def _prefill(config: ModelConfig, params: Params, pixel_values: jax.Array, text: jax.Array,
             lengths: jax.Array, cache_len: int):
    """Run the prompt; return (last-token logits [B, V], per-layer caches, slot bookkeeping)."""
    t = config.text
    b, tp = text.shape
    p = config.num_image_tokens
    s0 = p + tp
    input_mask = jnp.arange(tp)[None, :] < lengths[:, None]
    streamed = streams_bfloat16(params)
    x = embed_inputs(config, params, pixel_values, text,
                     gather=cpu_kernels.gather_bf16 if streamed else None)
    valid, mask_ar, positions = sequence_layout(config, jnp.zeros_like(text), input_mask)
    mask = make_attn_mask(valid, mask_ar)
    if t.sliding_window is not None and not t.sliding_window_prefix_exempt:
        sliding = sliding_window_mask(t, positions, positions)
    else:  # the whole prompt is prefix: transformers exempts it from the window
        sliding = jnp.ones_like(mask)
    cache_dtype = jnp.dtype(config.cache_dtype or config.compute_dtype)
    # Only the text positions' outputs are read (each row's last prompt token), so the last
    # layer skips the image positions' queries.
    take = streamed_layer if streamed else None
    x, (ks, vs) = decode_layers(config, params["llm"], x, positions, mask, sliding,
                                outputs_from=p, with_kv=True, take_layer=take)
    ks, vs = ks.astype(cache_dtype), vs.astype(cache_dtype)

    # Right-align: slot s of row b holds prefill index s - shift_b.
    shift = tp - lengths
    src = jnp.arange(s0)[None, :] - shift[:, None]
    src_valid = src >= 0
    src = jnp.clip(src, 0, s0 - 1)
    ks = jnp.take_along_axis(ks, src[None, :, :, None, None], axis=2)  # [L, B, S0, K, H]
    vs = jnp.take_along_axis(vs, src[None, :, :, None, None], axis=2)
    ks, vs = ks.transpose(0, 1, 3, 2, 4), vs.transpose(0, 1, 3, 2, 4)  # [L, B, K, S0, H]
    aligned_pos = jnp.where(src_valid, jnp.take_along_axis(positions, src, 1), -1)
    caches: list[tuple[jax.Array, jax.Array]] = [None] * t.depth  # type: ignore[list-item]
    slot_pos = {}
    for r, layers in _cache_groups(config, cache_len).items():
        k, v = ks[np.array(layers)], vs[np.array(layers)]
        if r < cache_len:
            ring = _ring_sources(s0, r)
            k, v = k[:, :, :, np.maximum(ring, 0)], v[:, :, :, np.maximum(ring, 0)]
            sp = jnp.where(jnp.asarray(ring >= 0)[None], aligned_pos[:, np.maximum(ring, 0)], -1)
        else:
            pad = [(0, 0), (0, 0), (0, 0), (0, cache_len - s0), (0, 0)]
            k, v = jnp.pad(k, pad), jnp.pad(v, pad)
            sp = jnp.pad(aligned_pos, [(0, 0), (0, cache_len - s0)], constant_values=-1)
        for j, layer in enumerate(layers):
            caches[layer] = (k[j], v[j])  # [B, K, R, H]
        slot_pos[r] = sp
    last = jnp.take_along_axis(x, (lengths - 1)[:, None, None], axis=1)[:, 0]  # x: text positions
    logits = _final_logits(config, params["llm"], last)
    next_pos = p + lengths + t.position_offset  # slot positions include the offset too
    return logits, tuple(caches), slot_pos, next_pos


def _cache_groups(config: ModelConfig, cache_len: int) -> dict[int, list[int]]:
    """Layers grouped by cache length (ring size): {R: [layer indices]}; the layers of a group
    share their slot bookkeeping (which position each slot holds)."""
    groups: dict[int, list[int]] = {}
    for i in range(config.text.depth):
        groups.setdefault(_ring_size(config, i, cache_len), []).append(i)
    return groups


def _ring_size(config: ModelConfig, layer: int, cache_len: int) -> int:
    w = config.text.sliding_window
    return min(w, cache_len) if config.text.is_sliding(layer) else cache_len


# ----------------------------------------------------------------------------- sampling


def greedy_token(logits: jax.Array) -> jax.Array:
    """int32 index of the largest logit of each row, the first one on ties (as `jnp.argmax`).

    A max and a masked min, two plain reductions: XLA's CPU backend runs `argmax`'s (value,
    index) reduction ~6x slower; over a 16k vocabulary at batch 8 it took ~0.29 ms of a ~2.3 ms
    decode step. Where the decode weights are packed for the CPU kernels, the loop uses
    `cpu_kernels.greedy_argmax` instead: the same tokens in one pass.
    """
    vocab = logits.shape[-1]
    best = jnp.max(logits, axis=-1, keepdims=True)
    first = jnp.min(jnp.where(logits == best, jnp.arange(vocab, dtype=jnp.int32), vocab), axis=-1)
    return jnp.minimum(first, vocab - 1)  # a row of NaNs has no maximum: token vocab - 1


def _sample(logits: jax.Array, key: jax.Array, temperature: jax.Array, top_k: jax.Array,
            top_p: jax.Array) -> jax.Array:
    """Temperature, then top-k (0 = off) and top-p (1 = off) filtering, then a categorical draw."""
    logits = logits / jnp.maximum(temperature, 1e-6)
    sorted_logits = jnp.sort(logits, axis=-1)[:, ::-1]
    vocab = logits.shape[-1]
    k = jnp.where(top_k > 0, jnp.minimum(top_k, vocab), vocab)
    kth = jnp.take_along_axis(sorted_logits, jnp.broadcast_to(k - 1, (logits.shape[0], 1)), 1)
    probs = jax.nn.softmax(sorted_logits, axis=-1)
    cum = jnp.cumsum(probs, axis=-1)
    # keep the smallest prefix whose mass reaches top_p (always at least one token)
    keep = (cum - probs) < top_p
    pth = jnp.min(jnp.where(keep, sorted_logits, jnp.inf), axis=-1, keepdims=True)
    threshold = jnp.maximum(kth, pth)
    logits = jnp.where(logits >= threshold, logits, -jnp.inf)
    return jax.random.categorical(key, logits, axis=-1).astype(jnp.int32)


# ----------------------------------------------------------------------------- the program


def _decode_step(config, params, weights, token, pos, caches, slot_pos, step_index, cache_len):
    """Embed `token`, run every layer against the cache, return logits and the new cache."""
    t = config.text
    x = embed_tokens(config, params["llm"]["embedder"]["input_embedding"], token,
                     cpu_kernels.gather_bf16 if weights["layers"] is None else None)
    idx = step_index
    new_slot_pos = {r: jax.lax.dynamic_update_slice(sp, pos[:, None].astype(sp.dtype), (0, idx % r))
                    for r, sp in slot_pos.items()}
    visible: dict[tuple[int, bool], jax.Array] = {}
    for i in range(t.depth):
        key = (_ring_size(config, i, cache_len), t.is_sliding(i))
        if key not in visible:
            sp = new_slot_pos[key[0]]
            vis = sp >= 0
            if key[1]:
                vis = vis & (pos[:, None] - sp < t.sliding_window)
            visible[key] = vis
    caches = list(caches)
    # sin and cos of every position the loop can reach, a table XLA computes once (its inputs
    # are constants), and this step's rows looked up in it: computed from pos here, XLA fused
    # them into each of their consumers (every layer's q and k rotations and cache writes) and
    # recomputed them per output element, ~35 us per layer of a 10M batch-8 step
    table = rope_sincos(jnp.arange(cache_len + t.position_offset + 1), t.head_dim, t.rope_base)
    rope = tuple(jnp.take(a, pos[:, None], axis=0, mode="clip") for a in table)  # shared by every layer
    for i in range(t.depth):  # layer order matters: x flows through them in sequence
        r = _ring_size(config, i, cache_len)
        w = (weights["layers"][i] if weights["layers"] is not None
             else _streamed_block_weights(config, params["llm"]["layers"], i, x))
        x, caches[i] = _step_block(config, w, x, rope, caches[i], idx % r,
                                   visible[(r, t.is_sliding(i))])
    return _final_logits(config, params["llm"], x, weights["table"]), tuple(caches), new_slot_pos


@functools.partial(jax.jit, static_argnames=("config", "plan"))
def generate_tokens(config: ModelConfig, plan: Plan, params: Params, weights: dict[str, Any],
                    pixel_values: jax.Array, text: jax.Array, lengths: jax.Array, active: jax.Array,
                    max_new_tokens: jax.Array, eos_id: jax.Array, key: jax.Array,
                    temperature: jax.Array, top_k: jax.Array, top_p: jax.Array,
                    length_penalty: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Generate up to `max_new_tokens` (<= plan.new_tokens) tokens per row.

    weights = decode_weights(config, params, uses_cpu_kernel(config)). text [B, Tp]
    right-padded prompts (BOS prefix "\\n"), lengths [B], active [B] (False for batch padding
    rows). Returns (tokens [B, new_tokens], number of tokens before EOS [B]).
    """
    if plan.strategy == "beam":
        return _beam(config, plan, params, weights, pixel_values, text, lengths, active,
                     max_new_tokens, eos_id, length_penalty)
    b, tp = text.shape
    s0 = config.num_image_tokens + tp
    cache_len = s0 + plan.new_tokens
    logits, caches, slot_pos, pos = _prefill(config, params, pixel_values, text, lengths, cache_len)

    def choose(logits: jax.Array, step: jax.Array) -> jax.Array:
        if plan.strategy == "greedy" and _packed(weights["table"]):
            return cpu_kernels.greedy_argmax(logits)
        if plan.strategy == "greedy":
            return greedy_token(logits)
        return _sample(logits, jax.random.fold_in(key, step), temperature, top_k, top_p)

    tok = choose(logits, 0)
    tokens = jnp.zeros((b, plan.new_tokens), jnp.int32).at[:, 0].set(tok)
    done = (tok == eos_id) | ~active
    n_out = jnp.where(tok == eos_id, 0, 1) * active

    def cond(state):
        step, _, _, done, *_ = state
        return (step < max_new_tokens) & ~jnp.all(done)

    def body(state):
        step, tokens, tok, done, n_out, pos, caches, slot_pos = state
        logits, caches, slot_pos = _decode_step(config, params, weights, tok, pos, caches,
                                                slot_pos, s0 + step - 1, cache_len)
        new = choose(logits, step)
        new = jnp.where(done, 0, new)
        tokens = jax.lax.dynamic_update_slice(tokens, new[:, None], (0, step))
        n_out = n_out + (~done & (new != eos_id))
        done = done | (new == eos_id)
        return step + 1, tokens, new, done, n_out, pos + 1, caches, slot_pos

    state = (jnp.int32(1), tokens, tok, done, n_out, pos, caches, slot_pos)
    state = jax.lax.while_loop(cond, body, state)
    return state[1], state[4]


def _beam(config, plan, params, weights, pixel_values, text, lengths, active, max_new_tokens,
          eos_id, length_penalty):
    """Beam search; a finished hypothesis scores sum(logp) / len ** length_penalty."""
    nb = plan.beam_size
    b, tp = text.shape
    rep = lambda a: jnp.repeat(a, nb, axis=0)  # noqa: E731
    s0 = config.num_image_tokens + tp
    cache_len = s0 + plan.new_tokens
    logits, caches, slot_pos, pos = _prefill(config, params, pixel_values, text, lengths, cache_len)
    caches = jax.tree_util.tree_map(rep, caches)
    slot_pos = jax.tree_util.tree_map(rep, slot_pos)
    pos = rep(pos)
    n = plan.new_tokens
    neg = jnp.float32(-1e30)

    alive_seq = jnp.zeros((b, nb, n), jnp.int32)
    alive_logp = jnp.where(jnp.arange(nb) == 0, 0.0, neg)[None].repeat(b, 0)
    fin_seq = jnp.zeros((b, nb, n), jnp.int32)
    fin_len = jnp.zeros((b, nb), jnp.int32)
    fin_score = jnp.full((b, nb), neg)
    logp = jax.nn.log_softmax(rep(logits)).reshape(b, nb, -1)

    def expand(step, logp, alive_seq, alive_logp, fin_seq, fin_len, fin_score):
        vocab = logp.shape[-1]
        cand = (alive_logp[:, :, None] + logp).reshape(b, nb * vocab)
        top_lp, top_i = jax.lax.top_k(cand, 2 * nb)
        parent, tok = top_i // vocab, (top_i % vocab).astype(jnp.int32)
        seqs = jnp.take_along_axis(alive_seq, parent[:, :, None], axis=1)
        seqs = jax.lax.dynamic_update_slice(seqs, tok[:, :, None], (0, 0, step))
        is_eos = tok == eos_id
        length = (step + 1).astype(jnp.float32)
        # finished candidates (EOS excluded from the tokens, counted in the length)
        score = jnp.where(is_eos & (top_lp > neg / 2), top_lp / length ** length_penalty, neg)
        all_score = jnp.concatenate([fin_score, score], 1)
        all_seq = jnp.concatenate([fin_seq, seqs], 1)
        all_len = jnp.concatenate([fin_len, jnp.full_like(tok, step)], 1)
        best_score, best_i = jax.lax.top_k(all_score, nb)
        fin_seq = jnp.take_along_axis(all_seq, best_i[:, :, None], 1)
        fin_len = jnp.take_along_axis(all_len, best_i, 1)
        # alive: best nb non-EOS candidates
        live_lp = jnp.where(is_eos, neg, top_lp)
        alive_lp, alive_i = jax.lax.top_k(live_lp, nb)
        alive_parent = jnp.take_along_axis(parent, alive_i, 1)
        alive_seq = jnp.take_along_axis(seqs, alive_i[:, :, None], 1)
        alive_tok = jnp.take_along_axis(tok, alive_i, 1)
        return alive_seq, alive_lp, alive_parent, alive_tok, fin_seq, fin_len, best_score

    step0 = jnp.int32(0)
    alive_seq, alive_logp, parent, tok, fin_seq, fin_len, fin_score = expand(
        step0, logp, alive_seq, alive_logp, fin_seq, fin_len, fin_score)

    def reorder(parent, caches, sp, pos):
        flat = (parent + jnp.arange(b)[:, None] * nb).reshape(-1)
        caches = jax.tree_util.tree_map(lambda a: a[flat], caches)
        return caches, jax.tree_util.tree_map(lambda a: a[flat], sp), pos[flat]

    def cond(state):
        step, alive_logp, fin_score = state[0], state[2], state[7]
        best_alive = jnp.max(alive_logp, 1) / (step.astype(jnp.float32) + 1) ** length_penalty
        hopeless = jnp.all((jnp.min(fin_score, 1) >= best_alive) | ~active)
        return (step < max_new_tokens) & ~hopeless

    def body(state):
        step, alive_seq, alive_logp, parent, tok, fin_seq, fin_len, fin_score, pos, caches, sp = state
        caches, sp, pos = reorder(parent, caches, sp, pos)
        logits, caches, sp = _decode_step(config, params, weights, tok.reshape(-1), pos, caches,
                                          sp, s0 + step - 1, cache_len)
        logp = jax.nn.log_softmax(logits).reshape(b, nb, -1)
        alive_seq, alive_logp, parent, tok, fin_seq, fin_len, fin_score = expand(
            step, logp, alive_seq, alive_logp, fin_seq, fin_len, fin_score)
        return (step + 1, alive_seq, alive_logp, parent, tok, fin_seq, fin_len, fin_score,
                pos + 1, caches, sp)

    state = (jnp.int32(1), alive_seq, alive_logp, parent, tok, fin_seq, fin_len, fin_score,
             pos, caches, slot_pos)
    state = jax.lax.while_loop(cond, body, state)
    step, alive_seq, alive_logp, _, _, fin_seq, fin_len, fin_score = state[:8]
    # rows without a finished hypothesis fall back to their best alive beam (no EOS reached)
    alive_score = alive_logp / step.astype(jnp.float32) ** length_penalty
    use_alive = jnp.max(fin_score, 1) <= neg / 2
    best_f = jnp.argmax(fin_score, 1)
    best_a = jnp.argmax(alive_score, 1)
    seq = jnp.where(use_alive[:, None],
                    jnp.take_along_axis(alive_seq, best_a[:, None, None], 1)[:, 0],
                    jnp.take_along_axis(fin_seq, best_f[:, None, None], 1)[:, 0])
    length = jnp.where(use_alive, step, jnp.take_along_axis(fin_len, best_f[:, None], 1)[:, 0])
    return seq, length * active


def bucket(value: int, buckets: tuple[int, ...], what: str) -> int:
    """The smallest bucket >= value; a ValueError names the limit when none fits."""
    for size in buckets:
        if value <= size:
            return size
    raise ValueError(f"{what} {value} exceeds the largest supported size {buckets[-1]}")


def default_options() -> dict[str, Any]:
    """Generation options and their defaults (strategy-specific ones are ignored otherwise)."""
    return {"temperature": 1.0, "top_k": 0, "top_p": 1.0, "seed": 0, "beam_size": 4,
            "length_penalty": 1.0}
