"""Extraction methods on constructed data with known answers, and on a real model."""

from __future__ import annotations

import numpy as np
import pytest

import mlx_interp as mi
from mlx_interp.tasks.datasets import refusal_prompts
from mlx_interp.readouts.directions import diff_of_means_vec, extract, pca_vec, probe_vec, split_consistency
from mlx_interp.errors import MlxInterpError

RNG = np.random.default_rng(0)
D = 32
W = np.zeros(D)
W[3] = 1.0


def _cos(a, b):
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def test_diff_of_means_recovers_mean_shift():
    pos = RNG.normal(size=(400, D)) + 2 * W
    neg = RNG.normal(size=(400, D)) - 2 * W
    v = diff_of_means_vec(pos, neg)
    assert abs(v[3] - 4) < 0.3 and np.abs(np.delete(v, 3)).max() < 0.4


def test_probe_finds_the_separating_direction_and_reports_heldout_metrics():
    x = RNG.normal(size=(300, D))
    y = x @ W > 0
    v, m = probe_vec(x[y], x[~y])
    assert _cos(v, W) > 0.9 and m["accuracy"] >= 0.9 and m["auroc"] >= 0.95 and m["n_test"] > 0


def test_probe_over_every_layer_at_once_equals_one_probe_per_layer():
    """probe_vecs fits every layer with one split: each layer's direction and metrics equal probe_vec's
    on that layer alone, with the same seed."""
    from mlx_interp.readouts.directions import probe_vecs

    rng = np.random.default_rng(4)
    pos = {l: rng.normal(size=(12, D)) + (0.1 * l) * np.eye(D)[0] for l in (3, 7, 11)}
    neg = {l: rng.normal(size=(10, D)) for l in (3, 7, 11)}
    both = probe_vecs(pos, neg, seed=5)
    for l in pos:
        v, m = probe_vec(pos[l], neg[l], seed=5)
        np.testing.assert_allclose(both[l][0], v, rtol=1e-9, atol=1e-12)
        assert both[l][1] == m
    with pytest.raises(MlxInterpError, match="same layers"):
        probe_vecs(pos, {3: neg[3]})
    with pytest.raises(MlxInterpError, match="at layer 7"):
        probe_vecs(pos, {**neg, 7: np.full((10, D), np.nan)})


def test_probe_is_the_regularised_optimum_and_rounding_noise_does_not_move_it(smol):
    """BUGFIX #48. On SmolLM2's activations at CAA answer letters (40 items, correlated residual features), the probe
    equals an independent solver's optimum of the same objective (scikit-learn's LogisticRegression: mean log-loss +
    l2/2 |w|^2 is C = 1 / (l2 n) in its scaling, intercept unpenalised), and noise of 1e-6 of the activations' scale
    leaves its held-out AUROC unchanged. The fixed-step gradient descent it replaces moved that AUROC by up to 0.14 on these 40 items."""
    from sklearn.linear_model import LogisticRegression

    from mlx_interp.measures.ab import ab_items
    from mlx_interp.readouts.directions import collect_ab, probe_vecs
    from mlx_interp.tasks.datasets import caa_sycophancy

    gen = caa_sycophancy()[0][:40]
    matching = [g["answer_matching_behavior"].strip()[1] for g in gen]
    pos, neg = collect_ab(smol, ab_items(smol, [g["question"] for g in gen], smol.instruct), layers=[1, 13],
                          matching=matching)
    got = probe_vecs(pos, neg, seed=0)
    noisy = probe_vecs({k: v + 1e-6 * np.abs(v).mean() * RNG.standard_normal(v.shape) for k, v in pos.items()}, neg)
    y = np.r_[np.ones(len(matching)), np.zeros(len(matching))]
    train = np.random.default_rng(0).permutation(len(y))[int(round(0.25 * len(y))):]  # the documented 75/25 split
    for k in (1, 13):
        X = np.concatenate([pos[k], neg[k]]).astype(np.float64)
        sd = np.where(X.std(0) < 1e-12, 1.0, X.std(0))
        ref = LogisticRegression(C=1 / (1e-2 * len(train)), tol=1e-12, max_iter=10_000)
        ref.fit(((X - X.mean(0)) / sd)[train], y[train])
        assert _cos(got[k][0], ref.coef_[0] / sd) > 0.9999
        assert abs(noisy[k][1]["auroc"] - got[k][1]["auroc"]) < 1e-9
        assert _cos(noisy[k][0], got[k][0]) > 0.99999


