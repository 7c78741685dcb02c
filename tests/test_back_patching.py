"""exp9's machinery (issue 14, defect 3): which failures it back-patches, how it samples them, the held-out best pair,
and the identity patch that must reproduce the baseline, each checked against values worked out by hand or against
the model's own unpatched output."""

from __future__ import annotations

import numpy as np

from experiments.exp9_back_patching import (_round_robin, _split_halves, _states, both_hops_known_failures,
                                            identity_mismatches, patch_grids)


def test_only_failures_that_know_both_hops_are_back_patched():
    rows = [{"id": i, "composition_correct": c, "first_hop_correct": f, "second_hop_correct": s}
            for i, (c, f, s) in enumerate([(False, True, True), (True, True, True), (False, False, True),
                                           (False, True, False), (False, False, False), (False, True, True)])]
    assert [r["id"] for r in both_hops_known_failures(rows)] == [0, 5]


def test_failures_are_taken_round_robin_across_families():
    items = [("capital", 1), ("capital", 2), ("capital", 3), ("currency", 4), ("author", 5), ("currency", 6)]
    assert _round_robin(items, key=lambda x: x[0]) == [("capital", 1), ("currency", 4), ("author", 5),
                                                       ("capital", 2), ("currency", 6), ("capital", 3)]


def test_best_pair_is_chosen_on_one_half_and_scored_on_the_other():
    # 4 failures on a 3-layer grid (-1: pair not run). Pair (2, 0) fixes failures 0-2, pair (2, 1) failure 3 only,
    # (1, 0) none. Any half holds at least one of failures 0-2, and (2, 0) comes first among ties, so both folds
    # choose (2, 0); the two held-out halves partition the failures, so their fixes add up to (2, 0)'s 3 of 4.
    fixed = np.full((4, 3, 3), -1)
    fixed[:, 2, 0] = [1, 1, 1, 0]
    fixed[:, 2, 1] = [0, 0, 0, 1]
    fixed[:, 1, 0] = 0
    for seed in range(5):
        out = _split_halves(fixed, seed=seed)
        assert out["n"] == 4 and [(f["source"], f["target"]) for f in out["folds"]] == [(2, 0), (2, 0)]
        assert sum(f["held_out"]["k"] for f in out["folds"]) == 3 and sum(f["held_out"]["n"] for f in out["folds"]) == 4
    assert _split_halves(fixed[:1])["note"].startswith("fewer than 2")
    fixed[:, 2, 0] = fixed[:, 2, 1] = 0  # no pair fixes anything: no pair is chosen (argmax alone would say 0->0)
    assert [(f["source"], f["held_out"]["k"]) for f in _split_halves(fixed)["folds"]] == [(None, 0), (None, 0)]


def test_identity_patch_reproduces_the_baseline_and_a_foreign_state_does_not(smol):
    import mlx_interp as mi

    prompt, other = "The capital of France is", "My favourite colour is"
    layers = [2, 8, 14, 20]
    baseline = mi.generate(smol, [prompt], max_tokens=10)[0].text
    own = _states(smol, prompt, layers, -1)
    assert identity_mismatches(smol, prompt, own, -1, layers, baseline) == 0
    foreign = _states(smol, other, layers, -1)
    assert identity_mismatches(smol, prompt, foreign, -1, layers, baseline) > 0  # the check can fail
    grids = patch_grids(smol, prompt, {"backpatch": own}, -1, layers, ["Paris"])
    g = grids["backpatch"]
    run = {(s, t) for s in layers for t in layers if t < s}
    assert {tuple(x) for x in np.argwhere(g >= 0)} == run  # exactly the pairs s > t on the grid, nothing else
    assert set(np.unique(g[g >= 0])) <= {0, 1}
