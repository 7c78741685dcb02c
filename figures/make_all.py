"""Rebuild every figure from saved results only (never from memory).

    python -m figures.make_all [--results DIR] [--out DIR]

Reads the newest result per (experiment, model) under ``results/published/`` (the kept result files the notes in
docs/ quote; ``--results results`` for your own runs) and writes PNGs to
``figures/out/`` (default): two-hop gap and sequential fraction against model size (exp6),
logit-lens rank trajectories of bridge and answer (exp6), back-patching success heatmaps over
(source, target) layers (exp9); for the directions study: best-layer depth per phenomenon per model
(exp7, exp12, exp6), direction norm per layer per model on a log scale (exp7, exp12), refusal score
before/after ablation and addition beside the paper's small-model rows (exp7), and cross-lingual
refusal bars (exp10); function vectors (exp13, figures/function_vectors.py): AIE heatmaps, accuracy bars with
controls, layer sweeps, top-head depths, and the FV's depth in the layer-specific figure; KV-cache transfer (exp14,
figures/kv_transfer.py): signature effect sizes, conditions and controls, layer windows, position, cross-topic
classes; refusal-direction transfer (exp16, figures/refusal_transfer.py): geometry against the random band and the
run plan's predictions, and steering with carried directions; preference-vector transfer (exp17,
figures/preference_transfer.py): the transfer success matrix, scores by model, adapter vs direct; quantization
sensitivity (exp15, figures/quantization.py): cosines per precision, text/model matrices, capability, steering. Titles carry model names and the result dates; "n/a" marks what does not apply.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from experiments import fv_study  # noqa: E402
from figures import function_vectors, kv_transfer, preference_transfer, quantization, refusal_transfer  # noqa: E402
from mlx_interp.measures.stats import wilson  # noqa: E402
from mlx_interp.runs.results import load_results  # noqa: E402
from figures.common import save as _save  # noqa: E402


def newest_per_model(experiment: str, results: Path) -> dict:
    out = {}
    for doc in load_results(experiment, results):  # oldest first: later files win
        out[doc["provenance"]["model"]["name"]] = doc
    return out


def _date(doc) -> str:
    return doc["provenance"]["timestamp_utc"][:10]


def _exp6(doc) -> dict:
    """exp6 summary numbers, from the current layout (rates with intervals) or the one before issue 14 (plain floats)."""
    s = doc["results"]["summary"]
    if isinstance(s.get("accuracy"), dict):
        return {"accuracy": s["accuracy"]["p"], "sequential": s["all"]["sequential"]["p"], "gap_depth": s["all"]["mean_gap_depth"]}
    return {"accuracy": s["accuracy"], "sequential": s["sequential_fraction"], "gap_depth": s["mean_gap_depth"]}


def fig_twohop_scaling(docs: dict, out: Path) -> list[Path]:
    if not docs:
        return []
    items = sorted(docs.items(), key=lambda kv: kv[1]["provenance"]["model"].get("params") or 0)
    names = [k for k, _ in items]
    params = [d["provenance"]["model"].get("params", 0) / 1e6 for _, d in items]
    seq = [_exp6(d)["sequential"] for _, d in items]
    gap = [_exp6(d)["gap_depth"] or 0 for _, d in items]
    acc = [_exp6(d)["accuracy"] for _, d in items]
    fig, ax = plt.subplots(1, 3, figsize=(13, 4))
    for a, y, lab in zip(ax, (gap, seq, acc), ("mean gap answer - bridge (fraction of depth)", "sequential fraction", "two-hop accuracy")):
        a.plot(params, y, "o-")
        for x, yy, n in zip(params, y, names):
            a.annotate(n, (x, yy), fontsize=8, xytext=(3, 3), textcoords="offset points")
        a.set_xscale("log")
        a.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        a.set_xticks(params, [f"{x:.0f}M" for x in params])
        a.set_xlabel("parameters (millions, log scale)")
        a.set_ylabel(lab)
    dates = sorted({_date(d) for d in docs.values()})
    fig.suptitle(f"exp6 two-hop scaling ({', '.join(names)}; results {dates[0]}..{dates[-1]})")
    return [_save(fig, out / "exp6_twohop_scaling.png", dpi=120)]


def fig_rank_trajectories(docs: dict, out: Path) -> list[Path]:
    paths = []
    for name, d in docs.items():
        rows = d["results"]["queries"][:6]
        fig, axes = plt.subplots(2, 3, figsize=(13, 7), sharey=True)
        for a, r in zip(axes.flat, rows):
            x = np.arange(len(r["bridge_rank_by_layer"]))
            a.plot(x, np.array(r["bridge_rank_by_layer"]) + 1, label=f"bridge: {r['bridge']}")
            a.plot(x, np.array(r["answer_rank_by_layer"]) + 1, label=f"answer: {r['answer']}")
            a.axhline(30, color="grey", lw=0.8, ls=":")
            a.set_yscale("log")
            a.set_title(r["prompt"][:48], fontsize=8)
            a.set_xlabel("layer")
            a.legend(fontsize=7)
        axes[0, 0].invert_yaxis()  # once: the y axis is shared, each call would flip it again
        axes[0, 0].set_ylabel("logit-lens rank (1 = top)")
        fig.suptitle(f"exp6 logit-lens ranks of bridge and answer, {name} ({_date(d)})")
        paths.append(_save(fig, out / f"exp6_rank_trajectories_{name}.png"))
    return paths


def fig_backpatch_heatmaps(docs: dict, out: Path) -> list[Path]:
    paths = []
    for name, d in docs.items():
        s = d["results"]["summary"]
        heat = d["results"]["heatmaps"]
        if "t2_backpatch" not in heat:  # a result from before the controls (issue 14): not drawn
            continue
        n = s.get("tested", 0)
        panels = [("t2_backpatch", "back-patch at last token (t2)"), ("t2_other", "control: another query's state (t2)"),
                  ("t2_noise", "control: matched-norm noise (t2)"), ("t1_backpatch", "back-patch at e1 (t1)"),
                  ("t1_other", "control: another query's state (t1)"), ("cross", "one-hop bridge -> two-hop")]
        fig, axes = plt.subplots(2, 3, figsize=(14, 8.5))
        for a, (key, title) in zip(axes.flat, panels):
            h = np.array(heat.get(key, np.zeros((1, 1))), dtype=float)
            im = a.imshow(h, origin="lower", cmap="viridis", vmin=0, vmax=max(1, n))
            a.set_xlabel("target layer t")
            a.set_ylabel("source layer s")
            a.set_title(title, fontsize=9)
            fig.colorbar(im, ax=a, label=f"failures fixed (of {n})")
        r = s.get("fixed_t2_backpatch")
        head = f"fixed t2 {r['k']}/{r['n']}" if r else "no failure tested"
        fig.suptitle(f"exp9 back-patching, {name} ({_date(d)}): {head}; identity mismatches {s.get('identity_patch_mismatches')}")
        paths.append(_save(fig, out / f"exp9_backpatch_{name}.png"))
    return paths


def _depth_pct(x, L):
    return None if x is None else 100.0 * x / L


def layer_depths(exp7: dict, exp12: dict, exp6: dict, exp13: dict | None = None) -> dict[str, dict[str, float | None]]:
    """The study's "layer-specific effects": per phenomenon, per model, the best layer as % of depth (None: none
    chosen). Shared by the figure and the table in docs/results_directions.md."""
    exp13 = exp13 or {}
    names = sorted(set(exp7) | set(exp12) | set(exp6) | set(exp13))
    cols = {"refusal (paper rule)": {}, "refusal (lowest bypass)": {}, "sycophancy steering": {}, "sycophancy readout": {},
            "confidence steering": {}, "two-hop answer (lens)": {}, "function-vector heads (mean)": {},
            "function vector (layer chosen on valid, median)": {}}
    for n in names:
        if n in exp7 and exp7[n]["results"].get("applies"):
            s = exp7[n]["results"]["summary"]
            cols["refusal (paper rule)"][n] = _depth_pct(s["layer"], s["layers"])
            cols["refusal (lowest bypass)"][n] = _depth_pct(s["unconstrained"]["layer"], s["layers"])
        if n in exp12:
            r, L = exp12[n]["results"], exp12[n]["provenance"]["model"]["layers"]
            sy, co = r["sycophancy"], r["confidence"]
            if sy.get("applies", True):  # not scored when the answer tokens carry too little probability
                cols["sycophancy steering"][n] = 100 * sy["best_steering_depth"]
                cols["sycophancy readout"][n] = _depth_pct(sy["best_readout_layer"], L)
            cols["confidence steering"][n] = None if co["best_steering_depth"] is None else 100 * co["best_steering_depth"]
        if n in exp6:
            d = [q["answer_depth"] for q in exp6[n]["results"]["queries"] if q["answer_depth"] is not None]
            cols["two-hop answer (lens)"][n] = 100 * float(np.mean(d)) if d else None
        if n in exp13:
            f = fv_study.depths(exp13[n]["results"])
            cols["function-vector heads (mean)"][n] = None if f["heads"] is None else 100 * f["heads"]
            cols["function vector (layer chosen on valid, median)"][n] = None if f["fv_layer"] is None else 100 * f["fv_layer"]
    return cols


READOUT_AUROC_MIN = 0.6  # below it a probe's best layer reads nothing (a 25% holdout of 200 items: AUROC 0.5 +- ~0.13)


def _overlap(a: dict, b: dict, score: str, lo: str, hi: str) -> bool:
    """Whether two conditions' 95% intervals overlap."""
    a, b = sorted((a, b), key=lambda x: x[score])
    return a[hi] >= b[lo]


