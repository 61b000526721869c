"""`load_pretrained`: official checkpoints (HF safetensors directory, big_vision `.npz`) and our
model bundles, loaded tensor by tensor into the target dtype and (with a mesh) sharding.

No full float32 host copy is ever made: source tensors are memory-mapped, and each parameter is
assembled by `jax.make_array_from_callback`, which asks only for the slices each device holds
and casts them to the target dtype as they are read. Parameters are made largest first and the
source pages each one read are released after it (`formats.release_pages`), so the peak
resident memory of a load is the loaded model plus about twice its largest parameter.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
from jax.sharding import Mesh

from modeling.adapters import merge_adapter
from modeling.bundle import BUNDLE_FORMAT, load_bundle
from modeling.config import ModelConfig, TextConfig, VisionConfig
from modeling.convert import config_from_hf
from modeling.formats import flatten, read_npz, read_safetensors, release_pages, unflatten
from modeling.model import Params, param_shapes
from modeling.names import (
    NPZ_UNUSED,
    CheckpointError,
    TensorSpec,
    UnusedTensorsWarning,
    detect_hf_layout,
    detect_npz_layout,
    hf_table,
    npz_stacked_shapes,
    npz_table,
)
from modeling.placement import PartitionRule, default_partition, param_sharding
from modeling.runtime import PaliGemma
from modeling.tokenizer import Tokenizer

__all__ = ["BUNDLE_FORMAT", "CheckpointError", "PartitionRule", "UnusedTensorsWarning",
           "config_from_npz_shapes", "default_partition", "load_hf", "load_npz",
           "load_pretrained"]

Reader = Callable[[tuple[slice, ...]], np.ndarray]
EMBEDDING = "llm/embedder/input_embedding"
BFLOAT16 = np.dtype(ml_dtypes.bfloat16)


def _materialize(readers: dict[str, tuple[tuple[int, ...], Reader]], dtype: Any,
                 mesh: Mesh | None, rule: PartitionRule | None,
                 sources: Iterable[np.ndarray] = ()) -> Params:
    """Each parameter from its reader, largest first (while little else is resident, since a
    parameter briefly exists twice: the host array read and the device copy), releasing the
    memory-mapped `sources`' pages after each one."""
    sources = list(sources)
    out = {}
    for path in sorted(readers, key=lambda p: -int(np.prod(readers[p][0]))):
        shape, read = readers[path]
        sharding = param_sharding(path, shape, mesh, rule)
        out[path] = jax.make_array_from_callback(
            shape, sharding, lambda idx, read=read, n=len(shape): read(_full_index(idx, n)))
        out[path].block_until_ready()
        release_pages(sources)
    return unflatten(out)


def _full_index(idx: tuple, ndim: int) -> tuple[slice, ...]:
    idx = tuple(idx) + (slice(None),) * (ndim - len(idx))
    return tuple(i if isinstance(i, slice) else slice(i, i + 1) for i in idx)


def _cast(a: np.ndarray, dtype: Any) -> np.ndarray:
    return np.asarray(a).astype(dtype, copy=False)


def _from_source(spec: TensorSpec, src: np.ndarray, idx: tuple[slice, ...], dtype: Any
                 ) -> np.ndarray:
    """`spec.from_hf(src)[idx]` in `dtype`. bfloat16 kept as bfloat16 is rearranged as uint16:
    numpy moves ml_dtypes' bfloat16 element by element through its dtype, ~3x slower on the
    transposes most tensors need (the reshapes and transposes do not look at the values)."""
    if src.dtype == dtype == BFLOAT16:
        return np.ascontiguousarray(spec.from_hf(src.view(np.uint16))[idx]).view(BFLOAT16)
    return _cast(spec.from_hf(src)[idx], dtype)


def _flat_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    return dict(flatten(param_shapes(config)))  # type: ignore[arg-type]


