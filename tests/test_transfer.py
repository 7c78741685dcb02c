"""Cross-model transfer (mlx_interp.transfer): paired activations aligned by character offsets, and linear maps
fitted on some texts and scored on others, on the real models."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest

from mlx_interp import Capture, run
from mlx_interp.core.batching import encode
from mlx_interp.errors import MlxInterpError
from mlx_interp.readouts.vectors import VectorSet
from mlx_interp.tasks.datasets import refusal_prompts
from mlx_interp.transfer import maps
from mlx_interp.transfer.pairs import (Pairs, matched_layer, pair_states, paired_activations, text_states,
                                      tokens_with_offsets)

TEXT = "Hello, my name is Lyra and I live in Seattle. The capital of France is Paris."


def test_offsets_tokenize_as_the_model_reads(lm):
    ids, ends = tokens_with_offsets(lm, TEXT)
    assert ids == encode(lm, [TEXT])[0]
    assert ends[-1] == len(TEXT) and all(a <= b for a, b in zip(ends, ends[1:]))


def test_offset_pairs_read_the_same_prefix(smol, qwen, gemma):
    """Each pair's two positions have read exactly the same characters (decoded independently of the offsets)."""
    for tgt in (qwen, gemma):
        p = paired_activations(smol, tgt, [TEXT], layer=10)
        assert p.layers == (10, matched_layer(smol, 10, tgt)) and p.a.shape[1] == smol.width and p.b.shape[1] == tgt.width
        ia, ea = tokens_with_offsets(smol, TEXT)
        ib, eb = tokens_with_offsets(tgt, TEXT)
        common = sorted(set(e for e in ea if e > 0) & set(e for e in eb if e > 0))
        assert len(p.a) == len(common) >= 10
        for c in common:  # the decoded prefixes agree at every shared boundary
            ja = max(j for j, e in enumerate(ea) if e == c)
            jb = max(j for j, e in enumerate(eb) if e == c)
            da = smol.tokenizer.decode(ia[: ja + 1], skip_special_tokens=True)
            db = tgt.tokenizer.decode(ib[: jb + 1], skip_special_tokens=True)
            assert da == db == TEXT[:c], (c, da, db)


def test_states_collected_once_pair_at_any_layer_as_a_fresh_collection(smol, qwen):
    """A study collects each model's states once at every layer it needs and pairs them per model pair and layer
    (exp16); that equals collecting the one layer pair afresh, and states from other texts or layers are refused."""
    texts = [TEXT, "Water boils at 100 degrees."]
    s_all, q_all = text_states(smol, texts, [3, 10, 20]), text_states(qwen, texts, range(1, qwen.n_layers))
    for k in (3, 10, 20):
        once, fresh = pair_states(s_all, q_all, k, matched_layer(smol, k, qwen)), paired_activations(smol, qwen, texts, k)
        assert once.layers == fresh.layers and np.array_equal(once.a, fresh.a) and np.array_equal(once.b, fresh.b)
        assert np.array_equal(once.text_index, fresh.text_index)
    with pytest.raises(MlxInterpError, match="layer 5 was not collected"):
        pair_states(s_all, q_all, 5, 4)
    with pytest.raises(MlxInterpError, match="different texts"):
        pair_states(s_all, text_states(qwen, texts[:1], [4]), 3, 4)


