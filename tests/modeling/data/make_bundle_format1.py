"""Write a tiny bundle with the code of the checkout this runs from, and what it generates.

Run from a checkout of the code whose bundles should keep loading (done at commit dc7bc62):
    PYTHONPATH=. python tests/modeling/data/make_bundle_format1.py OUT
then copy OUT/bundle and OUT/expected.json here (see test_bundle_format.py).
"""

import json
import sys
from pathlib import Path

import jax
import numpy as np

from modeling.bundle import load_bundle, save_bundle
from modeling.config import ModelConfig, TextConfig, VisionConfig
from modeling.model import param_shapes
from modeling.tokenizer import train_tokenizer

out = Path(sys.argv[1])
config = ModelConfig(
    vision=VisionConfig(image_size=28, patch_size=14, width=16, depth=1, mlp_dim=32, num_heads=2),
    text=TextConfig(width=32, depth=2, mlp_dim=64, num_heads=2, num_kv_heads=1, head_dim=16,
                    vocab_size=300, query_pre_attn_scalar=16, sliding_window=4),
).hf_compatible()
rng = np.random.default_rng(0)
params = jax.tree_util.tree_map(lambda s: rng.normal(0, 0.3, s).astype(np.float32),
                                param_shapes(config), is_leaf=lambda x: isinstance(x, tuple))
params["llm"]["embedder"]["input_embedding"] = rng.normal(0, 0.05, (300, 32)).astype(np.float32)
words = ["heart size normal lungs clear no effusion", "mild cardiomegaly small left effusion",
         "lines and tubes unchanged", "describe findings en"]
tok = train_tokenizer(words * 30, out / "work" / "tokenizer.model", vocab_size=290)
bundle = save_bundle(out / "bundle", config, params, tok, metadata={"source": "old format test"},
                     prompt="describe findings")
(bundle / "tokenizer.model").unlink()
model = load_bundle(bundle, prompt_buckets=(8,), new_token_buckets=(8,), batch_buckets=(2,))
pixels = np.random.default_rng(1).uniform(-1, 1, (2, 28, 28, 3)).astype(np.float32)
prompts = [[2, 40, 41, 108], [2, 7, 108]]
greedy = model.generate(pixels, prompts, 8)
beam = model.generate(pixels, prompts, 8, "beam", beam_size=2)
logits = model.logits(pixels[:1], np.array([[2, 40, 41, 108, 5, 6]]),
                      np.array([[0, 0, 0, 0, 1, 1]]))
(out / "expected.json").write_text(json.dumps({"prompts": prompts, "greedy": greedy, "beam": beam,
    "logits_sum": float(np.abs(logits).sum()), "logits_0": logits[0, -1, :8].tolist()}))
print(greedy, beam)
