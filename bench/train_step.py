"""Train-step throughput: our JAX step against a transformers (torch) step, same model and batch.

Both sides train the same miniature PaliGemma 2 (the `demo` preset's architecture by default:
SigLIP + projector + Gemma 2, random init, float32) on the same batch and sequence length with
AdamW and the loss on suffix tokens only. Prints examples/s of each and their ratio; then the
step time of our step on 8 simulated CPU devices (data=2 x fsdp=4) in a subprocess.

    .venv/bin/python bench/train_step.py [--batch 16] [--steps 5] [--config demo]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def model_config(name: str, vocab: int):
    from finetune.config import load_config
    from finetune.trainer import model_config_for

    cfg = load_config(name)
    return model_config_for(cfg, vocab), cfg.data.text_len


def make_batch(config, batch: int, length: int, prefix: int = 20, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    size = config.image_size
    token_type = np.ones((batch, length), np.int32)
    token_type[:, :prefix] = 0
    ids = rng.integers(3, config.text.vocab_size, (batch, length)).astype(np.int32)
    ids[:, 0] = 2  # BOS
    return {
        "pixel_values": rng.uniform(-1, 1, (batch, size, size, 3)).astype(np.float32),
        "input_ids": ids,
        "token_type_ids": token_type,
        "input_mask": np.ones((batch, length), np.int32),
        "loss_mask": token_type.copy(),
    }


def time_jax(config, batch: dict[str, np.ndarray], steps: int, mesh_shape: tuple[int, int] | None = None) -> dict:
    import jax
    import jax.numpy as jnp

    import modeling
    from finetune import optim, sharding
    from finetune.config import MeshSection, OptimSection
    from finetune.step import init_state, make_train_step

    params = modeling.init_params(config, jax.random.PRNGKey(0))
    trainable, frozen = optim.split_params(optim.flatten(params), "all")
    tx = optim.make_optimizer(OptimSection(lr=1e-4, warmup_fraction=0.0), 1000)
    data, fsdp = mesh_shape or (1, 1)
    mesh = sharding.make_mesh(MeshSection(data=data, fsdp=fsdp), jax.devices()[: data * fsdp])
    state = init_state(trainable, tx, jax.random.PRNGKey(1))
    shardings = sharding.tree_shardings(state, mesh)
    state = jax.device_put(state, shardings)
    frozen = jax.device_put(frozen, sharding.tree_shardings(frozen, mesh))
    step = jax.jit(
        make_train_step(partial(modeling.forward, config), tx, compute_dtype=jnp.float32),
        out_shardings=(shardings, sharding.replicated(mesh)),
        donate_argnums=(0,),
    )
    device_batch = sharding.global_batch(batch, mesh)
    start = time.perf_counter()
    state, metrics = step(state, frozen, device_batch)
    jax.block_until_ready(metrics["loss"])
    compile_s = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(steps):
        state, metrics = step(state, frozen, device_batch)
    jax.block_until_ready(metrics["loss"])
    step_s = (time.perf_counter() - start) / steps
    n = batch["input_ids"].shape[0]
    return {"step_s": step_s, "examples_per_s": n / step_s, "first_step_s": compile_s,
            "loss": float(metrics["loss"]), "devices": data * fsdp}


def time_torch(config, batch: dict[str, np.ndarray], steps: int) -> dict:
    import torch
    from transformers import PaliGemmaConfig, PaliGemmaForConditionalGeneration

    from modeling.convert import hf_config_dict

    torch.manual_seed(0)
    hf = hf_config_dict(config)
    hf["text_config"]["attn_implementation"] = "eager"  # Gemma 2 soft-capping needs eager
    model = PaliGemmaForConditionalGeneration(PaliGemmaConfig.from_dict(hf))
    model.config._attn_implementation = "eager"
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    n, length = batch["input_ids"].shape
    image_tokens = config.num_image_tokens
    image_ids = np.full((n, image_tokens), hf["image_token_index"], np.int64)
    input_ids = torch.from_numpy(np.concatenate([image_ids, batch["input_ids"]], axis=1).astype(np.int64))
    token_type = torch.from_numpy(
        np.concatenate([np.zeros((n, image_tokens), np.int64), batch["token_type_ids"]], axis=1))
    labels = input_ids.clone()
    labels[token_type == 0] = -100
    pixels = torch.from_numpy(batch["pixel_values"].transpose(0, 3, 1, 2).copy())
    attention = torch.ones_like(input_ids)

    def step() -> float:
        optimizer.zero_grad(set_to_none=True)
        out = model(input_ids=input_ids, pixel_values=pixels, token_type_ids=token_type,
                    attention_mask=attention, labels=labels)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        return float(out.loss)

    start = time.perf_counter()
    step()
    first = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(steps):
        loss = step()
    step_s = (time.perf_counter() - start) / steps
    return {"step_s": step_s, "examples_per_s": n / step_s, "first_step_s": first, "loss": loss,
            "threads": torch.get_num_threads()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="demo", help="finetune preset whose model is timed")
    parser.add_argument("--vocab", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--length", type=int, default=0, help="text tokens (default: the preset's)")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--skip-multidevice", action="store_true")
    parser.add_argument("--multidevice-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()

    config, text_len = model_config(args.config, args.vocab)
    length = args.length or text_len
    batch = make_batch(config, args.batch, length)
    if args.multidevice_only:
        print(json.dumps(time_jax(config, batch, args.steps, mesh_shape=(2, 4))))
        return

    print(f"model: {args.config} preset architecture, {config.num_image_tokens} image tokens + "
          f"{length} text tokens, batch {args.batch}, float32, AdamW, {os.cpu_count()} CPUs")
    ours = time_jax(config, batch, args.steps)
    theirs = time_torch(config, batch, args.steps)
    print(f"{'':28s}{'examples/s':>12s}{'step (s)':>10s}{'first step (s)':>16s}{'loss':>8s}")
    print(f"{'radreport (JAX, jit)':28s}{ours['examples_per_s']:12.1f}{ours['step_s']:10.3f}"
          f"{ours['first_step_s']:16.1f}{ours['loss']:8.3f}")
    print(f"{'transformers (torch, eager)':28s}{theirs['examples_per_s']:12.1f}{theirs['step_s']:10.3f}"
          f"{theirs['first_step_s']:16.1f}{theirs['loss']:8.3f}")
    print(f"ratio (ours / transformers): {ours['examples_per_s'] / theirs['examples_per_s']:.2f}x")

    if not args.skip_multidevice:
        env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu",
                   PYTHONPATH=str(ROOT))
        command = [sys.executable, __file__, "--multidevice-only", "--config", args.config,
                   "--vocab", str(args.vocab), "--batch", str(args.batch), "--length", str(length),
                   "--steps", str(args.steps)]
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
        multi = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"8 simulated CPU devices (data=2 x fsdp=4): {multi['step_s']:.3f} s/step, "
              f"{multi['examples_per_s']:.1f} examples/s (1 device: {ours['step_s']:.3f} s/step; "
              "simulated devices share the same cores, so this checks the sharded program, not speed-up)")


if __name__ == "__main__":
    main()