def _check_table(config: ModelConfig, table: dict[str, TensorSpec],
                 tensors: dict[str, np.ndarray], source: str) -> None:
    """Every tensor the table names is there with the shape the configured model needs."""
    shapes = _flat_shapes(config)
    for spec in table.values():
        if spec.hf_name not in tensors:
            raise CheckpointError(
                f"tensor {spec.hf_name} is missing from {source} (needed for {spec.path}); "
                "is the checkpoint a PaliGemma 2 model of this size?")
        unit_shape = shapes[spec.path][len(spec.index):]
        expected = jax.eval_shape(spec.to_hf, jax.ShapeDtypeStruct(unit_shape, jnp.float32)).shape
        got = tuple(tensors[spec.hf_name].shape)
        if spec.path == EMBEDDING:  # transformers pads the table with extra rows
            if got[0] < expected[0] or got[1:] != expected[1:]:
                raise CheckpointError(f"tensor {spec.hf_name} in {source} has shape {got}, "
                                      f"expected at least {expected}")
        elif got != expected:
            raise CheckpointError(f"tensor {spec.hf_name} in {source} has shape {got}, expected "
                                  f"{expected} for the configured model")


def _warn_unused(names: list[str], what: str, source: str) -> None:
    if names:
        warnings.warn(UnusedTensorsWarning(
            f"{source}: skipped {len(names)} tensor(s) PaliGemma does not use ({what}): "
            f"{', '.join(sorted(names))}"), stacklevel=3)


def _spec_readers(config: ModelConfig, table: dict[str, TensorSpec],
                  tensors: dict[str, np.ndarray], dtype: Any):
    """One reader per model path, assembling its slices from the table's tensors."""
    shapes = _flat_shapes(config)
    by_path: dict[str, list[TensorSpec]] = {}
    for spec in table.values():
        by_path.setdefault(spec.path, []).append(spec)
    readers = {}
    for path, specs in by_path.items():
        shape = shapes[path]
        units = len(specs[0].index)
        index = {spec.index: spec for spec in specs}

        def read(idx: tuple[slice, ...], shape=shape, units=units, index=index, path=path):
            if units == 0:
                spec = index[()]
                src = tensors[spec.hf_name]
                if path == EMBEDDING:
                    src = src[: shape[0]]
                return _from_source(spec, src, idx, dtype)
            ranges = [range(*s.indices(shape[d])) for d, s in enumerate(idx[:units])]
            out = np.empty([len(r) for r in ranges] + [len(range(*s.indices(shape[units + d])))
                                                       for d, s in enumerate(idx[units:])], dtype)
            for pos in np.ndindex(*[len(r) for r in ranges]):
                unit = tuple(r[p] for r, p in zip(ranges, pos, strict=True))
                spec = index[unit]
                part = _from_source(spec, tensors[spec.hf_name], idx[units:], dtype)
                if part.dtype == BFLOAT16:  # as uint16: see _from_source
                    out.view(np.uint16)[pos] = part.view(np.uint16)
                else:
                    out[pos] = part
            return out

        readers[path] = (shape, read)
    return readers


# ----------------------------------------------------------------------------- HF safetensors


def read_hf_tensors(directory: str | Path) -> dict[str, np.ndarray]:
    """Name -> memory-mapped tensor for every safetensors file of a directory (following
    `model.safetensors.index.json` when there is one), names as stored."""
    directory = Path(directory)
    index = directory / "model.safetensors.index.json"
    if index.is_file():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    else:
        files = sorted(p.name for p in directory.glob("*.safetensors"))
    if not files:
        raise CheckpointError(f"{directory} has no .safetensors files")
    tensors: dict[str, np.ndarray] = {}
    for name in files:
        if not (directory / name).is_file():
            raise CheckpointError(f"{directory}: shard {name} listed in the index is missing")
        tensors.update(read_safetensors(directory / name))
    return tensors


