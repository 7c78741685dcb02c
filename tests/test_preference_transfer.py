"""exp17 (preference vector, concise vs verbose, carried across models) on a tiny configuration, and the summary
measures it reports, checked on hand-made texts."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mlx_interp.errors import MlxInterpError
from mlx_interp.measures import summaries as sm
from tests.conftest import get_model


def test_summary_measures_on_hand_made_texts():
    base = ["The cat sat.", "Prices rose in Paris on Monday.", "Rain."]
    plus = ["The big cat sat on the mat.", "Prices rose.", "Heavy rain fell all day."]
    minus = ["Cat.", "Prices rose in Paris on Monday again today.", "Rain."]
    # item 1: longer and shorter -> 1; item 2: +v shorter, -v longer -> 0; item 3: +v longer, -v equal -> 0.5
    assert sm.length_direction(base, plus, minus) == [1.0, 0.0, 0.5]
    assert sm.entities("Prices rose in Paris on Monday, 3 times.") == {"paris", "monday", "3"}
    assert sm.entity_retention(["Prices rose in Paris on Monday."], ["Paris saw prices rise."]) == [0.5]
    assert sm.entity_retention(["no entities here"], ["x"]) == [None]
    same, disjoint = sm.tfidf_cosine(["red apples fall", "red apples fall"], ["red apples fall", "blue sky above"])
    assert same == pytest.approx(1.0) and disjoint == pytest.approx(0.0)
    assert sm.rouge_l(["the cat sat on the mat"], ["the cat sat on the mat"]) == [pytest.approx(1.0)]
    assert sm.log_length_ratio(["a b"], ["a b c d"]) == [1.0]
    with pytest.raises(MlxInterpError, match="aligned lists"):
        sm.length_direction(["a"], ["a", "b"], ["a"])


_WHOLE: dict = {}


def _tiny_cfg():
    from experiments import exp17_preference_transfer as exp17

    return exp17.Config(n_train=4, n_val=2, n_test=2, depths=(0.5,), coefs=(1.0,), concise_tokens=8, verbose_tokens=12,
                        min_coherent=0.0, adapter_steps=20)


def _whole(tmp_path_factory, smol, gemma):
    """The tiny run in one process (source SmolLM2 g32; targets its g64 variant and base Gemma), once per session: both
    tests below read it (one xdist group, so one worker runs it)."""
    from experiments import exp17_preference_transfer as exp17

    if "folder" not in _WHOLE:
        g64 = get_model("smollm2-135m@4bit-g64")
        _WHOLE["folder"] = exp17.run([smol, g64, gemma], True, str(tmp_path_factory.mktemp("whole")), _tiny_cfg())
    return _WHOLE["folder"]


@pytest.mark.xdist_group("exp17")
def test_exp17_tiny_run_writes_the_studys_files(tmp_path_factory, smol, gemma):
    from experiments import exp17_preference_transfer as exp17
    from mlx_interp.readouts.vectors import load_vector

    g64 = get_model("smollm2-135m@4bit-g64")
    folder = _whole(tmp_path_factory, smol, gemma)
    names = sorted(p.name for p in folder.iterdir())
    for f in ("experiment_results.json", "summary_report.md", "preference_vector.safetensors", "summary_pairs.json",
              "exp17_transfer_matrix.png", "exp17_scores_by_model.png", "exp17_adapter_vs_direct.png"):
        assert f in names, f
    doc = json.loads((folder / "experiment_results.json").read_text())
    r = doc["results"]
    assert doc["provenance"]["model"]["name"] == smol.name and len(doc["models"]) == 3
    assert r["targets"][gemma.name]["skipped"].startswith("base model")
    t = r["targets"][g64.name]
    assert set(t["carried"]) == {"direct", "ridge", "procrustes", "adapter"} == set(t["carried_random"])
    for x in list(t["carried"].values()) + [r["source"]["test"]["steered"], r["source"]["test"]["random"]]:
        assert x["n"] == 2 and len(x["per_item"]) == 2 and x["score"] == pytest.approx(np.mean(x["per_item"]))
    assert t["layer"] == r["source"]["test"]["layer"] == 15  # same depth, same architecture
    # how far each carrier turned the vector (and its random control): direct keeps both, a fitted map turns them
    geo = t["carried_geometry"]
    assert set(geo) == set(t["carried"]) and geo["direct"]["vector"] == {"cosine": pytest.approx(1.0),
                                                                          "norm_ratio": pytest.approx(1.0)}
    assert all(geo[k]["vector"]["cosine"] < 1 - 1e-6 for k in ("ridge", "procrustes", "adapter"))
    assert geo["direct"]["random"]["cosine"] == pytest.approx(1.0)
    h = r["hypotheses"]
    assert h["H1_source_gt_0.7"]["met"] == (r["source"]["test"]["steered"]["score"] > 0.7)
    assert f"H3_adapter_gt_direct_plus_20:{g64.name}" in h
    pairs = json.loads((folder / "summary_pairs.json").read_text())
    assert len(pairs) == 4 and all(set(p) == {"passage", "concise", "verbose"} for p in pairs)
    vs = load_vector(folder / "preference_vector.safetensors", smol)
    assert sorted(vs.vectors) == [15] and vs.site == "resid_pre"
    assert (folder / "summary_report.md").read_text() == exp17.report(r)


@pytest.mark.xdist_group("exp17")
def test_exp17_in_parts_equals_one_run(tmp_path, tmp_path_factory, smol, gemma):
    """The source's part, then targets carried from it in two further parts, give the one-process run's numbers;
    a continuation refuses a target already carried, another configuration, and a vector its pairs do not give."""
    import dataclasses
    import shutil

    from experiments import exp17_preference_transfer as exp17
    from mlx_interp.readouts.vectors import load_vector, save_vector

    g64 = get_model("smollm2-135m@4bit-g64")
    cfg = _tiny_cfg()
    whole = _whole(tmp_path_factory, smol, gemma)
    a = exp17.run([smol], True, str(tmp_path / "a"), cfg)
    b = exp17.run([smol, g64], True, str(tmp_path / "b"), cfg, source_from=str(a))
    c = exp17.run([smol, gemma], True, str(tmp_path / "c"), cfg, source_from=str(b / "experiment_results.json"))
    one, parts = (json.loads((f / "experiment_results.json").read_text()) for f in (whole, c))
    r1, rp = one["results"], parts["results"]
    assert rp["source"] == r1["source"] and rp["targets"] == r1["targets"] and rp["hypotheses"] == r1["hypotheses"]
    assert [m["name"] for m in parts["models"]] == [m["name"] for m in one["models"]]
    assert [(p["folder"], p["targets"]) for p in rp["parts"]] == [(a.name, []), (b.name, [g64.name]), (c.name, [gemma.name])]
    assert rp["wall_s"] == pytest.approx(sum(p["wall_s"] for p in rp["parts"]))
    assert parts["provenance"]["wall_s"] == pytest.approx(rp["wall_s"], abs=1e-3)  # provenance keeps 3 decimals
    assert (c / "summary_report.md").read_text() == exp17.report(rp)

    with pytest.raises(MlxInterpError, match="already carries the vector to"):
        exp17.run([smol, g64], True, str(tmp_path / "d"), cfg, source_from=str(b))
    with pytest.raises(MlxInterpError, match="another configuration"):
        exp17.run([smol, g64], True, str(tmp_path / "d"), dataclasses.replace(cfg, n_test=3), source_from=str(a))
    bad = tmp_path / "bad" / a.name
    shutil.copytree(a, bad)
    vs = load_vector(a / "preference_vector.safetensors", smol)
    (l, v), = vs.vectors.items()
    save_vector(bad / "preference_vector.safetensors", type(vs)({l: v * 1.01}, vs.model, vs.method, vs.meta, vs.site))
    with pytest.raises(MlxInterpError, match="differs from the kept one"):
        exp17.run([smol, g64], True, str(tmp_path / "d"), cfg, source_from=str(bad))
    assert not (tmp_path / "d").exists()  # every refusal came before a file was written
