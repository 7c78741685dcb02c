"""exp8: the study's first function-vector attempt: the mean last-token activation of a layer over clean 10-shot
prompts, added back at that layer's output (last token), with exp13's data, filter and evaluation.

    python -m experiments.exp8_layer_mean_fv --model smollm2-135m [--quick] [--prompts TASK.json]

A baseline for exp13 (heads by causal mediation); exp13 evaluates it too, on the same items. Layer: L//3 a priori
and the best layer of a valid sweep. No control is defined for a mean activation beyond "no vector": exp13's
random-vector control (matched to the head FV's norm) sits in its table.
"""

from __future__ import annotations

from experiments import fv_study
from experiments.common import main
from experiments.exp13_function_vectors import load_tasks


def run(lm, tasks, quick: bool) -> dict:
    return fv_study.run(lm, tasks, quick, methods=("layer_mean",))


if __name__ == "__main__":
    main("exp8_layer_mean_fv", run, load_tasks, __doc__)
