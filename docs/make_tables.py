"""Regenerate every table in docs/results_*.md from the result files kept in results/published/.

    python docs/make_tables.py            # rewrite the tables in place
    python docs/make_tables.py --check    # exit 1 (and list them) if a table differs from what the files give

A table in a note is the text between ``<!-- table: NAME -->`` and ``<!-- /table -->``; NAME is one of
``TABLES``. Each is built from the newest kept result per model of its experiment, so no number in a note can
drift from its file (tests/test_docs_tables.py runs ``--check``). Rates are shown as ``p [lo, hi] (k/n)`` with
95% Wilson intervals; a model whose study did not apply shows why.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "docs")]  # run as a script: the repository's packages and tables_fv beside this file

import tables_fv  # noqa: E402
import tables_kv  # noqa: E402
import tables_quant  # noqa: E402
import tables_transfer  # noqa: E402
from figures.make_all import layer_depths, null_layers  # noqa: E402
PUBLISHED = ROOT / "results" / "published"
DOCS = ROOT / "docs"
MARK = re.compile(r"(<!-- table: (\w+) -->\n)(.*?)(<!-- /table -->)", re.S)


def newest(experiment: str, root: Path = PUBLISHED) -> dict[str, tuple[str, dict]]:
    """model name -> (file name, document) of the newest kept result (by the timestamp in the name)."""
    out: dict = {}
    for p in sorted((root / experiment).glob("*.json")):
        doc = json.loads(p.read_text())
        out[doc["provenance"]["model"]["name"]] = (p.name, doc)
    return out


def _r(x: dict | None) -> str:
    if not x:
        return "—"
    return f"{x['p']:.2f} [{x['lo']:.2f}, {x['hi']:.2f}] ({x['k']}/{x['n']})"


def _f(x, nd: int = 2) -> str:
    return "—" if x is None else f"{x:.{nd}f}"


def _ab(r: dict) -> str:
    """An A/B score with its interval, or why it is not one: below the mass floor the scored tokens no longer hold
    the model's choice (defect 1), so no score is printed."""
    from mlx_interp.measures.ab import MASS_FLOOR

    if r.get("mass_median") is not None and r["mass_median"] < MASS_FLOOR:
        return f"below floor (mass {r['mass_median']:.2f})"
    return f"{r['score']:.2f} [{r['score_lo']:.2f}, {r['score_hi']:.2f}]"


def _table(head: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows]) + "\n"


def _quick(doc) -> str:
    return "quick" if doc["provenance"]["config"].get("quick") else "full"


def t_exp6(root: Path) -> str:
    rows = []
    for name, (f, d) in newest("exp6_twohop_scaling", root).items():
        s = d["results"]["summary"]
        a, c, w = s["all"], s["correct"], s["incorrect"]
        gap = "—" if a["mean_gap_layers"] is None else f"{a['mean_gap_layers']:+.2f}" + (
            f" [{a['gap_ci_layers'][0]:+.1f}, {a['gap_ci_layers'][1]:+.1f}]" if "gap_ci_layers" in a else "") + f" (n={a['n_gaps']})"
        rows.append([name, _quick(d), str(s["layers"]), _r(s["accuracy"]), _r(a["sequential"]),
                     _r(c.get("sequential")) if c["n"] else "—", _r(w.get("sequential")) if w["n"] else "—",
                     gap, f"{a['bridge_never']} / {a['answer_never']}", f"`{f}`"])
    return _table(["model", "run", "layers", "accuracy", "sequential (all)", "sequential (correct)", "sequential (incorrect)",
                   "mean gap, layers [95% CI]", "bridge / answer never surface", "result file"], rows)


def t_exp6_readouts(root: Path) -> str:
    rows = []
    for name, (f, d) in newest("exp6_twohop_scaling", root).items():
        s = d["results"]["summary"]
        for label, block in (("logit lens", s), ("Patchscope", s.get("patchscope")), ("tuned lens", s.get("tuned_lens"))):
            if not block or "all" not in block:
                rows.append([name, label, "not run" if label != "tuned lens" else "no lens trained", "", "", ""])
                continue
            a = block["all"]
            rows.append([name, label, _r(a["both_surface"]), _r(a["sequential"]), f"{a['bridge_never']} / {a['answer_never']} of {a['n']}",
                         "—" if a["mean_gap_layers"] is None else f"{a['mean_gap_layers']:+.2f}{_ci(a.get('gap_ci_layers'))} (n={a['n_gaps']})"])
    return _table(["model", "readout", "both entities surface", "sequential (bridge first)", "bridge / answer never",
                   "mean gap, layers [95% bootstrap CI]"], rows)


