"""Device mesh and parameter sharding: `data` x `fsdp` axes, parameter-name rules to PartitionSpecs.

The same code runs on 1 CPU, 8 simulated CPU devices, a GPU node or a TPU slice:

- `data`: pure data parallelism (parameters replicated along it).
- `fsdp`: data parallelism with parameters (and optimizer state) sharded along it.

The batch axis is split over both. A parameter is sharded by the first rule whose regex matches
its '/'-joined path (e.g. `("llm/embedder/.*", "fsdp,None")`); without a rule, its largest axis
divisible by the fsdp size is sharded over `fsdp` (big_vision's `fsdp` strategy), else replicated.
The model's logical axis names (the `out_sharding` metadata of its `nnx.Param`s,
`modeling.model.axis_names`) keep the default off the stacked "layers" axis, which the layer
scan slices.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from finetune.config import MeshSection

BATCH_AXES = ("data", "fsdp")


class MeshError(ValueError):
    """The requested mesh does not fit the devices; the message gives the device count."""


def mesh_shape(config: MeshSection, device_count: int) -> tuple[int, int]:
    """(data, fsdp) sizes; one of them may be -1 (all devices left)."""
    data, fsdp = config.data, config.fsdp
    if data == -1 and fsdp == -1:
        raise MeshError("mesh.data and mesh.fsdp cannot both be -1")
    if data == -1:
        if device_count % fsdp:
            raise MeshError(f"mesh.fsdp={fsdp} does not divide the {device_count} devices")
        data = device_count // fsdp
    if fsdp == -1:
        if device_count % data:
            raise MeshError(f"mesh.data={data} does not divide the {device_count} devices")
        fsdp = device_count // data
    if data * fsdp != device_count:
        raise MeshError(
            f"mesh data={data} x fsdp={fsdp} needs {data * fsdp} devices; "
            f"{device_count} devices are visible"
        )
    return data, fsdp


def make_mesh(config: MeshSection, devices: Sequence[Any] | None = None) -> Mesh:
    """A 2-D mesh ('data', 'fsdp') over `devices` (default: all devices of all hosts)."""
    devices = list(devices) if devices is not None else jax.devices()
    data, fsdp = mesh_shape(config, len(devices))
    try:
        from jax.experimental import mesh_utils

        grid = mesh_utils.create_device_mesh((data, fsdp), devices=devices)
    except (AssertionError, ValueError, NotImplementedError):
        # mesh_utils knows TPU/GPU topologies only; CPU (and simulated) devices keep their order.
        grid = np.asarray(devices).reshape(data, fsdp)
    return Mesh(grid, BATCH_AXES)


def parse_spec(text: str) -> PartitionSpec:
    """'fsdp,None' -> PartitionSpec('fsdp', None); '' -> PartitionSpec() (replicated)."""
    if not text.strip():
        return PartitionSpec()
    axes: list[Any] = []
    for part in text.split(","):
        part = part.strip()
        if part in ("None", "none", "-", ""):
            axes.append(None)
        elif "+" in part:
            axes.append(tuple(part.split("+")))
        else:
            axes.append(part)
    return PartitionSpec(*axes)


def param_spec(
    path: str,
    shape: Sequence[int],
    fsdp_size: int,
    rules: Sequence[Sequence[str]] = (),
    axis_names: Sequence[str | None] | None = None,
) -> PartitionSpec:
    """The PartitionSpec of one parameter: first matching rule, else fsdp on the largest axis
    (never an axis whose logical name in `axis_names` is "layers").

    >>> tuple(param_spec("llm/layers/mlp/linear", (2, 64, 16), fsdp_size=4))
    (None, 'fsdp', None)
    >>> tuple(param_spec("llm/final_norm/scale", (18,), fsdp_size=4))
    ()
    >>> tuple(param_spec("llm/layers/mlp/linear", (8, 6, 6), 4,
    ...                  axis_names=("layers", "mlp", "embed")))
    ()
    """
    for pattern, spec in rules:
        if re.search(pattern, path):
            parsed = parse_spec(spec)
            if len(parsed) > len(shape):
                raise MeshError(f"sharding rule {pattern!r} gives {spec!r} for {path} "
                                f"of shape {tuple(shape)}")
            return parsed
    if fsdp_size <= 1 or not shape:
        return PartitionSpec()
    order = sorted(range(len(shape)), key=lambda axis: (-shape[axis], axis))
    if axis_names is not None and len(axis_names) == len(shape):
        order = [axis for axis in order if axis_names[axis] != "layers"]
    for axis in order:
        if shape[axis] % fsdp_size == 0:
            spec: list[Any] = [None] * len(shape)
            spec[axis] = "fsdp"
            return PartitionSpec(*spec)
    return PartitionSpec()


def tree_shardings(
    tree: Any,
    mesh: Mesh,
    rules: Sequence[Sequence[str]] = (),
    axes: dict[str, tuple[str | None, ...]] | None = None,
) -> Any:
    """NamedShardings for every leaf of a pytree (dict keys joined by '/' name the leaf).

    `axes` ({parameter path: logical axis names}, `modeling.model.axis_names`) applies to every
    leaf whose name ends with that path (a parameter, its optimizer moments, ...)."""
    fsdp_size = mesh.shape["fsdp"]
    axes = axes or {}

    def leaf_sharding(path: tuple[Any, ...], leaf: Any) -> NamedSharding:
        shape = getattr(leaf, "shape", ())
        name = path_name(path)
        parts = name.split("/")
        names = next((axes[key] for key in ("/".join(parts[i:]) for i in range(len(parts)))
                      if key in axes), None)
        return NamedSharding(mesh, param_spec(name, shape, fsdp_size, rules, names))

    return jax.tree_util.tree_map_with_path(leaf_sharding, tree)


def path_name(path: tuple[Any, ...]) -> str:
    """A jax key path as 'a/b/c' (dict keys, attribute names and sequence indices)."""
    parts = []
    for key in path:
        for attribute in ("key", "name", "idx"):
            if hasattr(key, attribute):
                parts.append(str(getattr(key, attribute)))
                break
        else:
            parts.append(str(key))
    return "/".join(parts)


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Batch arrays: leading axis split over data x fsdp, the rest replicated."""
    return NamedSharding(mesh, PartitionSpec(BATCH_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
    """Fully replicated (scalars, RNG keys, the step counter)."""
    return NamedSharding(mesh, PartitionSpec())


def global_batch(local: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """This host's rows of a batch as global arrays sharded over the batch axes."""
    sharding = batch_sharding(mesh)
    return {
        name: jax.make_array_from_process_local_data(sharding, np.asarray(value))
        for name, value in local.items()
    }


def replicated_array(value: np.ndarray, sharding: NamedSharding) -> jax.Array:
    """A host array that every process holds in full, placed with `sharding`."""
    value = np.asarray(value)
    return jax.make_array_from_callback(value.shape, sharding, lambda index: value[index])
