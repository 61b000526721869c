"""PaliGemma 2 in Flax NNX: SigLIP vision tower, linear projector, Gemma 2 decoder.

The model is a tree of `nnx.Module`s (`PaliGemma2` > `SigLIP` + `Gemma2`) whose `nnx.Param`s
carry big_vision's names and layouts, so `nnx.state(model, nnx.Param)` is exactly big_vision's
parameter tree and a big_vision `.npz` loads by renaming nothing. The same tree as plain nested
dicts of arrays ("params", what loaders, bundles and checkpoints hold) goes back and forth with
`model_from_params` / `params_of`. Layers are stacked along a leading axis (Lv vision layers,
L text layers; built with `nnx.vmap`, applied with a scan):

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

Every `nnx.Param` carries its logical axis names as sharding metadata (`out_sharding`, e.g.
("layers", "heads", "embed", "head_dim") for q_einsum; `axis_names` reads them all), which
`finetune.sharding` maps onto the device mesh. Sharding is never applied eagerly at creation.

Axis letters in einsums: B batch, T query length, S key/value length, R cache slots, N query
heads, K key/value heads, G query heads per kv head (N = K * G), H head dim, D model width,
F MLP width, V vocab.

The input layout is PaliGemma's prefix-LM: [image tokens] [BOS prefix "\\n"] [suffix EOS] [pad];
image and prefix attend to each other fully, suffix tokens attend causally (`make_attn_mask`).

One decoder block (`block_apply`) serves training, prefill and decode: given no cache it attends
over its own keys and values under a mask and returns them (the prefill's cache); given a
`KVCache` it writes the new token's key and value into it and attends over the cache.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from modeling import cpu_kernels
from modeling.activations import constrain
from modeling.config import ModelConfig, TextConfig, VisionConfig

Params = dict[str, Any]

# The masked-logit value shared by big_vision and the gemma library.
MASK_VALUE = -2.3819763e38

Init = Callable[[jax.Array, tuple[int, ...], Any], jax.Array]
_normal = nnx.initializers.normal(0.02)


def _param(rngs: nnx.Rngs, init: Init, shape: tuple[int, ...], dtype: Any,
           axes: tuple[str | None, ...]) -> nnx.Param:
    """An `nnx.Param` initialised by `init`, annotated with its logical axis names."""
    return nnx.Param(init(rngs.params(), shape, dtype), out_sharding=axes, eager_sharding=False)


def _zeros(key: jax.Array, shape: tuple[int, ...], dtype: Any) -> jax.Array:
    return jnp.zeros(shape, dtype)


def _ones(key: jax.Array, shape: tuple[int, ...], dtype: Any) -> jax.Array:
    return jnp.ones(shape, dtype)


def stack_layers(depth: int, make: Callable[[nnx.Rngs], nnx.Module],
                 rngs: nnx.Rngs) -> nnx.Module:
    """`depth` copies of a block as one module whose params gain a leading "layers" axis."""

    @nnx.split_rngs(splits=depth)
    @nnx.vmap(in_axes=(0,), out_axes=0, transform_metadata={nnx.PARTITION_NAME: "layers"})
    def build(rngs: nnx.Rngs) -> nnx.Module:
        return make(rngs)

    return build(rngs)


def _scan_layers(stack: nnx.Module, body: Callable[[nnx.Module, Any, Any], tuple[Any, Any]],
                 carry: Any, xs: Any = None, *, unroll: bool = False,
                 remat: bool = False) -> tuple[Any, Any]:
    """`lax.scan` of body(layer, carry, x) over the layers of a module built by `stack_layers`:
    the stack is split into its graph and its stacked state, and each step merges one layer's
    slice."""
    graphdef, state = nnx.split(stack)

    def step(carry: Any, inputs: Any) -> tuple[Any, Any]:
        # The carry is the [B, ...] activations: pinned where a layer begins and ends when the
        # caller traces inside `modeling.activations.activation_sharding` (else unchanged).
        layer_state, x = inputs
        carry, out = body(nnx.merge(graphdef, layer_state), constrain(carry), x)
        return constrain(carry), out

    if remat:
        step = jax.checkpoint(step, policy=jax.checkpoint_policies.nothing_saveable)
    return jax.lax.scan(step, carry, (state, xs), unroll=unroll)


@dataclasses.dataclass(frozen=True)
class MatmulLayout:
    """How a stored weight is used as one matmul x [..., In] @ W [In, Out]: `order` lists its
    axes (of one layer, no stacking axis) with the `inputs` input axes first."""

    order: tuple[int, ...]
    inputs: int
    # The first stored axis lists parts laid side by side in Out (gating_einsum: gate | up):
    # built by concatenation, whose gradient XLA's CPU backend computes without the transposes
    # and copies the equivalent transpose costs.
    parts: bool = False

    def matrix(self, w: jax.Array) -> jax.Array:
        """The stored weight as [In, Out]."""
        if self.parts:
            return jnp.concatenate(list(w), axis=-1)
        w = w.transpose(self.order)
        return w.reshape(int(np.prod(w.shape[: self.inputs])), -1)

    def unmatrix(self, m: jax.Array, shape: tuple[int, ...]) -> jax.Array:
        """An [In, Out] matrix back in the stored layout `shape` (inverse of `matrix`)."""
        m = m.reshape(tuple(shape[axis] for axis in self.order))
        return m.transpose(tuple(int(i) for i in np.argsort(self.order)))


class LoRA(nnx.LoRA):
    """A low-rank adapter of one weight: `nnx.LoRA` (parameters `lora_a` [In, r] and `lora_b`
    [r, Out], `nnx.LoRAParam`s) plus its scale alpha / r. It sits next to the weight it adapts,
    as `<weight name>_lora` (`modeling.lora.add_lora`), and the model reads the weight as
    W + scale * lora_a @ lora_b in W's matmul orientation (`weight_matrix`): one matmul per
    weight as without an adapter, so the decoder block and the CPU kernels are unchanged."""

    def __init__(self, in_features: int, rank: int, out_features: int, *, alpha: float,
                 rngs: nnx.Rngs) -> None:
        meta = {"out_sharding": (None, None), "eager_sharding": False}
        super().__init__(in_features, rank, out_features, rngs=rngs,
                         a_initializer=nnx.initializers.normal(in_features ** -0.5),
                         a_metadata=meta, b_metadata=meta)
        self.scale = alpha / rank

    def delta(self, dtype: Any) -> jax.Array:
        """scale * lora_a @ lora_b [In, Out] in `dtype`."""
        a, b = self.lora_a[...].astype(dtype), self.lora_b[...].astype(dtype)
        return (a @ b) * jnp.asarray(self.scale, dtype)


def weight_matrix(owner: nnx.Module, name: str, dtype: Any) -> jax.Array:
    """Weight `name` of `owner` as an [In, Out] matrix in `dtype` (`owner.layouts[name]`),
    with its LoRA delta added when an adapter `<name>_lora` sits next to it."""
    m = owner.layouts[name].matrix(getattr(owner, name)[...].astype(dtype))
    adapter = getattr(owner, f"{name}_lora", None)
    return m if adapter is None else m + adapter.delta(dtype)


def dense(x: jax.Array, w: Any) -> jax.Array:
    """x [..., Din] @ w [Din, Dout] as one 2-D matmul over the flattened leading axes; with the
    CPU decode kernel when `w` was packed for it (`cpu_kernels.pack`), in place for a
    `cpu_kernels.Bf16Block` (a tuple of them: their outputs side by side).

    The same sums as `x @ w`; written 2-D because XLA's CPU backend lays out the backward pass
    of a 3-D x @ w with transposed elementwise fusions (a GeGLU block's gradient ran ~3x slower;
    see docs/training.md)."""
    flat = x.reshape(-1, x.shape[-1])
    if isinstance(w, tuple):  # blocks side by side: generate's streamed bfloat16 weights
        out = jnp.concatenate([dense(flat, part) for part in w], axis=-1)
    elif isinstance(w, cpu_kernels.Bf16Block):  # read in place (`cpu_kernels.matmul_bf16`)
        out = cpu_kernels.matmul_bf16(flat, w).astype(x.dtype)
    elif isinstance(w, cpu_kernels.Panels):
        out = cpu_kernels.matmul(flat, w)
    else:
        out = flat @ w
    return out.reshape(*x.shape[:-1], out.shape[-1])


# ----------------------------------------------------------------------------- vision tower


class LayerNorm(nnx.Module):
    """SigLIP LayerNorm in float32 (`VisionConfig.fast_variance` picks the variance formula)."""

    def __init__(self, cfg: VisionConfig, *, rngs: nnx.Rngs, dtype: Any = jnp.float32) -> None:
        self.cfg = cfg
        self.scale = _param(rngs, _ones, (cfg.width,), dtype, ("embed",))
        self.bias = _param(rngs, _zeros, (cfg.width,), dtype, ("embed",))

    def __call__(self, x: jax.Array) -> jax.Array:
        xf = x.astype(jnp.float32)
        mean = jnp.mean(xf, -1, keepdims=True)
        if self.cfg.fast_variance:  # flax: E[x^2] - E[x]^2
            var = jnp.maximum(jnp.mean(xf * xf, -1, keepdims=True) - mean * mean, 0.0)
        else:
            var = jnp.mean(jnp.square(xf - mean), -1, keepdims=True)
        inv = jax.lax.rsqrt(var + self.cfg.layernorm_eps)
        y = (xf - mean) * (inv * self.scale[...].astype(jnp.float32))
        return (y + self.bias[...].astype(jnp.float32)).astype(x.dtype)


class Dense(nnx.Module):
    """kernel [*in, *out] + bias [*out]; `matrix` views the kernel as [prod(in), prod(out)]."""

    def __init__(self, kernel_shape: tuple[int, ...], kernel_axes: tuple[str | None, ...],
                 bias_rank: int, *, rngs: nnx.Rngs, dtype: Any = jnp.float32) -> None:
        self.kernel = _param(rngs, _normal, kernel_shape, dtype, kernel_axes)
        self.bias = _param(rngs, _zeros, kernel_shape[-bias_rank:], dtype,
                           kernel_axes[-bias_rank:])
        self.bias_rank = bias_rank
        self.layouts = {"kernel": MatmulLayout(tuple(range(len(kernel_shape))),
                                               len(kernel_shape) - bias_rank)}

    def matrix(self, dtype: Any) -> jax.Array:
        return weight_matrix(self, "kernel", dtype)

    def __call__(self, x: jax.Array, residual: jax.Array | None = None) -> jax.Array:
        """x @ kernel + bias; with `residual`, residual + x @ kernel + bias (in that order, as
        big_vision rounds it)."""
        y = dense(x, self.matrix(x.dtype))
        if residual is not None:
            y = residual + y
        return y + self.bias[...].astype(x.dtype).reshape(-1)


class VitAttention(nnx.Module):
    """SigLIP multi-head self-attention (big_vision's MultiHeadDotProductAttention)."""

    def __init__(self, cfg: VisionConfig, *, rngs: nnx.Rngs, dtype: Any = jnp.float32) -> None:
        self.cfg = cfg
        w, n, h = cfg.width, cfg.num_heads, cfg.head_dim
        axes = ("embed", "heads", "head_dim")
        self.query = Dense((w, n, h), axes, 2, rngs=rngs, dtype=dtype)
        self.key = Dense((w, n, h), axes, 2, rngs=rngs, dtype=dtype)
        self.value = Dense((w, n, h), axes, 2, rngs=rngs, dtype=dtype)
        self.out = Dense((n, h, w), ("heads", "head_dim", "embed"), 1, rngs=rngs, dtype=dtype)

    def __call__(self, x: jax.Array, residual: jax.Array) -> jax.Array:
        """residual + attention(x)."""
        dt = x.dtype
        b, s, _ = x.shape
        n, hd = self.cfg.num_heads, self.cfg.head_dim
        parts = (self.query, self.key, self.value)
        w_qkv = jnp.concatenate([p.matrix(dt) for p in parts], 1)
        b_qkv = jnp.concatenate([p.bias[...].astype(dt).reshape(n * hd) for p in parts])
        qkv = (dense(x, w_qkv) + b_qkv).reshape(b, s, 3, n, hd)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        q = q / jnp.sqrt(jnp.asarray(hd, dt))  # flax scales q before the product
        logits = jnp.einsum("BTNH,BSNH->BNTS", q, k)
        probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(dt)
        o = jnp.einsum("BNTS,BSNH->BTNH", probs, v).reshape(b, s, n * hd)
        return self.out(o, residual)


class MlpBlock(nnx.Module):
    """SigLIP MLP: Dense, GELU(tanh), Dense."""

    def __init__(self, cfg: VisionConfig, *, rngs: nnx.Rngs, dtype: Any = jnp.float32) -> None:
        self.Dense_0 = Dense((cfg.width, cfg.mlp_dim), ("embed", "mlp"), 1, rngs=rngs, dtype=dtype)
        self.Dense_1 = Dense((cfg.mlp_dim, cfg.width), ("mlp", "embed"), 1, rngs=rngs, dtype=dtype)

    def __call__(self, x: jax.Array, residual: jax.Array) -> jax.Array:
        """residual + MLP(x)."""
        return self.Dense_1(jax.nn.gelu(self.Dense_0(x), approximate=True), residual)


class EncoderBlock(nnx.Module):
    """One pre-norm SigLIP block (attribute names are big_vision's parameter names)."""

    def __init__(self, cfg: VisionConfig, *, rngs: nnx.Rngs, dtype: Any = jnp.float32) -> None:
        self.LayerNorm_0 = LayerNorm(cfg, rngs=rngs, dtype=dtype)
        self.MultiHeadDotProductAttention_0 = VitAttention(cfg, rngs=rngs, dtype=dtype)
        self.LayerNorm_1 = LayerNorm(cfg, rngs=rngs, dtype=dtype)
        self.MlpBlock_0 = MlpBlock(cfg, rngs=rngs, dtype=dtype)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = self.MultiHeadDotProductAttention_0(self.LayerNorm_0(x), x)
        return self.MlpBlock_0(self.LayerNorm_1(x), x)


class Encoder(nnx.Module):
    """The stacked SigLIP blocks and the final LayerNorm."""

    def __init__(self, cfg: VisionConfig, *, rngs: nnx.Rngs, dtype: Any = jnp.float32) -> None:
        self.encoderblock = stack_layers(
            cfg.depth, lambda r: EncoderBlock(cfg, rngs=r, dtype=dtype), rngs)
        self.encoder_norm = LayerNorm(cfg, rngs=rngs, dtype=dtype)

    def __call__(self, x: jax.Array, *, unroll: bool = False) -> jax.Array:
        x, _ = _scan_layers(self.encoderblock, lambda block, x, _: (block(x), None), x,
                            unroll=unroll)
        return self.encoder_norm(x)


class SigLIP(nnx.Module):
    """SigLIP vision tower with PaliGemma's linear projector (`head`) to the text width."""

    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs, dtype: Any = jnp.float32) -> None:
        cfg = config.vision
        self.config = config
        p, w = cfg.patch_size, cfg.width
        self.embedding = Dense((p, p, 3, w), (None, None, None, "embed"), 1, rngs=rngs,
                               dtype=dtype)
        self.pos_embedding = _param(rngs, _normal, (1, cfg.num_patches, w), dtype,
                                    (None, None, "embed"))
        self.Transformer = Encoder(cfg, rngs=rngs, dtype=dtype)
        self.head = Dense((w, config.text.width), ("embed", "vocab_embed"), 1, rngs=rngs,
                          dtype=dtype)

    def __call__(self, pixel_values: jax.Array, *, unroll: bool = False) -> jax.Array:
        """[B, size, size, 3] in [-1, 1] -> projected image tokens [B, P, D] (compute dtype).

        Patches are taken row-major (token = row * grid + col); no CLS token, no pooling; the
        projector output is added to the sequence unscaled (big_vision). `unroll` unrolls the
        scan over the encoder blocks (see `forward`)."""
        dt = jnp.dtype(self.config.compute_dtype)
        # The stride-p VALID convolution written as a matmul over flattened (row, col, channel)
        # patches: the same sums, and its gradient is a plain matmul where XLA's CPU backend
        # would run a slow dilated convolution for the kernel's gradient.
        b, height, width, channels = pixel_values.shape
        p = self.config.vision.patch_size
        gh, gw = height // p, width // p
        patches = pixel_values[:, : gh * p, : gw * p].astype(dt).reshape(b, gh, p, gw, p, channels)
        patches = patches.transpose(0, 1, 3, 2, 4, 5).reshape(b, gh * gw, p * p * channels)
        x = self.embedding(patches) + self.pos_embedding[...].astype(dt)
        return self.head(self.Transformer(x, unroll=unroll))


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


