"""Named run configurations: the paper-like PaliGemma 2 transfers and tiny CPU presets.

Paper-like (PaliGemma 2 report, Appendix B.7, MIMIC-CXR): indication as prefix, findings +
impression as target, 8 epochs, lr 5e-6 (found at 448 px), no dropout / weight decay / label
smoothing, greedy decoding. Batch size is not stated in the paper; 256 follows most big_vision
PaliGemma transfer configs (cococap, docvqa, ...), which also give the optimizer details: Adam
b2 = 0.999, global-norm clip 1.0, linear warm-up over 5% then cosine to 0, FSDP over all devices.
The paper re-swept the lr at 896 px and for 10B over {0.03, 0.1, 0.3, 1, 5} x 1e-4 without
publishing the winners; start at 5e-6 and sweep with `--set optim.lr=...`.

These presets start from a pretrained checkpoint: `--set model.init=PATH`, a Hugging Face
`paligemma2-{3b,10b}-pt-{224,448,896}` directory, a big_vision .npz or a model bundle.

Tiny presets train from scratch on this machine's CPU: `tiny` (seconds; tests) and `demo`
(minutes; reaches useful scores on synthetic studies, see docs/training.md).
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Callable
from pathlib import Path

from finetune.config import (
    CheckpointSection,
    ConfigError,
    DataSection,
    EvalSection,
    MeshSection,
    ModelSection,
    OptimSection,
    TrainConfig,
    VisionWarmupSection,
    apply_overrides,
    from_dict,
)

PRETRAINED_PLACEHOLDER = "REQUIRED:path/to/paligemma2-pt-bundle"


def _paper(size: str, resolution: int) -> Callable[[], TrainConfig]:
    def make() -> TrainConfig:
        return TrainConfig(
            name=f"mimic-{size}-{resolution}",
            model=ModelSection(
                preset=f"paligemma2-{size}-{resolution}",
                init=PRETRAINED_PLACEHOLDER,
                compute_dtype="bfloat16",
            ),
            data=DataSection(
                prompt="INDICATION: {indication}",
                target="findings_impression",
                # Radiology reports run to ~100-250 Gemma tokens; keep EOS inside the window.
                text_len=320,
            ),
            optim=OptimSection(
                lr=5e-6,
                warmup_fraction=0.05,
                b2=0.999,
                weight_decay=0.0,
                grad_clip_norm=1.0,
                label_smoothing=0.0,
                batch_size=256,
                grad_accum_steps=1 if resolution <= 448 else 4,
                epochs=8.0,
                trainable="all",
            ),
            mesh=MeshSection(data=1, fsdp=-1),
            checkpoint=CheckpointSection(every_steps=500, keep=2, best_metric="radgraph_partial"),
            eval=EvalSection(every_steps=1000, max_new_tokens=256, batch_size=64, val_examples=512),
        )

    return make


def tiny() -> TrainConfig:
    """A few-second run on a handful of studies (tests, smoke checks)."""
    return TrainConfig(
        name="tiny",
        model=ModelSection(preset="tiny", init="scratch", tokenizer_vocab_size=384,
                           compute_dtype="float32", unroll_layers=True,
                           overrides={"text.sliding_window": None}),
        data=DataSection(text_len=64, max_train_examples=0, max_eval_examples=8),
        optim=OptimSection(lr=3e-3, warmup_fraction=0.1, batch_size=4, steps=6, grad_clip_norm=1.0),
        mesh=MeshSection(data=-1, fsdp=1),
        checkpoint=CheckpointSection(every_steps=3, keep=2, async_save=True),
        eval=EvalSection(every_steps=6, max_new_tokens=8, batch_size=4, val_examples=4,
                         test_examples=4),
        log_every=1,
    )


def demo() -> TrainConfig:
    """The CPU demo: a from-scratch miniature PaliGemma 2 (112 px, 49 image tokens, width 128)
    trained on synthetic studies for at most 14 minutes on two cores."""
    return TrainConfig(
        name="demo",
        model=ModelSection(
            preset="tiny",
            init="scratch",
            tokenizer_vocab_size=1024,
            compute_dtype="float32",  # CPUs have no fast bfloat16 matmuls
            unroll_layers=True,  # 3 + 2 layers: see bench/train_step.py
            overrides={
                "vision.image_size": 112,
                "vision.patch_size": 16,
                "vision.width": 128,
                "vision.depth": 3,
                "vision.mlp_dim": 384,
                "vision.num_heads": 4,
                "text.width": 128,
                "text.depth": 2,
                "text.mlp_dim": 384,
                "text.num_heads": 4,
                "text.num_kv_heads": 2,
                "text.head_dim": 32,
                "text.query_pre_attn_scalar": 32.0,
                "text.sliding_window": None,
            },
        ),
        data=DataSection(text_len=144, augment=True, max_eval_examples=0),
        # The SigLIP tower first learns the training studies' labels (see vision_warmup.py), then
        # stays frozen while the projector and Gemma learn to write reports about what it sees.
        vision_warmup=VisionWarmupSection(steps=7000, lr=3e-3, batch_size=32),
        optim=OptimSection(
            lr=2e-3, warmup_fraction=0.03, end_lr_fraction=0.02, b2=0.98, batch_size=16,
            epochs=0.0, steps=1000, grad_clip_norm=1.0, weight_decay=0.0, trainable="vision_frozen",
        ),
        mesh=MeshSection(data=-1, fsdp=1),
        checkpoint=CheckpointSection(every_steps=250, keep=2, best_metric="radgraph_partial"),
        eval=EvalSection(every_steps=250, max_new_tokens=128, batch_size=32, val_examples=0,
                         test_examples=0),
        # Everything before export (caching, warm-up, training, validation) within 14 minutes.
        time_limit_s=14 * 60,
        log_every=20,
    )


PRESETS: dict[str, Callable[[], TrainConfig]] = {
    "tiny": tiny,
    "demo": demo,
    **{f"mimic-{size}-{res}": _paper(size, res)
       for size in ("3b", "10b") for res in (224, 448, 896)},
}


def load_config(name_or_file: str, overrides: list[str] | None = None) -> TrainConfig:
    """A preset by name, or a JSON/TOML file (laid over its `base` preset if it names one)."""
    if name_or_file in PRESETS:
        config = PRESETS[name_or_file]()
    else:
        path = Path(name_or_file)
        if not path.is_file():
            raise ConfigError(
                f"config {name_or_file!r} is neither a preset ({', '.join(sorted(PRESETS))}) "
                "nor a readable .json/.toml file"
            )
        if path.suffix == ".toml":
            data = tomllib.loads(path.read_text())
        elif path.suffix == ".json":
            data = json.loads(path.read_text())
        else:
            raise ConfigError(f"config file {path} must end in .json or .toml")
        base_name = data.pop("base", None)
        if base_name is not None and base_name not in PRESETS:
            raise ConfigError(f"config file {path}: base {base_name!r} is not a preset")
        base = PRESETS[base_name]() if base_name else TrainConfig()
        config = from_dict(data, base)
        if "name" not in data:
            config.name = path.stem
    return apply_overrides(config, overrides or [])
