"""Experiment scripts, the query schema and figures, on the real default model."""

from __future__ import annotations

import json

import mlx.core as mx
import numpy as np

import pytest

import mlx_interp as mi
from experiments import exp6_twohop_scaling, exp9_back_patching
from experiments.common import main
from figures import make_all
from mlx_interp.errors import MlxInterpError
from mlx_interp.tasks.twohop import load_queries, mentions

QUERIES = [
    {"id": "u1", "family": "city-state-capital", "e1": "Dallas", "e2": "Texas", "e3": "Austin",
     "two_hop": "The capital of the state where Dallas is located is", "first_hop": "Dallas is located in the state of"},
    {"id": "u2", "family": "landmark-country-capital", "e1": "the Eiffel Tower", "e2": "France", "e3": "Paris",
     "two_hop": "The capital of the country where the Eiffel Tower is located is",
     "first_hop": "The Eiffel Tower is located in the country of", "e3_aliases": ["Paname"]},
]


def _write(tmp_path, rows):
    p = tmp_path / "q.jsonl"
    p.write_text("\n".join(json.dumps(r) for r in rows))
    return p


def test_builtin_queries_cover_the_study():
    qs = load_queries()
    assert len(qs) >= 24 and len({q.family for q in qs}) >= 4
    pairs = {(q.e1, q.e3) for q in qs}
    for need in (("Dallas", "Austin"), ("Imagine", "Yoko Ono"), ("the Eiffel Tower", "Euro"), ("Oktoberfest", "German")):
        assert need in pairs
    assert mentions("It is Yoko, his wife", qs[[q.e3 for q in qs].index("Yoko Ono")].names("e3"))


def test_answers_match_on_word_boundaries_only():
    """Defect 4: "German" inside "Germany" and "US" inside "must" once counted as answers."""
    assert not mentions("Germany hosts it", ["German"]) and mentions("a German festival", ["German"])
    assert not mentions("you must go", ["US"]) and mentions("the US dollar", ["US"])
    assert mentions("It is New York.", ["New York"]) and not mentions("Newark, New Jersey", ["New York"])
    assert not mentions("a b c", ["a"])  # one-letter names never match


@pytest.mark.parametrize("bad,msg", [
    ({"id": "x"}, "lacks"),
    ({**QUERIES[0], "e1": "Houston"}, "does not occur"),
])
def test_bad_query_files(tmp_path, bad, msg):
    with pytest.raises(MlxInterpError) as e:
        load_queries(_write(tmp_path, [bad]))
    assert msg in str(e.value)
    (tmp_path / "bad.jsonl").write_text("{not json")
    with pytest.raises(MlxInterpError):
        load_queries(tmp_path / "bad.jsonl")
    with pytest.raises(MlxInterpError):
        load_queries(tmp_path / "missing.jsonl")


def test_exp6_and_exp9_with_user_prompts_then_figures(tmp_path, smol):
    q = _write(tmp_path, QUERIES)
    out = tmp_path / "res"
    [p6] = main("exp6_twohop_scaling", exp6_twohop_scaling.run, load_queries, exp6_twohop_scaling.__doc__,
                ["--model", "smollm2-135m", "--prompts", str(q), "--out", str(out)])
    doc = json.loads(p6.read_text())
    s = doc["results"]["summary"]
    rows = doc["results"]["queries"]
    assert s["n_queries"] == 2 and s["layers"] == 30 and s["accuracy"]["k"] == sum(r["correct"] for r in rows)
    assert s["correct"]["n"] + s["incorrect"]["n"] == 2
    row = rows[0]
    assert len(row["bridge_rank_by_layer"]) == 30 and row["bridge"] == "Texas"
    # the first bridge layer is the first whose whole-name rank is in the top 30; depth = layer / L
    b = row["bridge_layer"]
    assert (b is None and min(row["bridge_rank_by_layer"]) >= 30) or (row["bridge_rank_by_layer"][b] < 30 and
                                                                      min(row["bridge_rank_by_layer"][:b] + [99]) >= 30)
    assert b is None or row["bridge_depth"] == b / 30
    assert doc["provenance"]["config"]["prompts"] == str(q)
    [p9] = main("exp9_back_patching", exp9_back_patching.run, load_queries, exp9_back_patching.__doc__,
                ["--model", "smollm2-135m", "--prompts", str(q), "--out", str(out), "--quick"])
    s9 = json.loads(p9.read_text())["results"]["summary"]
    # the user queries have no second-hop prompt, so no failure passes the paper's filter
    assert s9["without_second_hop_prompt"] == 2 and s9["tested"] == 0 and s9["layer_grid"] == list(range(0, 30, 3))
    pngs = make_all.main(["--results", str(out), "--out", str(tmp_path / "figs")])
    names = {p.name for p in pngs}
    assert "exp6_twohop_scaling.png" in names and "exp9_backpatch_smollm2-135m@4bit-g32-mirror.png" in names
    assert all(p.stat().st_size > 10_000 for p in pngs)


