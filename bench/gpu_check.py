"""The GPU check (run by `bench/gpu_check.sh`): PaliGemma 2 3B-224 in bfloat16, ours (JAX) next
to transformers (torch) on the same accelerator, ratios printed.

1. A random-weight checkpoint written by transformers' `save_pretrained` (`bench/real_size.py`).
2. Greedy generation at batch 1 and 8: each side loads that directory in bfloat16 in its own
   process; load seconds, prefill seconds (first token, vision tower included), seconds per
   further token, host peak RSS.
3. One training step (AdamW, loss on the suffix, everything trains, float32 master weights)
   of the same architecture at the same batch: ours jitted, transformers eager; seconds per
   step after a warm-up step.

`--tiny` runs the same path on the `tiny` preset (any machine, CPU included) to check the script.

    python bench/gpu_check.py --dir var/pg2-3b-224 [--tiny] [--new-tokens 32]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from bench.real_size import checkpoint_bytes, make_checkpoint, measure


def torch_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def generate_rows(directory: Path, new_tokens: int, batches: tuple[int, ...]) -> None:
    device = torch_device()
    size = checkpoint_bytes(directory)
    for batch in batches:
        # on a GPU both sides compute in bfloat16 (the CPU path computes in float32)
        ours = measure("ours", directory, new_tokens, batch,
                       compute_dtype="bfloat16" if device == "cuda" else None)
        theirs = measure("transformers", directory, new_tokens, batch, device=device)
        for name, r in (("ours", ours), ("transformers", theirs)):
            if "error" in r:
                print(f"generate batch {batch} {name}: FAILED {r['error']}\n{r['stderr']}")
            else:
                print(f"generate batch {batch} {name:>12}: load {r['load_s']:.1f} s, prefill "
                      f"{r['prefill_s']:.3f} s, {r['per_token_s'] * 1e3:.2f} ms/token, host peak "
                      f"RSS {r['peak_rss'] / size:.2f}x the checkpoint")
        if "error" not in ours and "error" not in theirs:
            print(f"generate batch {batch} ratio transformers/ours (above 1: ours faster): "
                  f"prefill {theirs['prefill_s'] / ours['prefill_s']:.2f}, per token "
                  f"{theirs['per_token_s'] / ours['per_token_s']:.2f}; same tokens: "
                  f"{ours['tokens'] == theirs['tokens']}")


def train_row(config, batch: int, length: int, steps: int) -> None:
    from bench.train_step import make_batch, time_jax, torch_step

    data = make_batch(config, batch, length, prefix=min(20, length // 2))
    ours = time_jax(config, data, steps)
    run, first, loss, _ = torch_step(config, data, device=torch_device())
    start = time.perf_counter()
    for _ in range(steps):
        run()
    theirs = (time.perf_counter() - start) / steps
    print(f"train step batch {batch}x{length}: ours {ours['step_s']:.3f} s (first, with compile, "
          f"{ours['first_step_s']:.1f} s; loss {ours['loss']:.3f}), transformers {theirs:.3f} s "
          f"(loss {loss():.3f}); ratio transformers/ours {theirs / ours['step_s']:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", type=Path, required=True, help="where the checkpoint goes")
    parser.add_argument("--tiny", action="store_true", help="the tiny preset (checks the script)")
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--train-batch", type=int, default=8)
    parser.add_argument("--train-length", type=int, default=64)
    parser.add_argument("--train-steps", type=int, default=3)
    args = parser.parse_args()
    import jax

    from modeling.config import PRESETS

    preset = "tiny" if args.tiny else "paligemma2-3b-224"
    print(f"jax devices: {jax.devices()}; torch device: {torch_device()}; preset {preset}")
    if not any(args.dir.glob("*.safetensors")):
        make_checkpoint(args.dir, preset)
    print(f"checkpoint {args.dir}: {checkpoint_bytes(args.dir) / 1e9:.2f} GB")
    generate_rows(args.dir, args.new_tokens, (1, 8))
    train_row(PRESETS[preset].hf_compatible(), args.train_batch, args.train_length,
              args.train_steps)


if __name__ == "__main__":
    main()
