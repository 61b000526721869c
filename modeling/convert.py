"""Writers for both official formats (transformers directory, big_vision `.npz`) and the
transformers config mapping (used by `radreport export`, tests and the demo).

Tensor names come from the name tables in `modeling.names`; the HF writer uses the Hub layout,
which every transformers version loads.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np

from modeling.config import ModelConfig, TextConfig, VisionConfig
from modeling.formats import flatten, write_npz, write_safetensors
from modeling.names import hf_tensor_specs

Array = np.ndarray


def hf_vocab_rows(vocab_size: int) -> int:
    """transformers adds an <image> token and pads the table to a multiple of 64 rows."""
    return int(math.ceil((vocab_size + 1) / 64) * 64)


def hf_config_dict(config: ModelConfig) -> dict:
    """A transformers `PaliGemmaConfig` (Gemma 2 text, SigLIP vision) as config.json content."""
    v, t = config.vision, config.text
    rows = hf_vocab_rows(t.vocab_size)
    text = {
        "model_type": "gemma2", "hidden_size": t.width, "intermediate_size": t.mlp_dim,
        "num_hidden_layers": t.depth, "num_attention_heads": t.num_heads,
        "num_key_value_heads": t.num_kv_heads, "head_dim": t.head_dim,
        "query_pre_attn_scalar": int(t.query_pre_attn_scalar),
        "attn_logit_softcapping": t.attn_logits_softcap,
        "final_logit_softcapping": t.final_logits_softcap,
        "sliding_window": t.sliding_window or 4096,
        "layer_types": [("sliding_attention" if t.is_sliding(i) else "full_attention")
                        for i in range(t.depth)],
        "rope_theta": t.rope_base, "rms_norm_eps": t.norm_eps,
        "hidden_activation": "gelu_pytorch_tanh", "vocab_size": rows,
        "max_position_embeddings": 8192, "pad_token_id": 0, "bos_token_id": 2, "eos_token_id": 1,
    }
    vision = {
        "model_type": "siglip_vision_model", "hidden_size": v.width, "intermediate_size": v.mlp_dim,
        "num_hidden_layers": v.depth, "num_attention_heads": v.num_heads,
        "patch_size": v.patch_size, "image_size": v.image_size, "projection_dim": t.width,
        "layer_norm_eps": v.layernorm_eps, "hidden_act": "gelu_pytorch_tanh",
        "vision_use_head": False, "num_image_tokens": v.num_patches,
    }
    return {
        "architectures": ["PaliGemmaForConditionalGeneration"], "model_type": "paligemma",
        "image_token_index": t.vocab_size, "vocab_size": rows, "projection_dim": t.width,
        "hidden_size": t.width, "text_config": text, "vision_config": vision,
        "pad_token_id": 0, "bos_token_id": 2, "eos_token_id": 1,
    }


def config_from_hf(hf: Mapping) -> ModelConfig:
    """Our config for a transformers PaliGemma 2 config.json (transformers' numerics)."""
    t, v = hf["text_config"], hf["vision_config"]
    if t.get("model_type", "gemma2") != "gemma2":
        raise ValueError(f"unsupported text model {t.get('model_type')!r}: PaliGemma 2 uses gemma2")
    depth = t["num_hidden_layers"]
    layer_types = t.get("layer_types") or [
        "sliding_attention" if i % 2 == 0 else "full_attention" for i in range(depth)]
    window = t.get("sliding_window", 4096) if "sliding_attention" in layer_types else None
    rope = (t.get("rope_parameters") or {}).get("rope_theta", t.get("rope_theta", 10000.0))
    vocab = min(int(hf.get("image_token_index", t["vocab_size"])), int(t["vocab_size"]))
    heads = t["num_attention_heads"]
    text = TextConfig(
        width=t["hidden_size"], depth=depth, mlp_dim=t["intermediate_size"], num_heads=heads,
        num_kv_heads=t.get("num_key_value_heads", heads),
        head_dim=t.get("head_dim") or t["hidden_size"] // heads, vocab_size=vocab,
        query_pre_attn_scalar=int(t.get("query_pre_attn_scalar", 256)),
        attn_logits_softcap=t.get("attn_logit_softcapping", 50.0), final_logits_softcap=None,
        sliding_window=window, rope_base=float(rope), norm_eps=t.get("rms_norm_eps", 1e-6),
    )
    vision = VisionConfig(
        image_size=v.get("image_size", 224), patch_size=v.get("patch_size", 14),
        width=v.get("hidden_size", 1152), depth=v.get("num_hidden_layers", 27),
        mlp_dim=v.get("intermediate_size", 4304), num_heads=v.get("num_attention_heads", 16),
        layernorm_eps=v.get("layer_norm_eps", 1e-6),
    )
    return ModelConfig(vision=vision, text=text).hf_compatible()


def _host(a: object) -> Array:
    return np.asarray(a)


def iter_hf_tensors(config: ModelConfig, params: Mapping) -> Iterator[tuple[str, Array]]:
    """(legacy HF name, numpy tensor) for every tensor, embedding padded like transformers."""
    flat = dict(flatten(params))
    for spec in hf_tensor_specs(config):
        value = _host(flat[spec.path])[spec.index] if spec.index else _host(flat[spec.path])
        value = np.ascontiguousarray(spec.to_hf(value))
        if spec.path == "llm/embedder/input_embedding":
            rows = hf_vocab_rows(config.text.vocab_size)
            pad = np.broadcast_to(value.mean(0, keepdims=True),
                                  (rows - value.shape[0], value.shape[1]))
            value = np.concatenate([value, pad.astype(value.dtype)], 0)
        yield spec.hf_name, value


def write_hf_checkpoint(out_dir: str | Path, config: ModelConfig, params: Mapping,
                        max_shard_bytes: int = 2 << 30) -> Path:
    """Write a transformers-loadable PaliGemma directory: config.json + sharded safetensors
    with `model.safetensors.index.json` (always written, even for one shard)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(hf_config_dict(config), indent=2))
    shards: list[dict[str, Array]] = [{}]
    size = 0
    for name, value in iter_hf_tensors(config, params):
        if size and size + value.nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = value
        size += value.nbytes
    weight_map = {}
    total = 0
    for i, shard in enumerate(shards):
        fname = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        write_safetensors(out / fname, shard)
        for name, value in shard.items():
            weight_map[name] = fname
            total += value.nbytes
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    return out


def write_big_vision_npz(path: str | Path, params: Mapping) -> Path:
    """Write params as a big_vision PaliGemma `.npz` (flat '/'-joined keys, bf16 as '|V2')."""
    write_npz(path, {name: _host(value) for name, value in flatten(params)})
    return Path(path)
