"""exp6: two-hop reasoning across models: when do the bridge and the answer surface in the logit lens?

    python -m experiments.exp6_twohop_scaling --model smollm2-135m [--model ...] [--quick] [--prompts F.jsonl]

For each two-hop query ("The capital of the state where Dallas is located is"), the logit lens at the last
position of every layer (``resid_post``). An entity surfaces at a layer when its whole name ranks in the top 30
there: every token of the label (or of one alias), each read with the name's earlier tokens fed, ranks < 30
(``readouts.lens.name_ranks``). A first token alone does not count: " G" for "GBP", " L" for "Lennon" or
" New" for "New York" rank high for many words (the old rule found the Imagine bridge at layer 0 via " L").
Reported per query: the first layer where the bridge (e2: Texas) surfaces, the first for the answer
(e3: Austin), the gap, whether the pattern is sequential (bridge strictly before answer), and whether the
greedy 10-token continuation names the answer or an alias as whole words (Biran et al. match substrings; on
word boundaries "German" no longer counts inside "Germany"). Statistics are split into correct and incorrect
compositions (the paper's key contrast), with Wilson intervals for rates and bootstrap intervals for the gap.
A second readout, side by side: the Patchscope entity description (readouts.patchscope, the method Hopping Too
Late uses): the last-position state of layer s is written over the "x" of an entity-description prompt at layer
s, 10 tokens are decoded greedily, and the entity counts as resolved at the first s whose description names it
(the reference's patterns). Deviations from the reference: greedy, not 3 sampled seeds; target layer t = s, not
the full s x t grid. Third, the tuned lens (readouts.tuned_lens) with the same whole-name rule, when one has been
trained for the model (``mlx-interp train-lens --model M``; its held-out KL per layer is recorded); otherwise
the result says it was not trained.
Depth = layer / L (``core.sites.depth``), the same convention as every experiment and figure.
Prompts are plain text (no chat template), as the paper's base models saw them.
"""

from __future__ import annotations

import numpy as np

import mlx_interp as mi
from experiments.common import main, progress
from mlx_interp.core.sites import depth
from mlx_interp.measures.stats import bootstrap_ci, rate
from mlx_interp.readouts.lens import name_ranks
from mlx_interp.readouts.patchscope import describe, names_entity
from mlx_interp.tasks.twohop import load_queries, mentions

TOP = 30
QUICK_N = 8


def first_layer(ranks: np.ndarray) -> int | None:
    """First layer whose whole-name rank is within the top ``TOP``."""
    hits = np.flatnonzero(np.asarray(ranks) < TOP)
    return int(hits[0]) if hits.size else None


def _patchscope(lm, q) -> dict:
    """First source layer whose Patchscope description names the bridge / the answer (target layer = source)."""
    L = lm.n_layers
    tr = mi.run(lm, q.two_hop, capture=mi.Capture("resid_post", "all", "last"))
    texts = describe(lm, [np.array(tr["resid_post", s][0]) for s in range(L)], list(range(L)))
    b = [names_entity(t, q.names("e2")) for t in texts]
    a = [names_entity(t, q.names("e3")) for t in texts]
    return {"bridge_layer": b.index(True) if any(b) else None, "answer_layer": a.index(True) if any(a) else None,
            "descriptions": texts}


def _stats(rows: list[dict], L: int) -> dict:
    if not rows:
        return {"n": 0}
    gaps = [r["gap"] for r in rows if r["gap"] is not None]
    out = {"n": len(rows), "sequential": rate([r["sequential"] for r in rows]).as_dict(),
           "both_surface": rate([r["gap"] is not None for r in rows]).as_dict(),
           "bridge_never": int(sum(r["bridge_layer"] is None for r in rows)),
           "answer_never": int(sum(r["answer_layer"] is None for r in rows)),
           "mean_gap_layers": float(np.mean(gaps)) if gaps else None,
           "mean_gap_depth": float(np.mean(gaps)) / L if gaps else None, "n_gaps": len(gaps)}
    if len(gaps) >= 2:
        lo, hi = bootstrap_ci(gaps)
        out["gap_ci_layers"] = [lo, hi]
    return out


