#!/usr/bin/env bash
# The GPU check in one go, from a bare machine: a virtual environment with jax[cuda12], torch,
# transformers and this project, a random 3B-224 checkpoint written by transformers, then
# bench/gpu_check.py (generate at batch 1 and 8 and one train step, ours next to transformers on
# the same GPU, ratios printed). Output also goes to $GPU_CHECK_OUT/gpu_check.log.
#
#   bench/gpu_check.sh                          # on the GPU machine (installs, ~10 GB download)
#   GPU_CHECK_TINY=1 GPU_CHECK_PYTHON=.venv/bin/python bench/gpu_check.sh   # any CPU, tiny preset
#
# GPU_CHECK_PYTHON: an interpreter that already has everything (skips the installation).
# GPU_CHECK_VENV (default .venv-gpu), GPU_CHECK_DIR (checkpoint, default var/gpu-check/ckpt),
# GPU_CHECK_OUT (default $OUT or var/gpu-check), GPU_CHECK_NEW_TOKENS (default 32).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TINY="${GPU_CHECK_TINY:-0}"
VENV="${GPU_CHECK_VENV:-$ROOT/.venv-gpu}"
OUT_DIR="${GPU_CHECK_OUT:-${OUT:-$ROOT/var/gpu-check}}"
NEW_TOKENS="${GPU_CHECK_NEW_TOKENS:-32}"
if [ "$TINY" = 1 ]; then
  CKPT="${GPU_CHECK_DIR:-$ROOT/var/gpu-check/ckpt-tiny}"
  ARGS=(--tiny --new-tokens 4 --train-batch 2 --train-length 16 --train-steps 1)
else
  CKPT="${GPU_CHECK_DIR:-$ROOT/var/gpu-check/ckpt}"
  ARGS=(--new-tokens "$NEW_TOKENS")
fi

if [ -n "${GPU_CHECK_PYTHON:-}" ]; then
  PY="$GPU_CHECK_PYTHON"
else
  if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
  fi
  PY="$VENV/bin/python"
  if [ ! -f "$VENV/.gpu-check-installed" ]; then
    "$PY" -m pip install -q --upgrade pip
    if [ "$TINY" = 1 ]; then
      "$PY" -m pip install -q "$ROOT" "torch==2.13.0" "transformers>=4.50,<6"
    else
      "$PY" -m pip install -q "jax[cuda12]>=0.7,<0.11" "$ROOT" "torch==2.13.0" \
        "transformers>=4.50,<6"
    fi
    touch "$VENV/.gpu-check-installed"
  fi
fi

mkdir -p "$OUT_DIR"
cd "$ROOT"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total --format=csv || true
PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" "$PY" bench/gpu_check.py --dir "$CKPT" "${ARGS[@]}" \
  2>&1 | tee "$OUT_DIR/gpu_check.log"
