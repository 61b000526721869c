"""Loaders: HF safetensors directories, big_vision .npz and our bundles load exactly, into the
requested dtype and sharding, and name the offending tensor when something does not fit."""

from __future__ import annotations

import json
import sys

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

import modeling
from modeling.bundle import save_bundle
from modeling.convert import write_big_vision_npz, write_hf_checkpoint
from modeling.formats import (
    mapping_of,
    read_npz,
    read_safetensors,
    release_pages,
    write_safetensors,
)
from modeling.loaders import CheckpointError, config_from_npz_shapes
from tests.helpers.models import CONFIG_A, random_params, random_pixels

CONFIG = CONFIG_A


@pytest.fixture(scope="module")
def params():
    return random_params(CONFIG, seed=11)


def _assert_same_params(a, b):
    la, lb = jax.tree_util.tree_leaves_with_path(a), jax.tree_util.tree_leaves_with_path(b)
    assert [p for p, _ in la] == [p for p, _ in lb]
    for (path, x), (_, y) in zip(la, lb, strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=str(path))


def test_hf_round_trip_is_exact_across_shards(params, tmp_path):
    write_hf_checkpoint(tmp_path, CONFIG, params, max_shard_bytes=100_000)
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1
    _assert_same_params(modeling.load_pretrained(tmp_path).params, params)


def test_hf_loader_names_a_tensor_with_the_wrong_shape(params, tmp_path):
    write_hf_checkpoint(tmp_path, CONFIG, params)
    (tmp_path / "model.safetensors.index.json").unlink()
    shard = next(tmp_path.glob("*.safetensors"))
    tensors = {k: np.array(v) for k, v in read_safetensors(shard).items()}
    name = "language_model.model.layers.1.mlp.down_proj.weight"
    tensors[name] = tensors[name][:, :-1]
    from modeling.formats import write_safetensors
    write_safetensors(shard, tensors)
    with pytest.raises(CheckpointError, match=r"layers\.1\.mlp\.down_proj\.weight in .* has shape"):
        modeling.load_pretrained(tmp_path)


def test_hf_loader_names_a_missing_tensor(params, tmp_path):
    write_hf_checkpoint(tmp_path, CONFIG, params)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["text_config"]["num_hidden_layers"] += 1
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"language_model\.model\.layers\.3\..* is missing"):
        modeling.load_pretrained(tmp_path)


def test_npz_loads_into_bfloat16_and_infers_the_architecture(params, tmp_path):
    bf16 = jax.tree_util.tree_map(lambda a: np.asarray(a).astype(ml_dtypes.bfloat16), params)
    path = write_big_vision_npz(tmp_path / "pg.npz", bf16)
    raw = read_npz(path)
    assert raw["llm/final_norm/scale"].dtype == ml_dtypes.bfloat16  # stored as |V2, read back
    model = modeling.load_pretrained(path, dtype="bfloat16")
    inferred = model.config
    assert inferred.text == CONFIG.text.__class__(**{
        **CONFIG.text.__dict__, "sliding_window": None, "position_offset": 0,
        "query_scale_before_matmul": True, "rms_norm_rsqrt": False, "attn_logits_softcap": 50.0})
    assert inferred.vision.image_size == CONFIG.vision.image_size
    assert all(x.dtype == jnp.bfloat16 for x in jax.tree_util.tree_leaves(model.params))
    _assert_same_params(model.params, bf16)


def test_npz_with_a_missing_tensor_is_refused_by_name(params, tmp_path):
    written = write_big_vision_npz(tmp_path / "a.npz", params)
    flat = {k: np.asarray(v) for k, v in read_npz(written).items()}
    del flat["llm/layers/mlp/linear"]
    np.savez(tmp_path / "b.npz", **flat)
    with pytest.raises(CheckpointError, match="llm/layers/mlp/linear"):
        modeling.load_pretrained(tmp_path / "b.npz", config=CONFIG)
    del flat["llm/layers/mlp/gating_einsum"]
    with pytest.raises(CheckpointError, match="llm/layers/mlp/gating_einsum is missing"):
        config_from_npz_shapes({k: v.shape for k, v in flat.items()})


def test_loading_with_a_mesh_places_parameters_with_named_sharding(params, tmp_path):
    path = write_big_vision_npz(tmp_path / "pg.npz", params)
    mesh = jax.make_mesh((1,), ("fsdp",))
    model = modeling.load_pretrained(path, config=CONFIG, mesh=mesh)
    table = model.params["llm"]["embedder"]["input_embedding"]
    assert isinstance(table.sharding, jax.sharding.NamedSharding)
    assert table.sharding.spec == jax.sharding.PartitionSpec("fsdp", None)


