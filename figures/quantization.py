"""Quantization-sensitivity figures (exp15), rebuilt from kept result files only.

Per model: cosine with the reference precision's vector against depth, per trait and position, one line per precision
(solid: difference of means; dashed: probe); the 2x2 "which text / which model" matrices at the steering layer;
capability (MMLU, TruthfulQA A/B accuracy with 95% Wilson intervals) and KL to the reference against precision;
steering quality (the trait rate at the multiplier chosen on validation, test prompts) against precision, beside a
random direction of the same norm.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from figures.common import save, short  # noqa: E402

EXP = "exp15_quantization"
#: precisions from most to fewest bits, for every axis
ORDER = ("fp32", "bf16", "fp16", "8bit", "4bit", "4bit-g64", "mxfp4", "nvfp4", "3bit", "2bit")


def precisions(doc: dict) -> list[str]:
    have = doc["results"]["precisions"]
    return sorted(have, key=lambda p: ORDER.index(p) if p in ORDER else len(ORDER))


def _date(doc) -> str:
    return doc["provenance"]["timestamp_utc"][:10]


def fig_cosines(doc: dict, out: Path) -> Path:
    r = doc["results"]
    precs = [p for p in precisions(doc) if p != "fp32"]
    keys = sorted({k.rsplit("/", 1)[0] for p in precs for k in r["rows"][p]["cosine"]["native"]})
    n = max(len(keys), 1)
    fig, axes = plt.subplots(1, n, figsize=(3.2 * n, 3.2), squeeze=False)
    colors = plt.cm.viridis(np.linspace(0, 0.9, max(len(precs), 1)))
    for ax, key in zip(axes[0], keys):
        for c, p in zip(colors, precs):
            for m, ls in (("diff_of_means", "-"), ("probe", "--")):
                row = r["rows"][p]["cosine"]["native"].get(f"{key}/{m}")
                if row:
                    y = row["per_layer"]
                    ax.plot(np.arange(len(y)) / len(y), y, ls, color=c, lw=1.2, label=p if m == "diff_of_means" else None)
                    if row["steering_layer"] is not None:
                        ax.axvline(row["steering_layer"] / len(y), color="0.7", lw=0.6)
        ax.set_title(key.replace("/", "\n"), fontsize=8)
        ax.set_xlabel("depth (layer / L)")
        ax.set_ylim(min(0.5, ax.get_ylim()[0]), 1.01)
    axes[0][0].set_ylabel("cosine with fp32 vector")
    axes[0][-1].legend(fontsize=6, loc="lower right")
    fig.suptitle(f"{short(r['reference'])}: vectors per precision vs the fp32 reference (solid: diff of means, "
                 f"dashed: probe; grey: steering layer) — {_date(doc)}", fontsize=9)
    return save(fig, out / f"exp15_cosines_{short(r['reference']).replace('@fp32', '')}.png")


def fig_text_model(doc: dict, out: Path) -> Path | None:
    """The 2x2 matrix per variant and response-based key: cosine of each (text, model) cell with (reference, reference)."""
    r = doc["results"]
    precs = [p for p in precisions(doc) if "controlled" in r["rows"][p]["cosine"]]
    keys = sorted({k for p in precs for k, v in r["rows"][p]["cosine"]["controlled"].items()
                   if k.endswith("diff_of_means") and v["at_steering_layer"] is not None})
    if not precs or not keys:
        return None
    fig, axes = plt.subplots(len(keys), len(precs), figsize=(2.2 * len(precs), 2.1 * len(keys)), squeeze=False)
    for i, key in enumerate(keys):
        for j, p in enumerate(precs):
            c = r["rows"][p]["cosine"]
            get = lambda kind: (c[kind].get(key) or {}).get("at_steering_layer")  # noqa: E731
            m = np.array([[1.0, get("controlled")], [get("reference_on_variant_text"), get("native")]], dtype=float)
            ax = axes[i][j]
            ax.imshow(m, vmin=min(0.8, np.nanmin(m)), vmax=1.0, cmap="magma")
            for (a, b), v in np.ndenumerate(m):
                ax.text(b, a, "—" if np.isnan(v) else f"{v:.3f}", ha="center", va="center", fontsize=7, color="cyan")
            ax.set_xticks([0, 1], ["model fp32", f"model {p}"], fontsize=6)
            ax.set_yticks([0, 1], ["text fp32", f"text {p}"], fontsize=6)
            if j == 0:
                ax.set_ylabel(key.replace("/diff_of_means", "").replace("/", "\n"), fontsize=7)
    fig.suptitle(f"{short(r['reference'])}: which text, which model (cosine with fp32 on fp32 text, steering layer)",
                 fontsize=8)
    return save(fig, out / f"exp15_text_model_{short(r['reference']).replace('@fp32', '')}.png")


def fig_capability(doc: dict, out: Path) -> Path:
    r = doc["results"]
    precs = precisions(doc)
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.2))
    x = np.arange(len(precs))
    for off, name in ((-0.18, "mmlu"), (0.18, "truthfulqa")):
        acc = [r["rows"][p]["capability"][name]["accuracy"] for p in precs]
        a1.errorbar(x + off, [a["p"] for a in acc], yerr=[[a["p"] - a["lo"] for a in acc], [a["hi"] - a["p"] for a in acc]],
                    fmt="o", capsize=2, label=f"{name} (n={acc[0]['n']})")
    a1.axhline(0.5, color="0.6", lw=0.8, ls=":")
    a1.set_xticks(x, precs, rotation=45, fontsize=7)
    a1.set_ylabel("A/B accuracy (95% Wilson)")
    a1.legend(fontsize=7)
    kl = [max(r["rows"][p]["fidelity"]["kl"], 1e-7) for p in precs]
    a2.bar(x, kl, color="tab:gray")
    a2.set_yscale("log")
    a2.set_xticks(x, precs, rotation=45, fontsize=7)
    a2.set_ylabel("KL(fp32 || precision), nats/token")
    fig.suptitle(f"{short(r['reference'])}: capability and next-token fidelity per precision — {_date(doc)}", fontsize=9)
    return save(fig, out / f"exp15_capability_{short(r['reference']).replace('@fp32', '')}.png")


def fig_steering(doc: dict, out: Path) -> Path:
    r = doc["results"]
    precs = precisions(doc)
    traits = [t for t in ("refusal", "persona", "confidence", "sycophancy")
              if any(t in r["rows"][p]["steering"] for p in precs)]
    fig, axes = plt.subplots(1, len(traits), figsize=(3.2 * len(traits), 3.2), squeeze=False)
    x = np.arange(len(precs))
    for ax, t in zip(axes[0], traits):
        for key, lab, fmt in (("test", "vector", "o"), ("test_random", "random, same norm", "x"), ("test_baseline", "no vector", "_")):
            ys, lo, hi = [], [], []
            for p in precs:
                s = r["rows"][p]["steering"].get(t, {})
                if t == "sycophancy":  # at the searched multiplier; files from before the search: CAA's x1
                    searched = bool(r.get("sycophancy_search"))
                    v = s.get({"test": "test" if searched else "+1", "test_random": "test_random" if searched else "random_+1",
                               "test_baseline": "0"}[key])
                    ys.append(v["score"] if v else np.nan)
                    lo.append(v["score_lo"] if v else np.nan)
                    hi.append(v["score_hi"] if v else np.nan)
                else:
                    v = (s.get(key) or {}).get("rate")
                    ys.append(v["p"] if v else np.nan)
                    lo.append(v["lo"] if v else np.nan)
                    hi.append(v["hi"] if v else np.nan)
            ys, lo, hi = map(np.array, (ys, lo, hi))
            ax.errorbar(x, ys, yerr=[ys - lo, hi - ys], fmt=fmt, capsize=2, label=lab)
        ax.set_xticks(x, precs, rotation=45, fontsize=7)
        ax.set_ylim(-0.05, 1.05)
        ax.set_title({"refusal": "refusal rate (+r, harmless)", "persona": "longer than unsteered (+verbose)",
                      "confidence": "hedge rate (+hedging)", "sycophancy": "CAA A/B score (" + ("searched multiplier" if r.get("sycophancy_search")
                                                                    else "x+1") + ")"}[t], fontsize=8)
    axes[0][0].legend(fontsize=6)
    fig.suptitle(f"{short(r['reference'])}: steering at the multiplier chosen on validation, test prompts — {_date(doc)}",
                 fontsize=9)
    return save(fig, out / f"exp15_steering_{short(r['reference']).replace('@fp32', '')}.png")


def all_figures(docs: dict, out: Path) -> list[Path]:
    """Every exp15 figure for each model's newest result (``docs``: model -> result document)."""
    paths = []
    for doc in docs.values():
        paths += [fig_cosines(doc, out), fig_capability(doc, out), fig_steering(doc, out)]
        tm = fig_text_model(doc, out)
        if tm:
            paths.append(tm)
    return paths
