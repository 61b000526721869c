"""The generate worker's model: one bundle loaded once per process, shape buckets compiled before work.

Batches are padded up to the next bucket (1, 2, 4, ... up to the batch size) so the worker never
compiles in steady state; padded rows are dropped from the output.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


def bundle_id_of(bundle_dir: Path) -> str:
    """A stable id of a bundle: its folder name and a hash of its config and metadata."""
    digest = hashlib.sha256()
    for name in ("config.json", "metadata.json"):
        path = bundle_dir / name
        if path.exists():
            digest.update(path.read_bytes())
    return f"{bundle_dir.resolve().name}@{digest.hexdigest()[:12]}"


def buckets_for(batch_size: int) -> list[int]:
    """Batch shapes compiled at start: powers of two below `batch_size`, and `batch_size` itself."""
    sizes, size = [], 1
    while size < batch_size:
        sizes.append(size)
        size *= 2
    sizes.append(batch_size)
    return sizes


class DraftModel:
    """A loaded model bundle that turns frontal images ([0, 1] arrays) into draft report texts."""

    def __init__(self, bundle_dir: Path, *, batch_size: int, max_new_tokens: int | None = None) -> None:
        import modeling

        self.bundle_dir = Path(bundle_dir)
        self.bundle_id = bundle_id_of(self.bundle_dir)
        self.config: dict[str, Any] = json.loads((self.bundle_dir / "config.json").read_text())
        started = time.perf_counter()
        self.model = modeling.load_pretrained(str(self.bundle_dir))
        self.load_s = time.perf_counter() - started
        self.image_size = _image_size(self.model, self.config)
        self.prompt = _find(self.config, ("prompt",), default="describe en")
        defaults = _find(self.config, ("generation",), default={}) or {}
        self.max_new_tokens = int(max_new_tokens or defaults.get("max_new_tokens") or 64)
        self.generation_settings: dict[str, Any] = {
            **{k: v for k, v in defaults.items() if isinstance(v, str | int | float | bool)},
            "max_new_tokens": self.max_new_tokens,
            "prompt": self.prompt,
            "image_size": self.image_size,
        }
        self.buckets = buckets_for(batch_size)
        self.compile_s: dict[int, float] = {}

    def warmup(self) -> None:
        """Compile every batch bucket once (blank images), so serving never compiles."""
        blank = np.zeros((self.image_size, self.image_size), np.float32)
        for size in self.buckets:
            started = time.perf_counter()
            self._generate_padded([blank] * size)
            self.compile_s[size] = time.perf_counter() - started
            log.info("compiled batch bucket %d in %.1f s", size, self.compile_s[size])

    def generate(self, images: list[np.ndarray]) -> list[str]:
        """Draft texts for `images` (float32 HxW in [0, 1]), in one model call per bucket-sized chunk."""
        texts: list[str] = []
        largest = self.buckets[-1]
        for start in range(0, len(images), largest):
            texts.extend(self._generate_padded(images[start : start + largest]))
        return texts

    def _generate_padded(self, images: list[np.ndarray]) -> list[str]:
        from modeling.preprocess import preprocess_image

        count = len(images)
        bucket = next(size for size in self.buckets if size >= count)
        pixels = [np.asarray(preprocess_image(image, self.image_size), np.float32) for image in images]
        pixels += [np.zeros_like(pixels[0])] * (bucket - count)
        batch = np.stack(pixels)
        if batch.ndim == 3:
            batch = np.repeat(batch[..., None], 3, axis=-1)
        texts = self.model.generate_text(batch, [self.prompt] * bucket, max_new_tokens=self.max_new_tokens)
        return [str(text) for text in texts[:count]]


def _find(config: dict[str, Any], keys: tuple[str, ...], default: Any) -> Any:
    """A key at the top of config.json or inside its `serving` / `inference` section."""
    for section in (config, config.get("serving") or {}, config.get("inference") or {}):
        for key in keys:
            if isinstance(section, dict) and key in section:
                return section[key]
    return default


def _image_size(model: Any, config: dict[str, Any]) -> int:
    model_config = getattr(model, "config", None)
    vision = getattr(model_config, "vision", None)
    if vision is not None and getattr(vision, "image_size", None):
        return int(vision.image_size)
    return int(_find(config, ("image_size",), default=224))
