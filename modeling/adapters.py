"""PEFT LoRA adapters (a directory with `adapter_config.json` + `adapter_model.safetensors`, as
`peft`'s `save_pretrained` writes it) merged into loaded parameters.

Each adapted transformers `nn.Linear` W (out, in) becomes W + s * B @ A with A (r, in), B (out, r)
and s = lora_alpha / r (lora_alpha / sqrt(r) with rslora; per-module `rank_pattern` /
`alpha_pattern` honoured). A DoRA adapter (`use_dora`) also holds a magnitude m (out,) per module,
and W becomes m / ||W + s B A|| * (W + s B A), the norm taken over each output row (as
`peft`'s own merge computes it). The module's name finds its tensor in the name table of the layout
(`modeling.names`), whose reshape is linear, so the delta lands on the same slice of our tree as
the weight itself: an adapter trained on any transformers version applies to a base loaded from
any format (HF directory, big_vision `.npz`, bundle).
"""

from __future__ import annotations

import functools
import json
import math
import re
import warnings
from collections.abc import Callable
from pathlib import Path

import jax
import numpy as np

from modeling.config import ModelConfig
from modeling.formats import flatten, read_safetensors, unflatten
from modeling.model import Params
from modeling.names import (
    CheckpointError,
    TensorSpec,
    UnusedTensorsWarning,
    detect_module_layout,
    hf_table,
)

_PREFIX = "base_model.model."
_LORA = re.compile(r"^(?P<module>.+)\.lora_(?P<part>[AB])(?:\.[^.]+)?\.weight$")
_MAGNITUDE = re.compile(r"^(?P<module>.+)\.lora_magnitude_vector(?:\.[^.]+)?(?:\.weight)?$")


def _pattern_value(patterns: dict, module: str, default: float) -> float:
    """peft's per-module override: a key matches a module name ending in it (as a regex)."""
    for key, value in patterns.items():
        if re.match(rf"(.*\.)?({key})$", module):
            return value
    return default


def read_adapter(adapter_dir: str | Path) -> tuple[dict, dict[str, np.ndarray]]:
    """The adapter's config and tensors, checked to be a LoRA adapter this module can merge."""
    directory = Path(adapter_dir)
    cfg_file = directory / "adapter_config.json"
    weights = directory / "adapter_model.safetensors"
    if not cfg_file.is_file() or not weights.is_file():
        raise CheckpointError(f"{directory} is not a PEFT adapter directory (needs "
                              "adapter_config.json and adapter_model.safetensors)")
    config = json.loads(cfg_file.read_text())
    if config.get("peft_type") != "LORA":
        raise CheckpointError(
            f"{directory}: only LoRA adapters merge, not {config.get('peft_type')}")
    if config.get("fan_in_fan_out"):
        raise CheckpointError(f"{directory}: adapters with fan_in_fan_out=true are not supported")
    return config, read_safetensors(weights)


def _dora(w: np.ndarray, *, spec: TensorSpec, delta: np.ndarray,
          magnitude: np.ndarray) -> np.ndarray:
    """DoRA merged onto our slice `w` of one transformers weight: m / ||W + dW|| * (W + dW), the
    norm over each output row of W (out, in), as peft's merge computes it."""
    full = spec.to_hf(w) + delta
    return spec.from_hf((magnitude / np.linalg.norm(full, axis=1))[:, None] * full)


