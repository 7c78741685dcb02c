"""Run every experiment on the given models: python -m experiments.run_all --model M [--quick]."""

from __future__ import annotations

import sys

from experiments import exp6_twohop_scaling, exp9_back_patching
from experiments.common import main
from mlx_interp.twohop import load_queries

EXPERIMENTS = [("exp6_twohop_scaling", exp6_twohop_scaling), ("exp9_back_patching", exp9_back_patching)]

if __name__ == "__main__":
    for name, mod in EXPERIMENTS:
        main(name, mod.run, load_queries, mod.__doc__, sys.argv[1:])
