"""Function vectors (methods.function_vectors, tasks.icl): splits as the reference, heads mapped into the residual
stream, the batched mediation sweep against the one-forward-per-head loop, and one-line errors."""

from __future__ import annotations

import json

import mlx.core as mx
import numpy as np
import pytest

from mlx_interp import Capture, run
from mlx_interp.errors import MlxInterpError
from mlx_interp.methods import function_vectors as fv
from mlx_interp.tasks import icl


def test_split_is_the_references_scikit_learn_split():
    import sklearn.model_selection as sk
    items = list(range(2398))
    train, rest = sk.train_test_split(items, test_size=0.3, random_state=42)
    test, valid = sk.train_test_split(rest, test_size=0.3, random_state=42)
    assert icl.split(items) == (train, test, valid)
    t = icl.load_task("antonym")
    assert (len(t.train), len(t.test), len(t.valid)) == (1678, 504, 216)  # the counts the data's SOURCE.md gives


def test_prompt_template_and_shuffled_labels():
    t = icl.load_task("country-capital")
    rng = np.random.default_rng(0)
    demos = icl.draw_demos(t, rng, n=3)
    p = icl.prompt(demos, "France")
    assert p.startswith(f"Q: {demos[0].x}\nA: {demos[0].y}\n\nQ: ") and p.endswith("\n\nQ: France\nA:")
    assert icl.zero_shot("France") == "Q: France\nA:"
    sh = icl.draw_demos(t, np.random.default_rng(1), n=10, shuffle_labels=True)
    same = icl.draw_demos(t, np.random.default_rng(1), n=10)
    assert [d.x for d in sh] == [d.x for d in same] and sorted(d.y for d in sh) == sorted(d.y for d in same)
    assert [d.y for d in sh] != [d.y for d in same]


