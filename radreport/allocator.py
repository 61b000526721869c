"""jemalloc for the processes that run XLA on the CPU.

XLA's CPU runtime allocates each execution's temporaries as one block (hundreds of MB for the
`demo` preset's train step). glibc's malloc serves blocks over 32 MiB with `mmap` and unmaps
them on `free`, so every train step, and every batched `generate` call, faults that block in
again, page by page, and spends a large share of the step in the kernel. glibc's own knobs do
not fix it without harm (its per-thread arenas must map large blocks; a single arena slows the
batched decode loop through lock contention). jemalloc that never purges (`dirty_decay_ms:-1`)
keeps freed blocks for reuse, so the faults disappear; docs/training.md ("Train-step speed",
item 3) has the measurements. The price, as with any caching allocator: the process keeps its
peak memory until it exits.

`radreport` (and the bench scripts) re-execute themselves with jemalloc preloaded when the
library is installed (Debian: `libjemalloc2`, which `redis-server` pulls in); child processes
(Celery workers, the API) inherit it. `RADREPORT_MALLOC=system` keeps the system allocator.
"""

from __future__ import annotations

import ctypes.util
import os
import sys
from collections.abc import Mapping
from pathlib import Path

# Freed pages stay with the process. Any finite decay (tried: 10 s, 60 s) had jemalloc purge the
# large blocks between steps, so every step faulted them in again as with glibc.
MALLOC_CONF = "dirty_decay_ms:-1,muzzy_decay_ms:-1"
ENV_SWITCH = "RADREPORT_MALLOC"  # "jemalloc" (default) or "system"
_CANDIDATES = (
    "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2",
    "/usr/lib/aarch64-linux-gnu/libjemalloc.so.2",
    "/usr/lib64/libjemalloc.so.2",
    "/usr/local/lib/libjemalloc.so.2",
    "/usr/lib/libjemalloc.so.2",
)


def find_jemalloc() -> str | None:
    """Path of an installed jemalloc shared library, or None."""
    for path in _CANDIDATES:
        if Path(path).is_file():
            return path
    found = ctypes.util.find_library("jemalloc")
    return found if found and Path(found).is_absolute() and Path(found).is_file() else None


def jemalloc_env(env: Mapping[str, str]) -> dict[str, str] | None:
    """`env` with jemalloc preloaded, or None when there is nothing to change: not Linux,
    switched off (`RADREPORT_MALLOC=system`), already preloaded, or jemalloc not installed."""
    if not sys.platform.startswith("linux") or env.get(ENV_SWITCH, "jemalloc") == "system":
        return None
    preload = env.get("LD_PRELOAD", "")
    if "jemalloc" in preload:
        return None
    library = find_jemalloc()
    if library is None:
        return None
    new = dict(env)
    new["LD_PRELOAD"] = f"{library} {preload}".strip()
    new.setdefault("MALLOC_CONF", MALLOC_CONF)
    return new


def active_allocator() -> str:
    """"jemalloc" when it is mapped into this process, else "system"."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return "system"
    return "jemalloc" if "libjemalloc" in maps else "system"


def reexec_with_jemalloc() -> None:
    """Replace this process by the same command line with jemalloc preloaded, when
    `jemalloc_env` has a change to make; otherwise return. Call it first thing in an entry
    point, before threads or heavy imports."""
    env = jemalloc_env(os.environ)
    if env is None:
        return
    # sys.orig_argv keeps the interpreter's own options (-m radreport, -c code, -X ...).
    argv = [sys.executable, *sys.orig_argv[1:]]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, argv, env)
