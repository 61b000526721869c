"""Run checkpoints with Orbax: async saves, keep the latest N plus the best by a validation metric.

One checkpoint holds everything needed to continue a run exactly: the train state (step,
trainable parameters, optimizer state, RNG key) as an Orbax PyTree, and each host's input
iterator position as grain's per-process JSON. Frozen parameters are not saved: they are
rebuilt from the run's initialisation (seed or base bundle) on resume.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers

from modeling.formats import flatten, unflatten


class _IteratorSnapshot:
    """The iterator position at save time (async saves must not read the live iterator later)."""

    def __init__(self, state: dict[str, Any]) -> None:
        self._state = json.dumps(state)

    def get_state(self) -> bytes:
        return self._state.encode()


class RunCheckpoints:
    """Save and restore run checkpoints in `directory` (one sub-folder per step)."""

    def __init__(self, directory: Path, keep: int, best_metric: str,
                 async_save: bool = True) -> None:
        self.best_metric = best_metric

        def metric(metrics: dict[str, float]) -> float:
            return float(metrics.get(best_metric, float("-inf")))

        policy = checkpoint_managers.AnyPreservationPolicy(
            [
                checkpoint_managers.LatestN(n=max(keep, 1)),
                checkpoint_managers.BestN(
                    get_metric_fn=metric, n=1, keep_checkpoints_without_metrics=False
                ),
            ]
        )
        options = ocp.CheckpointManagerOptions(
            preservation_policy=policy,
            best_fn=metric,
            best_mode="max",
            enable_async_checkpointing=async_save,
            create=True,
        )
        self.manager = ocp.CheckpointManager(
            Path(directory).absolute(), options=options, item_names=("state", "data")
        )

    def save(
        self,
        step: int,
        state: Any,
        iterator_state: dict[str, Any],
        metrics: dict[str, float] | None = None,
    ) -> None:
        """Start saving (returns before the write finishes when async); `metrics` rank the best."""
        if step in self.manager.all_steps():
            return
        args = ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            data=_grain_save(_IteratorSnapshot(iterator_state)),
        )
        clean = {k: float(v) for k, v in (metrics or {}).items()} if metrics else None
        self.manager.save(step, args=args, metrics=clean, force=True)

    def latest_step(self) -> int | None:
        """The newest saved step, or None."""
        return self.manager.latest_step()

    def best_step(self) -> int | None:
        """The step with the highest validation metric (None before any validated checkpoint)."""
        steps_with_metrics = [
            info.step for info in self.manager._checkpoints if info.metrics  # noqa: SLF001
        ]
        if not steps_with_metrics:
            return None
        return self.manager.best_step()

    def restore_state(self, step: int, target: Any) -> Any:
        """The train state of `step`, laid out like `target` (arrays or ShapeDtypeStructs).

        Checkpoints written before the train step ran on `nnx.split` state hold parameter trees
        as flat dicts ('llm/layers/mlp/linear', LoRA adapters as '<weight>#lora_a'); they are
        read into that layout and nested (`_nested`), so such runs resume."""
        abstract = jax.tree.map(_abstract, target)
        if self._flat_layout(step):
            flat = jax.tree.map(_flat, abstract, is_leaf=_is_param_tree)
            restored = self.manager.restore(
                step, args=ocp.args.Composite(state=ocp.args.StandardRestore(flat)))
            return jax.tree.map(_nested, restored["state"], is_leaf=_is_flat_param_tree)
        restored = self.manager.restore(
            step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract))
        )
        return restored["state"]

    def _flat_layout(self, step: int) -> bool:
        """Whether the checkpoint of `step` keys its trainable parameters by '/'-joined path."""
        metadata = self.manager.item_metadata(step)
        state = metadata["state"] if metadata is not None else None
        trainable = getattr(state, "tree", state)
        trainable = trainable.get("trainable") if hasattr(trainable, "get") else None
        return hasattr(trainable, "keys") and any("/" in str(key) for key in trainable.keys())

    def restore_iterator(self, step: int, iterator: Any) -> None:
        """Move `iterator` (a grain DatasetIterator) to its position at `step`."""
        self.manager.restore(step, args=ocp.args.Composite(data=_grain_restore(iterator)))

    def wait(self) -> None:
        """Block until pending async saves are on disk."""
        self.manager.wait_until_finished()

    def close(self) -> None:
        """Finish pending saves and release the manager."""
        self.manager.wait_until_finished()
        self.manager.close()


_OLD_LORA = ("#lora_a", "#lora_b")
_NEW_LORA = ("_lora/lora_a", "_lora/lora_b")


def _is_param_tree(node: Any) -> bool:
    return isinstance(node, dict) and bool(node) and set(node) <= {"img", "llm"}


def _is_flat_param_tree(node: Any) -> bool:
    return isinstance(node, dict) and bool(node) and all(
        isinstance(key, str) and key.startswith(("img/", "llm/")) for key in node)


def _renamed(path: str, suffixes: tuple[str, ...], into: tuple[str, ...]) -> str:
    for suffix, replacement in zip(suffixes, into, strict=True):
        if path.endswith(suffix):
            return path.removesuffix(suffix) + replacement
    return path


def _flat(node: Any) -> Any:
    """A nested parameter tree as the old flat layout (paths and LoRA names of before)."""
    if not _is_param_tree(node):
        return node
    return {_renamed(path, _NEW_LORA, _OLD_LORA): leaf for path, leaf in flatten(node)}


def _nested(node: Any) -> Any:
    """An old flat parameter tree nested under the model's paths (inverse of `_flat`)."""
    if not _is_flat_param_tree(node):
        return node
    return unflatten({_renamed(path, _OLD_LORA, _NEW_LORA): leaf for path, leaf in node.items()})


def _abstract(leaf: Any) -> Any:
    if isinstance(leaf, jax.Array):
        return jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=leaf.sharding)
    return leaf


def _grain_save(item: Any) -> Any:
    import grain

    return grain.checkpoint.CheckpointSave(item)


def _grain_restore(item: Any) -> Any:
    import grain

    return grain.checkpoint.CheckpointRestore(item)
