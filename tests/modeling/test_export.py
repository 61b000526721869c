"""`radreport export`: a bundle becomes a transformers directory that transformers and its
processor load and that generates our greedy tokens, or a big_vision `.npz` spelled as
big_vision's own PaliGemma code names its parameters."""

from __future__ import annotations

import json

import jax
import ml_dtypes
import numpy as np
import pytest
from typer.testing import CliRunner

import modeling
from modeling.bundle import save_bundle
from modeling.formats import read_npz
from modeling.loaders import UnusedTensorsWarning
from radreport.cli import app
from tests.helpers.models import CONFIG_A, random_params, random_pixels

CONFIG = CONFIG_A


@pytest.fixture(scope="module")
def bundle(tmp_path_factory, tokenizer_path):
    params = random_params(CONFIG, seed=31)
    return save_bundle(tmp_path_factory.mktemp("b") / "bundle", CONFIG, params, tokenizer_path,
                       {"steps": 1}, generation={"max_new_tokens": 16}, prompt="findings")


def _export(*args: str) -> None:
    result = CliRunner().invoke(app, ["export", *args])
    assert result.exit_code == 0, result.output


def test_hf_export_loads_in_transformers_with_its_processor_and_generates_our_tokens(
        bundle, tmp_path):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    _export(str(bundle), "--format", "hf", "--out", str(tmp_path), "--dtype", "float32")
    hf = transformers.PaliGemmaForConditionalGeneration.from_pretrained(
        tmp_path, attn_implementation="eager", dtype=torch.float32).eval()
    processor = transformers.PaliGemmaProcessor.from_pretrained(tmp_path)
    ours = modeling.load_pretrained(bundle)

    image = (np.random.default_rng(0).uniform(0, 255, (40, 40, 3))).astype(np.uint8)
    inputs = processor(text=["<image>findings"], images=[image], return_tensors="pt")
    n = CONFIG.num_image_tokens
    ids = inputs["input_ids"][0].tolist()
    assert ids[:n] == [CONFIG.text.vocab_size] * n  # <image> is the model's image token
    assert ids[n:] == ours.tokenizer.prompt_ids("findings")  # bos, prompt, "\n" as we tokenize
    with torch.no_grad():
        out = hf.generate(**inputs, max_new_tokens=12, do_sample=False)
    theirs = out[0, len(ids):].tolist()
    theirs = theirs[: theirs.index(1)] if 1 in theirs else theirs
    pixels = inputs["pixel_values"].numpy().transpose(0, 2, 3, 1)
    tokens = ours.generate(pixels, [ours.tokenizer.prompt_ids("findings")], 12)[0]
    assert tokens == theirs and len(set(tokens)) > 2
    # random weights pick rows past the small test tokenizer's pieces too; the shared ones read
    # the same through both tokenizers
    known = [t for t in tokens if 4 <= t < ours.tokenizer.vocab_size]
    assert processor.decode(known) == ours.tokenizer.decode(known)


def test_hf_export_in_bfloat16_holds_the_rounded_weights(bundle, tmp_path):
    _export(str(bundle), "--out", str(tmp_path))
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["dtype"] == "bfloat16"
    model = modeling.load_pretrained(tmp_path, dtype="bfloat16")
    reference = modeling.load_pretrained(bundle)
    for (path, got), (_, want) in zip(jax.tree_util.tree_leaves_with_path(model.params),
                                      jax.tree_util.tree_leaves_with_path(reference.params),
                                      strict=True):
        np.testing.assert_array_equal(np.asarray(got),
                                      np.asarray(want).astype(ml_dtypes.bfloat16), str(path))


def test_hf_export_merges_a_peft_adapter_like_peft(bundle, tmp_path):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    peft = pytest.importorskip("peft")
    _export(str(bundle), "--out", str(tmp_path / "base"), "--dtype", "float32")
    base = transformers.PaliGemmaForConditionalGeneration.from_pretrained(
        tmp_path / "base", attn_implementation="eager", dtype=torch.float32)
    n = CONFIG.num_image_tokens
    ids = torch.tensor([[CONFIG.text.vocab_size] * n + [2, 17, 33, 90, 108]])
    pixels = torch.tensor(random_pixels(CONFIG, 1).transpose(0, 3, 1, 2))
    with torch.no_grad():
        plain = base(input_ids=ids, pixel_values=pixels).logits
    torch.manual_seed(2)
    lora = peft.get_peft_model(base, peft.LoraConfig(
        r=2, lora_alpha=4, target_modules=["q_proj", "v_proj", "down_proj"],
        init_lora_weights=False)).eval()
    lora.save_pretrained(tmp_path / "adapter")
    _export(str(bundle), "--out", str(tmp_path / "merged"), "--dtype", "float32",
            "--adapter", str(tmp_path / "adapter"))
    merged = transformers.PaliGemmaForConditionalGeneration.from_pretrained(
        tmp_path / "merged", attn_implementation="eager", dtype=torch.float32).eval()
    with torch.no_grad():
        want = lora(input_ids=ids, pixel_values=pixels).logits
        got = merged(input_ids=ids, pixel_values=pixels).logits
    assert (got - want).abs().max().item() <= 1e-4
    assert (plain - want).abs().max().item() > 1e-2  # the adapter changed the model


