"""Directions study library parts: sublayer sites and exact ablation, vetting, coherence,
coefficient search, and Arditi et al.'s refusal-direction selection. Real models throughout."""

from __future__ import annotations

import numpy as np
import pytest

import mlx_interp as mi
from mlx_interp.methods import refusal
from mlx_interp.core.capture import Capture
from mlx_interp.tasks.datasets import refusal_prompts, refusal_substrings
from mlx_interp.errors import MlxInterpError
from mlx_interp.core.generate import generate
from mlx_interp.measures.coherence import coherence, coherence_by_condition, continuation_nll
from mlx_interp.measures.text import refusal_score, repetition_rate
from mlx_interp.methods.steering import multiplier_tree, residual_norms, search_multiplier, search_multipliers
from mlx_interp.methods.vetting import vet

PROMPTS = ["The capital of France is", "Water boils at a temperature of"]


def test_sublayer_outputs_sum_to_the_residual_stream(lm):
    """resid_post l == resid_pre l + attn_out l + mlp_out l: the writers are found correctly on each architecture."""
    tr = mi.run(lm, PROMPTS, capture=Capture(["resid_pre", "resid_post", "attn_out", "mlp_out"], "all", "all"), logits="none")
    prev = np.array(tr["resid_pre", 0], dtype=np.float64)
    for l in range(lm.n_layers):
        out = np.array(tr["resid_post", l], dtype=np.float64)
        rebuilt = prev + np.array(tr["attn_out", l]) + np.array(tr["mlp_out", l])
        assert np.abs(rebuilt - out).max() <= 1e-3 * np.abs(out).max(), l
        prev = out


def test_exact_ablation_reaches_inside_blocks(lm):
    """Exact ablation zeroes the direction in every sublayer write too; boundary-only ablation does not."""
    r = np.random.default_rng(5).normal(size=lm.width)
    ru = r / np.linalg.norm(r)
    cap = Capture(["resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out"], "all", "all")
    tr = mi.run(lm, PROMPTS, interventions=[refusal.ablation(r)], capture=cap, logits="none")
    for site, a in tr.captured.items():
        a = np.array(a, dtype=np.float64)
        assert np.abs(a @ ru).max() < 1e-4 * np.abs(a).max() + 1e-3, site
    at_boundaries = [mi.Ablate(r, site="resid_pre", layers=0), mi.Ablate(r)]  # resid_post only
    tb = mi.run(lm, PROMPTS, interventions=at_boundaries, capture=Capture(["mlp_out", "resid_mid"], 0, "all"), logits="none")
    assert np.abs(np.array(tb["mlp_out", 0], dtype=np.float64) @ ru).max() > 1e-3
    assert np.abs(np.array(tb["resid_mid", 0], dtype=np.float64) @ ru).max() > 1e-3  # the MLP's input still carries it
    exact = mi.run(lm, PROMPTS, interventions=[refusal.ablation(r)]).logits
    boundary = mi.run(lm, PROMPTS, interventions=at_boundaries).logits
    assert np.abs(np.array(exact) - np.array(boundary)).max() > 1e-3


def test_repetition_rate_on_constructed_sequences():
    assert repetition_rate(list(range(20))) == 0.0
    assert repetition_rate([7] * 20) == pytest.approx(1 - 1 / 18)
    assert repetition_rate([1, 2]) == 0.0  # shorter than one 3-gram


def test_coherence_prefers_the_models_own_text_to_shuffled_tokens(smol):
    g = generate(smol, PROMPTS, max_tokens=16, chat=False, stop_at_eos=False)
    own = coherence(smol, g)
    shuffled = [mi.Generation("", list(np.random.default_rng(0).permutation(x.tokens)), x.prompt_tokens, "length") for x in g]
    bad = coherence(smol, shuffled)
    assert own["median_perplexity"] < 5 < bad["median_perplexity"]
    assert own["coherent_rate"] == 1.0 and bad["coherent_rate"] < 1.0
    # two conditions on the same prompts judged in one pass (their prompts shared) score as each alone
    both = coherence_by_condition(smol, {"own": g, "bad": shuffled})
    for name, alone in (("own", own), ("bad", bad)):
        np.testing.assert_allclose(both[name]["perplexity"], alone["perplexity"], rtol=1e-3)
        assert both[name]["coherent"] == alone["coherent"]
    with pytest.raises(MlxInterpError, match="in condition 'none'"):
        coherence_by_condition(smol, {"own": g, "none": []})
    with pytest.raises(MlxInterpError, match="^no generations to score for coherence$"):
        coherence(smol, [])