def null_layers(exp12: dict) -> set[tuple[str, str]]:
    """(column, model) cells of ``layer_depths`` whose layer shows no significant effect on test, so it is an argmax
    over noise: steering whose test rates at -m and +m have overlapping 95% intervals (sycophancy: A/B score at -1
    and +1; confidence: hedge rate at -m and +m), a sycophancy readout whose test AUROC's 95% interval reaches 0.5
    (files from before BUGFIX #47, which have only the validation AUROC: below ``READOUT_AUROC_MIN``)."""
    out = set()
    for n, d in exp12.items():
        sy, co = d["results"]["sycophancy"], d["results"]["confidence"]
        t = sy.get("test_at_best") or {}
        if sy.get("applies", True) and "-1" in t and "+1" in t:
            if _overlap(t["-1"], t["+1"], "score", "score_lo", "score_hi"):
                out.add(("sycophancy steering", n))
            if "readout_test" in sy:  # test AUROC whose 95% interval reaches 0.5 (chance)
                if sy["readout_test"]["probe"]["lo"] <= 0.5:
                    out.add(("sycophancy readout", n))
            elif (sy.get("best_readout_auroc") or 0) < READOUT_AUROC_MIN:  # files before BUGFIX #47: validation AUROC only
                out.add(("sycophancy readout", n))
        t = co.get("test_at_best") or {}
        m = co.get("multiplier")
        if m is not None and f"{-m:+g}" in t and f"{m:+g}" in t:
            if _overlap(t[f"{-m:+g}"]["hedge"], t[f"{m:+g}"]["hedge"], "p", "lo", "hi"):
                out.add(("confidence steering", n))
    return out


