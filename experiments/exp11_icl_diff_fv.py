"""exp11: the study's second function-vector attempt: mean last-token activation of clean 10-shot prompts minus
that of the same queries zero-shot, per layer, added at that layer's output (last token), with exp13's data,
filter and evaluation.

    python -m experiments.exp11_icl_diff_fv --model smollm2-135m [--quick] [--prompts TASK.json]

A baseline for exp13 (heads by causal mediation); exp13 evaluates it too, on the same items. Layer: L//3 a priori
and the best layer of a valid sweep.
"""

from __future__ import annotations

from experiments import fv_study
from experiments.common import main
from experiments.exp13_function_vectors import load_tasks


def run(lm, tasks, quick: bool) -> dict:
    return fv_study.run(lm, tasks, quick, methods=("icl_diff",))


if __name__ == "__main__":
    main("exp11_icl_diff_fv", run, load_tasks, __doc__)
