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
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec, SingleDeviceSharding

from modeling.config import ModelConfig, TextConfig, VisionConfig
from modeling.convert import config_from_hf, hf_tensor_specs, legacy_hf_name
from modeling.formats import flatten, read_npz, read_safetensors, release_pages, unflatten
from modeling.model import Params, param_shapes
from modeling.runtime import PaliGemma
from modeling.tokenizer import Tokenizer

BUNDLE_FORMAT = "radreport-bundle"

Reader = Callable[[tuple[slice, ...]], np.ndarray]
PartitionRule = Callable[[str, tuple[int, ...]], PartitionSpec]


class CheckpointError(ValueError):
    """A checkpoint does not match the model it is loaded into (names the tensor)."""


# ----------------------------------------------------------------------------- sharding


def default_partition(mesh: Mesh) -> PartitionRule:
    """Shard each parameter's largest axis divisible by the mesh's last axis; else replicate."""
    axis = mesh.axis_names[-1]
    size = mesh.shape[axis]

    def rule(path: str, shape: tuple[int, ...]) -> PartitionSpec:
        dims = sorted(range(len(shape)), key=lambda d: -shape[d])
        for d in dims:
            if shape[d] % size == 0 and shape[d] >= size:
                spec: list[Any] = [None] * len(shape)
                spec[d] = axis
                return PartitionSpec(*spec)
        return PartitionSpec()

    return rule


def _sharding(path: str, shape: tuple[int, ...], mesh: Mesh | None, rule: PartitionRule | None):
    if mesh is None:
        return SingleDeviceSharding(jax.devices()[0])
    return NamedSharding(mesh, (rule or default_partition(mesh))(path, shape))


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
        sharding = _sharding(path, shape, mesh, rule)
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


# ----------------------------------------------------------------------------- HF safetensors


def _hf_tensors(directory: Path) -> dict[str, np.ndarray]:
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
        for key, value in read_safetensors(directory / name).items():
            tensors[legacy_hf_name(key)] = value
    return tensors


def _hf_readers(config: ModelConfig, tensors: dict[str, np.ndarray], dtype: Any):
    shapes = _flat_shapes(config)  # path -> shape tuple
    by_path: dict[str, list] = {}
    used = {"language_model.lm_head.weight"}  # tied to the embedding
    for spec in hf_tensor_specs(config):
        if spec.hf_name not in tensors:
            raise CheckpointError(
                f"tensor {spec.hf_name} is missing from the checkpoint (needed for {spec.path}); "
                "is the checkpoint a PaliGemma 2 model of this size?")
        unit_shape = shapes[spec.path][len(spec.index):]
        expected = jax.eval_shape(spec.to_hf, jax.ShapeDtypeStruct(unit_shape, jnp.float32)).shape
        got = tensors[spec.hf_name].shape
        if spec.path == "llm/embedder/input_embedding":
            if got[0] < expected[0] or got[1:] != expected[1:]:
                raise CheckpointError(
                    f"tensor {spec.hf_name} has shape {got}, expected at least {expected}")
        elif got != expected:
            raise CheckpointError(f"tensor {spec.hf_name} has shape {got}, expected {expected} "
                                  f"for the configured model")
        used.add(spec.hf_name)
        by_path.setdefault(spec.path, []).append(spec)
    extra = sorted(set(tensors) - used)
    if extra:
        raise CheckpointError(
            f"checkpoint has {len(extra)} tensor(s) this configuration does not use, e.g. "
            f"{', '.join(extra[:3])}; the config (layers, vision head) does not match")

    readers = {}
    for path, specs in by_path.items():
        shape = shapes[path]
        units = len(specs[0].index)
        table = {spec.index: spec for spec in specs}

        def read(idx: tuple[slice, ...], shape=shape, units=units, table=table, path=path):
            if units == 0:
                spec = table[()]
                src = tensors[spec.hf_name]
                if path == "llm/embedder/input_embedding":
                    src = src[: shape[0]]
                return _cast(spec.from_hf(src)[idx], dtype)
            ranges = [range(*s.indices(shape[d])) for d, s in enumerate(idx[:units])]
            out = np.empty([len(r) for r in ranges] + [len(range(*s.indices(shape[units + d])))
                                                       for d, s in enumerate(idx[units:])], dtype)
            for pos in np.ndindex(*[len(r) for r in ranges]):
                unit = tuple(r[p] for r, p in zip(ranges, pos, strict=True))
                spec = table[unit]
                out[pos] = _cast(spec.from_hf(tensors[spec.hf_name])[idx[units:]], dtype)
            return out

        readers[path] = (shape, read)
    return readers


