"""Layer sweeps with and without `run(resume=(base, k))`: steered passes that skip the blocks below k.

Per model, in one process, interleaved (median of --reps): a steered forward pass over CAA A/B test
prompts (exp12's sycophancy set) with `Add` at block k, run in full vs resumed from one unsteered
capture of every position; for k at 1/4, 1/2 and 3/4 of depth. Also the cost of the capture itself,
and a whole sweep (every layer, 2 multipliers) in both ways, projected from the per-k timings.

    python bench/bench_resume.py [--models smollm2-135m ...] [--items 12] [--reps 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

import mlx_interp as mi  # first: fast BLAS
import numpy as np

from bench_overhead import _time  # bench/ is on sys.path when run as a script
from mlx_interp.tasks.datasets import caa_sycophancy
from mlx_interp.measures.ab import ab_prompts


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", nargs="*", default=["smollm2-135m", "gemma-3-270m", "qwen2.5-coder-0.5b"])
    ap.add_argument("--items", type=int, default=12)
    ap.add_argument("--reps", type=int, default=3)
    a = ap.parse_args()
    print(f"resume vs full steered pass, {time.strftime('%Y-%m-%d %H:%M')} ({a.items} A/B items, median of {a.reps})")
    print(f"{'model':<20} {'k/L':>6} {'full s':>8} {'resume s':>9} {'ratio':>6}")
    for alias in a.models:
        lm = mi.load(alias)
        L = lm.n_layers
        prompts = ab_prompts(lm, [t["question"] for t in caa_sycophancy()[1][:a.items]])
        v = np.random.default_rng(0).normal(size=lm.width)
        ks = [L // 4, L // 2, 3 * L // 4]
        mi.run(lm, prompts)  # warm-up
        cap = mi.Capture("resid_pre", list(range(1, L)), "all")
        base_t = statistics.median(_time(lambda: mi.run(lm, prompts, capture=cap)) for _ in range(a.reps))
        base = mi.run(lm, prompts, capture=cap)
        full_all, res_all = [], []
        for k in ks:
            iv = [mi.Add(v, layers=k, alpha=1.0)]
            f, r = [], []
            for _ in range(a.reps):
                f.append(_time(lambda: mi.run(lm, prompts, interventions=iv)))
                r.append(_time(lambda: mi.run(lm, prompts, interventions=iv, resume=(base, k))))
            f, r = statistics.median(f), statistics.median(r)
            full_all.append(f)
            res_all.append(r)
            print(f"{alias:<20} {k:>3}/{L:<2} {f:>8.3f} {r:>9.3f} {r / f:>6.2f}", flush=True)
        # a whole sweep: 2 passes per layer; resumed cost grows linearly in (L - k), interpolated from the 3 points
        full_sweep = 2 * L * statistics.mean(full_all)
        per_block = statistics.mean(r / (L - k) for r, k in zip(res_all, ks))
        res_sweep = base_t + 2 * sum(per_block * (L - k) for k in range(L))
        print(f"{alias:<20} sweep  {full_sweep:>8.1f} {res_sweep:>9.1f} {res_sweep / full_sweep:>6.2f}"
              f"   (2 x {L} layers; resume includes the {base_t:.2f} s capture pass)", flush=True)


if __name__ == "__main__":
    main()
