"""The CPU decode loop's kernels: C++ XLA FFI custom calls, compiled on first use.

`matmul`: at decode time every weight matrix meets a handful of rows (one per sequence).
XLA:CPU gives those matmuls to YNNPACK, which repacks the weight matrix on every call; at 8 rows
the repacking costs as much as the multiply and the decode step takes ~2x the time of a 1-row
step (bench/generate.py). The kernel reads weights that `pack` laid out once per model, outside
the decode loop, as contiguous column panels, and multiplies all rows in one pass over them.

`attention`: the decode step's attention of one new token per row against its KV cache, fused
(scores, soft-cap, mask, softmax, values) in one pass per (row, kv head) that reads only the
visible cache slots; XLA runs it as two YNNPACK batched matmuls that pack the cache on every
call, with the elementwise passes between them.

`greedy_argmax`: greedy decoding's next token in one pass over the logits (XLA takes three: a
max, a compare-select and a min).

`bf16_matmul`, `bf16_take`, `bf16_matmul_t` and `bf16_gather`: the decode loop over bfloat16 parameters (`generate`) without
the float32 copy of every weight XLA:CPU would otherwise keep (see `take_f32`).

All of them live in `kernels/decode.cc`.

The kernel is compiled for this machine (`-march=native`) by the C++ compiler (`$CXX`, else
`g++`/`c++`/`clang++`) against the XLA FFI headers that jaxlib ships, into
`$RADREPORT_KERNEL_CACHE` (default `~/.cache/radreport/kernels`), keyed by the source, the
compiler flags, jaxlib's version and this CPU's feature flags; `make setup` builds it once
(`python -m modeling.cpu_kernels`). Where it cannot be built (no compiler, a failed build,
not Linux or macOS) or `RADREPORT_CPU_KERNELS=0`, `available()` says why in the log once and
generation keeps XLA's matmuls: same results to float32 rounding, slower at batch > 1.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("kernels") / "decode.cc"
MATMUL_TARGET = "radreport_panel_matmul"
ATTENTION_TARGET = "radreport_decode_attention"
ARGMAX_TARGET = "radreport_greedy_argmax"
TAKE_TARGET = "radreport_bf16_take"
MATMUL_T_TARGET = "radreport_bf16_matmul_t"
GATHER_TARGET = "radreport_bf16_gather"
BF16_MATMUL_TARGET = "radreport_bf16_matmul"
ENV_SWITCH = "RADREPORT_CPU_KERNELS"  # "0" keeps XLA's ops in the decode loop
ENV_CACHE = "RADREPORT_KERNEL_CACHE"
FLAGS = ("-O3", "-march=native", "-std=c++17", "-shared", "-fPIC", "-w")


class KernelBuildError(RuntimeError):
    """The kernel could not be compiled or loaded here (the message says why)."""


def _compiler() -> str | None:
    for name in (os.environ.get("CXX"), "g++", "c++", "clang++"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def _cpu_signature() -> str:
    """This CPU's model and feature flags (what -march=native compiles for)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine()
    keep = [line for line in text.splitlines()
            if line.split(":")[0].strip() in ("flags", "Features", "model name", "CPU part")]
    return "\n".join(sorted(set(keep)))


def library_path(compiler: str) -> Path:
    """Where the kernel built by `compiler` for this machine is cached."""
    import jaxlib

    key = hashlib.sha256()
    for part in (SOURCE.read_bytes(), " ".join(FLAGS).encode(), compiler.encode(),
                 jaxlib.__version__.encode(), _cpu_signature().encode()):
        key.update(part)
        key.update(b"\0")
    root = Path(os.environ.get(ENV_CACHE) or Path.home() / ".cache" / "radreport" / "kernels")
    return root / f"decode-{key.hexdigest()[:16]}.so"


def build(force: bool = False) -> Path:
    """Compile the kernel (unless cached) and return the shared library's path."""
    if not sys.platform.startswith(("linux", "darwin")):
        raise KernelBuildError(f"no kernel build on {sys.platform}")
    compiler = _compiler()
    if compiler is None:
        raise KernelBuildError("no C++ compiler found (set CXX, or install g++)")
    path = library_path(compiler)
    if path.is_file() and not force:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    # Concurrent workers each build into their own file; the rename is atomic.
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=path.parent)
    os.close(fd)
    command = [compiler, *FLAGS, f"-I{jax.ffi.include_dir()}", str(SOURCE), "-o", tmp]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            raise KernelBuildError(f"{Path(compiler).name} failed (exit {done.returncode}): "
                                   f"{done.stderr.strip()[-2000:]}")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


