"""The refusal-direction transfer tables (exp16, the run plan's B1 and B2) for docs/results_transfer.md, registered
in ``docs/make_tables.py``.

exp16 names its files by what they hold and the run plan's stage (``<stamp>_b1_self_<model>.json``,
``..._b2_transfer_<src>_to_<tgt>.json``, ``..._b1_geometric_comparisons.json``; runs before 2026-12-05 named every
file ``b1_``): each table reads the newest file per model or pair, and the stage column says B1 (same family) or B2
(across families). Rates: ``p [lo, hi] (k/n)``, 95% Wilson intervals; cosines: the point value with a 95% bootstrap
interval over the train prompts.
"""

from __future__ import annotations

import json
from pathlib import Path

from figures.refusal_transfer import (geometry_docs, geometry_pairs, plan_stage_of_pair, plan_stage_of_self,
                                      same_run, self_controls, transfer_stage, transfers)
from experiments.exp16_refusal_transfer import PLAN_PREDICTIONS

EXP = "exp16_refusal_transfer"


def _rate(x: dict | None) -> str:
    return "—" if not x else f"{x['p']:.2f} [{x['lo']:.2f}, {x['hi']:.2f}] ({x['k']}/{x['n']})"


def _run(d) -> str:
    return "quick" if d["provenance"]["config"].get("quick") else "full"


def _stages(root: Path) -> tuple[dict, dict]:
    """The newest self-control per model and each one's run-plan stage."""
    selves = self_controls(root)
    families = {m: d["results"]["family"] for m, (_, d) in selves.items()}
    return selves, {m: plan_stage_of_self(d, families) for m, (_, d) in selves.items()}


def t_self(newest, root: Path, md_table) -> str:
    rows = []
    selves, stages = _stages(root)
    for model, (f, d) in selves.items():
        s = d["results"]
        e = s.get("effect", {})
        kept = s.get("vetting", {})
        vet = "—" if not kept else f"{kept.get('positive_kept', '?')}/{kept.get('positive_total', '?')} harmful, " \
                                   f"{kept.get('negative_kept', '?')}/{kept.get('negative_total', '?')} harmless"
        layer = "—" if s.get("layer") is None else f"{s['layer']} ({s['depth']:.2f})"
        verdict = "passed" if s["passed"] else f"stopped: {s['stop']}"
        rows.append([s["model"], stages[model], _run(d), verdict, vet, layer,
                     _rate(e.get("harmless_baseline", {}).get("refusal")), _rate(e.get("harmless_plus_r", {}).get("refusal")),
                     _rate(e.get("harmless_plus_random", {}).get("refusal")), _rate(e.get("harmless_plus_r", {}).get("coherent")),
                     PLAN_PREDICTIONS[stages[model]]["self_control"],
                     _rate(e.get("harmful_baseline", {}).get("refusal")), _rate(e.get("harmful_ablation", {}).get("refusal")),
                     f"`{f}`"])
    return md_table(["model", "run plan stage", "run", "the plan's stop rules", "vetting kept (train)",
                     "layer chosen on val (depth)", "harmless: refusal, no vector", "+r", "+random (same norm)",
                     "coherent with +r", "run plan's prediction", "harmful: refusal, no vector", "r ablated",
                     "result file"], rows)


def _unvetted(g: dict) -> str:
    """" (unvetted: <model>)" for a pair where a model's direction is its unvetted difference of means."""
    return "" if all(g["directions_vetted"]) else " (unvetted: " + ", ".join(
        n for n, v in zip((g["source"], g["target"]), g["directions_vetted"]) if not v) + ")"


def _pair_stage(g: dict) -> str:
    return f"{plan_stage_of_pair(g, g['same_family'])} ({'same family' if g['same_family'] else 'across families'})"


def t_geometry(newest, root: Path, md_table) -> str:
    rows = []
    for f, g in geometry_pairs(root):
        vet = _unvetted(g)
        for carrier, c in g["comparisons"].items():
            r2 = g["map_scores_held_out"].get(carrier, {}).get("r2")
            rows.append([f"{g['source']} → {g['target']}{vet}", _pair_stage(g),
                         f"{g['source_layer']} → {g['target_layer']}", carrier,
                         f"{c['cosine']:+.2f} [{c['cosine_ci95'][0]:+.2f}, {c['cosine_ci95'][1]:+.2f}]",
                         f"{c['norm_ratio']:.2f}",
                         f"{c['random_cosine_mean']:.2f} [{c['random_abs_cosine_range95'][0]:.2f}, "
                         f"{c['random_abs_cosine_range95'][1]:.2f}]",
                         "yes" if c["beats_random"] else "no", f"{g['predicted'][0]}–{g['predicted'][1]}",
                         "—" if r2 is None else f"{r2:.2f}", f"`{f}`"])
    return md_table(["source → target", "run plan stage", "layers (source → target)", "carried by", "cosine with target's own [95% CI]",
                     "norm ratio", "random directions: mean |cos| [2.5, 97.5 pct]", "beats random", "run plan's prediction",
                     "map R² (held-out texts)", "result file"], rows)


