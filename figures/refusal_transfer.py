"""Refusal-direction transfer figures (exp16, the run plan's B1 and B2), rebuilt from kept result files only.

The geometry: for every source -> target pair and carrier (direct, lstsq, ridge, Procrustes), the cosine of the
carried direction with the target's own (95% bootstrap interval) beside the band random directions reach through
the same carrier and the run plan's predicted range. The transfer: harmless-prompt refusal rate in each target with
the carried direction, the carried random direction and the target's own.
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from figures.common import save as _save, short as _short  # noqa: E402

EXP = "exp16_refusal_transfer"


def _files(root: Path, kind: str) -> list[Path]:
    """``<stamp>_b1_<kind>...`` and ``<stamp>_b2_<kind>...`` files, oldest first by UTC stamp: runs before the B1/B2
    split (2026-12-05) named every file ``b1_``, so a model's or pair's newest file may carry either prefix."""
    d = Path(root) / EXP
    return sorted(p for p in (d.glob("*.json") if d.exists() else [])
                  if p.stem.split("_", 1)[-1].startswith((f"b1_{kind}", f"b2_{kind}")))


def _newest(root: Path, kind: str, key) -> dict:
    """key(doc) -> (file, doc) of the newest such file per key."""
    return {key(doc): (p.name, doc) for p in _files(root, kind) for doc in (json.loads(p.read_text()),)}


def self_controls(root: Path) -> dict[str, tuple[str, dict]]:
    """model -> (file, document) of its newest self-control."""
    return _newest(root, "self_", lambda d: d["results"]["model"])


def transfers(root: Path) -> dict[tuple[str, str], tuple[str, dict]]:
    """(source, target) -> (file, document) of the pair's newest behavioural transfer."""
    return _newest(root, "transfer_", lambda d: (d["results"]["source"], d["results"]["target"]))


def plan_stage_of_self(doc: dict, families: dict[str, str]) -> str:
    """A self-control's run-plan stage: recorded since the split; before it, B1 when another model of that run
    (its config's ``models``) has the same family (``families``: model -> family, from the self-control files)."""
    r = doc["results"]
    if "plan_stage" in r:
        return r["plan_stage"]
    run = doc["provenance"]["config"].get("models", [])
    return "B1" if any(m != r["model"] and families.get(m) == r["family"] for m in run) else "B2"


def plan_stage_of_pair(r: dict, same_family: bool) -> str:
    """A pair's run-plan stage: recorded since the split, else B1 for a same-family pair and B2 across families."""
    return r.get("plan_stage") or ("B1" if same_family else "B2")


def transfer_stage(doc: dict) -> str:
    """A transfer file's run-plan stage, from the source's and target's recorded families where it has no stage."""
    r = doc["results"]
    return plan_stage_of_pair(r, r["source_model"]["family"] == doc["provenance"]["model"]["family"])


def same_run(a: dict, b: dict) -> bool:
    """Whether two exp16 files come from one run: the same configuration (models included) and start commit."""
    pa, pb = a["provenance"], b["provenance"]
    return pa["config"] == pb["config"] and pa.get("git_commit") == pb.get("git_commit")


def geometry_docs(root: Path) -> dict[tuple[str, str], tuple[str, dict]]:
    """(source, target) -> (file, document) of the newest ``b1_``/``b2_geometric_comparisons`` file holding the pair:
    a run on a new pair of models (the 0.5B <-> 1.5B one) adds its pairs without hiding the earlier ones."""
    out: dict = {}
    for p in _files(root, "geometric_comparisons"):
        doc = json.loads(p.read_text())
        for g in doc["results"]["pairs"]:
            out[(g["source"], g["target"])] = (p.name, doc)
    return out


def geometry_pairs(root: Path) -> list[tuple[str, dict]]:
    """(file, pair) for every ordered model pair, from its newest geometry file (``geometry_docs``)."""
    return [(f, next(g for g in doc["results"]["pairs"] if (g["source"], g["target"]) == key))
            for key, (f, doc) in geometry_docs(root).items()]


def fig_geometry(pairs: list[tuple[str, dict]], out: Path) -> Path:
    """``pairs`` as ``geometry_pairs`` gives them: one row per pair and carrier."""
    rows = [(g, c, v) for _, g in pairs for c, v in g["comparisons"].items()]
    fig, ax = plt.subplots(figsize=(10, 0.28 * len(rows) + 1.2))
    for i, (g, c, v) in enumerate(rows):
        lo, hi = v["random_abs_cosine_range95"]
        ax.plot([lo, hi], [i, i], color="0.75", lw=6, solid_capstyle="butt")
        ax.plot([g["predicted"][0], g["predicted"][1]], [i - 0.3, i - 0.3], color="tab:green", lw=1)
        # the bootstrap interval of a cosine is biased low and can exclude the point (docs/results_transfer.md): draw the
        # interval as a bar of its own and the point on it, never a negative error bar
        ax.plot(v["cosine_ci95"], [i, i], color="tab:blue" if g["same_family"] else "tab:orange", lw=1.5)
        ax.plot(v["cosine"], i, "o", color="tab:blue" if g["same_family"] else "tab:orange", ms=4)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([f"{_short(g['source'])} → {_short(g['target'])} ({c})" for g, c, _ in rows], fontsize=7)
    ax.axvline(0, color="k", lw=0.5)
    ax.set_xlabel("cosine of the carried source direction with the target's own (95% bootstrap CI); grey: random "
                  "directions |cos| 2.5–97.5 pct; green: predicted range", fontsize=8)
    dates = sorted({f[:8] for f, _ in pairs})
    ax.set_title(f"exp16 refusal-direction geometry (result files {dates[0]}..{dates[-1]})", fontsize=10)
    ax.invert_yaxis()
    return _save(fig, out / "exp16_geometry.png")