def hf_params_table(config: ModelConfig, tensors: dict[str, np.ndarray], source: str
                    ) -> dict[str, TensorSpec]:
    """The name table of these tensors' layout, checked: every tensor present and of the right
    shape; tensors PaliGemma does not use (SigLIP's pooling head) skipped with one warning;
    any other extra tensor is a `CheckpointError` (the config does not match the file)."""
    layout = detect_hf_layout(tensors)
    tied = f"{layout.text}embed_tokens.weight" not in tensors and layout.lm_head in tensors
    table = hf_table(config, layout, tied_to_lm_head=tied)
    _check_table(config, table, tensors, source)
    extra = sorted(set(tensors) - set(table))
    unused = [n for n in extra if layout.unused(n) and n != layout.lm_head]
    unknown = [n for n in extra if not layout.unused(n)]
    if unknown:
        raise CheckpointError(
            f"{source} has {len(unknown)} tensor(s) this configuration does not use, e.g. "
            f"{', '.join(unknown[:3])}; the config (layers, vision head) does not match")
    _warn_unused(unused, "the SigLIP pooling head", source)
    return table


def load_hf(directory: str | Path, dtype: Any = jnp.float32, mesh: Mesh | None = None,
            config: ModelConfig | None = None, partition: PartitionRule | None = None
            ) -> tuple[ModelConfig, Params]:
    """A transformers PaliGemma 2 directory (config.json + safetensors, sharded or not) in any
    of `modeling.names.HF_LAYOUTS`."""
    directory = Path(directory)
    if config is None:
        cfg_file = directory / "config.json"
        if not cfg_file.is_file():
            raise CheckpointError(f"{directory} has no config.json")
        hf = json.loads(cfg_file.read_text())
        if False in (hf.get("tie_word_embeddings"),
                     hf.get("text_config", {}).get("tie_word_embeddings")):
            raise CheckpointError(f"{directory}: tie_word_embeddings is false; PaliGemma 2 "
                                  "reads logits off its embedding and has no separate lm_head")
        config = config_from_hf(hf)
    tensors = read_hf_tensors(directory)
    table = hf_params_table(config, tensors, directory.name)
    readers = _spec_readers(config, table, tensors, np.dtype(dtype))
    return config, _materialize(readers, dtype, mesh, partition, tensors.values())


# ----------------------------------------------------------------------------- big_vision npz


def config_from_npz_shapes(shapes: dict[str, tuple[int, ...]]) -> ModelConfig:
    """Infer a ModelConfig (big_vision numerics) from the parameter shapes of an .npz (scanned
    or not, with or without a `params/` prefix)."""
    shapes = npz_stacked_shapes(shapes)

    def get(name: str) -> tuple[int, ...]:
        if name not in shapes:
            raise CheckpointError(f"tensor {name} is missing from the .npz; is it a PaliGemma "
                                  "checkpoint written by big_vision?")
        return shapes[name]

    p, _, _, wv = get("img/embedding/kernel")
    n_patches = get("img/pos_embedding")[1]
    att = "img/Transformer/encoderblock/MultiHeadDotProductAttention_0"
    lv, _, nv, _ = get(f"{att}/query/kernel")
    mv = get("img/Transformer/encoderblock/MlpBlock_0/Dense_0/kernel")[2]
    vocab, d = get("llm/embedder/input_embedding")
    depth, n, _, h = get("llm/layers/attn/q_einsum/w")
    k = get("llm/layers/attn/kv_einsum/w")[2]
    f = get("llm/layers/mlp/gating_einsum")[3]
    # big_vision's gemma2_27b scales queries by (width // heads) ** -0.5, the others by head_dim.
    scalar = d // n if (d, n) == (4608, 32) else h
    grid = int(round(n_patches ** 0.5))
    return ModelConfig(
        vision=VisionConfig(image_size=grid * p, patch_size=p, width=wv, depth=lv, mlp_dim=mv,
                            num_heads=nv),
        text=TextConfig(width=d, depth=depth, mlp_dim=f, num_heads=n, num_kv_heads=k, head_dim=h,
                        vocab_size=vocab, query_pre_attn_scalar=scalar),
    )