def test_continuation_nll_does_not_depend_on_the_batch(smol):
    from mlx_interp.core.trace import encode

    p = encode(smol, ["Hi", "A much longer prompt than the first one here"])
    c = [[1, 2, 3], [4, 5]]
    both = continuation_nll(smol, p, c)
    alone = [continuation_nll(smol, [pi], [ci])[0] for pi, ci in zip(p, c)]
    for a, b in zip(both, alone):
        assert np.allclose(a, b, atol=2e-3)


def test_continuations_sharing_a_prompt_score_as_full_passes(lm):
    """Rows that share a prompt are scored from one cached prompt (right-padded continuations of 1 to 6 tokens,
    more rows than one batch); each equals a plain pass over its own prompt + continuation, on every family."""
    from mlx_interp.core.trace import encode, run

    p1, p2 = encode(lm, ["The capital of France is", "Once upon a time, in a small village"])
    conts = [[int(t) for t in lm.tokenizer.encode(s, add_special_tokens=False)] for s in
             (" Paris, a city", " the", " a large and famous city", " there lived", " big", " an old man who")]
    prompts = [p1, p1, p1, p2, p1, p2]  # p1 has four continuations (> batch_size=3), p2 two
    got = continuation_nll(lm, prompts, conts, batch_size=3)
    for p, c, g in zip(prompts, conts, got):
        lp = np.array(run(lm, [p + c], logits="tokens").logits[0], dtype=np.float64)
        want = -lp[len(p):]
        assert g.shape == want.shape
        np.testing.assert_allclose(g, want, atol=2e-3, rtol=1e-3)


def test_vetting_keeps_only_examples_that_show_the_trait(smol):
    h, hl = refusal_prompts("train")
    phrases = refusal_substrings()
    refuses = lambda t: bool(refusal_score(t, phrases))  # noqa: E731
    harmful = h[:6]
    # the expected classes from plain mlx-lm's own greedy generation (not our generate, which vet uses)
    from mlx_lm import generate as mlx_generate

    from mlx_interp.core.batching import format_prompt
    expected = [p for p in harmful if refuses(mlx_generate(smol.model, smol.tokenizer, format_prompt(smol, p, True), max_tokens=32))]
    if len(expected) < 2:  # SmolLM2 refuses rarely; vetting must then say so, not return a degenerate class
        with pytest.raises(MlxInterpError, match="vetting kept"):
            vet(smol, harmful, hl[:4], refuses, chat=True)
        v = vet(smol, harmful, hl[:4], refuses, min_kept=0, chat=True)
    else:
        v = vet(smol, harmful, hl[:4], refuses, chat=True)
    assert v.positive == expected
    # the responses it judged are kept (one per prompt), so later steps reuse them instead of generating again
    assert all(refuses(g.text) for g in v.responses_of(v.positive))
    assert not any(refuses(g.text) for g in v.responses_of(v.dropped_positive))
    with pytest.raises(MlxInterpError, match="not vetted here"):
        v.responses_of(["a prompt nobody vetted"])
    rep = v.report()
    assert rep["positive_kept"] + rep["positive_dropped"] == 6 and rep["positive_dropped"] == 6 - len(expected)
    with pytest.raises(MlxInterpError, match="both classes"):
        vet(smol, [], hl[:4], refuses)


def test_residual_norms_skip_the_first_token(smol):
    n = residual_norms(smol, PROMPTS, [3], chat=False)
    tr = mi.run(smol, PROMPTS, capture=Capture("resid_post", 3, "all"), logits="none")
    per = [np.linalg.norm(np.array(a[1:], dtype=np.float64), axis=-1) for a in tr.per_prompt("resid_post", 3)]
    assert n[3] == pytest.approx(np.concatenate(per).mean(), rel=1e-4)