def t_geometry_by_layer(newest, root: Path, md_table) -> str:
    """One row per pair and carrier from the per-layer comparison (files that have ``per_layer``): at how many
    matched layers the carried direction beats its random band and lands in the run plan's predicted range, the
    range of its cosine over layers, and the highest cosine among the layers that beat random (a maximum over
    layers read on the same prompts: descriptive, biased upward, not a chosen layer)."""
    rows = []
    for f, g in geometry_pairs(root):
        pl = g.get("per_layer") or []
        if not pl:
            continue
        lo, hi = g["predicted"]
        for carrier in pl[0]["comparisons"]:
            cs = [(r, r["comparisons"][carrier]) for r in pl]
            beats = sum(c["beats_random"] for _, c in cs)
            inside = sum(lo <= c["cosine"] <= hi and c["beats_random"] for _, c in cs)
            vals = [c["cosine"] for _, c in cs]
            top = max([rc for rc in cs if rc[1]["beats_random"]], key=lambda rc: rc[1]["cosine"], default=None)
            peak = "—" if top is None else (f"{top[0]['source_layer']} → {top[0]['target_layer']} ({top[0]['source_depth']:.2f}): "
                                            f"{top[1]['cosine']:+.2f} [{top[1]['cosine_ci95'][0]:+.2f}, {top[1]['cosine_ci95'][1]:+.2f}]")
            rows.append([f"{g['source']} → {g['target']}{_unvetted(g)}", _pair_stage(g), carrier,
                         f"{beats}/{len(cs)}", f"{inside}/{len(cs)}", f"{min(vals):+.2f} … {max(vals):+.2f}", peak,
                         str(g["source_layer"]), f"`{f}`"])
    return md_table(["source → target", "run plan stage", "carried by", "layers beating random", "layers beating random and in "
                     "the plan's range", "cosine over layers (min … max)", "highest among layers beating random: layers "
                     "(source depth): cosine [95% CI]", "chosen source layer", "result file"], rows)


def _vs_plan(stage: str, carried: dict, self_coherent: dict | None) -> str:
    """The carried direction's coherent rate against the run plan's prediction, on point estimates (the rates'
    intervals are in their own columns): B1, 50-80% of the target's self-control coherent rate; B2, below 50%."""
    if stage == "B2":
        return f"{carried['p']:.2f} {'<' if carried['p'] < 0.5 else '≥'} 0.50: {'as' if carried['p'] < 0.5 else 'not as'} predicted"
    if not self_coherent or not self_coherent["p"]:
        return "— (no self-control rate)"
    ratio = carried["p"] / self_coherent["p"]
    return f"{ratio:.2f} of {self_coherent['p']:.2f}: {'as' if 0.5 <= ratio <= 0.8 else 'not as'} predicted"


def _self_of_run(root: Path, model: str, doc: dict, file: str) -> dict:
    """``model``'s self-control from the run that wrote ``doc`` (``same_run``), stamped no later than ``file``; {}
    if there is none."""
    for p in sorted((root / EXP).glob(f"*_self_{model}.json"), reverse=True):
        d = json.loads(p.read_text())
        if p.name[:16] <= file[:16] and same_run(d, doc):
            return d
    return {"results": {}}


def _superseded(geometry: dict, pair: tuple[str, str], doc: dict) -> str:
    """A note when a later run compared this pair but steered it no more (B2 skipped, or a self-control stopped):
    the row is then an earlier run's. ``geometry``: ``geometry_docs``."""
    f, gdoc = geometry.get(pair, (None, None))
    if gdoc is None or same_run(gdoc, doc):
        return ""
    why = gdoc["results"].get("b2_transfers_skipped") or "a self-control stopped"
    return f" (earlier run: `{f}` did not steer this pair: {why})"


