"""KV-cache transfer figures (exp14), rebuilt from kept result files only.

Signature effect sizes per layer (K and V, with intervals) per model; the rate at which the answer names the
source's facts under each condition and control (14a, 14b); the layer-window and head splices as a heatmap over
models; the injection-position plot (cache moved with and without re-rotation, beside the same tokens as text);
and the cross-topic outcome classes. exp14e (the cross-model projector): each direction's training loss per layer
and held-out R^2, and what the receiver answers from each context.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from figures.common import save as _save  # noqa: E402

CONTROLS = ("none", "text", "same_cache", "noise", "other", "neutral", "k_only", "v_only")
POSITIONS = ("start", "middle", "end")


def _tag(doc) -> str:
    return ("quick" if doc["provenance"]["config"].get("quick") else "full") + ", " + doc["provenance"]["timestamp_utc"][:10]


def fig_signatures(docs: dict, out: Path) -> Path:
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6), sharey=True)
    for ax, kv in zip(axes, ("k", "v")):
        for name, doc in sorted(docs.items()):
            s = doc["results"]["signatures"][kv]
            L = len(s)
            x = np.arange(L) / L
            ax.plot(x, [e["d"] for e in s], "o-", ms=2, label=f"{name} ({_tag(doc)})")
            ax.fill_between(x, [e["lo"] for e in s], [e["hi"] for e in s], alpha=0.15)
        ax.axhline(0.83, color="gray", ls=":", lw=1, label="earlier phase d = 0.83")
        ax.axhline(0, color="k", lw=0.5)
        ax.set_xlabel("layer / L")
        ax.set_title(f"{kv.upper()} norms: Cohen's d, confabulated − grounded (95% CI)", fontsize=9)
    axes[0].set_ylabel("Cohen's d")
    axes[1].legend(fontsize=7)
    return _save(fig, out / "exp14_signatures.png")


def fig_conditions(docs: dict, out: Path) -> Path:
    parts = (("persistence", "14a: answer names both facts"), ("retrieval", "14b: answer named"))
    fig, axes = plt.subplots(len(parts), 1, figsize=(11, 6.5), squeeze=False)
    names = sorted(docs)
    w = 0.8 / max(1, len(names))
    for ax, (part, label) in zip(axes[:, 0], parts):
        for i, name in enumerate(names):
            r = docs[name]["results"][part]["rates"]
            conds = [c for c in CONTROLS if c in r]
            xs = np.arange(len(conds)) + (i - (len(names) - 1) / 2) * w
            ps = [r[c]["p"] for c in conds]
            err = np.array([[r[c]["p"] - r[c]["lo"], r[c]["hi"] - r[c]["p"]] for c in conds]).T
            ax.bar(xs, ps, w, yerr=err, capsize=2, label=f"{name} (n={docs[name]['results'][part]['n']})")
        ax.set_xticks(np.arange(len(conds)), conds, fontsize=8)
        ax.set_ylim(0, 1.05)
        ax.set_ylabel(label, fontsize=8)
    axes[0, 0].legend(fontsize=7)
    fig.suptitle("What the question reads before it: controls and transplants (exp14; 95% Wilson intervals)", fontsize=9)
    return _save(fig, out / "exp14_conditions.png")


def fig_windows(docs: dict, out: Path) -> Path:
    names = sorted(docs)
    fig, axes = plt.subplots(1, 2, figsize=(11, 0.6 * len(names) + 2), squeeze=False)
    for ax, part in zip(axes[0], ("persistence", "retrieval")):
        rows, labels = [], []
        for name in names:
            r = docs[name]["results"][part]["rates"]
            win = sorted((c for c in r if c.startswith("layers_")), key=lambda c: int(c.split("_")[1]))
            rows.append([r[c]["p"] for c in win])
            labels = [f"{int(c.split('_')[1])}–{int(c.split('_')[2]) - 1}" for c in win]
        im = ax.imshow(np.array(rows), vmin=0, vmax=1, cmap="viridis", aspect="auto")
        ax.set_yticks(range(len(names)), names, fontsize=7)
        ax.set_xticks(range(len(labels)), [f"quarter {i + 1}" for i in range(len(labels))], fontsize=8)
        ax.set_title(f"{part}: source K+V spliced into a neutral cache, one window of layers", fontsize=8)
        fig.colorbar(im, ax=ax, fraction=0.05)
    return _save(fig, out / "exp14_layer_windows.png")


def fig_position(docs: dict, out: Path) -> Path:
    """One row per model, one column per part: the moved cache, the same tokens as text and the moved cache with
    its keys left unrotated, at each placement, with 95% Wilson intervals."""
    names = sorted(docs)
    fig, axes = plt.subplots(len(names), 2, figsize=(10, 2.6 * len(names)), sharey=True, squeeze=False)
    styles = (("", "moved cache (keys re-rotated)", "o", "C0"), ("_text", "same tokens as text", "s", "C1"),
              ("_unrotated", "moved, keys not re-rotated", "x", "C2"))
    for row, name in zip(axes, names):
        doc = docs[name]
        fill = doc["results"]["config"].get("filler_tokens", 24)
        for ax, part in zip(row, ("persistence", "retrieval")):
            r = doc["results"][part]["rates"]
            for k, (suffix, label, marker, color) in enumerate(styles):
                xs, ys, lo, hi = [], [], [], []
                for i, p in enumerate(POSITIONS):
                    x = r.get(f"pos_{p}{suffix}")
                    if x:
                        xs.append(i + (k - 1) * 0.12)
                        ys.append(x["p"])
                        lo.append(x["p"] - x["lo"])
                        hi.append(x["hi"] - x["p"])
                ax.errorbar(xs, ys, yerr=[lo, hi], fmt=marker, color=color, label=label, ms=5, capsize=2, lw=1)
            n = doc["results"][part]["n"]
            ax.set_xticks(range(3), [f"{p}\n(shift {s})" for p, s in zip(POSITIONS, (0, fill, 2 * fill))], fontsize=7)
            ax.set_ylim(-0.05, 1.05)
            ax.set_title(f"{name} ({_tag(doc)})\n{part}, n = {n}; filler {fill} tokens each side", fontsize=7)
        row[0].set_ylabel("rate")
    axes[0][1].legend(fontsize=6, loc="lower left")
    fig.tight_layout()
    return _save(fig, out / "exp14_position.png")


def fig_cross(docs: dict, out: Path) -> Path:
    names = sorted(docs)
    fig, axes = plt.subplots(1, len(names), figsize=(4 * len(names), 3.4), squeeze=False)
    for ax, name in zip(axes[0], names):
        c = docs[name]["results"]["cross_topic"]["classes"]
        conds = [k for k in CONTROLS if k in c]
        bottom = np.zeros(len(conds))
        for cls in ("broken", "transferred", "unaffected"):
            v = np.array([c[k][cls]["p"] for k in conds])
            ax.bar(range(len(conds)), v, bottom=bottom, label=cls)
            bottom += v
        ax.set_xticks(range(len(conds)), conds, fontsize=7, rotation=30)
        ax.set_title(f"{name} (n={docs[name]['results']['cross_topic']['n']})", fontsize=8)
    axes[0, 0].legend(fontsize=7)
    fig.suptitle("14c/14d: a creative source before a factual question", fontsize=9)
    return _save(fig, out / "exp14_cross_topic.png")


def all_figures(docs: dict, out: Path) -> list[Path]:
    """Every exp14 figure for ``docs`` (model name -> newest exp14 result)."""
    if not docs:
        return []
    return [fig_signatures(docs, out), fig_conditions(docs, out), fig_windows(docs, out), fig_position(docs, out),
            fig_cross(docs, out)]


E_CONDITIONS = ("none", "text", "projected", "projected_other", "noise")


def fig_projector(docs: dict, out: Path) -> Path:
    """exp14e, one row per direction: loss curves of the key and value maps (every layer), held-out R^2 by depth,
    and the 14a/14b rates under each context with 95% intervals."""
    names = sorted(docs)
    fig, axes = plt.subplots(len(names), 3, figsize=(13, 3.2 * len(names)), squeeze=False)
    for row, name in zip(axes, names):
        r = docs[name]["results"]
        p, title = r["projector"], f"{r['source']['name']} → {name} ({_tag(docs[name])})"
        for key, curve in p.get("loss_curves", {}).items():
            c = np.array(curve)
            row[0].plot(c[:, 0], c[:, 1], color="C0" if key[0] == "k" else "C1", lw=0.6, alpha=0.5)
        row[0].set_title(f"map training loss per layer (blue K, orange V)\n{title}", fontsize=8)
        row[0].set_xlabel("AdamW step")
        for kv, color in (("k", "C0"), ("v", "C1")):
            layers = sorted(int(k[1:]) for k in p["val"] if k[0] == kv)
            row[1].plot(np.array(layers) / max(1, len(layers)), [p["val"][f"{kv}{l}"]["r2"] for l in layers], "o-", ms=2,
                        color=color, label=kv.upper())
        row[1].axhline(0, color="k", lw=0.5)
        row[1].set_xlabel("receiver layer / L")
        row[1].set_ylabel("held-out R²")
        row[1].legend(fontsize=7)
        w = 0.4
        for i, part in enumerate(("persistence", "retrieval")):
            rates = r[part]["rates"]
            xs = np.arange(len(E_CONDITIONS)) + (i - 0.5) * w
            err = np.array([[rates[c]["p"] - rates[c]["lo"], rates[c]["hi"] - rates[c]["p"]] for c in E_CONDITIONS]).T
            row[2].bar(xs, [rates[c]["p"] for c in E_CONDITIONS], w, yerr=err, capsize=2,
                       label=f"{'14a' if part == 'persistence' else '14b'} (n={r[part]['n']})")
        row[2].set_xticks(np.arange(len(E_CONDITIONS)), E_CONDITIONS, fontsize=7, rotation=20)
        row[2].set_ylim(0, 1.05)
        row[2].legend(fontsize=7)
        row[2].set_title("answer names the source's facts", fontsize=8)
    fig.suptitle("exp14e: a KV cache projected from one model into another (95% Wilson intervals)", fontsize=9)
    return _save(fig, out / "exp14e_projector.png")
