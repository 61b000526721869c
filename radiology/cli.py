"""`radreport synth`: write a synthetic MIMIC-CXR tree (the radiology package's commands)."""

from __future__ import annotations

from pathlib import Path

import typer


def synth(
    out: Path = typer.Option(..., "--out", help="Folder to write the tree into."),
    studies: int = typer.Option(200, "--studies", min=1, help="Number of studies."),
    seed: int = typer.Option(0, "--seed", help="Seed: the same seed writes the same tree."),
    workers: int = typer.Option(0, "--workers", min=0,
                                help="Worker processes (0: one per CPU)."),
    image_format: str = typer.Option("dcm", "--format",
                                     help="dcm (MIMIC-CXR) or jpg (MIMIC-CXR-JPG)."),
    check: bool = typer.Option(True, "--check/--no-check",
                               help="Run the MIMIC-CXR layout check afterwards."),
) -> None:
    """Write synthetic chest X-ray studies in the MIMIC-CXR layout (DICOM, reports, tables)."""
    from radiology.mimic import check_layout
    from radiology.synth import write_dataset

    if image_format not in ("dcm", "jpg"):
        raise typer.BadParameter("--format must be dcm or jpg")
    root = write_dataset(out, studies, seed, workers or None, image_format=image_format)
    typer.echo(f"wrote {studies} synthetic studies to {root}")
    if check:
        problems = check_layout(root)
        for problem in problems:
            typer.echo(f"layout problem: {problem}", err=True)
        if problems:
            raise typer.Exit(code=1)
        typer.echo("layout check: ok")


def register(app: typer.Typer) -> None:
    """Add the radiology commands (`synth`) to the `radreport` app."""
    app.command("synth")(synth)
