"""`radreport finetune`: train a preset or config file on a MIMIC-CXR-layout tree, export a bundle."""

from __future__ import annotations

from pathlib import Path

import typer


def finetune(
    config: str = typer.Option("demo", "--config", "-c", help="Preset name or a .json/.toml config file."),
    overrides: list[str] = typer.Option([], "--set", "-s", help="Override a field: section.key=value (repeatable)."),
    data: Path | None = typer.Option(None, "--data", help="MIMIC-CXR-layout tree (real or `radreport synth`)."),
    out: Path | None = typer.Option(None, "--out", help="Write the model bundle of the best checkpoint here."),
    workdir: Path | None = typer.Option(None, "--workdir", help="Checkpoints and logs (default: runs/<name>)."),
    show: bool = typer.Option(False, "--show", help="Print the resolved config as JSON and exit."),
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
    from finetune.data import DataError
    from finetune.trainer import PREEMPTED_EXIT_CODE, Preempted, train

    try:
        result = train(cfg, out_dir=out, console=console)
    except Preempted as stop:
        console.print(f"[yellow]{stop}[/yellow]")
        raise typer.Exit(PREEMPTED_EXIT_CODE) from stop
    except (ConfigError, DataError) as error:
        console.print(f"[red]error:[/red] {error}")
        raise typer.Exit(2) from error
    console.print(f"done: {result.steps} steps, best checkpoint {result.best_step}")
    if result.test_scores:
        from evaluation import summarize

        console.print(f"held-out: {summarize(result.test_scores)}")


def register(app: typer.Typer) -> None:
    """Add `radreport finetune` to the CLI."""
    app.command("finetune")(finetune)