def test_t1_position_is_last_token_of_e1(smol):
    q = load_queries()[0]
    ids = smol.tokenizer.encode(q.two_hop)
    pos = exp9_back_patching.t1_position(smol, q)
    assert smol.tokenizer.decode(ids[: pos + 1]).endswith(q.e1)


def test_exp7_held_out_conditions_equal_one_call_and_one_judging_per_condition(smol):
    """exp7's held-out conditions decode in one call per prompt set and are judged in one pass that reads each prompt
    once; every condition's texts, refusal rate and coherence equal generating and judging it alone (its steered
    rows are its own: the baseline stays the baseline)."""
    from experiments.exp7_refusal_scaling import held_out
    from mlx_interp.core.generate import generate
    from mlx_interp.measures.generations import score_generations
    from mlx_interp.measures.text import refusal_rate, refusal_score
    from mlx_interp.methods import refusal
    from mlx_interp.tasks.datasets import refusal_eval_prompts, refusal_substrings

    h, hl = (s[:3] for s in refusal_eval_prompts())
    phrases = refusal_substrings()
    v = np.random.default_rng(5).normal(size=smol.width) * 6
    conds = {"harmful_baseline": (h, []), "harmful_ablation": (h, [refusal.ablation(v)]),
             "harmless_baseline": (hl, []), "harmless_plus_r": (hl, [refusal.addition(v, 10, 1.0)])}
    got = held_out(smol, conds, 8, phrases)
    assert list(got) == list(conds)
    for name, (ps, ivs) in conds.items():
        alone = generate(smol, ps, max_tokens=8, interventions=ivs, chat=True)
        want = score_generations(smol, alone, {"refusal": lambda t: bool(refusal_score(t, phrases))})
        assert got[name]["examples"] == [g.text for g in alone], name
        assert got[name]["refusal_score"] == refusal_rate([g.text for g in alone], phrases)
        assert got[name]["coherent"] == want["coherent"] and got[name]["refusal"] == want["refusal"], name
        assert got[name]["median_perplexity"] == pytest.approx(want["median_perplexity"], rel=1e-4), name
    assert got["harmless_plus_r"]["examples"] != got["harmless_baseline"]["examples"]


_E12: dict = {}


def _exp12(smol) -> tuple[dict, dict]:
    """exp12 on 8 generation + 4 test items at 3 layers (6 sweep conditions, not 4: BUGFIX #45), run once per session
    for the tests that read it."""
    from experiments import exp12_multimodel_directions as e12

    if "r12" not in _E12:
        data = e12.load_data(None)
        data["generate"], data["test"] = data["generate"][:8], data["test"][:4]
        _E12["data"], _E12["r12"] = data, e12.run(smol, data, True, layers=[8, 14, 20])
    return _E12["data"], _E12["r12"]