def _ci(ci) -> str:
    """' [lo, hi]', or nothing where the file has no interval (one gap cannot be resampled)."""
    return "" if not ci or None in ci else f" [{ci[0]:+.2f}, {ci[1]:+.2f}]"


def t_exp9(root: Path) -> str:
    """One row per model and patched position (t2: the last token; t1: the last token of e1), each with both controls
    on the same grid, their paired differences and the held-out best pair."""
    def d(x):
        return "—" if not x else f"{x['diff']:+.2f} [{x['lo']:+.2f}, {x['hi']:+.2f}]"

    rows = []
    for name, (f, doc) in newest("exp9_back_patching", root).items():
        s = doc["results"]["summary"]
        for pos in ("t2", "t1"):
            split = s.get(f"best_pair_split_{pos}", {}).get("folds")
            stxt = "—" if not split else "; ".join(
                ("none fixed on the choosing half" if not x["chosen_fix_rate"] else f"{x['source']}->{x['target']}")
                + f": {x['held_out']['k']}/{x['held_out']['n']}" for x in split)
            rows.append([name, _quick(doc), pos, f"{s['composition_correct']}/{s['n_queries']}",
                         str(s["incorrect_with_both_hops_correct"]), str(s["tested"]), _r(s.get(f"fixed_{pos}_backpatch")),
                         _r(s.get(f"fixed_{pos}_other")), _r(s.get(f"fixed_{pos}_noise")),
                         d(s.get(f"diff_{pos}_backpatch_minus_other")), d(s.get(f"diff_{pos}_backpatch_minus_noise")), stxt,
                         _r(s.get("fixed_cross")) if pos == "t2" else "—", str(s["identity_patch_mismatches"]), f"`{f}`"])
    return _table(["model", "run", "position", "correct / queries", "failures knowing both hops", "tested",
                   "fixed by back-patching", "other-prompt control", "noise control", "back-patch − other [95% CI]",
                   "back-patch − noise [95% CI]", "best pair, held-out half", "one-hop prompt's state (cross)",
                   "identity mismatches", "result file"], rows)


def t_exp7(root: Path) -> str:
    rows = []
    for name, (f, d) in newest("exp7_refusal_scaling", root).items():
        r = d["results"]
        if not r.get("applies"):
            rows.append([name, _quick(d), "n/a: " + r["reason"][:90], "", "", "", "", "", "", f"`{f}`"])
            continue
        s, e = r["summary"], r["effect"]
        rule = "paper" if not s.get("induce_filter_fell_back") else "fell back: " + s["induce_rule"]
        rows.append([name, _quick(d), f"{s['layer']}/{s['layers']} ({s['layer'] / s['layers']:.2f}), pos {s['position']}", rule,
                     f"{s['bypass']:.2f} / {s['induce']:.2f} / {s['kl']:.3f}",
                     f"{_r(e['harmful_baseline'].get('refusal'))} → {_r(e['harmful_ablation'].get('refusal'))}",
                     _r(e.get("harmful_ablation_random", {}).get("refusal")),
                     f"{_r(e['harmless_baseline'].get('refusal'))} → {_r(e['harmless_plus_r'].get('refusal'))}",
                     _r(e.get("harmless_plus_random", {}).get("refusal")), f"`{f}`"])
    return _table(["model", "run", "l*/L (depth), position", "selection rule", "bypass / induce / KL (val)",
                   "JBB refusal: baseline → ablation", "JBB: random-direction ablation", "Alpaca refusal: baseline → +r",
                   "Alpaca: + random direction", "result file"], rows)


def t_exp10(root: Path) -> str:
    rows = []
    for name, (f, d) in newest("exp10_crosslingual_refusal", root).items():
        r = d["results"]
        for lang, x in r["langs"].items():
            q = x.get("rates", {})
            if r.get("applies"):
                rows.append([name, lang, f"{_r(q.get('harmful_baseline'))} → {_r(q.get('harmful_ablation'))}",
                             _r(q.get("harmful_ablation_random")),
                             f"{_r(q.get('harmless_baseline'))} → {_r(q.get('harmless_plus_r'))}", _r(q.get("harmless_plus_random")),
                             f"`{f}`"])
            else:
                rows.append([name, lang, _r(q.get("harmful_baseline")) + " (baseline only)", "", "", "", f"`{f}`"])
    return _table(["model", "lang", "harmful refusal: baseline → ablation", "random-direction ablation",
                   "harmless refusal: baseline → +r", "+ random direction", "result file"], rows)


