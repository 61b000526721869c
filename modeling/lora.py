"""LoRA on the NNX model: low-rank adapters (`model.LoRA`, an `nnx.LoRA` whose parameters are
`nnx.LoRAParam`s) attached next to the weights they adapt, and folded back into them.

    model = model_from_params(config, params)
    add_lora(model, r"^llm/layers/attn/", rank=8, alpha=16.0, rngs=nnx.Rngs(0))
    graphdef, adapters, base = nnx.split(model, nnx.LoRAParam, ...)   # train `adapters` only
    ...
    merged = merge_lora(model)   # plain params again: W + alpha / r * A @ B for every adapter

An adapter of weight `name` is the attribute `<name>_lora` of the module holding the weight, so
the adapter of `llm/layers/attn/q_einsum/w` has the parameters
`llm/layers/attn/q_einsum/w_lora/{lora_a,lora_b}`; adapters of the stacked layers carry the
leading "layers" axis of the weights they adapt. A is [In, r] and B [r, Out] in the weight's
matmul orientation (`MatmulLayout`: q_einsum (N, D, H) reads D and writes N H, so A is [D, r]
and B [r, N H]); B starts at zero, so an adapted model starts as its base.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from modeling.config import ModelConfig
from modeling.formats import write_safetensors
from modeling.model import LoRA, MatmulLayout, Params, params_of, stack_layers
from modeling.names import TRANSFORMERS_5_STATE, HfLayout, TensorSpec, hf_tensor_specs


class LoRAError(ValueError):
    """A LoRA pattern that matches no weight (the message lists the weights it could match)."""


def _weights(model: nnx.Module) -> Iterator[tuple[str, nnx.Module, str, MatmulLayout]]:
    """(path, owner, name, layout) of every weight that can take an adapter."""
    for path, module in list(nnx.iter_modules(model)):
        for name, layout in getattr(module, "layouts", {}).items():
            yield "/".join(str(p) for p in (*path, name)), module, name, layout


def _is_stacked(variable: nnx.Variable) -> bool:
    names = variable.get_metadata().get("out_sharding") or ()
    return len(names) > 0 and names[0] == "layers"


def adaptable_paths(model: nnx.Module) -> list[str]:
    """Paths of the weights an adapter can sit next to (what `add_lora`'s pattern is matched
    against)."""
    return [path for path, *_ in _weights(model)]


def add_lora(model: nnx.Module, pattern: str, rank: int, alpha: float,
             rngs: nnx.Rngs) -> list[str]:
    """Attach an adapter of rank `rank` (scale alpha / rank) next to every weight whose path
    matches the regex `pattern`; returns the adapted paths. A = normal(1 / sqrt(In)), B = 0."""
    regex = re.compile(pattern)
    adapted = []
    for path, owner, name, layout in list(_weights(model)):
        if not regex.search(path):
            continue
        variable = getattr(owner, name)
        stacked = _is_stacked(variable)
        shape = tuple(variable.shape[1:] if stacked else variable.shape)
        fan_in = int(np.prod([shape[axis] for axis in layout.order[: layout.inputs]]))
        fan_out = int(np.prod(shape)) // fan_in

        def make(r: nnx.Rngs, fan_in: int = fan_in, fan_out: int = fan_out) -> LoRA:
            return LoRA(fan_in, rank, fan_out, alpha=alpha, rngs=r)

        adapter = stack_layers(variable.shape[0], make, rngs) if stacked else make(rngs)
        setattr(owner, f"{name}_lora", adapter)
        adapted.append(path)
    if not adapted:
        raise LoRAError(f"LoRA pattern {pattern!r} matches no weight; weights that can take "
                        f"an adapter: {', '.join(adaptable_paths(model))}")
    return adapted


def _fold(w: jax.Array, a: jax.Array, b: jax.Array, *, layout: MatmulLayout,
          scale: float) -> jax.Array:
    """One layer's W + scale * A @ B (in float32, stored in W's dtype)."""
    delta = jnp.matmul(a.astype(jnp.float32), b.astype(jnp.float32)) * scale
    return (w.astype(jnp.float32) + layout.unmatrix(delta, w.shape)).astype(w.dtype)


def merge_lora(model: nnx.Module) -> Params:
    """The base parameters (nested dict, `params_of`) with every adapter folded into its weight,
    W + scale * unmatrix(A @ B), computed in float32 and stored in W's dtype."""
    params = params_of(model)
    for path, owner, name, layout in _weights(model):
        adapter = getattr(owner, f"{name}_lora", None)
        if adapter is None:
            continue
        w = getattr(owner, name)[...]
        a, b = adapter.lora_a[...], adapter.lora_b[...]
        fold = functools.partial(_fold, layout=layout, scale=adapter.scale)
        merged = jax.vmap(fold)(w, a, b) if a.ndim == 3 else fold(w, a, b)
        node: Any = params
        *parents, leaf = path.split("/")
        for key in parents:
            node = node[key]
        node[leaf] = merged
    return params