def test_coefficient_search_doubles_then_bisects(smol):
    v = np.random.default_rng(1).normal(size=smol.width)
    calls = []

    def score(gens):
        calls.append(len(gens))
        return 1.0

    s = search_multiplier(smol, v, 10, PROMPTS, score, steps=4, start=0.5, max_tokens=8, chat=False, min_coherent=0.5)
    ms = [x.multiplier for x in s.steps]
    assert len(ms) == 4 and ms[0] == 0.5 and len(calls) == 5 + (s.control is not None)  # baseline + 4 steps + control
    for a, b, st in zip(ms, ms[1:], s.steps):  # each next multiplier: doubling while coherent, else bisection
        assert b == a * 2 or b < a or (not st.coherent)
    norms = residual_norms(smol, PROMPTS, [10], chat=False)
    assert s.unit_alpha == pytest.approx(norms[10] / np.linalg.norm(v), rel=1e-6)
    assert s.steps[0].alpha == pytest.approx(0.5 * s.unit_alpha)
    coherent = [st for st in s.steps if st.coherent]
    if coherent:  # every step scores 1.0: the best is the smallest coherent multiplier; the control uses its alpha
        assert s.best.multiplier == min(st.multiplier for st in coherent) and s.control.alpha == s.best.alpha
    else:
        assert s.best is None and s.control is None
    with pytest.raises(MlxInterpError, match="zero norm"):
        search_multiplier(smol, np.zeros(smol.width), 10, PROMPTS, score)
    with pytest.raises(MlxInterpError, match="steps"):
        search_multiplier(smol, v, 10, PROMPTS, score, steps=0)


def test_multiplier_tree_lists_what_the_next_steps_can_visit():
    """From 0.5 with nothing evaluated: 0.5; then 1.0 (coherent: double) or 0.25 (incoherent: halve towards 0); then
    2.0 / 0.75 (bisect 0.5-1.0) from 1.0, and 0.375 (bisect 0.25-0.5) / 0.125 from 0.25."""
    assert multiplier_tree(0.5, None, None, 1) == [0.5]
    assert multiplier_tree(0.5, None, None, 3) == [0.5, 1.0, 0.25, 2.0, 0.75, 0.375, 0.125]
    assert multiplier_tree(3.0, 2.0, 4.0, 2) == [3.0, 3.5, 2.5]  # between bounds: bisection only


def test_lockstep_searches_take_the_steps_each_takes_alone_in_fewer_calls(smol, monkeypatch):
    """search_multipliers runs several targets' searches in one generate call per round (and with lookahead=steps
    in one call for the whole tree): every target visits the multipliers, texts and verdicts it gets alone, shares
    the unsteered baseline, and gets its own random-direction control."""
    import mlx_interp.methods.steering as steering

    rng = np.random.default_rng(5)
    targets = [(rng.normal(size=smol.width), 10), (rng.normal(size=smol.width), 4)]
    score = lambda gens: float(np.mean([len(g.text) for g in gens]))  # noqa: E731
    kw = dict(steps=3, start=0.5, max_tokens=6, chat=False, min_coherent=0.5)
    calls = []
    real = steering.generate_conditions
    monkeypatch.setattr(steering, "generate_conditions", lambda *a, **k: calls.append(len(a[1])) or real(*a, **k))
    alone = [search_multiplier(smol, v, k, PROMPTS, score, **kw) for v, k in targets]
    n_alone, calls[:] = len(calls), []
    together = search_multipliers(smol, targets, PROMPTS, score, **kw)
    n_together, calls[:] = len(calls), []
    tree = search_multipliers(smol, targets, PROMPTS, score, lookahead=3, **kw)
    controls = sum(s.control is not None for s in alone)
    assert n_alone == 2 * 3 + controls and n_together == 3 + (controls > 0) and len(calls) == 1 + (controls > 0)
    assert calls[0] == 1 + 2 * 7  # the baseline and both targets' whole 3-level trees in one call
    for a, b, c in zip(alone, together, tree):
        for s in (b, c):
            assert [(x.multiplier, x.coherent, x.examples) for x in s.steps] == [(x.multiplier, x.coherent, x.examples) for x in a.steps]
            assert s.unit_alpha == pytest.approx(a.unit_alpha, rel=1e-6) and s.baseline.examples == a.baseline.examples
            assert (s.best is None) == (a.best is None) and (s.control is None) == (a.control is None)
            if a.control is not None:
                assert s.control.examples == a.control.examples and s.best.multiplier == a.best.multiplier
    assert alone[0].steps[0].examples != alone[1].steps[0].examples  # the two targets steer differently
    with pytest.raises(MlxInterpError, match="lookahead=0 must be at least 1"):
        search_multipliers(smol, targets, PROMPTS, score, lookahead=0)
    with pytest.raises(MlxInterpError, match="no \\(vector, layers\\) targets"):
        search_multipliers(smol, [], PROMPTS, score)
    with pytest.raises(MlxInterpError, match="targets\\[1\\] is ndarray; each target is a \\(vector, layers\\) pair"):
        search_multipliers(smol, [targets[0], targets[1][0]], PROMPTS, score)


