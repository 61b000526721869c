"""Greedy decoding speed: our jit generation vs transformers (torch, eager attention) on the same
random weights in one run, on the CPU, float32, batch 1 and 8.

Prints tokens/s for both and their ratio, end to end (vision tower + prefill + decode) and for
the decode loop alone (a run of N tokens minus a run of 1; each side's long and 1-token runs
alternate --repeats times and the best of each counts), our batch-8/batch-1 scaling, and
the fraction of the memory-bandwidth roofline: a decoded token must read the decoder weights and
the (tied) output embedding once, so tokens/s <= copy bandwidth / those bytes. Bandwidth is
measured here with a large numpy copy (bytes copied per second). Our decode loop runs its
matmuls, attention and greedy choice with the CPU kernels of `modeling/cpu_kernels.py` where
they are built (the header says which); RADREPORT_CPU_KERNELS=0 times XLA's instead.

    .venv/bin/python bench/generate.py                      # both configurations
    .venv/bin/python bench/generate.py --configs tiny-10m --new-tokens 64
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np


def copy_bandwidth(gib: float = 0.5, repeats: int = 5) -> float:
    """Bytes per second of a large memory-to-memory copy (best of `repeats`)."""
    a = np.ones(int(gib * 2**30) // 4, np.float32)
    b = np.empty_like(a)
    np.copyto(b, a)
    best = min(_timed(lambda: np.copyto(b, a)) for _ in range(repeats))
    return a.nbytes / best


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _best_pair(long_run, short_run, repeats: int) -> tuple[float, float]:
    """Best times of `repeats` alternating (long, short) runs."""
    times = [(_timed(long_run), _timed(short_run)) for _ in range(repeats)]
    return min(t for t, _ in times), min(t for _, t in times)


def decode_bytes_per_token(config, dtype_bytes: int = 4) -> int:
    """Bytes of weights a decode step must read: all decoder layers, final norm, embedding."""
    import modeling

    llm = modeling.abstract_params(config)["llm"]
    return modeling.count_params(llm) * dtype_bytes


def random_weights(config, seed: int = 0):
    import jax.numpy as jnp

    from modeling.model import param_shapes

    rng = np.random.default_rng(seed)

    def leaf(shape):
        return jnp.asarray(rng.normal(0.0, 0.05, shape).astype(np.float32))

    import jax

    return jax.tree_util.tree_map(
        leaf, param_shapes(config), is_leaf=lambda x: isinstance(x, tuple)
    )


def bench_config(name: str, new_tokens: int, batches: tuple[int, ...], repeats: int) -> dict:
    import torch
    import transformers

    import modeling
    from modeling.convert import write_hf_checkpoint
    from modeling.runtime import PaliGemma

    config = modeling.PRESETS[name].hf_compatible()
    params = random_weights(config)
    ours = PaliGemma(config, params, eos_id=-1)  # no early stop: every row decodes new_tokens
    with tempfile.TemporaryDirectory() as tmp:
        write_hf_checkpoint(Path(tmp), config, params)
        hf = transformers.PaliGemmaForConditionalGeneration.from_pretrained(
            tmp, attn_implementation="eager", dtype=torch.float32).eval()
    rng = np.random.default_rng(0)
    size = config.image_size
    pixels = rng.uniform(-1, 1, (max(batches), size, size, 3)).astype(np.float32)
    prompt = [2, *range(10, 17), 108]
    results = {"params": modeling.count_params(params)}

    for batch in batches:
        prompts = [prompt] * batch

        def run_ours(n: int, prompts=prompts, batch=batch) -> list:
            return ours.generate(pixels[:batch], prompts, n)

        ids = torch.tensor([[config.text.vocab_size] * config.num_image_tokens + prompt] * batch)
        px = torch.tensor(pixels[:batch].transpose(0, 3, 1, 2))

        def run_hf(n: int, ids=ids, px=px) -> torch.Tensor:
            with torch.no_grad():
                return hf.generate(input_ids=ids, pixel_values=px,
                                   attention_mask=torch.ones_like(ids),
                                   token_type_ids=torch.zeros_like(ids), max_new_tokens=n,
                                   min_new_tokens=n, do_sample=False, pad_token_id=0)

        run_ours(new_tokens)  # compile
        run_ours(1)
        run_hf(2)  # warm up
        # each side's long and 1-token runs alternate, so that a slow spell of a shared machine
        # weighs on both; the best of each is kept
        t_ours, t_ours_1 = _best_pair(lambda: run_ours(new_tokens), lambda: run_ours(1), repeats)
        t_hf, t_hf_1 = _best_pair(lambda: run_hf(new_tokens), lambda: run_hf(1), repeats)
        out_ours, out_hf = run_ours(8), run_hf(8)[:, ids.shape[1]:].tolist()
        results[batch] = {
            # end to end: vision tower + prefill + decode
            "ours_tps": batch * new_tokens / t_ours,
            "hf_tps": batch * new_tokens / t_hf,
            # steady-state decode rate: the same runs minus a 1-token run (prefill, vision)
            "ours_decode_tps": batch * (new_tokens - 1) / max(t_ours - t_ours_1, 1e-9),
            "hf_decode_tps": batch * (new_tokens - 1) / max(t_hf - t_hf_1, 1e-9),
            "same_tokens": out_ours == out_hf,
        }
    results["bytes_per_token"] = decode_bytes_per_token(config)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=["tiny-10m", "tiny-65m"])
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    # Both libraries run in this process on the same allocator: jemalloc where installed
    # (RADREPORT_MALLOC=system for glibc's); see radreport/allocator.py.
    from radreport.allocator import active_allocator, reexec_with_jemalloc

    reexec_with_jemalloc()

    import jax
    import torch

    from modeling import cpu_kernels

    matmuls = ("CPU kernels (modeling/cpu_kernels.py: matmuls, attention, greedy argmax)"
               if cpu_kernels.available() else "XLA")
    print(f"jax {jax.__version__} ({jax.devices()[0].platform}), torch {torch.__version__} "
          f"threads={torch.get_num_threads()}, cpus={os.cpu_count()}, malloc {active_allocator()}, "
          f"decode loop: {matmuls} (RADREPORT_CPU_KERNELS=0: XLA)")
    header = (f"{'config':10} {'params':>7} {'batch':>5} | {'end-to-end tok/s: ours':>22} "
              f"{'hf':>7} {'ratio':>6} | {'decode tok/s: ours':>18} {'hf':>7} {'ratio':>6} "
              f"{'roofline':>8} | {'same tokens':>11}")
    print(header)
    for name in args.configs:
        res = bench_config(name, args.new_tokens, tuple(args.batches), args.repeats)
        bandwidth = copy_bandwidth()  # measured right after the runs it bounds
        bound = bandwidth / res["bytes_per_token"]
        for batch in args.batches:
            r = res[batch]
            roof = r["ours_decode_tps"] / bound if batch == 1 else float("nan")
            print(f"{name:10} {res['params'] / 1e6:6.1f}M {batch:5d} | {r['ours_tps']:22.1f} "
                  f"{r['hf_tps']:7.1f} {r['ours_tps'] / r['hf_tps']:5.2f}x | "
                  f"{r['ours_decode_tps']:18.1f} {r['hf_decode_tps']:7.1f} "
                  f"{r['ours_decode_tps'] / r['hf_decode_tps']:5.2f}x {roof:8.0%} | "
                  f"{str(r['same_tokens']):>11}")
        if 1 in res and 8 in res:
            end_to_end = res[8]["ours_tps"] / res[1]["ours_tps"]
            decode_only = res[8]["ours_decode_tps"] / res[1]["ours_decode_tps"]
            print(f"{name:10} batch 8 / batch 1 tokens/s: {end_to_end:.2f}x "
                  f"(decode only {decode_only:.2f}x); "
                  f"roofline bound {bound:.0f} tok/s = {bandwidth / 1e9:.1f} GB/s copy bandwidth / "
                  f"{res['bytes_per_token'] / 1e6:.0f} MB/token")


if __name__ == "__main__":
    main()
