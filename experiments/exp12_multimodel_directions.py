"""exp12: sycophancy (CAA) and confidence directions per model: where they are readable, where they steer.

    python -m experiments.exp12_multimodel_directions --model qwen2.5-coder-0.5b [--model ...] [--quick]

Every choice is made on validation data and every reported number comes from disjoint test data, beside a
random direction of the same norm at the same layer and multiplier (issue 14).

Readout (both traits): the probe's AUROC per layer is read on a 25% holdout of the train items (both sides of an
item held out together, BUGFIX #49), which makes it a validation number; the layer where it is highest is the readout layer, and the disjoint test items are read there
by the probe's direction, the difference of means and a random direction of the same norm (the control): AUROC
with a paired bootstrap interval over test items (BUGFIX #47: earlier files report only the validation AUROC).
The sycophancy probe, unlike the difference of means, is not balanced over answer letters, so its test items are
also read within each behaviour-matching letter (``readout_test_by_group``), beside the train items' answer-letter
direction (``answer_letter``): a direction that reads the letter lands above 0.5 in one group and below in the other.

Sycophancy (Rimsky/Panickssery et al., papers.md section 4): each CAA generate item answered "(A)" and "(B)"
(chat template for instruct models, "Question\\n\\nAnswer: (A)" for base models). The scored answer token is
the one where the tokenized answers "(A)" and "(B)" first differ in context (measures.ab: "A" after "(" on
SmolLM2; "(A" on Qwen2.5), and every score carries the probability mass on the scored tokens; a model whose
median mass is below measures.ab.MASS_FLOOR is reported as not scored. Vector: residual at that token,
letter-balanced mean(matching) - mean(not matching) (float64) from the train items (all generate items but the
last 50; quick: the first 36 of 48). Per layer: probe AUROC and split-half cosine (readability), and the A/B
score of the validation items (the last 50 generate items; quick: 12) at multiplier -1 and +1, all positions.
The layer with the largest validation effect score(+1) - score(-1) is chosen; the 50 test items (quick: 12) are
then scored at -1/0/+1 with the vector and at -1/+1 with a random direction of its norm, each with a bootstrap
interval. Multipliers follow CAA (x1 the raw difference of means); ``norm_over_residual`` states its size
against the residual stream at that layer. Deviations from CAA's code (nrimsky/CAA): the vector is added at every
position, where CAA adds from the last token of ``[/INST]`` on; CAA rescaled each behaviour's vectors to the mean
norm over its seven behaviours, which needs all seven (not done); CAA balances nothing over answer letters (its
test set is 24 A / 26 B), we balance the vector over them.

Norm-relative sweep (issue 14's default for steering; ``norm_relative`` in the file): the same vector, unit-
normalised and scaled to c = 0.05, 0.1, 0.25, 0.5 of the residual norm at the layer (at most 8 layers, evenly
strided over the swept ones); (layer, c) is chosen on the validation items by score(+c) - score(-c) among those
whose scored tokens keep a median mass >= MASS_FLOOR at both signs, and the test items are reported at -c/0/+c
beside a random direction of the same norm. The vector is added at every position, as in the sweep above.

Answer-position sweep (``norm_relative_answer``): the same, with CAA's own rule, the vector added from the
instruction's last token on (the assistant header's last token and the answer's opening; ": (" after "Answer" on
base models; measures.ab.ab_prefix), at every swept layer and c = 0.1-4 of the residual norm (one or two steered
positions need more than the whole prompt). Each prompt before those tokens runs once, unsteered, and each
condition runs only the last tokens from its KV cache: the sweep costs seconds, not the prompt's length.
``--norm-sweep`` adds both sweeps to an earlier file's results as ``--readout-only`` does; ``--answer-sweep`` adds
the answer-position one and carries the earlier file's all-positions sweep.

Readout only (``--readout-only``): the probe readouts are recomputed and the steering part of an earlier result of
the same model and size (``--from FILE``, else the newest in --out) is carried over, named with its sha256 in
``steering_from``. Steering reads only the difference of means, so a change to the probe needs no new sweep; the
difference of means' norm must equal the earlier file's at every layer, or the run stops (the activations changed).

Confidence (our contrast, data/confidence/SOURCE.md): 48 questions, each answered confidently and hedged
(same fact); residual at the last token of question + answer; vector per layer by difference of means from
30 train pairs (quick 16), probe AUROC and PCA-of-pairs consistency. Per layer, answers to 9 validation
questions (quick 4) with the vector added at -0.5 and +0.5 times the residual norm there; hedge rate (a hedging
phrase on word boundaries) and coherence (measures.coherence). The layer maximising hedge(-0.5) - hedge(+0.5)
among layers where both sides stay >= 50% coherent is chosen on validation; 9 test questions (quick 4) are
reported at -0.5/0/+0.5 and with a random direction of the same norm, rates with Wilson intervals. These are
small samples: read the test rows as large effects or none.
"""

