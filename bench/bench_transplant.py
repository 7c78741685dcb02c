"""A cache transplant and its generation vs plain generation of the same length (issue 16: at most +10%).

    python bench/bench_transplant.py [--model smollm2-135m] [--tokens 32] [--repeats 5]

Side by side in one run, on the same source ("Hello, my name is Lyra and I live in Seattle.") and question:
- plain: generate from the source and question as one text;
- splice: the source's cache computed, its K/V spliced into a neutral text's cache in half of the layers, then
  generation from the question (the neutral cache is computed once, outside the loop, as a study reuses it);
- place: the source's cache computed and moved (keys re-rotated) after a 24-token neutral prefix (its cache computed
  once), then generation; its plain twin is the prefix, source and question as one text (``plain_prefixed``).
Each generates exactly ``--tokens`` tokens (no EOS stop). Printed: median seconds and the ratio to the plain run
of the same context length.
Run it on an idle machine.
"""

from __future__ import annotations

import argparse
import statistics
import time

import mlx_interp as mi
from mlx_interp.core.cache_ops import place, splice
from mlx_interp.methods import kv_transfer as kt

SOURCE = "Hello, my name is Lyra and I live in Seattle."
QUESTION = "What is your name and where do you live?"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=5)
    a = ap.parse_args()
    lm = mi.load(a.model)
    src_ids = mi.run(lm, [SOURCE], logits="none").tokens[0]
    q = kt.question_ids(lm, QUESTION)
    neutral = mi.run(lm, [kt.filler_ids(lm, len(src_ids), kt.has_bos(lm))], logits="none", return_cache=True, batch_size=None).cache
    prefix = mi.run(lm, [kt.filler_ids(lm, 24)], logits="none", return_cache=True, batch_size=None).cache
    half = range(lm.n_layers // 2, lm.n_layers)

    def plain():
        mi.generate(lm, [src_ids + q], max_tokens=a.tokens, stop_at_eos=False)

    def plain_prefixed():
        mi.generate(lm, [prefix.tokens[0] + src_ids + q], max_tokens=a.tokens, stop_at_eos=False)

    def spliced():
        src = mi.run(lm, [src_ids], logits="none", return_cache=True, batch_size=None).cache
        mi.generate(lm, [q], cache=splice(neutral, src, layers=half), max_tokens=a.tokens, stop_at_eos=False)

    def placed():
        src = mi.run(lm, [src_ids], logits="none", return_cache=True, batch_size=None).cache
        mi.generate(lm, [q], cache=place(lm, src, before=prefix), max_tokens=a.tokens, stop_at_eos=False)

    fns = {"plain": plain, "splice": spliced, "plain_prefixed": plain_prefixed, "place": placed}
    twin = {"plain": "plain", "splice": "plain", "plain_prefixed": "plain_prefixed", "place": "plain_prefixed"}
    for f in fns.values():  # warm-up
        f()
    times = {k: [] for k in fns}
    for _ in range(a.repeats):  # interleaved, so drift hits every variant alike
        for k, f in fns.items():
            t0 = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"{lm.name}: {len(src_ids)} source tokens, {len(q)} question tokens, {a.tokens} generated, {a.repeats} repeats")
    for k, v in med.items():
        print(f"  {k:15s} {v:.3f} s   ratio to {twin[k]} {v / med[twin[k]]:.2f}")


if __name__ == "__main__":
    main()
