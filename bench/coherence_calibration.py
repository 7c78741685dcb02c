"""Where the coherence thresholds (metrics.PPL_MAX, metrics.REP_MAX) come from.

    python bench/coherence_calibration.py [--model smollm2-135m --model qwen2.5-coder-0.5b] [--ppl-max 20] [--out DIR]

For each model: a refusal direction (difference of means of 32 harmful vs 32 harmless train prompts at the
middle layer, chat template), then search_multiplier on 12 harmless prompts (5 steps from 0.25 of the
residual norm). Prints, per multiplier, the refusal rate, the median perplexity of the steered text under the
unsteered model, the median 3-gram repetition and the first continuation, so the thresholds can be checked
against what the text looks like, and writes ``<out>/coherence_calibration/<stamp>_<model>.json`` per model (the
table in docs/results_directions.md is generated from the kept ones). Takes about 1 minute (SmolLM2) and 2 minutes
(Qwen) on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import time

import mlx_interp as mi
from mlx_interp.tasks.datasets import refusal_prompts, refusal_substrings
from mlx_interp.measures.coherence import PPL_MAX, REP_MAX
from mlx_interp.measures.text import refusal_rate
from mlx_interp.measures.stats import rate
from mlx_interp.methods.steering import search_multiplier
from mlx_interp.runs.results import save_result


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", action="append")
    ap.add_argument("--ppl-max", type=float, default=PPL_MAX, help="perplexity bar the search uses (a looser bar explores further)")
    ap.add_argument("--out", default="results", help="results folder")
    a = ap.parse_args(argv)
    h, hl = refusal_prompts("train")
    prompts = hl[32:44]
    print(f"thresholds: ppl <= {a.ppl_max}, repetition <= {REP_MAX}")
    for name in a.model or ["smollm2-135m", "qwen2.5-coder-0.5b"]:
        t0 = time.time()
        lm = mi.load(name)
        layer = lm.n_layers // 2
        v = mi.diff_of_means(lm, h[:32], hl[:32], chat=True, layers=layer)[layer]
        s = search_multiplier(lm, v, layer, prompts, lambda g: refusal_rate([x.text for x in g], refusal_substrings()),
                              steps=5, chat=True, ppl_max=a.ppl_max)
        print(f"{name}, layer {layer}")
        steps = []
        for st in [s.baseline] + s.steps:
            print(f"  m={st.multiplier:<6.3f} refusal={st.score:.2f} coherent={st.coherent_rate:.2f} "
                  f"ppl={st.median_perplexity:6.2f} rep={st.median_repetition:.2f} | {st.examples[0][:80]!r}")
            n = len(prompts)  # each rate is a share of these prompts' continuations
            steps.append({"multiplier": st.multiplier, "refusal": rate(round(st.score * n), n).as_dict(),
                          "coherent": rate(round(st.coherent_rate * n), n).as_dict(), "median_perplexity": st.median_perplexity,
                          "median_repetition": st.median_repetition, "first_continuation": st.examples[0]})
        path = save_result("coherence_calibration", {"layer": layer, "steps": steps, "ppl_max": a.ppl_max, "rep_max": REP_MAX,
                                                     "best": s.best.multiplier if s.best else None}, lm=lm,
                           config={"ppl_max": a.ppl_max, "n_prompts": len(prompts), "search_steps": 5}, wall_s=time.time() - t0,
                           out_dir=a.out)
        print(f"  -> {path}")


if __name__ == "__main__":
    main()
