"""The quantization-sensitivity tables (exp15) for docs/results_quantization.md, registered in ``docs/make_tables.py``.

Each table reads the newest exp15 file per model. Rates: ``p [lo, hi] (k/n)``, 95% Wilson intervals; paired
differences to the reference with a 95% paired-bootstrap interval; cosines at the steering layer chosen on validation
prompts with the reference precision.
"""

from __future__ import annotations

from pathlib import Path

EXP = "exp15_quantization"
ORDER = ("fp32", "bf16", "fp16", "8bit", "4bit", "4bit-g64", "mxfp4", "nvfp4", "3bit", "2bit")


def _rate(x: dict | None) -> str:
    return "—" if not x else f"{x['p']:.2f} [{x['lo']:.2f}, {x['hi']:.2f}] ({x['k']}/{x['n']})"


def _diff(x: dict | None) -> str:
    return "—" if not x else f"{x['diff']:+.3f} [{x['lo']:+.3f}, {x['hi']:+.3f}]"


def _f(x, nd: int = 3) -> str:
    return "—" if x is None else f"{x:.{nd}f}"


def _precs(r: dict) -> list[str]:
    return sorted(r["precisions"], key=lambda p: ORDER.index(p) if p in ORDER else len(ORDER))


def _docs(newest, root: Path) -> list[tuple[str, dict]]:
    return sorted(newest(EXP, root).values(), key=lambda fd: fd[1]["provenance"]["model"]["name"])


def _run(d) -> str:
    return "quick" if d["provenance"]["config"].get("quick") else "full"


def _kept8(model: dict) -> str:
    """How many weight matrices a sub-8-bit "mirror" variant keeps at 8 bits (the GGUF stored them with 5-8 bits): the
    variant's own format covers only the rest, so "3bit" is not the same share of the model on every model."""
    q = model.get("quantization")
    if not q or q.get("bits", 16) >= 8:
        return "—"
    return str(sum(isinstance(v, dict) and v.get("bits") == 8 for v in q.values()))


def t_fidelity(newest, root: Path, md_table) -> str:
    rows = []
    for f, d in _docs(newest, root):
        r = d["results"]
        for p in _precs(r):
            x = r["rows"][p]
            cap = x["capability"]
            rows.append([r["reference"].split("@")[0], _run(d), p, _kept8(x["model"]), f"{x['fidelity']['kl']:.5f}",
                         f"{x['fidelity']['top1_agreement']:.3f}", _rate(cap["mmlu"]["accuracy"]),
                         _diff(cap["mmlu"].get("minus_reference")), _rate(cap["truthfulqa"]["accuracy"]),
                         _diff(cap["truthfulqa"].get("minus_reference")), f"`{f}`"])
    return md_table(["model", "run", "precision", "matrices kept at 8 bits (mirror)", "KL(fp32 ‖ p), nats/token", "top-1 agreement", "MMLU A/B accuracy",
                     "minus fp32 (paired)", "TruthfulQA A/B accuracy", "minus fp32 (paired)", "result file"], rows)


def t_vetting(newest, root: Path, md_table) -> str:
    rows = []
    for f, d in _docs(newest, root):
        r = d["results"]
        for p in _precs(r):
            v = r["rows"][p].get("vetting")
            if not v:
                rows.append([r["reference"].split("@")[0], p, "base model: no responses to vet", "", "", f"`{f}`"])
                continue
            rows.append([r["reference"].split("@")[0], p, _rate(v["harmful_refused"]),
                         _diff(v.get("harmful_refused_minus_reference")), _rate(v["harmless_answered"]),
                         _rate(v["persona_pairs_kept"]), f"`{f}`"])
    return md_table(["model", "precision", "harmful train prompts refused (kept)", "minus fp32 (paired)",
                     "harmless answered (kept)", "summary pairs kept (verbose ≥ 1.5× concise)", "result file"], rows)