def embed_tokens(config: ModelConfig, table: jax.Array, ids: jax.Array,
                 gather: Callable[[jax.Array, jax.Array], jax.Array] | None = None) -> jax.Array:
    """table[ids] * sqrt(D), the factor rounded to the table's dtype as every reference does.
    `gather(table, ids)`, when given, looks the rows up instead of `jnp.take` (its values are
    the table's, in any dtype: `cpu_kernels.gather_bf16`)."""
    x = jnp.take(table, ids, axis=0) if gather is None else gather(table, ids)
    x = (x * jnp.asarray(math.sqrt(config.text.width), dtype=table.dtype)).astype(table.dtype)
    return x.astype(config.compute_dtype)


def split_qkv(cfg: TextConfig, qkv: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """[..., (N + 2K) H] -> q [..., N, H], k [..., K, H], v [..., K, H] (no RoPE yet)."""
    N, K, H = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
    lead = qkv.shape[:-1]
    return (qkv[..., : N * H].reshape(*lead, N, H),
            qkv[..., N * H: (N + K) * H].reshape(*lead, K, H),
            qkv[..., (N + K) * H:].reshape(*lead, K, H))


def geglu(cfg: TextConfig, gate_up: jax.Array) -> jax.Array:
    """GELU(tanh)(gate) * up of a fused [..., 2F] projection."""
    f = cfg.mlp_dim
    return jax.nn.gelu(gate_up[..., :f], approximate=True) * gate_up[..., f:]


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


@flax.struct.dataclass
class KVCache:
    """One layer's keys and values, heads before slots so attention needs no transposes.

    k, v: [B, K, R, H] (R slots: the whole cache, or a sliding-window layer's ring buffer).
    A decode step writes its token at one slot shared by every row (see `modeling.generate`).
    """

    k: jax.Array
    v: jax.Array


def attend_cache(cfg: TextConfig, q: jax.Array, cache: KVCache, visible: jax.Array) -> jax.Array:
    """One query token per row against a cache: q [B, 1, N, H], visible [B, R] -> [B, 1, N, H].

    With float32 caches that the CPU decode kernel takes (`cpu_kernels.attention_fits`), the
    kernel computes it; the caller decides whether to use it by packing the block's weights."""
    b, _, n, h = q.shape
    kh = cache.k.shape[1]
    qg = q.reshape(b, kh, n // kh, h)
    scale = 1.0 if cfg.query_scale_before_matmul else cfg.query_pre_attn_scalar ** -0.5
    logits = jnp.einsum("BKGH,BKSH->BKGS", qg, cache.k.astype(q.dtype)).astype(jnp.float32)
    if not cfg.query_scale_before_matmul:
        logits = logits * scale
    if cfg.attn_logits_softcap:
        logits = jnp.tanh(logits / cfg.attn_logits_softcap) * cfg.attn_logits_softcap
    logits = jnp.where(visible[:, None, None, :], logits, MASK_VALUE)
    probs = jax.nn.softmax(logits, axis=-1).astype(q.dtype)
    return jnp.einsum("BKGS,BKSH->BKGH", probs, cache.v.astype(q.dtype)).reshape(b, 1, n, h)


def _attend_cache_kernel(cfg: TextConfig, q: jax.Array, cache: KVCache, visible: jax.Array
                         ) -> jax.Array | None:
    """`attend_cache` by the CPU decode kernel, or None where it does not fit this cache."""
    b, _, n, h = q.shape
    kh = cache.k.shape[1]
    qg = q.reshape(b, kh, n // kh, h)
    if not cpu_kernels.attention_fits(qg, cache.k):
        return None
    scale = 1.0 if cfg.query_scale_before_matmul else cfg.query_pre_attn_scalar ** -0.5
    out = cpu_kernels.attention(qg, cache.k, cache.v, visible, scale=scale,
                                softcap=cfg.attn_logits_softcap, mask_value=MASK_VALUE)
    return out.astype(q.dtype).reshape(b, 1, n, h)


BlockWeights = dict[str, Any]


def block_apply(cfg: TextConfig, w: BlockWeights, x: jax.Array,
                rope: tuple[jax.Array, jax.Array], mask: jax.Array, *,
                cache: KVCache | None = None, slot: jax.Array | int = 0,
                queries_from: int = 0) -> tuple[jax.Array, KVCache]:
    """One Gemma 2 decoder block, for training, prefill and decode alike.

    w: `DecoderBlock.fused_weights` (matrices possibly packed for the CPU kernel); x [B, T, D];
    rope: `rope_sincos` of the T tokens' positions, [B, T, 1, H/2] each.

    - cache=None (training, prefill): mask [B, T, T]; every token attends to the visible keys
      among the T; returns (x, this call's keys and values as a `KVCache` [B, K, T, H], which
      XLA drops where nobody reads them). queries_from=n computes outputs only for positions n
      and after (every position still supplies keys and values): a last layer whose first n
      outputs nobody reads skips their queries, attention rows and MLP; the result is
      x[:, n:] of the full block's.
    - cache given (decode, T = 1): mask [B, R] marks the visible slots (after this write); the
      token's key and value are written at `slot` and the token attends to the cache; returns
      (x, the updated cache).
    """
    h = rms_norm(cfg, x, w["pre_attention_norm"])
    q, k, v = split_qkv(cfg, dense(h, w["qkv"]))
    q = rotate(q, *rope)
    if cfg.query_scale_before_matmul:
        q = q * jnp.asarray(cfg.query_pre_attn_scalar ** -0.5, q.dtype)
    k = rotate(k, *rope)
    if cache is None:
        new_cache = KVCache(k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3))
        if queries_from:
            x, q, mask = x[:, queries_from:], q[:, queries_from:], mask[:, queries_from:]
        a = attend(cfg, q, k, v, mask)
    else:
        b, _, kh, hd = k.shape
        write = lambda c, new: jax.lax.dynamic_update_slice(  # noqa: E731
            c, new.reshape(b, kh, 1, hd).astype(c.dtype), (0, 0, slot, 0))
        new_cache = KVCache(write(cache.k, k), write(cache.v, v))
        a = None
        if isinstance(w["qkv"], cpu_kernels.Panels):
            a = _attend_cache_kernel(cfg, q, new_cache, mask)
        if a is None:
            a = attend_cache(cfg, q, new_cache, mask)
    a = dense(a.reshape(*a.shape[:-2], -1), w["o"])
    x = x + rms_norm(cfg, a, w["post_attention_norm"])
    h = rms_norm(cfg, x, w["pre_ffw_norm"])
    m = dense(geglu(cfg, dense(h, w["gate_up"])), w["down"])
    return x + rms_norm(cfg, m, w["post_ffw_norm"]), new_cache


class Einsum(nnx.Module):
    """A bare weight `w` used in an einsum (the gemma library's name); `layout` says how the
    decoder block multiplies by it."""

    def __init__(self, shape: tuple[int, ...], axes: tuple[str | None, ...],
                 layout: MatmulLayout, *, rngs: nnx.Rngs, dtype: Any = jnp.float32) -> None:
        self.w = _param(rngs, _normal, shape, dtype, axes)
        self.layouts = {"w": layout}


class Attention(nnx.Module):
    """Gemma 2 grouped-query attention weights (computed in `block_apply`)."""

    def __init__(self, cfg: TextConfig, *, rngs: nnx.Rngs, dtype: Any = jnp.float32) -> None:
        D, N, K, H = cfg.width, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        self.q_einsum = Einsum((N, D, H), ("heads", "embed", "head_dim"),
                               MatmulLayout((1, 0, 2), 1), rngs=rngs, dtype=dtype)
        self.kv_einsum = Einsum((2, K, D, H), (None, "kv_heads", "embed", "head_dim"),
                                MatmulLayout((2, 0, 1, 3), 1), rngs=rngs, dtype=dtype)
        self.attn_vec_einsum = Einsum((N, H, D), ("heads", "head_dim", "embed"),
                                      MatmulLayout((0, 1, 2), 2), rngs=rngs, dtype=dtype)


class FeedForward(nnx.Module):
    """Gemma 2 GeGLU MLP weights: gating_einsum [2, D, F] (gate | up), linear [F, D]."""

    def __init__(self, cfg: TextConfig, *, rngs: nnx.Rngs, dtype: Any = jnp.float32) -> None:
        D, F = cfg.width, cfg.mlp_dim
        self.gating_einsum = _param(rngs, _normal, (2, D, F), dtype, (None, "embed", "mlp"))
        self.linear = _param(rngs, _normal, (F, D), dtype, ("mlp", "embed"))
        # gate_up [D, 2F] = gate | up side by side; down [F, D].
        self.layouts = {"gating_einsum": MatmulLayout((1, 0, 2), 1, parts=True),
                        "linear": MatmulLayout((0, 1), 1)}


class RMSNorm(nnx.Module):
    """Gemma RMSNorm weight: `scale`, applied as (1 + scale) (zero init = identity)."""

    def __init__(self, width: int, *, rngs: nnx.Rngs, dtype: Any = jnp.float32) -> None:
        self.scale = _param(rngs, _zeros, (width,), dtype, ("embed",))


NORMS = ("pre_attention_norm", "post_attention_norm", "pre_ffw_norm", "post_ffw_norm")


class DecoderBlock(nnx.Module):
    """One Gemma 2 block: pre/post-norm attention and pre/post-norm GeGLU MLP."""

    def __init__(self, cfg: TextConfig, *, rngs: nnx.Rngs, dtype: Any = jnp.float32) -> None:
        self.cfg = cfg
        self.pre_attention_norm = RMSNorm(cfg.width, rngs=rngs, dtype=dtype)
        self.attn = Attention(cfg, rngs=rngs, dtype=dtype)
        self.post_attention_norm = RMSNorm(cfg.width, rngs=rngs, dtype=dtype)
        self.pre_ffw_norm = RMSNorm(cfg.width, rngs=rngs, dtype=dtype)
        self.mlp = FeedForward(cfg, rngs=rngs, dtype=dtype)
        self.post_ffw_norm = RMSNorm(cfg.width, rngs=rngs, dtype=dtype)

    def fused_weights(self, dtype: Any) -> BlockWeights:
        """Matmul-ready 2-D weights in `dtype`: "qkv" [D, (N + 2K) H] (q | k | v), "o" [N H, D],
        "gate_up" [D, 2F] (GELU gate | up), "down" [F, D]; and the four norm scales as stored.
        Built from the checkpoint layout on every call (small copies next to the activations
        they multiply)."""
        attn, mlp = self.attn, self.mlp
        return {
            "qkv": jnp.concatenate([weight_matrix(attn.q_einsum, "w", dtype),
                                    weight_matrix(attn.kv_einsum, "w", dtype)], axis=1),
            "o": weight_matrix(attn.attn_vec_einsum, "w", dtype),
            "gate_up": weight_matrix(mlp, "gating_einsum", dtype),
            "down": weight_matrix(mlp, "linear", dtype),
            **{name: getattr(self, name).scale[...] for name in NORMS},
        }

    def __call__(self, x: jax.Array, rope: tuple[jax.Array, jax.Array], mask: jax.Array, *,
                 cache: KVCache | None = None, slot: jax.Array | int = 0,
                 queries_from: int = 0) -> tuple[jax.Array, KVCache]:
        """`block_apply` with this block's weights in x's dtype."""
        return block_apply(self.cfg, self.fused_weights(x.dtype), x, rope, mask, cache=cache,
                           slot=slot, queries_from=queries_from)


class Embedder(nnx.Module):
    """The token embedding, tied with the output layer."""

    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs, dtype: Any = jnp.float32) -> None:
        t = config.text
        self.config = config
        init = nnx.initializers.normal(t.width ** -0.5)  # logits start O(1)
        self.input_embedding = _param(rngs, init, (t.vocab_size, t.width), dtype,
                                      ("vocab", "embed"))

    def encode(self, ids: jax.Array,
               gather: Callable[[jax.Array, jax.Array], jax.Array] | None = None) -> jax.Array:
        """ids [B, T] -> [B, T, D] in the compute dtype (`embed_tokens`)."""
        return embed_tokens(self.config, self.input_embedding[...], ids, gather)


class Gemma2(nnx.Module):
    """The Gemma 2 decoder: embedder, stacked decoder blocks, final norm, tied output layer."""

    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs, dtype: Any = jnp.float32) -> None:
        t = config.text
        self.config = config
        self.embedder = Embedder(config, rngs=rngs, dtype=dtype)
        self.layers = stack_layers(t.depth, lambda r: DecoderBlock(t, rngs=r, dtype=dtype), rngs)
        self.final_norm = RMSNorm(t.width, rngs=rngs, dtype=dtype)

    def __call__(self, x: jax.Array, positions: jax.Array, mask: jax.Array,
                 sliding_mask: jax.Array, *, remat: bool = False, unroll: bool = False,
                 outputs_from: int = 0, with_kv: bool = False,
                 take_layer: Callable[[nnx.State, int, jax.Array], nnx.State] | None = None
                 ) -> jax.Array | tuple[jax.Array, KVCache]:
        """All decoder blocks over a whole sequence x [B, S, D] (a scan over the stacked
        layers); `remat` recomputes each block's activations in the backward pass instead of
        storing them; `unroll` unrolls the scan (see `forward`). Returns x[:, outputs_from:] of
        the last block, whose queries for the positions before `outputs_from` are never
        computed; with `with_kv`, also every layer's keys and values as one `KVCache` with
        arrays [L, B, K, S, H] (the prefill's caches). `take_layer(state, i, x)`, when given,
        supplies layer i's parameters from the stacked state and its input x, the layers
        running unrolled (`generate.streamed_layer`)."""
        cfg = self.config.text
        rope = rope_sincos(positions, cfg.head_dim, cfg.rope_base)

        def block(layer: DecoderBlock, x: jax.Array, index: jax.Array, queries_from: int):
            layer_mask = mask
            if cfg.sliding_window is not None:
                layer_mask = jnp.where(index % 2 == 0, mask & sliding_mask, mask)
            return layer(x, rope, layer_mask, queries_from=queries_from)

        graphdef, state = nnx.split(self.layers)
        if take_layer is not None:
            kvs = []
            for i in range(cfg.depth):
                queries_from = outputs_from if i == cfg.depth - 1 else 0
                layer = nnx.merge(graphdef, take_layer(state, i, x))
                x, kv = block(layer, x, jnp.asarray(i), queries_from)
                kvs.append(kv)
            return (x, jax.tree.map(lambda *a: jnp.stack(a), *kvs)) if with_kv else x
        scanned = cfg.depth - 1 if outputs_from else cfg.depth
        if outputs_from:
            head = nnx.merge(graphdef, jax.tree.map(lambda a: a[:scanned], state))
        else:
            head = self.layers
        x, kv = _scan_layers(head, lambda layer, x, i: block(layer, x, i, 0), x,
                             jnp.arange(scanned), unroll=unroll, remat=remat)
        if outputs_from:
            last = nnx.merge(graphdef, jax.tree.map(lambda a: a[-1], state))
            step = functools.partial(block, queries_from=outputs_from)
            if remat:
                step = jax.checkpoint(step, policy=jax.checkpoint_policies.nothing_saveable)
            x, kv_last = step(last, x, jnp.asarray(cfg.depth - 1))
            if with_kv:
                kv = jax.tree.map(lambda a, b: jnp.concatenate([a, b[None]]), kv, kv_last)
        return (x, kv) if with_kv else x

    def layer(self, index: int) -> DecoderBlock:
        """Decoder block `index` (a view on slice `index` of the stacked parameters)."""
        graphdef, state = nnx.split(self.layers)
        return nnx.merge(graphdef, jax.tree.map(lambda a: a[index], state))

    def logits(self, x: jax.Array, table: cpu_kernels.Panels | None = None,
               matmul_t: Callable[[jax.Array, jax.Array], jax.Array] | None = None) -> jax.Array:
        """Final RMSNorm, tied output embedding, optional final soft-cap -> float32 logits
        [..., V] of hidden states x [..., D]; `table` is the embedding transposed to [D, V] and
        packed for the CPU kernel (`modeling.generate.decode_weights`), else the embedding is
        read as is, by `matmul_t(x [M, D], embedding)` when given (`cpu_kernels.matmul_t_bf16`).
        """
        cfg = self.config.text
        x = rms_norm(cfg, x, self.final_norm.scale[...])
        if table is not None:
            logits = dense(x, table)
        elif matmul_t is not None:
            embedding = self.embedder.input_embedding[...]
            flat = matmul_t(x.reshape(-1, x.shape[-1]), embedding)
            logits = flat.reshape(*x.shape[:-1], flat.shape[-1])
        else:
            embedding = self.embedder.input_embedding[...].astype(x.dtype)
            logits = jax.lax.dot_general(x, embedding, (((x.ndim - 1,), (1,)), ((), ())))
        logits = logits.astype(jnp.float32)
        if cfg.final_logits_softcap:
            logits = jnp.tanh(logits / cfg.final_logits_softcap) * cfg.final_logits_softcap
        return logits