def fig_best_layers(exp7: dict, exp12: dict, exp6: dict, out: Path, exp13: dict | None = None) -> list[Path]:
    """The study's "layer-specific effects" table as a figure: best layer as % of depth."""
    cols = layer_depths(exp7, exp12, exp6, exp13)
    names = sorted({n for c in cols.values() for n in c})
    if not names:
        return []
    null = null_layers(exp12)
    fig, ax = plt.subplots(figsize=(15, 4.5))
    w = 0.8 / len(names)
    for i, n in enumerate(names):
        xs = np.arange(len(cols)) + (i - (len(names) - 1) / 2) * w
        ys = [cols[c].get(n) for c in cols]
        bars = ax.bar(xs, [y if y is not None else 0 for y in ys], w, label=n)
        for b, c in zip(bars, cols):
            if (c, n) in null:  # an argmax over no significant effect: drawn faint and hatched
                b.set_alpha(0.3)
                b.set_hatch("//")
        for x, y in zip(xs, ys):
            if y is None:
                ax.text(x, 2, "n/a", ha="center", fontsize=7, rotation=90)
    if null:
        ax.bar([0], [0], 0, color="white", edgecolor="gray", hatch="//",
               label=f"n.s. on test (steering: 95% intervals at -m and +m overlap; readout: test AUROC interval reaches 0.5)")
    ax.axhspan(40, 60, color="gray", alpha=0.1, label="seed's prediction for FV heads (40–60%)")
    ax.set_xticks(np.arange(len(cols)), list(cols), fontsize=8, rotation=15, ha="right")
    ax.set_ylabel("best layer (% of depth)")
    ax.set_ylim(0, 105)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    dates = sorted({_date(d) for e in (exp7, exp12, exp6, exp13 or {}) for d in e.values()})
    ax.set_title(f"Where each phenomenon lives (exp7, exp12, exp6, exp13; results {dates[0]}..{dates[-1]})", fontsize=10)
    return [_save(fig, out / "directions_best_layers.png")]


