"""Every PaliGemma 2 checkpoint layout in the wild loads, each written by the tool that writes
it (transformers' `save_pretrained`, safetensors' `save_model` of a state dict, the Hub and
transformers 4.5x spellings that transformers itself still reads), and gives transformers' logits
and greedy tokens."""

from __future__ import annotations

import json
import warnings

import ml_dtypes
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import modeling  # noqa: E402
from modeling.convert import hf_config_dict, write_hf_checkpoint  # noqa: E402
from modeling.formats import read_safetensors, write_safetensors  # noqa: E402
from modeling.loaders import CheckpointError, UnusedTensorsWarning  # noqa: E402
from tests.helpers.models import CONFIG_A, random_params, random_pixels  # noqa: E402

CONFIG = CONFIG_A
TOL = 1e-4
PROMPT = [2, 17, 33, 90, 41, 7, 108]


@pytest.fixture(scope="module")
def hf_model(tmp_path_factory):
    """transformers' PaliGemma with our random weights, its SigLIP config left at the defaults
    (so it has the pooling head PaliGemma never uses, randomly initialised by transformers)."""
    directory = tmp_path_factory.mktemp("ours")
    write_hf_checkpoint(directory, CONFIG, random_params(CONFIG, seed=21))
    cfg = json.loads((directory / "config.json").read_text())
    del cfg["vision_config"]["vision_use_head"]
    (directory / "config.json").write_text(json.dumps(cfg))
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loaded = transformers.PaliGemmaForConditionalGeneration.from_pretrained(
            directory, attn_implementation="eager", dtype=torch.float32)
    # A model transformers loaded saves back in the layout it was read from; one built from a
    # config (as a training script does) saves in transformers 5's own layout.
    model = transformers.PaliGemmaForConditionalGeneration(loaded.config).eval()
    model.load_state_dict(loaded.state_dict())
    assert model.model.vision_tower.head is not None
    return model