class PaliGemma2(nnx.Module):
    """PaliGemma 2: `img` (SigLIP + projector) and `llm` (Gemma 2), big_vision's two subtrees.

    PaliGemma2(config, rngs=nnx.Rngs(0)) initialises random parameters in `param_dtype`:
    normal(0.02) weights, zero biases, LayerNorm scales 1, RMSNorm scales 0 (Gemma multiplies
    by 1 + scale), and the embedding table normal(1/sqrt(D)) so that logits start O(1).
    """

    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs,
                 param_dtype: Any = jnp.float32) -> None:
        self.config = config
        self.img = SigLIP(config, rngs=rngs, dtype=param_dtype)
        self.llm = Gemma2(config, rngs=rngs, dtype=param_dtype)

    def embed(self, pixel_values: jax.Array, input_ids: jax.Array, *, unroll: bool = False,
              gather: Callable[[jax.Array, jax.Array], jax.Array] | None = None) -> jax.Array:
        """Concatenate image tokens and embedded text: [B, P + T, D] in the compute dtype
        (`gather`: see `embed_tokens`)."""
        config = self.config
        zimg = self.img(pixel_values, unroll=unroll)
        table = self.llm.embedder.input_embedding[...]
        if config.image_embed_hf_roundtrip:  # transformers 4.x: /sqrt(D) then * dtype(sqrt(D))
            root = math.sqrt(config.text.width)
            zimg = (zimg / root).astype(table.dtype) * jnp.asarray(root, table.dtype)
            zimg = zimg.astype(config.compute_dtype)
        return jnp.concatenate([zimg, self.llm.embedder.encode(input_ids, gather)], axis=1)

    def __call__(self, pixel_values: jax.Array, input_ids: jax.Array, token_type_ids: jax.Array,
                 input_mask: jax.Array | None = None, *, remat: bool = False,
                 unroll: bool = False) -> jax.Array:
        """Logits [N, T, V] (float32) for the text positions; see `forward`."""
        config = self.config
        x = self.embed(pixel_values, input_ids, unroll=unroll)
        valid, mask_ar, positions = sequence_layout(config, token_type_ids, input_mask)
        mask = make_attn_mask(valid, mask_ar)
        sliding = jnp.ones_like(mask)
        if config.text.sliding_window is not None:
            in_prefix = jnp.cumsum(mask_ar, axis=1) == 0
            sliding = sliding_window_mask(config.text, positions, positions, in_prefix, in_prefix)
        x = self.llm(x, positions, mask, sliding, remat=remat, unroll=unroll,
                     outputs_from=config.num_image_tokens)
        return self.llm.logits(x)


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