def test_directions_study_scripts_end_to_end_on_smollm2(tmp_path, smol, monkeypatch):
    """exp7 / exp10 / exp12 on the default model through the scripts' own entry point, on a few prompts each (the
    quick rules with smaller sets: the suite's budget), then their figures. SmolLM2 barely refuses, so exp7 and
    exp10 must say so with measured rates rather than produce a direction."""
    from experiments import exp7_refusal_scaling as e7, exp10_crosslingual_refusal as e10, exp12_multimodel_directions as e12

    def few(sets):  # 8 + 8 train, 4 + 4 val, 4 + 4 held-out prompts
        return {k: tuple(s[:n] for s in v) for (k, v), n in zip(sets.items(), (8, 4, 4))}

    out = tmp_path / "res"
    [p7] = main("exp7_refusal_scaling", e7.run, lambda p: few(e7.load_sets(p)), e7.__doc__,
                ["--model", "smollm2-135m", "--quick", "--out", str(out)])
    r7 = json.loads(p7.read_text())["results"]
    assert r7["applies"] is False and "barely refuses" in r7["reason"]
    tr = r7["vetting"]["train"]
    assert tr["positive_kept"] + tr["positive_dropped"] == 8 and r7["summary"]["n_eval"] == 4
    assert min(tr["positive_kept"], r7["vetting"]["val"]["positive_kept"]) < 2  # why it does not apply
    # the reported norms are the difference of means at resid_pre 1..L-1: check one against a direct capture
    from mlx_interp.tasks.datasets import refusal_prompts
    h, hl = refusal_prompts("train")
    cap = mi.Capture("resid_post", 9, "last")  # resid_pre 10 is the output of block 9
    d = (np.array(mi.run(smol, h[:8], capture=cap, chat=True)["resid_post", 9], dtype=np.float64).mean(0)
         - np.array(mi.run(smol, hl[:8], capture=cap, chat=True)["resid_post", 9], dtype=np.float64).mean(0))
    assert sorted(map(int, r7["norms"])) == list(range(1, 30)) and r7["norms"]["10"] == pytest.approx(np.linalg.norm(d), rel=1e-3)
    def few_rows(path):  # 2 harmful + 2 harmless rows, each in every language
        rows = e10.load_data(path)
        return [r for r in rows if r["label"] == "harmful"][:2] + [r for r in rows if r["label"] == "harmless"][:2]

    [p10] = main("exp10_crosslingual_refusal", e10.run, few_rows, e10.__doc__, ["--model", "smollm2-135m", "--quick", "--out", str(out)])
    r10 = json.loads(p10.read_text())["results"]
    assert r10["applies"] is False and set(r10["langs"]) == {"en", "es", "fr", "de", "zh"} and r10["n_harmful"] == 2
    assert "exp7" in r10["direction"]["why_not"]
    data, r12 = _exp12(smol)
    sy, co = r12["sycophancy"], r12["confidence"]
    assert (sy["n_train"], sy["n_val"], sy["n_test"]) == (4, 4, 4) and sy["scored_tokens"] == [["A", "B"]]
    assert [r["layer"] for r in sy["layers"]] == [8, 14, 20]
    # the layer is the validation argmax, and the test rows are scored on the test items: recompute the unsteered
    # test score from the model's own logits at the tokens "A"/"B"
    assert sy["best_steering_layer"] == max(sy["layers"], key=lambda r: (r["val_effect"], -r["layer"]))["layer"]
    from mlx_interp.measures.ab import ab_tokens
    a_id, b_id = (smol.tokenizer.encode(c, add_special_tokens=False)[0] for c in "AB")
    want = []
    for t in data["test"]:
        ids = ab_tokens(smol, t["question"], "(", True)
        lp = np.array(smol.model(mx.array([ids]))[0, -1], dtype=np.float64)
        p = np.exp(lp - lp.max())
        want.append(p[a_id if t["answer_matching_behavior"].strip()[1] == "A" else b_id] / (p[a_id] + p[b_id]))
    assert sy["test_at_best"]["0"]["score"] == pytest.approx(np.mean(want), abs=1e-4)
    assert {"-1", "+1", "random_-1", "random_+1"} <= set(sy["test_at_best"])
    # readout layers are the validation argmax (the probe's holdout of train items) and are read on the test items
    for r, n_test in ((sy, 4), (co, 4)):
        assert r["best_readout_layer"] == max(r["layers"], key=lambda x: (x["probe_auroc"] or 0, -x["layer"]))["layer"]
        assert r["best_readout_auroc_val"] == next(x["probe_auroc"] for x in r["layers"] if x["layer"] == r["best_readout_layer"])
        want = {"probe", "diff_of_means", "random"} | ({"answer_letter"} if r is sy else set())
        assert {k: v["n_pos"] for k, v in r["readout_test"].items()} == dict.fromkeys(want, n_test)
        assert "probe_direction" not in r["layers"][0] and "vector" not in r["layers"][0]
    # the sycophancy readout is also read within each behaviour-matching letter (the 4 test items match B, A, B, B:
    # only B has the two items an AUROC needs); there the answer-letter direction of the train items reads the
    # letter, so the side answered B (the positive) scores below the side answered A (a sign error, or groups
    # mislabelled, would put it above 0.5)
    by = sy["readout_test_by_group"]
    assert set(by) == {"B"} and by["B"]["probe"]["n_pos"] == 3 and "readout_test_by_group" not in co
    assert by["B"]["answer_letter"]["auroc"] < 0.5
    # the norm-relative sweep: (layer, c) is the validation argmax among the rows that keep the scored tokens' mass,
    # reported on the test items beside a random direction; its unsteered row is the CAA table's
    nr = sy["norm_relative"]
    assert nr["layers"] == [8, 14, 20] and len(nr["rows"]) == 3 * len(e12.C_SYC)
    ok = [r for r in nr["rows"] if r["mass_ok"]]
    best = max(ok, key=lambda r: (r["val_effect"], -r["layer"], -r["c"]))
    assert (nr["best"]["layer"], nr["best"]["c"]) == (best["layer"], best["c"])
    assert nr["test"]["0"] == sy["test_at_best"]["0"] and {"-c", "+c", "random_-c", "random_+c"} <= set(nr["test"])
    # the same with CAA's positions (from the instruction's last token on): every swept layer, its own grid, the same
    # rule; at a (layer, c) both grids hold, steering fewer positions gives other validation scores
    na = sy["norm_relative_answer"]
    assert na["layers"] == [8, 14, 20] and len(na["rows"]) == 3 * len(e12.C_ANSWER) and na["positions"].startswith("from the instruction")
    ok = [r for r in na["rows"] if r["mass_ok"]]
    best = max(ok, key=lambda r: (r["val_effect"], -r["layer"], -r["c"]))
    assert (na["best"]["layer"], na["best"]["c"]) == (best["layer"], best["c"]) and na["test"]["0"] == sy["test_at_best"]["0"]
    row = lambda rows: next(r for r in rows if (r["layer"], r["c"]) == (14, 0.5))  # noqa: E731
    assert abs(row(na["rows"])["val_plus"]["score"] - row(nr["rows"])["val_plus"]["score"]) > 1e-4
    assert (co["n_train"], co["n_val"], co["n_test"]) == (16, 4, 4) and co["test_at_best"]["0"]["hedge"]["n"] == 4
    assert all(r["val_minus"]["hedge"]["n"] == co["n_val"] for r in co["layers"])
    saved = mi.save_result("exp12_multimodel_directions", r12, lm=smol, out_dir=out, config={"quick": True})
    # --readout-only recomputes the readouts and carries the steering over from the newest file: the same numbers
    from experiments import common
    import hashlib

    monkeypatch.setattr(common, "ARGS", common.parse("exp12", ["--out", str(out)]))
    again = e12.run(smol, data, True, layers=[8, 14, 20], readout_only=True)
    assert again["steering_from"]["file"] == saved.name
    assert again["steering_from"]["sha256"] == hashlib.sha256(saved.read_bytes()).hexdigest()
    for trait in ("sycophancy", "confidence"):
        assert again[trait]["readout_test"] == r12[trait]["readout_test"] and again[trait]["test_at_best"] == r12[trait]["test_at_best"]
        assert again[trait]["layers"] == r12[trait]["layers"]
    assert again["sycophancy"]["norm_relative"] == nr  # carried (the sweeps recomputed: the extended test below)
    doc = json.loads(saved.read_text())
    doc["results"]["confidence"]["layers"][1]["norm"] *= 1.01  # a carried file whose activations were not these
    tampered = out / "tampered.json"
    tampered.write_text(json.dumps(doc))
    monkeypatch.setattr(common, "ARGS", common.parse("exp12", ["--out", str(out), "--from", str(tampered)]))
    with pytest.raises(MlxInterpError, match="confidence difference of means at layer 14 has norm .* the activations changed"):
        e12.run(smol, data, True, layers=[8, 14, 20], readout_only=True)
    monkeypatch.setattr(common, "ARGS", common.parse("exp12", ["--out", str(out), "--from", str(p7)]))
    with pytest.raises(MlxInterpError, match="is a exp7_refusal_scaling result .* needs exp12_multimodel_directions"):
        e12.run(smol, data, True, layers=[8, 14, 20], readout_only=True)
    tampered.unlink()
    names = {p.name for p in make_all.main(["--results", str(out), "--out", str(tmp_path / "figs")])}
    assert {"directions_best_layers.png", "directions_norms.png", "exp7_refusal_effect.png",
            "exp10_crosslingual_smollm2-135m@4bit-g32-mirror.png"} <= names


