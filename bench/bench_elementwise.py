"""Why MLX's CPU elementwise kernels are slow on x86 Linux, and what one compiler flag changes.

`bench/bench_breakdown.py` finds that a CPU prefill spends ~40% in the gated activation and attention's softmax, whose
``exp`` runs at ~24 ns per element here. This finds the cause and measures a fix, side by side in one run:

1. **The wheel's code.** How many call sites in the installed ``libmlx.so`` call libm's ``fmaf``/``fma`` through the
   PLT (a function call per multiply-add) and how many AVX (``ymm``) instructions it has. MLX's CPU ``Simd`` type has
   no x86 vector path (``max_size = 1`` in ``mlx/backend/cpu/simd/base_simd.h``), and the portable wheel is built for
   baseline x86-64, which has no FMA instruction, so ``simd::fma`` in every ``exp`` (six per element) is a libm call.
2. **MLX's own ``simd::exp``** (from the headers the wheel ships, ``mlx/include``) over 1024 x 1536 floats, compiled as
   the wheel is (``g++ -O3``) and with mlx-interp's JIT flags added, beside ``mx.exp`` and numpy's ``exp``.
3. **mlx-lm's compiled ``swiglu`` and a whole prefill** (8 x 128 tokens) in two fresh processes: MLX's CPU JIT
   compiles fused elementwise kernels at first use with ``g++ -O3`` (``mlx/backend/cpu/jit_compiler.cpp``); one
   process runs with ``MLX_INTERP_JIT_FLAGS=none`` (plain MLX), the other with mlx-interp's default flags
   (``mlx_interp/runtime/jit.py``: MLX's own AVX2 flags and no contraction), each with a fresh kernel cache and the
   same BLAS thread count. The largest |logit difference| between the two must be 0.

Needs g++ and objdump (binutils). Run on an idle machine:

    python bench/bench_elementwise.py [--model smollm2-135m@fp32] [--reps 5] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import mlx_interp  # noqa: F401  (first: fast BLAS)

import mlx.core as mx
import numpy as np

from bench_breakdown import median_s  # this folder's scripts run with it on sys.path
from mlx_interp.runtime import jit

N = 1024 * 1536  # the elements of one bench_breakdown activation slice
B, T = 8, 128

EXP_SOURCE = r"""
#include "mlx/backend/cpu/simd/simd.h"
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <vector>
using namespace mlx::core;
__attribute__((noinline)) void run(const float* x, float* y, size_t n) {
  for (size_t i = 0; i < n; ++i) y[i] = simd::exp(simd::Simd<float, 1>(x[i])).value;
}
int main(int argc, char** argv) {
  size_t n = %(n)d; int reps = atoi(argv[1]);
  std::vector<float> x(n), y(n);
  for (size_t i = 0; i < n; ++i) x[i] = (float)((long)(i %% 2001) - 1000) / 250.0f;
  std::vector<double> t;
  run(x.data(), y.data(), n);
  for (int r = 0; r < reps; ++r) {
    auto t0 = std::chrono::steady_clock::now(); run(x.data(), y.data(), n);
    t.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(t.begin(), t.end());
  printf("%%.9f %%.9g\n", t[t.size() / 2], y[12345]);
}
"""


def wheel_code() -> dict:
    """fmaf/fma PLT call sites and ymm instructions in the installed libmlx.so."""
    lib = next(Path(mx.__file__).resolve().parent.glob("lib/libmlx*.so*"))
    asm = subprocess.run(["objdump", "-d", "--no-show-raw-insn", str(lib)], capture_output=True, text=True,
                         check=True).stdout
    return {"lib": str(lib), "fma_calls": len(re.findall(r"call.*<fmaf?@plt>", asm)),
            "ymm_instructions": len(re.findall(r"%ymm\d", asm))}


def simd_exp(flags: list[str], reps: int) -> float:
    """Seconds per call of MLX's simd::exp over N floats, compiled from the wheel's headers with ``flags``."""
    include = Path(mx.__file__).resolve().parent / "include"
    with tempfile.TemporaryDirectory() as d:
        src, exe = Path(d) / "exp.cpp", Path(d) / "exp"
        src.write_text(EXP_SOURCE % {"n": N})
        subprocess.run(["g++", "-std=c++17", *flags, f"-I{include}", str(src), "-o", str(exe)], check=True)
        out = subprocess.run([str(exe), str(reps)], capture_output=True, text=True, check=True).stdout.split()
    return float(out[0])


def child(model: str, reps: int, logits_path: str) -> None:
    """In a fresh process (PATH and TMPDIR set by the parent): swiglu and a prefill through MLX's JIT; prints JSON."""
    import mlx.nn as nn
    from mlx_lm.models.activations import swiglu

    from mlx_interp.store.models import load

    g = mx.random.normal((1024, 1536), key=mx.random.key(0))
    t0 = time.perf_counter()
    mx.eval(swiglu(g, g))  # the first call JIT-compiles the fused kernel
    first = time.perf_counter() - t0
    sw = median_s(lambda: swiglu(g, g), reps)
    gelu = median_s(lambda: nn.gelu_approx(g), reps)  # Gemma's activation, also compiled
    lm = load(model)
    tokens = mx.random.randint(0, lm.model.args.vocab_size, (B, T), key=mx.random.key(1))
    pre = median_s(lambda: lm.model(tokens), reps)
    logits = lm.model(tokens)[:, -1].astype(mx.float32)
    np.save(logits_path, np.array(logits))
    print(json.dumps({"swiglu_s": sw, "gelu_s": gelu, "first_call_s": first, "prefill_s": pre,
                      "flags": jit.STATE["flags"]}))


def jit_process(model: str, reps: int, native: bool, work: Path) -> dict:
    """Run ``child`` in a fresh process with a fresh JIT cache; ``native``: mlx-interp's JIT flags (runtime/jit.py),
    else ``MLX_INTERP_JIT_FLAGS=none`` (what plain MLX does). Both with the same BLAS thread count."""
    env = {k: v for k, v in os.environ.items() if k != "MLX_INTERP_JIT_FLAGS"}
    env.update(TMPDIR=str(work / ("tmp-native" if native else "tmp-stock")),
               MLX_INTERP_THREADS=os.environ.get("MLX_INTERP_THREADS", str(len(os.sched_getaffinity(0)))))
    if not native:
        env["MLX_INTERP_JIT_FLAGS"] = "none"
    Path(env["TMPDIR"]).mkdir()
    logits = work / ("native.npy" if native else "stock.npy")
    out = subprocess.run([sys.executable, __file__, "--child", "--model", model, "--reps", str(reps),
                          "--logits", str(logits)], env=env, capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"child process failed: {out.stderr.strip().splitlines()[-1:]}")
    kernels = list(Path(env["TMPDIR"]).glob("**/mlx/*/cpu/*.so"))
    return {**json.loads(out.stdout.strip().splitlines()[-1]), "jit_kernels": len(kernels), "logits": str(logits)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m@fp32")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3, help="interleaved pairs of processes (plain, mlx-interp)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--logits", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        return child(a.model, a.reps, a.logits)
    for tool in ("g++", "objdump"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} not found: this benchmark compiles MLX's simd code and reads libmlx.so's code")

    code = wheel_code()
    x = mx.array(((np.arange(N) % 2001) - 1000).astype(np.float32) / 250.0)
    xn = np.array(x)
    rows = {"mx.exp (the wheel's kernel)": median_s(lambda: mx.exp(x), a.reps),
            "simd::exp, g++ -O3 (as the wheel)": simd_exp(["-O3"], a.reps),
            "simd::exp, g++ -O3 + the JIT flags": simd_exp(["-O3", *jit.MLX_AVX2_FLAGS, jit.NO_CONTRACTION], a.reps)}
    t = []
    for _ in range(a.reps):
        t0 = time.perf_counter()
        np.exp(xn)
        t.append(time.perf_counter() - t0)
    rows["numpy exp"] = statistics.median(t)
    runs: dict[bool, list[dict]] = {False: [], True: []}
    diff = scale = 0.0
    with tempfile.TemporaryDirectory() as d:
        for r in range(a.rounds):  # interleaved, the order alternating: the machine's speed drifts between processes
            for native in ((False, True) if r % 2 == 0 else (True, False)):
                work = Path(d) / f"round{r}"
                work.mkdir(exist_ok=True)
                runs[native].append(jit_process(a.model, a.reps, native, work))
            stock_logits, native_logits = np.load(runs[False][-1]["logits"]), np.load(runs[True][-1]["logits"])
            diff = max(diff, float(np.max(np.abs(stock_logits - native_logits))))
            scale = max(scale, float(np.max(np.abs(stock_logits))))

    print(f"elementwise on x86, {time.strftime('%Y-%m-%d %H:%M')}, mlx {mx.__version__}, median of {a.reps}")
    print(f"libmlx.so: {code['fma_calls']} call sites of libm fmaf/fma, {code['ymm_instructions']} ymm (AVX) operands")
    print(f"{'exp over 1024 x 1536 floats':40s} {'ms':>8s} {'ns/elt':>8s} {'vs mx.exp':>9s}")
    base = rows["mx.exp (the wheel's kernel)"]
    for k, v in rows.items():
        print(f"{k:40s} {v * 1e3:8.2f} {v * 1e9 / N:8.2f} {base / v:8.1f}x")
    print(f"MLX CPU JIT, {a.model}, {a.rounds} interleaved rounds of one process each: plain flags vs mlx-interp's "
          f"({runs[True][0]['flags']}); ms are medians over rounds, the ratio is the median of the rounds' ratios")
    print(f"{'':28s} {'plain ms':>10s} {'mlx-interp ms':>14s} {'speed-up':>9s}  {'per round':s}")
    for k, label in (("swiglu_s", "swiglu 1024 x 1536"), ("gelu_s", "gelu_approx 1024 x 1536"),
                     ("prefill_s", f"whole prefill {B} x {T}")):
        ratios = [s_[k] / n_[k] for s_, n_ in zip(runs[False], runs[True])]
        print(f"{label:28s} {statistics.median(x[k] for x in runs[False]) * 1e3:10.1f} "
              f"{statistics.median(x[k] for x in runs[True]) * 1e3:14.1f} {statistics.median(ratios):8.2f}x  "
              + " ".join(f"{x:.2f}" for x in ratios))
    print(f"JIT kernels per process: {runs[False][0]['jit_kernels']} plain, {runs[True][0]['jit_kernels']} mlx-interp; "
          f"max |logit diff| over rounds {diff:.2e} (largest |logit| {scale:.1f})")


if __name__ == "__main__":
    main()
