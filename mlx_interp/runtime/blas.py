"""Load an optimized BLAS into the process before MLX is imported (Linux CPU only).

The Linux ``mlx-cpu`` wheel bundles netlib's *reference* BLAS, which runs fp32 matmul at
about 2-8 GFLOP/s. MLX resolves ``cblas_sgemm`` dynamically, so an OpenBLAS loaded with
RTLD_GLOBAL before ``import mlx`` wins symbol resolution and runs the same matmuls at
150-240 GFLOP/s on 2 cores (PLATFORM.md; ``bench/bench_cpu.py`` measures it).
On macOS nothing happens: MLX uses Metal and Accelerate there.

Order of candidates: ``$MLX_INTERP_BLAS`` (a path to a libopenblas .so, or ``none`` to
disable), the ``ngsolve-openblas`` wheel (a plain OpenBLAS build on PyPI, pinned), Debian's
``libopenblas0-pthread``.

Thread count, chosen once when the library loads (``threads``): OpenBLAS's worker threads
spin-wait for work, so when the cores are oversubscribed a forward pass collapses (measured on
2 cores: SmolLM2 8 x 128 tokens, 2.2 s alone; 7-43 s beside a second such process with 2
threads each, a steady 5 s with one thread each). We therefore use the cores this process
may run on (its CPU affinity) minus the cores other processes keep busy at that moment
(runnable tasks in /proc/stat that are not our own threads), at least 1; the ranks of one ``mlx.launch`` run
on this host split the cores between them instead (they start together, so none would see the others busy yet).
``$MLX_INTERP_THREADS``
(or ``$OPENBLAS_NUM_THREADS``) overrides it. The count is fixed for the process: changing it
later would change matmul rounding (about 1e-4 on Qwen logits) between two passes of one run.
"""

from __future__ import annotations

import ctypes
import glob
import importlib.util
import os
import sys

STATE: dict = {"loaded": None, "reason": "not attempted", "threads": None, "threads_reason": "BLAS not loaded"}

_DEBIAN = [
    "/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0",
    "/usr/lib/aarch64-linux-gnu/openblas-pthread/libopenblas.so.0",
    "/usr/lib/x86_64-linux-gnu/libopenblas.so.0",
]


def _wheel_candidates() -> list[str]:
    spec = importlib.util.find_spec("ngsolve_openblas")
    if spec is None or not spec.submodule_search_locations:
        return []
    d = list(spec.submodule_search_locations)[0]
    return sorted(glob.glob(os.path.join(d, "libopenblas*.so*")))


def _candidates() -> list[str]:
    env = os.environ.get("MLX_INTERP_BLAS")
    if env:
        return [] if env.lower() == "none" else [env]
    return _wheel_candidates() + [p for p in _DEBIAN if os.path.exists(p)]


def preload() -> None:
    """Try to load OpenBLAS globally; record what happened in ``STATE``. Never raises."""
    if STATE["reason"] != "not attempted":
        return
    if not sys.platform.startswith("linux"):
        STATE["reason"] = "not Linux (MLX uses Metal/Accelerate)"
        return
    if "mlx.core" in sys.modules:
        STATE["reason"] = "mlx was imported before mlx_interp; import mlx_interp first"
        return
    if os.environ.get("MLX_INTERP_BLAS", "").lower() == "none":
        STATE["reason"] = "disabled by MLX_INTERP_BLAS=none"
        return
    errors = []
    for path in _candidates():
        try:
            d = os.path.dirname(path)
            for dep in glob.glob(os.path.join(d, "libgfortran*.so*")):
                ctypes.CDLL(dep, mode=ctypes.RTLD_GLOBAL)
            n, why = choose_threads()
            lib = ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
            _set_threads(lib, n)
            STATE.update(loaded=path, reason="ok", threads=n, threads_reason=why)
            return
        except OSError as e:  # a broken candidate: try the next one
            errors.append(f"{path}: {e}")
    STATE["reason"] = "no OpenBLAS found" + (f" ({'; '.join(errors)})" if errors else "")


def _busy_other_cores(samples: int = 5, interval: float = 0.01) -> int:
    """Runnable tasks of other processes right now (median of a few samples of /proc/stat)."""
    import time

    counts = []
    for _ in range(samples):
        try:
            with open("/proc/stat") as f:
                running = next(int(x.split()[1]) for x in f if x.startswith("procs_running"))
            own = 0
            for t in os.listdir("/proc/self/task"):
                try:
                    with open(f"/proc/self/task/{t}/stat") as f:
                        own += f.read().rsplit(")", 1)[1].split()[0] == "R"
                except OSError:
                    pass
        except (OSError, StopIteration, ValueError):
            return 0
        counts.append(max(0, running - own))
        time.sleep(interval)
    return sorted(counts)[len(counts) // 2]


def choose_threads() -> tuple[int, str]:
    """(BLAS threads, why): the override if set, else free cores of this process's affinity."""
    for var in ("MLX_INTERP_THREADS", "OPENBLAS_NUM_THREADS"):
        v = os.environ.get(var, "").strip()
        if v:
            try:
                n = int(v)
            except ValueError:
                n = 0
            if n >= 1:
                return n, f"${var}={n}"
            print(f"mlx-interp: ignoring ${var}={v!r} (want an integer >= 1)", file=sys.stderr)
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    local = local_ranks()
    if local > 1:  # several ranks of one data-parallel run on this host start at once: share the cores, don't race
        n = max(1, cores // local)
        return n, f"{cores} cores in this process's affinity shared by {local} ranks on this host (mlx.launch)"
    busy = _busy_other_cores()
    n = max(1, cores - busy)
    return n, f"{cores} cores in this process's affinity, {busy} busy with other processes at start"


def local_ranks() -> int:
    """How many ranks of an ``mlx.launch`` ring run sit on this host (read from its hostfile before mlx starts); 1
    outside such a run. Ranks on loopback or on one of this host's addresses count as local."""
    import json
    import socket

    if "OMPI_COMM_WORLD_LOCAL_SIZE" in os.environ:  # mpirun says it directly
        try:
            return max(1, int(os.environ["OMPI_COMM_WORLD_LOCAL_SIZE"]))
        except ValueError:
            return 1
    if "MLX_RANK" not in os.environ or not os.environ.get("MLX_HOSTFILE"):
        return 1
    try:
        with open(os.environ["MLX_HOSTFILE"]) as f:
            text = f.read().strip()
        hosts = json.loads(text) if text else []
        mine = {"127.0.0.1", "localhost"}
        try:
            mine |= set(socket.gethostbyname_ex(socket.gethostname())[2])
        except OSError:
            pass
        return max(1, sum(1 for node in hosts if node and str(node[0]).rsplit(":", 1)[0] in mine))
    except (OSError, ValueError, TypeError, IndexError):
        return 1


def _set_threads(lib, n: int) -> None:
    try:
        lib.openblas_set_num_threads(ctypes.c_int(n))
    except AttributeError:  # a BLAS without OpenBLAS's thread API: it reads the environment only
        pass


def notice() -> str | None:
    """A one-line notice when the fast BLAS is missing on Linux, else None."""
    if STATE["loaded"] or not sys.platform.startswith("linux"):
        return None
    return (
        f"mlx-interp: fast BLAS not loaded ({STATE['reason']}); fp32 matmul on the CPU "
        "will be ~30x slower. Fix: pip install ngsolve-openblas==0.3.33, or set "
        "MLX_INTERP_BLAS=/path/to/libopenblas.so.0, and import mlx_interp before mlx."
    )
