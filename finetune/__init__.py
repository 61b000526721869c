"""Fine-tuning PaliGemma 2 on chest X-ray reports: configs, data, train step, sharding, checkpoints.

Public API:
  TrainConfig, load_config, PRESETS     typed run configurations (finetune.config / presets)
  train(config, out_dir)                run or resume a run and export its bundle (finetune.trainer)
"""

from __future__ import annotations

from finetune.config import ConfigError, TrainConfig
from finetune.presets import PRESETS, load_config

__all__ = ["PRESETS", "ConfigError", "TrainConfig", "load_config", "train"]


def train(*args, **kwargs):  # noqa: ANN002, ANN003, ANN201
    """Run (or resume) a fine-tuning run; see `finetune.trainer.train`."""
    from finetune.trainer import train as _train

    return _train(*args, **kwargs)