def _inputs(seed: int = 0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(4, CONFIG.text.vocab_size, (2, 12)).astype(np.int32)
    ids[:, 0] = 2
    types = np.array([[0] * 5 + [1] * 7, [0] * 8 + [1] * 4])
    return random_pixels(CONFIG, 2, seed), ids, types


def _hf_logits(model, pixels, ids, types):
    p = CONFIG.num_image_tokens
    hf_ids = np.concatenate([np.full((len(ids), p), CONFIG.text.vocab_size), ids], 1)
    hf_types = np.concatenate([np.zeros((len(ids), p), np.int64), types], 1)
    with torch.no_grad():
        out = model(input_ids=torch.tensor(hf_ids, dtype=torch.long),
                    pixel_values=torch.tensor(pixels.transpose(0, 3, 1, 2)),
                    token_type_ids=torch.tensor(hf_types, dtype=torch.long),
                    attention_mask=torch.ones(hf_ids.shape, dtype=torch.long))
    return out.logits.float().numpy()[:, p:, : CONFIG.text.vocab_size]


def _hf_greedy(model, pixels, prompt, steps):
    ids = torch.tensor([[CONFIG.text.vocab_size] * CONFIG.num_image_tokens + prompt])
    with torch.no_grad():
        out = model.generate(input_ids=ids, pixel_values=torch.tensor(pixels.transpose(0, 3, 1, 2)),
                             token_type_ids=torch.zeros_like(ids),
                             attention_mask=torch.ones_like(ids), max_new_tokens=steps,
                             do_sample=False, eos_token_id=1, pad_token_id=0)
    tokens = out[0, ids.shape[1]:].tolist()
    return tokens[: tokens.index(1)] if 1 in tokens else tokens


def _load_quietly(path, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnusedTensorsWarning)
        return modeling.load_pretrained(path, **kwargs)


def _assert_matches(model, reference):
    pixels, ids, types = _inputs()
    ref = _hf_logits(reference, pixels, ids, types)
    assert np.abs(model.logits(pixels, ids, types) - ref).max() <= TOL
    assert np.abs(ref).max() > 0.1


@pytest.mark.parametrize("shard", [None, "20KB"], ids=["single-file", "sharded"])
def test_save_pretrained_output_loads_with_transformers_logits(hf_model, tmp_path, shard):
    kwargs = {"max_shard_size": shard} if shard else {}
    hf_model.save_pretrained(tmp_path, **kwargs)
    assert (tmp_path / "model.safetensors.index.json").is_file() == bool(shard)
    names = set(json.loads((tmp_path / "model.safetensors.index.json").read_text())["weight_map"]
                if shard else read_safetensors(tmp_path / "model.safetensors"))
    assert "vision_tower.embeddings.patch_embedding.weight" in names  # no vision_model.
    model = _load_quietly(tmp_path)
    assert model.config == CONFIG
    _assert_matches(model, hf_model)


def test_save_pretrained_output_generates_transformers_greedy_tokens(hf_model, tmp_path):
    hf_model.save_pretrained(tmp_path)
    model = _load_quietly(tmp_path)
    pixels = random_pixels(CONFIG, 1, seed=5)
    ours = model.generate(pixels, [PROMPT], 12)[0]
    assert ours == _hf_greedy(hf_model, pixels, PROMPT, 12)
    assert len(set(ours)) > 2  # a real sequence, not one token repeated


def test_bfloat16_save_pretrained_loads_the_exact_bfloat16_weights(hf_model, tmp_path):
    reference = transformers.PaliGemmaForConditionalGeneration.from_pretrained(
        _saved(hf_model, tmp_path / "f32"), attn_implementation="eager",
        dtype=torch.bfloat16).eval()
    reference.save_pretrained(tmp_path / "bf16", max_shard_size="20KB")
    tensors = read_safetensors(next((tmp_path / "bf16").glob("*.safetensors")))
    assert all(t.dtype == ml_dtypes.bfloat16 for t in tensors.values())
    model = _load_quietly(tmp_path / "bf16", dtype="bfloat16")
    table = np.asarray(model.params["llm"]["embedder"]["input_embedding"])
    hf_table = reference.model.language_model.embed_tokens.weight.detach().float().numpy()
    np.testing.assert_array_equal(table.astype(np.float32), hf_table[: CONFIG.text.vocab_size])
    # the bfloat16 weights in float32 on both sides: the same model
    _assert_matches(_load_quietly(tmp_path / "bf16", dtype="float32"), reference.float())


def _saved(model, directory):
    model.save_pretrained(directory)
    return directory


def test_unused_pooling_head_is_skipped_with_one_warning_naming_its_tensors(hf_model, tmp_path):
    hf_model.save_pretrained(tmp_path)
    with pytest.warns(UnusedTensorsWarning) as caught:
        modeling.load_pretrained(tmp_path)
    assert len(caught) == 1
    message = str(caught[0].message)
    assert "skipped 11 tensor(s)" in message
    for name in ("vision_tower.head.probe", "vision_tower.head.attention.in_proj_weight",
                 "vision_tower.head.mlp.fc2.bias", "vision_tower.head.layernorm.weight"):
        assert name in message


def _rename(source, target, rename):
    """Copy a transformers checkpoint with every tensor renamed (one file)."""
    target.mkdir()
    (target / "config.json").write_text((source / "config.json").read_text())
    tensors = {}
    for shard in source.glob("*.safetensors"):
        tensors.update({rename(k): np.array(v) for k, v in read_safetensors(shard).items()})
    write_safetensors(target / "model.safetensors", tensors)
    return target


def _hub_name(name: str) -> str:
    """transformers 5's saved names -> the Hub's (google/paligemma2-*-pt-*, transformers < 4.52):
    SigLIP keeps its `vision_model.` level."""
    if name.startswith("vision_tower."):
        return "vision_tower.vision_model." + name.removeprefix("vision_tower.")
    return name


def _v45_name(name: str) -> str:
    """transformers 5's saved names -> a 4.52-4.57 model's state dict (its
    `_checkpoint_conversion_mapping` applied: model.language_model., model.vision_tower.,
    model.multi_modal_projector., lm_head.)."""
    name = _hub_name(name)
    for old, new in (("language_model.model.", "model.language_model."),
                     ("language_model.lm_head.", "lm_head."),
                     ("vision_tower.", "model.vision_tower."),
                     ("multi_modal_projector.", "model.multi_modal_projector.")):
        if name.startswith(old):
            return new + name.removeprefix(old)
    return name


@pytest.mark.parametrize("layout", ["hub", "transformers-4.5x"])
def test_older_layouts_that_transformers_reads_load_the_same_model(hf_model, tmp_path, layout):
    rename = _hub_name if layout == "hub" else _v45_name
    fixture = _rename(_saved(hf_model, tmp_path / "saved"), tmp_path / layout, rename)
    names = set(read_safetensors(fixture / "model.safetensors"))
    prefix = ("vision_tower.vision_model." if layout == "hub"
              else "model.vision_tower.vision_model.")
    assert f"{prefix}encoder.layers.0.self_attn.q_proj.weight" in names
    # transformers itself reads the fixture without a missing or unexpected tensor
    reread, info = transformers.PaliGemmaForConditionalGeneration.from_pretrained(
        fixture, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    _assert_matches(_load_quietly(fixture), hf_model)
    if layout == "hub":  # and writes the Hub layout back when it loaded one
        reread.save_pretrained(tmp_path / "resaved")
        resaved = set(read_safetensors(tmp_path / "resaved" / "model.safetensors"))
        assert f"{prefix}encoder.layers.0.self_attn.q_proj.weight" in resaved
        _assert_matches(_load_quietly(tmp_path / "resaved"), hf_model)


def test_state_dict_saved_by_safetensors_loads_from_its_lm_head(hf_model, tmp_path):
    from safetensors.torch import save_model

    tmp_path.joinpath("config.json").write_text(
        json.dumps(hf_model.config.to_dict()))
    save_model(hf_model, str(tmp_path / "model.safetensors"))
    names = set(read_safetensors(tmp_path / "model.safetensors"))
    assert "lm_head.weight" in names and "model.language_model.embed_tokens.weight" not in names
    _assert_matches(_load_quietly(tmp_path), hf_model)


def test_a_missing_tensor_is_named(hf_model, tmp_path):
    name = "language_model.model.layers.2.mlp.up_proj.weight"
    fixture = _rename(_saved(hf_model, tmp_path / "saved"), tmp_path / "broken", lambda k: k)
    tensors = {k: np.array(v) for k, v in read_safetensors(fixture / "model.safetensors").items()}
    del tensors[name]
    write_safetensors(fixture / "model.safetensors", tensors)
    with pytest.raises(CheckpointError, match=rf"tensor {name} is missing"):
        _load_quietly(fixture)


def test_a_mis_shaped_tensor_is_named(hf_model, tmp_path):
    name = "vision_tower.encoder.layers.0.self_attn.k_proj.weight"
    fixture = _rename(_saved(hf_model, tmp_path / "saved"), tmp_path / "broken", lambda k: k)
    tensors = {k: np.array(v) for k, v in read_safetensors(fixture / "model.safetensors").items()}
    tensors[name] = tensors[name][:-2]
    write_safetensors(fixture / "model.safetensors", tensors)
    with pytest.raises(CheckpointError, match=rf"tensor {name} in .* has shape \(30, 32\)"):
        _load_quietly(fixture)


def test_an_unknown_layout_is_refused_with_its_tensor_names(tmp_path):
    tmp_path.joinpath("config.json").write_text(json.dumps(hf_config_dict(CONFIG)))
    write_safetensors(tmp_path / "model.safetensors", {"encoder.w": np.zeros(2, np.float32)})
    with pytest.raises(CheckpointError, match="known layout.*encoder.w"):
        modeling.load_pretrained(tmp_path)


# ----------------------------------------------------------------------------- PEFT / LoRA

LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj",
                "fc1", "fc2", "out_proj", "linear"]


@pytest.fixture(scope="module")
def peft_case(hf_model, tmp_path_factory):
    """(base directory, adapter directory, peft model) with random, non-zero adapters on every
    linear layer, written by peft itself."""
    peft = pytest.importorskip("peft")
    config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=LORA_TARGETS,
                             rank_pattern={"down_proj": 2}, alpha_pattern={"fc2": 3},
                             init_lora_weights=False)
    return _peft_case(hf_model, tmp_path_factory.mktemp("peft"), config, seed=1)


