"""`radreport convert` (official checkpoint -> bundle) and `radreport export` (bundle -> HF
directory or big_vision .npz): the modeling package's commands. Heavy
imports happen inside them. (`radreport generate` reads image files, so it lives in the command
layer, `radreport/generate.py`: modeling knows no DICOM.)"""

from __future__ import annotations

from pathlib import Path

import typer


def convert(
    source: Path = typer.Argument(..., help="HF PaliGemma 2 directory or big_vision .npz."),
    out: Path = typer.Argument(..., help="Bundle directory to write."),
    tokenizer: Path | None = typer.Option(
        None, "--tokenizer", help="SentencePiece model (default: tokenizer.model beside source)."),
    dtype: str = typer.Option("bfloat16", "--dtype", help="Stored parameter dtype."),
    prompt: str | None = typer.Option(
        None, "--prompt", help="Default prompt stored in the bundle."),
    adapter: Path | None = typer.Option(
        None, "--adapter", help="PEFT LoRA adapter directory to merge into the weights."),
) -> None:
    """Convert an official checkpoint into a model bundle."""
    import modeling
    from modeling.bundle import save_bundle

    model = modeling.load_pretrained(source, dtype=dtype, tokenizer=tokenizer, adapter=adapter)
    if model.tokenizer is None:
        raise typer.BadParameter("no tokenizer found; pass --tokenizer", param_hint="--tokenizer")
    save_bundle(out, model.config, model.params, model.tokenizer.path,
                {"base_checkpoint": str(source), "converted_from": source.suffix or "hf",
                 **({"adapter": str(adapter)} if adapter else {})},
                prompt=prompt)
    typer.echo(f"wrote bundle {out}")


def export(
    bundle: Path = typer.Argument(
        ..., help="Model bundle (or any checkpoint load_pretrained reads)."),
    out: Path = typer.Option(..., "--out", help="Directory (hf, npz) or .npz file (npz) to write."),
    fmt: str = typer.Option("hf", "--format", help="hf (transformers / vLLM) or npz (big_vision)."),
    dtype: str = typer.Option("bfloat16", "--dtype", help="float32 or bfloat16 weights."),
    adapter: Path | None = typer.Option(
        None, "--adapter", help="PEFT LoRA adapter directory to merge before exporting."),
) -> None:
    """Export a bundle for transformers/vLLM (hf) or big_vision (npz); LoRA is exported merged."""
    import modeling
    from modeling.export import export_hf, export_npz

    if fmt not in ("hf", "npz"):
        raise typer.BadParameter("use hf or npz", param_hint="--format")
    if dtype not in ("float32", "bfloat16"):
        raise typer.BadParameter("use float32 or bfloat16", param_hint="--dtype")
    model = modeling.load_pretrained(bundle, adapter=adapter)
    if fmt == "hf":
        written = export_hf(model, out, dtype=dtype)
    else:
        written = export_npz(model, out, dtype=dtype)
    typer.echo(f"wrote {fmt} export {written}")


def register(app: typer.Typer) -> None:
    """Add `convert` and `export` to the `radreport` app."""
    app.command("convert")(convert)
    app.command("export")(export)
