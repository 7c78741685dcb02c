"""exp9: back-patching (Hopping Too Late): can a later layer's state fix a failed two-hop query?

    python -m experiments.exp9_back_patching --model smollm2-135m [--quick] [--prompts F.jsonl]

Procedure (Biran et al., EMNLP 2024, section 2 of papers.md): run the two-hop prompt; for a query the
model gets wrong (greedy 10 tokens contain neither the answer nor an alias), take the hidden state h_s
(``resid_post`` of layer s) at position t2 (last token) or t1 (last token of the first-hop entity e1),
and write it into the same prompt at the same position at an earlier layer t < s, on the prefill pass
only; decode 10 tokens greedily; the query is fixed if the answer appears. Reported: the fraction of
failures fixed by at least one (s, t) pair, per position and relation family, the success count of each
(s, t) cell, and the best pair. All targets t < s for one source are run as one batch, one row per t.

Cross-prompt patching: the bridge entity's representation from the one-hop prompt ("Dallas is located in
the state of", last token) at layer s, written into the two-hop prompt's last position at layer t.

--quick: the first 4 failing queries and every 3rd layer as source and target.
"""

from __future__ import annotations

import numpy as np

import mlx_interp as mi
from experiments.common import main, progress
from mlx_interp.tasks.twohop import load_queries, mentions

PAPER_HEADLINE = "up to 66% of previously incorrect cases have a back-patch that gives the correct answer (Biran et al. 2024)"


def t1_position(lm, q) -> int:
    """Index of the last token of e1 in the tokenized two-hop prompt."""
    prefix = q.two_hop[: q.two_hop.index(q.e1) + len(q.e1)]
    return len(lm.tokenizer.encode(prefix)) - 1


def patch_grid(lm, prompt: str, states: dict, pos: int, layers: list[int], answer_names: list[str]) -> np.ndarray:
    """success[s, t] for source states h_s (dict layer -> [D]) written at layer t < s, position pos."""
    L = lm.n_layers
    grid = np.full((L, L), -1, dtype=int)  # -1: not run (t >= s or outside the quick grid)
    for s in layers:
        targets = [t for t in layers if t < s]
        if not targets:
            continue
        ivs = [mi.Patch(states[s], layers=t, positions=pos, rows=[i]) for i, t in enumerate(targets)]
        gens = mi.generate(lm, [prompt] * len(targets), max_tokens=10, chat=False, interventions=ivs)
        for t, g in zip(targets, gens):
            grid[s, t] = int(mentions(g.text, answer_names))
    return grid


def run(lm, queries, quick: bool) -> dict:
    L = lm.n_layers
    layers = list(range(0, L, 3)) if quick else list(range(L))
    conts = [g.text for g in mi.generate(lm, [q.two_hop for q in queries], max_tokens=10, chat=False)]
    failed = [(q, c) for q, c in zip(queries, conts) if not mentions(c, q.names("e3"))]
    correct = len(queries) - len(failed)
    if quick:
        failed = failed[:4]
    out_rows = []
    heat = {"t2": np.zeros((L, L), int), "t1": np.zeros((L, L), int), "cross": np.zeros((L, L), int)}
    for i, (q, cont) in enumerate(failed, 1):
        progress(i, len(failed), q.two_hop)
        names = q.names("e3")
        row = {"id": q.id, "family": q.family, "prompt": q.two_hop, "answer": q.e3, "continuation": cont}
        for key, pos in (("t2", -1), ("t1", t1_position(lm, q))):
            tr = mi.run(lm, q.two_hop, capture=mi.Capture("resid_post", layers, pos))
            grid = patch_grid(lm, q.two_hop, {s: np.array(tr["resid_post", s][0]) for s in layers}, pos, layers, names)
            heat[key] += np.maximum(grid, 0)
            hits = np.argwhere(grid == 1)
            row[f"fixed_{key}"] = bool(len(hits))
            row[f"pairs_{key}"] = hits.tolist()
        one = mi.run(lm, q.first_hop, capture=mi.Capture("resid_post", layers, "last"))
        grid = patch_grid(lm, q.two_hop, {s: np.array(one["resid_post", s][0]) for s in layers}, -1, layers, names)
        # cross-prompt: any source layer may go to any target layer (t < s as in back-patching)
        heat["cross"] += np.maximum(grid, 0)
        row["fixed_cross"] = bool((grid == 1).any())
        row["pairs_cross"] = np.argwhere(grid == 1).tolist()
        out_rows.append(row)
    n = len(out_rows)

    def frac(key, rows=out_rows):
        return float(np.mean([r[key] for r in rows])) if rows else None

    best = {}
    for key, h in heat.items():
        s, t = np.unravel_index(int(h.argmax()), h.shape)
        best[key] = {"source": int(s), "target": int(t), "fixed": int(h[s, t]), "of": n}
    summary = {
        "n_queries": len(queries), "n_correct": correct, "n_failed_tested": n, "layers": L,
        "layer_grid": layers,
        "fixed_fraction_t2": frac("fixed_t2"), "fixed_fraction_t1": frac("fixed_t1"),
        "fixed_fraction_any_position": float(np.mean([r["fixed_t1"] or r["fixed_t2"] for r in out_rows])) if n else None,
        "fixed_fraction_cross_prompt": frac("fixed_cross"),
        "best_pair": best,
        "per_family": {f: {"n": len(rs), "fixed_t2": frac("fixed_t2", rs), "fixed_t1": frac("fixed_t1", rs)}
                       for f in sorted({r["family"] for r in out_rows}) for rs in [[r for r in out_rows if r["family"] == f]]},
        "paper": PAPER_HEADLINE,
    }
    print(f"  correct {correct}/{len(queries)}; of {n} failures tested, fixed: t2 {summary['fixed_fraction_t2']}, "
          f"t1 {summary['fixed_fraction_t1']}, cross-prompt {summary['fixed_fraction_cross_prompt']}")
    return {"summary": summary, "heatmaps": {k: v.tolist() for k, v in heat.items()}, "failures": out_rows}


if __name__ == "__main__":
    main("exp9_back_patching", run, load_queries, __doc__)
