"""The function-vector mediation sweep: batched (cached prefix, one (layer, head) per row, resumed) vs the naive loop.

    python bench/bench_mediation.py [--model smollm2-135m] [--layers 3] [--prompts 1]

Both are timed side by side in one run on the same subset (``--layers`` evenly spaced layers x every head x
``--prompts`` shuffled 10-shot antonym prompts); the batched sweep of every layer is timed too. Printed: seconds per
(prompt, layer, head) patch for each, and the ratio naive / batched. Run it on an idle machine.
"""

from __future__ import annotations

import argparse
import time

import mlx_interp as mi
import numpy as np

from mlx_interp.methods import function_vectors as fv
from mlx_interp.tasks import icl


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--layers", type=int, default=3)
    ap.add_argument("--prompts", type=int, default=1)
    a = ap.parse_args()
    lm = mi.load(a.model)
    t = icl.load_task("antonym")
    rng = np.random.default_rng(0)
    means = fv.head_means(lm, [icl.prompt(icl.draw_demos(t, rng), q.x) for q in t.valid[:8]])
    qs = t.valid[:a.prompts]
    ps = [icl.prompt(icl.draw_demos(t, rng, shuffle_labels=True), q.x) for q in qs]
    ids = fv.answer_ids(lm, ps, [q.y for q in qs])
    L, H = means.shape[:2]
    sub = [int(x) for x in np.linspace(0, L - 1, a.layers)]
    fv.indirect_effects(lm, ps[:1], ids[:1], means, layers=sub[:1])  # warm-up
    t0 = time.perf_counter()
    naive = fv.indirect_effects_naive(lm, ps, ids, means, layers=sub)
    t_naive = time.perf_counter() - t0
    t0 = time.perf_counter()
    fast = fv.indirect_effects(lm, ps, ids, means, layers=sub, groups=1)
    t_fast = time.perf_counter() - t0
    t0 = time.perf_counter()
    fv.indirect_effects(lm, ps, ids, means)
    t_all = time.perf_counter() - t0
    n_sub, n_all = len(ps) * len(sub) * H, len(ps) * L * H
    m = ~np.isnan(naive)
    print(f"{lm.name}: {L} layers x {H} heads, {len(ps)} prompt(s) of {len(mi.run(lm, ps[:1]).tokens[0])} tokens; "
          f"max |batched - naive| = {np.abs(fast[m] - naive[m]).max():.1e}")
    print("| sweep | patches | seconds | s / patch |\n|---|---|---|---|")
    print(f"| naive loop, {len(sub)} layers | {n_sub} | {t_naive:.1f} | {t_naive / n_sub:.4f} |")
    print(f"| batched, same {len(sub)} layers | {n_sub} | {t_fast:.1f} | {t_fast / n_sub:.4f} |")
    print(f"| batched, every layer (4 resumed groups) | {n_all} | {t_all:.1f} | {t_all / n_all:.4f} |")
    print(f"naive / batched per patch: {t_naive / n_sub / (t_fast / n_sub):.1f}x on the subset, "
          f"{t_naive / n_sub / (t_all / n_all):.1f}x for the whole sweep")


if __name__ == "__main__":
    main()
