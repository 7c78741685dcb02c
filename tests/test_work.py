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


def test_a_replayed_journaled_call_counts_nothing_and_credits_what_it_cost(smol, tmp_path):
    """A replay computes nothing, so it counts nothing. A call an earlier process computed credits its recorded cost
    to the replayed ledger, so a run resumed over several processes reports its whole compute (``wall_s_total``);
    a call this process computed and meets again credits nothing (its time is already in ``wall_s``)."""
    prompts = ["The capital of France is", "The capital of the United Kingdom is"]
    calls = lambda: (mi.run(smol, prompts, chat=False),  # noqa: E731
                     generate(smol, prompts, max_tokens=4, chat=False, stop_at_eos=False),
                     journal.memo("tokens", ("x",), lambda: mi.run(smol, prompts[:1], chat=False).tokens))
    with pytest.raises(KeyboardInterrupt), journal.opened(tmp_path / "j", resume=False) as j:  # the first process
        work.take(), work.take_replayed()
        calls()
        computed = work.take()
        assert computed["forward_calls"] == 6
        calls()  # the same calls again in the same process: found, not recomputed, not credited
        assert j.hits == 3 and work.take()["forward_calls"] == 0 and work.take_replayed()["calls"] == 0
        raise KeyboardInterrupt  # interrupted: the journal is kept
    with journal.opened(tmp_path / "j", resume=True) as j:  # a resumed process replays them: credited
        calls()
        assert j.hits == 3 and work.take()["forward_calls"] == 0
        replayed = work.take_replayed()
        assert replayed["calls"] == 3 and replayed["seconds"] > 0  # the seconds recorded when they were computed
        assert {k: replayed[k] for k in work.COSTED} == {k: computed[k] for k in work.COSTED}
        calls()  # met again in this process: the same earlier work, credited once
        assert work.take_replayed()["calls"] == 0
        mi.run(smol, prompts[1:], chat=False)  # new work in the resumed process
        doc = json.loads(mi.save_result("work_check", {"x": 1}, lm=smol, wall_s=1.0, out_dir=tmp_path).read_text())
    prov = doc["provenance"]
    assert prov["work"]["forward_calls"] == 1 and prov["work"]["replayed"]["calls"] == 0
    assert prov["wall_s_total"] == 1.0


def test_a_pass_resumed_at_block_k_counts_the_share_of_blocks_it_ran(smol):
    prompts = ["The capital of France is", "The capital of the United Kingdom is"]
    base = mi.run(smol, prompts, chat=False, capture=mi.Capture("resid_pre", "all", "all"))
    L, k = smol.n_layers, 10
    work.take()
    mi.run(smol, prompts, chat=False, resume=(base, k))
    w = work.take()
    assert w["positions"] == 2 * max(len(t) for t in base.tokens) and w["forward_calls"] == 1
    assert w["block_positions"] == pytest.approx(w["positions"] * (L - k) / L)