def test_post_instruction_positions(qwen, gemma):
    pos = refusal.post_instruction_positions(qwen)
    from mlx_interp.core.batching import encode

    ids = encode(qwen, ["Say hi."], chat=True)[0]
    tail = qwen.tokenizer.decode(ids[pos[0]:])
    assert tail.startswith("<|im_end|>") and tail.rstrip().endswith("assistant") and len(pos) == 5
    with pytest.raises(MlxInterpError, match="no chat template"):
        refusal.post_instruction_positions(gemma)


def test_candidates_are_block_input_differences(qwen):
    h, hl = refusal_prompts("train")
    c = refusal.candidates(qwen, h[:3], hl[:3], positions=[-1, -2])
    assert sorted({k[0] for k in c}) == list(range(1, qwen.n_layers)) and {k[1] for k in c} == {-1, -2}
    # the input of block 5 is the output of block 4
    tr_h = mi.run(qwen, h[:3], capture=Capture("resid_post", 4, -2), chat=True, logits="none")
    tr_n = mi.run(qwen, hl[:3], capture=Capture("resid_post", 4, -2), chat=True, logits="none")
    want = np.array(tr_h["resid_post", 4], dtype=np.float64).mean(0) - np.array(tr_n["resid_post", 4], dtype=np.float64).mean(0)
    assert np.allclose(c[(5, -2)], want, atol=1e-4)


def test_choose_applies_the_papers_filters():
    S = refusal.Scored
    scored = [S(2, -1, -5.0, 1.0, 0.5, 1.0, False),  # best bypass but KL too high
              S(3, -1, -3.0, 0.5, 0.05, 1.0, False),  # passes
              S(4, -1, -4.0, -0.5, 0.05, 1.0, False),  # induce too low
              S(9, -1, None, None, None, 1.0, False, "layer >= 0.8 of depth")]
    cands = {(s.layer, s.position): np.ones(4) * s.layer for s in scored}
    base = {"harmful": -1.0, "harmless": -4.0}
    assert refusal.choose(scored, cands, base).layer == 3
    assert refusal.choose(scored, cands, base, "harmful_baseline").layer == 4
    assert refusal.choose(scored, cands, base, None, float("inf")).layer == 2
    with pytest.raises(MlxInterpError, match="no candidate passed"):
        refusal.choose(scored, cands, base, 5.0)
    with pytest.raises(MlxInterpError, match="induce_min='loose' is not valid"):
        refusal.choose(scored, cands, base, "loose")


def test_crosslingual_phrases_extend_the_english_list():
    from mlx_interp.tasks.datasets import crosslingual_refusal_phrases

    fr = crosslingual_refusal_phrases("fr")
    assert set(refusal_substrings()) <= set(fr) and refusal_score("Je suis désolé, mais non.", fr) == 1
    assert refusal_score("Je suis désolé, mais non.", refusal_substrings()) == 0
    with pytest.raises(MlxInterpError, match="'xx'"):
        crosslingual_refusal_phrases("xx")


def test_refusal_scores_use_ablation_and_addition_at_the_block_input(qwen):
    h, hl = refusal_prompts("val")
    r = np.random.default_rng(2).normal(size=qwen.width)
    ids = [40]
    # batch_size=2 over 3 harmless prompts: the induce pass resumes from per-batch replay traces (a full and a short batch)
    steps = []
    deep = int(0.8 * qwen.n_layers)  # 19 of 24: the reference prunes l >= int(0.8 L); kept as a table row, never scored
    scored, base = refusal.score(qwen, {(6, -1): r, (deep, -1): r}, h[:2], hl[:3], ids, batch_size=2,
                                 progress=lambda i, n, what: steps.append((i, n, what)))
    s, skipped = scored
    assert steps == [(1, 1, "layer 6 pos -1")]
    assert skipped.layer == deep and skipped.bypass is None and "int(0.8 * 24) = 19" in skipped.why_not
    want_induce = refusal.refusal_metric(qwen, hl[:3], ids, [mi.Add(r, site="resid_pre", layers=6)]).mean()
    want_bypass = refusal.refusal_metric(qwen, h[:2], ids, [refusal.ablation(r)]).mean()
    assert s.induce == pytest.approx(want_induce, abs=1e-4) and s.bypass == pytest.approx(want_bypass, abs=1e-4)
    assert s.kl > 0 and base["harmful"] == pytest.approx(refusal.refusal_metric(qwen, h[:2], ids).mean(), abs=1e-4)
    assert refusal.addition(r, 6, 2.0).bind(qwen).sites == {("resid_pre", 6)}
