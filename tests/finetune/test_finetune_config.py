"""Run configurations: presets, `--set` overrides, config files and their errors."""

from __future__ import annotations

import json

import pytest

from finetune.config import ConfigError, apply_overrides
from finetune.presets import PRESETS, load_config


def test_paper_presets_follow_the_published_mimic_recipe() -> None:
    for size in ("3b", "10b"):
        for res in (448, 896):
            cfg = load_config(f"mimic-{size}-{res}")
            assert cfg.model.preset == f"paligemma2-{size}-{res}"
            assert cfg.optim.lr == 5e-6 and cfg.optim.epochs == 8.0
            assert cfg.optim.weight_decay == 0.0 and cfg.optim.label_smoothing == 0.0
            assert cfg.data.prompt == "INDICATION: {indication}"
            assert cfg.data.target == "findings_impression"
            assert cfg.optim.grad_clip_norm == 1.0 and cfg.optim.b2 == 0.999
            assert cfg.optim.warmup_fraction == 0.05 and cfg.optim.end_lr_fraction == 0.0


def test_overrides_are_parsed_to_the_field_type() -> None:
    cfg = load_config("demo", ["optim.lr=3e-4", "optim.steps=7", "data.augment=false",
                               "data.target=findings", "model.overrides.vision.width=64"])
    assert cfg.optim.lr == 3e-4 and isinstance(cfg.optim.steps, int) and cfg.optim.steps == 7
    assert cfg.data.augment is False and cfg.data.target == "findings"
    assert cfg.model.overrides["vision.width"] == 64


def test_overrides_do_not_change_the_preset_itself() -> None:
    before = PRESETS["demo"]().optim.lr
    apply_overrides(PRESETS["demo"](), ["optim.lr=0.5"])
    assert PRESETS["demo"]().optim.lr == before


@pytest.mark.parametrize("item, fragment", [
    ("optim.lrr=1", "unknown config key"),
    ("optim.steps=1.5", "integer"),
    ("data.target=everything", "must be one of"),
    ("optim.lr", "key=value"),
    ("data.augment=maybe", "true or false"),
])
def test_bad_overrides_raise_a_config_error_naming_the_key(item: str, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        load_config("demo", [item])


def test_a_json_file_is_laid_over_its_base_preset(tmp_path) -> None:
    path = tmp_path / "findings-only.json"
    path.write_text(json.dumps({"base": "mimic-3b-448", "data": {"target": "findings",
                                "prompt": "describe en"}, "optim": {"lr": 1e-5}}))
    cfg = load_config(str(path))
    assert cfg.name == "findings-only"
    assert cfg.data.target == "findings" and cfg.data.prompt == "describe en"
    assert cfg.optim.lr == 1e-5 and cfg.optim.epochs == 8.0  # rest from the base


def test_a_toml_file_with_an_unknown_section_key_is_rejected(tmp_path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[optim]\nlearning_rate = 0.1\n")
    with pytest.raises(ConfigError, match="optim.learning_rate"):
        load_config(str(path))


def test_an_unknown_name_lists_the_presets() -> None:
    with pytest.raises(ConfigError, match="demo"):
        load_config("no-such-preset")