@dataclass(frozen=True)
class Kernel:
    path: Path
    width: int  # panel width W of `pack`'s layout


@functools.cache
def load() -> Kernel:
    """Build (or find) the kernel and register it with XLA for the CPU platform, once."""
    path = build()
    try:
        lib = ctypes.cdll.LoadLibrary(str(path))
    except OSError as e:
        raise KernelBuildError(f"cannot load {path}: {e}") from e
    lib.panel_width.restype = ctypes.c_int64
    for target, symbol in ((MATMUL_TARGET, lib.panel_matmul),
                           (ATTENTION_TARGET, lib.decode_attention),
                           (ARGMAX_TARGET, lib.greedy_argmax),
                           (TAKE_TARGET, lib.bf16_take),
                           (MATMUL_T_TARGET, lib.bf16_matmul_t),
                           (GATHER_TARGET, lib.bf16_gather),
                           (BF16_MATMUL_TARGET, lib.bf16_matmul)):
        jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(symbol), platform="cpu")
    return Kernel(path, int(lib.panel_width()))


@functools.cache
def available() -> bool:
    """Whether generation on this (CPU) backend uses the kernel; logs the reason once if not."""
    if os.environ.get(ENV_SWITCH, "1") == "0":
        log.info("CPU decode kernel switched off (%s=0): XLA matmuls", ENV_SWITCH)
        return False
    if jax.default_backend() != "cpu":
        return False
    try:
        kernel = load()
    except (KernelBuildError, OSError, subprocess.SubprocessError) as e:
        log.warning("CPU decode kernel unavailable, decoding with XLA matmuls: %s", e)
        return False
    log.info("CPU decode kernel: %s (panel width %d)", kernel.path, kernel.width)
    return True


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class Panels:
    """A [K, N] float32 matrix as column panels [P, K, W] (zero-padded to P * W columns)."""

    data: jax.Array
    n: int = field(metadata={"static": True})