def t_exp12_sycophancy(root: Path) -> str:
    rows = []
    for name, (f, d) in newest("exp12_multimodel_directions", root).items():
        s = d["results"]["sycophancy"]
        if not s.get("applies", True):
            rows.append([name, _quick(d), "n/a: " + s["reason"][:100], "", "", "", "", "", f"`{f}`"])
            continue
        t = s["test_at_best"]
        b = s["baseline_test"]
        rows.append([name, _quick(d), "; ".join(" / ".join(f"`{t}`" for t in x) for x in s["scored_tokens"]),
                     f"{b['mass_median']:.2f}", _r(b["prefers_a"]),
                     f"{s['best_steering_layer']} ({s['best_steering_depth']:.2f})",
                     f"{_ab(t['-1'])} / {_ab(t['0'])} / {_ab(t['+1'])} (n={s['n_test']})",
                     f"{_ab(t['random_-1'])} / {_ab(t['random_+1'])}", f"`{f}`"])
    return _table(["model", "run", "scored tokens", "median mass on them (test, unsteered)", "prefers A (letter prior)",
                   "layer chosen on validation (depth)", "test A/B score −1 / 0 / +1 [95% CI]", "random direction −1 / +1 [95% CI]",
                   "result file"], rows)


def t_exp12_caa_paper(root: Path) -> str:
    """CAA's own A/B numbers (nrimsky/CAA analysis files), as the newest exp12 file records them."""
    docs = [d for _, d in newest("exp12_multimodel_directions", root).values() if "paper" in d["results"]["sycophancy"]]
    if not docs:
        raise SystemExit(f"no exp12 result under {root} records CAA's reference scores (results.sycophancy.paper)")
    paper = docs[-1]["results"]["sycophancy"]["paper"]
    rows = []
    for key in sorted(k for k in paper if not k.startswith("_") and k != "metric"):
        v = paper[key]["Sycophancy"]
        model, layer = key.rsplit("_layer", 1)
        rows.append([model, layer] + [" / ".join(f"{v[f'{s}_m{m}']:.2f}" for m in ("-1", "0", "+1"))
                                      for s in ("nosys", "possys", "negsys")])
    return _table(["model (CAA)", "layer", "no system prompt −1 / 0 / +1", "positive system prompt", "negative system prompt"], rows)


def t_exp12_confidence(root: Path) -> str:
    rows = []
    for name, (f, d) in newest("exp12_multimodel_directions", root).items():
        c = d["results"]["confidence"]
        t = c["test_at_best"]
        m = f"{c['multiplier']:+g}"
        neg, pos = f"-{c['multiplier']:g}", m
        if c["best_steering_layer"] is None:
            rows.append([name, _quick(d), "none: no layer coherent on both sides with a positive validation effect",
                         "— / " + _r(t["0"]["hedge"]) + " / —", "", "", f"`{f}`"])
            continue
        rows.append([name, _quick(d), f"{c['best_steering_layer']} ({c['best_steering_depth']:.2f})",
                     f"{_r(t[neg]['hedge'])} / {_r(t['0']['hedge'])} / {_r(t[pos]['hedge'])}",
                     f"{_r(t['random_' + neg]['hedge'])} / {_r(t['random_' + pos]['hedge'])}",
                     f"{_r(t[neg]['coherent'])} / {_r(t[pos]['coherent'])}", f"`{f}`"])
    return _table(["model", "run", "layer chosen on validation (depth)", "test hedge rate −m / 0 / +m",
                   "random direction −m / +m", "coherent −m / +m", "result file"], rows)


