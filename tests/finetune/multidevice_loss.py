"""Train the tiny model a few steps on a 1-device mesh and on a data x fsdp mesh; print losses.

Run as a script with XLA_FLAGS=--xla_force_host_platform_device_count=8 set before JAX starts
(the test does this in a subprocess). Prints one JSON line:
{"devices": 8, "single": [loss, ...], "sharded": [loss, ...], "param_shards": {...}}.
"""

from __future__ import annotations

import json
import sys

import jax
import jax.numpy as jnp
import numpy as np


def main(data: int, fsdp: int, steps: int) -> None:
    import modeling
    from finetune import optim, sharding
    from finetune.config import MeshSection, OptimSection
    from finetune.step import init_state, make_train_step
    from modeling.activations import with_activation_sharding

    config = modeling.PRESETS["tiny"].replace(text={"sliding_window": None, "vocab_size": 64})
    params = modeling.init_params(config, jax.random.PRNGKey(0))
    model = optim.build_model(config, params, OptimSection(), jax.random.PRNGKey(2))
    graphdef, trainable, frozen, axes = optim.split_model(model, "all")
    tx = optim.make_optimizer(OptimSection(lr=3e-3, warmup_fraction=0.0), 10)
    rng = np.random.default_rng(0)
    batch_size, length = 8, 12
    token_type = np.zeros((batch_size, length), np.int32)
    token_type[:, 4:] = 1
    batch = {
        "pixel_values": rng.uniform(
            -1, 1, (batch_size, config.image_size, config.image_size, 3)).astype(np.float32),
        "input_ids": rng.integers(3, 64, (batch_size, length)).astype(np.int32),
        "token_type_ids": token_type,
        "input_mask": np.ones((batch_size, length), np.int32),
        "loss_mask": token_type.copy(),
    }
    step_fn = make_train_step(graphdef, tx, compute_dtype=jnp.float32)

    def run(mesh) -> tuple[list[float], dict[str, str]]:
        state = init_state(trainable, tx, jax.random.PRNGKey(1))
        shardings = sharding.tree_shardings(state, mesh, axes=axes)
        state = jax.device_put(state, shardings)
        frozen_s = jax.device_put(frozen, sharding.tree_shardings(frozen, mesh, axes=axes))
        # As a run traces it: activations pinned to the batch sharding (modeling.activations).
        pinned = with_activation_sharding(step_fn, sharding.batch_sharding(mesh))
        step = jax.jit(pinned, out_shardings=(shardings, sharding.replicated(mesh)))
        losses = []
        for _ in range(steps):
            state, metrics = step(state, frozen_s, sharding.global_batch(batch, mesh))
            losses.append(float(metrics["loss"]))
        flat = optim.flatten(state["trainable"])
        specs = {k: str(flat[k].sharding.spec)
                 for k in ("llm/embedder/input_embedding", "llm/layers/mlp/linear")}
        return losses, specs

    single, _ = run(sharding.make_mesh(MeshSection(data=1, fsdp=1), jax.devices()[:1]))
    sharded, specs = run(sharding.make_mesh(MeshSection(data=data, fsdp=fsdp)))
    print(json.dumps({"devices": jax.device_count(), "single": single, "sharded": sharded,
                      "param_shards": specs}))


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]))
