"""PaliGemma 2 model configurations: frozen dataclasses, JSON round-trip, and the official presets.

Every place where the two references (google-research/big_vision, which trained and released
PaliGemma 2, and Hugging Face transformers, its port) compute differently is an explicit field
here (see ../shared/reference/paligemma2-spec.md section 1.12). Defaults follow big_vision;
`ModelConfig.hf_compatible()` returns the transformers behaviour.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields, replace
from typing import Any

# PaliGemma's vocabulary: 256000 Gemma pieces + 1024 <locNNNN> + 128 <segNNN>.
PALIGEMMA_VOCAB_SIZE = 257152


@dataclass(frozen=True)
class VisionConfig:
    """SigLIP ViT (So400m/14 in the official models); the linear projector is part of the tower.

    fast_variance: big_vision's flax LayerNorm computes var = E[x^2] - E[x]^2 (True);
    transformers uses the two-pass variance (False).
    """

    image_size: int = 224
    patch_size: int = 14
    width: int = 1152
    depth: int = 27
    mlp_dim: int = 4304
    num_heads: int = 16
    layernorm_eps: float = 1e-6
    fast_variance: bool = True

    @property
    def num_patches(self) -> int:
        """Image tokens per image: (image_size // patch_size) ** 2."""
        return (self.image_size // self.patch_size) ** 2

    @property
    def head_dim(self) -> int:
        return self.width // self.num_heads


@dataclass(frozen=True)
class TextConfig:
    """Gemma 2 decoder.

    query_pre_attn_scalar: queries are multiplied by query_pre_attn_scalar ** -0.5
      (head_dim for 3B/10B; width // num_heads = 144 for the 28B model).
    query_scale_before_matmul: big_vision scales q before q.k (True); transformers scales the
      q.k product (False). Same maths, different rounding.
    attn_logits_softcap / final_logits_softcap: tanh soft-caps (None or 0 disables). The official
      Gemma 2 value of the final cap is 30, but big_vision applies it only when extending the
      decode cache, its transfer configs set it to 0, and transformers 5.x's
      PaliGemmaForConditionalGeneration never applies it; our presets therefore use None.
      When set, it is applied on every path (training, prefill, decode).
    sliding_window: window of the local (even-index) layers, None for big_vision (which does not
      implement it). sliding_window_prefix_exempt: True = transformers 5.x (a key is visible when
      q - k < window, or when query and key are both in the bidirectional prefix);
      False = gemma library (|q - k| < window everywhere).
    position_offset: first position id; big_vision 0, transformers PaliGemma 1.
    rms_norm_rsqrt: False = big_vision's 1 / sqrt(var + eps); True = rsqrt (gemma lib, HF).
    """

    width: int = 2304
    depth: int = 26
    mlp_dim: int = 9216
    num_heads: int = 8
    num_kv_heads: int = 4
    head_dim: int = 256
    vocab_size: int = PALIGEMMA_VOCAB_SIZE
    query_pre_attn_scalar: int = 256
    query_scale_before_matmul: bool = True
    attn_logits_softcap: float | None = 50.0
    final_logits_softcap: float | None = None
    sliding_window: int | None = None
    sliding_window_prefix_exempt: bool = True
    rope_base: float = 10000.0
    norm_eps: float = 1e-6
    position_offset: int = 0
    rms_norm_rsqrt: bool = False

    def is_sliding(self, layer: int) -> bool:
        """Layers 0, 2, 4, ... are local (sliding-window) layers when a window is set."""
        return self.sliding_window is not None and layer % 2 == 0


@dataclass(frozen=True)
class ModelConfig:
    """A whole PaliGemma model: vision tower + projector + Gemma 2 decoder.

    compute_dtype: dtype of activations and matmuls ("float32" or "bfloat16"); params may have
      another dtype (e.g. float32 master weights with bfloat16 compute).
    cache_dtype: dtype of the decode KV cache; None = compute dtype (transformers). big_vision
      uses bfloat16.
    image_embed_hf_roundtrip: transformers 4.x divided image features by sqrt(width) and then
      multiplied all inputs by the (dtype-rounded) sqrt(width); True reproduces that rounding.
      big_vision and transformers 5.x add image tokens unscaled (False).
    """

    vision: VisionConfig = field(default_factory=VisionConfig)
    text: TextConfig = field(default_factory=TextConfig)
    compute_dtype: str = "float32"
    cache_dtype: str | None = None
    image_embed_hf_roundtrip: bool = False

    @property
    def num_image_tokens(self) -> int:
        return self.vision.num_patches

    @property
    def image_size(self) -> int:
        return self.vision.image_size

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict; `ModelConfig.from_dict(c.to_dict()) == c`."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        """Inverse of `to_dict`; unknown keys raise a ConfigError naming them."""
        data = dict(data)
        vision = _build(VisionConfig, data.pop("vision", {}), "vision")
        text = _build(TextConfig, data.pop("text", {}), "text")
        return _build(cls, {**data, "vision": vision, "text": text}, "model")

    def replace(self, **changes: Any) -> ModelConfig:
        """A copy with top-level fields changed (`vision=`/`text=` take dataclasses or dicts)."""
        for key in ("vision", "text"):
            if isinstance(changes.get(key), dict):
                changes[key] = replace(getattr(self, key), **changes[key])
        return replace(self, **changes)

    def hf_compatible(self) -> ModelConfig:
        """The same architecture with transformers' (5.x, eager attention) numerics."""
        return self.replace(
            vision={"fast_variance": False},
            text={"query_scale_before_matmul": False, "position_offset": 1, "rms_norm_rsqrt": True,
                  "final_logits_softcap": None},
        )


class ConfigError(ValueError):
    """A model configuration is inconsistent or has unknown fields."""


def _build(cls: type, data: dict[str, Any], where: str) -> Any:
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"unknown {where} config field(s): {', '.join(unknown)}")
    return cls(**data)


def _paligemma2(size: str, resolution: int) -> ModelConfig:
    text = {
        "3b": TextConfig(width=2304, depth=26, mlp_dim=9216, num_heads=8, num_kv_heads=4,
                         head_dim=256, query_pre_attn_scalar=256),
        "10b": TextConfig(width=3584, depth=42, mlp_dim=14336, num_heads=16, num_kv_heads=8,
                          head_dim=256, query_pre_attn_scalar=256),
        # The 27B Gemma scales queries by (width // num_heads) ** -0.5 = 144 ** -0.5.
        "28b": TextConfig(width=4608, depth=46, mlp_dim=36864, num_heads=32, num_kv_heads=16,
                          head_dim=128, query_pre_attn_scalar=4608 // 32),
    }[size]
    return ModelConfig(vision=VisionConfig(image_size=resolution), text=text)


PRESETS: dict[str, ModelConfig] = {
    f"paligemma2-{size}-{res}": _paligemma2(size, res)
    for size in ("3b", "10b", "28b")
    for res in (224, 448, 896)
}

# Tiny configurations for tests and CPU demos (random weights; small vocabularies fit a
# SentencePiece model trained by the tests).
PRESETS["tiny"] = ModelConfig(
    vision=VisionConfig(image_size=28, patch_size=14, width=32, depth=1, mlp_dim=64, num_heads=2),
    text=TextConfig(width=64, depth=3, mlp_dim=128, num_heads=4, num_kv_heads=2, head_dim=16,
                    vocab_size=1024, query_pre_attn_scalar=16, sliding_window=8),
)
# ~10M parameters: width 256, 4 vision + 4 text layers (the bench's small configuration).
PRESETS["tiny-10m"] = ModelConfig(
    vision=VisionConfig(image_size=224, patch_size=14, width=256, depth=4, mlp_dim=1024,
                        num_heads=4),
    text=TextConfig(width=256, depth=4, mlp_dim=1024, num_heads=4, num_kv_heads=2, head_dim=64,
                    vocab_size=16384, query_pre_attn_scalar=64, sliding_window=128),
)
# ~65M parameters: width 512, 8 vision + 8 text layers (the bench's larger configuration).
PRESETS["tiny-65m"] = ModelConfig(
    vision=VisionConfig(image_size=224, patch_size=14, width=512, depth=8, mlp_dim=2048,
                        num_heads=8),
    text=TextConfig(width=512, depth=8, mlp_dim=2048, num_heads=8, num_kv_heads=4, head_dim=64,
                    vocab_size=32768, query_pre_attn_scalar=64, sliding_window=256),
)