def run(lm, queries, quick: bool) -> dict:
    from mlx_interp.readouts.tuned_lens import TunedLens, default_path

    if quick:
        queries = queries[:QUICK_N]
    L = lm.n_layers
    tuned = TunedLens.load(default_path(lm), lm) if default_path(lm).is_file() else None
    if tuned is not None and not tuned.complete:
        print(f"  the tuned lens {default_path(lm)} is partial ({len(tuned.translators)} of {L - 1} layers): not used; "
              f"finish it with mlx-interp train-lens --model {lm.name} --resume", flush=True)
        tuned = None
    conts = [g.text for g in mi.generate(lm, [q.two_hop for q in queries], max_tokens=10)]
    rows = []
    for i, (q, cont) in enumerate(zip(queries, conts), 1):
        progress(i, len(queries), q.two_hop)
        br, ar = name_ranks(lm, q.two_hop, q.names("e2")), name_ranks(lm, q.two_hop, q.names("e3"))
        b, a = first_layer(br), first_layer(ar)
        ps = _patchscope(lm, q)
        tl = None
        if tuned is not None:
            tb, ta = name_ranks(lm, q.two_hop, q.names("e2"), tuned), name_ranks(lm, q.two_hop, q.names("e3"), tuned)
            b2, a2 = first_layer(tb), first_layer(ta)
            tl = {"bridge_layer": b2, "answer_layer": a2, "gap": None if a2 is None or b2 is None else a2 - b2,
                  "sequential": b2 is not None and a2 is not None and b2 < a2,
                  "bridge_rank_by_layer": tb.tolist(), "answer_rank_by_layer": ta.tolist()}
        pb, pa = ps["bridge_layer"], ps["answer_layer"]
        rows.append({
            "id": q.id, "family": q.family, "prompt": q.two_hop, "bridge": q.e2, "answer": q.e3,
            "bridge_layer": b, "answer_layer": a,
            "bridge_depth": None if b is None else depth(b, L), "answer_depth": None if a is None else depth(a, L),
            "gap": None if a is None or b is None else a - b,
            "sequential": b is not None and a is not None and b < a,
            "continuation": cont, "correct": mentions(cont, q.names("e3")),
            "bridge_rank_by_layer": br.tolist(), "answer_rank_by_layer": ar.tolist(),
            "patchscope": {"bridge_layer": pb, "answer_layer": pa, "gap": None if pa is None or pb is None else pa - pb,
                           "sequential": pb is not None and pa is not None and pb < pa, "descriptions": ps["descriptions"]},
            "tuned_lens": tl,
        })
    right, wrong = [r for r in rows if r["correct"]], [r for r in rows if not r["correct"]]
    summary = {"n_queries": len(rows), "layers": L, "depth_convention": "layer / L", "rule": f"whole name in the lens top {TOP}",
               "accuracy": rate([r["correct"] for r in rows]).as_dict(),
               "all": _stats(rows, L), "correct": _stats(right, L), "incorrect": _stats(wrong, L), "per_family": {}}
    ps_rows = [r["patchscope"] | {"correct": r["correct"]} for r in rows]
    summary["patchscope"] = {"all": _stats(ps_rows, L), "correct": _stats([r for r in ps_rows if r["correct"]], L),
                             "incorrect": _stats([r for r in ps_rows if not r["correct"]], L),
                             "method": "greedy description from source layer s patched at target layer s"}
    if tuned is not None:
        tl_rows = [r["tuned_lens"] | {"correct": r["correct"]} for r in rows]
        summary["tuned_lens"] = {"all": _stats(tl_rows, L), "correct": _stats([r for r in tl_rows if r["correct"]], L),
                                 "incorrect": _stats([r for r in tl_rows if not r["correct"]], L), "training": tuned.meta}
    else:
        summary["tuned_lens"] = {"trained": False, "note": f"no complete tuned lens for {lm.name}: mlx-interp train-lens --model {lm.name}"}
    for fam in sorted({r["family"] for r in rows}):
        fr = [r for r in rows if r["family"] == fam]
        summary["per_family"][fam] = {"accuracy": rate([r["correct"] for r in fr]).as_dict(), **_stats(fr, L)}
    s = summary["all"]
    print(f"  accuracy {summary['accuracy']['p']:.2f} (n={len(rows)}), sequential {s['sequential']['p']:.2f}, "
          f"mean gap {s['mean_gap_layers']} layers over {s['n_gaps']} queries; bridge never surfaces: {s['bridge_never']}, "
          f"answer never: {s['answer_never']}")
    return {"summary": summary, "queries": rows}


if __name__ == "__main__":
    main("exp6_twohop_scaling", run, load_queries, __doc__)
