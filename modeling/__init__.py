"""PaliGemma 2 in JAX: configs, model, loaders, tokenizer, generation and image preprocessing.

Public API (heavy modules load on first use, so `import modeling` stays cheap):
  PRESETS, ModelConfig                      modeling.config
  init_params(config, rng), forward(...)    modeling.model (Flax NNX modules; functions over the
                                            nested-dict params they hold)
  load_pretrained(path, dtype, mesh)        modeling.loaders -> PaliGemma (.logits, .generate)
"""

from __future__ import annotations

import importlib
from typing import Any

from modeling.config import PRESETS, ModelConfig, TextConfig, VisionConfig

_LAZY = {
    "init_params": "modeling.model",
    "forward": "modeling.model",
    "abstract_params": "modeling.model",
    "count_params": "modeling.model",
    "load_pretrained": "modeling.loaders",
    "PaliGemma": "modeling.runtime",
}

__all__ = ["PRESETS", "ModelConfig", "TextConfig", "VisionConfig", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'modeling' has no attribute {name!r}")
