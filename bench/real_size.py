"""A real-size PaliGemma 2 on the CPU: load time, peak resident memory and generation speed of
`modeling.load_pretrained(dir, dtype="bfloat16")` next to transformers loading the same directory
in bfloat16.

The checkpoint is what transformers itself writes: `PaliGemmaForConditionalGeneration(config)`
with random weights, built directly in bfloat16 and saved with `save_pretrained` as sharded
safetensors (no network, no download). Each side then runs in its own subprocess, so each peak
resident set (VmHWM of that child) is its own:

    python bench/real_size.py --make var/pg2-3b                 # write the checkpoint (~6 GB)
    python bench/real_size.py var/pg2-3b                        # both sides, side by side
    python bench/real_size.py var/pg2-3b --sides ours --new-tokens 8

Printed per side: load seconds, peak RSS and its ratio to the checkpoint's bytes (the sum of
the .safetensors files), prefill seconds (the first token, vision tower included) and seconds
per further token at batch 1, and the ratios ours / transformers. A full-size run needs about
1.5x the checkpoint in free memory per side (they run one after the other).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

PRESET = "paligemma2-3b-224"
PROMPT_LEN = 10  # text tokens of the prompt (BOS ... "\n"), the same on both sides


def checkpoint_bytes(directory: Path) -> int:
    """Bytes of the tensors on disk: the sum of the directory's .safetensors files."""
    return sum(p.stat().st_size for p in directory.glob("*.safetensors"))


def make_checkpoint(out: Path, preset: str = PRESET, text_depth: int | None = None,
                    vision_depth: int | None = None, shard: str = "2GB", seed: int = 0) -> Path:
    """Write a random-weight PaliGemma 2 with transformers' own `save_pretrained` (bfloat16,
    sharded): the model is created in bfloat16, so no float32 copy of it is ever made."""
    import torch
    from transformers import PaliGemmaConfig, PaliGemmaForConditionalGeneration

    from modeling.config import PRESETS
    from modeling.convert import hf_config_dict

    config = PRESETS[preset]
    if text_depth is not None:
        config = config.replace(text={"depth": text_depth})
    if vision_depth is not None:
        config = config.replace(vision={"depth": vision_depth})
    torch.manual_seed(seed)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        model = PaliGemmaForConditionalGeneration(PaliGemmaConfig(**hf_config_dict(config)))
    finally:
        torch.set_default_dtype(previous)
    model.eval()
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, max_shard_size=shard)
    return out