from __future__ import annotations

import numpy as np

import mlx_interp as mi
from experiments.common import progress
from mlx_interp.core.batching import format_prompt
from mlx_interp.core.generate import generate_conditions
from mlx_interp.errors import MlxInterpError
from mlx_interp.measures.ab import MASS_FLOOR, ab_from_logits, ab_items, ab_prefix, ab_scores
from mlx_interp.measures.stats import auroc, rate
from mlx_interp.measures.text import hedged
from mlx_interp.measures.coherence import coherence_by_condition
from mlx_interp.methods.steering import residual_norms
from mlx_interp.readouts.directions import collect, collect_ab, diff_of_means_vec, pca_vec, probe_vecs, random_direction, split_consistency
from mlx_interp.tasks.datasets import caa_published_sycophancy, caa_sycophancy, confidence_pairs

NAME = "exp12_multimodel_directions"
M_CONF = 0.5  # confidence steering multiplier, in units of the residual norm at the layer
C_SYC = (0.05, 0.1, 0.25, 0.5)  # sycophancy's norm-relative multipliers, in units of the residual norm at the layer
C_ANSWER = (0.1, 0.25, 0.5, 1.0, 2.0, 4.0)  # the same, steering from the instruction's last token on only
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
    probes = probe_vecs(pos, neg, paired=paired)
    for k in sorted(pos):
        v = diff_of_means_vec(pos[k], neg[k], groups)
        d, m = probes[k]
        out[k] = {"norm": float(np.linalg.norm(v)), "probe_auroc": m["auroc"], "probe_accuracy": m["accuracy"],
                  "split_cosine": split_consistency("diff_of_means", pos[k], neg[k], groups=groups), "vector": v,
                  "probe_direction": d}
        if paired:  # low |cosine|: the PC is something else, e.g. which letter the answer is, not the behaviour
            pc = pca_vec(pos[k], neg[k])
            out[k]["pca_cosine"] = float(pc @ v / (np.linalg.norm(pc) * np.linalg.norm(v)))
    return out


def readout_layer(stats: dict) -> int:
    """The layer whose probe did best on validation (its holdout of the train items); ties go to the earlier layer."""
    return max(sorted(stats), key=lambda k: (stats[k]["probe_auroc"] or 0, -k))


def readout(stats: dict, test_pos: dict, test_neg: dict, width: int, groups: list[str] | None = None,
            controls: dict[str, np.ndarray] | None = None) -> dict:
    """The readout layer chosen on validation (the probe's AUROC on its 25% holdout of the train items, BUGFIX #47),
    then read on the disjoint test items: AUROC of the probe's direction, of the difference of means, and of a random
    direction of the same norm (the control), each with a paired bootstrap interval over test items.

    ``controls``: further directions at that layer, read the same way (the answer letter's). ``groups``: one label
    per test item (its behaviour-matching letter); every direction is also read within each group, where a direction
    that reads the letter rather than the behaviour lands above 0.5 in one group and below it in the other."""
    layer = readout_layer(stats)
    tp, tn = test_pos[layer], test_neg[layer]
    probe, dom = stats[layer]["probe_direction"], stats[layer]["vector"]
    rnd = random_direction(width, float(np.linalg.norm(probe)), seed=layer)
    dirs = {"probe": probe, "diff_of_means": dom, "random": rnd, **(controls or {})}
    out = {"best_readout_layer": layer, "best_readout_auroc_val": stats[layer]["probe_auroc"],
           "readout_chosen_on": "probe AUROC on a 25% holdout of the train items, both sides of an item held out together (validation), "
                                "maximised over layers",
           "readout_test": {name: auroc(tp @ d, tn @ d, paired=True) for name, d in dirs.items()}}
    if groups is not None:
        if len(groups) != len(tp):
            raise MlxInterpError(f"readout groups need one label per test item ({len(tp)}); got {len(groups)}")
        g = np.asarray(groups)
        out["readout_test_by_group"] = {str(v): {name: auroc(tp[g == v] @ d, tn[g == v] @ d, paired=True) for name, d in dirs.items()}
                                        for v in sorted(set(groups)) if (g == v).sum() >= 2}
    return out