@pytest.mark.extended
def test_exp12_sweeps_recomputed_on_carried_steering_equal_the_run(tmp_path, smol, monkeypatch):
    """``--norm-sweep`` recomputes both norm-relative sweeps on the steering carried from the newest file and
    ``--answer-sweep`` only the answer-position one: on the same activations both give the run's own rows (extended:
    two more sweeps over the same items; the default tier checks the carry itself)."""
    from experiments import common, exp12_multimodel_directions as e12

    data, r12 = _exp12(smol)
    saved = mi.save_result("exp12_multimodel_directions", r12, lm=smol, out_dir=tmp_path, config={"quick": True})
    monkeypatch.setattr(common, "ARGS", common.parse("exp12", ["--out", str(tmp_path)]))
    nr, na = r12["sycophancy"]["norm_relative"], r12["sycophancy"]["norm_relative_answer"]
    swept = e12.run(smol, data, True, layers=[8, 14, 20], norm_sweep=True)
    assert swept["steering_from"]["file"] == saved.name
    assert swept["sycophancy"]["norm_relative"] == nr and swept["sycophancy"]["norm_relative_answer"] == na
    answered = e12.run(smol, data, True, layers=[8, 14, 20], answer_sweep=True)  # the all-positions sweep carried
    assert answered["sycophancy"]["norm_relative"] == nr and answered["sycophancy"]["norm_relative_answer"] == na