def _peft_case(hf_model, root, config, seed: int, change=None):
    """(base directory, adapter directory, peft model): `config` applied by peft to the base
    saved under `root`, `change(model)` applied before peft saves the adapter."""
    import peft

    hf_model.save_pretrained(root / "base")
    base = transformers.PaliGemmaForConditionalGeneration.from_pretrained(
        root / "base", attn_implementation="eager", dtype=torch.float32)
    torch.manual_seed(seed)
    model = peft.get_peft_model(base, config).eval()
    if change is not None:
        change(model)
    model.save_pretrained(root / "adapter")
    return root / "base", root / "adapter", model


def test_peft_adapter_merges_onto_the_base_with_peft_logits(peft_case):
    base, adapter, peft_model = peft_case
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = modeling.load_pretrained(base, adapter=adapter)
    messages = [str(w.message) for w in caught if w.category is UnusedTensorsWarning]
    assert any("skipped adapters of 3 weight(s)" in m and "head.mlp.fc1.weight" in m
               for m in messages)
    _assert_matches(model, peft_model)
    # the adapters change the model: the base alone is far from peft's logits
    pixels, ids, types = _inputs()
    plain = _load_quietly(base).logits(pixels, ids, types)
    assert np.abs(plain - _hf_logits(peft_model, pixels, ids, types)).max() > 10 * TOL


