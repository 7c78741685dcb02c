"""exp15 (issue 17): vector comparison across precisions, next-token agreement, response activations, the capability
data, and the study end to end on a tiny configuration (its file feeds the tables and figures, and a part that reuses
its fp32 reference with ``--reference-from``)."""

from __future__ import annotations

import copy
import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest

import mlx_interp as mi
from mlx_interp.errors import MlxInterpError
from mlx_interp.measures.distributions import agreement
from mlx_interp.readouts.directions import collect, collect_responses
from mlx_interp.readouts.vectors import VectorSet, compare_vectors
from mlx_interp.tasks.datasets import capability_items


def test_compare_vectors_values_and_refusals():
    rng = np.random.default_rng(0)
    a = {k: rng.normal(size=8) for k in range(3)}
    va = VectorSet(a, "m@fp32", "diff_of_means")
    vb = VectorSet({0: 2 * a[0], 1: -a[1], 2: a[2] + 0.0}, "m@3bit", "diff_of_means")
    c = compare_vectors(va, vb)
    assert c[0]["cosine"] == pytest.approx(1.0) and c[0]["norm_ratio"] == pytest.approx(2.0)
    assert c[1]["cosine"] == pytest.approx(-1.0)
    with pytest.raises(MlxInterpError, match="width 8 .* and 9"):
        compare_vectors(va, VectorSet({0: np.ones(9)}, "other", "probe"))
    with pytest.raises(MlxInterpError, match="layer 1 is missing"):
        compare_vectors(va, VectorSet({0: a[0]}, "m@8bit", "probe"))
    with pytest.raises(MlxInterpError, match="resid_pre"):
        compare_vectors(va, VectorSet(a, "m@8bit", "probe", site="resid_pre"))


def test_agreement_is_zero_for_a_model_with_itself_and_refuses_other_tokenizers(smol, gemma):
    a = agreement(smol, smol, ["The capital of France is Paris.", "Water boils at 100 degrees."])
    assert a["kl"] == 0.0 and a["top1_agreement"] == 1.0 and a["positions"] > 10
    with pytest.raises(MlxInterpError, match="different tokenizers"):
        agreement(smol, gemma, ["hi"])


def test_response_activations_equal_a_span_mean_of_the_same_tokens(smol):
    """collect_responses' mean over the response equals the capture's own Span mean over the same positions."""
    prompt, resp = "Name a colour.", "Blue, like the sky."
    got = collect_responses(smol, [prompt], [resp], layers=[3, 20], chat=True)
    head = smol.tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False)
    toks = smol.tokenizer.encode(head, add_special_tokens=False) + smol.tokenizer.encode(resp, add_special_tokens=False)
    n = len(smol.tokenizer.encode(resp, add_special_tokens=False))
    span = collect(smol, [toks], layers=[3, 20], positions=mi.Span(len(toks) - n, len(toks)))
    last = collect(smol, [toks], layers=[3, 20], positions="last")
    for k in (3, 20):
        np.testing.assert_allclose(got["mean"][k], span[k], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(got["last"][k], last[k], rtol=1e-5, atol=1e-5)


def test_capability_items_quick_stride_covers_every_mmlu_subject():
    mmlu, tqa = capability_items("mmlu", quick=True), capability_items("truthfulqa", quick=True)
    assert len(capability_items("mmlu")) == 570 and len(capability_items("truthfulqa")) == 817
    assert len(mmlu) == 57 and len({x["category"] for x in mmlu}) == 57 and len(tqa) == 59
    with pytest.raises(MlxInterpError, match="no capability benchmark 'arc'"):
        capability_items("arc")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, smol):
    """(config, result path, results root) of the study at fp32 and 3bit on a tiny configuration, run once."""
    from experiments import exp15_quantization as e

    cfg = e.Config(n_refusal=4, n_persona=4, n_syc=8, n_val_ab=2, n_test_ab=2, n_conf=4, n_val=2, n_test=2, n_fidelity=1,
                   depths=(0.5,), search_steps=1, max_tokens=8, summary_tokens=(8, 16), min_kept=2, n_capability=2)
    out = tmp_path_factory.mktemp("exp15")
    return cfg, e.study("smollm2-135m", ["3bit"], cfg, True, str(out)), out


