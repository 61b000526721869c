"""Will it fit? Device memory of compiled programs, read from XLA's own buffer assignment.

A program is compiled ahead of time from abstract inputs (`jax.ShapeDtypeStruct`s, no weights
in memory) and `compiled.memory_analysis()` tells, per device, what its buffers take: the
arguments (parameters, optimizer state, inputs), the outputs, the temporaries (activations,
gradients, collective buffers) and what outputs reuse of donated arguments. The fine-tuning
planner (`finetune.plan`) compiles the train step this way; `generate_batch_for_memory` compiles
the generate program to choose the largest batch a serving accelerator holds:

    >>> parse_bytes("80GB"), parse_bytes("16GiB"), format_bytes(54.3e9)
    (80000000000, 17179869184, '54.3 GB')

Sizes use decimal units (1 GB = 10^9 bytes) unless written with an `i` (GiB = 2^30 bytes);
accelerators are sold in decimal gigabytes ("80GB" A100/H100) while their runtimes report GiB.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

# The fraction of device memory left unplanned by default: the allocator's fragmentation, the
# runtime's own workspace (cuBLAS/cuDNN handles, NCCL buffers) and programs compiled besides
# the one planned (e.g. validation decoding) live there.
DEFAULT_HEADROOM = 0.10

_UNITS = {"": 1, "b": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12,
          "ki": 2**10, "mi": 2**20, "gi": 2**30, "ti": 2**40}


class MemoryPlanError(ValueError):
    """A memory size that cannot be read, or a program that does not fit; the message says
    which forms are accepted or how much memory is needed."""


def parse_bytes(text: str | int | float) -> int:
    """'80GB', '80 GB', '80G', '16GiB', '512MiB' or a plain number of bytes -> bytes."""
    if isinstance(text, int | float):
        return int(text)
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kmgt]?i?)b?\s*", text.lower())
    if match is None or match.group(2) not in _UNITS:
        raise MemoryPlanError(
            f"memory size {text!r} is not of the form 80GB, 16GiB, 512MB or bytes")
    return int(float(match.group(1)) * _UNITS[match.group(2)])


def format_bytes(n: float) -> str:
    """Bytes in decimal units with three significant figures (`parse_bytes` reads it back)."""
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.3g} {unit}"
    return f"{int(n)} B"


@dataclass(frozen=True)
class CompiledMemory:
    """Per-device bytes of one compiled program (XLA's `CompiledMemoryStats`)."""

    arguments: int  # inputs: parameters, optimizer state, the batch
    outputs: int
    temporaries: int  # activations, gradients, collective and scratch buffers
    aliased: int  # outputs written in place of donated arguments (counted once)
    code: int  # the compiled program itself

    @property
    def peak(self) -> int:
        """Bytes live at once on a device: arguments + outputs - aliased + temporaries + code."""
        return self.arguments + self.outputs - self.aliased + self.temporaries + self.code

    def to_dict(self) -> dict[str, int]:
        """The fields and the peak as a JSON-ready dict."""
        return {**asdict(self), "peak": self.peak}


def compiled_memory(compiled: Any) -> CompiledMemory:
    """The per-device memory of a `jax.jit(...).lower(...).compile()` result."""
    stats = compiled.memory_analysis()
    if stats is None:
        raise MemoryPlanError("this backend reports no memory analysis for compiled programs")
    return CompiledMemory(
        arguments=int(stats.argument_size_in_bytes),
        outputs=int(stats.output_size_in_bytes),
        temporaries=int(stats.temp_size_in_bytes),
        aliased=int(stats.alias_size_in_bytes),
        code=int(stats.generated_code_size_in_bytes),
    )


def fits(peak: int, device_memory: int, headroom: float = DEFAULT_HEADROOM) -> bool:
    """Whether `peak` bytes stay within `device_memory` less the `headroom` fraction."""
    return peak <= device_memory * (1.0 - headroom)


# ----------------------------------------------------------------------------- generation


def generate_memory(config: Any, batch: int, prompt_len: int, new_tokens: int,
                    params: Any = None) -> CompiledMemory:
    """Per-device memory of the greedy generate program for `batch` rows on this backend.

    `params`: the model's parameters (only their shapes and dtypes are read), default abstract
    ones in the config's compute dtype. Nothing is allocated: the program is only compiled.
    """
    import jax
    import numpy as np

    from modeling import generate as gen
    from modeling.model import abstract_params

    if params is None:
        params = abstract_params(config, config.compute_dtype)
    params = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), params)
    kernel = gen.uses_cpu_kernel(config)
    weights = jax.eval_shape(lambda p: gen.decode_weights(config, p, kernel), params)
    plan = gen.Plan(batch=batch, prompt_len=prompt_len, new_tokens=new_tokens)
    size = config.image_size

    def spec(shape: tuple[int, ...], kind: Any) -> jax.ShapeDtypeStruct:
        return jax.ShapeDtypeStruct(shape, kind)

    lowered = gen.generate_tokens.lower(
        config, plan, params, weights, spec((batch, size, size, 3), np.float32),
        spec((batch, prompt_len), np.int32), spec((batch,), np.int32), spec((batch,), np.bool_),
        spec((), np.int32), spec((), np.int32), jax.random.key(0), spec((), np.float32),
        spec((), np.int32), spec((), np.float32), spec((), np.float32))
    return compiled_memory(lowered.compile())


def generate_batch_for_memory(
    config: Any,
    device_memory: int | str,
    *,
    prompt_len: int = 32,
    new_tokens: int = 256,
    headroom: float = DEFAULT_HEADROOM,
    max_batch: int = 256,
    params: Any = None,
    measure: Callable[[int], int] | None = None,
) -> int:
    """The largest generate batch (1, 2, 4, ... or `max_batch`) whose program fits the memory.

    Compiles the generate program (`generate_memory`, with `params`' shapes when given) for
    batch 1, 2, 4, ... up to `max_batch` and stops at the first that does not fit (a handful of
    compiles; a worker compiles its buckets next anyway). `measure(batch) -> peak bytes`
    replaces the compile. Raises MemoryPlanError when not even one row fits.
    """
    budget = parse_bytes(device_memory)

    def peak(batch: int) -> int:
        if measure is not None:
            return measure(batch)
        return generate_memory(config, batch, prompt_len, new_tokens, params).peak

    sizes, size = [], 1
    while size < max_batch:
        sizes.append(size)
        size *= 2
    sizes.append(max_batch)
    best = 0
    for batch in sizes:
        used = peak(batch)
        if not fits(used, budget, headroom):
            if best == 0:
                raise MemoryPlanError(
                    f"even one study does not fit: the generate program needs {format_bytes(used)} "
                    f"per device, more than {1 - headroom:.0%} of {format_bytes(budget)}")
            break
        best = batch
    return best
