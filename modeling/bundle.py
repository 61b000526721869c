"""The model bundle: the directory training hands to serving (see ARCHITECTURE.md).

    config.json     {"format": "radreport-bundle", "format_version": 1, "model": ModelConfig,
                     "image_size", "prompt", "generation": defaults, "tokenizer": facts}
    tokenizer.model SentencePiece model
    params/         Orbax checkpoint of the base parameters as a nested dict:
                    `nnx.to_pure_dict(nnx.state(model, model.BASE))` (`model.params_of`), whose
                    paths are big_vision's, so a bundle reads without the modules; LoRA
                    adapters are folded in (`modeling.lora.merge_lora`)
    metadata.json   provenance: base checkpoint, data, steps, evaluation scores ...
    peft_adapter/   (LoRA runs only) the adapters as a PEFT adapter of the base
                    (`modeling.lora.save_peft_adapter`)

A bundle of format_version 1 written before the model was Flax NNX has the same params/ paths
and loads as is (tests/modeling/data/bundle_format1).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp
from jax.sharding import Mesh

from modeling.config import ModelConfig
from modeling.formats import flatten, unflatten
from modeling.model import Params, abstract_params
from modeling.names import CheckpointError, bundle_table
from modeling.placement import PartitionRule, param_sharding
from modeling.runtime import PaliGemma
from modeling.tokenizer import Tokenizer

BUNDLE_FORMAT = "radreport-bundle"
FORMAT_VERSION = 1


def save_bundle(out_dir: str | Path, config: ModelConfig, params: Params,
                tokenizer_model_path: str | Path, metadata: dict,
                generation: dict | None = None, prompt: str | None = None) -> Path:
    """Write a bundle directory loadable by `modeling.load_pretrained` (overwrites params/)."""
    out = Path(out_dir).absolute()
    out.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(tokenizer_model_path)
    if tok.vocab_size > config.text.vocab_size:
        raise CheckpointError(f"tokenizer has {tok.vocab_size} pieces but the model only "
                              f"{config.text.vocab_size} embedding rows")
    if Path(tokenizer_model_path).absolute() != out / "tokenizer.model":
        shutil.copyfile(tokenizer_model_path, out / "tokenizer.model")
    if (out / "params").exists():
        shutil.rmtree(out / "params")
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(out / "params", params)
    checkpointer.wait_until_finished()
    info = {
        "format": BUNDLE_FORMAT, "format_version": FORMAT_VERSION, "model": config.to_dict(),
        "image_size": config.image_size, "prompt": prompt, "generation": generation or {},
        "tokenizer": {"file": "tokenizer.model", "vocab_size": tok.vocab_size,
                      "pad_id": tok.pad_id, "eos_id": tok.eos_id, "bos_id": tok.bos_id,
                      "newline_id": tok.newline_id},
    }
    (out / "config.json").write_text(json.dumps(info, indent=2))
    (out / "metadata.json").write_text(json.dumps(metadata, indent=2, default=str))
    return out


def read_bundle_config(bundle_dir: str | Path) -> dict[str, Any]:
    """The bundle's config.json, checked for format and version."""
    path = Path(bundle_dir) / "config.json"
    if not path.is_file():
        raise CheckpointError(f"{bundle_dir} is not a model bundle (no config.json)")
    info = json.loads(path.read_text())
    if info.get("format") != BUNDLE_FORMAT:
        raise CheckpointError(f"{path} is not a radreport bundle config")
    if info.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(f"{bundle_dir} was written by a newer version (format "
                              f"{info['format_version']}); upgrade radreport to load it")
    return info


def load_bundle(bundle_dir: str | Path, dtype: Any = jnp.float32, mesh: Mesh | None = None,
                partition: PartitionRule | None = None, tokenizer: str | Path | None = None,
                **runtime_options: Any) -> PaliGemma:
    """Restore a bundle straight into `dtype` and (with a mesh) the target sharding."""
    bundle = Path(bundle_dir).absolute()
    info = read_bundle_config(bundle)
    config = ModelConfig.from_dict(info["model"])
    shapes = {path: leaf.shape for path, leaf in flatten(abstract_params(config))}
    target = unflatten({
        key: jax.ShapeDtypeStruct(shapes[path], dtype,
                                  sharding=param_sharding(path, shapes[path], mesh, partition))
        for key, path in bundle_table(shapes).items()})
    try:
        params = ocp.StandardCheckpointer().restore(bundle / "params", target)
    except (ValueError, KeyError) as error:
        raise CheckpointError(f"{bundle}/params does not match its config.json: {error}") from error
    tok_path = Path(tokenizer) if tokenizer else bundle / info["tokenizer"]["file"]
    tok = Tokenizer(tok_path) if tok_path.is_file() else None
    metadata_file = bundle / "metadata.json"
    metadata = json.loads(metadata_file.read_text()) if metadata_file.is_file() else {}
    return PaliGemma(config, params, tok, metadata=metadata,
                     generation_defaults=info.get("generation") or {},
                     prompt=info.get("prompt"), **runtime_options)