def test_exp10_uses_exp7s_validation_choice_from_a_named_file(tmp_path, smol):
    """exp10 chooses nothing on held-out data: the direction is exp7's paper-rule pick and the coefficient its search's
    (both chosen on validation prompts), whatever the held-out rates say; the result names the exp7 file."""
    from experiments import exp10_crosslingual_refusal as e10
    import hashlib
    import mlx_interp as mi

    eff = {"harmful_ablation": {"refusal_score": 0.9}, "harmful_ablation_unconstrained": {"refusal_score": 0.0},
           "harmless_plus_r": {"refusal_score": 0.0}, "harmless_plus_searched": {"refusal_score": 0.8, "alpha": 4.0}}
    payload = {"applies": True, "effect": eff, "summary": {"layer": 4, "position": -1, "unconstrained": {"layer": 18, "position": -2}},
               "addition_search": {"best": {"alpha": 2.5}},
               "direction": [1.0] * smol.width, "direction_unconstrained": [2.0] * smol.width}
    first = mi.save_result("exp7_refusal_scaling", payload, lm=smol, out_dir=tmp_path)
    payload["summary"]["layer"], payload["addition_search"]["best"] = 6, None
    newest = mi.save_result("exp7_refusal_scaling", payload, lm=smol, out_dir=tmp_path)
    spec, why = e10.english_direction(smol, str(tmp_path))
    assert why == "ok" and spec["exp7_result"] == str(newest) and spec["layer"] == 6 and spec["alpha"] == 1.0
    spec, _ = e10.english_direction(smol, str(tmp_path), str(first))
    assert spec["layer"] == 4 and spec["alpha"] == 2.5 and spec["vector"][0] == 1.0
    assert spec["exp7_sha256"] == hashlib.sha256(first.read_bytes()).hexdigest()
    assert e10.english_direction(smol, str(tmp_path / "empty"))[0] is None
    other = mi.save_result("exp12_multimodel_directions", {"x": 1}, lm=smol, out_dir=tmp_path)
    with pytest.raises(MlxInterpError, match="needs exp7_refusal_scaling"):
        e10.english_direction(smol, str(tmp_path), str(other))


