"""`radreport generate` (bundle + images -> report text) and `radreport convert` (official
checkpoint -> bundle): the modeling package's commands. Heavy imports happen inside them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import typer


def read_image(path: Path) -> np.ndarray:
    """A DICOM (.dcm, or any file with the DICM magic) or PNG/JPEG as float32 in [0, 1]."""
    with path.open("rb") as f:
        head = f.read(132)
    if path.suffix.lower() == ".dcm" or head[128:132] == b"DICM":
        from radiology.dicom import read

        return read(path).pixels
    from PIL import Image

    with Image.open(path) as im:
        arr = np.asarray(im)
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / 255.0
    if arr.dtype in (np.uint16, np.int32):  # 16-bit PNG
        return arr.astype(np.float32) / 65535.0
    return np.clip(arr.astype(np.float32), 0.0, 1.0)


def generate(
    bundle: Path = typer.Argument(..., help="Model bundle directory (or HF dir / .npz)."),
    images: list[Path] = typer.Argument(..., help="DICOM or PNG/JPEG images, one report each."),
    prompt: str | None = typer.Option(None, "--prompt", help="Prompt (default: the bundle's)."),
    max_new_tokens: int | None = typer.Option(None, "--max-new-tokens", min=1),
    strategy: str = typer.Option("greedy", "--strategy", help="greedy, sample or beam."),
    beam_size: int | None = typer.Option(None, "--beam-size", min=1),
    temperature: float | None = typer.Option(None, "--temperature", min=0.0),
    top_k: int | None = typer.Option(None, "--top-k", min=0),
    top_p: float | None = typer.Option(None, "--top-p", min=0.0, max=1.0),
    seed: int = typer.Option(0, "--seed"),
    dtype: str = typer.Option("float32", "--dtype", help="float32 or bfloat16 parameters."),
    compilation_cache: Path | None = typer.Option(
        None, "--compilation-cache", help="Folder for compiled programs, reused across runs."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object per image."),
) -> None:
    """Generate a report draft for each image with a model bundle."""
    import modeling
    from modeling.preprocess import preprocess_image
    from modeling.runtime import enable_compilation_cache

    if compilation_cache is not None:
        enable_compilation_cache(compilation_cache)
    model = modeling.load_pretrained(bundle, dtype=dtype)
    if model.tokenizer is None:
        raise typer.BadParameter(f"{bundle} has no tokenizer.model", param_hint="bundle")
    text_prompt = prompt if prompt is not None else (model.prompt or "")
    defaults = model.generation_defaults
    n_new = max_new_tokens or int(defaults.get("max_new_tokens", 128))
    options = {k: v for k, v in dict(beam_size=beam_size, temperature=temperature, top_k=top_k,
                                     top_p=top_p, seed=seed).items() if v is not None}
    pixels = np.stack([preprocess_image(read_image(p), model.config.image_size) for p in images])
    texts = model.generate_text(pixels, [text_prompt] * len(images), n_new, strategy, **options)
    for path, text in zip(images, texts, strict=True):
        if as_json:
            typer.echo(json.dumps({"image": str(path), "text": text}))
        else:
            typer.echo(f"== {path.name}\n{text}")


def convert(
    source: Path = typer.Argument(..., help="HF PaliGemma 2 directory or big_vision .npz."),
    out: Path = typer.Argument(..., help="Bundle directory to write."),
    tokenizer: Path | None = typer.Option(
        None, "--tokenizer", help="SentencePiece model (default: tokenizer.model beside source)."),
    dtype: str = typer.Option("bfloat16", "--dtype", help="Stored parameter dtype."),
    prompt: str | None = typer.Option(None, "--prompt", help="Default prompt stored in the bundle."),
) -> None:
    """Convert an official checkpoint into a model bundle."""
    import modeling
    from modeling.bundle import save_bundle

    model = modeling.load_pretrained(source, dtype=dtype, tokenizer=tokenizer)
    if model.tokenizer is None:
        raise typer.BadParameter("no tokenizer found; pass --tokenizer", param_hint="--tokenizer")
    save_bundle(out, model.config, model.params, model.tokenizer.path,
                {"base_checkpoint": str(source), "converted_from": source.suffix or "hf"},
                prompt=prompt)
    typer.echo(f"wrote bundle {out}")


def register(app: typer.Typer) -> None:
    """Add `generate` and `convert` to the `radreport` app."""
    app.command("generate")(generate)
    app.command("convert")(convert)