@pytest.mark.slow
@pytest.mark.xdist_group("exp15_tiny")  # one worker computes tiny_run once for both of its tests (it took 2 min on each)
def test_exp15_tiny_end_to_end_then_tables_and_figures(tmp_path, tiny_run):
    from experiments import exp15_quantization as e
    from mlx_interp.measures.ab import ab_scores

    cfg, path, out_root = tiny_run
    doc = json.loads(open(path).read())
    r = doc["results"]
    assert doc["provenance"]["model"]["name"] == "smollm2-135m@fp32" and r["precisions"] == ["fp32", "3bit"]
    ref, var = r["rows"]["fp32"], r["rows"]["3bit"]
    # identity control: the reference against itself reproduces every vector and every distribution exactly
    assert ref["fidelity"]["kl"] == 0.0 and ref["fidelity"]["top1_agreement"] == 1.0
    assert all(c == pytest.approx(1.0, abs=1e-9) for v in ref["cosine"]["native"].values() for c in v["per_layer"])
    assert var["fidelity"]["kl"] > 0 and var["model"]["precision"] == "3bit-g32-mirror"
    # capability equals an independent scoring of the same items through ab_scores
    d = e.data(cfg, True)
    items = d["capability"]["mmlu"]
    res = ab_scores(e.mi.load("smollm2-135m@3bit"), [x["prompt"] for x in items], [x["correct"][1] for x in items], chat=True)
    assert var["capability"]["mmlu"]["accuracy"]["k"] == int((res.score > 0.5).sum())
    # every trait is either measured or says why not; persona has no unsteered score (it is relative to that text)
    for t in ("refusal", "persona", "confidence", "sycophancy"):
        s = var["steering"][t]
        assert "skipped" in s or ("layer" in s and s["layer"] is not None)
    # sycophancy's coefficient search ran on validation items at every multiple, and crossed like the other traits
    for row in (ref, var):
        s = row["steering"]["sycophancy"]
        if "skipped" not in s:
            assert [x["multiplier"] for x in s["search"]["steps"]] == list(e.SYC_MULTIPLIERS)
            assert s["search"]["val_baseline"]["n"] == len(e.data(cfg, True)["syc_val"])
            assert (s["best"] is None) == ("test" not in s) and (s["best"] is None) == ("test_random" not in s)
    syc_cross = var["cross_steering"]["reference_vector_on_variant"]["sycophancy"]
    assert "skipped" in syc_cross or (syc_cross["n"] == 2 and 0.0 <= syc_cross["score"] <= 1.0)
    if "test_baseline" in var["steering"]["persona"]:
        assert var["steering"]["persona"]["test_baseline"]["rate"] is None
    # the reference's split-half noise floor sits beside every cosine at the steering layer
    assert all("reference_split_half" in v for v in var["cosine"]["native"].values())
    # the tables and figures read the file
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    sys.path[:0] = [str(root / "docs")]
    import make_tables
    from figures import quantization

    for n in ("fidelity", "vetting", "cosine", "steering", "sycophancy", "sycophancy_search", "spread", "hypotheses"):
        table = make_tables.TABLES[f"exp15_{n}"](out_root)
        assert table.count("\n") >= (3 if n in ("fidelity", "vetting", "cosine", "steering", "hypotheses", "sycophancy_search")
                                     else 2), n
    assert "3bit" in make_tables.TABLES["exp15_fidelity"](out_root)
    pngs = quantization.all_figures({"smollm2-135m@fp32": doc}, tmp_path)
    assert len(pngs) >= 3 and all(p.stat().st_size > 5000 for p in pngs)
    # exp15_sycophancy on this file stripped of the search (as files from before it are) reproduces the study's own
    # search, cross rows and hypotheses; a kept x1 row it cannot reproduce is a one-line error
    from experiments import exp15_sycophancy
    from experiments.exp15_merge import first_difference

    assert r["sycophancy_search"]["multipliers"] == list(e.SYC_MULTIPLIERS)
    old = json.loads(json.dumps(doc))
    del old["results"]["sycophancy_search"]
    for row in old["results"]["rows"].values():
        for key in ("search", "best", "why", "test", "test_random"):
            row["steering"]["sycophancy"].pop(key, None)
        if "skipped" in row["steering"]["sycophancy"]:  # the old skipped rows had no layer
            del row["steering"]["sycophancy"]["layer"]
        for c in (row.get("cross_steering") or {}).values():
            c["sycophancy"] = {"skipped": "A/B traits are compared per precision at x1 (sycophancy table), not crossed"}
    kept_score = old["results"]["rows"]["fp32"]["steering"]["sycophancy"]["0"]["score"]
    old["results"]["rows"]["fp32"]["steering"]["sycophancy"]["0"]["score"] = kept_score * (1 + 1e-6)  # float32 drift
    payload, config, _ = exp15_sycophancy.add_search(old, "old.json")  # (BUGFIX #61: 1e-9 refused every kept grid)
    rep = payload["sycophancy_search_added"]["reproduction"]
    assert 5e-7 < rep["float_max_difference"] <= 1e-4 == rep["tolerance"] and rep["non_float_values"] > 0, rep
    old["results"]["rows"]["fp32"]["steering"]["sycophancy"]["0"]["score"] = kept_score
    assert first_difference(payload["rows"], r["rows"]) is None and first_difference(payload["hypotheses"], r["hypotheses"]) is None
    assert payload["sycophancy_search"] == r["sycophancy_search"]
    assert config["sycophancy_search_added"] and payload["sycophancy_search_added"]["file"] == "old.json"
    with pytest.raises(MlxInterpError, match="already holds sycophancy's coefficient search"):
        exp15_sycophancy.add_search(doc, "new.json")
    old["results"]["rows"]["fp32"]["steering"]["sycophancy"]["0"]["score"] += 0.01
    with pytest.raises(MlxInterpError, match="differ from the kept ones at rows/fp32/steering/sycophancy/0/score"):
        exp15_sycophancy.add_search(old, "old.json")


