"""exp12: sycophancy (CAA) and confidence directions per model: where they are readable, where they steer.

    python -m experiments.exp12_multimodel_directions --model qwen2.5-coder-0.5b [--model ...] [--quick]

Sycophancy (Rimsky/Panickssery et al., papers.md section 4): for each CAA generate item, the question
answered "(A)" and "(B)" (chat template for instruct models, "Question\\n\\nAnswer: (A)" for base
models); residual at the answer-letter token (position -2) of every layer; vector = mean(matching) -
mean(not matching) (float64). Per layer: a probe's held-out AUROC on the same activations (readability)
and the A/B score p(matching)/(p(A)+p(B)) on the 50 test items with the vector added at that layer, all
positions, multiplier -1 and +1 (steerability). The best steering layer maximises score(+1) - score(-1);
-1/0/+1 there are reported beside the CAA table (Llama-2 7B layer 13, 13B layer 14). Vectors are raw
differences of means; CAA additionally rescaled each behaviour's vectors to the mean norm over its seven
behaviours, which needs all seven.

Confidence (our contrast, data/confidence/SOURCE.md): 48 questions, each answered confidently and hedged
(same fact); residual at the last token of question + answer; vector per layer by difference of means,
probe AUROC and PCA-of-pairs consistency. Steering sweep: per layer, generate answers to held-out questions
with the vector added at -0.5 and +0.5 times the residual norm there (steering.residual_norms); score the
fraction of answers with a hedging phrase (HEDGES) and coherence (metrics.coherence). The best steering layer
maximises hedge(-0.5) - hedge(+0.5) among layers where both sides stay >= 50% coherent.

--quick: 48 generate items, 12 test items, every 4th layer; confidence 24 pairs, 6 questions, 24 tokens.
Full: 200 generate items, 50 test items, every layer; 48 pairs (36 for vectors, 12 questions held out), 48 tokens.
"""

from __future__ import annotations

import numpy as np

import mlx_interp as mi
from experiments.common import progress
from mlx_interp.core.batching import format_prompt
from mlx_interp.core.generate import generate
from mlx_interp.measures.ab import ab_from_logits, ab_prompts, ab_scores, ab_tokens
from mlx_interp.measures.coherence import coherence
from mlx_interp.methods.steering import residual_norms
from mlx_interp.readouts.directions import collect, diff_of_means_vec, pca_vec, probe_vec, split_consistency
from mlx_interp.tasks.datasets import caa_published_sycophancy, caa_sycophancy, confidence_pairs

M_CONF = 0.5  # confidence steering multiplier, in units of the residual norm at the layer
HEDGES = ["i think", "i believe", "not sure", "not certain", "might", "maybe", "perhaps", "possibly", "i could be wrong",
          "i could be mistaken", "if i remember", "probably", "not completely", "double-check", "it's possible"]


def hedge_rate(texts) -> float:
    """Fraction of texts containing any hedging phrase (case-insensitive)."""
    return float(np.mean([any(h in t.lower().replace("\u2019", "'") for h in HEDGES) for t in texts]))


def load_data(path):
    gen, test = caa_sycophancy()
    return {"generate": gen, "test": test, "confidence": confidence_pairs()}


def _acts(lm, token_lists, layers, position) -> dict[int, np.ndarray]:
    """Residuals [N, D] per layer for already-formatted token lists (no chat template added again)."""
    return collect(lm, token_lists, layers=layers, positions=position, chat=False)


def _layer_stats(pos, neg, paired: bool, groups=None) -> dict:
    """Per layer: the difference of means (the vector steered; balanced over ``groups``), its norm and
    split-half cosine, probe metrics, and, for paired sets, the cosine between it and the first PC of the
    paired differences (repeng's vector)."""
    out = {}
    for k in sorted(pos):
        v = diff_of_means_vec(pos[k], neg[k], groups)
        _, m = probe_vec(pos[k], neg[k])
        out[k] = {"norm": float(np.linalg.norm(v)), "probe_auroc": m["auroc"], "probe_accuracy": m["accuracy"],
                  "split_cosine": split_consistency("diff_of_means", pos[k], neg[k], groups=groups), "vector": v}
        if paired:  # low |cosine|: the PC is something else, e.g. which letter the answer is, not the behaviour
            pc = pca_vec(pos[k], neg[k])
            out[k]["pca_cosine"] = float(pc @ v / (np.linalg.norm(pc) * np.linalg.norm(v)))
    return out


def sycophancy(lm, data, quick: bool, layers) -> dict:
    gen = data["generate"][:48 if quick else 200]
    test = data["test"][:12 if quick else 50]
    letter = lambda s: s.strip()[1]  # noqa: E731  "(A)" -> "A"
    chat = lm.instruct
    match = [ab_tokens(lm, g["question"], g["answer_matching_behavior"].strip(), chat) for g in gen]
    other = [ab_tokens(lm, g["question"], g["answer_not_matching_behavior"].strip(), chat) for g in gen]
    progress(1, 4, "sycophancy activations")
    # the activation at the answer letter mostly says which letter it is; balancing over "matching is A" /
    # "matching is B" cancels that exactly (the generate set is 99 A / 101 B, its first 48 are 28 / 20)
    stats = _layer_stats(_acts(lm, match, layers, -2), _acts(lm, other, layers, -2), paired=True,
                         groups=[letter(g["answer_matching_behavior"]) for g in gen])
    qs, ms = [t["question"] for t in test], [letter(t["answer_matching_behavior"]) for t in test]
    # the unsteered resid_pre at every position, so each steered pass runs only the blocks from k on (run(resume=));
    # its logits are the unsteered A/B baseline
    sweep = sorted(stats)
    starts = [k for k in sweep if k > 0]
    replay = mi.run(lm, ab_prompts(lm, qs, chat), capture=mi.Capture("resid_pre", starts, "all") if starts else None)
    base = float(ab_from_logits(lm, replay.logits, ms).mean())
    rows = []
    for n, k in enumerate(sweep, 1):
        progress(n, len(stats), f"A/B sweep layer {k}")
        v = stats[k].pop("vector")
        sc = {m: float(ab_scores(lm, qs, ms, interventions=[mi.Add(v, layers=k, alpha=m)], resume=(replay, k), chat=chat).mean())
              for m in (-1.0, 1.0)}
        rows.append({"layer": k, **stats[k], "ab_minus1": sc[-1.0], "ab_plus1": sc[1.0], "effect": sc[1.0] - sc[-1.0]})
    best = max(rows, key=lambda r: r["effect"])
    read = max(rows, key=lambda r: (r["probe_auroc"] or 0, -r["layer"]))
    return {"n_generate": len(gen), "n_test": len(test), "ab_baseline": base, "layers": rows,
            "best_steering_layer": best["layer"], "best_steering_depth": best["layer"] / lm.n_layers,
            "best_ab": {"-1": best["ab_minus1"], "0": base, "+1": best["ab_plus1"]},
            "best_readout_layer": read["layer"], "best_readout_auroc": read["probe_auroc"],
            "paper": caa_published_sycophancy()}


