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

The model enters as pure functions over its parameters (the `nnx.split` state as a nested dict,
merged into the modules inside the program); every step runs the model's own decoder block
(`model.block_apply`) against the cache. The loop's carry is a typed pytree: `DecodeState` or
`BeamState` around a `Cache` (per-layer `model.KVCache`s and the slot bookkeeping).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np

from modeling import cpu_kernels
from modeling.config import ModelConfig
from modeling.model import (
    NORMS,
    KVCache,
    Params,
    block_apply,
    embed_tokens,
    make_attn_mask,
    model_from_params,
    rope_sincos,
    sequence_layout,
    sliding_window_mask,
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


@flax.struct.dataclass
class Cache:
    """Everything a decode step reads besides the weights: the layers' keys and values and
    which token each slot holds (B rows; B * beam_size under beam search).

    layers: one `KVCache` per decoder layer, k and v [B, K, R, H]; R is the cache length, or
      a sliding-window layer's ring size min(window, cache length).
    slot_pos: {R: [B, R] int32}, the position of the token each slot holds (-1: empty), shared
      by the layers with R slots; masks are computed from it, never from slot indices.
    pos: [B] int32, the position of the next token fed to the model.
    """

    layers: tuple[KVCache, ...]
    slot_pos: dict[int, jax.Array]
    pos: jax.Array


@flax.struct.dataclass
class DecodeState:
    """The greedy / sampling loop's carry (N = plan.new_tokens).

    step: [] int32, index in `tokens` of the token chosen next; tokens: [B, N] int32, chosen so
    far (0 after a row is done); last: [B] int32, the token fed next; done: [B] bool, EOS seen
    (or a padding row); n_out: [B] int32, tokens before EOS; cache: the `Cache`.
    """

    step: jax.Array
    tokens: jax.Array
    last: jax.Array
    done: jax.Array
    n_out: jax.Array
    cache: Cache


@flax.struct.dataclass
class BeamState:
    """The beam search loop's carry (b rows, nb = plan.beam_size beams, N = plan.new_tokens).

    step: [] int32; alive_seq: [b, nb, N] int32 tokens of the live hypotheses; alive_logp:
    [b, nb] their summed log-probabilities; parent: [b, nb] the beam each extends (the cache
    rows to gather before the next step); last: [b, nb] int32 the token each feeds next;
    fin_seq [b, nb, N], fin_len [b, nb], fin_score [b, nb]: the best finished hypotheses (EOS
    excluded from the tokens, scored sum(logp) / length ** length_penalty); cache: the `Cache`
    of the b * nb live rows.
    """

    step: jax.Array
    alive_seq: jax.Array
    alive_logp: jax.Array
    parent: jax.Array
    last: jax.Array
    fin_seq: jax.Array
    fin_len: jax.Array
    fin_score: jax.Array
    cache: Cache


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


def streamed_layer(layers: Any, i: int, after: jax.Array) -> Any:
    """Layer i of the stacked bfloat16 `layers` (the state of `Gemma2.layers`), widened to
    float32 by `cpu_kernels.take_f32` after `after` is computed (the layer's input): one
    layer's float32 copy at a time."""
    return jax.tree_util.tree_map(lambda a: cpu_kernels.take_f32(a, i, after), layers)


def _streamed_block_weights(config: ModelConfig, params: Params, i: int, x: jax.Array
                            ) -> dict[str, Any]:
    """What `_decode_weights` holds for layer i, as blocks of the stacked bfloat16 params that
    `cpu_kernels.matmul_bf16` multiplies in place (`model.dense`; "qkv": the q and the kv
    blocks); the norm scales widened by `streamed_layer`."""
    t = config.text
    layers = params["llm"]["layers"]
    attn, mlp = layers["attn"], layers["mlp"]
    block = cpu_kernels.Bf16Block
    return {
        "qkv": (block(attn["q_einsum"]["w"], i, t.num_heads, t.head_dim),  # [N, D, H]
                block(attn["kv_einsum"]["w"], i, 2 * t.num_kv_heads, t.head_dim)),
        "o": block(attn["attn_vec_einsum"]["w"], i, 1, t.width),  # [N, H, D] = [N H, D]
        "gate_up": block(mlp["gating_einsum"], i, 2, t.mlp_dim),  # [2, D, F]
        "down": block(mlp["linear"], i, 1, t.width),  # [F, D]
        **{name: streamed_layer(layers[name], i, x)["scale"] for name in NORMS},
    }


@functools.partial(jax.jit, static_argnums=(0, 2))
def _decode_weights(config: ModelConfig, params: Params, kernel: bool) -> dict[str, Any]:
    """The decode loop's matmul-ready weights, in the compute dtype: "layers", per layer
    `DecoderBlock.fused_weights`, and "table", the output embedding for the logits. With
    `kernel` (`uses_cpu_kernel`) the matrices are `cpu_kernels.Panels` (the embedding
    transposed to [D, V] first), which also makes `block_apply` attend with the kernel;
    otherwise "table" is None and the logits read the embedding as it is.

    A copy of the language model's weights: `runtime.PaliGemma` builds it once per model
    (packing the 65M bench model took ~140 ms, ~20 of its batch-1 decode steps) and passes it
    to every `generate_tokens` call."""
    llm = model_from_params(config, params["llm"], "llm")
    dt = jnp.dtype(config.compute_dtype)
    layers = []
    for i in range(config.text.depth):
        w = llm.layer(i).fused_weights(dt)
        if kernel:
            w = {name: a if name in NORMS else cpu_kernels.pack(a) for name, a in w.items()}
        layers.append(w)
    table = cpu_kernels.pack(llm.embedder.input_embedding[...].T) if kernel else None
    return {"layers": layers, "table": table}


def _logits(config: ModelConfig, params: Params, x: jax.Array,
            table: cpu_kernels.Panels | None = None) -> jax.Array:
    """`Gemma2.logits` of hidden states x [..., D]: by the packed `table` (`decode_weights`),
    else reading bfloat16 embeddings in place (`streams_bfloat16`), else as they are."""
    llm = model_from_params(config, params["llm"], "llm")
    matmul_t = cpu_kernels.matmul_t_bf16 if table is None and streams_bfloat16(params) else None
    return llm.logits(x, table, matmul_t)


# ----------------------------------------------------------------------------- prefill


def _ring_sources(s0: int, r: int) -> np.ndarray:
    """For a ring of r slots after a prefill of s0 tokens: the prefill index each slot holds
    (-1 = empty). Slot j holds the largest index i < s0 with i % r == j."""
    j = np.arange(r)
    src = j + r * ((s0 - 1 - j) // r)
    return np.where(j <= s0 - 1, src, -1)


def _prefill(config: ModelConfig, params: Params, pixel_values: jax.Array, text: jax.Array,
             lengths: jax.Array, cache_len: int) -> tuple[jax.Array, Cache]:
    """Run the prompt; return (last-token logits [B, V], the `Cache` right-aligned)."""
    t = config.text
    model = model_from_params(config, params)
    b, tp = text.shape
    p = config.num_image_tokens
    s0 = p + tp
    input_mask = jnp.arange(tp)[None, :] < lengths[:, None]
    streamed = streams_bfloat16(params)
    x = model.embed(pixel_values, text, gather=cpu_kernels.gather_bf16 if streamed else None)
    valid, mask_ar, positions = sequence_layout(config, jnp.zeros_like(text), input_mask)
    mask = make_attn_mask(valid, mask_ar)
    if t.sliding_window is not None and not t.sliding_window_prefix_exempt:
        sliding = sliding_window_mask(t, positions, positions)
    else:  # the whole prompt is prefix: transformers exempts it from the window
        sliding = jnp.ones_like(mask)
    cache_dtype = jnp.dtype(config.cache_dtype or config.compute_dtype)
    # Only the text positions' outputs are read (each row's last prompt token), so the last
    # layer skips the image positions' queries.
    x, kv = model.llm(x, positions, mask, sliding, outputs_from=p, with_kv=True,
                      take_layer=streamed_layer if streamed else None)
    ks, vs = kv.k.astype(cache_dtype), kv.v.astype(cache_dtype)  # [L, B, K, S0, H]

    # Right-align: slot s of row b holds prefill index s - shift_b.
    shift = tp - lengths
    src = jnp.arange(s0)[None, :] - shift[:, None]
    src_valid = src >= 0
    src = jnp.clip(src, 0, s0 - 1)
    ks = jnp.take_along_axis(ks, src[None, :, None, :, None], axis=3)
    vs = jnp.take_along_axis(vs, src[None, :, None, :, None], axis=3)
    aligned_pos = jnp.where(src_valid, jnp.take_along_axis(positions, src, 1), -1)
    caches: list[KVCache] = [None] * t.depth  # type: ignore[list-item]
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
            caches[layer] = KVCache(k[j], v[j])  # [B, K, R, H]
        slot_pos[r] = sp
    last = jnp.take_along_axis(x, (lengths - 1)[:, None, None], axis=1)  # x: text positions
    logits = _logits(config, params, last)[:, 0]
    next_pos = p + lengths + t.position_offset  # slot positions include the offset too
    return logits, Cache(tuple(caches), slot_pos, next_pos)


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


def _decode_step(config: ModelConfig, params: Params, weights: dict[str, Any], token: jax.Array,
                 cache: Cache, index: jax.Array | int, cache_len: int
                 ) -> tuple[jax.Array, Cache]:
    """Feed `token` [B] at position cache.pos through every layer (`block_apply` against the
    cache, writing cache index `index`); return its logits [B, V] and the updated cache."""
    t = config.text
    pos = cache.pos
    x = embed_tokens(config, params["llm"]["embedder"]["input_embedding"], token[:, None],
                     cpu_kernels.gather_bf16 if weights["layers"] is None else None)
    slot_pos = {r: jax.lax.dynamic_update_slice(sp, pos[:, None].astype(sp.dtype), (0, index % r))
                for r, sp in cache.slot_pos.items()}
    visible: dict[tuple[int, bool], jax.Array] = {}
    for i in range(t.depth):
        key = (_ring_size(config, i, cache_len), t.is_sliding(i))
        if key not in visible:
            sp = slot_pos[key[0]]
            vis = sp >= 0
            if key[1]:
                vis = vis & (pos[:, None] - sp < t.sliding_window)
            visible[key] = vis
    # sin and cos of every position the loop can reach, a table XLA computes once (its inputs
    # are constants), and this step's rows looked up in it: computed from pos here, XLA fused
    # them into each of their consumers (every layer's q and k rotations and cache writes) and
    # recomputed them per output element, ~35 us per layer of a 10M batch-8 step
    table = rope_sincos(jnp.arange(cache_len + t.position_offset + 1), t.head_dim, t.rope_base)
    rope = tuple(jnp.take(a, pos[:, None], axis=0, mode="clip") for a in table)  # every layer's
    layers = list(cache.layers)
    for i in range(t.depth):  # layer order matters: x flows through them in sequence
        r = _ring_size(config, i, cache_len)
        w = (weights["layers"][i] if weights["layers"] is not None
             else _streamed_block_weights(config, params, i, x))
        x, layers[i] = block_apply(t, w, x, rope,
                                   visible[(r, t.is_sliding(i))], cache=layers[i],
                                   slot=index % r)
    return _logits(config, params, x[:, 0], weights["table"]), Cache(tuple(layers), slot_pos,
                                                                        pos + 1)


@functools.partial(jax.jit, static_argnames=("config", "plan"))
def generate_tokens(config: ModelConfig, plan: Plan, params: Params, weights: dict[str, Any],
                    pixel_values: jax.Array, text: jax.Array, lengths: jax.Array, active: jax.Array,
                    max_new_tokens: jax.Array, eos_id: jax.Array, key: jax.Array,
                    temperature: jax.Array, top_k: jax.Array, top_p: jax.Array,
                    length_penalty: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Generate up to `max_new_tokens` (<= plan.new_tokens) tokens per row.

    params: the model's parameters as a nested dict (`modeling.model.params_of`); weights =
    decode_weights(config, params, uses_cpu_kernel(config)). text [B, Tp] right-padded prompts
    (BOS prefix "\\n"), lengths [B], active [B] (False for batch padding rows). The sampling
    options are traced arguments: one compiled program serves every temperature, top-k and
    top-p. Returns (tokens [B, new_tokens], number of tokens before EOS [B]).
    """
    if plan.strategy == "beam":
        return _beam(config, plan, params, weights, pixel_values, text, lengths, active,
                     max_new_tokens, eos_id, length_penalty)
    b, tp = text.shape
    s0 = config.num_image_tokens + tp
    cache_len = s0 + plan.new_tokens
    logits, cache = _prefill(config, params, pixel_values, text, lengths, cache_len)

    def choose(logits: jax.Array, step: jax.Array) -> jax.Array:
        if plan.strategy == "greedy" and isinstance(weights["table"], cpu_kernels.Panels):
            return cpu_kernels.greedy_argmax(logits)
        if plan.strategy == "greedy":
            return greedy_token(logits)
        return _sample(logits, jax.random.fold_in(key, step), temperature, top_k, top_p)

    tok = choose(logits, 0)
    done = (tok == eos_id) | ~active
    state = DecodeState(
        step=jnp.int32(1), tokens=jnp.zeros((b, plan.new_tokens), jnp.int32).at[:, 0].set(tok),
        last=tok, done=done, n_out=jnp.where(tok == eos_id, 0, 1) * active, cache=cache)

    def cond(s: DecodeState) -> jax.Array:
        return (s.step < max_new_tokens) & ~jnp.all(s.done)

    def body(s: DecodeState) -> DecodeState:
        logits, cache = _decode_step(config, params, weights, s.last, s.cache, s0 + s.step - 1,
                                     cache_len)
        new = jnp.where(s.done, 0, choose(logits, s.step))
        return DecodeState(
            step=s.step + 1, tokens=jax.lax.dynamic_update_slice(s.tokens, new[:, None],
                                                                 (0, s.step)),
            last=new, done=s.done | (new == eos_id), n_out=s.n_out + (~s.done & (new != eos_id)),
            cache=cache)

    state = jax.lax.while_loop(cond, body, state)
    return state.tokens, state.n_out


def _beam(config, plan, params, weights, pixel_values, text, lengths, active, max_new_tokens,
          eos_id, length_penalty):
    """Beam search; a finished hypothesis scores sum(logp) / len ** length_penalty."""
    nb = plan.beam_size
    b, tp = text.shape
    rep = lambda a: jnp.repeat(a, nb, axis=0)  # noqa: E731
    s0 = config.num_image_tokens + tp
    cache_len = s0 + plan.new_tokens
    logits, cache = _prefill(config, params, pixel_values, text, lengths, cache_len)
    cache = jax.tree.map(rep, cache)
    n = plan.new_tokens
    neg = jnp.float32(-1e30)

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

    def state_after(step, logp, s_seq, s_logp, f_seq, f_len, f_score, cache) -> BeamState:
        alive_seq, alive_logp, parent, tok, fin_seq, fin_len, fin_score = expand(
            step, logp, s_seq, s_logp, f_seq, f_len, f_score)
        return BeamState(step=step + 1, alive_seq=alive_seq, alive_logp=alive_logp,
                         parent=parent, last=tok, fin_seq=fin_seq, fin_len=fin_len,
                         fin_score=fin_score, cache=cache)

    state = state_after(
        jnp.int32(0), jax.nn.log_softmax(rep(logits)).reshape(b, nb, -1),
        jnp.zeros((b, nb, n), jnp.int32),
        jnp.where(jnp.arange(nb) == 0, 0.0, neg)[None].repeat(b, 0),
        jnp.zeros((b, nb, n), jnp.int32), jnp.zeros((b, nb), jnp.int32), jnp.full((b, nb), neg),
        cache)

    def cond(s: BeamState) -> jax.Array:
        best_alive = jnp.max(s.alive_logp, 1) / (s.step.astype(jnp.float32) + 1) ** length_penalty
        hopeless = jnp.all((jnp.min(s.fin_score, 1) >= best_alive) | ~active)
        return (s.step < max_new_tokens) & ~hopeless

    def body(s: BeamState) -> BeamState:
        rows = (s.parent + jnp.arange(b)[:, None] * nb).reshape(-1)
        cache = jax.tree.map(lambda a: a[rows], s.cache)
        logits, cache = _decode_step(config, params, weights, s.last.reshape(-1), cache,
                                     s0 + s.step - 1, cache_len)
        logp = jax.nn.log_softmax(logits).reshape(b, nb, -1)
        return state_after(s.step, logp, s.alive_seq, s.alive_logp, s.fin_seq, s.fin_len,
                           s.fin_score, cache)

    s = jax.lax.while_loop(cond, body, state)
    # rows without a finished hypothesis fall back to their best alive beam (no EOS reached)
    alive_score = s.alive_logp / s.step.astype(jnp.float32) ** length_penalty
    use_alive = jnp.max(s.fin_score, 1) <= neg / 2
    best_f = jnp.argmax(s.fin_score, 1)
    best_a = jnp.argmax(alive_score, 1)
    seq = jnp.where(use_alive[:, None],
                    jnp.take_along_axis(s.alive_seq, best_a[:, None, None], 1)[:, 0],
                    jnp.take_along_axis(s.fin_seq, best_f[:, None, None], 1)[:, 0])
    length = jnp.where(use_alive, s.step,
                       jnp.take_along_axis(s.fin_len, best_f[:, None], 1)[:, 0])
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