def load_npz(path: str | Path, dtype: Any = jnp.float32, mesh: Mesh | None = None,
             config: ModelConfig | None = None, partition: PartitionRule | None = None
             ) -> tuple[ModelConfig, Params]:
    """A big_vision PaliGemma `.npz` (memory-mapped; bf16 stored as '|V2' is understood), in
    any layout `modeling.names.npz_table` knows."""
    source = Path(path).name
    arrays = read_npz(path)
    if config is None:
        config = config_from_npz_shapes({k: tuple(v.shape) for k, v in arrays.items()})
    layout = detect_npz_layout(arrays)
    table = npz_table(_flat_shapes(config), layout)
    _check_table(config, table, arrays, source)
    extra = sorted(set(arrays) - set(table))
    outside = [n for n in extra if layout.prefix and not n.startswith(layout.prefix)]
    head = [n for n in extra
            if n not in outside and NPZ_UNUSED.match(n.removeprefix(layout.prefix))]
    unknown = [n for n in extra if n not in outside and n not in head]
    if unknown:
        raise CheckpointError(f"{source} has tensor(s) the model does not use, e.g. "
                              f"{', '.join(unknown[:3])}")
    _warn_unused(head, "the SigLIP pooling head", source)
    _warn_unused(outside, f"outside {layout.prefix}, e.g. optimizer state", source)
    readers = _spec_readers(config, table, arrays, np.dtype(dtype))
    return config, _materialize(readers, dtype, mesh, partition, arrays.values())


# ----------------------------------------------------------------------------- entry point


def _find_tokenizer(candidates: list[Path]) -> Tokenizer | None:
    for c in candidates:
        if c.is_file():
            return Tokenizer(c)
    return None


def load_pretrained(path: str | Path, dtype: Any = "float32", mesh: Mesh | None = None, *,
                    config: ModelConfig | None = None, tokenizer: str | Path | None = None,
                    partition: PartitionRule | None = None, adapter: str | Path | None = None,
                    **runtime_options: Any) -> PaliGemma:
    """Load a model from a bundle directory, a HF safetensors directory or a big_vision .npz.

    dtype: parameter dtype ("float32" or "bfloat16"); computation runs in the config's
    compute_dtype. mesh: place parameters sharded (default rule: `default_partition`).
    config: override the inferred configuration. tokenizer: a SentencePiece file (default: the
    bundle's, or tokenizer.model next to the checkpoint). adapter: a PEFT LoRA adapter
    directory merged into the loaded weights (`modeling.adapters.merge_adapter`).
    """
    path = Path(path)
    dtype = jnp.dtype(dtype)
    if path.is_dir() and (path / "config.json").is_file():
        meta = json.loads((path / "config.json").read_text())
        if meta.get("format") == BUNDLE_FORMAT:
            model = load_bundle(path, dtype=dtype, mesh=mesh, partition=partition,
                                tokenizer=tokenizer, **runtime_options)
            if adapter is not None:  # before the first call builds anything from the weights
                model.params = merge_adapter(model.config, model.params, adapter)
            return model
        config, params = load_hf(path, dtype, mesh, config, partition)
        candidates = [path / "tokenizer.model"]
    elif path.is_file() and path.suffix == ".npz":
        config, params = load_npz(path, dtype, mesh, config, partition)
        candidates = [path.with_suffix(".model"), path.parent / "tokenizer.model",
                      path.parent / "paligemma_tokenizer.model"]
    else:
        raise CheckpointError(
            f"{path} is neither a model bundle, a Hugging Face PaliGemma directory "
            "(config.json + safetensors) nor a big_vision .npz file")
    if adapter is not None:
        params = merge_adapter(config, params, adapter)
    tok = Tokenizer(tokenizer) if tokenizer else _find_tokenizer(candidates)
    return PaliGemma(config, params, tok, **runtime_options)
