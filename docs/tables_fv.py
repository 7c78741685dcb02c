"""The function-vector tables (exp13, with exp8's and exp11's vectors on the same items) for docs/results_*.md.

Registered in ``docs/make_tables.py`` (``TABLES``), which rewrites and checks them like every other table. Each
is built from the newest kept exp13 result per model. Rates: ``p [lo, hi] (k/n)``, 95% Wilson intervals;
tasks with fewer than 20 test survivors are marked and left out of every mean. The summary's cells give the pooled
rate over the averaged tasks' test items, ``pooled p [lo, hi] (k/n)``, then the unweighted mean of the tasks'
accuracies (the paper's statistic), ``task mean m``; the interval belongs to the pooled rate only.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mlx_interp.measures.stats import wilson

EXP = "exp13_function_vectors"
NAMES = {"none": "no vector", "head_fv": "head FV (exp13)", "layer_mean": "layer mean (exp8)",
         "icl_diff": "ICL − zero-shot (exp11)", "random_heads": "random heads", "random_vector": "random vector"}
KINDS = {"zero_shot": "zero-shot", "shuffled_10shot": "shuffled 10-shot"}


def _rate(x: dict | None) -> str:
    return "—" if not x else f"{x['p']:.2f} [{x['lo']:.2f}, {x['hi']:.2f}] ({x['k']}/{x['n']})"


def _pooled(rates: list[dict]) -> str:
    """The pooled rate over the tasks' items with its Wilson interval and counts, then the unweighted mean of the
    tasks' accuracies (the paper's statistic), each labelled: ``pooled p [lo, hi] (k/n); task mean m``."""
    if not rates:
        return "—"
    k, n = sum(r["k"] for r in rates), sum(r["n"] for r in rates)
    lo, hi = wilson(k, n)
    return f"pooled {k / n:.2f} [{lo:.2f}, {hi:.2f}] ({k}/{n}); task mean {np.mean([r['p'] for r in rates]):.2f}"


def _tasks(d: dict) -> dict:
    return d["results"]["tasks"]


def t_survivors(newest, root: Path, md_table) -> str:
    rows = []
    for name, (f, d) in newest(EXP, root).items():
        r = d["results"]
        cells = []
        for t, x in _tasks(d).items():
            c = x["counts"]
            mark = "*" if x.get("small_sample") else ""
            cells.append(f"{t} {c['valid_survivors']}/{c['valid_scanned']}, {c['test_survivors']}/{c['test_scanned']}{mark}")
        sel = r.get("size_selection")
        a = f"{r['n_heads_A']}" + (f" (valid: {', '.join(f'{k}→{v:.2f}' for k, v in sel['valid_zero_shot'].items())})" if sel else " (fixed)")
        ratios = [x["fv_norm_over_resid_norm"] for x in _tasks(d).values() if "fv_norm_over_resid_norm" in x]
        share = [x["fv_top5_channel_share"] for x in _tasks(d).values() if "fv_top5_channel_share" in x]
        rows.append([name, "quick" if d["provenance"]["config"].get("quick") else "full", f"{r['config']['edit_layer_a_priori']}/{r['layers']}",
                     a, "; ".join(cells), "—" if not ratios else f"{np.median(ratios):.2f}", "—" if not share else f"{np.median(share):.2f}",
                     f"`{f}`"])
    return md_table(["model", "run", "a-priori layer", "|A| (chosen on valid: mean valid zero-shot accuracy)",
                     "survivors per task: valid, test (* fewer than 20 test)", "FV norm / residual norm (median over tasks)",
                     "share of FV² in its top 5 channels", "result file"], rows)


def t_summary(newest, root: Path, md_table) -> str:
    rows = []
    for name, (f, d) in newest(EXP, root).items():
        r = d["results"]
        keep = r["summary"]["tasks_averaged"]
        for kind, label in KINDS.items():
            cells = [_pooled([_tasks(d)[t]["at_a_priori_layer"][kind][m] for t in keep]) for m in NAMES]
            rows.append([name, label, ", ".join(keep) or "none (every task < 20 test survivors)"] + cells)
    p = newest(EXP, root)
    if p:
        paper = next(iter(p.values()))[1]["results"]["paper"]
        for kind, label in KINDS.items():
            rows.append(["GPT-J 6B (paper)", label, "six headline tasks", f"task mean {paper[kind][0]:.3f}",
                         f"task mean {paper[kind][1]:.3f}", "", "", "", ""])
    return md_table(["model", "prompt", "tasks (≥ 20 test survivors)"] + [NAMES[m] for m in NAMES], rows)


def t_accuracy(newest, root: Path, md_table) -> str:
    rows = []
    for name, (f, d) in newest(EXP, root).items():
        for t, x in _tasks(d).items():
            if "skipped" in x:
                rows.append([name, t, "—", x["skipped"]] + [""] * (len(NAMES) - 1))
                continue
            for kind, label in KINDS.items():
                ev = x["at_a_priori_layer"][kind]
                rows.append([name, t + ("*" if x["small_sample"] else ""), label] + [_rate(ev.get(m)) for m in NAMES])
    return md_table(["model", "task (* < 20 test survivors)", "prompt"] + [NAMES[m] for m in NAMES], rows)


def t_chosen(newest, root: Path, md_table) -> str:
    rows = []
    for name, (f, d) in newest(EXP, root).items():
        L = d["results"]["layers"]
        for t, x in _tasks(d).items():
            if "skipped" in x:
                continue
            for m, layer in x["chosen_layer"].items():
                ev = x["at_chosen_layer"][m]
                if layer is None:
                    rows.append([name, t + ("*" if x["small_sample"] else ""), NAMES[m], "none: valid accuracy 0 at every swept layer", "", ""])
                    continue
                rows.append([name, t + ("*" if x["small_sample"] else ""), NAMES[m], f"{layer} ({layer / L:.2f})"]
                            + [f"{_rate(ev[k]['none'])} → {_rate(ev[k][m])}" for k in KINDS])
    return md_table(["model", "task", "vector", "layer chosen on valid (depth)", "test zero-shot: none → vector",
                     "test shuffled 10-shot: none → vector"], rows)


def t_heads(newest, root: Path, md_table) -> str:
    rows = []
    for name, (f, d) in newest(EXP, root).items():
        top = d["results"]["top_heads"]
        depths = [h["depth"] for h in top]
        rows.append([name, str(len(top)), ", ".join(f"{h['layer']}.{h['head']} ({h['aie']:+.3f})" for h in top[:10]),
                     f"{np.mean(depths):.2f} [{min(depths):.2f}, {max(depths):.2f}]",
                     f"{np.mean([0.4 <= x <= 0.6 for x in depths]):.2f}"])
    return md_table(["model", "|A|", "top heads by task-averaged AIE: layer.head (AIE), first 10", "depth of the |A| heads: mean [min, max]",
                     "share in the seed's predicted 40–60% band"], rows)


def t_natural(newest, root: Path, md_table) -> str:
    rows = []
    for name, (f, d) in newest(EXP, root).items():
        for t, x in _tasks(d).items():
            for tmpl, row in x.get("natural", {}).items():
                rows.append([name, t, "`" + tmpl.replace("\n", "\\n").replace("|", "\\|") + "`"]
                            + [_rate(row.get(m)) for m in ("none", "head_fv", "layer_mean", "icl_diff")])
    return md_table(["model", "task", "template", "no vector", "head FV", "layer mean", "ICL − zero-shot"], rows)
