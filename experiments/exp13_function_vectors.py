"""exp13: function vectors from attention heads found by causal mediation (Todd et al., ICLR 2024), beside the
study's two layer-level attempts (exp8: mean layer activation; exp11: ICL minus zero-shot), on the same items.

    python -m experiments.exp13_function_vectors --model smollm2-135m [--model ...] [--quick] [--prompts TASK.json]

Tasks: the paper's six headline tasks (antonym, capitalize, country-capital, english-french, present-past,
singular-plural) plus sentiment (the study's own four are antonym, translation, country-capital, sentiment), split
as the reference (70/21/9, seed 42), template ``Q: {x}\\nA: {y}\\n\\n`` with 10 demonstrations from train.
Procedure, controls and deviations: experiments/fv_study.py (the shared pipeline); the method:
mlx_interp.methods.function_vectors. Every choice (|A|, the swept layer) is made on valid survivors and reported on
test survivors; each result names which split chose what.
--quick: antonym and country-capital, 24 valid / 32 test items scanned, 16 mean prompts, 6 AIE prompts, |A| = 10,
every 3rd layer swept. --prompts: one task file (a JSON list of {"input", "output"}) instead of the built-in tasks.
"""

from __future__ import annotations

from pathlib import Path

from experiments import fv_study
from experiments.common import main
from mlx_interp.tasks import icl


def load_tasks(path: str | None) -> list | None:
    """The built-in tasks (None: chosen by --quick inside run) or one user task file."""
    return None if path is None else [icl.load_task(Path(path).stem, path)]


def run(lm, tasks, quick: bool) -> dict:
    return fv_study.run(lm, tasks, quick, methods=fv_study.METHODS)


if __name__ == "__main__":
    main("exp13_function_vectors", run, load_tasks, __doc__)