# ----------------------------------------------------------------------------- PEFT export

_PEFT_PREFIX = "base_model.model."


def peft_adapter(config: ModelConfig, model: nnx.Module,
                 layout: HfLayout = TRANSFORMERS_5_STATE) -> tuple[dict, dict[str, np.ndarray]]:
    """The adapters of `model` as a PEFT LoRA adapter of transformers' PaliGemma: (config dict
    for `adapter_config.json`, tensors for `adapter_model.safetensors`), module names in
    `layout` (transformers 5's module tree by default).

    transformers' `nn.Linear` weight is (Out, In) = our [In, Out] matrix transposed, so per layer
    peft's lora_A (r, In) is A transposed and lora_B (Out, r) B transposed; peft's scale
    lora_alpha / r is ours. Where one of our weights is two transformers modules (kv_einsum: k_proj
    and v_proj; gating_einsum: gate_proj and up_proj), both get the same A and their half of B:
    the same deltas exactly. The patch embedding (a convolution in transformers) cannot be
    exported."""
    table: dict[str, list[TensorSpec]] = {}
    for spec in hf_tensor_specs(config, layout):
        if spec.hf_name.endswith(".weight"):
            table.setdefault(spec.path, []).append(spec)
    tensors: dict[str, np.ndarray] = {}
    ranks, alphas, modules = set(), set(), []
    for path, owner, name, layout_ in _weights(model):
        adapter = getattr(owner, f"{name}_lora", None)
        if adapter is None:
            continue
        if path == "img/embedding/kernel":
            raise LoRAError("an adapter on the patch embedding (a convolution in transformers) "
                            "cannot be exported as a PEFT adapter")
        a = np.asarray(adapter.lora_a[...], np.float32)
        b = np.asarray(adapter.lora_b[...], np.float32)
        rank = a.shape[-1]
        ranks.add(rank)
        alphas.add(adapter.scale * rank)
        weight = getattr(owner, name)
        stacked = a.ndim == 3
        shape = tuple(weight.shape[1:] if stacked else weight.shape)
        first_out = shape[layout_.order[layout_.inputs]]
        for spec in table[path]:
            layer = spec.index[0] if stacked else None
            a_l = a[layer] if stacked else a
            b_l = b[layer] if stacked else b
            part = spec.index[1:] if stacked else spec.index
            if part:  # one slice of the weight's first output axis (k | v, gate | up)
                b_l = b_l.reshape(rank, first_out, -1)[:, part[0]]
            module = spec.hf_name.removesuffix(".weight")
            tensors[f"{_PEFT_PREFIX}{module}.lora_A.weight"] = np.ascontiguousarray(a_l.T)
            tensors[f"{_PEFT_PREFIX}{module}.lora_B.weight"] = np.ascontiguousarray(b_l.T)
            modules.append(module)
    if not modules:
        raise LoRAError("the model has no LoRA adapters to export")
    if len(ranks) > 1 or len(alphas) > 1:
        raise LoRAError(f"adapters of ranks {sorted(ranks)} and alphas {sorted(alphas)}: a PEFT "
                        "export needs one rank and one alpha")
    adapter_config = {
        "peft_type": "LORA", "task_type": None, "r": ranks.pop(), "lora_alpha": alphas.pop(),
        "target_modules": sorted(modules), "lora_dropout": 0.0, "bias": "none",
        "fan_in_fan_out": False, "use_rslora": False, "use_dora": False,
        "modules_to_save": None, "init_lora_weights": True, "inference_mode": True,
        "base_model_name_or_path": None,
    }
    return adapter_config, tensors


def save_peft_adapter(config: ModelConfig, model: nnx.Module, out_dir: str | Path,
                      layout: HfLayout = TRANSFORMERS_5_STATE,
                      base_model: str | None = None) -> Path:
    """Write `model`'s adapters as a PEFT adapter directory (`adapter_config.json`,
    `adapter_model.safetensors`, see `peft_adapter`) that `peft.PeftModel.from_pretrained`
    applies to transformers' PaliGemma, and `load_pretrained(base, adapter=...)` merges."""
    adapter_config, tensors = peft_adapter(config, model, layout)
    adapter_config["base_model_name_or_path"] = base_model
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_safetensors(out / "adapter_model.safetensors", tensors)
    (out / "adapter_config.json").write_text(json.dumps(adapter_config, indent=2) + "\n")
    return out
