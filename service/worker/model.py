"""The generate worker's model: one bundle loaded once per process, shape buckets compiled
before work.

`load_model` returns the process's `DraftModel` (made on first call); `loaded_model` peeks at it.

Batches are padded up to the next bucket (1, 2, 4, ... up to the batch size) so the worker never
compiles in steady state; padded rows are dropped from the output.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from service.core.config import Settings, get_settings

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

    def __init__(self, bundle_dir: Path, *, batch_size: int, max_new_tokens: int | None = None,
                 device_memory: str | None = None) -> None:
        import modeling

        self.bundle_dir = Path(bundle_dir)
        self.bundle_id = bundle_id_of(self.bundle_dir)
        self.config: dict[str, Any] = json.loads((self.bundle_dir / "config.json").read_text())
        started = time.perf_counter()
        self.model = modeling.load_pretrained(str(self.bundle_dir))
        self.load_s = time.perf_counter() - started
        self.image_size = int(self.model.config.image_size)
        self.prompt = (getattr(self.model, "prompt", None)
                       or self.config.get("prompt", "describe en"))
        defaults = dict(getattr(self.model, "generation_defaults", None)
                        or self.config.get("generation") or {})
        self.max_new_tokens = int(max_new_tokens or defaults.get("max_new_tokens") or 64)
        self.generation_settings: dict[str, Any] = {
            "strategy": str(defaults.get("strategy", "greedy")),
            **{k: v for k, v in defaults.items() if isinstance(v, str | int | float | bool)},
            "max_new_tokens": self.max_new_tokens,
            "prompt": self.prompt,
            "image_size": self.image_size,
        }
        if device_memory is not None:
            batch_size = self._batch_for_memory(batch_size, device_memory)
        model_buckets = tuple(getattr(self.model, "batch_buckets", ()) or buckets_for(batch_size))
        largest = next((b for b in sorted(model_buckets) if b >= batch_size), max(model_buckets))
        self.buckets = [b for b in sorted(model_buckets) if b <= largest]
        self.batch_size = batch_size
        self.compile_s: dict[int, float] = {}

    def _batch_for_memory(self, batch_size: int, device_memory: str) -> int:
        """The largest batch up to `batch_size` whose generate program fits `device_memory`."""
        from modeling.memory import generate_batch_for_memory

        prompt = self.model.tokenizer.prompt_ids(self.prompt)
        plan = self.model.plan(1, len(prompt), self.max_new_tokens)
        fitted = generate_batch_for_memory(
            self.model.config, device_memory, prompt_len=plan.prompt_len,
            new_tokens=plan.new_tokens, max_batch=batch_size, params=self.model.params)
        log.info("batch size %d: the largest of BATCH_SIZE=%d whose generate program fits "
                 "GENERATE_DEVICE_MEMORY=%s", fitted, batch_size, device_memory)
        return fitted

    def warmup(self) -> None:
        """Compile each batch bucket with the real prompt (blank images); serving never compiles."""
        blank = np.zeros((self.image_size, self.image_size), np.float32)
        for size in self.buckets:
            started = time.perf_counter()
            self._generate_chunk([blank] * size)
            self.compile_s[size] = time.perf_counter() - started
            log.info("compiled batch bucket %d in %.1f s", size, self.compile_s[size])

    def generate(self, images: list[np.ndarray]) -> list[str]:
        """Draft texts for `images` (float32 HxW in [0, 1]), one model call per batch-size chunk."""
        texts: list[str] = []
        for start in range(0, len(images), self.batch_size):
            texts.extend(self._generate_chunk(images[start : start + self.batch_size]))
        return texts

    def _generate_chunk(self, images: list[np.ndarray]) -> list[str]:
        """One model call; the model pads the batch to its compiled bucket."""
        from modeling.preprocess import preprocess_image

        batch = np.stack([np.asarray(preprocess_image(image, self.image_size), np.float32)
                          for image in images])
        if batch.ndim == 3:
            batch = np.repeat(batch[..., None], 3, axis=-1)
        strategy = self.generation_settings["strategy"]
        prompts = [self.prompt] * len(images)
        texts = self.model.generate_text(batch, prompts, self.max_new_tokens, strategy)
        return [str(text) for text in texts]


_MODEL: DraftModel | None = None
_MODEL_LOCK = threading.Lock()


def load_model(settings: Settings | None = None, *, warmup: bool = True) -> DraftModel:
    """The process's DraftModel (loaded once; every shape bucket compiled before it is returned)."""
    global _MODEL
    settings = settings or get_settings()
    with _MODEL_LOCK:
        if _MODEL is None:
            if settings.jax_cache_dir is not None:
                from modeling.runtime import enable_compilation_cache

                enable_compilation_cache(settings.jax_cache_dir)
            if settings.model_bundle is None:
                raise RuntimeError(
                    "MODEL_BUNDLE is not set: a generate worker needs a model bundle directory"
                )
            model = DraftModel(settings.model_bundle, batch_size=settings.batch_size,
                               max_new_tokens=settings.max_new_tokens,
                               device_memory=settings.generate_device_memory)
            if warmup:
                model.warmup()
            _MODEL = model
    return _MODEL


def loaded_model() -> DraftModel | None:
    """The process's model if one was loaded, else None (nothing is loaded)."""
    return _MODEL