def fig_norms(exp7: dict, exp12: dict, out: Path) -> list[Path]:
    if not exp7 and not exp12:
        return []
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.2))
    for n, d in sorted(exp7.items()):
        L = d["provenance"]["model"]["layers"]
        ks = sorted(d["results"]["norms"], key=int)
        axes[0].plot([int(k) / L for k in ks], [d["results"]["norms"][k] for k in ks], "o-", ms=3, label=n)
    for n, d in sorted(exp12.items()):
        for a, key in zip(axes[1:], ("sycophancy", "confidence")):
            rows = d["results"][key].get("layers", [])
            L = d["provenance"]["model"]["layers"]
            a.plot([r["layer"] / L for r in rows], [r["norm"] for r in rows], "o-", ms=3, label=n)
    for a, t in zip(axes, ("refusal: diff of means (exp7)", "sycophancy: CAA vector (exp12)", "confidence: confident - hedged (exp12)")):
        a.set_yscale("log")
        a.set_xlabel("layer (fraction of depth)")
        a.set_ylabel("vector norm (log)")
        a.set_title(t, fontsize=9)
        if a.get_lines():
            a.legend(fontsize=7)
        else:  # e.g. exp12 results but no exp7 result in this folder
            a.text(0.5, 0.5, "no result", ha="center", va="center", transform=a.transAxes)
    fig.suptitle("Direction norm per layer per model")
    return [_save(fig, out / "directions_norms.png")]


def _rate(e: dict, key: str) -> tuple | None:
    """(p, lo, hi) of a held-out condition's refusal rate (Wilson interval), or None where it was not run."""
    x = e.get(key)
    if not x:
        return None
    r = x.get("refusal") or {}
    return (x["refusal_score"], r.get("lo"), r.get("hi"))


def fig_refusal_effect(exp7: dict, out: Path) -> list[Path]:
    """Held-out refusal before/after ablation and addition, each beside a random direction of the same norm (95%
    Wilson intervals), and the paper's small-model rows (no interval: the paper gives none)."""
    rows = []  # (label, (harmful baseline, ablation, random), (harmless baseline, +r, random)); each (p, lo, hi) or None
    paper = {}
    for n, d in sorted(exp7.items()):
        paper = d["results"].get("paper") or paper
        r = d["results"]
        if r.get("applies"):
            e = r["effect"]
            hb, lb = _rate(e, "harmful_baseline"), _rate(e, "harmless_baseline")
            rows.append((f"{n} ({_date(d)})", (hb, _rate(e, "harmful_ablation"), _rate(e, "harmful_ablation_random")),
                         (lb, _rate(e, "harmless_plus_r"), _rate(e, "harmless_plus_random"))))
            if "harmful_ablation_unconstrained" in e:
                rows.append((f"{n}, lowest-bypass dir. (KL > 0.1)", (hb, _rate(e, "harmful_ablation_unconstrained"), None),
                             (None, None, None)))
            if "harmless_plus_searched" in e:
                rows.append((f"{n}, searched alpha {e['harmless_plus_searched']['alpha']:.1f}", (None, None, None),
                             (lb, _rate(e, "harmless_plus_searched"), _rate(e, "harmless_plus_searched_random"))))
        else:
            s = r.get("summary", {})
            hb, lb = (None if s.get(k) is None else (s[k], None, None) for k in ("harmful_baseline", "harmless_baseline"))
            rows.append((f"{n}: n/a", (hb, None, None), (lb, None, None)))
    for k, q in paper.items():
        rows.append((f"paper: {k}", ((q["jbb_baseline"], None, None), (q["jbb_ablation"], None, None), None),
                     ((q["alpaca_baseline"], None, None), (q["alpaca_plus_r"], None, None), None)))
    if not rows:
        return []
    fig, ax = plt.subplots(1, 2, figsize=(14, 0.6 * len(rows) + 2), sharey=True)
    y = np.arange(len(rows))
    panels = ((1, "harmful (JailbreakBench): baseline / directional ablation", "ablation"),
              (2, "harmless (Alpaca): baseline / +r at l*", "+r"))
    for a, (col, title, lab) in zip(ax, panels):
        for i, (off, name) in enumerate(((-0.27, "baseline"), (0.0, lab), (0.27, "random direction, same norm"))):
            cells = [r[col][i] for r in rows]
            vals = [c[0] if c else 0 for c in cells]
            lo = [c[0] - c[1] if c and c[1] is not None else 0 for c in cells]
            hi = [c[2] - c[0] if c and c[2] is not None else 0 for c in cells]
            a.barh(y + off, vals, 0.26, xerr=[lo, hi], error_kw={"elinewidth": 0.8, "capsize": 2}, label=name)
            for yy, c in zip(y + off, cells):
                if c:
                    a.text((c[2] if c[2] is not None else c[0]) + 0.01, yy, f"{c[0]:.2f}", va="center", fontsize=6)
        a.set_xlim(0, 1.15)
        a.set_xlabel("refusal rate (any refusal phrase), 95% Wilson interval")
        a.set_title(title, fontsize=9)
        a.legend(fontsize=7)
    ax[0].set_yticks(y, [r[0] for r in rows], fontsize=8)
    ax[0].invert_yaxis()
    fig.suptitle("exp7 held-out refusal, each intervention beside a random direction of the same norm")
    return [_save(fig, out / "exp7_refusal_effect.png")]