def merge_adapter(config: ModelConfig, params: Params, adapter_dir: str | Path) -> Params:
    """`params` with the LoRA adapter at `adapter_dir` merged in (same dtypes and shardings).

    Adapters on modules PaliGemma does not use (SigLIP's pooling head) are skipped with one
    warning; an adapter on a module that is not a linear layer of PaliGemma 2 is an error.
    """
    adapter, tensors = read_adapter(adapter_dir)
    source = Path(adapter_dir).name
    parts: dict[str, dict[str, np.ndarray]] = {}
    biases: dict[str, np.ndarray] = {}
    for key, value in tensors.items():
        name = key.removeprefix(_PREFIX)
        m = _LORA.match(name)
        magnitude = _MAGNITUDE.match(name)
        if m:
            parts.setdefault(m["module"], {})[m["part"]] = value
        elif magnitude and adapter.get("use_dora"):
            parts.setdefault(magnitude["module"], {})["m"] = value
        elif name.endswith(".bias") and "lora_" not in name:
            biases[name.removesuffix(".bias")] = value  # peft bias="all" / "lora_only"
        else:
            raise CheckpointError(f"{source}: tensor {key} is not a LoRA A/B matrix, a DoRA "
                                  "magnitude or a bias (embedding adapters and modules_to_save "
                                  "do not merge)")
    layout = detect_module_layout(config, [*(f"{m}.weight" for m in parts),
                                           *(f"{m}.bias" for m in biases)])
    table = hf_table(config, layout)
    flat = dict(flatten(params))
    # model path -> [(index, slice update: current float32 slice -> new slice)]
    updates: dict[str, list[tuple[tuple[int, ...], Callable[[np.ndarray], np.ndarray]]]] = {}
    skipped = []
    r_default, alpha_default = adapter.get("r", 8), adapter.get("lora_alpha", 8)
    for module, ab in sorted(parts.items()):
        if set(ab) != ({"A", "B", "m"} if adapter.get("use_dora") else {"A", "B"}):
            raise CheckpointError(f"{source}: module {module} has only {sorted(ab)} of lora_A, "
                                  "lora_B" + (" and its DoRA magnitude" if adapter.get("use_dora")
                                              else ""))
        spec = table.get(f"{module}.weight")
        if spec is None:
            skipped.append(f"{module}.weight")  # unused (detect_module_layout checked)
            continue
        a, b = np.asarray(ab["A"], np.float32), np.asarray(ab["B"], np.float32)
        r = _pattern_value(adapter.get("rank_pattern") or {}, module, r_default)
        alpha = _pattern_value(adapter.get("alpha_pattern") or {}, module, alpha_default)
        if a.shape[0] != r or b.shape[1] != r:
            raise CheckpointError(f"{source}: module {module} has rank {a.shape[0]}, config {r}")
        scale = alpha / math.sqrt(r) if adapter.get("use_rslora") else alpha / r
        delta = spec.from_hf(scale * (b @ a))
        if delta.shape != flat[spec.path].shape[len(spec.index):]:
            raise CheckpointError(f"{source}: module {module} adapts a weight of shape "
                                  f"{(b.shape[0], a.shape[1])}; the base has another size")
        if "m" in ab and np.size(ab["m"]) != b.shape[0]:
            raise CheckpointError(f"{source}: module {module} has a DoRA magnitude of "
                                  f"{np.size(ab['m'])} values for {b.shape[0]} outputs")
        if "m" in ab:
            change = functools.partial(_dora, spec=spec, delta=scale * (b @ a),
                                       magnitude=np.asarray(ab["m"], np.float32).reshape(-1))
        else:
            change = functools.partial(np.add, delta)
        updates.setdefault(spec.path, []).append((spec.index, change))
    for module, bias in sorted(biases.items()):
        spec = table.get(f"{module}.bias")
        if spec is None:
            skipped.append(f"{module}.bias")
            continue
        new = spec.from_hf(np.asarray(bias, np.float32))
        updates.setdefault(spec.path, []).append((spec.index, lambda w, n=new: n))
    if skipped:
        warnings.warn(UnusedTensorsWarning(
            f"{source}: skipped adapters of {len(skipped)} weight(s) PaliGemma does not use "
            f"(the SigLIP pooling head): {', '.join(sorted(skipped))}"), stacklevel=2)
    # one path at a time: the float32 working copy is never more than one stacked array
    for path, changes in updates.items():
        base = flat[path]
        merged = np.array(base, np.float32)
        for index, change in changes:
            merged[index] = change(merged[index])
        flat[path] = jax.device_put(merged.astype(base.dtype), base.sharding)
        del merged
    return unflatten(flat)
