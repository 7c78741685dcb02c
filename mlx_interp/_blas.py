"""Load an optimized BLAS into the process before MLX is imported (Linux CPU only).

The Linux ``mlx-cpu`` wheel bundles netlib's *reference* BLAS, which runs fp32 matmul at
about 2-8 GFLOP/s. MLX resolves ``cblas_sgemm`` dynamically, so an OpenBLAS loaded with
RTLD_GLOBAL before ``import mlx`` wins symbol resolution and runs the same matmuls at
150-240 GFLOP/s on 2 cores (PLATFORM.md; ``bench/bench_cpu.py`` measures it).
On macOS nothing happens: MLX uses Metal and Accelerate there.

Order of candidates: ``$MLX_INTERP_BLAS`` (a path to a libopenblas .so, or ``none`` to
disable), the ``ngsolve-openblas`` wheel (a plain OpenBLAS build on PyPI, pinned), Debian's
``libopenblas0-pthread``.
"""

from __future__ import annotations

import ctypes
import glob
import importlib.util
import os
import sys

STATE: dict = {"loaded": None, "reason": "not attempted"}

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
            ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
            STATE.update(loaded=path, reason="ok")
            return
        except OSError as e:  # a broken candidate: try the next one
            errors.append(f"{path}: {e}")
    STATE["reason"] = "no OpenBLAS found" + (f" ({'; '.join(errors)})" if errors else "")


def notice() -> str | None:
    """A one-line notice when the fast BLAS is missing on Linux, else None."""
    if STATE["loaded"] or not sys.platform.startswith("linux"):
        return None
    return (
        f"mlx-interp: fast BLAS not loaded ({STATE['reason']}); fp32 matmul on the CPU "
        "will be ~30x slower. Fix: pip install ngsolve-openblas==0.3.33, or set "
        "MLX_INTERP_BLAS=/path/to/libopenblas.so.0, and import mlx_interp before mlx."
    )