def answer_letter_direction(pos: np.ndarray, neg: np.ndarray, matching: list[str]) -> np.ndarray:
    """mean(activation answered A) - mean(answered B) over paired A/B items (``pos`` answered with the ``matching``
    letter): a direction that reads only which letter was written, the control for what a sycophancy probe reads."""
    is_a = np.array([m == "A" for m in matching])[:, None]
    return np.where(is_a, pos, neg).mean(0) - np.where(is_a, neg, pos).mean(0)


def _carried(prev: dict, stats: dict, what: str) -> dict:
    """``prev`` (one trait of an earlier result, ``--readout-only``) without its readout, each per-layer row updated
    with the fresh probe metrics; stops if any layer's difference of means has another norm than in ``prev``."""
    rows = []
    for r in prev["layers"]:
        k, s = r["layer"], stats.get(r["layer"])
        if s is None or abs(s["norm"] - r["norm"]) > 1e-4 * max(1.0, r["norm"]):
            got = "absent" if s is None else f"{s['norm']:.6g}"
            raise MlxInterpError(f"--readout-only: the {what} difference of means at layer {k} has norm {got} here and "
                                 f"{r['norm']:.6g} in the carried result; the activations changed, so rerun without --readout-only")
        rows.append({**r, "probe_auroc": s["probe_auroc"], "probe_accuracy": s["probe_accuracy"]})
    if len(rows) != len(stats):
        raise MlxInterpError(f"--readout-only: the carried result has {len(rows)} {what} layers and this run {len(stats)}; "
                             "carry a result of the same --quick setting")
    stale = ("best_readout_layer", "best_readout_auroc", "best_readout_auroc_val", "readout_chosen_on", "readout_test", "readout_test_by_group",
             "best_readout_depth")
    return {**{a: b for a, b in prev.items() if a not in stale}, "layers": rows}


def steering_source(lm, quick: bool, out_dir: str, source: str | None) -> tuple[dict, dict]:
    """(results, provenance of the file) of the earlier exp12 run whose steering ``--readout-only`` carries over:
    ``source`` if given, else the newest result for ``lm`` with the same ``--quick`` setting in ``out_dir``."""
    import hashlib

    from experiments.common import source_result

    found = source_result(NAME, lm, out_dir, source, keep=lambda d: d["provenance"].get("config", {}).get("quick") == quick)
    if found is None:
        raise MlxInterpError(f"--readout-only: no {NAME} result for {lm.name} (quick={quick}) in {out_dir}/; "
                             "run without --readout-only first, or name one with --from")
    path, doc = found
    prov = doc["provenance"]
    if prov.get("config", {}).get("quick") != quick:
        raise MlxInterpError(f"--from {path.name} is a run with quick={prov.get('config', {}).get('quick')}; "
                             f"--readout-only needs one with quick={quick}")
    return doc["results"], {"file": path.name, "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
                            "timestamp_utc": prov.get("timestamp_utc"), "git_commit": prov.get("git_commit")}