# ----------------------------------------------------------------------------- params bridge


@functools.cache
def graphdefs(config: ModelConfig) -> dict[str, nnx.GraphDef]:
    """The graph (structure, no arrays) of the model and of its `img` and `llm` subtrees."""
    model = nnx.eval_shape(lambda: PaliGemma2(config, rngs=nnx.Rngs(0)))
    return {"model": nnx.split(model)[0], "img": nnx.split(model.img)[0],
            "llm": nnx.split(model.llm)[0]}


def model_from_params(config: ModelConfig, params: Params, part: str = "model") -> Any:
    """The NNX model (or its "img" / "llm" part) around a nested dict of arrays laid out as
    `param_shapes` (no copy; works under jit and on abstract arrays). A path missing from or
    extra to `params` is an error."""
    return nnx.merge(graphdefs(config)[part], params)


# The base weights: every `nnx.Param` but the LoRA adapters' (`nnx.LoRAParam` is a Param).
BASE = nnx.All(nnx.Param, nnx.Not(nnx.LoRAParam))


def params_of(model: nnx.Module) -> Params:
    """A model's base parameters as a nested dict of arrays (big_vision's tree, `param_shapes`;
    LoRA adapters are left out: `modeling.lora.merge_lora` folds them in)."""
    return nnx.to_pure_dict(nnx.state(model, BASE))