def t_exp12_readout(root: Path) -> str:
    """Readout per trait: the layer chosen on validation, then the test AUROC of the probe, the difference of means
    and a random direction of the same norm (files from before BUGFIX #47 have the validation AUROC only)."""
    rows = []

    def auc(a):
        return f"{a['auroc']:.2f} [{a['lo']:.2f}, {a['hi']:.2f}]"

    for name, (f, d) in newest("exp12_multimodel_directions", root).items():
        for trait in ("sycophancy", "confidence"):
            r = d["results"][trait]
            if "best_readout_layer" not in r:
                continue
            val = r.get("best_readout_auroc_val", r.get("best_readout_auroc"))
            head = [name, _quick(d), trait, f"{r['best_readout_layer']} ({_f(val)})"]
            if "readout_test" not in r:
                rows.append(head + ["not measured (file predates BUGFIX #47 and #48's exact probe)", "", "", "", f"`{f}`"])
                continue
            t = r["readout_test"]
            rows.append(head + [auc(t["probe"]), auc(t["diff_of_means"]), auc(t["random"]), str(t["probe"]["n_pos"]), f"`{f}`"])
    return _table(["model", "run", "trait", "readout layer chosen on validation (validation AUROC)", "test AUROC, probe [95% CI]",
                   "test AUROC, difference of means", "test AUROC, random direction", "test pairs", "result file"], rows)


def t_exp12_sycophancy_norm(root: Path) -> str:
    """The CAA vector at norm-relative multipliers, added at every position and from the instruction's last token on
    (CAA's positions): (layer, c) chosen on validation, test A/B scores at -c/0/+c beside a random direction of the
    same norm, and the mass the scored tokens keep (files without a sweep: no row)."""
    rows = []
    for name, (f, d) in newest("exp12_multimodel_directions", root).items():
        for key, where in (("norm_relative", "every position"), ("norm_relative_answer", "from the instruction's end")):
            nr = d["results"]["sycophancy"].get(key)
            if nr is None:
                continue
            head = [name, _quick(d), where, ", ".join(f"{c:g}" for c in nr["multipliers"])]
            if nr["best"] is None:
                rows.append(head + [f"none: {nr['reason']}", "", "", "", "", f"`{f}`"])
                continue
            b, t = nr["best"], nr["test"]
            rows.append(head + [f"{b['layer']} ({_f(b['depth'])}), c = {b['c']:g} (val effect {b['val_effect']:+.3f})",
                                f"{_ab(t['-c'])} / {_ab(t['0'])} / {_ab(t['+c'])}", f"{_ab(t['random_-c'])} / {_ab(t['random_+c'])}",
                                f"{t['-c']['mass_median']:.2f} / {t['0']['mass_median']:.2f} / {t['+c']['mass_median']:.2f}",
                                str(d["results"]["sycophancy"]["n_test"]), f"`{f}`"])
    return _table(["model", "run", "steered positions", "c swept (× residual norm)", "layer (depth), c chosen on validation",
                   "test A/B score −c / 0 / +c [95% CI]", "random direction −c / +c [95% CI]", "median mass on scored tokens −c / 0 / +c",
                   "test items", "result file"], rows)


def t_exp12_readout_letters(root: Path) -> str:
    """The sycophancy readout within each behaviour-matching answer letter, beside the answer-letter direction:
    does the probe read the behaviour or the letter? (files from before this split carry no such rows)"""
    rows = []

    def auc(a):
        return f"{a['auroc']:.2f} [{a['lo']:.2f}, {a['hi']:.2f}] (n={a['n_pos']})"

    for name, (f, d) in newest("exp12_multimodel_directions", root).items():
        r = d["results"]["sycophancy"]
        by = r.get("readout_test_by_group")
        if not by:
            continue
        cells = [[auc(by[g][k]) if g in by else "—" for g in ("A", "B")] for k in ("probe", "answer_letter", "random")]
        rows.append([name, _quick(d), str(r["best_readout_layer"]), auc(r["readout_test"]["probe"]), *cells[0],
                     auc(r["readout_test"]["answer_letter"]), *cells[1], " / ".join(cells[2]), f"`{f}`"])
    return _table(["model", "run", "readout layer", "probe, all test pairs", "probe, matching letter A", "probe, matching letter B",
                   "answer-letter direction, all", "answer-letter, A", "answer-letter, B", "random direction, A / B", "result file"], rows)


def t_coherence_calibration(root: Path) -> str:
    """Where the coherence thresholds come from (bench/coherence_calibration.py): each search step's refusal and
    coherent rates on the 12 harmless prompts, with the perplexity and repetition the rule reads."""
    rows = []
    for name, (f, d) in newest("coherence_calibration", root).items():
        r = d["results"]
        for st in r["steps"]:
            text = st["first_continuation"].replace("\n", " ").replace("|", "/")
            rows.append([name, str(r["layer"]), f"{st['multiplier']:g}", _r(st["refusal"]), _r(st["coherent"]),
                         f"{st['median_perplexity']:.2f}", f"{st['median_repetition']:.2f}",
                         '"' + (text[:70] + "…" if len(text) > 70 else text) + '"', f"`{f}`"])
    return _table(["model", "layer", "multiplier (× residual norm)", "refusal", "coherent", "median ppl", "median rep",
                   "first continuation", "result file"], rows)