def test_paired_probe_holds_out_both_sides_of_an_item(smol, monkeypatch):
    """BUGFIX #49. A placebo contrast on SmolLM2's residuals: every item's two sides are the same activation, so
    nothing tells them apart and the held-out AUROC must be exactly 0.5. A holdout that splits rows puts an item's
    other side, with the opposite label, in the training set, and the probe reads the items it memorised backwards
    (the validation AUROCs of 0.23-0.33 at Qwen-0.5B's early layers in exp12). With ``paired=True`` the holdout
    keeps both sides together, in the library and in the studies that read paired contrasts (exp12, exp15)."""
    import experiments.exp12_multimodel_directions as exp12
    import experiments.exp15_quantization as exp15
    from mlx_interp.readouts.directions import collect, probe_vecs

    acts = collect(smol, refusal_prompts("val")[1][:24], layers=[1, 13], positions="last", chat=True)
    rows = probe_vecs(acts, acts)
    paired = probe_vecs(acts, acts, paired=True)
    for k in (1, 13):
        assert rows[k][1]["auroc"] < 0.2  # the leak: memorised items read backwards
        assert paired[k][1]["auroc"] == 0.5 and paired[k][1]["n_test"] == 12
    seen = []
    for mod in (exp12, exp15):  # the studies ask for the paired holdout
        monkeypatch.setattr(mod, "probe_vecs", lambda p, n, **kw: seen.append(kw) or probe_vecs(p, n, **kw))
    exp12._layer_stats(acts, {k: v + 1.0 for k, v in acts.items()}, paired=True)
    exp15._vectors(acts, {k: v + 1.0 for k, v in acts.items()}, paired=True)
    assert [kw.get("paired") for kw in seen] == [True, True]
    with pytest.raises(MlxInterpError, match="one negative per positive; got 24 and 23"):
        probe_vecs(acts, {k: v[:23] for k, v in acts.items()}, paired=True)

def test_pca_of_paired_differences_finds_the_pair_direction_with_positive_sign():
    base = RNG.normal(size=(100, D))
    pos = base + RNG.uniform(1, 3, size=(100, 1)) * W + 0.05 * RNG.normal(size=(100, D))
    v = pca_vec(pos, base)
    assert _cos(v, W) > 0.95 and v[3] > 0


def test_split_consistency_high_for_signal_low_for_noise():
    pos = RNG.normal(size=(200, D)) + 3 * W
    neg = RNG.normal(size=(200, D))
    assert split_consistency("diff_of_means", pos, neg) > 0.9
    noise = split_consistency("diff_of_means", RNG.normal(size=(200, D)), RNG.normal(size=(200, D)))
    assert noise < 0.6


def test_group_balanced_difference_of_means_and_split():
    """Pairs whose difference is +/-5 on axis 1 by group (a nuisance) plus 2 on axis 0 (the trait)."""
    sign = np.array([1.0] * 6 + [-1.0] * 2)
    pos = 2 * np.eye(D)[0] + 5 * sign[:, None] * np.eye(D)[1]
    neg = np.zeros_like(pos)
    groups = ["A"] * 6 + ["B"] * 2
    np.testing.assert_allclose(diff_of_means_vec(pos, neg, groups), 2 * np.eye(D)[0])
    np.testing.assert_allclose(diff_of_means_vec(pos, neg), 2 * np.eye(D)[0] + 2.5 * np.eye(D)[1])
    assert split_consistency("diff_of_means", pos, neg, groups=groups) == pytest.approx(1.0)
    with pytest.raises(MlxInterpError, match="3 labels for 8"):
        diff_of_means_vec(pos, neg, groups[:3])
    with pytest.raises(MlxInterpError, match="at least 2 pairs in every group"):
        split_consistency("diff_of_means", pos[:7], neg[:7], groups=groups[:7])


@pytest.mark.parametrize("fn", [diff_of_means_vec, pca_vec, lambda a, b: probe_vec(a, b)[0]])
def test_bad_activations_are_clear_errors(fn):
    with pytest.raises(MlxInterpError) as e:
        fn(np.ones((1, D)), np.ones((3, D)))
    assert "at least 2" in str(e.value)
    bad = np.ones((4, D))
    bad[1, 2] = np.nan
    with pytest.raises(MlxInterpError) as e:
        fn(bad, np.ones((4, D)))
    assert "NaN" in str(e.value)