def test_bundle_round_trip_keeps_params_tokenizer_and_defaults(params, tmp_path, tokenizer_path):
    out = save_bundle(tmp_path / "bundle", CONFIG, params, tokenizer_path, {"steps": 3},
                      generation={"max_new_tokens": 64, "beam_size": 2}, prompt="findings")
    for name in ("config.json", "tokenizer.model", "metadata.json", "params"):
        assert (out / name).exists()
    model = modeling.load_pretrained(out)
    assert model.config == CONFIG
    assert model.prompt == "findings" and model.metadata == {"steps": 3}
    assert model.generation_defaults["beam_size"] == 2
    assert model.tokenizer.decode(model.tokenizer.encode("Lungs are clear.")) == "Lungs are clear."
    _assert_same_params(model.params, params)
    pixels = random_pixels(CONFIG, 1)
    text = model.generate_text(pixels, ["findings"], 4)
    assert isinstance(text[0], str)


def test_bundle_restores_into_bfloat16(params, tmp_path, tokenizer_path):
    out = save_bundle(tmp_path / "bundle", CONFIG, params, tokenizer_path, {})
    model = modeling.load_pretrained(out, dtype="bfloat16")
    leaf = model.params["llm"]["layers"]["mlp"]["linear"]
    assert leaf.dtype == jnp.bfloat16
    expected = np.asarray(params["llm"]["layers"]["mlp"]["linear"]).astype(ml_dtypes.bfloat16)
    np.testing.assert_array_equal(np.asarray(leaf), expected)


def test_unrecognised_path_gets_an_actionable_error(tmp_path):
    with pytest.raises(CheckpointError, match="neither a model bundle"):
        modeling.load_pretrained(tmp_path / "nothing.bin")


SHARDED_LOAD = """
import jax, numpy as np
from tests.helpers.models import CONFIG_A
import modeling
mesh = jax.make_mesh((4,), ("fsdp",))
model = modeling.load_pretrained({path!r}, dtype="bfloat16", config=CONFIG_A, mesh=mesh)
table = model.params["llm"]["embedder"]["input_embedding"]
shards = sorted({{s.data.shape for s in table.addressable_shards}})
print(len(jax.devices()), table.dtype, table.shape, shards)
"""


@pytest.mark.slow
def test_loading_onto_a_four_device_mesh_gives_each_device_its_slice(params, tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    path = write_big_vision_npz(tmp_path / "pg.npz", params)
    code = SHARDED_LOAD.format(path=str(path))
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4",
           "JAX_PLATFORMS": "cpu"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=300, cwd=Path(__file__).parents[2])
    assert out.returncode == 0, out.stderr
    rows = CONFIG.text.vocab_size
    assert out.stdout.split()[:2] == ["4", "bfloat16"]
    assert f"[({rows // 4}, {CONFIG.text.width})]" in out.stdout  # a quarter of the rows each


def test_npz_reader_memory_maps_stored_members_and_reads_compressed_ones(tmp_path):
    arrays = {"a/b": np.arange(12, dtype=np.float32).reshape(3, 4),
              "c": np.asfortranarray(np.ones((2, 3), np.float32)),
              "bf": np.arange(4, dtype=np.float32).astype(ml_dtypes.bfloat16).view("V2")}
    np.savez(tmp_path / "plain.npz", **arrays)
    np.savez_compressed(tmp_path / "zipped.npz", **arrays)
    plain, zipped = read_npz(tmp_path / "plain.npz"), read_npz(tmp_path / "zipped.npz")
    assert mapping_of(plain["a/b"]) is not None and mapping_of(zipped["a/b"]) is None
    for got in (plain, zipped):
        np.testing.assert_array_equal(got["a/b"], arrays["a/b"])
        np.testing.assert_array_equal(got["c"], arrays["c"])
        assert got["bf"].dtype == ml_dtypes.bfloat16
        assert got["bf"].astype(np.float32).tolist() == [0, 1, 2, 3]


def test_hf_checkpoint_with_an_untied_lm_head_is_refused(params, tmp_path):
    write_hf_checkpoint(tmp_path, CONFIG, params)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["tie_word_embeddings"] = False
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="tie_word_embeddings is false"):
        modeling.load_pretrained(tmp_path)


def _resident_file_pages_kib() -> int:
    for line in open("/proc/self/status"):
        if line.startswith("RssFile:"):
            return int(line.split()[1])
    raise AssertionError("no RssFile in /proc/self/status")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_released_safetensors_pages_leave_the_resident_set_and_stay_readable(tmp_path):
    data = np.arange(16 << 20, dtype=np.float32)  # 64 MiB
    write_safetensors(tmp_path / "t.safetensors", {"w": data})
    w = read_safetensors(tmp_path / "t.safetensors")["w"]
    before = _resident_file_pages_kib()
    assert float(w.sum(dtype=np.float64)) == float(data.sum(dtype=np.float64))  # every page read
    read = _resident_file_pages_kib()
    release_pages([w])
    assert read - before > 60_000  # the mapping's pages were resident...
    assert _resident_file_pages_kib() < before + 4_000  # ...and are not after the release
    np.testing.assert_array_equal(w[-4:], data[-4:])  # still valid: read back on demand
