"""Presets: the official PaliGemma 2 sizes instantiate abstractly with exactly transformers'
parameter count; configs round-trip through JSON."""

from __future__ import annotations

import json

import pytest

import modeling
from modeling.config import ConfigError, ModelConfig

# The official configurations as published for google/paligemma2-{3b,10b,28b}-pt-{224,448,896}.
OFFICIAL_TEXT = {
    "3b": dict(hidden_size=2304, intermediate_size=9216, num_hidden_layers=26,
               num_attention_heads=8, num_key_value_heads=4, head_dim=256,
               query_pre_attn_scalar=256),
    "10b": dict(hidden_size=3584, intermediate_size=14336, num_hidden_layers=42,
                num_attention_heads=16, num_key_value_heads=8, head_dim=256,
                query_pre_attn_scalar=256),
    "28b": dict(hidden_size=4608, intermediate_size=36864, num_hidden_layers=46,
                num_attention_heads=32, num_key_value_heads=16, head_dim=128,
                query_pre_attn_scalar=144),
}
HF_VOCAB_ROWS = 257216  # 257152 PaliGemma tokens + <image> + padding to a multiple of 64


def _hf_param_count(size: str, resolution: int) -> int:
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    text = OFFICIAL_TEXT[size]
    config = transformers.PaliGemmaConfig(
        text_config=dict(model_type="gemma2", vocab_size=HF_VOCAB_ROWS, sliding_window=4096,
                         attn_logit_softcapping=50.0, final_logit_softcapping=30.0, **text),
        vision_config=dict(model_type="siglip_vision_model", hidden_size=1152,
                           intermediate_size=4304, num_hidden_layers=27, num_attention_heads=16,
                           patch_size=14,
                           image_size=resolution, vision_use_head=False),
        projection_dim=text["hidden_size"], hidden_size=text["hidden_size"],
        image_token_index=257152, vocab_size=HF_VOCAB_ROWS,
    )
    with torch.device("meta"):
        model = transformers.PaliGemmaForConditionalGeneration(config)
    return sum(p.numel() for p in model.parameters())  # the tied lm_head is counted once


@pytest.mark.slow
@pytest.mark.parametrize("size", ["3b", "10b", "28b"])
@pytest.mark.parametrize("resolution", [224, 448, 896])
def test_official_preset_has_transformers_parameter_count(size, resolution):
    config = modeling.PRESETS[f"paligemma2-{size}-{resolution}"]
    ours = modeling.count_params(modeling.abstract_params(config))  # jax.eval_shape, no memory
    padded_rows = HF_VOCAB_ROWS - config.text.vocab_size
    assert padded_rows == 64
    assert ours + padded_rows * config.text.width == _hf_param_count(size, resolution)


def test_3b_224_preset_has_about_3_billion_parameters():
    config = modeling.PRESETS["paligemma2-3b-224"]
    assert 2.9e9 < modeling.count_params(modeling.abstract_params(config)) < 3.1e9
    assert config.num_image_tokens == 256


def test_28b_preset_scales_queries_by_width_over_heads():
    assert modeling.PRESETS["paligemma2-28b-448"].text.query_pre_attn_scalar == 4608 // 32
    assert modeling.PRESETS["paligemma2-10b-448"].text.query_pre_attn_scalar == 256


def test_config_round_trips_through_json():
    for config in modeling.PRESETS.values():
        text = json.dumps(config.to_dict())
        assert ModelConfig.from_dict(json.loads(text)) == config


def test_unknown_config_field_is_named_in_the_error():
    data = modeling.PRESETS["tiny"].to_dict()
    data["text"]["num_layers"] = 3
    with pytest.raises(ConfigError, match="num_layers"):
        ModelConfig.from_dict(data)