def test_texts_of_different_lengths_pair_as_if_each_ran_alone(smol, gemma):
    """Paired states come from one batched (left-padded) pass per model; each row equals the state of its text run
    alone at the paired position, so padding never leaks into a pair (texts of 4 to 20 tokens)."""
    texts = ["Water boils.", TEXT, "Paris is the capital of France, and Rome is the capital of Italy."]
    p = paired_activations(smol, gemma, texts, layer=12)
    for lm, rows, layer, side in ((smol, p.a, 12, 0), (gemma, p.b, p.layers[1], 1)):
        at = 0
        for i, text in enumerate(texts):
            other = gemma if side == 0 else smol
            ids, ends = tokens_with_offsets(lm, text)
            common = sorted(set(e for e in ends if e > 0) & set(e for e in tokens_with_offsets(other, text)[1] if e > 0))
            alone = np.array(run(lm, [ids], capture=Capture("resid_post", layer, "all"), logits="none")["resid_post", layer][0])
            want = alone[[max(j for j, e in enumerate(ends) if e == c) for c in common]]
            assert (p.text_index[at:at + len(common)] == i).all()
            np.testing.assert_allclose(rows[at:at + len(common)], want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
            at += len(common)
        assert at == len(rows)


def test_maps_beat_mismatched_pairs_on_held_out_texts(smol, qwen, tmp_path):
    """Fitted on 48 instructions, scored on 16 others: every kind maps SmolLM2 onto Qwen better than the same kind
    fitted on pairs whose partners were shuffled; a map of a model onto itself does better still."""
    harmful, harmless = refusal_prompts("train")
    texts = harmful[:24] + harmless[:24] + harmful[100:108] + harmless[100:108]
    pairs = paired_activations(smol, qwen, texts, layer=15)
    fit_p, eval_p = pairs.split(range(48)), pairs.split(range(48, 64))
    assert len(fit_p.a) > 400 and len(eval_p.a) > 100
    rng = np.random.default_rng(0)
    shuffled = Pairs(fit_p.a, fit_p.b[rng.permutation(len(fit_p.b))], fit_p.text_index, *[getattr(fit_p, k) for k in
                     ("source", "target", "layers", "site", "align")])
    for kind in maps.KINDS:
        real = maps.evaluate(maps.fit(fit_p, kind, alpha=0.1), eval_p)
        ctrl = maps.evaluate(maps.fit(shuffled, kind, alpha=0.1), eval_p)
        assert real["r2"] > ctrl["r2"] + 0.1 and real["cosine_mean"] > ctrl["cosine_mean"] + 0.1, (kind, real, ctrl)
    # a model onto itself: near the identity (fewer rows than dimensions, so not exactly), above any cross-model map
    self_p = Pairs(fit_p.a, fit_p.a, fit_p.text_index, fit_p.source, fit_p.source, (15, 15), fit_p.site, fit_p.align)
    self_eval = Pairs(eval_p.a, eval_p.a, eval_p.text_index, fit_p.source, fit_p.source, (15, 15), fit_p.site, fit_p.align)
    cross = maps.evaluate(maps.fit(fit_p, "ridge", alpha=0.1), eval_p)["r2"]
    for kind in ("lstsq", "procrustes"):
        r = maps.evaluate(maps.fit(self_p, kind), self_eval)
        assert r["r2"] > 0.9 and r["r2"] > cross, (kind, r, cross)
    m = maps.fit(fit_p, "ridge")
    m2 = maps.LinearMap.load(m.save(tmp_path / "m.safetensors"))
    np.testing.assert_allclose(m2(eval_p.a[:3]), m(eval_p.a[:3]), rtol=1e-4, atol=1e-3)
    assert (m2.source, m2.target, m2.layers, m2.kind) == (m.source, m.target, m.layers, "ridge")
    v = eval_p.a[1] - eval_p.a[0]
    np.testing.assert_allclose(m.map_direction(v), m(eval_p.a[1]) - m(eval_p.a[0]), rtol=1e-6, atol=1e-6)


def test_transfer_refusals_are_one_line(smol, qwen, tmp_path):
    with pytest.raises(MlxInterpError, match="align='x' is not valid"):
        paired_activations(smol, qwen, [TEXT], 3, align="x")
    with pytest.raises(MlxInterpError, match="layer 40 out of range"):
        paired_activations(smol, qwen, [TEXT], 40)
    p = paired_activations(smol, qwen, [TEXT, "Water boils at 100 degrees."], 3, align="mean")
    assert p.a.shape == (2, smol.width)
    with pytest.raises(MlxInterpError, match="kind='cca' is not valid"):
        maps.fit(p, "cca")
    with pytest.raises(MlxInterpError, match="at least 8 texts; these come from 2"):
        maps.fit(p, "ridge")
    p8 = Pairs(np.repeat(p.a, 4, axis=0), np.repeat(p.b, 4, axis=0), np.arange(8), p.source, p.target, p.layers,
               p.site, p.align)
    assert maps.fit(p8, "lstsq").meta["underdetermined"] is True
    m = maps.fit(p8, "ridge")
    with pytest.raises(MlxInterpError, match="width 896 cannot go through a map from smollm2"):
        m(np.zeros(896))
    path = m.save(tmp_path / "m.safetensors")
    with pytest.raises(MlxInterpError, match="its target is not gemma"):
        maps.LinearMap.load(path, source=smol, target="gemma-3-270m@4bit-g32-mirror")
    assert maps.LinearMap.load(path, source=smol, target=qwen).target == qwen.name
    vs = VectorSet({3: np.ones(smol.width, np.float32)}, smol.name, "diff_of_means")
    assert m.map_vectors(vs)[p.layers[1]].shape == (qwen.width,)
    with pytest.raises(MlxInterpError, match="fitted at source layer 3; the vectors have layers \\[4\\]"):
        m.map_vectors(VectorSet({4: np.ones(smol.width, np.float32)}, smol.name, "diff_of_means"))
    with pytest.raises(MlxInterpError, match="these vectors come from qwen"):
        m.map_vectors(VectorSet({3: np.ones(smol.width, np.float32)}, qwen.name, "diff_of_means"))
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"nope")
    with pytest.raises(MlxInterpError, match="not a readable linear map"):
        maps.LinearMap.load(bad)