def t_transfer(newest, root: Path, md_table) -> str:
    rows = []
    geometry = geometry_docs(root)
    for (src, tgt), (f, d) in transfers(root).items():
        r = d["results"]
        st = r["steering"]
        own = st["target_own_at_layer"]
        stage = transfer_stage(d)
        tself = _self_of_run(root, tgt, d, f)["results"].get("effect", {}).get("harmless_plus_r", {})
        note = _superseded(geometry, (src, tgt), d)
        for carrier in [k for k in st if k not in ("target_own_at_layer",) and not k.endswith("_random")]:
            rows.append([f"{r['source']} → {r['target']}", stage, _run(d) + note,
                         f"{r['source_layer']} → {r['target_layer']}",
                         carrier, _rate(st[carrier]["refusal"]), _rate(st[carrier + "_random"]["refusal"]),
                         _rate(own["refusal"]), _rate(st[carrier]["coherent"]),
                         _vs_plan(stage, st[carrier]["coherent"], tself.get("coherent")), f"`{f}`"])
    return md_table(["source → target", "run plan stage", "run", "layers", "carried by",
                     "harmless refusal with the carried direction", "carried random direction",
                     "target's own direction, same layer", "coherent (carried)",
                     "coherent vs the run plan's direct-transfer prediction, extended here to mapped transfers "
                     "(B1: 50–80% of the target's self-control; B2: < 50%)", "result file"], rows)


EXP17 = "exp17_preference_transfer"


def _exp17_newest(root: Path) -> tuple[str, dict] | None:
    runs = sorted((root / EXP17).glob("*/experiment_results.json"))
    if not runs:
        return None
    return runs[-1].parent.name, json.loads(runs[-1].read_text())


def t_exp17(newest, root: Path, md_table) -> str:
    got = _exp17_newest(root)
    rows = []
    if got:
        folder, d = got
        r = d["results"]
        items = []
        if r["source"].get("test"):
            t = r["source"]["test"]
            items.append((r["source"]["model"], "own vector", t["layer"], t["steered"], t["random"]))
        for name, t in r["targets"].items():
            if "skipped" in t:
                rows.append([name, "—", "—", f"skipped: {t['skipped']}", "", "", "", "", "", "", f"`{folder}`"])
            for c, x in t.get("carried", {}).items():
                items.append((name, c, t["layer"], x, t["carried_random"][c]))
        for model, carrier, layer, x, ctrl in items:
            w, e = x["words"], x["entity_retention"]
            ent = " / ".join("—" if e[k] is None else f"{e[k]:.2f}" for k in ("plus", "minus"))
            rows.append([model, carrier, str(layer),
                         f"{x['score']:.2f} [{x['score_ci95'][0]:.2f}, {x['score_ci95'][1]:.2f}] (n={x['n']})",
                         f"{ctrl['score']:.2f} [{ctrl['score_ci95'][0]:.2f}, {ctrl['score_ci95'][1]:.2f}]",
                         f"{w['base']:.0f} / {w['plus']:.0f} / {w['minus']:.0f}",
                         f"{x['rouge_l']['plus']:.2f} / {x['rouge_l']['minus']:.2f}",
                         f"{x['tfidf_cosine']['plus']:.2f} / {x['tfidf_cosine']['minus']:.2f}", ent,
                         f"{x['coherent_plus']['p']:.2f} / {x['coherent_minus']['p']:.2f}", f"`{folder}`"])
    return md_table(["model", "vector", "layer", "length-direction score [95% CI]", "random direction, same scale",
                     "words: unsteered / +v / −v", "ROUGE-L vs unsteered +v / −v", "TF-IDF cosine +v / −v",
                     "entity retention +v / −v (heuristic)", "coherent +v / −v", "run folder"], rows)


def t_exp17_hypotheses(newest, root: Path, md_table) -> str:
    got = _exp17_newest(root)
    rows = []
    if got:
        folder, d = got
        for k, h in d["results"].get("hypotheses", {}).items():
            verdict = {True: "met", False: "not met", None: "not applicable"}[h["met"]]
            if "value" in h:
                val = f"{h['value']:.2f} [{h['ci95'][0]:.2f}, {h['ci95'][1]:.2f}]"
            elif "diff" in h:
                val = f"{h['diff']:+.2f} [{h['lo']:+.2f}, {h['hi']:+.2f}] (paired, n={h['n']})"
            else:
                val = h.get("why", "")
            rows.append([k, val, verdict, f"`{folder}`"])
    return md_table(["hypothesis (the study's bar)", "measured [95% CI]", "verdict", "run folder"], rows)
