"""exp7: the refusal direction across models (Arditi et al.): where it lives, how strong, what it does.

    python -m experiments.exp7_refusal_scaling --model qwen2.5-coder-0.5b [--model ...] [--quick] [--prompts F.jsonl]

Per instruct model (papers.md section 3, with mlx_interp.methods.refusal):
1. Refusal-start tokens derived from the model's own refusals (first tokens of refused harmful train prompts).
2. Vetting: harmful train and val prompts the model does not refuse, and harmless ones it does refuse, are
   dropped (greedy 32 tokens, refusal phrase list). Counts reported. The paper filters val prompts by the
   metric's sign instead; on Qwen2.5-Coder-0.5B 0 of 8 (quick) and 6 of 32 (full) harmful val prompts had
   metric > 0 although greedy decoding refused about half (P("I") ~0.3 but still the argmax), so the sign
   filter is reported, not applied.
3. Candidates: diff of means at every block input and post-instruction position; norms per layer.
4. Selection (on the validation prompts): bypass / induce / KL scores, l < int(0.8 L) as the reference prunes,
   KL < 0.1, induce > 0; best layer as index and % of depth; ``induce_filter_fell_back`` says when the bar below was used.
   If no candidate reaches induce > 0 (a small model whose refusal token rarely gets P > 0.5), the bar becomes
   the unsteered harmful mean metric, and the result says which rule was used.
5. Addition strength: besides the paper's alpha = 1, a coherence-bounded multiplier search (norm-relative,
   steering.search_multiplier) on harmless val prompts; its best coherent alpha is also evaluated held out.
6. Also the lowest-bypass candidate without the KL and induce filters ("unconstrained"), when it differs: its
   ablation is evaluated held out on harmful and harmless prompts too, so the cost of the KL bar is visible.
7. Held-out effect (JailbreakBench harmful, Alpaca eval harmless), each condition beside the same intervention with a
   random direction of the same norm (``*_random``), rates with Wilson intervals: refusal score (any phrase, greedy) and
   coherence, baseline vs directional ablation on harmful, baseline vs +r at l* on harmless, and -r at l*
   on harmful (the repo's actadd column).
Base models (no chat template) get what applies: their refusal rate on the harmful eval prompts (plain text)
and the diff-of-means norm per layer; selection and steering are reported as not applicable.

--quick: 32+32 train, 8+8 val, 16+16 eval prompts, last position only, every 2nd layer, 32 new tokens.
Full: 128+128 train, 32+32 val, 100+100 eval, all post-instruction positions and layers, 64 new tokens.
--prompts F.jsonl: rows {"prompt": ..., "label": "harmful"|"harmless"} replace the held-out eval sets.
"""

from __future__ import annotations

import json

import numpy as np

import mlx_interp as mi
from experiments.common import progress
from mlx_interp.core.batching import format_prompt
from mlx_interp.core.generate import generate, generate_conditions
from mlx_interp.errors import MlxInterpError
from mlx_interp.measures.generations import score_conditions
from mlx_interp.measures.text import refusal_rate, refusal_score
from mlx_interp.methods import refusal
from mlx_interp.methods.refusal import refusal_start_tokens
from mlx_interp.methods.steering import search_multiplier
from mlx_interp.methods.vetting import vet
from mlx_interp.readouts.directions import random_direction
from mlx_interp.tasks.datasets import refusal_eval_prompts, refusal_prompts, refusal_substrings

# Paper Table 5 rows for the two sub-3B models, and their committed pipeline runs (papers.md section 3).
PAPER = {
    "Qwen-1.8B-chat": {"pos": -1, "layer": 15, "L": 24, "bypass": -4.415, "induce": 1.641, "kl": 0.077,
                       "jbb_baseline": 0.70, "jbb_ablation": 0.01, "jbb_minus_r": 0.03, "alpaca_baseline": 0.03, "alpaca_plus_r": 0.98},
    "Gemma-2B-it": {"pos": -2, "layer": 10, "L": 18, "bypass": -14.435, "induce": 6.709, "kl": 0.067,
                    "jbb_baseline": 0.91, "jbb_ablation": 0.00, "jbb_minus_r": 0.02, "alpaca_baseline": 0.00, "alpaca_plus_r": 1.00},
}


