"""Forward passes of prompts of mixed length: one padded chunk vs chunks that bound the padding (``plan``).

Per model, in one process, side by side: CAA's A/B MMLU and TruthfulQA quick items (what exp15's capability rows and
every A/B metric run) through ``run`` with ``max_padding=None`` (one chunk of up to ``batch_size`` rows, padded to
the longest prompt, as before) and with ``MAX_PADDING``; prints padded/real tokens, seconds, the ratio, and the
largest logit difference between the two (float tolerance: the prompts' results do not depend on their chunk).

    python bench/bench_packing.py [--models smollm2-135m@fp32 qwen2.5-coder-0.5b@fp32] [--repeats 2]
"""

from __future__ import annotations

import argparse
import time

import mlx_interp  # noqa: F401  (first: fast BLAS)

import numpy as np

from mlx_interp.core import trace
from mlx_interp.core.batching import MAX_PADDING, encode, plan
from mlx_interp.measures.ab import ab_items
from mlx_interp.store.models import load
from mlx_interp.tasks.datasets import capability_items


def timed(lm, prompts: list[str], max_padding: float | None, repeats: int) -> tuple[float, np.ndarray]:
    """Best of ``repeats`` wall times of one ``run`` with the given padding bound, and its last-token logits."""
    trace.MAX_PADDING = max_padding  # the bound run() passes to plan() for a plain forward pass
    best, out = float("inf"), None
    for _ in range(repeats):
        t = time.perf_counter()
        out = np.array(trace.run(lm, prompts).logits)
        best = min(best, time.perf_counter() - t)
    return best, out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", nargs="*", default=["smollm2-135m@fp32", "qwen2.5-coder-0.5b@fp32"])
    ap.add_argument("--repeats", type=int, default=2)
    a = ap.parse_args()
    print(f"padding-bounded chunks vs one padded chunk, {time.strftime('%Y-%m-%d %H:%M')}, best of {a.repeats}")
    print(f"{'model':<26} {'items':<11} {'n':>3} {'padded/real one':>15} {'packed':>7} {'s one':>7} {'s packed':>8} "
          f"{'speed-up':>8} {'max |dlogit|':>12}")
    for name in a.models:
        lm = load(name)
        trace.run(lm, ["warm up"])
        for bench in ("mmlu", "truthfulqa"):
            items = capability_items(bench, quick=True)
            prompts = ab_items(lm, [x["prompt"] for x in items], lm.instruct).prompts
            lens = [len(t) for t in encode(lm, prompts, lm.instruct)]
            ratio = {p: sum(len(c) * max(lens[i] for i in c) for c in plan(lens, 32, max_padding=p)) / sum(lens)
                     for p in (None, MAX_PADDING)}
            s_one, a_one = timed(lm, prompts, None, a.repeats)
            s_pack, a_pack = timed(lm, prompts, MAX_PADDING, a.repeats)
            print(f"{name:<26} {bench:<11} {len(prompts):>3} {ratio[None]:>15.2f} {ratio[MAX_PADDING]:>7.2f} "
                  f"{s_one:>7.2f} {s_pack:>8.2f} {s_one / s_pack:>7.2f}x {np.abs(a_one - a_pack).max():>12.2e}")
    trace.MAX_PADDING = MAX_PADDING


if __name__ == "__main__":
    main()
