"""Where the coherence thresholds (metrics.PPL_MAX, metrics.REP_MAX) come from.

    python bench/coherence_calibration.py [--model smollm2-135m --model qwen2.5-coder-0.5b] [--ppl-max 20]

For each model: a refusal direction (difference of means of 32 harmful vs 32 harmless train prompts at the
middle layer, chat template), then search_multiplier on 12 harmless prompts (5 steps from 0.25 of the
residual norm). Prints, per multiplier, the refusal rate, the median perplexity of the steered text under the
unsteered model, the median 3-gram repetition and the first continuation, so the thresholds can be checked
against what the text looks like. Takes about 1 minute (SmolLM2) and 2 minutes (Qwen) on a 2-core CPU.
"""

from __future__ import annotations

import argparse

import mlx_interp as mi
from mlx_interp.tasks.datasets import refusal_prompts, refusal_substrings
from mlx_interp.measures.coherence import PPL_MAX, REP_MAX
from mlx_interp.measures.text import refusal_rate
from mlx_interp.methods.steering import search_multiplier


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", action="append")
    ap.add_argument("--ppl-max", type=float, default=PPL_MAX, help="perplexity bar the search uses (a looser bar explores further)")
    a = ap.parse_args(argv)
    h, hl = refusal_prompts("train")
    print(f"thresholds: ppl <= {a.ppl_max}, repetition <= {REP_MAX}")
    for name in a.model or ["smollm2-135m", "qwen2.5-coder-0.5b"]:
        lm = mi.load(name)
        layer = lm.n_layers // 2
        v = mi.diff_of_means(lm, h[:32], hl[:32], chat=True, layers=layer)[layer]
        s = search_multiplier(lm, v, layer, hl[32:44], lambda g: refusal_rate([x.text for x in g], refusal_substrings()),
                              steps=5, chat=True, ppl_max=a.ppl_max)
        print(f"{name}, layer {layer}")
        for st in [s.baseline] + s.steps:
            print(f"  m={st.multiplier:<6.3f} refusal={st.score:.2f} coherent={st.coherent_rate:.2f} "
                  f"ppl={st.median_perplexity:6.2f} rep={st.median_repetition:.2f} | {st.examples[0][:80]!r}")


if __name__ == "__main__":
    main()
