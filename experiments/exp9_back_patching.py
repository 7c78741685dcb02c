"""exp9: back-patching (Hopping Too Late): can a later layer's state fix a failed two-hop query, more than a control can?

    python -m experiments.exp9_back_patching --model smollm2-135m [--quick] [--prompts F.jsonl]

Procedure (Biran et al., EMNLP 2024; papers.md section 2; edenbiran/HoppingTooLate):
1. Greedy 10 tokens for the two-hop prompt, the first-hop prompt (must name e2) and the second-hop prompt (must
   name e3); answers match on word boundaries (tasks.twohop.mentions). Back-patching is tried on the
   composition-incorrect queries whose two hops the model answers on their own (the paper's analysis split;
   queries without a ``second_hop`` prompt cannot pass it and are counted as such).
2. Failures are taken round-robin across relation families (not the first ones in file order).
3. For each failure and position (t2: the last token; t1: the last token of e1), every (s, t) with s > t on the
   layer grid: the state h_s (``resid_post`` of layer s) is written into the same prompt at layer t, prefill only,
   and 10 tokens are decoded greedily; a pair fixes the query if the continuation names e3.
4. Controls on the same grid, positions and layers (same generation, same criterion):
   * ``other``: h_s of another query's prompt (another family, another answer) at the same kind of position;
   * ``noise``: a random vector with the norm of h_s;
   * ``identity``: every layer's own state written into itself (s = t), which must reproduce the unpatched
     continuation exactly (mismatches are counted).
   Cross-prompt patching as before: the one-hop prompt's last-token state at layer s into the two-hop prompt's last
   position at layer t < s.
5. Statistics: per-pair fix rates; "fixed by some pair" for back-patching and each control, and the paired
   difference back-patch minus control over the same failures with a bootstrap interval. "Some pair among up to
   435" is a multiple-comparisons criterion, so the best pair is also chosen on one half of the failures and its
   fix rate reported on the other half (and the other way round). Rates carry Wilson intervals and their n; a
   handful of failures is a small sample and is reported as such.

--quick: up to 4 filtered failures and every 3rd layer as source and target.
"""

from __future__ import annotations

import numpy as np

import mlx_interp as mi
from experiments.common import main, progress
from mlx_interp.measures.stats import paired_diff, rate
from mlx_interp.readouts.directions import random_direction
from mlx_interp.tasks.twohop import load_queries, mentions

PAPER_HEADLINE = "up to 66% of previously incorrect cases have a back-patch that gives the correct answer (Biran et al. 2024)"
KINDS = ("backpatch", "other", "noise")


def t1_position(lm, q) -> int:
    """Index of the last token of e1 in the tokenized two-hop prompt."""
    prefix = q.two_hop[: q.two_hop.index(q.e1) + len(q.e1)]
    return len(lm.tokenizer.encode(prefix)) - 1


def _gen(lm, prompt: str, ivs: list, n: int) -> list[str]:
    return [g.text for g in mi.generate(lm, [prompt] * n, max_tokens=10, interventions=ivs)]


def patch_grids(lm, prompt: str, sources: dict, pos: int, layers: list[int], answer: list[str]) -> dict:
    """success[kind][s, t] (-1: not run) for each kind's source states (layer -> [D]) written at layer t < s, position pos;
    one generation batch per source layer holds every kind and target as rows."""
    L = lm.n_layers
    grids = {k: np.full((L, L), -1, dtype=int) for k in sources}
    for s in layers:
        targets = [t for t in layers if t < s]
        if not targets:
            continue
        rows = [(k, t) for k in sources for t in targets]
        ivs = [mi.Patch(sources[k][s], layers=t, positions=pos, rows=[i]) for i, (k, t) in enumerate(rows)]
        for (k, t), text in zip(rows, _gen(lm, prompt, ivs, len(rows))):
            grids[k][s, t] = int(mentions(text, answer))
    return grids


def identity_mismatches(lm, prompt: str, own: dict, pos: int, layers: list[int], baseline: str) -> int:
    """How many layers' own state written into themselves change the greedy continuation (must be 0)."""
    ivs = [mi.Patch(own[t], layers=t, positions=pos, rows=[i]) for i, t in enumerate(layers)]
    return sum(text != baseline for text in _gen(lm, prompt, ivs, len(layers)))


