"""exp16 (refusal-direction transfer, the run plan's B1 and B2) end to end on a tiny configuration: self-controls
with the stop rules, direct transfer between two precisions of Qwen (B1), maps across families (B2), geometry with
its random baseline, and result files named as the run plan."""

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
    stage = {qwen.name: "b1", q32.name: "b1", smol.name: "b2"}  # the run plan: B1 within a family, B2 across
    for m in (qwen, q32, smol):
        assert f"{stage[m.name]}_self_{m.name}.json" in names
    assert names[-2:] == ["b1_geometric_comparisons.json", "b2_geometric_comparisons.json"]
    docs = {n: json.loads(p.read_text())["results"] for n, p in zip(names, paths)}
    selves = {m.name: docs[f"{stage[m.name]}_self_{m.name}.json"] for m in (qwen, q32, smol)}
    for s in selves.values():  # a stopped model says why and has no chosen layer; a passing one has its controls
        if s["passed"]:
            assert s["stop"] is None and s["layer"] < int(0.8 * s["layers"])
            for k in ("harmless_baseline", "harmless_plus_r", "harmless_plus_random", "harmful_ablation"):
                assert s["effect"][k]["refusal"]["n"] == 2
        else:
            assert s["stop"] and s["direction_vetted"] == (s["layer"] is not None)
    b1 = {(g["source"], g["target"]) for g in docs["b1_geometric_comparisons.json"]["pairs"]}
    assert b1 == {(qwen.name, q32.name), (q32.name, qwen.name)}
    b2 = docs["b2_geometric_comparisons.json"]
    assert {g["plan_stage"] for g in b2["pairs"]} == {"B2"} and len(b2["pairs"]) == 4 and "b2_transfers_skipped" in b2
    geo = {(g["source"], g["target"]): g for n in ("b1", "b2") for g in docs[f"{n}_geometric_comparisons.json"]["pairs"]}
    assert len(geo) == 6
    b1_first = [n for n in names if "_transfer_" in n]  # B1 transfers run first: B2 waits on the plan's skip rule
    assert b1_first == sorted(b1_first, key=lambda n: not n.startswith("b1_")), b1_first
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

    selves_table = make_tables.tables_transfer.t_self(None, tmp_path, make_tables._table)
    assert {r.split(" | ")[0][2:]: r.split(" | ")[1] for r in selves_table.splitlines()[2:]} == \
        {n: s.upper() for n, s in stage.items()}
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


def test_b2_is_skipped_only_when_b1_transfers_ran_and_none_refused():
    """The run plan: "if B1 shows zero same-family transfer: SKIP B2". A carried direction transfers only when its
    target refuses more prompts than with the random direction carried the same way (a target that refuses 2/30
    unsteered gives 2/30 with a carried direction that does nothing); the target's own direction does not count;
    no B1 transfer at all is no evidence either way."""
    from experiments.exp16_refusal_transfer import b1_shows_no_transfer

    rate = lambda k: {"refusal": {"k": k, "n": 10}}  # noqa: E731
    none = {"direct": rate(0), "direct_random": rate(3), "ridge": rate(2), "ridge_random": rate(2),
            "target_own_at_layer": rate(9)}
    assert b1_shows_no_transfer([none, none])
    assert not b1_shows_no_transfer([none, {**none, "ridge": rate(3)}])
    assert not b1_shows_no_transfer([])


def test_files_from_before_the_split_get_their_stage_from_the_run_families():
    """Runs before 2026-12-05 named every file b1_: a self-control is B1 when another model of its run shares its
    family, a pair is B1 within a family; a stage recorded in the file wins."""
    from figures.refusal_transfer import plan_stage_of_pair, plan_stage_of_self

    fams = {"q-a": "qwen", "q-b": "qwen", "s": "llama"}
    doc = lambda m: {"results": {"model": m, "family": fams[m]},  # noqa: E731
                     "provenance": {"config": {"models": ["q-a", "q-b", "s"]}}}
    assert [plan_stage_of_self(doc(m), fams) for m in ("q-a", "q-b", "s")] == ["B1", "B1", "B2"]
    alone = {"results": {"model": "q-a", "family": "qwen"}, "provenance": {"config": {"models": ["q-a", "s"]}}}
    assert plan_stage_of_self(alone, fams) == "B2"
    assert plan_stage_of_self({**alone, "results": {**alone["results"], "plan_stage": "B1"}}, fams) == "B1"
    assert (plan_stage_of_pair({}, True), plan_stage_of_pair({}, False), plan_stage_of_pair({"plan_stage": "B1"}, False)) \
        == ("B1", "B2", "B1")


def test_the_newest_file_of_a_model_or_pair_wins_whichever_stage_prefix_it_has(tmp_path):
    """A kept run named a cross-family pair b1_ (before the split), a later run names it b2_: the tables read the
    later one, and the older b2_ file loses to a newer b1_ one the same way (newest UTC stamp, not prefix)."""
    from figures.refusal_transfer import EXP, self_controls, transfers

    d = tmp_path / EXP
    d.mkdir()
    doc = lambda stamp: {"results": {"model": "m", "source": "a", "target": "b", "stamp": stamp}}  # noqa: E731
    for name, stamp in (("20261201T000000Z_b1_self_m", 1), ("20261202T000000Z_b2_self_m", 2),
                        ("20261201T000000Z_b2_transfer_a_to_b", 1), ("20261203T000000Z_b1_transfer_a_to_b", 3),
                        ("20261204T000000Z_b1_geometric_comparisons", 4)):
        (d / f"{name}.json").write_text(json.dumps(doc(stamp)))
    assert {k: v[1]["results"]["stamp"] for k, v in self_controls(tmp_path).items()} == {"m": 2}
    assert {k: v[1]["results"]["stamp"] for k, v in transfers(tmp_path).items()} == {("a", "b"): 3}
