"""`radreport finetune`: train a preset or config on a MIMIC-CXR-layout tree, export a bundle."""

from __future__ import annotations

from pathlib import Path

import typer


def finetune(
    config: str = typer.Option(
        "demo", "--config", "-c", help="Preset name or a .json/.toml config file."),
    overrides: list[str] = typer.Option(
        [], "--set", "-s", help="Override a field: section.key=value (repeatable)."),
    data: Path | None = typer.Option(
        None, "--data", help="MIMIC-CXR-layout tree (real or `radreport synth`)."),
    out: Path | None = typer.Option(
        None, "--out", help="Write the model bundle of the best checkpoint here."),
    workdir: Path | None = typer.Option(
        None, "--workdir", help="Checkpoints and logs (default: runs/<name>)."),
    show: bool = typer.Option(False, "--show", help="Print the resolved config as JSON and exit."),
    plan: bool = typer.Option(False, "--plan", help="Compile the train step ahead of time and "
                              "print its memory per device, the micro-batch that fits and the "
                              "accumulation; train nothing."),
    devices: int | None = typer.Option(None, "--devices", help="--plan: simulate this many "
                                       "devices (default: compile for the devices present)."),
    device_memory: str | None = typer.Option(None, "--device-memory", help="--plan: memory of "
                                             "one device, e.g. 80GB, 40GiB."),
    headroom: float = typer.Option(0.10, "--headroom", help="--plan: fraction of device memory "
                                   "left unplanned (allocator, runtime workspaces)."),
    micro_batch: int | None = typer.Option(None, "--micro-batch", help="--plan: compile only "
                                           "this per-device micro-batch."),
    as_json: bool = typer.Option(False, "--json", help="--plan: print the plan as JSON."),
    coordinator: str | None = typer.Option(None, "--coordinator", help="Multi-host: host:port "
                                           "of process 0 (or JAX_COORDINATOR_ADDRESS)."),
    num_processes: int | None = typer.Option(None, "--num-processes", help="Multi-host: "
                                             "processes in the run (or JAX_NUM_PROCESSES)."),
    process_id: int | None = typer.Option(None, "--process-id", help="Multi-host: this "
                                          "process, 0..N-1 (or JAX_PROCESS_ID)."),
    stop_at_step: int | None = typer.Option(None, "--stop-at-step", help="End this session at "
                                            "this step with a checkpoint (run again to go on)."),
) -> None:
    """Fine-tune PaliGemma 2 (resumes from the workdir's latest checkpoint; SIGTERM saves one)."""
    import json

    from rich.console import Console

    from finetune.config import ConfigError
    from finetune.presets import load_config

    console = Console(stderr=True)
    try:
        cfg = load_config(config, list(overrides))
    except ConfigError as error:
        console.print(f"[red]config error:[/red] {error}")
        raise typer.Exit(2) from error
    if data is not None:
        cfg.data.root = str(data)
    if workdir is not None:
        cfg.workdir = str(workdir)
    elif cfg.workdir is None and out is not None:
        cfg.workdir = str(out.parent / f"{out.name}.run")
    if show:
        typer.echo(json.dumps(cfg.to_dict(), indent=2))
        return
    if plan:
        _plan(cfg, devices, device_memory, headroom, micro_batch, as_json, console)
        return
    from finetune import distributed
    from finetune.data import DataError
    from finetune.trainer import PREEMPTED_EXIT_CODE, Preempted, train

    try:
        if distributed.requested(coordinator, num_processes, process_id):
            distributed.initialize(coordinator, num_processes, process_id)
        result = train(cfg, out_dir=out, console=console, stop_at_step=stop_at_step)
    except Preempted as stop:
        console.print(f"[yellow]{stop}[/yellow]")
        raise typer.Exit(PREEMPTED_EXIT_CODE) from stop
    except (ConfigError, DataError, distributed.DistributedError) as error:
        console.print(f"[red]error:[/red] {error}")
        raise typer.Exit(2) from error
    console.print(f"done: {result.steps} steps, best checkpoint {result.best_step}")
    if result.test_scores:
        from evaluation import summarize

        console.print(f"held-out: {summarize(result.test_scores)}")


def _plan(cfg, devices: int | None, device_memory: str | None, headroom: float,  # noqa: ANN001
          micro_batch: int | None, as_json: bool, console) -> None:  # noqa: ANN001
    """`--plan`: compile the train step for the devices and print what fits (see finetune.plan)."""
    import json

    from finetune import plan as planner
    from finetune.config import ConfigError
    from modeling.memory import MemoryPlanError, parse_bytes

    if device_memory is None:
        console.print(
            "[red]--plan needs --device-memory[/red] (e.g. 80GB for an H100, 40GB, 16GiB)")
        raise typer.Exit(2)
    if not 0 <= headroom < 1:
        console.print("[red]--headroom must be a fraction in [0, 1)[/red]")
        raise typer.Exit(2)
    try:
        memory = parse_bytes(device_memory)
        if devices is None:
            import jax

            console.print(f"compiling for the {jax.device_count()} {jax.default_backend()} devices")
            result = planner.plan_here(cfg, jax.device_count(), memory, headroom, micro_batch,
                                       log=console.print)
        else:
            console.print(f"compiling the train step of {cfg.name} for {devices} simulated devices")
            result = planner.plan(cfg, devices, memory, headroom, micro_batch)
    except (ConfigError, MemoryPlanError) as error:
        console.print(f"[red]error:[/red] {error}")
        raise typer.Exit(2) from error
    typer.echo(json.dumps(result.to_dict(), indent=2) if as_json else planner.format_plan(result))
    if not result.fits:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add `radreport finetune` to the CLI."""
    app.command("finetune")(finetune)
