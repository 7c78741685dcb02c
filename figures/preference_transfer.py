"""Preference-vector transfer figures (exp17), drawn from a run's ``experiment_results.json`` only.

The study's three: the transfer success matrix (target x carrier, length-direction score), scores by model with the
random-direction control, and adapter against direct transfer (where the widths allow a direct one).
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from figures.common import save as _save, short as _short  # noqa: E402

EXP = "exp17_preference_transfer"
CARRIERS = ("own", "direct", "ridge", "procrustes", "adapter")


def _rows(doc: dict) -> list[tuple[str, str, dict, dict]]:
    """(model, carrier, steered result, random-control result) for the source's own vector and every carried one."""
    r = doc["results"]
    out = []
    if r["source"].get("test"):
        t = r["source"]["test"]
        out.append((r["source"]["model"], "own", t["steered"], t["random"]))
    for name, t in r["targets"].items():
        for c, x in t.get("carried", {}).items():
            out.append((name, c, x, t["carried_random"][c]))
    return out


def fig_matrix(doc: dict, out: Path) -> Path:
    rows = _rows(doc)
    models = list(dict.fromkeys(m for m, *_ in rows))
    M = np.full((len(models), len(CARRIERS)), np.nan)
    for m, c, x, _ in rows:
        M[models.index(m), CARRIERS.index(c)] = x["score"]
    fig, ax = plt.subplots(figsize=(7, 0.6 * len(models) + 1.5))
    im = ax.imshow(M, vmin=0, vmax=1, cmap="viridis")
    for i in range(len(models)):
        for j in range(len(CARRIERS)):
            ax.text(j, i, "—" if np.isnan(M[i, j]) else f"{M[i, j]:.2f}", ha="center", va="center",
                    color="w" if np.isnan(M[i, j]) or M[i, j] < 0.6 else "k", fontsize=8)
    ax.set_xticks(range(len(CARRIERS)))
    ax.set_xticklabels(CARRIERS)
    ax.set_yticks(range(len(models)))
    ax.set_yticklabels([_short(m) for m in models], fontsize=8)
    fig.colorbar(im, ax=ax, label="length-direction score (test)")
    ax.set_title("exp17 transfer success matrix", fontsize=10)
    return _save(fig, out / "exp17_transfer_matrix.png")


def fig_scores(doc: dict, out: Path) -> Path:
    rows = _rows(doc)
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(rows) + 1.2))
    y = np.arange(len(rows))
    s = np.array([x["score"] for _, _, x, _ in rows])
    err = np.array([[x["score"] - x["score_ci95"][0] for _, _, x, _ in rows], [x["score_ci95"][1] - x["score"] for _, _, x, _ in rows]])
    ax.barh(y - 0.2, s, height=0.4, xerr=np.nan_to_num(err), capsize=2, label="vector", color="tab:blue")
    ax.barh(y + 0.2, [r["score"] for *_, r in rows], height=0.4, label="random direction, same scale", color="0.6")
    ax.axvline(doc["results"]["hypotheses_stated"]["source_score_gt"], color="tab:red", lw=0.8, ls="--", label="study's bar 0.7")
    ax.set_yticks(y)
    ax.set_yticklabels([f"{_short(m)} ({c})" for m, c, *_ in rows], fontsize=8)
    ax.set_xlim(0, 1.05)
    ax.set_xlabel("length-direction score on test passages (95% bootstrap CI)")
    ax.legend(fontsize=7)
    ax.invert_yaxis()
    ax.set_title("exp17 scores by model and carrier", fontsize=10)
    return _save(fig, out / "exp17_scores_by_model.png")


def fig_adapter_vs_direct(doc: dict, out: Path) -> Path:
    fig, ax = plt.subplots(figsize=(5, 3.2))
    names, d, a = [], [], []
    for name, t in doc["results"]["targets"].items():
        c = t.get("carried", {})
        if "adapter" in c:
            names.append(_short(name))
            d.append(c["direct"]["score"] if "direct" in c else np.nan)
            a.append(c["adapter"]["score"])
    x = np.arange(len(names))
    ax.bar(x - 0.2, np.nan_to_num(d), width=0.4, label="direct (— where widths differ)", color="tab:orange")
    ax.bar(x + 0.2, a, width=0.4, label="linear adapter", color="tab:blue")
    ax.set_xticks(x)
    ax.set_xticklabels(names, fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("length-direction score")
    ax.legend(fontsize=7)
    ax.set_title("exp17 adapter vs direct transfer", fontsize=10)
    return _save(fig, out / "exp17_adapter_vs_direct.png")


def all_figures(docs: dict, out: Path) -> list[Path]:
    """The three figures of the newest run in ``docs`` (run folder name -> experiment_results document)."""
    if not docs:
        return []
    doc = docs[sorted(docs)[-1]]
    if not doc["results"]["source"].get("test"):
        return []
    return [fig_matrix(doc, out), fig_scores(doc, out), fig_adapter_vs_direct(doc, out)]


def newest_runs(res: Path) -> dict:
    """run folder name -> document, for every kept exp17 run under ``res``."""
    d = res / EXP
    return {p.parent.name: json.loads(p.read_text()) for p in sorted(d.glob("*/experiment_results.json"))} if d.exists() else {}
