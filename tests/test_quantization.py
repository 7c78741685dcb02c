"""exp15 (issue 17): vector comparison across precisions, next-token agreement, response activations, the capability
data, and the study end to end on a tiny configuration (its file feeds the tables and figures)."""

from __future__ import annotations

import json

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


@pytest.mark.slow
def test_exp15_tiny_end_to_end_then_tables_and_figures(tmp_path, smol):
    from experiments import exp15_quantization as e
    from mlx_interp.measures.ab import ab_scores

    cfg = e.Config(n_refusal=4, n_persona=4, n_syc=8, n_val_ab=2, n_test_ab=2, n_conf=4, n_val=2, n_test=2, n_fidelity=1,
                   depths=(0.5,), search_steps=1, max_tokens=8, summary_tokens=(8, 16), min_kept=2, n_capability=2)
    path = e.study("smollm2-135m", ["3bit"], cfg, True, str(tmp_path))
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

    out_root = tmp_path  # <root>/exp15_quantization/<file>
    for n in ("fidelity", "vetting", "cosine", "steering", "sycophancy", "spread", "hypotheses"):
        table = make_tables.TABLES[f"exp15_{n}"](out_root)
        assert table.count("\n") >= (3 if n in ("fidelity", "vetting", "cosine", "steering", "hypotheses") else 2), n
    assert "3bit" in make_tables.TABLES["exp15_fidelity"](out_root)
    pngs = quantization.all_figures({"smollm2-135m@fp32": doc}, tmp_path)
    assert len(pngs) >= 3 and all(p.stat().st_size > 5000 for p in pngs)


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