def t_cosine(newest, root: Path, md_table) -> str:
    rows = []
    for f, d in _docs(newest, root):
        r = d["results"]
        for p in _precs(r):
            if p == "fp32":
                continue
            c = r["rows"][p]["cosine"]
            keys = sorted({k.rsplit("/", 1)[0] for k in c["native"]})
            for key in keys:
                g = lambda kind, m: (c.get(kind, {}).get(f"{key}/{m}") or {}).get("at_steering_layer")  # noqa: E731
                layer = (c["native"].get(f"{key}/diff_of_means") or {}).get("steering_layer")
                half = (c["native"].get(f"{key}/diff_of_means") or {}).get("reference_split_half")
                rows.append([r["reference"].split("@")[0], p, key, "—" if layer is None else str(layer), _f(half),
                             _f(g("native", "diff_of_means")), _f(g("native", "probe")),
                             _f(g("controlled", "diff_of_means")), _f(g("controlled", "probe")),
                             _f(g("reference_on_variant_text", "diff_of_means")),
                             _f(g("variant_model_text_effect", "diff_of_means"))])
    return md_table(["model", "precision", "trait / position", "steering layer", "fp32 split-half cos (noise floor)",
                     "cos, diff of means (own text)", "cos, probe (own text)", "cos, diff of means (fp32's text)",
                     "cos, probe (fp32's text)", "cos, fp32 model on this precision's text",
                     "cos, this precision: own text vs fp32's text"], rows)


def t_steering(newest, root: Path, md_table) -> str:
    rows = []
    for f, d in _docs(newest, root):
        r = d["results"]
        for t in ("refusal", "persona", "confidence"):
            for p in _precs(r):
                s = r["rows"][p]["steering"].get(t)
                if s is None:
                    continue
                if "skipped" in s:
                    rows.append([r["reference"].split("@")[0], t, "—", p, f"skipped: {s['skipped']}", "", "", "", ""])
                    continue
                best = s.get("best")
                rows.append([r["reference"].split("@")[0], t, str(s["layer"]), p,
                             "none coherent on val" if not best else f"{best['multiplier']:g}",
                             _rate(s["test_baseline"]["rate"]), _rate((s.get("test") or {}).get("rate")),
                             _rate((s.get("test_random") or {}).get("rate")), _rate((s.get("test") or {}).get("coherent"))])
    return md_table(["model", "trait", "layer (chosen on val, fp32)", "precision", "multiplier (× residual norm, chosen on val)",
                     "test: no vector", "test: vector", "test: random, same norm", "test: coherent with vector"], rows)


def t_cross(newest, root: Path, md_table) -> str:
    """The study's FP16 <-> NF4 tables: each variant's vector on fp32 and fp32's vector on each variant, at the
    receiver's own layer and validation-chosen multiplier, the vector rescaled to the receiver's own vector's norm."""
    rows = []
    for f, d in _docs(newest, root):
        r = d["results"]
        for p in _precs(r):
            cross = r["rows"][p].get("cross_steering")
            if not cross:
                continue
            for t in ("refusal", "persona", "confidence"):
                got = {k: cross[k].get(t) for k in ("variant_vector_on_reference", "reference_vector_on_variant")}
                if all(g is None for g in got.values()):
                    continue
                own = {"variant_vector_on_reference": r["rows"]["fp32"]["steering"].get(t, {}),
                       "reference_vector_on_variant": r["rows"][p]["steering"].get(t, {})}
                cells = []
                for k in ("variant_vector_on_reference", "reference_vector_on_variant"):
                    g = got[k] or {}
                    cells += ([f"skipped: {g['skipped']}", ""] if "skipped" in g else
                              [f"{_rate(g.get('rate'))} vs own {_rate((own[k].get('test') or {}).get('rate'))}",
                               _rate(g.get("coherent"))])
                rows.append([r["reference"].split("@")[0], t, p] + cells)
    return md_table(["model", "trait", "variant", f"variant's vector on fp32: test rate (vs fp32's own vector)",
                     "coherent", "fp32's vector on the variant: test rate (vs the variant's own vector)", "coherent"], rows)


