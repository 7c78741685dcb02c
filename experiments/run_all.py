"""Run every experiment on the given models: python -m experiments.run_all --model M [--quick] [--out DIR] [--resume].

Order matters: exp10 reuses the refusal direction exp7 saved in the same --out folder. Per model: exp6, exp7, exp9,
exp10, exp12, exp13 (with exp8 and exp11), exp14 and exp15 (exp15 takes each model's alias and builds its own
precision variants, so ``alias@precision`` models are read as their alias, once). With two or more models, the
cross-model studies follow: exp14e (a KV cache projected between the first two models, both ways), exp16
(refusal direction, every ordered pair) and exp17 (preference vector; the first model is its source).
"""

from __future__ import annotations

import sys

from experiments import (exp6_twohop_scaling, exp7_refusal_scaling, exp9_back_patching, exp10_crosslingual_refusal,
                         exp12_multimodel_directions, exp13_function_vectors, exp14_kv_transfer)
from experiments import exp14e_kv_projector, exp15_quantization, exp16_refusal_transfer, exp17_preference_transfer
from experiments.common import main, parse
from mlx_interp.store.precision import split_name
from mlx_interp.store.registry import DEFAULT_MODEL
from mlx_interp.tasks.twohop import load_queries

EXPERIMENTS = [
    ("exp6_twohop_scaling", exp6_twohop_scaling, load_queries),
    ("exp7_refusal_scaling", exp7_refusal_scaling, exp7_refusal_scaling.load_sets),
    ("exp9_back_patching", exp9_back_patching, load_queries),
    ("exp10_crosslingual_refusal", exp10_crosslingual_refusal, exp10_crosslingual_refusal.load_data),
    ("exp12_multimodel_directions", exp12_multimodel_directions, exp12_multimodel_directions.load_data),
    ("exp13_function_vectors", exp13_function_vectors, exp13_function_vectors.load_tasks),  # exp8, exp11 included
    ("exp14_kv_transfer", exp14_kv_transfer, exp14_kv_transfer.load_items),
]


def argv_for(models: list[str], argv: list[str]) -> list[str]:
    """``argv`` with its --model options replaced by ``models`` (every other option kept)."""
    return [y for m in models for y in ("--model", m)] + without(argv, "--model")


def without(argv: list[str], option: str) -> list[str]:
    """``argv`` less every ``option VALUE`` and ``option=VALUE``."""
    out, skip = [], False
    for x in argv:
        if skip:
            skip = False
            continue
        if x == option:
            skip = True
            continue
        if x.startswith(option + "="):
            continue
        out.append(x)
    return out


def exp15_models(models: list[str]) -> list[str]:
    """Each model's alias, once, in order (exp15 loads alias@fp32 and every variant itself)."""
    return list(dict.fromkeys(split_name(m)[0] for m in models))


if __name__ == "__main__":
    argv = sys.argv[1:]
    models = parse(__doc__, argv).model or [DEFAULT_MODEL]
    for name, mod, loader in EXPERIMENTS:
        main(name, mod.run, loader, mod.__doc__, argv)
    exp15_quantization.main(argv_for(exp15_models(models), argv))
    if len(models) >= 2:
        exp14e_kv_projector.main(argv_for(models[:2], argv))
        exp16_refusal_transfer.main(argv)
        exp17_preference_transfer.main(without(argv, "--from"))  # its --from continues an exp17 part, not exp10's exp7 file