def confidence(lm, data, quick: bool, layers) -> dict:
    pairs = data["confidence"]
    n_vec, n_q = (24, 6) if quick else (36, 12)
    train, held = pairs[:n_vec], pairs[n_vec:n_vec + n_q]

    def toks(p, ans):
        return lm.tokenizer.encode(format_prompt(lm, p["question"], lm.instruct) + ans, add_special_tokens=not lm.instruct)

    if not lm.instruct:
        toks = lambda p, ans: lm.tokenizer.encode(f"Q: {p['question']}\nA: {ans}", add_special_tokens=True)  # noqa: E731
    progress(2, 4, "confidence activations")
    pos = _acts(lm, [toks(p, p["confident"]) for p in train], layers, -1)
    neg = _acts(lm, [toks(p, p["hedged"]) for p in train], layers, -1)
    stats = _layer_stats(pos, neg, paired=True)
    read = max(sorted(stats), key=lambda k: (stats[k]["probe_auroc"] or 0, -k))
    prompts = [p["question"] for p in held] if lm.instruct else [f"Q: {p['question']}\nA:" for p in held]
    chat = lm.instruct
    norms = residual_norms(lm, prompts, sorted(stats), chat=chat)
    max_tok = 24 if quick else 48

    def steer(k, m):
        v = stats[k]["vector"]
        ivs = [mi.Add(v, layers=k, alpha=m * norms[k] / np.linalg.norm(v))] if m else []
        g = generate(lm, prompts, max_tokens=max_tok, interventions=ivs, chat=chat)
        c = coherence(lm, g)
        return {"hedge_rate": hedge_rate([x.text for x in g]), "coherent_rate": c["coherent_rate"],
                "median_perplexity": c["median_perplexity"], "examples": [x.text for x in g[:2]]}

    progress(3, 4, "confidence steering sweep")
    base = steer(read, 0.0)
    for k in sorted(stats):
        lo, hi = steer(k, -M_CONF), steer(k, M_CONF)
        ok = min(lo["coherent_rate"], hi["coherent_rate"]) >= 0.5
        stats[k].update(hedge_minus=lo["hedge_rate"], hedge_plus=hi["hedge_rate"], coherent_minus=lo["coherent_rate"],
                        coherent_plus=hi["coherent_rate"], effect=(lo["hedge_rate"] - hi["hedge_rate"]) if ok else None,
                        examples_minus=lo["examples"][:1])
    scored = [k for k in stats if stats[k]["effect"] is not None]
    best = max(scored, key=lambda k: (stats[k]["effect"], -k)) if scored else None
    rows = [{"layer": k, **{a: b for a, b in s.items() if a != "vector"}} for k, s in sorted(stats.items())]
    return {"n_pairs": len(train), "n_questions": len(held), "layers": rows, "multiplier": M_CONF,
            "best_readout_layer": read, "best_readout_depth": read / lm.n_layers, "best_readout_auroc": stats[read]["probe_auroc"],
            "best_steering_layer": best, "best_steering_depth": None if best is None else best / lm.n_layers,
            "baseline_hedge_rate": base["hedge_rate"], "baseline_examples": base["examples"],
            "note": "vector = confident - hedged; -m should raise the hedge rate, +m lower it; effect = hedge(-m) - hedge(+m), "
                    "only where both sides are >= 50% coherent. The readout layer is trivially early when the last tokens differ "
                    "lexically (AUROC 1.0 from layer 0), so steering, not readout, locates the behaviour."}


def run(lm, data, quick: bool) -> dict:
    layers = list(range(0, lm.n_layers, 4)) if quick else "all"
    s = sycophancy(lm, data, quick, layers)
    c = confidence(lm, data, quick, layers)
    progress(4, 4, "done")
    print(f"  sycophancy: best steering layer {s['best_steering_layer']}/{lm.n_layers}, A/B -1/0/+1 = "
          f"{s['best_ab']['-1']:.2f}/{s['best_ab']['0']:.2f}/{s['best_ab']['+1']:.2f}; confidence: readout layer "
          f"{c['best_readout_layer']} (AUROC {c['best_readout_auroc']}), best steering layer {c['best_steering_layer']}, "
          f"baseline hedge rate {c['baseline_hedge_rate']:.2f}")
    return {"sycophancy": s, "confidence": c, "instruct": lm.instruct}


if __name__ == "__main__":
    from experiments.common import main

    main("exp12_multimodel_directions", run, load_data, __doc__)