def _peak_rss_bytes() -> int:
    """This process's peak resident set: VmHWM where /proc has it (ru_maxrss would include the
    parent's resident set at the fork: Linux keeps it across exec), else ru_maxrss."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def _inputs(image_size: int, batch: int):
    import numpy as np

    rng = np.random.default_rng(0)
    pixels = rng.uniform(-1, 1, (batch, image_size, image_size, 3)).astype(np.float32)
    prompt = [2] + [int(t) for t in rng.integers(10, 1000, PROMPT_LEN - 2)] + [108]
    return pixels, [prompt] * batch


def run_ours(directory: Path, new_tokens: int, batch: int, compute_dtype: str | None = None
             ) -> dict:
    """Load with `modeling.load_pretrained` in bfloat16 and generate greedily (`compute_dtype`:
    override the config's, float32 by default; transformers computes in the parameter dtype)."""
    import modeling
    from modeling.convert import config_from_hf

    config = None
    if compute_dtype is not None:
        hf = json.loads((directory / "config.json").read_text())
        config = config_from_hf(hf).replace(compute_dtype=compute_dtype)
    start = time.perf_counter()
    model = modeling.load_pretrained(directory, dtype="bfloat16", config=config,
                                     batch_buckets=(batch,), prompt_buckets=(16,),
                                     new_token_buckets=(new_tokens,))
    import jax

    jax.block_until_ready(model.params)
    load_s = time.perf_counter() - start
    load_rss = _peak_rss_bytes()
    pixels, prompts = _inputs(model.config.image_size, batch)
    times = {}
    for n in (1, new_tokens):  # compile both programs first, then time them
        model.generate(pixels, prompts, n)
        start = time.perf_counter()
        tokens = model.generate(pixels, prompts, n)
        times[n] = time.perf_counter() - start
    return {"load_s": load_s, "load_peak_rss": load_rss, "prefill_s": times[1],
            "per_token_s": (times[new_tokens] - times[1]) / max(new_tokens - 1, 1),
            "tokens": tokens[0]}


def run_transformers(directory: Path, new_tokens: int, batch: int, device: str = "cpu") -> dict:
    """Load with transformers' `from_pretrained(dtype=bfloat16)` onto `device` and generate
    greedily."""
    import numpy as np
    import torch
    from transformers import PaliGemmaForConditionalGeneration

    torch.set_num_threads(os.cpu_count() or 1)
    start = time.perf_counter()
    model = PaliGemmaForConditionalGeneration.from_pretrained(
        directory, dtype=torch.bfloat16, attn_implementation="eager").eval().to(device)
    _sync(device)
    load_s = time.perf_counter() - start
    load_rss = _peak_rss_bytes()
    size = model.config.vision_config.image_size
    pixels, prompts = _inputs(size, batch)
    image_tokens = model.config.vision_config.num_image_tokens
    image_id = model.config.image_token_index
    ids = torch.tensor([[image_id] * image_tokens + p for p in prompts], device=device)
    px = torch.from_numpy(np.ascontiguousarray(pixels.transpose(0, 3, 1, 2))).to(
        device=device, dtype=torch.bfloat16)
    kwargs = {"input_ids": ids, "pixel_values": px, "attention_mask": torch.ones_like(ids),
              "token_type_ids": torch.zeros_like(ids), "do_sample": False,
              "eos_token_id": None, "pad_token_id": 0}
    times = {}
    with torch.inference_mode():
        for n in (1, new_tokens):
            model.generate(**kwargs, max_new_tokens=n, min_new_tokens=n)
            _sync(device)
            start = time.perf_counter()
            out = model.generate(**kwargs, max_new_tokens=n, min_new_tokens=n)
            _sync(device)
            times[n] = time.perf_counter() - start
    return {"load_s": load_s, "load_peak_rss": load_rss, "prefill_s": times[1],
            "per_token_s": (times[new_tokens] - times[1]) / max(new_tokens - 1, 1),
            "tokens": out[0, ids.shape[1]:].tolist()}


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


SIDES = {"ours": run_ours, "transformers": run_transformers}


def measure(side: str, directory: Path, new_tokens: int, batch: int, **options: object) -> dict:
    """Run one side in a fresh subprocess; its peak RSS is that child's alone. `options` go to
    the side's function (e.g. device="cuda" for transformers)."""
    code = ("import json, sys, resource; from bench.real_size import SIDES, _peak_rss_bytes; "
            "from pathlib import Path; "
            f"r = SIDES[{side!r}](Path({str(directory)!r}), {new_tokens}, {batch}, "
            f"**{options!r}); "
            "r['peak_rss'] = _peak_rss_bytes(); print('RESULT ' + json.dumps(r))")
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": f"{root}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          cwd=root)
    for line in done.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    tail = (done.stderr or done.stdout).strip()[-3000:]
    return {"error": f"exit {done.returncode}" + (" (killed: out of memory?)"
                                                   if done.returncode in (-9, 137) else ""),
            "stderr": tail}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("directory", type=Path)
    parser.add_argument("--make", action="store_true", help="write the checkpoint and exit")
    parser.add_argument("--preset", default=PRESET)
    parser.add_argument("--text-depth", type=int, default=None)
    parser.add_argument("--vision-depth", type=int, default=None)
    parser.add_argument("--shard", default="2GB", help="save_pretrained's max_shard_size")
    parser.add_argument("--sides", nargs="+", default=list(SIDES), choices=list(SIDES))
    parser.add_argument("--new-tokens", type=int, default=8)
    parser.add_argument("--batch", type=int, default=1)
    args = parser.parse_args()
    if args.make:
        make_checkpoint(args.directory, args.preset, args.text_depth, args.vision_depth,
                        args.shard)
        print(f"wrote {args.directory}: {checkpoint_bytes(args.directory) / 1e9:.2f} GB")
        return
    size = checkpoint_bytes(args.directory)
    print(f"checkpoint {args.directory}: {size / 1e9:.2f} GB of safetensors; batch {args.batch}, "
          f"{args.new_tokens} new tokens, {os.cpu_count()} CPUs")
    results = {}
    for side in args.sides:
        r = results[side] = measure(side, args.directory, args.new_tokens, args.batch)
        if "error" in r:
            print(f"{side:>12}: FAILED {r['error']}\n{r['stderr']}")
            continue
        print(f"{side:>12}: load {r['load_s']:.1f} s, peak RSS {r['peak_rss'] / 1e9:.2f} GB = "
              f"{r['peak_rss'] / size:.2f}x the checkpoint (after loading "
              f"{r['load_peak_rss'] / size:.2f}x), prefill {r['prefill_s']:.2f} s, "
              f"{r['per_token_s']:.3f} s/token")
    if all(side in results and "error" not in results[side] for side in SIDES):
        ours, ref = results["ours"], results["transformers"]
        print(f"ratios ours/transformers: load time {ours['load_s'] / ref['load_s']:.2f}, "
              f"peak RSS {ours['peak_rss'] / ref['peak_rss']:.2f}, "
              f"prefill {ours['prefill_s'] / ref['prefill_s']:.2f}, "
              f"per-token {ours['per_token_s'] / ref['per_token_s']:.2f} (below 1: ours faster)")


if __name__ == "__main__":
    main()