def axis_names(config: ModelConfig) -> dict[str, tuple[str | None, ...]]:
    """{'a/b/c': logical axis names} of every parameter of a `PaliGemma2` (`axis_names_of`),
    e.g. 'llm/layers/attn/q_einsum/w': ("layers", "heads", "embed", "head_dim")."""
    return axis_names_of(nnx.eval_shape(lambda: PaliGemma2(config, rngs=nnx.Rngs(0))))


def axis_names_of(model: nnx.Module) -> dict[str, tuple[str | None, ...]]:
    """{'a/b/c': logical axis names} of every `nnx.Param` of `model` that has them (its
    `out_sharding` metadata), LoRA adapters included."""
    out = {}
    for path, var in nnx.to_flat_state(nnx.state(model, nnx.Param)):
        names = var.get_metadata().get("out_sharding")
        if names is not None:
            out["/".join(str(p) for p in path)] = tuple(names)
    return out


def param_shapes(config: ModelConfig) -> Params:
    """The parameter tree as nested dicts of shape tuples (see the module docstring)."""
    return jax.tree.map(lambda a: tuple(a.shape), abstract_params(config))


def init_params(config: ModelConfig, rng: jax.Array, dtype: Any = jnp.float32) -> Params:
    """Random parameters of `PaliGemma2` as a nested dict (one jitted program)."""
    return _init_jit(config, rng, jnp.dtype(dtype))


