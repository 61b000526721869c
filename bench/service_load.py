"""Service load benchmark on loopback: upload latency, studies/min to draft_ready, queue wait
against compute.

Runs the real system (private Redis, SQLite, API, ingest/score worker, generate workers) three
times on synthetic studies from `radreport synth`:
  A. 1 generate worker, batching on (BATCH_SIZE=4)
  B. 2 generate workers, batching on
  C. 1 generate worker, batching off (BATCH_SIZE=1)   -> the batching gain is A / C
and prints upload latency percentiles (concurrent clients), throughput, and per-study
queue wait against generate compute. A random-weight bundle of `--preset` is built unless
`--bundle` is given; numbers are for this machine's CPUs, not an accelerator.

    python bench/service_load.py --studies 32 --clients 8
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
from rich.console import Console
from rich.table import Table

from service.auth.api_keys import create_api_key
from service.core.db import session_scope
from service.core.models import Role
from service.dev.demo import find_studies
from service.dev.system import LocalSystem, wait_for

console = Console()


def build_bundle(out: Path, preset: str, max_new_tokens: int) -> Path:
    """A random-weight bundle of a preset with a small tokenizer (weights do not change timings)."""
    import jax

    import modeling
    from modeling.bundle import save_bundle
    from modeling.tokenizer import train_tokenizer

    if (out / "bundle" / "config.json").exists():
        return out / "bundle"
    config = modeling.PRESETS[preset]
    texts = ["FINDINGS: The lungs are clear. No pleural effusion. "
             "IMPRESSION: No acute process."] * 50
    tokenizer = train_tokenizer(texts, out / "tokenizer.model",
                                vocab_size=min(300, config.text.vocab_size))
    rng = np.random.default_rng(0)

    def random_leaf(leaf) -> np.ndarray:
        return (rng.standard_normal(leaf.shape) * 0.02).astype(np.float32)

    params = jax.tree_util.tree_map(random_leaf, modeling.abstract_params(config))
    return save_bundle(out / "bundle", config, params, tokenizer,
                       metadata={"source": "bench random init"},
                       generation={"max_new_tokens": max_new_tokens}, prompt="describe findings")


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def mean(values: list[float]) -> float:
    return statistics.fmean(values) if values else float("nan")


def run_config(workdir: Path, bundle: Path, studies: list[list[Path]], *, generate_workers: int,
               batch_size: int, clients: int, jax_cache: Path) -> dict:
    """One system run: concurrent uploads, then wait for every draft; returns the measurements."""
    env = {"BATCH_SIZE": str(batch_size), "BATCH_WAIT_MS": "200", "WORKER_CONCURRENCY": "2",
           "JAX_CACHE_DIR": str(jax_cache), "RECONCILE_INTERVAL_S": "10", "LOG_LEVEL": "WARNING"}
    system = LocalSystem(workdir, model_bundle=bundle, env=env, redis_url="")
    try:
        system.start(workers=["ingest,score"] + ["generate"] * generate_workers)
        system.wait_workers_ready(timeout=900)
        with session_scope(system.database_url) as session:
            uploader = create_api_key(session, name="bench-uploader", role=Role.uploader)
            admin = create_api_key(session, name="bench-admin", role=Role.admin)
        payloads = [[(f.name, f.read_bytes()) for f in files] for files in studies]

        def upload(files: list[tuple[str, bytes]]) -> tuple[float, str]:
            with httpx.Client(base_url=system.api_url,
                              headers={"Authorization": f"Bearer {uploader}"},
                              timeout=120) as client:
                started = time.perf_counter()
                parts = [("files", (n, d, "application/dicom")) for n, d in files]
                response = client.post("/v1/studies", files=parts)
                elapsed = time.perf_counter() - started
                response.raise_for_status()
                return elapsed, response.json()["study_id"]

        started = time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:
            results = list(pool.map(upload, payloads))
        upload_wall = time.perf_counter() - started
        latencies = [r[0] for r in results]
        ids = [r[1] for r in results]
        with httpx.Client(base_url=system.api_url, headers={"Authorization": f"Bearer {admin}"},
                          timeout=60) as client:
            def all_done() -> bool:
                states = [client.get(f"/v1/studies/{i}").json()["state"] for i in ids]
                return all(s in ("draft_ready", "failed") for s in states)

            wait_for(all_done, 1800, interval=0.5, what="all drafts")
            finished = time.perf_counter() - started
            statuses = [client.get(f"/v1/studies/{i}").json() for i in ids]
        drafted = [s for s in statuses if s["state"] == "draft_ready"]
        timings = [s["timings"] for s in drafted]
        return {
            "generate_workers": generate_workers, "batch_size": batch_size, "studies": len(ids),
            "drafted": len(drafted), "failed": len(ids) - len(drafted),
            "upload_p50_ms": 1000 * percentile(latencies, 50),
            "upload_p95_ms": 1000 * percentile(latencies, 95),
            "upload_p99_ms": 1000 * percentile(latencies, 99),
            "uploads_per_s": len(ids) / upload_wall,
            "studies_per_min": 60 * len(drafted) / finished, "wall_s": finished,
            "total_p50_s": percentile([t["total_s"] for t in timings], 50),
            "generate_wait_p50_s": percentile([t["generate_wait_s"] for t in timings], 50),
            "generate_wait_mean_s": mean([t["generate_wait_s"] for t in timings]),
            "compute_per_call_mean_s": mean([t["generate_compute_s"] for t in timings]),
            "compute_per_study_mean_s": mean(
                [t["generate_compute_s"] / t["generate_batch_size"] for t in timings]
            ),
            "mean_batch": mean([t["generate_batch_size"] for t in timings]),
        }
    finally:
        system.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--studies", type=int, default=32)
    parser.add_argument("--clients", type=int, default=8, help="concurrent upload clients")
    parser.add_argument("--preset", default="tiny-10m")
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--bundle", type=Path, default=None)
    parser.add_argument("--workdir", type=Path, default=Path("var/bench/service_load"))
    parser.add_argument("--out", type=Path, default=Path("var/bench/service_load.json"))
    args = parser.parse_args()

    workdir = args.workdir.resolve()
    data = workdir / "synth"
    if not find_studies(data, args.studies) or len(find_studies(data, args.studies)) < args.studies:
        console.print(f"writing {args.studies} synthetic studies")
        subprocess.run([sys.executable, "-m", "radreport", "synth", "--out", str(data),
                        "--studies", str(args.studies), "--seed", "7"], check=True)
    studies = find_studies(data, args.studies)
    bundle = args.bundle or build_bundle(workdir / f"bundle-{args.preset}", args.preset,
                                         args.max_new_tokens)
    configs = [("A: 1 worker, batch 4", 1, 4), ("B: 2 workers, batch 4", 2, 4),
               ("C: 1 worker, batch 1", 1, 1)]
    results = {}
    for label, workers, batch in configs:
        console.rule(label)
        results[label] = run_config(workdir / f"run-{workers}w-b{batch}", bundle, studies,
                                    generate_workers=workers, batch_size=batch,
                                    clients=args.clients, jax_cache=workdir / "jax-cache")
        console.print(results[label])
    table = Table(title=f"service load: {len(studies)} studies, {args.clients} clients, "
                        f"preset {args.preset}")
    keys = ["upload_p50_ms", "upload_p95_ms", "upload_p99_ms", "studies_per_min",
            "generate_wait_mean_s", "compute_per_call_mean_s", "compute_per_study_mean_s",
            "mean_batch", "failed"]
    table.add_column("metric")
    for label in results:
        table.add_column(label, justify="right")
    for key in keys:
        table.add_row(key, *[f"{results[label][key]:.3g}" for label in results])
    console.print(table)
    a, b, c = (results[label] for label, _, _ in configs)
    workers_gain = b["studies_per_min"] / a["studies_per_min"]
    batching_gain = a["studies_per_min"] / c["studies_per_min"]
    compute_saving = c["compute_per_study_mean_s"] / a["compute_per_study_mean_s"]
    console.print(f"2 workers vs 1: {workers_gain:.2f}x studies/min; "
                  f"batching vs none: {batching_gain:.2f}x studies/min, "
                  f"{compute_saving:.2f}x less compute per study")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    summary = {"preset": args.preset, "clients": args.clients, "results": results}
    args.out.write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
