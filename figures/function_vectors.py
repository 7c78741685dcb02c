"""Function-vector figures (exp13, with exp8's and exp11's vectors), rebuilt from kept result files only.

Per model: the AIE heatmap (layer x head) averaged over tasks and per task; accuracy bars per task and method with
the controls and 95% intervals (zero-shot and shuffled 10-shot, at the a-priori layer); the valid layer-sweep
curves per task and method; and across models, the depth of the top heads beside the seed's 40-60% prediction.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from figures.common import save as _save  # noqa: E402

METHODS = {"none": "no vector", "head_fv": "head FV", "layer_mean": "layer mean", "icl_diff": "ICL − zero-shot",
           "random_heads": "random heads", "random_vector": "random vector"}
KINDS = {"zero_shot": "zero-shot", "shuffled_10shot": "shuffled 10-shot"}


def _title(name: str, doc: dict) -> str:
    run = "quick" if doc["provenance"]["config"].get("quick") else "full"
    return f"{name} ({run}, {doc['provenance']['timestamp_utc'][:10]})"


def fig_aie(name: str, doc: dict, out: Path) -> Path:
    r = doc["results"]
    tasks = [t for t, x in r["tasks"].items() if "aie" in x]
    panels = [("mean over tasks", np.array(r["aie_mean"]))] + [(t, np.array(r["tasks"][t]["aie"])) for t in tasks]
    fig, axes = plt.subplots(1, len(panels), figsize=(2.2 * len(panels) + 1, 4.5), squeeze=False)
    for ax, (label, a) in zip(axes[0], panels):
        m = np.nanmax(np.abs(a)) or 1.0
        im = ax.imshow(a, aspect="auto", cmap="RdBu_r", vmin=-m, vmax=m, origin="lower")
        ax.set_title(label, fontsize=8)
        ax.set_xlabel("head", fontsize=8)
        fig.colorbar(im, ax=ax, fraction=0.05)
    axes[0][0].set_ylabel("layer")
    fig.suptitle(f"Average indirect effect of each head on p(answer), shuffled-label prompts:\n{_title(name, doc)}", fontsize=9)
    return _save(fig, out / f"exp13_aie_{name}.png")


def fig_accuracy(name: str, doc: dict, out: Path) -> Path:
    r = doc["results"]
    tasks = [t for t, x in r["tasks"].items() if "at_a_priori_layer" in x]
    fig, axes = plt.subplots(2, 1, figsize=(max(6, 1.6 * len(tasks) + 2), 7), squeeze=False)
    w = 0.8 / len(METHODS)
    for ax, (kind, label) in zip(axes[:, 0], KINDS.items()):
        for i, m in enumerate(METHODS):
            xs = np.arange(len(tasks)) + (i - (len(METHODS) - 1) / 2) * w
            rs = [r["tasks"][t]["at_a_priori_layer"][kind].get(m) for t in tasks]
            ps = np.array([x["p"] if x else np.nan for x in rs])
            err = np.array([[x["p"] - x["lo"], x["hi"] - x["p"]] if x else [0, 0] for x in rs]).T
            ax.bar(xs, ps, w, yerr=err, capsize=2, label=METHODS[m])
        ax.set_xticks(np.arange(len(tasks)), [t + ("*" if r["tasks"][t]["small_sample"] else "") + f"\nn={r['tasks'][t]['counts']['test_survivors']}"
                                              for t in tasks], fontsize=8)
        ax.set_ylim(0, 1.05)
        ax.set_ylabel(f"{label} top-1 accuracy")
    axes[0, 0].legend(fontsize=7, ncol=3)
    fig.suptitle(f"Test survivors, vector added at layer {r['config']['edit_layer_a_priori']} of {r['layers']} "
                 f"(* < 20 survivors; 95% Wilson intervals):\n{_title(name, doc)}", fontsize=9)
    return _save(fig, out / f"exp13_accuracy_{name}.png")


def fig_sweep(name: str, doc: dict, out: Path) -> Path:
    r = doc["results"]
    tasks = [t for t, x in r["tasks"].items() if "sweep" in x]
    fig, axes = plt.subplots(1, max(1, len(tasks)), figsize=(2.6 * max(1, len(tasks)) + 1, 3.2), squeeze=False)
    for ax, t in zip(axes[0], tasks):
        sw = r["tasks"][t]["sweep"]
        for m in ("head_fv", "layer_mean", "icl_diff"):
            if m in sw:
                ax.plot(sw["layers"], sw[m], "o-", ms=2, label=METHODS[m])
        ax.axvline(r["config"]["edit_layer_a_priori"], color="gray", ls=":", lw=1)
        ax.set_title(f"{t} (valid n={r['tasks'][t]['counts']['valid_survivors']})", fontsize=8)
        ax.set_xlabel("layer", fontsize=8)
        ax.set_ylim(-0.02, 1.02)
    axes[0][0].set_ylabel("valid zero-shot accuracy")
    axes[0][0].legend(fontsize=7)
    fig.suptitle(f"Layer sweep on valid survivors (the layer each method is then tested at; dotted: L//3):\n{_title(name, doc)}", fontsize=9)
    return _save(fig, out / f"exp13_sweep_{name}.png")


def fig_head_depths(docs: dict, out: Path) -> Path:
    fig, ax = plt.subplots(figsize=(6, 0.7 * len(docs) + 1.5))
    for i, (name, doc) in enumerate(sorted(docs.items())):
        top = doc["results"]["top_heads"]
        ax.scatter([h["depth"] for h in top], [i] * len(top), s=[20 + 400 * max(h["aie"], 0) for h in top], alpha=0.6)
    ax.axvspan(0.4, 0.6, color="gray", alpha=0.15, label="seed's prediction (40–60% of depth)")
    ax.set_yticks(range(len(docs)), sorted(docs), fontsize=8)
    ax.set_xlim(0, 1)
    ax.set_xlabel("depth of the top |A| heads (layer / L; marker size: AIE)")
    ax.legend(fontsize=7)
    ax.set_title("Where the function-vector heads sit (exp13)", fontsize=9)
    return _save(fig, out / "exp13_head_depths.png")


def all_figures(docs: dict, out: Path) -> list[Path]:
    """Every function-vector figure for ``docs`` (model name -> newest exp13 result)."""
    paths = []
    for name, doc in sorted(docs.items()):
        if "aie_mean" in doc["results"]:
            paths.append(fig_aie(name, doc, out))
        paths += [fig_accuracy(name, doc, out), fig_sweep(name, doc, out)]
    if any("top_heads" in d["results"] for d in docs.values()):
        paths.append(fig_head_depths({n: d for n, d in docs.items() if "top_heads" in d["results"]}, out))
    return paths