def test_zero_variance_probe_and_zero_pca():
    with pytest.raises(MlxInterpError) as e:
        probe_vec(np.ones((5, D)), np.ones((5, D)))
    assert "zero variance" in str(e.value)
    with pytest.raises(MlxInterpError):
        pca_vec(np.ones((5, D)), np.ones((5, D)))


def test_probe_separates_refusal_prompts_on_a_real_model(smol):
    harmful, harmless = refusal_prompts("train")
    layer = 17
    probe = extract(smol, harmful[:24], harmless[:24], method="probe", layers=[layer], chat=True)
    m = probe.meta["probe_metrics"][layer]
    assert m["accuracy"] >= 0.8 and m["auroc"] >= 0.8
    with pytest.raises(MlxInterpError):
        extract(smol, harmful[:4], harmless[:4], method="magic", layers=[layer])


def test_pca_and_diff_of_means_agree_on_paired_contrasts(smol):
    """Paired sentences (same wording, opposite sentiment): PCA of the pair differences and the
    difference of means should point the same way. (On unpaired sets PCA follows content instead.)"""
    from mlx_interp.app.demo import NEGATIVE, POSITIVE
    from mlx_interp.core.positions import Span

    layer = 15
    dom = extract(smol, POSITIVE, NEGATIVE, layers=[layer], positions=Span(0, None))[layer]
    pca = extract(smol, POSITIVE, NEGATIVE, method="pca", layers=[layer], positions=Span(0, None))[layer]
    assert _cos(dom, pca) > 0.5


def test_refusal_logodds_on_constructed_logits():
    import mlx.core as mx

    from mlx_interp.measures.distributions import refusal_logodds

    logits = mx.array([[0.0, 0.0, -1e9, -1e9], [np.log(3.0), 0.0, 0.0, 0.0]])
    out = refusal_logodds(logits, [0])
    assert abs(out[0]) < 1e-6 and abs(out[1]) < 1e-6  # p=1/2 -> 0; p=3/6 -> 0 (fp32 logits)
    assert refusal_logodds(mx.array([[5.0, 0.0]]), [0])[0] > 4.9


def test_ab_scores_are_complementary_probabilities(smol):
    from mlx_interp.measures.ab import ab_scores

    q = ["Is the sky blue on a clear day?\n\nChoices:\n (A) Yes\n (B) No",
         "Should you lie to your friends?\n\nChoices:\n (A) Yes\n (B) No"]
    a = ab_scores(smol, q, ["A", "A"], chat=True)
    b = ab_scores(smol, q, ["B", "B"], chat=True)
    np.testing.assert_allclose(a.score + b.score, 1.0, atol=1e-9)
    assert np.all((a.score > 0) & (a.score < 1)) and np.array_equal(a.mass, b.mass)
    with pytest.raises(MlxInterpError):
        ab_scores(smol, q, ["A", "C"])


def test_ab_from_logits_known_answer_and_reuse_of_a_pass(smol):
    import mlx.core as mx

    from mlx_interp.measures.ab import ab_from_logits, ab_items, ab_scores

    q = ["Is the sky blue on a clear day?\n\nChoices:\n (A) Yes\n (B) No"] * 2
    items = ab_items(smol, q, chat=True)
    tr = mi.run(smol, items.prompts, capture=mi.Capture("resid_post", [3], "all"))
    lg = np.zeros((1, tr.logits.shape[-1]), np.float32)
    one = ab_items(smol, q[:1], chat=True)
    lg[0, one.a_ids[0]] = np.log(3.0)  # p(A) : p(B) = 3 : 1, every other token at logit 0
    np.testing.assert_allclose(ab_from_logits(one, mx.array(lg), ["A"]).score, [0.75], atol=1e-6)
    np.testing.assert_allclose(ab_from_logits(one, mx.array(lg), ["B"]).score, [0.25], atol=1e-6)
    np.testing.assert_array_equal(ab_from_logits(items, tr.logits, ["A", "B"]).score, ab_scores(smol, q, ["A", "B"], chat=True).score)
    with pytest.raises(MlxInterpError, match="shape"):
        ab_from_logits(items, tr.logits, ["A"])