@pytest.fixture(scope="module")
def dora_case(hf_model, tmp_path_factory):
    """(base directory, adapter directory, peft model) of a DoRA adapter on every linear layer,
    written by peft, with magnitudes moved off their initial value (where DoRA equals LoRA)."""
    peft = pytest.importorskip("peft")
    config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=LORA_TARGETS, use_dora=True,
                             init_lora_weights=False)

    def move_magnitudes(model) -> None:
        with torch.no_grad():
            for name, parameter in model.named_parameters():
                if "lora_magnitude_vector" in name:
                    parameter.mul_(1 + 0.5 * torch.rand_like(parameter))

    return _peft_case(hf_model, tmp_path_factory.mktemp("dora"), config, seed=2,
                      change=move_magnitudes)


def test_a_dora_adapter_merges_with_peft_logits_and_its_magnitudes_matter(dora_case, tmp_path):
    import copy

    base, adapter, peft_model = dora_case
    tensors = read_safetensors(adapter / "adapter_model.safetensors")
    assert any("lora_magnitude_vector" in name for name in tensors)
    _assert_matches(_load_quietly(base, adapter=adapter), peft_model)
    merged = copy.deepcopy(peft_model).merge_and_unload()  # peft's own merge, saved
    merged.save_pretrained(tmp_path / "merged")
    _assert_matches(_load_quietly(tmp_path / "merged"), peft_model)
    # the same A and B as plain LoRA (magnitudes dropped) give another model
    lora = tmp_path / "as_lora"
    lora.mkdir()
    config = json.loads((adapter / "adapter_config.json").read_text())
    (lora / "adapter_config.json").write_text(json.dumps({**config, "use_dora": False}))
    write_safetensors(lora / "adapter_model.safetensors", {
        k: np.array(v) for k, v in tensors.items() if "lora_magnitude_vector" not in k})
    pixels, ids, types = _inputs()
    as_lora = _load_quietly(base, adapter=lora).logits(pixels, ids, types)
    assert np.abs(as_lora - _hf_logits(peft_model, pixels, ids, types)).max() > 10 * TOL


def test_a_dora_adapter_missing_a_magnitude_is_refused(dora_case, tmp_path):
    base, adapter, _ = dora_case
    tmp_path.joinpath("adapter_config.json").write_text(
        (adapter / "adapter_config.json").read_text())
    tensors = read_safetensors(adapter / "adapter_model.safetensors")
    dropped = next(k for k in tensors if "lora_magnitude_vector" in k and "q_proj" in k)
    write_safetensors(tmp_path / "adapter_model.safetensors",
                      {k: np.array(v) for k, v in tensors.items() if k != dropped})
    with pytest.raises(CheckpointError, match="DoRA magnitude"):
        _load_quietly(base, adapter=tmp_path)


def test_peft_adapter_applies_to_a_base_in_another_format(peft_case, tmp_path):
    from modeling.convert import write_big_vision_npz

    base, adapter, peft_model = peft_case
    npz = write_big_vision_npz(tmp_path / "base.npz", _load_quietly(base).params)
    _assert_matches(_load_quietly(npz, config=CONFIG, adapter=adapter), peft_model)


def test_peft_merged_and_saved_model_loads_with_peft_logits(peft_case, tmp_path):
    _, _, peft_model = peft_case
    import copy

    merged = copy.deepcopy(peft_model).merge_and_unload()
    merged.save_pretrained(tmp_path)
    _assert_matches(_load_quietly(tmp_path), peft_model)