def test_exp12_readout_layer_is_chosen_on_validation_and_read_on_test():
    """BUGFIX #47: the readout layer is the one whose probe did best on validation (its holdout of train items), even
    where another layer separates the test items better, and its test AUROC is counted on the test items."""
    from experiments.exp12_multimodel_directions import readout

    e0, e1 = np.eye(3)[0], np.eye(3)[1]
    stats = {2: {"probe_auroc": 0.9, "probe_direction": e0, "vector": e1},
             5: {"probe_auroc": 0.7, "probe_direction": e0, "vector": e0}}
    col = lambda xs: np.outer(xs, e0) + np.outer([4.0, -4.0, 0.0], e1)  # noqa: E731
    pos = {2: col([3.0, 2.0, 1.0]), 5: col([9.0, 9.0, 9.0])}
    neg = {2: col([1.0, 2.5, 0.0]), 5: col([0.0, 0.0, 0.0])}
    r = readout(stats, pos, neg, width=3)
    assert r["best_readout_layer"] == 2 and r["best_readout_auroc_val"] == 0.9
    # along e0 at layer 2, by hand: 3 beats all three negatives, 2 beats 1 and 0, 1 ties 1 and beats 0: 6.5 of 9
    assert r["readout_test"]["probe"]["auroc"] == pytest.approx(6.5 / 9)
    assert r["readout_test"]["diff_of_means"]["auroc"] == 0.5  # e1 is the same in each pair: no separation
    assert r["readout_test"]["probe"]["paired"] and r["readout_test"]["random"]["n_neg"] == 3


def test_hedge_rate():
    from mlx_interp.measures.text import hedge_rate, hedged

    assert hedge_rate(["Paris.", "I think it is Paris, but I\u2019m not sure."]) == 0.5
    assert not hedged("A mighty river flows through it.") and hedged("It might be Paris.")


