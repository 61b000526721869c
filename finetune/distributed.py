"""Multi-host runs: join the run's processes, and make them agree (stop flags, barriers).

A run over N hosts is N copies of the same command, one per host, that find each other through
a coordinator (process 0's host:port) before JAX touches a device:

    radreport finetune --config mimic-3b-448 --coordinator 10.0.0.1:1234 --num-processes 4 \\
        --process-id $i ...

or the environment variables JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and JAX_PROCESS_ID. On
TPU slices and under SLURM, Open MPI or Kubernetes `jax.distributed.initialize()` finds all of
this itself (`--set mesh.distributed=true`). Every process then sees every device of the run
(`jax.devices()`), owns its local ones, reads its own block of each global batch, and runs the
same program; collectives (gradient all-reduce, FSDP gathers) cross hosts. CPU devices talk over
gloo, so the same code runs as several processes on one machine (the tests do).

Decisions that must be the same everywhere (stop after this step, save now) are taken with
`any_process`: a process that got SIGTERM raises its flag, every process learns of it at the
same step, and all save the same checkpoint before exiting.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

ENV_COORDINATOR = "JAX_COORDINATOR_ADDRESS"
ENV_NUM_PROCESSES = "JAX_NUM_PROCESSES"
ENV_PROCESS_ID = "JAX_PROCESS_ID"


class DistributedError(ValueError):
    """An inconsistent multi-host launch; the message names the flag or variable to fix."""


def is_initialized() -> bool:
    """Whether this process already joined a multi-process run."""
    try:
        from jax._src import distributed

        return distributed.global_state.client is not None
    except (ImportError, AttributeError):
        return False


def requested(coordinator: str | None = None, num_processes: int | None = None,
              process_id: int | None = None) -> bool:
    """Whether the flags or the environment ask for a multi-process run."""
    return any(v is not None for v in (coordinator, num_processes, process_id)) or bool(
        os.environ.get(ENV_COORDINATOR))


def initialize(coordinator: str | None = None, num_processes: int | None = None,
               process_id: int | None = None) -> None:
    """Join the run: explicit arguments, else the JAX_* variables, else JAX's auto-detection
    (TPU slices, SLURM, Open MPI, Kubernetes). Call before anything uses a device.

    On CPU the cross-process collectives use gloo.
    """
    import jax

    if is_initialized():
        return
    coordinator = coordinator or os.environ.get(ENV_COORDINATOR) or None
    num_processes = num_processes if num_processes is not None else _env_int(ENV_NUM_PROCESSES)
    process_id = process_id if process_id is not None else _env_int(ENV_PROCESS_ID)
    if coordinator is not None and ":" not in coordinator:
        raise DistributedError(f"--coordinator {coordinator!r} must be host:port of process 0")
    if num_processes is not None and num_processes < 1:
        raise DistributedError(f"--num-processes must be at least 1, got {num_processes}")
    if process_id is not None and num_processes is not None and not 0 <= process_id < num_processes:
        raise DistributedError(
            f"--process-id {process_id} must be in 0..{num_processes - 1} (--num-processes "
            f"{num_processes})")
    if coordinator is not None and (num_processes is None or process_id is None):
        raise DistributedError("with --coordinator give --num-processes and --process-id too "
                               f"(or {ENV_NUM_PROCESSES} and {ENV_PROCESS_ID})")
    if _platforms_include_cpu():
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    kwargs = {k: v for k, v in (("coordinator_address", coordinator),
                                ("num_processes", num_processes),
                                ("process_id", process_id)) if v is not None}
    jax.distributed.initialize(**kwargs)


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    if not value:
        return None
    try:
        return int(value)
    except ValueError:
        raise DistributedError(f"{name}={value!r} is not an integer") from None


def _platforms_include_cpu() -> bool:
    platforms = os.environ.get("JAX_PLATFORMS", "")
    return not platforms or "cpu" in platforms.split(",")


def any_process(flags: Sequence[bool]) -> list[bool]:
    """Each flag OR-ed over all processes (a collective: every process must call it, in the
    same order). With one process, the flags themselves."""
    import jax

    if jax.process_count() == 1:
        return [bool(f) for f in flags]
    import numpy as np
    from jax.experimental import multihost_utils

    gathered = multihost_utils.process_allgather(np.asarray(flags, np.bool_))
    return [bool(x) for x in np.asarray(gathered).reshape(-1, len(flags)).any(axis=0)]


def barrier(name: str) -> None:
    """Wait until every process reaches the barrier of this name (no-op with one process)."""
    import jax

    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)
