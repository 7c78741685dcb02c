"""The KV-cache transfer tables (exp14) for docs/results_kv_transfer.md, registered in ``docs/make_tables.py``.

Each is built from the newest kept exp14 result per model. Rates: ``p [lo, hi] (k/n)``, 95% Wilson intervals;
differences to the noise control: paired mean with a bootstrap interval.
"""

from __future__ import annotations

from pathlib import Path

EXP = "exp14_kv_transfer"
#: the conditions in reading order, with what each is
CONDITIONS = {
    "none": "question alone", "text": "source + question as text", "same_cache": "source's own cache (identity)",
    "noise": "matched-norm noise", "other": "another item's cache", "neutral": "neutral text's cache",
    "pos_start": "cache at start of filler", "pos_start_text": "… as text", "pos_middle": "cache in middle",
    "pos_middle_text": "… as text", "pos_middle_unrotated": "… keys not re-rotated", "pos_end": "cache at end",
    "pos_end_text": "… as text", "pos_end_unrotated": "… keys not re-rotated",
    "k_only": "keys only (all layers)", "v_only": "values only (all layers)",
}


def _rate(x: dict | None) -> str:
    return "—" if not x else f"{x['p']:.2f} [{x['lo']:.2f}, {x['hi']:.2f}] ({x['k']}/{x['n']})"


def _diff(x: dict | None) -> str:
    return "—" if not x else f"{x['diff']:+.2f} [{x['lo']:+.2f}, {x['hi']:+.2f}]"


def _run(d) -> str:
    return "quick" if d["provenance"]["config"].get("quick") else "full"


def _ordered(names) -> list[str]:
    rest = sorted(n for n in names if n not in CONDITIONS)
    layers = sorted((n for n in rest if n.startswith("layers_")), key=lambda n: int(n.split("_")[1]))
    heads = sorted((n for n in rest if n.startswith("head_")), key=lambda n: int(n.split("_")[1]))
    return [n for n in CONDITIONS if n in names] + layers + heads + [n for n in rest if n not in layers + heads]


def _label(n: str) -> str:
    if n.startswith("layers_"):
        a, b = n.split("_")[1:]
        return f"K+V of layers {a}–{int(b) - 1} spliced into neutral"
    if n.startswith("head_"):
        return f"KV head {n.split('_')[1]} spliced into neutral (all layers)"
    return CONDITIONS.get(n, n)


def t_signatures(newest, root: Path, md_table) -> str:
    rows = []
    for name, (f, d) in newest(EXP, root).items():
        s = d["results"]["signatures"]
        cells = []
        for kv in ("k", "v"):
            a = s[kv + "_all_layers"]
            l = s["largest_abs_d_layer"][kv]
            b = s[kv][l]
            cells += [f"{a['d']:+.2f} [{a['lo']:+.2f}, {a['hi']:+.2f}]", f"{l}: {b['d']:+.2f} [{b['lo']:+.2f}, {b['hi']:+.2f}]"]
        rows.append([name, _run(d), f"{s['n_a']} / {s['n_b']}"] + cells + [f"{s['earlier_phase_d']:.2f}", f"`{f}`"])
    return md_table(["model", "run", "confabulated / grounded", "d, K (mean of layers) [95% CI]", "K: layer of largest |d|",
                     "d, V (mean of layers)", "V: layer of largest |d|", "earlier phase d", "result file"], rows)


