"""`radreport demo`: the whole system once, end to end, on synthetic studies.

Steps: write a synthetic MIMIC-CXR-style tree, build (or reuse) the demo model bundle by
fine-tuning the CPU demo preset on it, start Redis (private unless REDIS_URL is set), the API and
the workers, upload synthetic studies through the API, wait for their drafts, print them with the
findings the evaluation layer extracts, and stop everything it started.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import typer

DEFAULT_WORKDIR = Path("var/demo")


def demo(
    workdir: Path = typer.Option(DEFAULT_WORKDIR, help="Where the demo keeps its data and bundle."),
    studies: int = typer.Option(2000, help="Synthetic studies to train and evaluate on."),
    upload: int = typer.Option(6, help="Studies to upload through the API."),
    seed: int = typer.Option(0, help="Seed of the synthetic data."),
    serve: bool = typer.Option(False, help="Keep the system up after the demo (Ctrl-C stops it)."),
) -> None:
    """Run the whole system once: synth -> fine-tune (or reuse) -> serve -> upload -> drafts."""
    from rich.console import Console

    console = Console()
    data_dir = workdir / "data"
    bundle_dir = workdir / "bundle"
    if not (data_dir / "mimic-cxr-2.0.0-split.csv.gz").exists():
        console.rule("1. synthetic MIMIC-CXR-style studies")
        _run([sys.executable, "-m", "radreport", "synth", "--out", str(data_dir),
              "--studies", str(studies), "--seed", str(seed)])
    else:
        console.print(f"[dim]reusing the synthetic studies in {data_dir}[/dim]")
    if not (bundle_dir / "metadata.json").exists():
        console.rule("2. fine-tune the demo preset (CPU)")
        _run([sys.executable, "-m", "radreport", "finetune", "--config", "demo",
              "--data", str(data_dir), "--out", str(bundle_dir)])
    else:
        console.print(f"[dim]reusing the model bundle in {bundle_dir}[/dim]")
    console.rule("3. the service: upload studies, wait for drafts")
    from service.dev.demo import run_service_demo

    run_service_demo(data_dir=data_dir, bundle_dir=bundle_dir, studies=upload, keep_serving=serve,
                     console=console)


def _run(command: list[str]) -> None:
    completed = subprocess.run(command, check=False)
    if completed.returncode != 0:
        raise typer.Exit(completed.returncode)


def register(app: typer.Typer) -> None:
    """Add `radreport demo` to the CLI."""
    app.command("demo")(demo)