@pytest.mark.slow
@pytest.mark.xdist_group("exp15_tiny")
def test_a_part_reusing_a_kept_reference_measures_as_the_one_process_run_and_refuses_what_it_cannot_reproduce(tiny_run,
                                                                                                               tmp_path):
    """exp15 --reference-from (``experiments.exp15_reference``): a part that takes a kept run's steering layers and
    fp32 row, and recomputes only what comparing a variant needs, measures the variant exactly as the one-process run
    did; its fp32 row is the kept one (the merge's criterion). A kept fp32 value this part does not reproduce stops it
    with a one-line error naming where."""
    from experiments import exp15_quantization as e
    from experiments.exp15_merge import TIMING, first_difference
    from experiments.exp15_reference import Reused

    cfg, path, _ = tiny_run
    kept = json.loads(open(path).read())
    reused = Reused(path)
    assert reused.cfg == cfg and reused.quick and reused.alias == "smollm2-135m"
    new = json.loads(open(e.study("smollm2-135m", ["3bit"], reused.cfg, reused.quick, str(tmp_path / "a"), reused)).read())
    r, k = new["results"], kept["results"]
    for p in ("fp32", "3bit"):
        got, want = ({x: v for x, v in d["rows"][p].items() if x not in TIMING} for d in (r, k))
        assert first_difference(got, want) is None, p
    assert first_difference(r["hypotheses"], k["hypotheses"]) is None and r["layers"] == k["layers"]
    # not vacuous: steering fp32 with the variant's vectors read the rebuilt fp32 rows (best, unsteered texts, A/B base)
    crossed = r["rows"]["3bit"]["cross_steering"]["variant_vector_on_reference"]
    assert "skipped" not in crossed["sycophancy"] and any("skipped" not in crossed[t] for t in ("persona", "confidence"))
    src = r["reference_from"]
    assert src["file"] == Path(path).name and src["sha256"] == hashlib.sha256(Path(path).read_bytes()).hexdigest()
    assert src["reproduction"]["non_float_values"] > 20 and src["reproduction"]["floats"] > 10, src
    assert src["reproduction"]["float_max_difference"] == 0.0  # one process, one build: the same bits
    assert "steering_layers" not in r["reference_stage_s"] and "steering_layers" in k["reference_stage_s"]
    assert "reference_check" in r["rows"]["fp32"]["stage_s"] and new["provenance"]["config"]["reference_from"] == src["file"]
    bad = copy.deepcopy(kept)
    bad["results"]["rows"]["fp32"]["steering"]["sycophancy"]["0"]["score"] += 0.01
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    with pytest.raises(MlxInterpError, match=r"^bad.json: the fp32 values this part recomputed differ from the kept ones at "
                                             r"rows/fp32/steering/sycophancy/0/score \(kept"):
        e.study("smollm2-135m", ["3bit"], cfg, True, str(tmp_path / "b"), Reused(str(tmp_path / "bad.json")))
    assert not (tmp_path / "b").exists()  # nothing written