def load_sets(path: str | None) -> dict:
    h_tr, hl_tr = refusal_prompts("train")
    h_va, hl_va = refusal_prompts("val")
    h_te, hl_te = refusal_eval_prompts()
    if path:
        rows = [json.loads(x) for x in open(path) if x.strip()]
        bad = [r.get("label") for r in rows if r.get("label") not in ("harmful", "harmless")]
        if bad:
            raise MlxInterpError(f"--prompts rows need label 'harmful' or 'harmless'; got {bad[0]!r}")
        h_te = [r["prompt"] for r in rows if r["label"] == "harmful"]
        hl_te = [r["prompt"] for r in rows if r["label"] == "harmless"]
    return {"train": (h_tr, hl_tr), "val": (h_va, hl_va), "test": (h_te, hl_te)}


def held_out(lm, conditions: dict, max_tokens: int, phrases, batch: int = 32) -> dict:
    """Greedy chat generations of the held-out conditions (``{name: (prompts, interventions)}``), scored for refusal
    and judged for coherence. The conditions on one prompt set decode in one ``generate_conditions`` call
    (length-sorted chunks of ``batch``, see core.batching; bench/bench_generate_batch.py measures the per-prompt cost of
    16/32/64) and are judged in one pass that reads each prompt once; one call per prompt set, so a resumed run keeps
    each set's generations. Separate calls per condition left a 4-row chunk per 100 prompts and judged every prompt
    once per condition."""
    refuses = lambda t: bool(refusal_score(t, phrases))  # noqa: E731
    by_set: dict[tuple, dict] = {}
    for name, (prompts, ivs) in conditions.items():
        by_set.setdefault(tuple(prompts), {})[name] = (prompts, ivs)
    out = {}
    for conds in by_set.values():
        gens = generate_conditions(lm, conds, max_tokens=max_tokens, chat=True, batch_size=batch)
        scored = score_conditions(lm, gens, {"refusal": refuses})
        out.update({k: {"refusal_score": refusal_rate([g.text for g in gens[k]], phrases), **scored[k]} for k in conds})
    return {k: out[k] for k in conditions}


def not_applicable(lm, sets, quick, reason: str, extra: dict | None = None) -> dict:
    """What can still be measured when the model does not refuse: its refusal rates and the direction's norms."""
    n = 16 if quick else 100
    phrases = refusal_substrings()
    chat = lm.instruct
    h_te, hl_te = (s[:n] for s in sets["test"])
    rates = {k: refusal_rate([g.text for g in generate(lm, p, max_tokens=32 if quick else 64, chat=chat)], phrases)
             for k, p in (("harmful_baseline", h_te), ("harmless_baseline", hl_te))}
    h_tr, hl_tr = (s[:32 if quick else 128] for s in sets["train"])
    vs = mi.diff_of_means(lm, h_tr, hl_tr, chat=chat, site="resid_pre", layers=list(range(1, lm.n_layers)))
    return {"applies": False, "reason": reason, "summary": {**rates, "layers": lm.n_layers, "n_eval": len(h_te)},
            "norms": {str(k): v for k, v in vs.norms().items()},
            "norm_note": f"unvetted diff of means, harmful - harmless ({'chat' if chat else 'plain text'}, last token) at block input l",
            **(extra or {})}


