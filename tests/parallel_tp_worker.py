"""Run under ``mlx.launch -n N`` by tests/test_parallel.py: a tensor-parallel model (``load(shard=True)``) read and
patched through the usual sites. Arguments: model alias, output path (rank 0 writes)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import mlx_interp as mi  # first: fast BLAS before mlx
import numpy as np

from mlx_interp.runs.results import atomic_write_new

PROMPTS = ["The capital of France is", "Two plus two equals", "Honey is made by"]


def compute(lm) -> dict:
    L = lm.n_layers
    tr = mi.run(lm, PROMPTS, capture=[mi.Capture(["resid_post", "attn_out"], [2, L - 2], "last"),
                                      mi.Capture(["head", "k", "v"], [1, L - 3], "last")])
    n_heads = tr["head", 1].shape[-2]
    patched = mi.run(lm, PROMPTS, interventions=[mi.Patch(np.zeros(tr["head", 1].shape[-1]), site="head", layers=[1, 4],
                                                          heads=[n_heads - 1, 0])])
    gens = mi.generate(lm, PROMPTS, max_tokens=5)
    return {"logits": np.array(tr.logits).tolist(), "patched": np.array(patched.logits).tolist(),
            **{f"{k}{l}": np.array(tr[k, l]).tolist() for k in ("resid_post", "attn_out") for l in (2, L - 2)},
            **{f"{k}{l}": np.array(tr[k, l]).tolist() for k in ("head", "k", "v") for l in (1, L - 3)},
            "texts": [g.text for g in gens]}


if __name__ == "__main__":
    lm = mi.load(sys.argv[1], shard=True)
    out = compute(lm)
    out["tensor_parallel"] = lm.tensor_parallel
    atomic_write_new(Path(sys.argv[2]), json.dumps(out))