@pytest.mark.parametrize("args, msg", [
    (["--reference-from", "none.json", "--precision", "3bit"], "--reference-from 'none.json': cannot read it"),
    (["--reference-from", "OLD", "--precision", "3bit"], "predates sycophancy's coefficient search"),
    (["--reference-from", "NEW", "--precision", "3bit", "--model", "gemma-3-270m"], "measured qwen2.5-coder-0.5b; it cannot serve --model gemma-3-270m"),
    (["--reference-from", "NEW"], "--reference-from needs the variants this part measures: give --precision"),
    (["--reference-from", "NEW", "--precision", "3bit", "--quick"], "give --reference-from without --quick"),
    (["--reference-from", "BROKEN", "--precision", "3bit"], "broken.json is not a complete exp15_quantization result"),
    (["--reference-from", "OTHER_GRID", "--precision", "3bit"], "other.json measured fp32 with sycophancy_search {"),
])
def test_exp15_reference_from_refuses_what_cannot_serve_in_one_line(args, msg, capsys, tmp_path):
    from experiments import exp15_quantization as e

    kept = Path(__file__).resolve().parent.parent / "results" / "published" / "exp15_quantization"
    files = {"OLD": kept / "20261203T172014Z_qwen2.5-coder-0.5b@fp32.json",  # before sycophancy's search
             "NEW": kept / "20261205T072722Z_qwen2.5-coder-0.5b@fp32.json", "BROKEN": tmp_path / "broken.json",
             "OTHER_GRID": tmp_path / "other.json"}
    files["BROKEN"].write_text(json.dumps({"experiment": "exp15_quantization", "results": {}}))
    other = json.loads(files["NEW"].read_text())
    other["results"]["sycophancy_search"]["multipliers"] = [0.5, 1.0]  # searched on another grid than today's
    files["OTHER_GRID"].write_text(json.dumps(other))
    with pytest.raises(SystemExit) as ex:
        e.main([str(files.get(a, a)) for a in args] + ["--out", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert ex.value.code == 2 and err[-1].startswith("error: ") and msg in err[-1], err


def test_spread_reads_rates_not_unsteered_persona_and_gives_a_paired_interval():
    """Hand-built rows with known answers: persona never falls back to its unsteered score, a precision without a
    coherent multiplier counts with its unsteered refusal rate, incoherent test rows are listed, and the bootstrap
    interval of the spread is over the shared prompts."""
    from experiments.exp15_quantization import _spread

    def rate(flags):
        return {"p": sum(flags) / len(flags), "k": sum(flags), "n": len(flags)}

    def row(test=None, base=None, coherent=1.0):
        s = {}
        if test is not None:
            s["test"] = {"rate": rate(test), "per_item": test, "coherent": {"p": coherent}}
        if base is not None:
            s["test_baseline"] = {"rate": rate(base), "per_item": base}
        return s

    rows = {"fp32": {"steering": {"refusal": row([1, 1, 1, 0]), "persona": row([1, 1, 0, 0])}},
            "8bit": {"steering": {"refusal": row([1, 1, 0, 0], coherent=0.5), "persona": row([1, 0, 0, 0])}},
            "3bit": {"steering": {"refusal": row(base=[0, 0, 0, 0]), "persona": {"test_baseline": {"rate": None}}}}}
    r = _spread(rows, "refusal")
    assert r["points"] == 75.0 and r["unsteered"] == ["3bit"] and r["incoherent_on_test"] == ["8bit"]
    assert r["max_at"] == "fp32" and r["min_at"] == "3bit" and r["n_prompts"] == 4
    assert r["points_ci95"][0] <= 75.0 <= r["points_ci95"][1]
    p = _spread(rows, "persona")
    assert set(p["scores"]) == {"fp32", "8bit"} and p["points"] == 25.0 and p["unsteered"] == []


def test_sycophancy_search_takes_the_best_multiplier_that_keeps_the_letters(monkeypatch):
    """The A/B coefficient search on hand-set validation outcomes: a higher score whose letters lost their mass is
    passed over, ties go to the smaller multiplier, the coefficient is multiplier x unit alpha, and no multiplier
    keeping the letters gives no choice; the unsteered validation score is recorded beside the steps."""
    from experiments import exp15_quantization as e

    m1, m2, m3, m4, m5 = e.SYC_MULTIPLIERS
    unit = 8.0

    def fake(outcomes):
        def ab(lm, key, d, vec=None, layer=None, alpha=0.0, base=None):
            assert key == "syc_val" and base == ("base", "syc_val", (3,))  # validation items, resumed from one base
            if vec is None:  # the unsteered baseline
                return {"score": 0.7, "mass_median": 0.95}
            assert layer == 3
            return dict(zip(("score", "mass_median"), outcomes[alpha / unit]))
        return ab

    d = {"syc_val": [None] * 3}
    monkeypatch.setattr(e, "ab_base", lambda lm, key, d, layers: ("base", key, tuple(layers)))
    monkeypatch.setattr(e, "_ab", fake({m1: (0.6, 0.9), m2: (0.8, 0.9), m3: (0.8, 0.5), m4: (0.95, 0.01), m5: (0.99, 0.0)}))
    s = e.search_sycophancy(None, d, "vec", 3, unit)
    assert s["val_baseline"] == {"score": 0.7, "mass_median": 0.95, "n": 3}
    assert s["best"]["multiplier"] == m2 and s["best"]["alpha"] == m2 * unit
    assert [x["answers_with_a_letter"] for x in s["steps"]] == [True, True, True, False, False]
    monkeypatch.setattr(e, "_ab", fake({m: (0.9, 0.01) for m in e.SYC_MULTIPLIERS}))
    assert e.search_sycophancy(None, d, "vec", 3, unit)["best"] is None


def test_cross_steering_says_which_side_lacks_the_vector():
    """BUGFIX #57: a receiver that could steer, given a precision whose vector was skipped, names that precision's
    reason (it said the receiver had no coherent multiplier)."""
    from experiments.exp15_quantization import cross_steer

    own = {"refusal": {"best": {"alpha": 1.0}, "_vector": [1.0], "layer": 3},
           "persona": {"best": None, "_vector": [1.0], "layer": 3}}
    foreign = {"refusal": {"skipped": "vetting kept 2 harmful"}, "persona": {"_vector": [1.0]}}
    out = cross_steer(None, None, {}, own, foreign, None)
    assert out["refusal"]["skipped"] == "no vector from the other precision: vetting kept 2 harmful"
    assert out["persona"]["skipped"] == "no coherent multiplier on validation for the receiver"


def test_sycophancy_crosses_at_the_receivers_multiplier_and_norm(monkeypatch):
    """The other precision's sycophancy vector reaches the receiver's test items at the receiver's layer and searched
    coefficient, rescaled to the norm of the receiver's own vector (only the direction differs)."""
    from experiments import exp15_quantization as e

    calls = []
    monkeypatch.setattr(e, "_ab", lambda lm, key, d, vec, layer, alpha, base: calls.append((key, vec, layer, alpha, base))
                        or {"score": 0.7})
    own = {"sycophancy": {"best": {"alpha": 2.5}, "_vector": np.array([3.0, 4.0, 0.0]), "layer": 7,
                          "_ab_base": "receiver's test-item base"}}
    foreign = {"sycophancy": {"_vector": np.array([0.0, 0.0, 0.2]), "_ab_base": "the other precision's"}}
    out = e.cross_steer("receiver", None, {}, own, foreign, None)
    assert out["sycophancy"] == {"score": 0.7} and len(calls) == 1
    key, vec, layer, alpha, base = calls[0]
    assert key == "syc_test" and layer == 7 and alpha == 2.5 and base == "receiver's test-item base"
    np.testing.assert_allclose(vec, [0.0, 0.0, 5.0])


def test_sycophancy_ab_rows_resumed_from_one_base_equal_full_passes(smol):
    """exp15's A/B rows read from one unsteered base (``ab_base``): the unsteered row is the base pass's, and a steered
    row resumed at its layer equals the full steered pass exactly (every per-item score, the logit difference) while
    running only the blocks from that layer on."""
    from experiments import exp15_quantization as e
    from mlx_interp.runs import work
    from mlx_interp.tasks.datasets import caa_sycophancy

    d = {"syc_val": caa_sycophancy()[0][:5]}
    k = smol.n_layers // 2
    v = np.random.default_rng(1).normal(size=smol.width)
    base = e.ab_base(smol, "syc_val", d, [k - 2, k])
    assert e._ab(smol, "syc_val", d, base=base) == e._ab(smol, "syc_val", d)
    for alpha in (-4.0, 4.0):
        full = e._ab(smol, "syc_val", d, v, k, alpha)
        work.take()
        resumed = e._ab(smol, "syc_val", d, v, k, alpha, base)
        done = work.take()
        assert resumed == full, alpha
        assert done["block_positions"] == pytest.approx(done["positions"] * (smol.n_layers - k) / smol.n_layers)
    assert full["score"] != e._ab(smol, "syc_val", d)["score"]  # the vector moved the scores: a real comparison


def test_spread_reads_sycophancy_at_its_searched_multiple():
    """Sycophancy counts at its searched test score (listed when its steered letters fall below the mass floor), with
    its unsteered score where the search kept no letters, and at CAA's x1 in a file from before the search."""
    from experiments.exp15_quantization import _spread

    def ab(per_item, mass=0.9):
        return {"score": sum(per_item) / len(per_item), "per_item": per_item, "mass_median": mass}

    rows = {"fp32": {"steering": {"sycophancy": {"search": {}, "0": ab([0.5, 0.5]), "+1": ab([0.6, 0.6]), "test": ab([0.9, 0.7])}}},
            "4bit": {"steering": {"sycophancy": {"search": {}, "0": ab([0.5, 0.5]), "test": ab([0.6, 0.6], mass=0.1)}}},
            "8bit": {"steering": {"sycophancy": {"search": {}, "best": None, "0": ab([0.4, 0.4]), "+1": ab([0.5, 0.5])}}},
            "3bit": {"steering": {"sycophancy": {"0": ab([0.5, 0.5]), "+1": ab([0.55, 0.55])}}}}
    r = _spread(rows, "sycophancy")
    assert r["scores"] == pytest.approx({"fp32": 0.8, "4bit": 0.6, "8bit": 0.4, "3bit": 0.55}) and r["unsteered"] == ["8bit"]
    assert r["incoherent_on_test"] == ["4bit"]  # its steered test letters fell below the mass floor
    assert r["points"] == pytest.approx(40.0) and r["n_prompts"] == 2


@pytest.mark.parametrize("precision, msg", [("7bit", "precision 7bit-g32-mirror cannot be built with this mlx; supported: "),
                                             ("4bit-g48", "group size 48 in precision 4bit-g48-mirror is not valid; use "),
                                             ("int8", "'int8'")])
def test_exp15_refuses_a_precision_it_cannot_build_in_one_line_before_loading(precision, msg, capsys, tmp_path):
    """exp15 --precision checks every variant before it loads a model: exit 2 and one line naming the value."""
    from experiments import exp15_quantization as exp15

    with pytest.raises(SystemExit) as e:
        exp15.main(["--model", "smollm2-135m", "--precision", precision, "--quick", "--out", str(tmp_path)])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("error: ") and msg in err, err
    assert not list(tmp_path.rglob("*.json"))


def test_exp15_sycophancy_refuses_what_it_cannot_extend_in_one_line(tmp_path, capsys):
    """Another experiment's file, or one that cannot be read: exit 2 with the file named, before any model loads."""
    from experiments import exp15_sycophancy

    f = tmp_path / "x.json"
    f.write_text(json.dumps({"experiment": "exp9_back_patching", "results": {}}))
    for path, msg in ((f, "x.json is not an exp15_quantization result"), (tmp_path / "none.json", "cannot read exp15 result")):
        with pytest.raises(SystemExit) as e:
            exp15_sycophancy.main([str(path), "--out", str(tmp_path)])
        err = capsys.readouterr().err
        assert e.value.code == 2 and msg in err and err.count("\n") == 1, err


def test_exp15_sycophancy_converts_every_variant_before_it_holds_a_model(monkeypatch):
    """BUGFIX #58: converting Qwen-1.5B's mxfp4 variant beside the held fp32 reference ran out of 24 GiB; every
    variant is now converted first, as the study does (BUGFIX #52)."""
    from dataclasses import asdict

    from experiments import exp15_quantization as e, exp15_sycophancy

    calls = []

    def load(name):
        calls.append(("load", name))
        raise RuntimeError("stop here")

    monkeypatch.setattr(mi, "prepare", lambda alias, p: calls.append(("prepare", alias, p)))
    monkeypatch.setattr(mi, "load", load)
    monkeypatch.setattr(exp15_sycophancy, "data", lambda cfg, quick: {})
    doc = {"experiment": e.NAME, "provenance": {"config": {"quick": True}},
           "results": {"config": asdict(e.config(True)), "reference": "qwen2.5-coder-1.5b@fp32", "rows": {},
                       "precisions": ["fp32", "8bit", "mxfp4", "3bit"], "layers": {"sycophancy": {"layer": 14, "candidates": []}}}}
    with pytest.raises(RuntimeError, match="stop here"):
        exp15_sycophancy.add_search(doc, "kept.json")
    assert calls == [("prepare", "qwen2.5-coder-1.5b", p) for p in ("fp32", "8bit", "mxfp4", "3bit")] + \
        [("load", "qwen2.5-coder-1.5b@fp32")]


def test_same_config_as_reruns_a_kept_file_with_the_configuration_it_records(monkeypatch, tmp_path, capsys):
    """The kept quick results predate today's smaller --quick: ``--same-config-as`` reruns one with the configuration,
    precisions, quick item sets and model its file records (--model and --precision still override); a merged file,
    another study's file or --quick beside it is a one-line error before any model loads."""
    from dataclasses import asdict
    from pathlib import Path

    from experiments import exp15_quantization as e

    kept = Path(__file__).resolve().parent.parent / "results/published/exp15_quantization"
    quick_file = kept / "20261203T172014Z_qwen2.5-coder-0.5b@fp32.json"
    calls = []
    monkeypatch.setattr(e, "study",
                        lambda alias, precisions, cfg, quick, out, reused=None: calls.append((alias, precisions, cfg, quick)) or "x")
    e.main(["--same-config-as", str(quick_file), "--out", str(tmp_path)])  # no --model: the file's
    e.main(["--model", "gemma-3-270m", "--same-config-as", str(quick_file), "--precision", "nvfp4",
            "--out", str(tmp_path)])
    doc = json.loads(quick_file.read_text())
    [(alias, precisions, cfg, quick), (alias2, precisions2, cfg2, _)] = calls
    assert alias == "qwen2.5-coder-0.5b" and precisions == ["8bit", "mxfp4", "3bit"] and quick is True
    assert json.loads(json.dumps(asdict(cfg))) == doc["results"]["config"] and cfg != e.config(True)
    assert (alias2, precisions2, cfg2) == ("gemma-3-270m", ["nvfp4"], cfg)  # --model and --precision still choose
    merged = kept / "20261205T041054Z_smollm2-135m@fp32.json"
    other = tmp_path / "x.json"
    other.write_text(json.dumps({"experiment": "exp9_back_patching", "results": {}}))
    for argv, msg in (([merged], "merges parts (exp15_merge); give one of its parts"),
                      ([other], "x.json is a 'exp9_back_patching' result; needs an exp15_quantization result"),
                      ([tmp_path / "none.json"], "none.json' does not exist"),
                      ([quick_file, "--quick"], "give --quick or --same-config-as, not both")):
        with pytest.raises(SystemExit) as ex:
            e.main(["--model", "smollm2-135m", "--same-config-as", *map(str, argv), "--out", str(tmp_path)])
        err = capsys.readouterr().err
        assert ex.value.code == 2 and msg in err and err.count("\n") == 1, err
    assert len(calls) == 2


def test_exp15_sycophancy_reproduction_check_allows_float32_drift_not_changed_choices():
    """BUGFIX #61/#62, on the drifts seen: SmolLM2's layer effect −0.0011413 kept, −0.0011416 now (2e-4 relative, a
    difference of two A/B scores near 0.5) and Gemma's 2.4e-5 relative pass; a score 0.01 off, another chosen layer
    or another count is refused with both values named."""
    from experiments.compare_results import Comparison
    from experiments.exp15_sycophancy import _same

    seen = Comparison()
    _same({"layer": 11, "effect": -0.001141566162929486}, {"layer": 11, "effect": -0.0011413498835652902}, "l", "f", seen)
    _same({"score": 0.5 * (1 + 2.4e-5)}, {"score": 0.5}, "s", "f", seen)
    assert seen.discrete == 1 and len(seen.floats) == 2
    for got, kept, msg in (({"score": 0.51}, {"score": 0.5}, "at s/score (kept 0.5, now 0.51"),
                           ({"layer": 9}, {"layer": 11}, "at s/layer (kept 11, now 9"),
                           ({"k": 47}, {"k": 48}, "at s/k (kept 48, now 47")):
        with pytest.raises(MlxInterpError, match=re.escape(msg)):
            _same(got, kept, "s", "f", Comparison())