def _lang_interval(r: dict, lang: str, key: str) -> tuple[float, float] | None:
    """95% Wilson interval of one exp10 rate: from the file's ``rates`` where it has them, else from the rate and its n."""
    c = r["langs"][lang].get("rates", {}).get(key)
    if c is not None:
        return c["lo"], c["hi"]
    n = r.get("n_harmful" if key.startswith("harmful") else "n_harmless")
    if not n:
        return None
    return wilson(round(r["langs"][lang][key] * n), n)


def fig_crosslingual(exp10: dict, out: Path) -> list[Path]:
    paths = []
    for n, d in sorted(exp10.items()):
        r = d["results"]
        langs = list(r["langs"])
        keys = ["harmful_baseline", "harmful_ablation", "harmful_ablation_random", "harmless_baseline", "harmless_plus_r",
                "harmless_plus_random", "harmless_ablation_same_start"]  # each intervention beside its random control
        keys = [k for k in keys if k in r["langs"][langs[0]]]
        fig, ax = plt.subplots(figsize=(10, 4))
        w = 0.8 / len(keys)
        for i, k in enumerate(keys):
            vals = [r["langs"][lg][k] for lg in langs]
            ci = [_lang_interval(r, lg, k) for lg in langs]
            err = None if any(c is None for c in ci) else np.array([[v - lo for v, (lo, _) in zip(vals, ci)],
                                                                     [hi - v for v, (_, hi) in zip(vals, ci)]])
            ax.bar(np.arange(len(langs)) + (i - (len(keys) - 1) / 2) * w, vals, w, yerr=err, capsize=2,
                   error_kw={"lw": 0.8}, label=k.replace("_", " "))
        ax.set_xticks(np.arange(len(langs)), langs)
        ax.set_ylim(0, 1.05)
        ax.set_ylabel("rate (95% Wilson interval)")
        ax.legend(fontsize=7, ncol=1, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        sub = "" if r.get("applies") else " (no refusal direction: baseline only)"
        ns = f", n = {r['n_harmful']} + {r['n_harmless']} per language" if "n_harmful" in r else ""
        ax.set_title(f"exp10 English refusal direction across languages ({_date(d)})\n{n}{ns}{sub}", fontsize=10)
        paths.append(_save(fig, out / f"exp10_crosslingual_{n}.png"))
    return paths


def main(argv=None) -> list[Path]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--results", default=str(Path(__file__).resolve().parent.parent / "results" / "published"),
                    help="result folder (default: the kept results the notes in docs/ quote)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "out"))
    a = ap.parse_args(argv)
    res, out = Path(a.results), Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    exp6 = newest_per_model("exp6_twohop_scaling", res)
    paths = fig_twohop_scaling(exp6, out) + fig_rank_trajectories(exp6, out)
    paths += fig_backpatch_heatmaps(newest_per_model("exp9_back_patching", res), out)
    exp7, exp12 = newest_per_model("exp7_refusal_scaling", res), newest_per_model("exp12_multimodel_directions", res)
    exp13 = newest_per_model("exp13_function_vectors", res)
    paths += fig_best_layers(exp7, exp12, exp6, out, exp13) + fig_norms(exp7, exp12, out) + fig_refusal_effect(exp7, out)
    paths += fig_crosslingual(newest_per_model("exp10_crosslingual_refusal", res), out)
    paths += function_vectors.all_figures(exp13, out)
    paths += kv_transfer.all_figures(newest_per_model("exp14_kv_transfer", res), out)
    exp14e = newest_per_model("exp14e_kv_projector", res)
    paths += [kv_transfer.fig_projector(exp14e, out)] if exp14e else []
    paths += refusal_transfer.all_figures(res, out)
    paths += preference_transfer.all_figures(preference_transfer.newest_runs(res), out)
    paths += quantization.all_figures(newest_per_model(quantization.EXP, res), out)
    for p in paths:
        print(p)
    if not paths:
        print(f"no results under {res}; run the experiments first")
    return paths


if __name__ == "__main__":
    main()
