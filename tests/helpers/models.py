"""Helpers for the modeling tests: tiny configurations, random weights and pixels."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from modeling.config import ModelConfig, TextConfig, VisionConfig
from modeling.model import param_shapes

# Two tiny configurations exercising grouped-query attention, a sliding window shorter than
# the sequence, attention soft-capping strong enough to bite, and an odd number of layers.
CONFIG_A = ModelConfig(
    vision=VisionConfig(image_size=28, patch_size=14, width=32, depth=1, mlp_dim=64, num_heads=2),
    text=TextConfig(width=64, depth=3, mlp_dim=128, num_heads=4, num_kv_heads=2, head_dim=16,
                    vocab_size=512, query_pre_attn_scalar=16, attn_logits_softcap=2.0,
                    sliding_window=8),
).hf_compatible()
CONFIG_B = ModelConfig(
    vision=VisionConfig(image_size=56, patch_size=14, width=48, depth=2, mlp_dim=96, num_heads=3),
    text=TextConfig(width=96, depth=5, mlp_dim=160, num_heads=6, num_kv_heads=2, head_dim=16,
                    vocab_size=384, query_pre_attn_scalar=24, attn_logits_softcap=5.0,
                    sliding_window=12),
).hf_compatible()

PARITY_CONFIGS = {"A": CONFIG_A, "B": CONFIG_B}

REPORTS = [
    "The heart size is normal. The lungs are clear. No pleural effusion or pneumothorax.",
    "Mild cardiomegaly. Small left pleural effusion with adjacent atelectasis.",
    "Lines and tubes are unchanged. Endotracheal tube 4 cm above the carina.",
    "No acute cardiopulmonary process.\nStable mediastinal contours.",
    "Right lower lobe opacity concerning for pneumonia. Follow-up in 6 weeks.",
]


def random_params(config: ModelConfig, seed: int = 0) -> dict:
    """Random float32 weights far from the identity init (norm scales and biases non-zero), with
    a small embedding so that greedy decoding does not just repeat its input token."""
    rng = np.random.default_rng(seed)

    def leaf(shape: tuple[int, ...]) -> jnp.ndarray:
        return jnp.asarray(rng.normal(0.0, 0.3, shape).astype(np.float32))

    params = jax.tree_util.tree_map(leaf, param_shapes(config),
                                    is_leaf=lambda x: isinstance(x, tuple))
    table = params["llm"]["embedder"]["input_embedding"]
    params["llm"]["embedder"]["input_embedding"] = jnp.asarray(
        rng.normal(0.0, 0.05, table.shape).astype(np.float32))
    return params


def random_pixels(config: ModelConfig, n: int, seed: int = 0) -> np.ndarray:
    size = config.image_size
    return np.random.default_rng(seed).uniform(-1, 1, (n, size, size, 3)).astype(np.float32)


