"""exp6: two-hop reasoning across models: when do the bridge and the answer surface in the logit lens?

    python -m experiments.exp6_twohop_scaling --model smollm2-135m [--model ...] [--quick] [--prompts F.jsonl]

For each two-hop query ("The capital of the state where Dallas is located is"): the logit lens at the
last position, every layer, top-30; the first layer where the bridge entity (e2: Texas) enters the top-30,
the first layer where the answer (e3: Austin) does, the gap, whether the pattern is sequential (bridge
strictly before answer), and whether the greedy 10-token continuation contains the answer or an alias
(Biran et al.'s criterion). An entity counts as "in the top-30" when the first token of its label or of
any alias (with a leading space) is there. Layers are reported as index and as fraction of depth.
Prompts are plain text (no chat template), as the paper's base models saw them.
"""

from __future__ import annotations

import numpy as np

import mlx_interp as mi
from experiments.common import main, progress
from mlx_interp.tasks.twohop import load_queries, mentions

TOP = 30
QUICK_N = 8


def _first_tokens(lm, names: list[str]) -> list[str]:
    return [" " + n for n in names]


def first_layer_in_top(res, targets: list[str]) -> int | None:
    """First layer (not the embedding row) where any target's first token ranks < TOP."""
    for r in res.readings():
        if r.layer >= 0 and any(r.targets[t][0] < TOP for t in targets):
            return r.layer
    return None


def run(lm, queries, quick: bool) -> dict:
    if quick:
        queries = queries[:QUICK_N]
    L = lm.n_layers
    rows = []
    for i, q in enumerate(queries, 1):
        progress(i, len(queries), q.two_hop)
        e2t, e3t = _first_tokens(lm, q.names("e2")), _first_tokens(lm, q.names("e3"))
        res = mi.logit_lens(lm, q.two_hop, top_k=5, targets=list(dict.fromkeys(e2t + e3t)), include_embed=False)
        b, a = first_layer_in_top(res, e2t), first_layer_in_top(res, e3t)
        cont = mi.generate(lm, q.two_hop, max_tokens=10, chat=False)[0].text
        rows.append({
            "id": q.id, "family": q.family, "prompt": q.two_hop, "bridge": q.e2, "answer": q.e3,
            "bridge_layer": b, "answer_layer": a,
            "bridge_depth": None if b is None else b / (L - 1), "answer_depth": None if a is None else a / (L - 1),
            "gap": None if a is None or b is None else a - b,
            "sequential": b is not None and a is not None and b < a,
            "bridge_never_in_top30": b is None, "answer_never_in_top30": a is None,
            "continuation": cont, "correct": mentions(cont, q.names("e3")),
            "bridge_rank_by_layer": [min(r.targets[t][0] for t in e2t) for r in res.readings()],
            "answer_rank_by_layer": [min(r.targets[t][0] for t in e3t) for r in res.readings()],
        })
    gaps = [r["gap"] for r in rows if r["gap"] is not None]
    summary = {
        "n_queries": len(rows),
        "layers": L,
        "accuracy": float(np.mean([r["correct"] for r in rows])),
        "sequential_fraction": float(np.mean([r["sequential"] for r in rows])),
        "mean_gap_layers": float(np.mean(gaps)) if gaps else None,
        "mean_gap_depth": float(np.mean(gaps) / (L - 1)) if gaps else None,
        "bridge_never_in_top30": int(sum(r["bridge_never_in_top30"] for r in rows)),
        "answer_never_in_top30": int(sum(r["answer_never_in_top30"] for r in rows)),
        "per_family": {},
    }
    for fam in sorted({r["family"] for r in rows}):
        fr = [r for r in rows if r["family"] == fam]
        fg = [r["gap"] for r in fr if r["gap"] is not None]
        summary["per_family"][fam] = {"n": len(fr), "accuracy": float(np.mean([r["correct"] for r in fr])),
                                      "sequential_fraction": float(np.mean([r["sequential"] for r in fr])),
                                      "mean_gap_layers": float(np.mean(fg)) if fg else None}
    print(f"  accuracy {summary['accuracy']:.2f}, sequential {summary['sequential_fraction']:.2f}, "
          f"mean gap {summary['mean_gap_layers']} layers; bridge never in top-30: {summary['bridge_never_in_top30']}, "
          f"answer never: {summary['answer_never_in_top30']}")
    return {"summary": summary, "queries": rows}


if __name__ == "__main__":
    main("exp6_twohop_scaling", run, load_queries, __doc__)