def t_transfer(newest, root: Path, md_table) -> str:
    rows = []
    for name, (f, d) in newest(EXP, root).items():
        p, r = d["results"]["persistence"], d["results"]["retrieval"]
        bk = r.get("by_kind", {})
        for c in _ordered(set(p["rates"]) - {"minus_noise"}):
            rows.append([name, _label(c), _rate(p["rates"].get(c)), _rate(p.get("per_fact", {}).get(c)),
                         _diff(p["rates"]["minus_noise"].get(c)),
                         _rate(r["rates"].get(c)), _rate(bk.get("known", {}).get(c)), _rate(bk.get("counterfactual", {}).get(c)),
                         _diff(r["rates"]["minus_noise"].get(c))])
        fill = d["results"]["config"].get("filler_tokens", 24)
        rows.append([name, f"identity mismatches (own cache vs text): {p['identity_mismatches']} / {r['identity_mismatches']}; "
                           f"filler {fill} tokens each side",
                     "", "", "", "", "", "", f"`{f}` ({_run(d)})"])
    return md_table(["model", "context before the question", "14a: names both facts", "14a: facts named (per fact; — in runs before it)",
                     "14a − noise [95% CI]",
                     "14b: answer named (all)", "14b known", "14b counterfactual", "14b − noise"], rows)


def t_cross(newest, root: Path, md_table) -> str:
    rows = []
    for name, (f, d) in newest(EXP, root).items():
        c = d["results"]["cross_topic"]
        for cond in _ordered(c["classes"]):
            k = c["classes"][cond]
            rows.append([name, _label(cond), _rate(k["broken"]), _rate(k["transferred"]), _rate(k["unaffected"]),
                         _rate(c["answer_correct"][cond])])
    return md_table(["model", "context before the question", "broken", "transferred", "unaffected", "factual answer named"], rows)


EXP_E = "exp14e_kv_projector"
CONDITIONS_E = {"none": "question alone", "text": "source as text (receiver reads it)", "projected": "source's cache, projected",
                "projected_other": "another item's source, projected", "noise": "matched-norm noise (projected's norms)"}


def _mean_r2(val: dict, kv: str) -> str:
    r2 = [v["r2"] for k, v in val.items() if k.startswith(kv)]
    cos = [v["cosine_mean"] for k, v in val.items() if k.startswith(kv)]
    return "—" if not r2 else f"{sum(r2) / len(r2):.2f} ({min(r2):.2f}–{max(r2):.2f}); cos {sum(cos) / len(cos):.2f}"


def t_projector_fit(newest, root: Path, md_table) -> str:
    """exp14e: how well each direction's per-layer maps predict the receiver's own cache on held-out passages."""
    rows = []
    for name, (f, d) in newest(EXP_E, root).items():
        r, p = d["results"], d["results"]["projector"]
        rows.append([f"{r['source']['name']} → {name}", _run(d), f"{p['n_fit_texts']} / {p['n_val_texts']}",
                     f"{p['fit_rows']} / {p['val_rows']}", _mean_r2(p["val"], "k"), _mean_r2(p["val"], "v"),
                     f"{p['fit_wall_s']:.0f} s ({p['aligned_tokens_per_s']:.0f} aligned tokens/s)", f"`{f}`"])
    return md_table(["source → receiver", "run", "fit / val passages", "aligned tokens fit / val",
                     "keys: held-out R² mean (min–max over layers)", "values: held-out R²", "fit wall time", "result file"], rows)


def t_projector(newest, root: Path, md_table) -> str:
    """exp14e: what the receiver answers from each context; differences paired over items."""
    rows = []
    for name, (f, d) in newest(EXP_E, root).items():
        r = d["results"]
        p, q = r["persistence"], r["retrieval"]
        bk = q.get("by_kind", {})
        for c in CONDITIONS_E:
            rows.append([f"{r['source']['name']} → {name}", CONDITIONS_E[c], _rate(p["rates"].get(c)),
                         _rate(q["rates"].get(c)), _rate(bk.get("known", {}).get(c)), _rate(bk.get("counterfactual", {}).get(c))])
        rows.append([f"{r['source']['name']} → {name}", "projected − noise [95% CI]", _diff(p["projected_minus_noise"]),
                     _diff(q["projected_minus_noise"]), "", ""])
        rows.append([f"{r['source']['name']} → {name}", "projected − question alone", _diff(p["projected_minus_none"]),
                     _diff(q["projected_minus_none"]), "", f"`{f}` ({_run(d)})"])
    return md_table(["source → receiver", "context before the question", "14a: names both facts", "14b: answer named (all)",
                     "14b known", "14b counterfactual"], rows)