def test_an_adapter_for_another_model_is_refused(peft_case, tmp_path):
    _, adapter, _ = peft_case
    tmp_path.joinpath("adapter_config.json").write_text(
        (adapter / "adapter_config.json").read_text())
    tensors = read_safetensors(adapter / "adapter_model.safetensors")
    moved = {k.replace("layers.0.", "layers.9."): np.array(v) for k, v in tensors.items()}
    write_safetensors(tmp_path / "adapter_model.safetensors", moved)
    base = peft_case[0]
    with pytest.raises(CheckpointError,
                       match=r"layers\.9\..* not linear layers of this PaliGemma 2"):
        _load_quietly(base, adapter=tmp_path)


def test_peft_adapter_of_a_transformers_4_5x_model_merges_the_same(peft_case, tmp_path):
    """peft on transformers 4.52-4.57 names modules after that version's tree: SigLIP keeps
    `vision_model.` (`model.vision_tower.vision_model.encoder...`)."""
    base, adapter, peft_model = peft_case
    tmp_path.joinpath("adapter_config.json").write_text(
        (adapter / "adapter_config.json").read_text())
    tensors = read_safetensors(adapter / "adapter_model.safetensors")
    renamed = {k.replace("model.vision_tower.", "model.vision_tower.vision_model."): np.array(v)
               for k, v in tensors.items()}
    assert any(".vision_model.encoder.layers.0.mlp.fc1.lora_A" in k for k in renamed)
    write_safetensors(tmp_path / "adapter_model.safetensors", renamed)
    _assert_matches(_load_quietly(base, adapter=tmp_path), peft_model)


def _ours_with_adapters(base, pattern: str, rank: int = 4, alpha: float = 8.0):
    """Our NNX model of `base` with random, non-zero adapters on the weights matching `pattern`."""
    import jax
    from flax import nnx

    from modeling.lora import add_lora
    from modeling.model import model_from_params

    model = model_from_params(CONFIG, _load_quietly(base).params)
    add_lora(model, pattern, rank, alpha, nnx.Rngs(3))
    graphdef, adapters, rest = nnx.split(model, nnx.LoRAParam, ...)
    moved = jax.tree.map(lambda x: x + np.float32(0.02) * np.sign(np.cos(
        np.arange(x.size, dtype=np.float32).reshape(x.shape))), nnx.to_pure_dict(adapters))
    return nnx.merge(graphdef, moved, nnx.to_pure_dict(rest))


def test_our_lora_adapters_export_as_a_peft_adapter_peft_applies(peft_case, tmp_path):
    peft = pytest.importorskip("peft")
    from modeling.lora import merge_lora, save_peft_adapter
    from modeling.runtime import PaliGemma

    base, _, _ = peft_case
    # Every linear layer of both towers and the projector (the patch embedding is a conv).
    model = _ours_with_adapters(base, r"^(llm/layers/|img/head/|img/Transformer/)")
    out = save_peft_adapter(CONFIG, model, tmp_path / "adapter", base_model=str(base))
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["r"] == 4 and config["lora_alpha"] == 8.0
    assert "model.language_model.layers.0.self_attn.k_proj" in config["target_modules"]
    hf = transformers.PaliGemmaForConditionalGeneration.from_pretrained(
        base, attn_implementation="eager", dtype=torch.float32)
    peft_model = peft.PeftModel.from_pretrained(hf, out).eval()
    # peft found every exported module (a name it did not know would stay un-adapted).
    adapted = {name.removesuffix(".lora_A.default") for name, _ in peft_model.named_modules()
               if name.endswith(".lora_A.default")}
    assert {f"base_model.model.{m}" for m in config["target_modules"]} == adapted
    merged = PaliGemma(CONFIG, merge_lora(model))
    _assert_matches(merged, peft_model)
    pixels, ids, types = _inputs()
    plain = _load_quietly(base).logits(pixels, ids, types)
    assert np.abs(plain - _hf_logits(peft_model, pixels, ids, types)).max() > 10 * TOL
    # Our own PEFT import reads it back to the same merged weights.
    again = _load_quietly(base, adapter=out)
    _assert_matches(again, peft_model)


def test_an_adapter_on_the_patch_embedding_is_not_exported_to_peft(peft_case, tmp_path):
    from modeling.lora import LoRAError, save_peft_adapter

    base, _, _ = peft_case
    model = _ours_with_adapters(base, r"^img/embedding/kernel$")
    with pytest.raises(LoRAError, match="patch embedding"):
        save_peft_adapter(CONFIG, model, tmp_path / "adapter")
    assert not (tmp_path / "adapter").exists()