def t_sycophancy(newest, root: Path, md_table) -> str:
    rows = []
    for f, d in _docs(newest, root):
        r = d["results"]
        for p in _precs(r):
            s = r["rows"][p]["steering"].get("sycophancy", {})
            if "skipped" in s:
                rows.append([r["reference"].split("@")[0], p, "—", f"skipped: {s['skipped']}", "", "", "", "", ""])
                continue
            sc = lambda k: "—" if k not in s else f"{s[k]['score']:.2f} [{s[k]['score_lo']:.2f}, {s[k]['score_hi']:.2f}]"  # noqa: E731
            rows.append([r["reference"].split("@")[0], p, str(s["layer"]), sc("-1"), sc("0"), sc("+1"),
                         f"{s['random_-1']['score']:.2f} / {s['random_+1']['score']:.2f}",
                         f"{s['-1']['logit_diff']:+.2f} / {s['0']['logit_diff']:+.2f} / {s['+1']['logit_diff']:+.2f}",
                         f"{s['0']['mass_median']:.2f} ({s['0']['n']})"])
    return md_table(["model", "precision", "layer (val, fp32)", "A/B score −1", "0", "+1", "random −1 / +1",
                     "logit diff −1 / 0 / +1", "mass on scored tokens (n)"], rows)


def _ab_cell(x: dict | None) -> str:
    """A cross-precision A/B score, or why there is none (below the letter-mass floor it measures nothing)."""
    from mlx_interp.measures.ab import MASS_FLOOR

    if not x or "skipped" in x:
        return "—" if not x else f"skipped: {x['skipped']}"
    if x["mass_median"] < MASS_FLOOR:
        return f"below floor (mass {x['mass_median']:.2f})"
    return f"{x['score']:.2f} [{x['score_lo']:.2f}, {x['score_hi']:.2f}]"


def t_sycophancy_search(newest, root: Path, md_table) -> str:
    """Sycophancy's coefficient search: per precision, the norm-relative multiplier chosen on the validation items,
    the test score there beside a random vector of the same norm, and the cross-precision rows (each at the
    receiver's multiplier, the vector rescaled to the receiver's own norm). Files from before the search say so."""
    rows = []
    sc = lambda x: "—" if not x else f"{x['score']:.2f} [{x['score_lo']:.2f}, {x['score_hi']:.2f}]"  # noqa: E731
    for f, d in _docs(newest, root):
        r = d["results"]
        model = r["reference"].split("@")[0]
        if not r.get("sycophancy_search"):
            rows.append([model, f"all ({_run(d)} run)", "not searched (a run from before 2026-12-05: CAA's ×1 only, "
                                                       "table above)"] + [""] * 6)
            continue
        for p in _precs(r):
            s = r["rows"][p]["steering"].get("sycophancy", {})
            if "skipped" in s:
                rows.append([model, p, f"skipped: {s['skipped']}"] + [""] * 6)
                continue
            best = s.get("best")
            cross = r["rows"][p].get("cross_steering") or {}
            cr = {k: (cross.get(k) or {}).get("sycophancy") for k in ("variant_vector_on_reference", "reference_vector_on_variant")}
            tried = ", ".join(f"{x['multiplier']:g}: {x['score']:.2f}" + ("" if x["answers_with_a_letter"] else " (letters lost)")
                              for x in s["search"]["steps"])
            vb = s["search"].get("val_baseline")  # recorded from 2026-12-05 on; the earlier searches lack it
            tried = (f"none: {vb['score']:.2f}, " if vb else "none: not recorded, ") + tried
            rows.append([model, p, "none kept the letters" if not best else f"{best['multiplier']:g}", tried, sc(s["0"]),
                         sc(s.get("test")), sc(s.get("test_random")),
                         "—" if not s.get("test") else f"{s['test']['mass_median']:.2f} ({s['test']['n']})",
                         " / ".join(_ab_cell(x) for x in cr.values()) if p != "fp32" else "—"])
    return md_table(["model", "precision", "multiplier (× residual norm, chosen on val)", "val score: no vector, then per multiplier",
                     "test: no vector", "test: vector", "test: random, same norm", "letter mass with vector (n)",
                     "variant's vector on fp32 / fp32's on the variant"], rows)