def test_mapped_heads_sum_to_the_attention_output(lm):
    """Sum over heads of head_to_resid = what the layer's attention adds (attn_out), Gemma's post-norm included."""
    prompt = "Q: hot\nA: cold\n\nQ: up\nA:"
    for layer in (1, lm.n_layers // 2):
        tr = run(lm, [prompt], capture=[Capture("head", layer, "last"), Capture("attn_out", layer, "last")])
        heads = np.array(tr["head", layer][0].astype(mx.float32))
        want = np.array(tr["attn_out", layer][0].astype(mx.float32))
        got = fv.head_to_resid(lm, layer, heads).sum(axis=0)
        assert np.abs(got - want).max() < 1e-3 * (1 + np.abs(want).max()), (lm.name, layer)
        one = fv.head_to_resid(lm, layer, heads)[0]
        assert not np.allclose(one, want, atol=1e-3)  # one head is not the whole layer


def test_batched_mediation_equals_one_forward_per_head(smol):
    """The cached, row-batched, resumed sweep gives the naive loop's indirect effects."""
    t = icl.load_task("antonym")
    rng = np.random.default_rng(0)
    clean = [icl.prompt(icl.draw_demos(t, rng), q.x) for q in t.valid[:4]]
    means = fv.head_means(smol, clean)
    assert means.shape == (smol.n_layers, 9, 64)
    corrupted = [icl.prompt(icl.draw_demos(t, rng, shuffle_labels=True), t.valid[0].x)]
    ids = fv.answer_ids(smol, corrupted, [t.valid[0].y])
    fast = fv.indirect_effects(smol, corrupted, ids, means, layers=[2, 17], groups=2)
    naive = fv.indirect_effects_naive(smol, corrupted, ids, means, layers=[2, 17])
    m = ~np.isnan(naive)
    assert m.sum() == 18 and np.array_equal(m, ~np.isnan(fast))
    assert np.abs(fast[m] - naive[m]).max() < 1e-5
    assert np.abs(naive[m]).max() > 1e-5  # patching heads does move p(answer)


def test_cached_prefix_scoring_equals_one_full_pass_per_vector(smol):
    """score_with_vectors (prefix cached once, one row per vector) gives score()'s numbers with each vector's own
    full pass, on 10-shot and zero-shot prompts; the vectors do move p(answer)."""
    t = icl.load_task("country-capital")
    rng = np.random.default_rng(0)
    qs = t.test[:3]
    ps = [icl.prompt(icl.draw_demos(t, rng, shuffle_labels=True), q.x) for q in qs] + [icl.zero_shot(q.x) for q in qs]
    ids = fv.answer_ids(smol, ps, [q.y for q in qs] * 2)
    adds = [(rng.normal(size=smol.width) * s, layer) for s, layer in ((3.0, 2), (10.0, 9), (1.0, 29))]
    ok, p = fv.score_with_vectors(smol, ps, ids, adds)
    for r, ivs in enumerate([[]] + [[fv.fv_intervention(smol, v, layer)] for v, layer in adds]):
        ok_ref, p_ref = fv.score(smol, ps, ids, ivs)
        np.testing.assert_allclose(p[r], p_ref, atol=1e-5)
        assert (ok[r] == ok_ref).all()
    assert np.abs(p[1:] - p[0]).max() > 1e-2


def test_mean_head_contributions_sum_to_the_mean_attention_output(lm):
    """MeanStats.head_resid, summed over heads, is the mean last-token attn_out of the same prompts (Gemma's norm
    included, where mapping the mean head output instead would not be); without a norm after o_proj it equals the
    paper's map of the mean output. The FV is the sum of its heads' rows."""
    t = icl.load_task("antonym")
    rng = np.random.default_rng(0)
    clean = [icl.prompt(icl.draw_demos(t, rng), q.x) for q in t.valid[:4]]
    st = fv.mean_stats(lm, clean)
    layer = lm.n_layers // 2
    ao = run(lm, clean, capture=Capture("attn_out", layer, "last"), logits="none")["attn_out", layer]
    want = np.array(ao.astype(mx.float32), dtype=np.float64).mean(axis=0)
    got = st.head_resid[layer].sum(axis=0)
    assert np.abs(got - want).max() < 1e-3 * (1 + np.abs(want).max()), lm.name
    rs = run(lm, clean, capture=Capture("resid_post", layer, "last"), logits="none")["resid_post", layer]
    assert np.isclose(st.resid_norm[layer], np.linalg.norm(np.array(rs.astype(mx.float32)), axis=-1).mean(), rtol=1e-4)
    of_mean = fv.head_to_resid(lm, layer, st.head_means[layer])
    if "gemma" in lm.name:  # the norm's scale depends on each prompt: the map of the mean is not the mean of the maps
        assert np.abs(of_mean - st.head_resid[layer]).max() > 1e-3 * np.abs(st.head_resid[layer]).max()
    else:
        np.testing.assert_allclose(of_mean, st.head_resid[layer], rtol=1e-4, atol=1e-4 * np.abs(of_mean).max())
    np.testing.assert_allclose(fv.function_vector(lm, st.head_resid, [(layer, 1), (1, 0)]),
                               st.head_resid[layer, 1] + st.head_resid[1, 0], rtol=1e-12)


def test_bad_input_one_line_errors(smol, tmp_path):
    few = tmp_path / "few.json"
    few.write_text(json.dumps([{"input": f"w{i}", "output": f"v{i}"} for i in range(8)]))
    with pytest.raises(MlxInterpError, match="10 demonstrations"):
        icl.load_task("few", str(few))
    empty = tmp_path / "empty.json"
    empty.write_text(json.dumps([{"input": "a", "output": ""}] + [{"input": f"w{i}", "output": f"v{i}"} for i in range(30)]))
    with pytest.raises(MlxInterpError, match="empty answer"):
        icl.load_task("empty", str(empty))
    means = np.zeros((smol.n_layers, 9, 64))
    with pytest.raises(MlxInterpError, match=r"head \(layer 3, head 9\) is out of range"):
        fv.function_vector(smol, np.zeros((smol.n_layers, 9, smol.width)), [(3, 9)])
    with pytest.raises(MlxInterpError, match="head contributions of shape"):
        fv.function_vector(smol, np.zeros((smol.n_layers, 9, 896)), [(3, 1)])
    with pytest.raises(MlxInterpError, match="width 896"):
        fv.fv_intervention(smol, np.ones(896), 3)
    with pytest.raises(MlxInterpError, match="at least one prompt"):
        fv.indirect_effects(smol, [], [], means)
    with pytest.raises(MlxInterpError, match="do not fit"):
        fv.indirect_effects(smol, ["Q: a\nA:"], [1], np.zeros((3, 9, 64)))


def test_fv_study_runs_end_to_end_on_a_tiny_configuration(smol, monkeypatch, tmp_path):
    """exp8/exp11/exp13's shared pipeline on one task with a handful of items: every method, both controls, the
    valid sweep and the test evaluation land in the result, with counts that agree."""
    from experiments import fv_study

    tiny = fv_study.Config(("country-capital",), 12, 12, 4, 2, (10,), 10)
    monkeypatch.setattr(fv_study, "config", lambda quick, tasks=None: tiny)
    res = fv_study.run(smol, None, True)
    row = res["tasks"]["country-capital"]
    n_test = row["counts"]["test_survivors"]
    assert row["counts"]["valid_scanned"] == 12 and 0 < n_test <= 12
    assert row["small_sample"] and res["summary"]["tasks_averaged"] == []
    assert len(res["top_heads"]) == res["n_heads_A"] == 10 and np.array(res["aie_mean"]).shape == (smol.n_layers, 9)
    assert row["sweep"]["layers"] == [0, 10, 20] and set(row["chosen_layer"]) == set(fv_study.METHODS)
    for m, layer in row["chosen_layer"].items():  # a layer is chosen only where the valid sweep found accuracy > 0
        assert (layer is None) == (max(row["sweep"][m]) == 0), m
        assert (layer is None) == ("skipped" in row["at_chosen_layer"][m]), m
    ev = row["at_a_priori_layer"]
    for kind in ("zero_shot", "shuffled_10shot"):
        for name in ("none", "head_fv", "layer_mean", "icl_diff", "random_heads", "random_vector"):
            assert ev[kind][name]["n"] == n_test, (kind, name)
    assert set(row["natural"]) == set(icl.NATURAL["country-capital"])
    # the kept file feeds the figures and the note's tables (the same code the published notes use)
    import sys
    from pathlib import Path

    from figures import make_all
    from mlx_interp.runs.results import save_result

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "docs"))
    import make_tables

    save_result("exp13_function_vectors", res, lm=smol, config={"quick": True}, out_dir=tmp_path)
    names = {p.name for p in make_all.main(["--results", str(tmp_path), "--out", str(tmp_path / "figs")])}
    short = smol.name
    assert {f"exp13_aie_{short}.png", f"exp13_accuracy_{short}.png", f"exp13_sweep_{short}.png", "exp13_head_depths.png"} <= names
    text = make_tables.render("<!-- table: exp13_accuracy -->\n<!-- /table -->\n<!-- table: exp13_survivors -->\n<!-- /table -->", tmp_path)
    k = ev["zero_shot"]["head_fv"]["k"]
    assert f"({k}/{n_test})" in text and f"country-capital {row['counts']['valid_survivors']}/12, {n_test}/12*" in text