def both_hops_known_failures(rows: list[dict]) -> list[dict]:
    """The paper's analysis split: compositions answered wrongly whose first and second hops are answered right."""
    return [r for r in rows if not r["composition_correct"] and r["first_hop_correct"] and r["second_hop_correct"]]


def _round_robin(items: list, key) -> list:
    """Items interleaved across groups (one of each group in turn, groups in first-seen order)."""
    groups: dict = {}
    for x in items:
        groups.setdefault(key(x), []).append(x)
    out, lists = [], list(groups.values())
    while any(lists):
        for g in lists:
            if g:
                out.append(g.pop(0))
    return out


def _states(lm, prompt: str, layers: list[int], pos) -> dict:
    tr = mi.run(lm, prompt, capture=mi.Capture("resid_post", layers, pos))
    return {s: np.array(tr["resid_post", s][0]) for s in layers}


def _split_halves(fixed: np.ndarray, seed: int = 0) -> dict:
    """Best pair chosen on one half of the failures, its fix rate on the other half (both ways)."""
    n = fixed.shape[0]
    if n < 2:
        return {"n": n, "note": "fewer than 2 failures: no split"}
    idx = np.random.default_rng(seed).permutation(n)
    halves = (idx[: n // 2], idx[n // 2:])
    out = []
    for choose, report in (halves, halves[::-1]):
        per_pair = np.where(fixed[choose] >= 0, fixed[choose], 0).sum(0)
        s, t = np.unravel_index(int(per_pair.argmax()), per_pair.shape)
        if per_pair[s, t] == 0:  # no pair fixed a failure of this half: nothing to choose (argmax would say 0->0)
            out.append({"source": None, "target": None, "chosen_fix_rate": 0.0, "held_out": rate(0, len(report)).as_dict()})
            continue
        held = fixed[report][:, s, t]
        out.append({"source": int(s), "target": int(t), "chosen_fix_rate": float(per_pair[s, t] / len(choose)),
                    "held_out": rate(int((held == 1).sum()), len(report)).as_dict()})
    return {"n": n, "folds": out}


def run(lm, queries, quick: bool) -> dict:
    L = lm.n_layers
    layers = list(range(0, L, 3)) if quick else list(range(L))
    two = [g.text for g in mi.generate(lm, [q.two_hop for q in queries], max_tokens=10)]
    first = [g.text for g in mi.generate(lm, [q.first_hop for q in queries], max_tokens=10)]
    has2 = [q for q in queries if q.second_hop]
    second = dict(zip([q.id for q in has2], [g.text for g in mi.generate(lm, [q.second_hop for q in has2], max_tokens=10)])) if has2 else {}
    rows = []
    for q, c2, c1 in zip(queries, two, first):
        rows.append({"q": q, "continuation": c2, "composition_correct": mentions(c2, q.names("e3")),
                     "first_hop_correct": mentions(c1, q.names("e2")),
                     "second_hop_correct": q.id in second and mentions(second[q.id], q.names("e3"))})
    eligible = both_hops_known_failures(rows)
    failures = _round_robin(eligible, key=lambda r: r["q"].family)[: 4 if quick else None]
    counts = {"n_queries": len(rows), "composition_correct": sum(r["composition_correct"] for r in rows),
              "composition_incorrect": sum(not r["composition_correct"] for r in rows),
              "incorrect_with_both_hops_correct": len(eligible), "tested": len(failures),
              "without_second_hop_prompt": sum(not r["q"].second_hop for r in rows)}
    heat = {f"{pos}_{k}": np.zeros((L, L), int) for pos in ("t2", "t1") for k in KINDS}
    heat["cross"] = np.zeros((L, L), int)
    fixed = {f"{pos}_{k}": [] for pos in ("t2", "t1") for k in KINDS}
    out_rows, ident = [], 0
    for i, r in enumerate(failures, 1):
        q = r["q"]
        progress(i, len(failures), q.two_hop)
        names = q.names("e3")
        other = next((x["q"] for x in rows if x["q"].family != q.family and x["q"].e3 != q.e3), None)
        row = {"id": q.id, "family": q.family, "prompt": q.two_hop, "answer": q.e3, "continuation": r["continuation"],
               "control_prompt": other.two_hop if other else None}
        for key, pos in (("t2", -1), ("t1", t1_position(lm, q))):
            own = _states(lm, q.two_hop, layers, pos)
            srcs = {"backpatch": own}
            if other is not None:
                srcs["other"] = _states(lm, other.two_hop, layers, -1 if key == "t2" else t1_position(lm, other))
            rng_seed = 1000 * i + (key == "t1")
            srcs["noise"] = {s: random_direction(lm.width, float(np.linalg.norm(h)), seed=rng_seed + s) for s, h in own.items()}
            grids = patch_grids(lm, q.two_hop, srcs, pos, layers, names)
            ident += identity_mismatches(lm, q.two_hop, own, pos, layers, r["continuation"])
            for k, g in grids.items():
                heat[f"{key}_{k}"] += np.maximum(g, 0)
                fixed[f"{key}_{k}"].append(g)
                row[f"fixed_{key}_{k}"] = bool((g == 1).any())
                row[f"pairs_{key}_{k}"] = np.argwhere(g == 1).tolist()
        cross = patch_grids(lm, q.two_hop, {"cross": _states(lm, q.first_hop, layers, "last")}, -1, layers, names)["cross"]
        heat["cross"] += np.maximum(cross, 0)
        row["fixed_cross"] = bool((cross == 1).any())
        out_rows.append(row)
    n = len(out_rows)
    summary = {**counts, "layers": L, "layer_grid": layers, "identity_patch_mismatches": ident, "paper": PAPER_HEADLINE,
               "small_sample": n < 20}
    if n:
        for key in ("t2", "t1"):
            for k in KINDS:
                flags = [r.get(f"fixed_{key}_{k}") for r in out_rows if f"fixed_{key}_{k}" in r]
                if flags:
                    summary[f"fixed_{key}_{k}"] = rate(flags).as_dict()
            bp = [r[f"fixed_{key}_backpatch"] for r in out_rows]
            for k in ("other", "noise"):
                if all(f"fixed_{key}_{k}" in r for r in out_rows):
                    summary[f"diff_{key}_backpatch_minus_{k}"] = paired_diff(bp, [r[f"fixed_{key}_{k}"] for r in out_rows])
            summary[f"best_pair_split_{key}"] = _split_halves(np.stack(fixed[f"{key}_backpatch"]))
            pair_rates = np.where(np.stack(fixed[f"{key}_backpatch"]) >= 0, np.stack(fixed[f"{key}_backpatch"]), 0).mean(0)
            s, t = np.unravel_index(int(pair_rates.argmax()), pair_rates.shape)
            summary[f"best_pair_in_sample_{key}"] = {"source": int(s), "target": int(t), "fix_rate": float(pair_rates[s, t]),
                                                     "note": "chosen and reported on the same failures (optimistic)"}
        summary["fixed_cross"] = rate([r["fixed_cross"] for r in out_rows]).as_dict()
        fams = sorted({r["family"] for r in out_rows})
        summary["per_family"] = {f: {"n": sum(r["family"] == f for r in out_rows),
                                     "fixed_t2_backpatch": int(sum(r["fixed_t2_backpatch"] for r in out_rows if r["family"] == f))}
                                 for f in fams}
        print(f"  {counts['composition_correct']}/{len(rows)} correct; {len(eligible)} failures know both hops, {n} tested; "
              f"fixed at t2: back-patch {summary['fixed_t2_backpatch']['p']:.2f}, other-prompt control "
              f"{summary.get('fixed_t2_other', {}).get('p', float('nan')):.2f}, noise {summary['fixed_t2_noise']['p']:.2f}; "
              f"identity mismatches {ident}")
    else:
        print(f"  {counts['composition_correct']}/{len(rows)} correct; no failure knows both hops: nothing to back-patch")
    return {"summary": summary, "heatmaps": {k: v.tolist() for k, v in heat.items()}, "failures": out_rows,
            "queries": [{"id": r["q"].id, "family": r["q"].family, "composition_correct": r["composition_correct"],
                         "first_hop_correct": r["first_hop_correct"], "second_hop_correct": r["second_hop_correct"],
                         "continuation": r["continuation"]} for r in rows]}


if __name__ == "__main__":
    main("exp9_back_patching", run, load_queries, __doc__)
