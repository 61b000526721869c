"""PaliGemma 2 in plain functional JAX: SigLIP vision tower, linear projector, Gemma 2 decoder.

Parameters are a plain nested dict (a pytree) using big_vision's names and layouts, so a
big_vision `.npz` loads by renaming nothing, and sharding rules / LoRA can key off the paths.
Layers are stacked along a leading axis (Lv vision layers, L text layers):

    img/embedding/kernel                         (p, p, 3, Wv)   patch conv, HWIO
    img/embedding/bias                           (Wv,)
    img/pos_embedding                            (1, P, Wv)      learned, P = (size // p) ** 2
    img/Transformer/encoderblock/LayerNorm_0/{scale,bias}                         (Lv, Wv)
    img/Transformer/encoderblock/LayerNorm_1/{scale,bias}                         (Lv, Wv)
    img/Transformer/encoderblock/MultiHeadDotProductAttention_0/{query,key,value}/kernel
                                                 (Lv, Wv, Nv, Hv)    .../bias (Lv, Nv, Hv)
    img/Transformer/encoderblock/MultiHeadDotProductAttention_0/out/kernel (Lv, Nv, Hv, Wv)
                                                                     .../out/bias (Lv, Wv)
    img/Transformer/encoderblock/MlpBlock_0/Dense_0/{kernel (Lv, Wv, Mv), bias (Lv, Mv)}
    img/Transformer/encoderblock/MlpBlock_0/Dense_1/{kernel (Lv, Mv, Wv), bias (Lv, Wv)}
    img/Transformer/encoder_norm/{scale,bias}    (Wv,)
    img/head/{kernel (Wv, D), bias (D,)}         the multimodal projector
    llm/embedder/input_embedding                 (V, D)          tied with the output layer
    llm/layers/attn/q_einsum/w                   (L, N, D, H)
    llm/layers/attn/kv_einsum/w                  (L, 2, K, D, H)
    llm/layers/attn/attn_vec_einsum/w            (L, N, H, D)
    llm/layers/mlp/gating_einsum                 (L, 2, D, F)    [0] gate (GELU), [1] up
    llm/layers/mlp/linear                        (L, F, D)
    llm/layers/{pre_attention_norm,post_attention_norm,pre_ffw_norm,post_ffw_norm}/scale (L, D)
    llm/final_norm/scale                         (D,)

Axis letters in einsums: B batch, T query length, S key/value length, N query heads, K key/value
heads, G query heads per kv head (N = K * G), H head dim, D model width, F MLP width, V vocab.

The input layout is PaliGemma's prefix-LM: [image tokens] [BOS prefix "\\n"] [suffix EOS] [pad];
image and prefix attend to each other fully, suffix tokens attend causally (`make_attn_mask`).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from modeling.activations import constrain
from modeling.config import ModelConfig, TextConfig, VisionConfig

Params = dict[str, Any]

# The masked-logit value shared by big_vision and the gemma library.
MASK_VALUE = -2.3819763e38


# ----------------------------------------------------------------------------- parameters


def param_shapes(config: ModelConfig) -> Params:
    """The parameter tree as nested dicts of shape tuples (see the module docstring)."""
    v, t = config.vision, config.text
    lv, wv, nv, hv, mv = v.depth, v.width, v.num_heads, v.head_dim, v.mlp_dim
    L, D, N, K, H, F = t.depth, t.width, t.num_heads, t.num_kv_heads, t.head_dim, t.mlp_dim
    block = {
        "LayerNorm_0": {"scale": (lv, wv), "bias": (lv, wv)},
        "LayerNorm_1": {"scale": (lv, wv), "bias": (lv, wv)},
        "MultiHeadDotProductAttention_0": {
            **{name: {"kernel": (lv, wv, nv, hv), "bias": (lv, nv, hv)}
               for name in ("query", "key", "value")},
            "out": {"kernel": (lv, nv, hv, wv), "bias": (lv, wv)},
        },
        "MlpBlock_0": {
            "Dense_0": {"kernel": (lv, wv, mv), "bias": (lv, mv)},
            "Dense_1": {"kernel": (lv, mv, wv), "bias": (lv, wv)},
        },
    }
    return {
        "img": {
            "embedding": {"kernel": (v.patch_size, v.patch_size, 3, wv), "bias": (wv,)},
            "pos_embedding": (1, v.num_patches, wv),
            "Transformer": {"encoderblock": block,
                            "encoder_norm": {"scale": (wv,), "bias": (wv,)}},
            "head": {"kernel": (wv, D), "bias": (D,)},
        },
        "llm": {
            "embedder": {"input_embedding": (t.vocab_size, D)},
            "layers": {
                "attn": {
                    "q_einsum": {"w": (L, N, D, H)},
                    "kv_einsum": {"w": (L, 2, K, D, H)},
                    "attn_vec_einsum": {"w": (L, N, H, D)},
                },
                "mlp": {"gating_einsum": (L, 2, D, F), "linear": (L, F, D)},
                **{name: {"scale": (L, D)} for name in
                   ("pre_attention_norm", "post_attention_norm", "pre_ffw_norm", "post_ffw_norm")},
            },
            "final_norm": {"scale": (D,)},
        },
    }


def _is_shape(x: Any) -> bool:
    return isinstance(x, tuple)


def init_params(config: ModelConfig, rng: jax.Array, dtype: Any = jnp.float32) -> Params:
    """Random parameters: normal(0.02) weights, zero biases and zero (i.e. identity) norm scales.

    LayerNorm scales start at 1; RMSNorm scales at 0 because Gemma multiplies by (1 + scale).
    The embedding table is normal(1/sqrt(D)) so that logits start O(1). (One jitted program.)
    """
    return _init_jit(config, rng, jnp.dtype(dtype))


@functools.partial(jax.jit, static_argnums=(0, 2))
def _init_jit(config: ModelConfig, rng: jax.Array, dtype: Any) -> Params:
    shapes = param_shapes(config)
    paths_and_shapes = jax.tree_util.tree_flatten_with_path(shapes, is_leaf=_is_shape)[0]
    keys = jax.random.split(rng, len(paths_and_shapes))
    leaves = []
    for (path, shape), key in zip(paths_and_shapes, keys, strict=True):
        name = "/".join(str(getattr(p, "key", p)) for p in path)
        leaf = name.rsplit("/", 1)[-1]
        if "LayerNorm" in name or "encoder_norm" in name:
            value = jnp.ones(shape) if leaf == "scale" else jnp.zeros(shape)
        elif leaf in ("bias", "scale"):
            value = jnp.zeros(shape)
        elif leaf == "input_embedding":
            value = jax.random.normal(key, shape) * config.text.width ** -0.5
        else:
            value = jax.random.normal(key, shape) * 0.02
        leaves.append(value.astype(dtype))
    treedef = jax.tree_util.tree_structure(shapes, is_leaf=_is_shape)
    return jax.tree_util.tree_unflatten(treedef, leaves)


def abstract_params(config: ModelConfig, dtype: Any = jnp.float32) -> Params:
    """`jax.ShapeDtypeStruct` leaves (no memory), e.g. for counting or sharding plans."""
    return jax.eval_shape(lambda: init_params(config, jax.random.key(0), dtype))


def count_params(params: Params) -> int:
    """Number of scalars in a (possibly abstract) parameter tree."""
    return sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(params))


# ----------------------------------------------------------------------------- vision tower


def _layer_norm(cfg: VisionConfig, x: jax.Array, scale: jax.Array, bias: jax.Array) -> jax.Array:
    xf = x.astype(jnp.float32)
    mean = jnp.mean(xf, -1, keepdims=True)
    if cfg.fast_variance:  # flax: E[x^2] - E[x]^2
        var = jnp.maximum(jnp.mean(xf * xf, -1, keepdims=True) - mean * mean, 0.0)
    else:
        var = jnp.mean(jnp.square(xf - mean), -1, keepdims=True)
    y = (xf - mean) * (jax.lax.rsqrt(var + cfg.layernorm_eps) * scale.astype(jnp.float32))
    return (y + bias.astype(jnp.float32)).astype(x.dtype)


def dense(x: jax.Array, w: jax.Array) -> jax.Array:
    """x [..., Din] @ w [Din, Dout] as one 2-D matmul over the flattened leading axes.

    The same sums as `x @ w`; written 2-D because XLA's CPU backend lays out the backward pass
    of a 3-D x @ w with transposed elementwise fusions (a GeGLU block's gradient ran ~3x slower;
    see docs/training.md)."""
    return (x.reshape(-1, x.shape[-1]) @ w).reshape(*x.shape[:-1], w.shape[-1])


def _vit_block(cfg: VisionConfig, p: Params, x: jax.Array) -> jax.Array:
    dt = x.dtype
    att = p["MultiHeadDotProductAttention_0"]
    b, s, d = x.shape
    n, hd = cfg.num_heads, cfg.head_dim
    h = _layer_norm(cfg, x, p["LayerNorm_0"]["scale"], p["LayerNorm_0"]["bias"])
    names = ("query", "key", "value")
    w_qkv = jnp.concatenate([att[k]["kernel"].astype(dt).reshape(d, n * hd) for k in names], 1)
    b_qkv = jnp.concatenate([att[k]["bias"].astype(dt).reshape(n * hd) for k in names])
    qkv = (dense(h, w_qkv) + b_qkv).reshape(b, s, 3, n, hd)
    q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
    q = q / jnp.sqrt(jnp.asarray(cfg.head_dim, dt))  # flax scales q before the product
    logits = jnp.einsum("BTNH,BSNH->BNTS", q, k)
    probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(dt)
    o = jnp.einsum("BNTS,BSNH->BTNH", probs, v).reshape(b, s, n * hd)
    x = x + dense(o, att["out"]["kernel"].astype(dt).reshape(n * hd, d)) + att["out"]["bias"].astype(dt)
    mlp = p["MlpBlock_0"]
    h = _layer_norm(cfg, x, p["LayerNorm_1"]["scale"], p["LayerNorm_1"]["bias"])
    h = dense(h, mlp["Dense_0"]["kernel"].astype(dt)) + mlp["Dense_0"]["bias"].astype(dt)
    h = jax.nn.gelu(h, approximate=True)
    return x + dense(h, mlp["Dense_1"]["kernel"].astype(dt)) + mlp["Dense_1"]["bias"].astype(dt)


def encode_image(config: ModelConfig, img: Params, pixel_values: jax.Array, *,
                 unroll: bool = False) -> jax.Array:
    """[B, size, size, 3] in [-1, 1] -> projected image tokens [B, P, D] (compute dtype).

    Patches are taken row-major (token = row * grid + col); no CLS token, no pooling; the
    projector output is added to the sequence unscaled (big_vision). `unroll` unrolls the
    scan over the encoder blocks (see `forward`)."""
    cfg = config.vision
    dt = jnp.dtype(config.compute_dtype)
    # The stride-p VALID convolution written as a matmul over flattened (row, col, channel)
    # patches: the same sums, and its gradient is a plain matmul where XLA's CPU backend would
    # run a slow dilated convolution for the kernel's gradient.
    b, height, width, channels = pixel_values.shape
    p = cfg.patch_size
    gh, gw = height // p, width // p
    patches = pixel_values[:, : gh * p, : gw * p].astype(dt).reshape(b, gh, p, gw, p, channels)
    patches = patches.transpose(0, 1, 3, 2, 4, 5).reshape(b, gh * gw, p * p * channels)
    kernel = img["embedding"]["kernel"].astype(dt).reshape(p * p * channels, -1)
    x = dense(patches, kernel) + img["embedding"]["bias"].astype(dt)
    x = x + img["pos_embedding"].astype(dt)

    def body(x: jax.Array, p: Params) -> tuple[jax.Array, None]:
        return constrain(_vit_block(cfg, p, constrain(x))), None

    x, _ = jax.lax.scan(body, x, img["Transformer"]["encoderblock"], unroll=unroll)
    norm = img["Transformer"]["encoder_norm"]
    x = _layer_norm(cfg, x, norm["scale"], norm["bias"])
    return dense(x, img["head"]["kernel"].astype(dt)) + img["head"]["bias"].astype(dt)


# ----------------------------------------------------------------------------- Gemma 2 pieces


def rms_norm(cfg: TextConfig, x: jax.Array, scale: jax.Array) -> jax.Array:
    """Gemma RMSNorm in float32: x / sqrt(mean(x^2) + eps) * (1 + scale)."""
    xf = x.astype(jnp.float32)
    var = jnp.mean(xf * xf, axis=-1, keepdims=True) + cfg.norm_eps
    inv = jax.lax.rsqrt(var) if cfg.rms_norm_rsqrt else 1.0 / jnp.sqrt(var)
    return (xf * inv * (1.0 + scale.astype(jnp.float32))).astype(x.dtype)


def rope_sincos(positions: jax.Array, head_dim: int, base: float) -> tuple[jax.Array, jax.Array]:
    """sin, cos [B, T, 1, H/2] of rotary embedding angles positions / base ** (2i / H)."""
    half = head_dim // 2
    timescale = base ** (2.0 * jnp.arange(half, dtype=jnp.float32) / head_dim)
    rad = positions.astype(jnp.float32)[..., None, None] / timescale
    return jnp.sin(rad), jnp.cos(rad)


def rotate(x: jax.Array, sin: jax.Array, cos: jax.Array) -> jax.Array:
    """Apply rotary embedding (half-split convention) given `rope_sincos` tables."""
    x1, x2 = jnp.split(x.astype(jnp.float32), 2, axis=-1)
    return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], -1).astype(x.dtype)


def apply_rope(x: jax.Array, positions: jax.Array, base: float) -> jax.Array:
    """Rotary embedding, half-split convention. x [B, T, N, H], positions [B, T]."""
    return rotate(x, *rope_sincos(positions, x.shape[-1], base))


def embed_tokens(config: ModelConfig, table: jax.Array, ids: jax.Array,
                 gather: Callable[[jax.Array, jax.Array], jax.Array] | None = None) -> jax.Array:
    """table[ids] * sqrt(D), the factor rounded to the table's dtype as every reference does.
    `gather(table, ids)`, when given, looks the rows up instead of `jnp.take` (its values are
    the table's, in any dtype: `cpu_kernels.gather_bf16`)."""
    x = jnp.take(table, ids, axis=0) if gather is None else gather(table, ids)
    x = (x * jnp.asarray(math.sqrt(config.text.width), dtype=table.dtype)).astype(table.dtype)
    return x.astype(config.compute_dtype)


def fused_block_weights(cfg: TextConfig, p: Params, dtype: Any) -> dict[str, jax.Array]:
    """One decoder block's matmul-ready 2-D weights in `dtype`: "qkv" [D, (N + 2K) H] (q | k | v),
    "o" [N H, D], "gate_up" [D, 2F] (GELU gate | up), "down" [F, D]. Built from the checkpoint
    layout on every call (small copies next to the activations they multiply)."""
    D, N, K, H = cfg.width, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
    attn, mlp = p["attn"], p["mlp"]
    q = attn["q_einsum"]["w"].astype(dtype).transpose(1, 0, 2).reshape(D, N * H)
    kv = attn["kv_einsum"]["w"].astype(dtype).transpose(2, 0, 1, 3).reshape(D, 2 * K * H)
    gating = mlp["gating_einsum"].astype(dtype)
    return {
        "qkv": jnp.concatenate([q, kv], axis=1),
        "o": attn["attn_vec_einsum"]["w"].astype(dtype).reshape(N * H, D),
        "gate_up": jnp.concatenate([gating[0], gating[1]], axis=1),
        "down": mlp["linear"].astype(dtype),
    }


def split_qkv(cfg: TextConfig, qkv: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """[..., (N + 2K) H] -> q [..., N, H], k [..., K, H], v [..., K, H] (no RoPE yet)."""
    N, K, H = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
    lead = qkv.shape[:-1]
    return (qkv[..., : N * H].reshape(*lead, N, H), qkv[..., N * H: (N + K) * H].reshape(*lead, K, H),
            qkv[..., (N + K) * H:].reshape(*lead, K, H))


def geglu(cfg: TextConfig, gate_up: jax.Array) -> jax.Array:
    """GELU(tanh)(gate) * up of a fused [..., 2F] projection."""
    f = cfg.mlp_dim
    return jax.nn.gelu(gate_up[..., :f], approximate=True) * gate_up[..., f:]


def project_qkv(cfg: TextConfig, w: dict[str, jax.Array], x: jax.Array, positions: jax.Array
                ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """q [B,T,N,H] (RoPE'd, pre-scaled when `query_scale_before_matmul`), k, v [B,T,K,H];
    `w` from `fused_block_weights`."""
    q, k, v = split_qkv(cfg, dense(x, w["qkv"]))
    q = apply_rope(q, positions, cfg.rope_base)
    if cfg.query_scale_before_matmul:
        q = q * jnp.asarray(cfg.query_pre_attn_scalar ** -0.5, x.dtype)
    k = apply_rope(k, positions, cfg.rope_base)
    return q, k, v


def attend(cfg: TextConfig, q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array
           ) -> jax.Array:
    """Grouped-query attention with logit soft-cap. mask [B, T, S] bool -> [B, T, N, H].

    The G query heads that share a kv head are folded into the query axis, so both products
    are plain batched matmuls over [B, K] with the key axis last: XLA's CPU backend otherwise
    transposes the [B, K, G, T, S] probabilities in the backward pass.
    """
    b, t, n, h = q.shape
    s, kh = k.shape[1], k.shape[2]
    g = n // kh
    q = q.reshape(b, t, kh, g, h).transpose(0, 2, 3, 1, 4).reshape(b, kh, g * t, h)
    logits = jnp.einsum("BKQH,BSKH->BKQS", q, k).astype(jnp.float32)
    if not cfg.query_scale_before_matmul:
        logits = logits * (cfg.query_pre_attn_scalar ** -0.5)
    if cfg.attn_logits_softcap:
        logits = jnp.tanh(logits / cfg.attn_logits_softcap) * cfg.attn_logits_softcap
    mask = jnp.broadcast_to(mask[:, None, None], (b, 1, g, t, s)).reshape(b, 1, g * t, s)
    logits = jnp.where(mask, logits, MASK_VALUE)
    probs = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
    out = jnp.einsum("BKQS,BSKH->BKQH", probs, v)
    return out.reshape(b, kh, g, t, h).transpose(0, 3, 1, 2, 4).reshape(b, t, n, h)


def decoder_block(cfg: TextConfig, p: Params, x: jax.Array, positions: jax.Array,
                  attention: Callable[[jax.Array, jax.Array, jax.Array], jax.Array],
                  queries_from: int = 0) -> jax.Array:
    """One Gemma 2 block; `attention(q, k, v)` supplies the keys it attends to (mask, cache).

    queries_from=n computes the block's output only for positions n and after (every position
    still supplies keys and values): a last layer whose first n outputs nobody reads skips their
    queries, attention rows and MLP; the result is x[:, n:] of the full block's."""
    w = fused_block_weights(cfg, p, x.dtype)
    h = rms_norm(cfg, x, p["pre_attention_norm"]["scale"])
    q, k, v = project_qkv(cfg, w, h, positions)
    if queries_from:
        x, q = x[:, queries_from:], q[:, queries_from:]
    a = attention(q, k, v)
    a = dense(a.reshape(*a.shape[:-2], -1), w["o"])
    x = x + rms_norm(cfg, a, p["post_attention_norm"]["scale"])
    h = rms_norm(cfg, x, p["pre_ffw_norm"]["scale"])
    m = dense(geglu(cfg, dense(h, w["gate_up"])), w["down"])
    return x + rms_norm(cfg, m, p["post_ffw_norm"]["scale"])


def output_logits(config: ModelConfig, llm: Params, x: jax.Array) -> jax.Array:
    """Final RMSNorm, tied output embedding, optional final soft-cap -> float32 logits."""
    cfg = config.text
    x = rms_norm(cfg, x, llm["final_norm"]["scale"])
    table = llm["embedder"]["input_embedding"]
    logits = jnp.einsum("BTD,VD->BTV", x, table.astype(x.dtype)).astype(jnp.float32)
    if cfg.final_logits_softcap:
        logits = jnp.tanh(logits / cfg.final_logits_softcap) * cfg.final_logits_softcap
    return logits


# ----------------------------------------------------------------------------- masks


def make_attn_mask(input_mask: jax.Array, mask_ar: jax.Array) -> jax.Array:
    """Prefix-LM mask [B, S, S]: i may attend to j iff cumsum(mask_ar)[j] <= cumsum(mask_ar)[i]
    and both are real tokens.

    mask_ar 0 marks tokens of the bidirectional prefix, 1 tokens that attend causally:
      [[1 1 1 1 1 1]]: plain causal attention.
      [[0 0 0 1 1 1]]: prefix-LM; the first 3 tokens attend to each other, the last 3 causally.
    """
    cum = jnp.cumsum(mask_ar, axis=1)
    mask = cum[:, None, :] <= cum[:, :, None]
    valid = input_mask[:, None, :] & input_mask[:, :, None]
    return mask & valid


def sliding_window_mask(cfg: TextConfig, positions: jax.Array, key_positions: jax.Array,
                        in_prefix: jax.Array | None = None,
                        key_in_prefix: jax.Array | None = None) -> jax.Array:
    """[B, T, S] True where a key is inside the local window of a query (see TextConfig)."""
    delta = positions[:, :, None] - key_positions[:, None, :]
    if cfg.sliding_window_prefix_exempt:
        ok = delta < cfg.sliding_window
        if in_prefix is not None:
            ok = ok | (in_prefix[:, :, None] & key_in_prefix[:, None, :])
        return ok
    return jnp.abs(delta) < cfg.sliding_window


# ----------------------------------------------------------------------------- forward


def embed_inputs(config: ModelConfig, params: Params, pixel_values: jax.Array,
                 input_ids: jax.Array, *, unroll: bool = False,
                 gather: Callable[[jax.Array, jax.Array], jax.Array] | None = None) -> jax.Array:
    """Concatenate image tokens and embedded text: [B, P + T, D] in the compute dtype
    (`gather`: see `embed_tokens`)."""
    zimg = encode_image(config, params["img"], pixel_values, unroll=unroll)
    table = params["llm"]["embedder"]["input_embedding"]
    if config.image_embed_hf_roundtrip:  # transformers 4.x: /sqrt(D) then * dtype(sqrt(D))
        root = math.sqrt(config.text.width)
        zimg = (zimg / root).astype(table.dtype) * jnp.asarray(root, table.dtype)
        zimg = zimg.astype(config.compute_dtype)
    ztxt = embed_tokens(config, table, input_ids, gather)
    return jnp.concatenate([zimg, ztxt], axis=1)


def sequence_layout(config: ModelConfig, token_type_ids: jax.Array,
                    input_mask: jax.Array | None) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(valid [B,S], mask_ar [B,S], positions [B,S]) for image + text of a right-padded batch."""
    b, t = token_type_ids.shape
    p = config.num_image_tokens
    if input_mask is None:
        input_mask = jnp.ones((b, t), bool)
    valid = jnp.concatenate([jnp.ones((b, p), bool), input_mask.astype(bool)], axis=1)
    mask_ar = jnp.concatenate([jnp.zeros((b, p), jnp.int32),
                               token_type_ids.astype(jnp.int32)], axis=1)
    positions = jnp.cumsum(valid, axis=1) - 1 + config.text.position_offset
    return valid, mask_ar, positions


def decode_layers(config: ModelConfig, llm: Params, x: jax.Array, positions: jax.Array,
                  mask: jax.Array, sliding_mask: jax.Array, remat: bool = False,
                  unroll: bool = False, outputs_from: int = 0, with_kv: bool = False,
                  take_layer: Callable[[Params, int, jax.Array], Params] | None = None
                  ) -> jax.Array | tuple[jax.Array, tuple[jax.Array, jax.Array]]:
    """All decoder blocks over a whole sequence (scan over the stacked layers); `remat`
    recomputes each block's activations in the backward pass instead of storing them;
    `unroll` unrolls the scan (see `forward`). Returns x[:, outputs_from:] of the last block,
    whose queries for the positions before `outputs_from` are never computed; with `with_kv`,
    also every layer's keys and values (k, v), each [L, B, S, K, H] (the prefill's caches).
    `take_layer(layers, i, x)`, when given, supplies layer i's parameters from the stacked ones
    and its input x, the layers running unrolled (`generate.streamed_layer`)."""
    cfg = config.text

    def block(x: jax.Array, p: Params, layer: jax.Array, queries_from: int):
        layer_mask = mask
        if cfg.sliding_window is not None:
            layer_mask = jnp.where(layer % 2 == 0, mask & sliding_mask, mask)
        layer_mask = layer_mask[:, queries_from:]
        kv: dict[str, jax.Array] = {}

        def attention(q: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array:
            kv["k"], kv["v"] = k, v
            return attend(cfg, q, k, v, layer_mask)

        x = constrain(decoder_block(cfg, p, constrain(x), positions, attention, queries_from))
        return x, ((kv["k"], kv["v"]) if with_kv else None)

    if remat:
        block = jax.checkpoint(block, policy=jax.checkpoint_policies.nothing_saveable,
                               static_argnums=(3,))
    if take_layer is not None:
        kvs = []
        for i in range(cfg.depth):
            queries_from = outputs_from if i == cfg.depth - 1 else 0
            x, kv = block(x, take_layer(llm["layers"], i, x), jnp.asarray(i), queries_from)
            kvs.append(kv)
        if not with_kv:
            return x
        return x, jax.tree_util.tree_map(lambda *a: jnp.stack(a), *kvs)
    scanned = cfg.depth - 1 if outputs_from else cfg.depth
    layers = jax.tree_util.tree_map(lambda a: a[:scanned], llm["layers"]) if outputs_from else llm["layers"]
    x, kv = jax.lax.scan(lambda x, inputs: block(x, *inputs, 0), x, (layers, jnp.arange(scanned)),
                         unroll=unroll)
    if outputs_from:
        last = jax.tree_util.tree_map(lambda a: a[-1], llm["layers"])
        x, kv_last = block(x, last, jnp.asarray(cfg.depth - 1), outputs_from)
        if with_kv:
            kv = jax.tree_util.tree_map(lambda a, b: jnp.concatenate([a, b[None]]), kv, kv_last)
    return (x, kv) if with_kv else x


def forward(config: ModelConfig, params: Params, pixel_values: jax.Array, input_ids: jax.Array,
            token_type_ids: jax.Array, input_mask: jax.Array | None = None, *,
            remat: bool = False, unroll: bool = False) -> jax.Array:
    """Logits [N, T, V] (float32) for the text positions. Pure, differentiable, jit-friendly.

    pixel_values [N, H, W, 3] in [-1, 1]; input_ids [N, T] text tokens (BOS, prefix, "\\n",
    suffix, EOS, pads); token_type_ids [N, T] 0 for the prefix, 1 for the suffix; input_mask
    [N, T] marks real tokens of a right-padded batch (None: all real). logits[:, i] predicts
    token i + 1. remat=True rematerialises each decoder block in the backward pass (memory for
    compute when training). unroll=True unrolls the scans over the layer stacks: the same
    result, a program that grows with depth, and for the few-layer CPU presets a faster
    training step (XLA then fuses across layers and skips the loop's stacked-residual copies).
    """
    x = embed_inputs(config, params, pixel_values, input_ids, unroll=unroll)
    valid, mask_ar, positions = sequence_layout(config, token_type_ids, input_mask)
    mask = make_attn_mask(valid, mask_ar)
    sliding = jnp.ones_like(mask)
    if config.text.sliding_window is not None:
        in_prefix = jnp.cumsum(mask_ar, axis=1) == 0
        sliding = sliding_window_mask(config.text, positions, positions, in_prefix, in_prefix)
    x = decode_layers(config, params["llm"], x, positions, mask, sliding, remat=remat, unroll=unroll,
                      outputs_from=config.num_image_tokens)
    return output_logits(config, params["llm"], x)
