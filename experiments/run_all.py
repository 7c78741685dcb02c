"""Run every experiment on the given models: python -m experiments.run_all --model M [--quick] [--out DIR].

Order matters: exp10 reuses the refusal direction exp7 saved in the same --out folder. With two or more models, the
cross-model studies follow: exp16 (refusal direction) and exp17 (preference vector; the first model is its source).
"""

from __future__ import annotations

import sys

from experiments import (exp6_twohop_scaling, exp7_refusal_scaling, exp9_back_patching, exp10_crosslingual_refusal,
                         exp12_multimodel_directions, exp13_function_vectors, exp14_kv_transfer)
from experiments import exp16_refusal_transfer, exp17_preference_transfer
from experiments.common import main, parse
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

if __name__ == "__main__":
    for name, mod, loader in EXPERIMENTS:
        main(name, mod.run, loader, mod.__doc__, sys.argv[1:])
    if len(parse(__doc__, sys.argv[1:]).model or []) >= 2:
        exp16_refusal_transfer.main(sys.argv[1:])
        exp17_preference_transfer.main(sys.argv[1:])