def run(lm, sets, quick: bool) -> dict:
    if not lm.instruct:
        return not_applicable(lm, sets, quick, "base model (no chat template): not trained to refuse, so refusal-start "
                                               "tokens, vetting, selection and steering do not apply")
    L = lm.n_layers
    phrases = refusal_substrings()
    n_tr, n_va, n_te, max_tok = (32, 8, 16, 32) if quick else (128, 32, 100, 64)
    h_tr, hl_tr = (s[:n_tr] for s in sets["train"])
    h_va, hl_va = (s[:n_va] for s in sets["val"])
    h_te, hl_te = (s[:n_te] for s in sets["test"])

    progress(2, 6, "vetting train prompts")
    refuses = lambda t: bool(refusal_score(t, phrases))  # noqa: E731
    v = vet(lm, h_tr, hl_tr, refuses, min_kept=0, chat=True)
    vv = vet(lm, h_va, hl_va, refuses, min_kept=0, chat=True)
    if min(len(v.positive), len(v.negative), len(vv.positive), len(vv.negative)) < 2:
        return not_applicable(lm, sets, quick, f"{lm.name} barely refuses: it refused {len(v.positive)} of {len(h_tr)} harmful "
                              f"train and {len(vv.positive)} of {len(h_va)} harmful val prompts (need 2 of each to extract "
                              "and select a direction)", {"vetting": {"train": v.report(), "val": vv.report()}})
    progress(1, 6, "refusal-start tokens")
    ids = refusal_start_tokens(lm, v.positive, phrases, generations=v.responses_of(v.positive))
    h_va_k, hl_va_k = vv.positive, vv.negative
    m_h = refusal.refusal_metric(lm, h_va, ids)
    m_hl = refusal.refusal_metric(lm, hl_va, ids)
    vetting = {"train": v.report(), "val": vv.report(),
               "val_metric_filter": {"harmful_metric_gt_0": int((m_h > 0).sum()), "harmless_metric_lt_0": int((m_hl < 0).sum()),
                                     "harmful_mean_metric": float(m_h.mean()), "harmless_mean_metric": float(m_hl.mean()),
                                     "note": "the paper keeps val prompts by metric sign; small models put < 0.5 on the refusal "
                                             "token even when greedy decoding refuses, so val prompts are vetted by their "
                                             "generated response instead (counts above)"}}

    progress(3, 6, "candidate directions")
    positions = [-1] if quick else refusal.post_instruction_positions(lm)
    cands = refusal.candidates(lm, v.positive, v.negative, positions=positions)
    if quick:
        cands = {k: r for k, r in cands.items() if k[0] % 2 == 0}
    progress(4, 6, "selection")
    scored, baseline = refusal.score(lm, cands, h_va_k, hl_va_k, ids, progress=lambda i, n, w: progress(i, n, "select " + w))
    sel, rule = None, None
    for bar, why in ((0.0, "paper: induce > 0"), ("harmful_baseline", "induce > unsteered harmful mean"),
                     (None, "no candidate induced refusal at alpha 1: lowest bypass among KL < 0.1")):
        try:
            sel, rule = refusal.choose(scored, cands, baseline, bar, 0.1, lm.name), why
            break
        except MlxInterpError:
            continue
    if sel is None:
        raise MlxInterpError(f"no candidate below 0.8 of depth has KL < 0.1 on {lm.name}")
    # the direction that most bypasses refusal when KL is not constrained (differs when KL < 0.1 rules out the middle layers)
    free = refusal.choose(scored, cands, baseline, None, float("inf"), lm.name)
    r = sel.direction
    rnd = random_direction(lm.width, float(np.linalg.norm(r)), seed=sel.layer)
    progress(5, 6, "coefficient search for addition")
    search = search_multiplier(lm, r, sel.layer, hl_va_k[:8], lambda g: refusal_rate([x.text for x in g], phrases),
                               site="resid_pre", steps=4 if quick else 6, start=0.125, max_tokens=32, chat=True,
                               with_baseline=False)
    alpha_s = search.best.alpha if search.best else None  # coefficient on r itself
    progress(5, 6, "held-out generations")
    conds = {
        "harmful_baseline": (h_te, []),
        "harmful_ablation": (h_te, [refusal.ablation(r)]),
        "harmful_minus_r": (h_te, [refusal.addition(r, sel.layer, -1.0)]),
        "harmless_baseline": (hl_te, []),
        "harmless_plus_r": (hl_te, [refusal.addition(r, sel.layer, 1.0)]),
        # controls: a random direction of the same norm, ablated / added / subtracted the same way
        "harmful_ablation_random": (h_te, [refusal.ablation(rnd)]),
        "harmful_minus_random": (h_te, [refusal.addition(rnd, sel.layer, -1.0)]),
        "harmless_plus_random": (hl_te, [refusal.addition(rnd, sel.layer, 1.0)]),
    }
    unconstrained = (free.layer, free.position) != (sel.layer, sel.position)
    if unconstrained:
        conds["harmful_ablation_unconstrained"] = (h_te, [refusal.ablation(free.direction)])
        conds["harmless_ablation_unconstrained"] = (hl_te, [refusal.ablation(free.direction)])
    searched = alpha_s is not None and abs(alpha_s - 1.0) > 1e-6
    if searched:
        conds["harmless_plus_searched"] = (hl_te, [refusal.addition(r, sel.layer, alpha_s)])
        conds["harmless_plus_searched_random"] = (hl_te, [refusal.addition(rnd, sel.layer, alpha_s)])
    effect = held_out(lm, conds, max_tok, phrases)
    if unconstrained:
        effect["harmful_ablation_unconstrained"].update(layer=free.layer, position=free.position)
    if searched:
        effect["harmless_plus_searched"]["alpha"] = alpha_s
        effect["harmless_plus_searched_random"]["alpha"] = alpha_s
    progress(6, 6, "done")
    best = next(s for s in sel.scores if (s.layer, s.position) == (sel.layer, sel.position))
    norms = {str(l): float(np.linalg.norm(c)) for (l, p), c in sorted(cands.items()) if p == -1}
    fb = next(s for s in sel.scores if (s.layer, s.position) == (free.layer, free.position))
    summary = {"unconstrained": {"layer": free.layer, "position": free.position, "bypass": fb.bypass, "kl": fb.kl,
                                 "induce": fb.induce, "depth": free.layer / L},
               "induce_rule": rule, "induce_filter_fell_back": rule != "paper: induce > 0",
               "selected_on": "validation prompts (vetted harmful/harmless val sets)", "layer": sel.layer, "position": sel.position, "layers": L, "depth": sel.layer / L,
               "bypass": best.bypass, "induce": best.induce, "kl": best.kl, "norm": best.norm,
               "baseline_metric": sel.baseline,
               **{k: e["refusal_score"] for k, e in effect.items()}}
    print(f"  l*={sel.layer}/{L} pos {sel.position}: bypass {best.bypass:.2f}, induce {best.induce:.2f}, KL {best.kl:.3f}; "
          f"harmful {effect['harmful_baseline']['refusal_score']:.2f} -> {effect['harmful_ablation']['refusal_score']:.2f} (ablation), "
          f"harmless {effect['harmless_baseline']['refusal_score']:.2f} -> {effect['harmless_plus_r']['refusal_score']:.2f} (+r)")

    return {"applies": True, "summary": summary, "refusal_tokens": {str(t): lm.tokenizer.decode([t]) for t in ids},
            "vetting": vetting, "positions": positions, "norms": norms, "effect": effect, "candidates": sel.table(),
            "addition_search": search.as_dict(), "direction": [float(x) for x in r],
            "direction_unconstrained": [float(x) for x in free.direction], "paper": PAPER,
            "chat_template_example": format_prompt(lm, "{instruction}", chat=True),
            "chat_template_note": "Qwen2.5's template inserts a default system prompt ('You are Qwen, created by Alibaba "
                                  "Cloud...') when none is given; the paper's Qwen-1.8B-chat prompts had no system turn"
                                  if "You are Qwen" in format_prompt(lm, "x", chat=True) else "as the model's own template"}


if __name__ == "__main__":
    from experiments.common import main

    main("exp7_refusal_scaling", run, load_sets, __doc__)
