"""Rebuild every figure from saved results only (never from memory).

    python -m figures.make_all [--results DIR] [--out DIR]

Reads the newest result per (experiment, model) under ``results/`` and writes PNGs to
``figures/out/`` (default): two-hop gap and sequential fraction against model size (exp6),
logit-lens rank trajectories of bridge and answer (exp6), back-patching success heatmaps over
(source, target) layers (exp9). Titles carry model names and the result dates.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from mlx_interp.results import load_results  # noqa: E402


def newest_per_model(experiment: str, results: Path) -> dict:
    out = {}
    for doc in load_results(experiment, results):  # oldest first: later files win
        out[doc["provenance"]["model"]["name"]] = doc
    return out


def _save(fig, path: Path, dpi: int = 110) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def _date(doc) -> str:
    return doc["provenance"]["timestamp_utc"][:10]


def fig_twohop_scaling(docs: dict, out: Path) -> list[Path]:
    if not docs:
        return []
    items = sorted(docs.items(), key=lambda kv: kv[1]["provenance"]["model"].get("params") or 0)
    names = [k for k, _ in items]
    params = [d["provenance"]["model"].get("params", 0) / 1e6 for _, d in items]
    seq = [d["results"]["summary"]["sequential_fraction"] for _, d in items]
    gap = [d["results"]["summary"]["mean_gap_depth"] or 0 for _, d in items]
    acc = [d["results"]["summary"]["accuracy"] for _, d in items]
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
        fig, axes = plt.subplots(1, 3, figsize=(14, 4.5))
        for a, key in zip(axes, ("t2", "t1", "cross")):
            h = np.array(d["results"]["heatmaps"][key], dtype=float)
            im = a.imshow(h, origin="lower", cmap="viridis")
            a.set_xlabel("target layer t")
            a.set_ylabel("source layer s")
            a.set_title({"t2": "back-patch at last token (t2)", "t1": "back-patch at e1 (t1)", "cross": "one-hop bridge -> two-hop"}[key], fontsize=9)
            fig.colorbar(im, ax=a, label=f"failures fixed (of {s['n_failed_tested']})")
        fig.suptitle(f"exp9 back-patching, {name} ({_date(d)}): fixed t2 {s['fixed_fraction_t2']}, t1 {s['fixed_fraction_t1']}")
        paths.append(_save(fig, out / f"exp9_backpatch_{name}.png"))
    return paths


def main(argv=None) -> list[Path]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--results", default="results")
    ap.add_argument("--out", default=str(Path(__file__).parent / "out"))
    a = ap.parse_args(argv)
    res, out = Path(a.results), Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    exp6 = newest_per_model("exp6_twohop_scaling", res)
    paths = fig_twohop_scaling(exp6, out) + fig_rank_trajectories(exp6, out)
    paths += fig_backpatch_heatmaps(newest_per_model("exp9_back_patching", res), out)
    for p in paths:
        print(p)
    if not paths:
        print(f"no results under {res}; run the experiments first")
    return paths


if __name__ == "__main__":
    main()
