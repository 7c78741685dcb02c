"""The journal's memoized readouts (runs/journal.memo) on the real default model: a resumed run replays what
collect_responses, collect_ab and the coherence judge computed, whose passes are too large or not keyable to journal
themselves."""

from __future__ import annotations

import numpy as np

from mlx_interp.measures.ab import ab_items
from mlx_interp.readouts.directions import collect_ab, collect_responses
from mlx_interp.runs import journal, work


def test_reduced_readouts_replay_from_the_journal_and_keep_only_their_value(smol, tmp_path):
    prompts, responses = ["Name a colour.", "Name a fruit."], ["Blue, like the sky.", "An apple."]
    items = ab_items(smol, ["Is the sky blue?\n\nChoices:\n (A) Yes\n (B) No"] * 2, True)
    folder = tmp_path / "j"
    with journal.opened(folder, resume=False) as j:
        r1 = collect_responses(smol, prompts, responses, layers=[3, 7], chat=True)
        a1 = collect_ab(smol, items, layers=[5], matching=["A", "B"])
        assert j.writes == 2 and len(list(folder.glob("*.pkl"))) == 2  # the two values, not the passes inside
    with journal.opened(folder, resume=True) as j:  # a clean exit deleted it: recompute, then replay within the run
        work.take()
        r2 = collect_responses(smol, prompts, responses, layers=[3, 7], chat=True)
        a2 = collect_ab(smol, items, layers=[5], matching=["A", "B"])
        assert work.take()["forward_calls"] > 0
        r3 = collect_responses(smol, prompts, responses, layers=[3, 7], chat=True)
        a3 = collect_ab(smol, items, layers=[5], matching=["A", "B"])
        assert j.hits == 2 and work.take()["forward_calls"] == 0
        # a different request is a different key: another layer is computed, not replayed
        collect_responses(smol, prompts, responses, layers=[4], chat=True)
        assert j.hits == 2 and work.take()["forward_calls"] > 0
    for x, y in ((r1, r3), (r2, r3)):
        for kind in ("mean", "last"):
            for l in (3, 7):
                np.testing.assert_array_equal(x[kind][l], y[kind][l])
    for x, y in ((a1, a3), (a2, a3)):
        for side in (0, 1):
            np.testing.assert_array_equal(x[side][5], y[side][5])
    # matching flips each item's pair: item 0 matches A, item 1 matches B, and both items are the same question
    # (float noise between two rows of one batch)
    np.testing.assert_allclose(a1[0][5][0], a1[1][5][1], atol=1e-4)
    np.testing.assert_allclose(a1[1][5][0], a1[0][5][1], atol=1e-4)


def test_coherence_scores_replay_from_the_journal(smol, tmp_path):
    """continuation_nll reads shared prompts from a KV cache (not keyable), so its values are what is journaled."""
    from mlx_interp.core.generate import generate
    from mlx_interp.measures.coherence import coherence_by_condition

    gens = {"a": generate(smol, ["Tell me about the sea.", "Hi"], max_tokens=5, chat=True),
            "b": generate(smol, ["Tell me about the sea.", "Hi"], max_tokens=3, chat=True)}
    with journal.opened(tmp_path / "j", resume=False) as j:
        first = coherence_by_condition(smol, gens)
        work.take()
        again = coherence_by_condition(smol, gens)
        assert j.hits == 1 and work.take()["forward_calls"] == 0
    assert first == again


def test_resume_under_other_code_names_the_journal_and_the_commit_that_made_it(tmp_path, monkeypatch):
    """The commit is part of a journal's key, so a resume after a commit starts afresh; when a journal of the same
    command exists from other code, --resume says so in one line instead of silently recomputing everything."""
    import argparse

    import pytest

    from experiments import common
    from mlx_interp.errors import MlxInterpError

    a = argparse.Namespace(out=str(tmp_path), resume=False)
    argv = ["--model", "smollm2-135m", "--quick"]
    monkeypatch.setattr(common, "code_version", lambda: "a" * 40)
    with pytest.raises(RuntimeError):
        with common.journal("expX", a, argv) as j:
            j.put("k" * 64, 1)
            raise RuntimeError("interrupted")
    made = list((tmp_path / "expX").glob(".journal-*"))
    assert len(made) == 1 and (made[0] / "meta.json").is_file()
    a.resume = True
    with common.journal("expX", a, argv) as j:  # same code: the journal is found and replayed
        assert j.get("k" * 64) == 1
    assert not made[0].exists()  # a clean exit deletes it
    with pytest.raises(RuntimeError):  # interrupted again under commit a...
        with common.journal("expX", argparse.Namespace(out=str(tmp_path), resume=False), argv):
            raise RuntimeError("interrupted")
    monkeypatch.setattr(common, "code_version", lambda: "b" * 40)  # ...then resumed under commit b
    with pytest.raises(MlxInterpError, match=f"no journal of this command for the running code \\(b{{12}}\\); .* made by "
                                             f"commit a{{12}}: run that commit's code"):
        common.journal("expX", a, argv)
    # another command's journal is not this one's: resuming it finds nothing to name, and starts afresh
    with common.journal("expX", argparse.Namespace(out=str(tmp_path), resume=True), ["--model", "gemma-3-270m"]) as j:
        assert j.get("k" * 64) is None
    a.resume = False  # without --resume it starts afresh, as before
    with common.journal("expX", a, argv):
        pass