def test_exp12_split_cosine_is_of_the_steered_vector_and_pca_is_checked_against_it():
    """A/B pairs: the answer letter flips between items (a large axis) while the behaviour is a small shift.
    The steered vector (difference of means, balanced over the matching letter) is the behaviour and is
    consistent across letter-balanced halves; the first PC of the paired differences is the letter axis,
    so its cosine with the steered vector is near 0."""
    import numpy as np

    from experiments.exp12_multimodel_directions import _layer_stats
    from mlx_interp.readouts.directions import split_consistency

    rng = np.random.default_rng(0)
    n, d = 40, 6
    letter = np.where(np.arange(n) % 2 == 0, 1.0, -1.0)[:, None] * 5 * np.eye(d)[1]
    pos = 2 * np.eye(d)[0] + letter + 0.1 * rng.normal(size=(n, d))
    neg = -letter + 0.1 * rng.normal(size=(n, d))
    groups = ["A" if i % 2 == 0 else "B" for i in range(n)]
    st = _layer_stats({3: pos[:30]}, {3: neg[:30]}, paired=True, groups=groups[:30])[3]
    assert np.abs(st["vector"] - 2 * np.eye(d)[0]).max() < 0.1  # the letter cancels; the behaviour is left
    assert st["split_cosine"] == split_consistency("diff_of_means", pos[:30], neg[:30], groups=groups[:30]) > 0.9
    assert abs(st["pca_cosine"]) < 0.2
    # an unbalanced subset (8 A, 4 B): the plain mean keeps a letter component, the balanced one does not
    sub = [*range(0, 16, 2), 1, 3, 5, 7]
    plain = _layer_stats({3: pos[sub]}, {3: neg[sub]}, paired=False)[3]["vector"]
    balanced = _layer_stats({3: pos[sub]}, {3: neg[sub]}, paired=True, groups=[groups[i] for i in sub])[3]["vector"]
    assert abs(plain[1]) > 2 and abs(balanced[1]) < 0.1
    assert "pca_cosine" not in _layer_stats({3: pos}, {3: neg}, paired=False)[3]


def test_exp7_held_out_generations_keep_prompt_order_across_sorted_batches(smol):
    """held_out sorts prompts by length into batches; the examples and scores must stay in prompt order."""
    from experiments.exp7_refusal_scaling import held_out
    from mlx_interp.tasks.datasets import refusal_substrings
    from mlx_interp.core.generate import generate

    ps = ["Tell me a long story about a dragon who lives in a cave", "Hi", "How do I bake bread?"]
    e = held_out(smol, {"x": (ps, [])}, 6, refusal_substrings(), batch=2)["x"]
    assert e["examples"] == [g.text for g in generate(smol, ps, max_tokens=6, chat=True)]
    assert e["n"] == 3


def test_run_all_covers_every_study_and_hands_each_its_models():
    """run_all runs every numbered study: per-model ones on each model, exp15 on each alias once (it builds its own
    precisions), exp14e on the first two models, exp16/exp17 on all; other options pass through unchanged."""
    import ast
    from pathlib import Path

    from experiments import run_all

    argv = ["--model", "qwen2.5-coder-0.5b", "--model=qwen2.5-coder-0.5b@fp32", "--model", "smollm2-135m", "--quick",
            "--out", "o"]
    assert run_all.exp15_models(["qwen2.5-coder-0.5b", "qwen2.5-coder-0.5b@fp32", "smollm2-135m"]) == [
        "qwen2.5-coder-0.5b", "smollm2-135m"]
    assert run_all.argv_for(["a", "b"], argv) == ["--model", "a", "--model", "b", "--quick", "--out", "o"]
    # exp17's --from continues an exp17 part: exp10's exp7 file must not reach it
    assert run_all.without(["--from", "x.json", "--quick", "--from=y.json"], "--from") == ["--quick"]
    assert 'exp17_preference_transfer.main(without(argv, "--from"))' in Path(run_all.__file__).read_text()
    studies = {p.name.split("_")[0] for p in Path("experiments").glob("exp*_*.py")}
    src = Path(run_all.__file__).read_text()
    imported = {a.name.split("_")[0] for n in ast.walk(ast.parse(src)) if isinstance(n, ast.ImportFrom)
                for a in n.names if a.name.startswith("exp")}
    inside_exp13 = {"exp8", "exp11"}  # exp13 evaluates both layer-level FVs on its own items (its docstring)
    assert "exp8" in Path("experiments/exp13_function_vectors.py").read_text()
    assert studies - inside_exp13 <= imported, f"run_all misses {sorted(studies - inside_exp13 - imported)}"
