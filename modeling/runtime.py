"""The loaded model object: config + params + tokenizer, with numpy-in/numpy-out `logits`,
bucketed jit `generate`, and `generate_text`.

Shape buckets bound the number of compiled programs: a server that calls `warmup()` at start
compiles len(batch_buckets) * len(prompt_buckets) * len(new_token_buckets) programs per strategy
and nothing afterwards.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from modeling import generate as gen
from modeling.config import ModelConfig
from modeling.model import Params, forward

DEFAULT_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32)
DEFAULT_PROMPT_BUCKETS = (16, 32, 64, 128, 256, 512)
DEFAULT_NEW_TOKEN_BUCKETS = (16, 32, 64, 128, 256, 512, 1024)


class GenerationError(ValueError):
    """A generation request cannot be served as asked (bad shapes, unknown options)."""


def enable_compilation_cache(path: str | Path) -> None:
    """Persist compiled XLA programs under `path` so a restarted worker skips compiling."""
    Path(path).mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


_forward_jit = jax.jit(forward, static_argnums=0)


class PaliGemma:
    """A PaliGemma 2 model ready for inference (see `modeling.load_pretrained`)."""

    def __init__(self, config: ModelConfig, params: Params, tokenizer: Any = None, *,
                 batch_buckets: Sequence[int] = DEFAULT_BATCH_BUCKETS,
                 prompt_buckets: Sequence[int] = DEFAULT_PROMPT_BUCKETS,
                 new_token_buckets: Sequence[int] = DEFAULT_NEW_TOKEN_BUCKETS,
                 eos_id: int = 1, metadata: dict | None = None,
                 generation_defaults: dict | None = None, prompt: str | None = None) -> None:
        self.config = config
        self.params = params
        self.tokenizer = tokenizer
        self.batch_buckets = tuple(sorted(batch_buckets))
        self.prompt_buckets = tuple(sorted(prompt_buckets))
        self.new_token_buckets = tuple(sorted(new_token_buckets))
        self.eos_id = eos_id
        self.metadata = metadata or {}
        self.generation_defaults = generation_defaults or {}
        self.prompt = prompt

    @functools.cached_property
    def decode_weights(self) -> dict[str, Any]:
        """The decode loop's copy of the language model's weights (`generate.decode_weights`),
        built on the first generate call and kept: float32 on a CPU it is packed for the CPU
        decode kernel (`modeling.cpu_kernels`), a transposing copy that costs about twenty
        batch-1 decode steps, so it is done once per model rather than once per call."""
        return gen.decode_weights(self.config, self.params, gen.uses_cpu_kernel(self.config))

    # ------------------------------------------------------------------ scoring

    def logits(self, pixel_values: np.ndarray, input_ids: np.ndarray,
               token_type_ids: np.ndarray, input_mask: np.ndarray | None = None) -> np.ndarray:
        """float32 logits [N, T, V] for the text positions (see `modeling.model.forward`)."""
        pixel_values = self._pixels(pixel_values, len(input_ids))
        input_ids = np.asarray(input_ids, np.int32)
        token_type_ids = np.asarray(token_type_ids, np.int32)
        if input_ids.shape != token_type_ids.shape or input_ids.ndim != 2:
            raise GenerationError(
                f"input_ids {input_ids.shape} and token_type_ids {token_type_ids.shape} "
                "must be the same [N, T] shape")
        mask = None if input_mask is None else jnp.asarray(input_mask, bool)
        out = _forward_jit(self.config, self.params, pixel_values, input_ids, token_type_ids, mask)
        return np.asarray(out, np.float32)

    # ------------------------------------------------------------------ generation

    def generate(self, pixel_values: np.ndarray, prompt_ids: Sequence[Sequence[int]],
                 max_new_tokens: int, strategy: str = "greedy", **options: Any) -> list[list[int]]:
        """New tokens of each row (EOS and anything after it excluded).

        prompt_ids: one token list per row ([BOS] + prefix + ["\\n"]); pixel_values [N, H, W, 3]
        in [-1, 1], one image per row. strategy "greedy", "sample" (temperature, top_k, top_p,
        seed) or "beam" (beam_size, length_penalty).
        """
        if strategy not in gen.STRATEGIES:
            raise GenerationError(f"unknown strategy {strategy!r}; use one of {gen.STRATEGIES}")
        opts = gen.default_options()
        opts.update({k: v for k, v in self.generation_defaults.items() if k in opts})
        unknown = set(options) - set(opts)
        if unknown:
            raise GenerationError(f"unknown generation option(s): {', '.join(sorted(unknown))}")
        opts.update(options)
        if max_new_tokens < 1:
            raise GenerationError("max_new_tokens must be at least 1")
        n = len(prompt_ids)
        if n == 0:
            return []
        pixels = self._pixels(pixel_values, n)
        results: list[list[int]] = []
        max_batch = self.batch_buckets[-1]
        for start in range(0, n, max_batch):
            chunk = prompt_ids[start:start + max_batch]
            results += self._generate_batch(pixels[start:start + max_batch], chunk,
                                            max_new_tokens, strategy, opts)
        return results

    def _generate_batch(self, pixels: np.ndarray, prompts: Sequence[Sequence[int]],
                        max_new_tokens: int, strategy: str, opts: dict) -> list[list[int]]:
        n = len(prompts)
        lengths = [len(p) for p in prompts]
        if min(lengths) < 1:
            raise GenerationError("every prompt needs at least one token (BOS)")
        plan = self.plan(n, max(lengths), max_new_tokens, strategy, int(opts["beam_size"]))
        text = np.zeros((plan.batch, plan.prompt_len), np.int32)
        length_arr = np.ones((plan.batch,), np.int32)
        for i, p in enumerate(prompts):
            text[i, : len(p)] = p
            length_arr[i] = len(p)
        active = np.arange(plan.batch) < n
        px = np.zeros((plan.batch, *pixels.shape[1:]), np.float32)
        px[:n] = pixels
        tokens, counts = gen.generate_tokens(
            self.config, plan, self.params, self.decode_weights, px, text, length_arr, active,
            np.int32(max_new_tokens), np.int32(self.eos_id), jax.random.key(int(opts["seed"])),
            np.float32(opts["temperature"]), np.int32(opts["top_k"]), np.float32(opts["top_p"]),
            np.float32(opts["length_penalty"]))
        tokens, counts = np.asarray(tokens), np.asarray(counts)
        return [tokens[i, : counts[i]].tolist() for i in range(n)]

    def plan(self, batch: int, prompt_len: int, max_new_tokens: int, strategy: str = "greedy",
             beam_size: int = 1) -> gen.Plan:
        """The compiled program (bucketed shapes) that serves such a request."""
        return gen.Plan(
            batch=gen.bucket(batch, self.batch_buckets, "batch size"),
            prompt_len=gen.bucket(prompt_len, self.prompt_buckets, "prompt length (tokens)"),
            new_tokens=gen.bucket(max_new_tokens, self.new_token_buckets, "max_new_tokens"),
            strategy=strategy, beam_size=beam_size if strategy == "beam" else 1,
        )

    def warmup(self, batch_sizes: Sequence[int] | None = None,
               strategies: Sequence[str] = ("greedy",),
               max_prompt_len: int | None = None, max_new_tokens: int | None = None,
               **options: Any) -> int:
        """Compile every bucket up to the given limits; returns the number of programs."""
        size = self.config.image_size
        count = 0
        prompt_buckets = [b for b in self.prompt_buckets if max_prompt_len is None
                          or b <= gen.bucket(max_prompt_len, self.prompt_buckets, "prompt length")]
        new_buckets = [b for b in self.new_token_buckets if max_new_tokens is None
                       or b <= gen.bucket(max_new_tokens, self.new_token_buckets, "max_new_tokens")]
        for batch in batch_sizes or self.batch_buckets:
            pixels = np.zeros((batch, size, size, 3), np.float32)
            for strategy in strategies:
                for tp in prompt_buckets:
                    for nt in new_buckets:
                        self.generate(pixels, [[2] * tp] * batch, nt, strategy, **options)
                        count += 1
        return count

    def generate_text(self, pixel_values: np.ndarray, prompts: Sequence[str],
                      max_new_tokens: int, strategy: str = "greedy", **options: Any) -> list[str]:
        """Prompts as text -> decoded continuations (needs a tokenizer)."""
        if self.tokenizer is None:
            raise GenerationError("this model has no tokenizer; pass token ids to generate()")
        ids = [self.tokenizer.prompt_ids(p) for p in prompts]
        out = self.generate(pixel_values, ids, max_new_tokens, strategy, **options)
        return [self.tokenizer.decode(t) for t in out]

    # ------------------------------------------------------------------ helpers

    def _pixels(self, pixel_values: np.ndarray, n: int) -> np.ndarray:
        px = np.asarray(pixel_values, np.float32)
        size = self.config.image_size
        if px.ndim == 3:
            px = px[None]
        if px.shape[1:] != (size, size, 3):
            raise GenerationError(
                f"pixel_values must be [N, {size}, {size}, 3] (got {list(px.shape)}); "
                "use modeling.preprocess.preprocess_image")
        if px.shape[0] == 1 and n > 1:
            px = np.repeat(px, n, axis=0)
        if px.shape[0] != n:
            raise GenerationError(f"{px.shape[0]} images for {n} prompts")
        return px
