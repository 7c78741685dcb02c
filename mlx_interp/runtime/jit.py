"""Let MLX's CPU JIT compile its fused elementwise kernels for this CPU (Linux x86-64 only).

On the CPU, MLX compiles every ``mx.compile``d function (mlx-lm's ``swiglu``, ``gelu_approx``, ...) at first use by
running ``g++ -O3`` on generated C++ (``mlx/backend/cpu/jit_compiler.cpp``). The portable wheel is built for baseline
x86-64, so that command carries no ``-m`` flags, and MLX's scalar ``simd::fma`` (six per ``exp``) becomes a call into
libm's ``fmaf``: mlx-lm's swiglu runs at ~20 ns per element here. MLX itself adds ``-mavx2 -mfma -mf16c`` to that
command when it was built with AVX2; we add the same flags when the CPU has them, and ``-ffp-contract=off``. The
numbers do not change: a fused multiply-add is rounded once whether libm or the instruction computes it, and with
contraction off g++ fuses no other ``a * b + c`` (without it, Gemma's compiled gelu moved logits by 4e-5). Tested bit
for bit on whole-model logits; ``bench/bench_elementwise.py`` measures the speed.

How: a ``g++`` placed first on PATH adds the flags only when its output lies in this module's kernel folder (every
other compile in this process or its children is passed through untouched), and MLX's C++ side is given that folder as
``$TMPDIR`` (MLX caches kernels by name under ``$TMPDIR/mlx/<version>/cpu``; kernels compiled before without the flags
would otherwise be reused). Python's ``tempfile`` keeps the original temporary folder.

``$MLX_INTERP_JIT_FLAGS`` overrides the flags (``none`` turns this off). ``STATE`` says what happened
(``mlx-interp info``, every result's provenance).
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import sys
import tempfile

STATE: dict = {"flags": None, "reason": "not attempted", "kernels": None}

MLX_AVX2_FLAGS = ("-mavx2", "-mfma", "-mf16c")  # what jit_compiler.cpp adds in an AVX2 build of MLX
NO_CONTRACTION = "-ffp-contract=off"  # g++ would otherwise fuse a * b + c in C++ (Gemma's gelu moved 4e-5)
_CPU_FLAGS = {"-mavx2": "avx2", "-mfma": "fma", "-mf16c": "f16c"}
_PREFIX = "mlx-interp-jit-"


def _cpu_has(flags: tuple[str, ...]) -> bool:
    try:
        with open("/proc/cpuinfo") as f:
            have = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return False
    return all(_CPU_FLAGS[flag] in have for flag in flags)


def wrapper_script(compiler: str, flags: str, folder: str) -> str:
    """A ``g++`` that adds ``flags`` when an argument lies in ``folder`` (MLX's kernel compiles) and is ``compiler``
    untouched otherwise."""
    return (f'#!/bin/sh\n# mlx-interp: MLX JIT kernels in {folder} get {flags} (mlx_interp/runtime/jit.py)\n'
            f'for a in "$@"; do case "$a" in *"{folder}"*) exec "{compiler}" {flags} "$@";; esac; done\n'
            f'exec "{compiler}" "$@"\n')


def configure() -> None:
    """Point MLX's CPU JIT at a ``g++`` with this CPU's flags and a kernel folder of its own. Raises only on flags
    ``$MLX_INTERP_JIT_FLAGS`` names that g++ rejects."""
    if STATE["reason"] != "not attempted":
        return
    env = os.environ.get("MLX_INTERP_JIT_FLAGS")
    if env is not None and env.strip().lower() in ("none", ""):
        STATE["reason"] = "disabled by MLX_INTERP_JIT_FLAGS=none"
        return
    if not sys.platform.startswith("linux") or platform.machine() not in ("x86_64", "AMD64"):
        STATE["reason"] = "not Linux x86-64 (MLX builds its own SIMD paths elsewhere)"
        return
    compiler = shutil.which("g++")
    if compiler is None:
        STATE["reason"] = "no g++ on PATH (MLX's CPU JIT is off without it)"
        return
    if env is not None:
        flags = env.split()
        _check_flags(compiler if not _is_wrapper(compiler) else _real_compiler(compiler), flags)
    elif _cpu_has(MLX_AVX2_FLAGS):
        flags = [*MLX_AVX2_FLAGS, NO_CONTRACTION]
    else:
        STATE["reason"] = "this CPU lacks avx2/fma/f16c"
        return
    if _is_wrapper(compiler):
        compiler = _real_compiler(compiler)  # a child of a configured process: wrap the real one, not our wrapper
    flag_text = " ".join(flags)
    tag = hashlib.sha1(f"{compiler} {flag_text}".encode()).hexdigest()[:10]
    base = tempfile.gettempdir()  # also pins Python's tempfile to the original folder
    if os.path.basename(base).startswith(_PREFIX):
        base = os.path.dirname(base)
    folder = os.path.join(base, _PREFIX + tag)
    try:
        bindir = os.path.join(folder, "bin")
        os.makedirs(bindir, exist_ok=True)
        path = os.path.join(bindir, "g++")
        tmp = f"{path}.{os.getpid()}"
        with open(tmp, "w") as f:
            f.write(wrapper_script(compiler, flag_text, folder))
        os.chmod(tmp, 0o755)
        os.replace(tmp, path)
    except OSError as e:
        STATE["reason"] = f"could not write the compiler wrapper ({e})"
        return
    tempfile.tempdir = base
    os.environ["TMPDIR"] = folder
    os.environ["PATH"] = bindir + os.pathsep + os.environ.get("PATH", "")
    STATE.update(flags=flag_text, reason="ok", kernels=folder)


def _is_wrapper(compiler: str) -> bool:
    return os.path.basename(os.path.dirname(os.path.dirname(compiler))).startswith(_PREFIX)


def _check_flags(compiler: str, flags: list[str]) -> None:
    """Bad ``$MLX_INTERP_JIT_FLAGS`` stops the import in one line, not later inside MLX's first compiled call."""
    import subprocess

    from ..errors import MlxInterpError

    p = subprocess.run([compiler, *flags, "-x", "c++", "-fsyntax-only", "-"], input="int main(){}\n",
                       capture_output=True, text=True)
    if p.returncode:
        raise MlxInterpError(f"MLX_INTERP_JIT_FLAGS={' '.join(flags)!r} is rejected by {compiler} "
                             f"(want g++ flags, e.g. '-mavx2 -mfma', or 'none')")


def _real_compiler(wrapper: str) -> str:
    """The compiler a wrapper written by ``wrapper_script`` calls."""
    try:
        with open(wrapper) as f:
            return f.read().rsplit('exec "', 1)[1].split('"', 1)[0]
    except (OSError, IndexError):
        return wrapper
