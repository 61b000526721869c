"""Where a loaded parameter lives: one device, or a `NamedSharding` on a mesh by a rule on its
model path and shape (shared by the checkpoint loaders and bundles)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec, SingleDeviceSharding

PartitionRule = Callable[[str, tuple[int, ...]], PartitionSpec]


def default_partition(mesh: Mesh) -> PartitionRule:
    """Shard each parameter's largest axis divisible by the mesh's last axis; else replicate."""
    axis = mesh.axis_names[-1]
    size = mesh.shape[axis]

    def rule(path: str, shape: tuple[int, ...]) -> PartitionSpec:
        dims = sorted(range(len(shape)), key=lambda d: -shape[d])
        for d in dims:
            if shape[d] % size == 0 and shape[d] >= size:
                spec: list[Any] = [None] * len(shape)
                spec[d] = axis
                return PartitionSpec(*spec)
        return PartitionSpec()

    return rule


def param_sharding(path: str, shape: tuple[int, ...], mesh: Mesh | None,
                   rule: PartitionRule | None) -> jax.sharding.Sharding:
    """The first device without a mesh; else the mesh sharding `rule` (default rule) gives."""
    if mesh is None:
        return SingleDeviceSharding(jax.devices()[0])
    return NamedSharding(mesh, (rule or default_partition(mesh))(path, shape))