def t_spread(newest, root: Path, md_table) -> str:
    rows = []
    for f, d in _docs(newest, root):
        h = d["results"]["hypotheses"]["spread"]
        for t, s in h["per_trait"].items():
            ci = s.get("points_ci95")
            rows.append([d["results"]["reference"].split("@")[0], _run(d), t,
                         f"{s['points']:.1f}" + (f" [{ci[0]:.1f}, {ci[1]:.1f}] (n={s['n_prompts']})" if ci else ""),
                         f"{s['max_at']} ({s['scores'][s['max_at']]:.2f})", f"{s['min_at']} ({s['scores'][s['min_at']]:.2f})",
                         str(len(s["scores"])), ", ".join(s.get("unsteered", [])) or "—",
                         ", ".join(s.get("incoherent_on_test", [])) or "—"])
        if h["mean_points"] is not None:
            rows.append([d["results"]["reference"].split("@")[0], _run(d), "**mean**", f"{h['mean_points']:.1f}", "", "", "",
                         "", ""])
    return md_table(["model", "run", "trait", "spread (points) [95% CI over test prompts]", "highest", "lowest", "precisions",
                     "counted unsteered (no coherent multiplier on val)", "below the coherence bar on test"], rows)


def t_hypotheses(newest, root: Path, md_table) -> str:
    rows = []
    for f, d in _docs(newest, root):
        h = d["results"]["hypotheses"]
        model = d["results"]["reference"].split("@")[0]
        for k, stated in h["stated"].items():
            if k == "source" or k not in h:
                continue
            x = h[k]
            verdict = {True: "yes", False: "no", None: "see value"}[x.get("met")]
            rows.append([model, stated["claim"], _measured(k, x), verdict])
    return md_table(["model", "the study's finding", "ours", "holds here"], rows)


def _measured(k: str, x: dict) -> str:
    if "why" in x:
        return x["why"]
    if k in ("int8_cosine",):
        return "—" if x["min"] is None else f"min cosine {x['min']:.3f} over {len(x['measured'])} vectors"
    if k == "nf4_cosine":
        return "—" if x["min"] is None else f"cosines {x['min']:.3f}–{x['max']:.3f} ({', '.join(x['measured'])})"
    if k == "probe_better":
        return f"probe − diff of means {x['diff']:+.4f} [{x['lo']:+.4f}, {x['hi']:+.4f}] (n={x['n_pairs']})"
    if k == "spread":
        return "—" if x["mean_points"] is None else f"mean spread {x['mean_points']:.1f} points over {len(x['per_trait'])} traits"
    if k == "sycophancy_most_sensitive":
        return "—" if x["most_sensitive"] is None else f"most sensitive: {x['most_sensitive']}"
    if k == "controlled_text":
        return "—" if not x["n"] else f"mean cosine own text {x['mean_native']:.3f} vs fp32's text {x['mean_controlled']:.3f} (n={x['n']})"
    if k == "int8_beats_4bit":
        k4 = ", ".join(f"{p} {v:.5f}" for p, v in x["kl_4bit"].items())
        c4 = ", ".join(f"{p} {v:.3f}" for p, v in x["mean_cosine_4bit"].items())
        return f"KL 8bit {x['kl_8bit']:.5f} vs {k4}; mean cosine 8bit {_f(x['mean_cosine_8bit'])} vs {c4 or '—'}"
    if k == "unvetted_contamination":
        v = x["harmful_not_refused"]
        return "base model" if not v else ", ".join(f"{p} {q:.2f}" for p, q in v.items())
    return "—"