def _big_vision_names(depth_vision: int, depth_llm: int) -> set[str]:
    """The parameter names big_vision's PaliGemma (`models/proj/paligemma/paligemma.py` with
    `img=dict(variant="So400m/14", pool_type="none", scan=True)`, `llm=dict(scan=True)`) writes:
    ViT `embedding`, `pos_embedding`, `Transformer/encoderblock/{LayerNorm_0,LayerNorm_1,
    MultiHeadDotProductAttention_0,MlpBlock_0}`, `Transformer/encoder_norm`, `head`; Gemma
    `embedder/input_embedding`, `layers/{attn,mlp,*_norm}`, `final_norm`."""
    del depth_vision, depth_llm  # scanned: one stacked array per name whatever the depth
    blk = "img/Transformer/encoderblock"
    names = {"img/embedding/kernel", "img/embedding/bias", "img/pos_embedding",
             "img/Transformer/encoder_norm/scale", "img/Transformer/encoder_norm/bias",
             "img/head/kernel", "img/head/bias", "llm/embedder/input_embedding",
             "llm/final_norm/scale", "llm/layers/attn/q_einsum/w", "llm/layers/attn/kv_einsum/w",
             "llm/layers/attn/attn_vec_einsum/w", "llm/layers/mlp/gating_einsum",
             "llm/layers/mlp/linear"}
    names |= {f"llm/layers/{n}/scale" for n in
              ("pre_attention_norm", "post_attention_norm", "pre_ffw_norm", "post_ffw_norm")}
    names |= {f"{blk}/LayerNorm_{i}/{p}" for i in (0, 1) for p in ("scale", "bias")}
    names |= {f"{blk}/MlpBlock_0/Dense_{i}/{p}" for i in (0, 1) for p in ("kernel", "bias")}
    names |= {f"{blk}/MultiHeadDotProductAttention_0/{m}/{p}"
              for m in ("query", "key", "value", "out") for p in ("kernel", "bias")}
    return names


def test_npz_export_uses_big_vision_names_and_loads_back(bundle, tmp_path):
    _export(str(bundle), "--format", "npz", "--out", str(tmp_path / "pg.npz"))
    arrays = read_npz(tmp_path / "pg.npz")
    assert set(arrays) == _big_vision_names(CONFIG.vision.depth, CONFIG.text.depth)
    assert arrays["llm/layers/attn/kv_einsum/w"].shape == (
        CONFIG.text.depth, 2, CONFIG.text.num_kv_heads, CONFIG.text.width, CONFIG.text.head_dim)
    assert arrays["llm/layers/mlp/linear"].dtype == ml_dtypes.bfloat16
    assert (tmp_path / "pg.model").is_file()  # the tokenizer, found beside the .npz
    model = modeling.load_pretrained(tmp_path / "pg.npz", config=CONFIG)
    assert model.tokenizer is not None
    reference = modeling.load_pretrained(bundle)
    got = np.asarray(model.params["llm"]["layers"]["mlp"]["linear"])
    want = np.asarray(reference.params["llm"]["layers"]["mlp"]["linear"])
    np.testing.assert_array_equal(got, want.astype(ml_dtypes.bfloat16).astype(np.float32))


def test_unscanned_big_vision_training_checkpoint_loads_the_same_params(bundle, tmp_path):
    """big_vision with scan=False names blocks `encoderblock_{i}` and `layers/{i}`; a training
    checkpoint nests them under `params/` next to the optimizer state."""
    _export(str(bundle), "--format", "npz", "--out", str(tmp_path / "scanned.npz"),
            "--dtype", "float32")
    unscanned = {"opt/mu/llm/final_norm/scale": np.zeros(CONFIG.text.width, np.float32)}
    for name, value in read_npz(tmp_path / "scanned.npz").items():
        stacks = (("img/Transformer/encoderblock/", "img/Transformer/encoderblock_{}/"),
                  ("llm/layers/", "llm/layers/{}/"))
        for stack, per_block in stacks:
            if name.startswith(stack):
                for i, block in enumerate(np.asarray(value)):
                    unscanned["params/" + per_block.format(i) + name[len(stack):]] = block
                break
        else:
            unscanned["params/" + name] = np.asarray(value)
    np.savez(tmp_path / "unscanned.npz", **unscanned)
    with pytest.warns(UnusedTensorsWarning, match="opt/mu/llm/final_norm/scale"):
        model = modeling.load_pretrained(tmp_path / "unscanned.npz")
    assert model.config.text.depth == CONFIG.text.depth
    reference = modeling.load_pretrained(bundle)
    for (path, got), (_, want) in zip(jax.tree_util.tree_leaves_with_path(model.params),
                                      jax.tree_util.tree_leaves_with_path(reference.params),
                                      strict=True):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want), str(path))


def test_hf_export_converts_back_into_the_same_bundle(bundle, tmp_path):
    _export(str(bundle), "--out", str(tmp_path / "hf"), "--dtype", "float32")
    result = CliRunner().invoke(app, ["convert", str(tmp_path / "hf"), str(tmp_path / "again"),
                                      "--dtype", "float32"])
    assert result.exit_code == 0, result.output
    again = modeling.load_pretrained(tmp_path / "again")
    reference = modeling.load_pretrained(bundle)
    assert again.config == reference.config
    text = "Mild cardiomegaly.\nNo effusion."
    assert again.tokenizer.encode(text) == reference.tokenizer.encode(text)  # padded, same pieces
    for (path, got), (_, want) in zip(jax.tree_util.tree_leaves_with_path(again.params),
                                      jax.tree_util.tree_leaves_with_path(reference.params),
                                      strict=True):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want), str(path))