def t_layer_depths(root: Path) -> str:
    """The study's "layer-specific effects" table (the figure directions_best_layers.png shows the same numbers)."""
    docs = {e: {n: d for n, (_, d) in newest(e, root).items()} for e in
            ("exp7_refusal_scaling", "exp12_multimodel_directions", "exp6_twohop_scaling", "exp13_function_vectors")}
    cols = layer_depths(*docs.values())
    null = null_layers(docs["exp12_multimodel_directions"])
    names = sorted({n for c in cols.values() for n in c})

    def cell(c, n):
        v = cols[c].get(n)
        return "—" if v is None else f"{_f(v, 0)}%" + (" (n.s.)" if (c, n) in null else "")

    return _table(["model"] + list(cols), [[n] + [cell(c, n) for c in cols] for n in names])


def _module_table(fn):  # a table module's function, given this module's file reader and table writer
    return lambda root: fn(newest, root, _table)


TABLES = {"exp6": t_exp6, "exp6_readouts": t_exp6_readouts, "exp9": t_exp9, "exp7": t_exp7, "exp10": t_exp10, "exp12_sycophancy": t_exp12_sycophancy, "exp12_readout": t_exp12_readout, "exp12_readout_letters": t_exp12_readout_letters,
          "exp12_sycophancy_norm": t_exp12_sycophancy_norm,
          "exp12_caa_paper": t_exp12_caa_paper, "exp12_confidence": t_exp12_confidence, "layer_depths": t_layer_depths, "coherence_calibration": t_coherence_calibration,
          "exp13_survivors": _module_table(tables_fv.t_survivors), "exp13_summary": _module_table(tables_fv.t_summary),
          "exp13_accuracy": _module_table(tables_fv.t_accuracy), "exp13_chosen": _module_table(tables_fv.t_chosen),
          "exp13_heads": _module_table(tables_fv.t_heads), "exp13_natural": _module_table(tables_fv.t_natural),
          "exp14_signatures": _module_table(tables_kv.t_signatures), "exp14_transfer": _module_table(tables_kv.t_transfer),
          "exp14_cross": _module_table(tables_kv.t_cross), "exp14e_fit": _module_table(tables_kv.t_projector_fit),
          "exp14e": _module_table(tables_kv.t_projector),
          "exp16_self": _module_table(tables_transfer.t_self), "exp16_geometry": _module_table(tables_transfer.t_geometry),
          "exp16_geometry_by_layer": _module_table(tables_transfer.t_geometry_by_layer),
          "exp16_transfer": _module_table(tables_transfer.t_transfer), "exp17": _module_table(tables_transfer.t_exp17),
          "exp17_hypotheses": _module_table(tables_transfer.t_exp17_hypotheses),
          **{f"exp15_{n}": _module_table(getattr(tables_quant, f"t_{n}"))
             for n in ("fidelity", "vetting", "cosine", "steering", "cross", "sycophancy", "sycophancy_search", "spread",
                       "hypotheses")}}


def render(text: str, root: Path = PUBLISHED) -> str:
    """``text`` with every marked table regenerated."""
    def sub(m):
        name = m.group(2)
        if name not in TABLES:
            raise SystemExit(f"unknown table {name!r}; known: {', '.join(TABLES)}")
        return m.group(1) + TABLES[name](root) + m.group(4)
    return MARK.sub(sub, text)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="do not write; exit 1 if a table is out of date")
    ap.add_argument("--results", default=str(PUBLISHED), help="the kept result files")
    a = ap.parse_args(argv)
    stale = []
    for p in sorted(DOCS.glob("results_*.md")):
        old = p.read_text()
        new = render(old, Path(a.results))
        if new != old:
            stale.append(p.name)
            if not a.check:
                p.write_text(new)
    if a.check and stale:
        print("out of date: " + ", ".join(stale) + " (run python docs/make_tables.py)")
        return 1
    print(("rewrote: " + ", ".join(stale)) if stale and not a.check else "tables up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