def fig_transfer(docs: dict, out: Path) -> Path:
    rows = []
    for _, (_, d) in sorted(docs.items()):
        r = d["results"]
        st = r["steering"]
        stage = transfer_stage(d)
        for c in [k for k in st if k != "target_own_at_layer" and not k.endswith("_random")]:
            rows.append((f"{stage}: {_short(r['source'])} → {_short(r['target'])} ({c})", st[c]["refusal"],
                         st[c + "_random"]["refusal"], st["target_own_at_layer"]["refusal"]))
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(rows) + 1.2))
    y = np.arange(len(rows))
    for off, j, label, color in ((-0.25, 1, "carried direction", "tab:blue"), (0, 2, "carried random", "0.6"),
                                 (0.25, 3, "target's own", "tab:green")):
        p = np.array([r[j]["p"] for r in rows])
        err = np.array([[r[j]["p"] - r[j]["lo"] for r in rows], [r[j]["hi"] - r[j]["p"] for r in rows]])
        ax.barh(y + off, p, height=0.25, xerr=err, color=color, label=label, capsize=2)
    ax.set_yticks(y)
    ax.set_yticklabels([r[0] for r in rows], fontsize=8)
    ax.set_xlim(0, 1.05)
    ax.set_xlabel("refusal rate on harmless test prompts (95% Wilson CI)")
    ax.legend(fontsize=7)
    ax.invert_yaxis()
    ax.set_title("exp16 steering with a transferred refusal direction", fontsize=10)
    return _save(fig, out / "exp16_transfer.png")


def fig_geometry_by_layer(pairs: list[tuple[str, dict]], out: Path) -> Path | None:
    """Cosine of the carried direction with the target's own at every matched layer pair, per source -> target pair
    and carrier, beside the random band through the same carrier (only files that have ``per_layer``)."""
    pairs = [(f, g) for f, g in pairs if g.get("per_layer")]
    if not pairs:
        return None
    n = len(pairs)
    cols = min(3, n)
    rws = (n + cols - 1) // cols
    fig, axes = plt.subplots(rws, cols, figsize=(4.2 * cols, 3.0 * rws), squeeze=False, sharey=True)
    colors = {"direct": "k", "lstsq": "tab:purple", "ridge": "tab:orange", "procrustes": "tab:blue"}
    for ax, (_, g) in zip(axes.flat, pairs):
        rows = g["per_layer"]
        x = [r["source_depth"] for r in rows]
        for c in [c for c in colors if c in rows[0]["comparisons"]]:
            cos = [r["comparisons"][c]["cosine"] for r in rows]
            lo = [r["comparisons"][c]["cosine_ci95"][0] for r in rows]
            hi = [r["comparisons"][c]["cosine_ci95"][1] for r in rows]
            ax.plot(x, cos, "o-", ms=2.5, lw=1, color=colors[c], label=c)
            ax.fill_between(x, lo, hi, color=colors[c], alpha=0.15, lw=0)
            ax.fill_between(x, [r["comparisons"][c]["random_abs_cosine_range95"][1] for r in rows], 0, color="0.85",
                            lw=0, zorder=0)
        ax.axvline(g["source_layer"] / (rows[0]["source_layer"] / rows[0]["source_depth"]), color="0.4", ls=":", lw=1)
        ax.axhspan(*g["predicted"], color="tab:green", alpha=0.08, lw=0)
        ax.set_title(f"{_short(g['source'])} → {_short(g['target'])}", fontsize=8)
        ax.axhline(0, color="k", lw=0.5)
    for ax in axes.flat[n:]:
        ax.axis("off")
    for ax in axes[-1]:
        ax.set_xlabel("source depth (layer / L)", fontsize=8)
    for ax in axes[:, 0]:
        ax.set_ylabel("cosine with target's own", fontsize=8)
    axes.flat[0].legend(fontsize=6)
    fig.suptitle("exp16 geometry per matched layer (band: 95% bootstrap CI; grey: random |cos| 97.5 pct; green: "
                 "predicted; dotted: chosen layer)", fontsize=9)
    return _save(fig, out / "exp16_geometry_by_layer.png")


def all_figures(res: Path, out: Path) -> list[Path]:
    """Every exp16 figure from the newest kept files in ``res`` (the geometry from every pair's newest file)."""
    paths = []
    geo = geometry_pairs(res)
    if geo:
        paths.append(fig_geometry(geo, out))
        by_layer = fig_geometry_by_layer(geo, out)
        if by_layer:
            paths.append(by_layer)
    docs = transfers(res)
    if docs:
        paths.append(fig_transfer(docs, out))
    return paths