@functools.partial(jax.jit, static_argnums=(0, 2))
def _init_jit(config: ModelConfig, rng: jax.Array, dtype: Any) -> Params:
    return params_of(PaliGemma2(config, rngs=nnx.Rngs(params=rng), param_dtype=dtype))


def abstract_params(config: ModelConfig, dtype: Any = jnp.float32) -> Params:
    """`jax.ShapeDtypeStruct` leaves (no memory), e.g. for counting or sharding plans."""
    model = nnx.eval_shape(lambda: PaliGemma2(config, rngs=nnx.Rngs(0), param_dtype=dtype))
    return params_of(model)


def count_params(params: Params) -> int:
    """Number of scalars in a (possibly abstract) parameter tree."""
    return sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(params))


# ----------------------------------------------------------------------------- functional API


def encode_image(config: ModelConfig, img: Params, pixel_values: jax.Array, *,
                 unroll: bool = False) -> jax.Array:
    """`SigLIP` over the `img` subtree of a params dict: [B, size, size, 3] -> [B, P, D]."""
    return model_from_params(config, img, "img")(pixel_values, unroll=unroll)


def embed_inputs(config: ModelConfig, params: Params, pixel_values: jax.Array,
                 input_ids: jax.Array, *, unroll: bool = False) -> jax.Array:
    """`PaliGemma2.embed` over a params dict: image tokens then embedded text, [B, P + T, D]."""
    return model_from_params(config, params).embed(pixel_values, input_ids, unroll=unroll)


