"""Coefficient searches at several candidate layers: one after another, in lockstep, and in lockstep with lookahead.

exp15 chooses each trait's steering layer by running the coefficient search at every candidate depth. Per model, in
one process and on the same prompts, vector and layers: k separate ``search_multiplier`` calls, one
``search_multipliers`` call (lockstep: one batched generation and one coherence pass per step for all k), and the
same with ``lookahead=2`` (two levels of the search tree per call). Checks that all three took the same steps, then
prints seconds and the ratio to the separate searches (interleaved repeats, median).

    python bench/bench_search.py [--model qwen2.5-coder-0.5b] [--layers 8 12 16] [--steps 3] [--tokens 32] [--repeats 2]
"""

from __future__ import annotations

import argparse
import statistics
import time

import mlx_interp  # noqa: F401  (first: fast BLAS)

from mlx_interp.measures.summaries import words
from mlx_interp.methods.steering import search_multiplier, search_multipliers
from mlx_interp.readouts.directions import diff_of_means
from mlx_interp.store.models import load
from mlx_interp.tasks.datasets import refusal_prompts

PROMPTS = ["Tell me about your weekend.", "Describe the town you live in.", "What did you have for lunch?",
           "Give me a tip for learning to cook.", "What is a good book to read?", "How do plants grow?"]


def mean_words(gens) -> float:
    """Mean word count: a score that every step can compute (the search does not care what it maximizes)."""
    return sum(words(g.text) for g in gens) / len(gens)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="qwen2.5-coder-0.5b")
    ap.add_argument("--layers", type=int, nargs="+", default=None, help="candidate layers (default: 1/3, 1/2, 2/3 of depth)")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=2)
    a = ap.parse_args()
    lm = load(a.model)
    layers = a.layers or [round(f * lm.n_layers) for f in (1 / 3, 1 / 2, 2 / 3)]
    harmful, harmless = refusal_prompts()
    d = diff_of_means(lm, harmful[:16], harmless[:16], layers=layers, chat=lm.instruct)
    targets = [(d[k], k) for k in layers]
    kw = dict(steps=a.steps, max_tokens=a.tokens, chat=lm.instruct, with_baseline=False, control=False)
    runs = {
        "separate": lambda: [search_multiplier(lm, v, k, PROMPTS, mean_words, **kw) for v, k in targets],
        "lockstep": lambda: search_multipliers(lm, targets, PROMPTS, mean_words, **kw),
        "lockstep, lookahead 2": lambda: search_multipliers(lm, targets, PROMPTS, mean_words, lookahead=2, **kw),
    }
    search_multiplier(lm, targets[0][0], layers[0], PROMPTS[:2], mean_words, steps=1, max_tokens=2, chat=lm.instruct,
                      with_baseline=False, control=False)  # warm-up
    times: dict[str, list[float]] = {n: [] for n in runs}
    steps = {}
    for _ in range(a.repeats):
        for name, fn in runs.items():
            t = time.perf_counter()
            got = fn()
            times[name].append(time.perf_counter() - t)
            steps[name] = [[(s.multiplier, s.coherent) for s in r.steps] for r in got]
    same = all(v == steps["separate"] for v in steps.values())
    print(f"coefficient search at {len(layers)} layers {layers}, {a.model}, {time.strftime('%Y-%m-%d %H:%M')}: "
          f"{len(PROMPTS)} prompts x {a.tokens} tokens, {a.steps} steps, median of {a.repeats}; "
          f"same steps in all three: {same}")
    base = statistics.median(times["separate"])
    print(f"{'schedule':<24} {'s':>7} {'vs separate':>11}")
    for name, ts in times.items():
        s = statistics.median(ts)
        print(f"{name:<24} {s:>7.1f} {s / base:>11.2f}", flush=True)


if __name__ == "__main__":
    main()