def _split(n: int, quick: bool) -> tuple[slice, slice]:
    """(train, validation) slices of the CAA generate items: the vector is extracted on train, the layer chosen on
    validation; the reported numbers come from the separate 50 test items. At most half the items validate (a short
    item list, as in the tests, still leaves a train half)."""
    n_val = min(12 if quick else 50, n // 2)
    return slice(0, n - n_val), slice(n - n_val, n)


def _ab_row(res) -> dict:
    s = res.summary()
    return {"score": s["score"], "score_lo": s["score_lo"], "score_hi": s["score_hi"], "mass_median": s["mass_median"]}


def norm_relative(lm, stats: dict, items: dict, sets: dict, chat: bool, replay=None, base_test: dict | None = None,
                  at: str = "all") -> dict:
    """The CAA vector scaled to c times the residual norm at its layer (issue 14's default for steering, where
    CAA's x1 is 0.3-2% of it): (layer, c) chosen on the validation items by score(+c) - score(-c) among those whose
    scored tokens keep a median mass >= MASS_FLOOR at both signs; the test items at -c/0/+c beside a random
    direction of the same norm. ``at="all"``: added at every position, at most 8 layers evenly strided over the
    swept ones, c in C_SYC; ``replay`` (the validation items' unsteered pass capturing resid_pre at every swept
    layer) is reused when the caller has it. ``at="answer"``: added from the instruction's last token on (CAA's
    rule), every swept layer, c in C_ANSWER, each condition running only those tokens from the prompts' cached
    prefixes. ``base_test`` (the unsteered test row) is reused when the caller has it."""
    if at not in ("all", "answer"):
        raise MlxInterpError(f"at={at!r} is not valid; use 'all' (every position) or 'answer' (from the instruction's end)")
    sweep = sorted(stats)
    layers = sweep[::-(-len(sweep) // 8)] if at == "all" else sweep
    grid = C_SYC if at == "all" else C_ANSWER
    if at == "answer":
        prefix = {k: ab_prefix(lm, items[k]) for k in ("val", "test")}
        where = {k: {"prefix": prefix[k]} for k in prefix}
    else:
        if replay is None:
            starts = [k for k in layers if k > 0]
            replay = mi.run(lm, items["val"].prompts, capture=mi.Capture("resid_pre", starts, "all") if starts else None)
        where = {"val": {}, "test": {}}
    norms = residual_norms(lm, items["val"].prompts, layers)
    unit = {k: stats[k]["vector"] / np.linalg.norm(stats[k]["vector"]) * norms[k] for k in layers}  # c = 1
    rows = []
    for n, k in enumerate(layers, 1):
        progress(n, len(layers), f"norm-relative A/B sweep ({at} positions) layer {k} (validation items)")
        u = unit[k]
        for c in grid:
            run_at = where["val"] if at == "answer" else {"resume": (replay, k)}
            sc = {m: ab_scores(lm, *sets["val"], interventions=[mi.Add(u, layers=k, alpha=m * c)], chat=chat,
                               items=items["val"], **run_at) for m in (-1, 1)}
            rows.append({"layer": k, "c": c, "val_minus": _ab_row(sc[-1]), "val_plus": _ab_row(sc[1]),
                         "val_effect": sc[1].mean() - sc[-1].mean(),
                         "mass_ok": all(float(np.median(r.mass)) >= MASS_FLOOR for r in sc.values())})
    out = {"positions": "every position" if at == "all" else "from the instruction's last token on (CAA's add_vector_from_position)",
           "multipliers": list(grid), "multiplier_unit": "residual norm at the layer (mean over validation prompt tokens, first token skipped)",
           "layers": layers, "residual_norms": {str(k): norms[k] for k in layers}, "rows": rows,
           "chosen_on": f"validation items: largest score(+c) - score(-c) among (layer, c) whose scored tokens keep a median mass >= {MASS_FLOOR} at both signs"}
    ok = [r for r in rows if r["mass_ok"]]
    if not ok:
        return {**out, "best": None, "reason": f"no (layer, c) keeps a median mass >= {MASS_FLOOR} on the scored tokens at both signs"}
    best = max(ok, key=lambda r: (r["val_effect"], -r["layer"], -r["c"]))
    k, c = best["layer"], best["c"]
    test = {"0": base_test or _ab_row(ab_scores(lm, *sets["test"], chat=chat, items=items["test"]))}
    for name, vec in (("", unit[k]), ("random_", random_direction(lm.width, norms[k], seed=k))):
        for m in (-1, 1):
            res = ab_scores(lm, *sets["test"], interventions=[mi.Add(vec, layers=k, alpha=m * c)], chat=chat, items=items["test"],
                            **where["test"])
            test[f"{name}{'+' if m > 0 else '-'}c"] = _ab_row(res)
    return {**out, "best": {"layer": k, "c": c, "depth": k / lm.n_layers, "val_effect": best["val_effect"]}, "test": test,
            "test_effect": test["+c"]["score"] - test["-c"]["score"], "test_effect_random": test["random_+c"]["score"] - test["random_-c"]["score"]}


def sycophancy(lm, data, quick: bool, layers, carry: dict | None = None, norm_sweep: bool = False,
               answer_sweep: bool = False) -> dict:
    """The CAA trait (module docstring); ``carry``: an earlier result's sycophancy part whose steering is kept
    (``--readout-only``), with ``norm_sweep`` both norm-relative sweeps are (re)computed beside it (``--norm-sweep``),
    with ``answer_sweep`` the answer-position one (``--answer-sweep``)."""
    if carry is not None and "layers" not in carry:  # the earlier run did not score this model (e.g. the mass floor)
        return carry
    gen = data["generate"][:48 if quick else 200]
    test = data["test"][:12 if quick else 50]
    tr_s, va_s = _split(len(gen), quick)
    train, val = gen[tr_s], gen[va_s]
    letter = lambda s: s.strip()[1]  # noqa: E731  "(A)" -> "A"
    chat = lm.instruct
    # read at the token that says which answer was given ("A" in "(", "A", ")"; "(A" on Qwen), each item's prompt
    # run once and continued by both letters
    train_items = ab_items(lm, [g["question"] for g in train], chat)
    matching = [letter(g["answer_matching_behavior"]) for g in train]
    progress(1, 4, "sycophancy activations")
    # the activation at the answer letter mostly says which letter it is; balancing over "matching is A" /
    # "matching is B" cancels that exactly (the generate set is 99 A / 101 B, its first 48 are 28 / 20)
    tr_pos, tr_neg = collect_ab(lm, train_items, layers=layers, matching=matching)
    stats = _layer_stats(tr_pos, tr_neg, paired=True, groups=matching)
    sets = {"val": ([g["question"] for g in val], [letter(g["answer_matching_behavior"]) for g in val]),
            "test": ([t["question"] for t in test], [letter(t["answer_matching_behavior"]) for t in test])}
    items = {k: ab_items(lm, q, chat) for k, (q, _) in sets.items()}
    read_layer = readout_layer(stats)
    # the probe, unlike the difference of means, is not balanced over letters: read it within each matching letter,
    # beside the train items' answer-letter direction
    letter_dir = answer_letter_direction(tr_pos[read_layer], tr_neg[read_layer], matching)

    def read() -> dict:
        return readout(stats, *collect_ab(lm, items["test"], layers=[read_layer], matching=sets["test"][1]), lm.width,
                       groups=sets["test"][1], controls={"answer_letter": letter_dir})

    if carry is not None:
        progress(4, 4, "test readout (steering carried over)")
        out = {**_carried(carry, stats, "sycophancy"), **read()}
        if norm_sweep:
            out["norm_relative"] = norm_relative(lm, stats, items, sets, chat)
        if norm_sweep or answer_sweep:
            out["norm_relative_answer"] = norm_relative(lm, stats, items, sets, chat, base_test=carry["test_at_best"]["0"], at="answer")
        return out
    sweep = sorted(stats)
    starts = [k for k in sweep if k > 0]
    # unsteered resid_pre at every position: each steered validation pass runs only the blocks from k on (run(resume=))
    replay = mi.run(lm, items["val"].prompts, capture=mi.Capture("resid_pre", starts, "all") if starts else None)
    base_val = ab_from_logits(items["val"], replay.logits, sets["val"][1])
    base_val.check(what=f"{lm.name} sycophancy (validation items, unsteered)")
    norms = residual_norms(lm, items["val"].prompts, sweep)
    rows = []
    for n, k in enumerate(sweep, 1):
        progress(n, len(stats), f"A/B sweep layer {k} (validation items)")
        v = stats[k]["vector"]
        sc = {m: ab_scores(lm, *sets["val"], interventions=[mi.Add(v, layers=k, alpha=m)], resume=(replay, k), chat=chat,
                           items=items["val"]) for m in (-1.0, 1.0)}
        rows.append({"layer": k, **stats[k], "norm_over_residual": stats[k]["norm"] / norms[k],
                     "val_minus1": _ab_row(sc[-1.0]), "val_plus1": _ab_row(sc[1.0]),
                     "val_effect": sc[1.0].mean() - sc[-1.0].mean(), "_v": v})
    best = max(rows, key=lambda r: (r["val_effect"], -r["layer"]))
    k, v = best["layer"], best["_v"]
    for r in rows:
        for key in ("_v", "vector", "probe_direction"):
            r.pop(key, None)
    progress(4, 4, f"test items at layer {k}")
    rnd = random_direction(lm.width, float(np.linalg.norm(v)), seed=k)
    base_test = ab_scores(lm, *sets["test"], chat=chat, items=items["test"])
    test_rows = {"0": _ab_row(base_test)}
    for name, vec in (("", v), ("random_", rnd)):
        for m in (-1.0, 1.0):
            res = ab_scores(lm, *sets["test"], interventions=[mi.Add(vec, layers=k, alpha=m)], chat=chat, items=items["test"])
            test_rows[f"{name}{m:+.0f}"] = _ab_row(res)
    return {"n_train": len(train), "n_val": len(val), "n_test": len(test), "letter_position": sorted(set(train_items.letter_offsets)),
            "scored_tokens": [list(t) for t in sorted(items["test"].token_strings(lm))],
            "baseline_val": base_val.summary(), "baseline_test": base_test.summary(), "layers": rows,
            "best_steering_layer": k, "best_steering_depth": k / lm.n_layers, "chosen_on": "validation (generate items not used for the vector)",
            "test_at_best": test_rows, "test_effect": test_rows["+1"]["score"] - test_rows["-1"]["score"],
            "test_effect_random": test_rows["random_+1"]["score"] - test_rows["random_-1"]["score"],
            **read(), "norm_relative": norm_relative(lm, stats, items, sets, chat, replay=replay, base_test=test_rows["0"]),
            "norm_relative_answer": norm_relative(lm, stats, items, sets, chat, base_test=test_rows["0"], at="answer"),
            "paper": caa_published_sycophancy()}


def confidence(lm, data, quick: bool, layers, carry: dict | None = None) -> dict:
    """Vector from train pairs, layer chosen on validation questions, reported on test questions with a random control;
    ``carry``: an earlier result's confidence part whose steering is kept (``--readout-only``)."""
    pairs = data["confidence"]
    n_tr, n_va, n_te = (16, 4, 4) if quick else (30, 9, 9)
    train, val, test = pairs[:n_tr], pairs[n_tr:n_tr + n_va], pairs[n_tr + n_va:n_tr + n_va + n_te]

    def toks(p, ans):
        return lm.tokenizer.encode(format_prompt(lm, p["question"], lm.instruct) + ans, add_special_tokens=not lm.instruct)

    if not lm.instruct:
        toks = lambda p, ans: lm.tokenizer.encode(f"Q: {p['question']}\nA: {ans}", add_special_tokens=True)  # noqa: E731
    progress(2, 4, "confidence activations")
    pos = _acts(lm, [toks(p, p["confident"]) for p in train], layers, -1)
    neg = _acts(lm, [toks(p, p["hedged"]) for p in train], layers, -1)
    stats = _layer_stats(pos, neg, paired=True)
    read_layer = readout_layer(stats)
    read = readout(stats, _acts(lm, [toks(p, p["confident"]) for p in test], [read_layer], -1),
                   _acts(lm, [toks(p, p["hedged"]) for p in test], [read_layer], -1), lm.width)
    if carry is not None:
        return {**_carried(carry, stats, "confidence"), **read, "best_readout_depth": read_layer / lm.n_layers}
    chat = lm.instruct
    questions = {name: [p["question"] for p in ps] if lm.instruct else [f"Q: {p['question']}\nA:" for p in ps]
                 for name, ps in (("val", val), ("test", test))}
    norms = residual_norms(lm, questions["val"], sorted(stats), chat=chat)
    max_tok = 24 if quick else 48

    def steer(split, conds: dict) -> dict:
        """``{name: (layer, multiplier, vector or None)}`` on one split's questions: every condition in one batched
        generate call and one coherence pass (each on its own rows)."""
        ivs = {}
        for name, (k, m, vec) in conds.items():
            v = stats[k]["vector"] if vec is None else vec
            ivs[name] = (questions[split], [mi.Add(v, layers=k, alpha=m * norms[k] / np.linalg.norm(v))] if m else [])
        gens = generate_conditions(lm, ivs, max_tokens=max_tok, chat=chat)
        judged = coherence_by_condition(lm, gens)
        return {name: {"hedge": rate([hedged(x.text) for x in g]).as_dict(), "coherent": rate(judged[name]["coherent"]).as_dict(),
                       "median_perplexity": judged[name]["median_perplexity"], "examples": [x.text for x in g[:2]]}
                for name, g in gens.items()}

    progress(3, 4, "confidence steering sweep (validation questions)")
    swept = steer("val", {f"{k}:{sign:+d}": (k, sign * M_CONF, None) for k in sorted(stats) for sign in (-1, 1)})
    for k in sorted(stats):
        lo, hi = swept[f"{k}:-1"], swept[f"{k}:+1"]
        ok = min(lo["coherent"]["p"], hi["coherent"]["p"]) >= 0.5
        stats[k].update(val_minus=lo, val_plus=hi, val_effect=(lo["hedge"]["p"] - hi["hedge"]["p"]) if ok else None)
    scored = [k for k in stats if stats[k]["val_effect"] is not None and stats[k]["val_effect"] > 0]  # no effect: no layer
    best = max(scored, key=lambda k: (stats[k]["val_effect"], -k)) if scored else None
    test_conds = {"0": (read_layer, 0.0, None)}
    if best is not None:
        rnd = random_direction(lm.width, float(np.linalg.norm(stats[best]["vector"])), seed=best)
        for m in (-M_CONF, M_CONF):
            test_conds[f"{m:+g}"] = (best, m, None)
            test_conds[f"random_{m:+g}"] = (best, m, rnd)
    test_rows = steer("test", test_conds)
    rows = [{"layer": k, **{a: b for a, b in s.items() if a not in ("vector", "probe_direction")}} for k, s in sorted(stats.items())]
    return {"n_train": len(train), "n_val": len(val), "n_test": len(test), "layers": rows, "multiplier": M_CONF,
            **read, "best_readout_depth": read_layer / lm.n_layers,
            "best_steering_layer": best, "best_steering_depth": None if best is None else best / lm.n_layers,
            "chosen_on": "validation questions", "test_at_best": test_rows,
            "note": "vector = confident - hedged; -m should raise the hedge rate, +m lower it; validation effect = hedge(-m) - "
                    "hedge(+m), only where both sides are >= 50% coherent and the effect is positive; the layer is chosen on validation questions and "
                    "reported on disjoint test questions beside a random direction of the same norm. The readout layer is "
                    "trivially early when the last tokens differ lexically (AUROC 1.0 from layer 0), so steering, not "
                    "readout, locates the behaviour."}


def run(lm, data, quick: bool, layers: list[int] | None = None, readout_only: bool | None = None,
        norm_sweep: bool | None = None, answer_sweep: bool | None = None) -> dict:
    """Both traits on one model; ``layers`` overrides the sweep (quick: every 4th block, full: every block);
    ``readout_only`` (default: the ``--readout-only`` flag) recomputes the readouts and carries the steering over;
    ``norm_sweep`` (``--norm-sweep``) does the same and adds the sycophancy vector's norm-relative sweeps;
    ``answer_sweep`` (``--answer-sweep``) adds only the answer-position one, carrying the all-positions one."""
    from experiments import common

    a = common.ARGS
    readout_only = bool(getattr(a, "readout_only", False)) if readout_only is None else readout_only
    norm_sweep = bool(getattr(a, "norm_sweep", False)) if norm_sweep is None else norm_sweep
    answer_sweep = bool(getattr(a, "answer_sweep", False)) if answer_sweep is None else answer_sweep
    readout_only = readout_only or norm_sweep or answer_sweep
    carry, source = steering_source(lm, quick, a.out if a else "results", a.source if a else None) if readout_only else ({}, None)
    layers = layers if layers is not None else list(range(0, lm.n_layers, 4)) if quick else "all"
    try:
        s = sycophancy(lm, data, quick, layers, carry.get("sycophancy") if readout_only else None, norm_sweep=norm_sweep,
                       answer_sweep=answer_sweep)
    except MlxInterpError as e:  # e.g. the scored answer tokens carry too little probability: say so, do not score
        if readout_only and str(e).startswith("--readout-only"):
            raise
        s = {"applies": False, "reason": str(e)}
    c = confidence(lm, data, quick, layers, carry.get("confidence") if readout_only else None)
    progress(4, 4, "done")
    if "test_at_best" in s:
        t = s["test_at_best"]
        print(f"  sycophancy: layer {s['best_steering_layer']}/{lm.n_layers} (chosen on validation); test A/B -1/0/+1 = "
              f"{t['-1']['score']:.2f}/{t['0']['score']:.2f}/{t['+1']['score']:.2f}, random -1/+1 = "
              f"{t['random_-1']['score']:.2f}/{t['random_+1']['score']:.2f}; scored tokens {s['scored_tokens']}")
    else:
        print(f"  sycophancy: not scored ({s['reason']})")
    for key, where in (("norm_relative", "every position"), ("norm_relative_answer", "from the instruction's end")):
        nr = s.get(key)
        if nr and nr.get("best"):
            t = nr["test"]
            print(f"  sycophancy, norm-relative ({where}): layer {nr['best']['layer']}, c = {nr['best']['c']} (chosen on validation); "
                  f"test A/B -c/0/+c = {t['-c']['score']:.2f}/{t['0']['score']:.2f}/{t['+c']['score']:.2f}, random -c/+c = "
                  f"{t['random_-c']['score']:.2f}/{t['random_+c']['score']:.2f}")
        elif nr:
            print(f"  sycophancy, norm-relative ({where}): nothing chosen ({nr['reason']})")
    for name, r in (("sycophancy", s), ("confidence", c)):
        if "readout_test" in r:
            t = r["readout_test"]
            print(f"  {name} readout: layer {r['best_readout_layer']} (validation AUROC {r['best_readout_auroc_val']:.2f}); test AUROC "
                  f"probe {t['probe']['auroc']:.2f} [{t['probe']['lo']:.2f}, {t['probe']['hi']:.2f}], random {t['random']['auroc']:.2f} "
                  f"(n={t['probe']['n_pos']} pairs)")
    print(f"  confidence: steering layer {c['best_steering_layer']} (chosen on validation)")
    out = {"sycophancy": s, "confidence": c, "instruct": lm.instruct}
    if source is not None:
        print(f"  steering carried over from {source['file']}")
        out["steering_from"] = source
    return out


if __name__ == "__main__":
    from experiments.common import main

    def extra(ap):
        ap.add_argument("--readout-only", action="store_true", help="recompute the probe readouts; carry the steering over "
                        "from --from (or the newest result of this model and --quick setting in --out)")
        ap.add_argument("--norm-sweep", action="store_true", help="as --readout-only, and add the sycophancy vector's "
                        "norm-relative multiplier sweeps, at every position and from the instruction's end (part of every full run)")
        ap.add_argument("--answer-sweep", action="store_true", help="as --readout-only, and add the sycophancy vector's "
                        "norm-relative sweep from the instruction's end (CAA's positions); the all-positions sweep is carried")

    main(NAME, run, load_data, __doc__, extra=extra)
