"""exp16 (refusal-direction transfer, the run plan's B1) end to end on a tiny configuration: self-controls with the
stop rules, direct transfer between two precisions of Qwen, maps across families, geometry with its random
baseline, and result files named as the run plan."""

from __future__ import annotations

import json

import numpy as np

from tests.conftest import get_model


def test_exp16_tiny_run_writes_the_plans_files_with_controls(tmp_path, smol, qwen):
    from experiments import exp16_refusal_transfer as exp16

    q32 = get_model("qwen2.5-coder-0.5b@fp32")
    cfg = exp16.Config(n_train=8, n_val=2, n_test=2, max_tokens=8, layer_step=8, n_fit_texts=8, n_eval_texts=4,
                       n_boot=20, n_random=50)
    paths = exp16.run([qwen, q32, smol], True, str(tmp_path), cfg)
    names = [p.name.split("_", 1)[1] for p in paths]
    for m in (qwen, q32, smol):
        assert f"b1_self_{m.name}.json" in names
    assert names[-1] == "b1_geometric_comparisons.json"
    docs = {n: json.loads(p.read_text())["results"] for n, p in zip(names, paths)}
    selves = {m.name: docs[f"b1_self_{m.name}.json"] for m in (qwen, q32, smol)}
    for s in selves.values():  # a stopped model says why and has no chosen layer; a passing one has its controls
        if s["passed"]:
            assert s["stop"] is None and s["layer"] < int(0.8 * s["layers"])
            for k in ("harmless_baseline", "harmless_plus_r", "harmless_plus_random", "harmful_ablation"):
                assert s["effect"][k]["refusal"]["n"] == 2
        else:
            assert s["stop"] and s["direction_vetted"] == (s["layer"] is not None)
    geo = {(g["source"], g["target"]): g for g in docs["b1_geometric_comparisons.json"]["pairs"]}
    assert len(geo) == 6
    same = geo[(qwen.name, q32.name)]
    # two precisions of one model: the direct cosine is high and far above what random directions get
    d = same["comparisons"]["direct"]
    assert d["cosine"] > 0.8 and d["beats_random"] and d["random_cosine_mean"] < 0.2, d
    assert set(same["map_scores_held_out"]) == {"lstsq", "ridge", "procrustes"}
    cross = geo[(smol.name, qwen.name)]
    assert "direct" not in cross["comparisons"] and cross["direct"].startswith("widths differ (576 vs 896)")
    assert not cross["same_family"] and cross["predicted"] == [0.1, 0.4]
    both = selves[qwen.name]["passed"] and selves[q32.name]["passed"]
    transfer = f"b1_transfer_{qwen.name}_to_{q32.name}.json"
    assert (transfer in names) == both
    if both:
        st = docs[transfer]["steering"]
        for k in ("direct", "direct_random", "ridge", "ridge_random", "procrustes", "procrustes_random", "target_own_at_layer"):
            assert st[k]["refusal"]["n"] == 2, k
    assert np.isfinite(cross["comparisons"]["ridge"]["cosine"])
    for (src, tgt), g in geo.items():  # the comparison at every matched layer pair; the headline is one of its rows
        models = {m.name: m for m in (qwen, q32, smol)}
        want = exp16.geometry_layers(models[src], models[tgt], cfg)
        assert [(r["source_layer"], r["target_layer"]) for r in g["per_layer"]] == want and want
        for r in g["per_layer"]:
            assert set(r["comparisons"]) == set(g["comparisons"]) and set(r["map_r2_held_out"]) == {"lstsq", "ridge", "procrustes"}
        at = [r for r in g["per_layer"] if r["source_layer"] == g["source_layer"]]
        if at:  # same layer, same texts, same maps: the same cosine
            for c, v in g["comparisons"].items():
                assert at[0]["comparisons"][c]["cosine"] == v["cosine"], (src, tgt, c)
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "docs"))
    import make_tables

    table = make_tables.tables_transfer.t_geometry_by_layer(None, tmp_path, make_tables._table)
    by_layer = [r.split(" | ") for r in table.splitlines()[2:]]
    assert len(by_layer) == sum(len(g["comparisons"]) for g in geo.values())
    direct = [r for r in by_layer if r[0] == f"| {qwen.name} → {q32.name}" and r[2] == "direct"]
    n = len(geo[(qwen.name, q32.name)]["per_layer"])  # two precisions: the direction beats random at every layer
    assert len(direct) == 1 and direct[0][3] == f"{n}/{n}", direct
    from figures import refusal_transfer

    (tmp_path / "figs").mkdir()
    pngs = refusal_transfer.all_figures(tmp_path, tmp_path / "figs")
    assert tmp_path / "figs" / "exp16_geometry_by_layer.png" in pngs


def test_geometry_bootstrap_resamples_the_shared_prompts_once_for_both_models():
    """Two models that vetted overlapping prompt sets: each draw gives both the same drawn prompts (where each kept
    them), so a model compared with an exact copy of itself gets identical directions in every draw (cosine 1, a
    zero-width interval at 1: no double-counted noise), while independent resampling would spread it below 1."""
    from experiments.exp16_refusal_transfer import _boot_dir, _paired_draws

    rng = np.random.default_rng(0)
    kept_s = (["h0", "h1", "h2", "h3"], ["n0", "n1", "n2"])
    kept_t = (["h1", "h2", "h3", "h4"], ["n0", "n1", "n2"])
    acts = lambda k: ({3: rng.standard_normal((len(k[0]), 8))}, {3: rng.standard_normal((len(k[1]), 8))})  # noqa: E731
    s_self, t_self = {"_kept": kept_s, "_acts": acts(kept_s)}, {"_kept": kept_t, "_acts": acts(kept_t)}
    draws = _paired_draws(s_self, t_self, 50, np.random.default_rng(1))
    assert 40 <= len(draws) <= 50
    for (sp, sn), (tp, tn) in draws:
        drawn_s = {kept_s[0][i] for i in sp} - {"h0"}
        drawn_t = {kept_t[0][i] for i in tp} - {"h4"}
        assert drawn_s == drawn_t and [kept_s[1][i] for i in sn] == [kept_t[1][i] for i in tn]
    same = _paired_draws(s_self, s_self, 20, np.random.default_rng(2))
    for rs, rt in same:
        a, b = _boot_dir(s_self["_acts"], rs, 3), _boot_dir(s_self["_acts"], rt, 3)
        assert np.array_equal(a, b)
