"""Overhead of the shim: capture and steering cost relative to the same work without them.

Per offline model, in one process, interleaved repetitions (median of 5):
* forward of 8 prompts x 64 tokens: plain (hooks off) vs capturing every layer at every
  position (plus the embedding) -> ratio (goal <= 1.10);
* greedy generation of 24 tokens: plain vs steered (Add at the middle layer, all
  positions) -> ratio (goal <= 1.10).

    python bench/bench_overhead.py [--models smollm2-135m ...]
"""

from __future__ import annotations

import argparse
import statistics
import time

import mlx_interp  # noqa: F401  (first: fast BLAS)
import numpy as np

from mlx_interp.capture import Capture
from mlx_interp.generate import generate
from mlx_interp.interventions import Add
from mlx_interp.models import load
from mlx_interp.trace import run


def _time(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", nargs="*", default=["smollm2-135m", "gemma-3-270m", "qwen2.5-coder-0.5b"])
    ap.add_argument("--reps", type=int, default=5)
    a = ap.parse_args()
    print(f"shim overhead, {time.strftime('%Y-%m-%d %H:%M')} (median of {a.reps}, interleaved)")
    print(f"{'model':<20} {'plain fwd s':>11} {'capture-all s':>13} {'ratio':>6}   {'plain gen s':>11} {'steered s':>9} {'ratio':>6}")
    for alias in a.models:
        lm = load(alias)
        ids = np.random.default_rng(0).integers(100, 20000, size=(8, 64)).tolist()
        v = np.random.default_rng(1).normal(size=lm.width)
        steer = [Add(v / np.linalg.norm(v), layers=lm.n_layers // 2, alpha=2.0)]
        prompt = "Write a short story about a lighthouse keeper."
        run(lm, ids)  # warm-up
        generate(lm, prompt, max_tokens=4)
        f0, f1, g0, g1 = [], [], [], []
        for _ in range(a.reps):
            f0.append(_time(lambda: run(lm, ids)))
            f1.append(_time(lambda: run(lm, ids, capture=Capture("all", "all", embed=True))))
            # fixed length (no EOS stop), so both runs decode exactly 24 tokens
            g0.append(_time(lambda: generate(lm, prompt, max_tokens=24, chat=False, stop_at_eos=False)))
            g1.append(_time(lambda: generate(lm, prompt, max_tokens=24, chat=False, stop_at_eos=False, interventions=steer)))
        m = statistics.median
        print(f"{alias:<20} {m(f0):>11.3f} {m(f1):>13.3f} {m(f1) / m(f0):>6.3f}   {m(g0):>11.3f} {m(g1):>9.3f} {m(g1) / m(g0):>6.3f}",
              flush=True)


if __name__ == "__main__":
    main()