def decode_layers(config: ModelConfig, llm: Params, x: jax.Array, positions: jax.Array,
                  mask: jax.Array, sliding_mask: jax.Array, remat: bool = False,
                  unroll: bool = False, outputs_from: int = 0, with_kv: bool = False
                  ) -> jax.Array | tuple[jax.Array, KVCache]:
    """`Gemma2.__call__` over the `llm` subtree of a params dict."""
    return model_from_params(config, llm, "llm")(
        x, positions, mask, sliding_mask, remat=remat, unroll=unroll, outputs_from=outputs_from,
        with_kv=with_kv)


def forward(config: ModelConfig, params: Params, pixel_values: jax.Array, input_ids: jax.Array,
            token_type_ids: jax.Array, input_mask: jax.Array | None = None, *,
            remat: bool = False, unroll: bool = False) -> jax.Array:
    """Logits [N, T, V] (float32) for the text positions. Pure, differentiable, jit-friendly:
    `PaliGemma2` around `params` (a nested dict, `param_shapes`), called.

    pixel_values [N, H, W, 3] in [-1, 1]; input_ids [N, T] text tokens (BOS, prefix, "\\n",
    suffix, EOS, pads); token_type_ids [N, T] 0 for the prefix, 1 for the suffix; input_mask
    [N, T] marks real tokens of a right-padded batch (None: all real). logits[:, i] predicts
    token i + 1. remat=True rematerialises each decoder block in the backward pass (memory for
    compute when training). unroll=True unrolls the scans over the layer stacks: the same
    result, a program that grows with depth, and for the few-layer CPU presets a faster
    training step (XLA then fuses across layers and skips the loop's stacked-residual copies).
    """
    model = model_from_params(config, params)
    return model(pixel_values, input_ids, token_type_ids, input_mask, remat=remat, unroll=unroll)