def pack(w: jax.Array) -> Panels:
    """[K, N] float32 -> `Panels` for `matmul` (a copy; do it outside the decode loop)."""
    width = load().width
    k, n = w.shape
    p = -(-n // width)
    padded = jnp.pad(w.astype(jnp.float32), ((0, 0), (0, p * width - n)))
    return Panels(padded.reshape(k, p, width).transpose(1, 0, 2), n)


def matmul(x: jax.Array, w: Panels) -> jax.Array:
    """x [M, K] float32 @ the packed [K, N] matrix -> [M, N] float32."""
    y = jax.ffi.ffi_call(MATMUL_TARGET, jax.ShapeDtypeStruct((x.shape[0], w.n), jnp.float32))
    return y(x.astype(jnp.float32), w.data)


ATTENTION_MAX_GROUP = 8  # query heads per kv head (kMaxGroup in decode.cc)


def attention_fits(q: jax.Array, cache: jax.Array) -> bool:
    """Whether `attention` takes these shapes and dtypes: q [B, K, G, H] float32 (compute) with
    G <= 8, and a float32 cache (a bfloat16 cache stays with XLA)."""
    return (q.dtype == jnp.float32 and cache.dtype == jnp.float32
            and q.shape[2] <= ATTENTION_MAX_GROUP)


def attention(q: jax.Array, k: jax.Array, v: jax.Array, visible: jax.Array, *, scale: float,
              softcap: float | None, mask_value: float) -> jax.Array:
    """One decode step's attention: q [B, K, G, H] (G query heads per kv head) against the
    cache k, v [B, K, R, H], all float32, visible [B, R] bool -> [B, K, G, H] float32.

    scores = (q . k) * scale, then softcap * tanh(scores / softcap) (None: no cap), mask_value
    where not visible, softmax over R, @ v: the same as XLA's, to float32 rounding (the kernel's
    exp and tanh are polynomial approximations within ~4e-7). G <= 8.
    """
    load()  # registers the target (cached)
    out = jax.ffi.ffi_call(ATTENTION_TARGET, jax.ShapeDtypeStruct(q.shape, jnp.float32))
    return out(q.astype(jnp.float32), k.astype(jnp.float32), v.astype(jnp.float32),
               visible.astype(jnp.bool_), scale=np.float32(scale),
               softcap=np.float32(softcap or 0.0), mask_value=np.float32(mask_value))


def greedy_argmax(logits: jax.Array) -> jax.Array:
    """int32 [B]: each row's first largest value of logits [B, V] (V - 1 for a row holding a
    NaN), in one pass: `generate.greedy_token`'s result."""
    load()
    out = jax.ffi.ffi_call(ARGMAX_TARGET, jax.ShapeDtypeStruct(logits.shape[:1], jnp.int32))
    return out(logits.astype(jnp.float32))


def take_f32(w: jax.Array, index: int, after: jax.Array) -> jax.Array:
    """w[index] of a bfloat16 array, widened to float32 in a fresh buffer, computed after
    `after` (any array: its only role is to order the copy inside the program).

    XLA:CPU converts a bfloat16 operand whole to float32 before it slices it or multiplies a few
    rows by it, and in a loop it hoists that conversion of a loop-invariant weight out of the
    loop: a float32 copy of every layer, alive for the whole loop. Taking each layer with this
    kernel, after the activations it will multiply, keeps one layer's float32 copy at a time.
    """
    load()
    rest = w.shape[1:]
    offset = index * int(np.prod(rest, dtype=np.int64))
    out = jax.ffi.ffi_call(TAKE_TARGET, jax.ShapeDtypeStruct(rest, jnp.float32))
    return out(w, after, offset=np.int64(offset))


def matmul_t_bf16(x: jax.Array, table: jax.Array) -> jax.Array:
    """x [M, K] float32 @ table.T for a bfloat16 table [V, K] -> [M, V] float32, reading the
    table as it is (no float32 copy of it; see `take_f32`)."""
    load()
    out = jax.ffi.ffi_call(MATMUL_T_TARGET,
                           jax.ShapeDtypeStruct((x.shape[0], table.shape[0]), jnp.float32))
    return out(x.astype(jnp.float32), table)


@dataclass(frozen=True)
class Bf16Block:
    """`groups` matrices [K, cols] of a bfloat16 array, stored one after the other from layer
    `index` of its leading axis (e.g. a layer's q projection [N, D, H] of the stacked
    `q_einsum` [L, N, D, H]: groups N, cols H). Built while tracing, never passed to `jit`."""

    array: jax.Array
    index: int
    groups: int
    cols: int


def matmul_bf16(x: jax.Array, w: Bf16Block) -> jax.Array:
    """x [M, K] @ each of the block's matrices, concatenated -> [M, groups * cols] float32,
    reading the bfloat16 weights in place (no copy of them; see `take_f32`)."""
    load()
    offset = w.index * int(np.prod(w.array.shape[1:], dtype=np.int64))
    out = jax.ffi.ffi_call(BF16_MATMUL_TARGET,
                           jax.ShapeDtypeStruct((x.shape[0], w.groups * w.cols), jnp.float32))
    return out(x.astype(jnp.float32), w.array, offset=np.int64(offset),
               groups=np.int64(w.groups), cols=np.int64(w.cols))


def gather_bf16(table: jax.Array, ids: jax.Array) -> jax.Array:
    """table[ids] for a bfloat16 table [V, D] and int ids [...] -> [..., D] float32 (exact: every
    bfloat16 is a float32), reading only those rows (see `take_f32`); ids are clipped to the
    table like `jnp.take(..., mode="clip")`."""
    load()
    flat = ids.reshape(-1).astype(jnp.int32)
    out = jax.ffi.ffi_call(GATHER_TARGET,
                           jax.ShapeDtypeStruct((flat.shape[0], table.shape[1]), jnp.float32))
    return out(table, flat).reshape(*ids.shape, table.shape[1])


def main() -> None:
    """`python -m modeling.cpu_kernels`: build the kernel now (make setup), say where or why not."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        kernel = load()
    except KernelBuildError as e:
        print(f"CPU decode kernel not built ({e}); generation will use XLA's matmuls")
        return
    print(f"CPU decode kernel: {kernel.path} (panel width {kernel.width})")


if __name__ == "__main__":
    main()