def test_adapter_learns_a_held_out_map_deterministically_and_round_trips(smol, qwen, tmp_path):
    """An MLX-trained linear adapter (AdamW) from SmolLM2 to Qwen: its loss falls, it scores on held-out texts near
    the closed-form ridge map and far above an adapter trained on shuffled partners, the same seed gives the same
    weights, it saves and loads as a map with its training record, and a behavioural objective shapes what it learns."""
    from mlx_interp.transfer import adapters

    harmful, harmless = refusal_prompts("train")
    texts = harmful[:16] + harmless[:16] + harmful[100:104] + harmless[100:104]
    pairs = paired_activations(smol, qwen, texts, layer=15)
    fit_p, eval_p = pairs.split(range(32)), pairs.split(range(32, 40))
    seen = []
    a1 = adapters.train_adapter(fit_p, steps=150, seed=1, progress=lambda s, v: seen.append((s, v)))
    assert [s for s, _ in seen] == [50, 100, 150] and seen[-1][1] < seen[0][1]
    a2 = adapters.train_adapter(fit_p, steps=150, seed=1, progress=lambda s, v: None)
    np.testing.assert_array_equal(a1.W, a2.W)
    a3 = adapters.train_adapter(fit_p, steps=150, seed=2, progress=lambda s, v: None)
    assert not np.array_equal(a1.W, a3.W)
    rng = np.random.default_rng(0)
    shuffled = Pairs(fit_p.a, fit_p.b[rng.permutation(len(fit_p.b))], fit_p.text_index, fit_p.source, fit_p.target,
                     fit_p.layers, fit_p.site, fit_p.align)
    real = maps.evaluate(a1, eval_p)
    ctrl = maps.evaluate(adapters.train_adapter(shuffled, steps=150, seed=1, progress=lambda s, v: None), eval_p)
    ridge = maps.evaluate(maps.fit(fit_p, "ridge", alpha=0.1), eval_p)
    assert real["r2"] > ctrl["r2"] + 0.1, (real, ctrl)
    assert real["r2"] > ridge["r2"] - 0.15, (real, ridge)
    back = maps.LinearMap.load(a1.save(tmp_path / "adapter.safetensors"), source=smol, target=qwen)
    assert back.kind == "adapter" and back.meta["seed"] == 1 and len(back.meta["loss_curve"]) == 3
    np.testing.assert_allclose(back(eval_p.a[:2]), a1(eval_p.a[:2]), rtol=1e-4, atol=1e-3)
    with pytest.raises(MlxInterpError, match="its source is not gemma"):
        maps.LinearMap.load(tmp_path / "adapter.safetensors", source="gemma-3-270m@4bit-g32-mirror")
    # a behavioural objective enters the loss: one that flattens the mapped states along the targets' first principal
    # direction leaves them far flatter there than the plain adapter's, and the map records which objective it had
    top = np.linalg.svd(fit_p.b - fit_p.b.mean(axis=0), full_matrices=False)[2][0]
    along = mx.array(top.astype(np.float32))

    def flatten_along_top(pred, y, rows):
        return 10.0 * mx.mean((pred @ along) ** 2)

    a4 = adapters.train_adapter(fit_p, steps=150, seed=1, objective=flatten_along_top, progress=lambda s, v: None)
    spread = lambda m: float(np.std(m(eval_p.a) @ top))  # noqa: E731
    assert spread(a4) < 0.3 * spread(a1), (spread(a4), spread(a1))
    assert a4.meta["objective"] == "flatten_along_top" and a1.meta["objective"] is None
