"""Run under ``mlx.launch -n 2 --backend ring`` by tests/test_parallel.py: the one batching path on two ranks.

Writes (rank 0 only, through runs.results' atomic writer) a JSON of what every rank computed: last-position logits,
captures, a difference of means, generations, and the world. Argument: the output path."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import mlx_interp as mi  # first: fast BLAS before mlx
import numpy as np

from mlx_interp.runs.results import atomic_write_new, provenance
from mlx_interp.core.batching import SHARE
from mlx_interp.runtime.parallel import gather_objects, world

PROMPTS = ["The capital of France is", "Two plus two equals", "The largest planet in the solar system is",
           "Water boils at", "The author of Hamlet is", "A week has seven", "Honey is made by"]
POS, NEG = ["I love this.", "What a wonderful day.", "Great work, thank you!"], ["I hate this.", "What an awful day.",
                                                                                  "Terrible work, sadly."]


def compute(lm) -> dict:
    tr = mi.run(lm, PROMPTS, capture=mi.Capture(["resid_post", "head"], [3, 20], "last"), batch_size=2)
    steer = mi.run(lm, PROMPTS, interventions=[mi.Add(np.ones(lm.width), layers=10, alpha=0.5, rows=[1, 4])], batch_size=3)
    vs = mi.diff_of_means(lm, POS, NEG, layers=[5, 15], batch_size=1)
    gens = mi.generate(lm, PROMPTS, max_tokens=6, batch_size=2)
    return {"logits": np.array(tr.logits).tolist(), "resid": np.array(tr["resid_post", 20]).tolist(),
            "head": np.array(tr["head", 3]).tolist(), "steered": np.array(steer.logits).tolist(),
            "dom": {str(k): v.tolist() for k, v in vs.vectors.items()}, "texts": [g.text for g in gens]}


if __name__ == "__main__":
    lm = mi.load("smollm2-135m")
    out = compute(lm)
    out["world"] = world().describe()
    out["provenance_world"] = provenance(lm)["world"]
    shares = gather_objects(dict(SHARE))  # every rank computed a share of the chunks, and together all of them
    out["chunks_computed"], out["chunks_total"] = [x["computed"] for x in shares], [x["total"] for x in shares]
    atomic_write_new(Path(sys.argv[1]), json.dumps(out))
