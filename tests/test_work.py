"""The model work a run records in its provenance (runs/work.py), counted on the real default model."""

from __future__ import annotations

import json

import pytest

import mlx_interp as mi
from mlx_interp.core.generate import generate
from mlx_interp.core.trace import encode
from mlx_interp.runs import journal, work


def test_forwards_count_padded_positions_and_decode_steps_and_results_record_each_interval(smol, tmp_path):
    prompts = ["The capital of France is", "The capital of the United Kingdom is"]
    T = max(len(t) for t in encode(smol, prompts, False, special=True))
    work.take()
    tr = mi.run(smol, prompts, chat=False)
    assert sorted(tr.pads)[0] == 0 and sorted(tr.pads)[1] > 0  # one padded block: padding is work done
    assert work.take() == {"forward_calls": 1, "positions": 2 * T, "block_positions": 2 * T, "decode_steps": 0,
                           "decode_positions": 0}
    generate(smol, prompts, max_tokens=4, chat=False, stop_at_eos=False)
    # the prompt block, then one step per token after the first (the last token is sampled, never fed)
    assert work.take() == {"forward_calls": 4, "positions": 2 * T + 3 * 2, "block_positions": 2 * T + 3 * 2,
                           "decode_steps": 3, "decode_positions": 6}
    mi.run(smol, prompts, chat=False)
    p1 = mi.save_result("work_check", {"x": 1}, lm=smol, out_dir=tmp_path)
    p2 = mi.save_result("work_check", {"x": 2}, lm=smol, out_dir=tmp_path)
    w1, w2 = (json.loads(p.read_text())["provenance"]["work"] for p in (p1, p2))
    assert w1["positions"] == 2 * T and w1["forward_calls"] == 1 and w1["counted_on"] == "this process"
    assert w2["positions"] == 0 and w2["forward_calls"] == 0  # nothing ran between the two results


def test_a_replayed_journaled_call_counts_nothing(smol, tmp_path):
    prompts = ["The capital of France is"]
    with journal.opened(tmp_path / "j", resume=False) as j:
        work.take()
        mi.run(smol, prompts, chat=False)
        assert work.take()["forward_calls"] == 1
        mi.run(smol, prompts, chat=False)  # the same call again: replayed from the journal
        assert j.hits == 1 and work.take()["forward_calls"] == 0


def test_a_pass_resumed_at_block_k_counts_the_share_of_blocks_it_ran(smol):
    prompts = ["The capital of France is", "The capital of the United Kingdom is"]
    base = mi.run(smol, prompts, chat=False, capture=mi.Capture("resid_pre", "all", "all"))
    L, k = smol.n_layers, 10
    work.take()
    mi.run(smol, prompts, chat=False, resume=(base, k))
    w = work.take()
    assert w["positions"] == 2 * max(len(t) for t in base.tokens) and w["forward_calls"] == 1
    assert w["block_positions"] == pytest.approx(w["positions"] * (L - k) / L)
