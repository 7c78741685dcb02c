"""Overhead of the shim: captures, steering, K/V capture and cache-injected generation, side by side.

Per offline model, in one process, interleaved repetitions (median of ``--reps``):
* forward of 8 prompts x 64 tokens: plain (no hooks asked) vs capturing every residual site (resid_pre,
  resid_post) at every layer and position, and vs capturing K and V at every layer -> ratios (goal <= 1.10);
* greedy generation of 24 tokens: plain vs steered (Add at the middle layer, all positions) -> ratio;
* generation continuing a 64-token prompt cache vs generating from the whole prompt (the cache is computed once,
  outside the timing; the ratio shows what a kept cache saves);
* generation with async steps (``mx.async_eval``, the default) vs step by step -> ratio (< 1: async pays).

    python bench/bench_overhead.py [--models smollm2-135m ...] [--reps 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import mlx_interp as mi  # noqa: F401  (first: fast BLAS)
import numpy as np

from mlx_interp import Add, Capture
from mlx_interp.core import generate as gen_mod
from mlx_interp.core.generate import generate
from mlx_interp.core.trace import run


def _time(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", nargs="*", default=["smollm2-135m", "gemma-3-270m", "qwen2.5-coder-0.5b"])
    ap.add_argument("--reps", type=int, default=5)
    a = ap.parse_args()
    m = statistics.median
    print(f"shim overhead, {time.strftime('%Y-%m-%d %H:%M')} (median of {a.reps}, interleaved)")
    print(f"{'model':<20} {'fwd s':>7} {'resid-all':>9} {'kv-all':>7}   {'gen s':>6} {'steered':>7}   "
          f"{'full-prompt gen s':>17} {'from cache':>10}   {'sync gen s':>10} {'async':>6}")
    for alias in a.models:
        lm = mi.load(alias)
        ids = np.random.default_rng(0).integers(100, 20000, size=(8, 64)).tolist()
        v = np.random.default_rng(1).normal(size=lm.width)
        steer = [Add(v / np.linalg.norm(v), layers=lm.n_layers // 2, alpha=2.0)]
        prompt = "Write a short story about a lighthouse keeper."
        context = ids[0]  # a 64-token context, continued by the prompt's tokens
        tail = lm.tokenizer.encode(prompt, add_special_tokens=False)
        cache = run(lm, [context], return_cache=True).cache
        fixed = dict(max_tokens=24, stop_at_eos=False)  # no EOS stop: every run decodes exactly 24 tokens
        run(lm, ids)  # warm-up
        generate(lm, prompt, max_tokens=4)
        t = {k: [] for k in ("f0", "f1", "f2", "g0", "g1", "c0", "c1", "s0", "s1")}
        for _ in range(a.reps):
            t["f0"].append(_time(lambda: run(lm, ids)))
            t["f1"].append(_time(lambda: run(lm, ids, capture=Capture(["resid_pre", "resid_post"], "all", "all"))))
            t["f2"].append(_time(lambda: run(lm, ids, capture=Capture(["k", "v"], "all", "all"))))
            t["g0"].append(_time(lambda: generate(lm, prompt, **fixed)))
            t["g1"].append(_time(lambda: generate(lm, prompt, interventions=steer, **fixed)))
            t["c0"].append(_time(lambda: generate(lm, [context + tail], **fixed)))
            t["c1"].append(_time(lambda: generate(lm, [tail], cache=cache, **fixed)))
            gen_mod.ASYNC = False
            t["s0"].append(_time(lambda: generate(lm, prompt, **fixed)))
            gen_mod.ASYNC = True
            t["s1"].append(_time(lambda: generate(lm, prompt, **fixed)))
        r = {k: m(x) for k, x in t.items()}
        print(f"{alias:<20} {r['f0']:>7.3f} {r['f1'] / r['f0']:>9.3f} {r['f2'] / r['f0']:>7.3f}   {r['g0']:>6.3f} "
              f"{r['g1'] / r['g0']:>7.3f}   {r['c0']:>17.3f} {r['c1'] / r['c0']:>10.3f}   {r['s0']:>10.3f} "
              f"{r['s1'] / r['s0']:>6.3f}", flush=True)


if __name__ == "__main__":
    main()