def _flat_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    return dict(flatten(param_shapes(config)))  # type: ignore[arg-type]


def load_hf(directory: str | Path, dtype: Any = jnp.float32, mesh: Mesh | None = None,
            config: ModelConfig | None = None, partition: PartitionRule | None = None
            ) -> tuple[ModelConfig, Params]:
    """A transformers PaliGemma 2 directory (config.json + sharded safetensors + index)."""
    directory = Path(directory)
    if config is None:
        cfg_file = directory / "config.json"
        if not cfg_file.is_file():
            raise CheckpointError(f"{directory} has no config.json")
        config = config_from_hf(json.loads(cfg_file.read_text()))
    tensors = _hf_tensors(directory)
    readers = _hf_readers(config, tensors, np.dtype(dtype))
    return config, _materialize(readers, dtype, mesh, partition, tensors.values())


# ----------------------------------------------------------------------------- big_vision npz


def config_from_npz_shapes(shapes: dict[str, tuple[int, ...]]) -> ModelConfig:
    """Infer a ModelConfig (big_vision numerics) from the parameter shapes of an .npz."""
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
    """A big_vision PaliGemma `.npz` (memory-mapped; bf16 stored as '|V2' is understood)."""
    arrays = {k.removeprefix("params/"): v for k, v in read_npz(path).items()}
    if config is None:
        config = config_from_npz_shapes({k: tuple(v.shape) for k, v in arrays.items()})
    expected = _flat_shapes(config)
    for name, shape in expected.items():
        if name not in arrays:
            raise CheckpointError(f"tensor {name} is missing from {Path(path).name}")
        if tuple(arrays[name].shape) != shape:
            raise CheckpointError(f"tensor {name} in {Path(path).name} has shape "
                                  f"{tuple(arrays[name].shape)}, expected {shape}")
    extra = sorted(set(arrays) - set(expected))
    if extra:
        raise CheckpointError(f"{Path(path).name} has tensor(s) the model does not use, e.g. "
                              f"{', '.join(extra[:3])}")
    np_dtype = np.dtype(dtype)
    readers = {name: (shape, lambda idx, a=arrays[name]: _cast(a[idx], np_dtype))
               for name, shape in expected.items()}
    return config, _materialize(readers, dtype, mesh, partition, arrays.values())


# ----------------------------------------------------------------------------- entry point


def _find_tokenizer(candidates: list[Path]) -> Tokenizer | None:
    for c in candidates:
        if c.is_file():
            return Tokenizer(c)
    return None


def load_pretrained(path: str | Path, dtype: Any = "float32", mesh: Mesh | None = None, *,
                    config: ModelConfig | None = None, tokenizer: str | Path | None = None,
                    partition: PartitionRule | None = None, **runtime_options: Any) -> PaliGemma:
    """Load a model from a bundle directory, a HF safetensors directory or a big_vision .npz.

    dtype: parameter dtype ("float32" or "bfloat16"); computation runs in the config's
    compute_dtype. mesh: place parameters sharded (default rule: `default_partition`).
    config: override the inferred configuration. tokenizer: a SentencePiece file (default: the
    bundle's, or tokenizer.model next to the checkpoint).
    """
    path = Path(path)
    dtype = jnp.dtype(dtype)
    if path.is_dir() and (path / "config.json").is_file():
        meta = json.loads((path / "config.json").read_text())
        if meta.get("format") == BUNDLE_FORMAT:
            from modeling.bundle import load_bundle
            return load_bundle(path, dtype=dtype, mesh=mesh, partition=partition,
                               tokenizer=tokenizer, **runtime_options)
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
    tok = Tokenizer(tokenizer) if tokenizer else _find_tokenizer(candidates)
    return PaliGemma(config, params, tok, **runtime_options)