def test_indirect_effect_matches_an_independent_pytorch_recomputation():
    """The AIE table's numbers, recomputed without mlx: transformers + PyTorch on the same GGUF (fp32), head outputs
    read and replaced by a forward pre-hook on o_proj (the reference's own mechanism), kept by
    tests/reference/pytorch_reference.py. Means and per-head effects agree."""
    from tests.reference import pytorch_reference as pr

    from mlx_interp.store.models import load
    from mlx_interp.store.registry import REGISTRY

    ref = json.loads(pr.FV_PATH.read_text())
    assert ref["gguf_sha256"] == REGISTRY["smollm2-135m"].offline.sha256
    lm = load("smollm2-135m@fp32")
    inputs = pr.fv_inputs(lm)
    assert inputs == {k: ref[k] for k in ("clean", "corrupted", "answer_id")}  # the same prompts and answer token
    assert [lm.tokenizer.encode(p) for p in inputs["clean"]] == ref["clean_ids"]
    layers = ref["layers"]
    means = fv.head_means(lm, inputs["clean"])
    for l in layers:  # the mean head outputs, read independently
        np.testing.assert_allclose(np.array(ref["means"][str(l)]), means[l], atol=2e-3, rtol=1e-3)
    ours = fv.indirect_effects(lm, [inputs["corrupted"]], [inputs["answer_id"]], means, layers=layers)[0]
    for l in layers:
        for h, theirs in enumerate(ref["effects"][str(l)]):
            assert abs(theirs - ours[l, h]) < 1e-4 + 0.02 * abs(theirs), (l, h, theirs, ours[l, h])
    assert np.abs(ours[layers]).max() > 1e-3  # effects large enough for the comparison to mean something


def test_fv_filter_extends_the_scan_until_enough_items_survive(smol):
    """The study's filter scans in steps until ``min_survivors`` pass (or the split ends); its first step is the
    plain capped scan, so extending never changes which early items survive."""
    from experiments import fv_study

    task = icl.load_task("country-capital")
    capped, n_capped = fv_study._filter(smol, task, task.test, 6, np.random.default_rng(0))
    assert n_capped == 6
    want = len(capped) + 1  # at least one more survivor than the first step gives: the scan must go on
    extended, n_ext = fv_study._filter(smol, task, task.test, 6, np.random.default_rng(0), min_survivors=want)
    assert [e["clean"] for e in extended[:len(capped)]] == [c["clean"] for c in capped]
    assert n_ext % 6 == 0 or n_ext == len(task.test)
    assert len(extended) >= want or n_ext == len(task.test)
    assert n_ext > 6
