"""`radreport generate`: report drafts for image files (DICOM, PNG or JPEG) with a model bundle.

A command of the command layer: it reads images with `radiology.images` and generates with
`modeling`, which knows nothing of DICOM. Heavy imports happen inside the command.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import typer


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
    from radiology.images import read_image

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



def register(app: typer.Typer) -> None:
    """Add `generate` to the `radreport` app."""
    app.command("generate")(generate)