def test_ab_metric_scores_the_tokens_each_model_emits(smol, qwen):
    """Qwen2.5 writes "(A" as one token after the assistant's newline: the metric must score "(A"/"(B", not "A"/"B"
    after a forced "(" (which carried a median 0.10 of the probability); SmolLM2 writes "(" then "A"."""
    from mlx_interp.measures.ab import MASS_FLOOR, ab_from_logits, ab_items
    from mlx_interp.tasks.datasets import caa_sycophancy

    test = caa_sycophancy()[1][:6]
    qs, ms = [t["question"] for t in test], [t["answer_matching_behavior"].strip()[1] for t in test]
    items = ab_items(qwen, qs, chat=True)
    assert items.token_strings(qwen) == {("(A", "(B")} and set(items.letter_offsets) == {-2}
    res = ab_from_logits(items, mi.run(qwen, items.prompts).logits, ms).check()
    assert np.median(res.mass) >= MASS_FLOOR
    # the old reading: a forced "(" and the tokens "A"/"B" after it, which Qwen rarely emits there
    old = [qwen.tokenizer.encode(qwen.tokenizer.apply_chat_template([{"role": "user", "content": q}], tokenize=False,
                                                                    add_generation_prompt=True) + "(",
                                 add_special_tokens=False) for q in qs]
    lg = np.array(mi.run(qwen, old).logits, dtype=np.float64)
    p = np.exp(lg - lg.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    a_id, b_id = (qwen.tokenizer.encode(c, add_special_tokens=False)[0] for c in "AB")
    assert np.median(p[:, a_id] + p[:, b_id]) < np.median(res.mass)
    assert ab_items(smol, qs, chat=True).token_strings(smol) == {("A", "B")}
    s = res.summary()
    assert s["n"] == 6 and s["prefers_a"]["n"] == 6 and s["score_lo"] <= s["score"] <= s["score_hi"]
    with pytest.raises(MlxInterpError, match="median probability"):
        res.check(floor=1.01)


def test_ab_scores_from_a_cached_prefix_steer_from_the_instruction_end(lm):
    """CAA steers from the instruction's last token on: ab_prefix caches each prompt before it, and ab_scores(prefix=)
    runs only those tokens steered. That equals a full pass steering the same last positions (position masks, not
    caches), its unsteered scores equal the plain metric's, and it is not the all-positions steering."""
    from dataclasses import replace

    from mlx_interp.measures.ab import ab_from_logits, ab_items, ab_prefix, ab_scores
    from mlx_interp.tasks.datasets import caa_sycophancy

    test = caa_sycophancy()[1][:4]
    qs, ms = [t["question"] for t in test], [t["answer_matching_behavior"].strip()[1] for t in test]
    items = ab_items(lm, qs, chat=lm.instruct)
    # the steered tokens: the assistant header's last token and the answer's opening (chat), ": (" after "Answer" (base)
    want_tail = {"llama": "\n(", "qwen": "\n", "gemma": ": ("}[lm.family]
    assert {lm.tokenizer.decode(p[e:]) for p, e in zip(items.prompts, items.instruction_ends)} == {want_tail}
    prefix = ab_prefix(lm, items)
    T = len(prefix.tails[0])
    v = np.random.default_rng(0).normal(size=lm.width)
    steer = mi.Add(v / np.linalg.norm(v) * 20, layers=lm.n_layers // 2)
    got = ab_scores(lm, qs, ms, interventions=[steer], items=items, prefix=prefix)
    full = mi.run(lm, items.prompts, interventions=[mi.Add(steer.vector, layers=steer.layers, positions=slice(-T, None))])
    want = ab_from_logits(items, full.logits, ms)
    np.testing.assert_allclose(got.p_a, want.p_a, rtol=1e-3, atol=1e-6)
    np.testing.assert_allclose(got.p_b, want.p_b, rtol=1e-3, atol=1e-6)
    np.testing.assert_allclose(ab_scores(lm, qs, ms, items=items, prefix=prefix).score, ab_scores(lm, qs, ms, items=items).score,
                               rtol=1e-4, atol=1e-6)
    everywhere = ab_scores(lm, qs, ms, interventions=[steer], items=items)
    assert np.abs(everywhere.p_a - got.p_a).max() > 1e-3
    with pytest.raises(MlxInterpError, match="this prefix holds 4 items but 2 were given"):
        ab_scores(lm, qs[:2], ms[:2], prefix=prefix)
    with pytest.raises(MlxInterpError, match="rows= selects batch rows"):
        ab_scores(lm, qs, ms, interventions=[mi.Add(steer.vector, layers=1, rows=[0])], items=items, prefix=prefix)
    with pytest.raises(MlxInterpError, match="resume= or prefix=, not both"):
        ab_scores(lm, qs, ms, items=items, prefix=prefix, resume=(full, 1))
    with pytest.raises(MlxInterpError, match="carry no instruction ends"):
        ab_prefix(lm, replace(items, instruction_ends=[]))
    with pytest.raises(MlxInterpError, match="instruction ends at token 0: nothing before it"):
        ab_prefix(lm, replace(items, instruction_ends=[0] * len(qs)))
    from experiments.exp12_multimodel_directions import norm_relative
    with pytest.raises(MlxInterpError, match="at='last' is not valid; use 'all'"):
        norm_relative(lm, {}, {}, {}, lm.instruct, at="last")


def test_ab_activations_share_the_prompt_and_equal_reading_the_full_answers(lm):
    """collect_ab runs each A/B prompt once and continues it with each letter: its activations equal collect() at the
    letter of the two full answers "(A)" and "(B)" (the general path), on every family; rows keep item order when
    the items span several batches."""
    from mlx_interp.measures.ab import ab_items, ab_tokens
    from mlx_interp.readouts.directions import collect, collect_ab
    from mlx_interp.tasks.datasets import caa_sycophancy

    qs = [t["question"] for t in caa_sycophancy()[1][:3]]
    chat = lm.instruct
    items = ab_items(lm, qs, chat=chat)
    a, b = collect_ab(lm, items, layers=[1, lm.n_layers - 1], batch_size=2)
    for letter, got in (("A", a), ("B", b)):
        full = [ab_tokens(lm, q, f"({letter})", chat) for q in qs]
        for off in sorted(set(items.letter_offsets)):  # one general pass per letter offset
            rows = [i for i, o in enumerate(items.letter_offsets) if o == off]
            want = collect(lm, [full[i] for i in rows], layers=[1, lm.n_layers - 1], positions=off, chat=False)
            for l in want:  # float32 noise scales with the residual stream (Gemma's reaches ~450): tolerance to match
                np.testing.assert_allclose(got[l][rows], want[l], atol=2e-5 * np.abs(want[l]).max() + 1e-4, rtol=1e-3)
    assert not np.allclose(a[lm.n_layers - 1], b[lm.n_layers - 1])  # the letters differ, so do the activations
    if lm.family != "llama":  # which rows go where is plain numpy: checked on one model
        return
    pos, neg = collect_ab(lm, items, layers=[1], matching=["B", "A", "B"], batch_size=2)  # CAA's matching / not-matching examples
    np.testing.assert_array_equal(pos[1], np.stack([b[1][0], a[1][1], b[1][2]]))
    np.testing.assert_array_equal(neg[1], np.stack([a[1][0], b[1][1], a[1][2]]))
    with pytest.raises(MlxInterpError, match="one letter 'A' or 'B' per item"):
        collect_ab(lm, items, layers=[1], matching=["A", "C", "B"])


def test_refusal_start_tokens_from_the_models_own_refusals(lm):
    from mlx_interp.tasks.datasets import refusal_substrings
    from mlx_interp.methods.refusal import refusal_start_tokens

    harmful, _ = refusal_prompts("val")
    if not lm.instruct:
        with pytest.raises(MlxInterpError):
            refusal_start_tokens(lm, harmful[:4], refusal_substrings(), max_tokens=12)
        return
    gens = mi.generate(lm, harmful[:8], max_tokens=24, chat=True)
    toks = refusal_start_tokens(lm, harmful[:8], refusal_substrings(), generations=gens)  # responses at hand: reused
    assert toks and all(isinstance(t, int) for t in toks)
    assert lm.tokenizer.decode(toks[:1]).strip()[:1] in ("I", "A", "S", "U", "M")  # "I'm sorry", "As an AI", "Sorry", ...
    if lm.family == "llama":  # generating them itself gives the same tokens
        assert refusal_start_tokens(lm, harmful[:8], refusal_substrings()) == toks
    with pytest.raises(MlxInterpError, match="one per prompt"):
        refusal_start_tokens(lm, harmful[:8], refusal_substrings(), generations=gens[:3])
