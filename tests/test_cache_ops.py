"""Cache transplants (core.cache_ops) and cache statistics (readouts.cache_stats) on the three real models."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest
from mlx_lm.models.cache import KVCache

from mlx_interp import Capture, PromptCache
from mlx_interp.core.cache_ops import move, noise_like, place, replace_span, splice
from mlx_interp.core.kvcache import _kv
from mlx_interp.core.trace import run
from mlx_interp.errors import MlxInterpError
from mlx_interp.readouts import cache_stats

SOURCE = "Hello, my name is Lyra and I live in Seattle."
TARGET = "The capital of France is Paris. The capital of Italy is Rome."
QUESTION = " What is your name?"


class _AtPosition(KVCache):
    """The oracle: a cache whose first token sits at position ``start`` with nothing stored before it, so the
    model's own forward computes the keys at the new positions (RoPE is relative: the hidden states are those of
    the prompt at position 0, the keys carry the new rotation)."""

    def __init__(self, start: int):
        super().__init__()
        self.offset = start

    def update_and_fetch(self, keys, values):
        self.keys, self.values = keys, values
        self.offset += keys.shape[2]
        return keys, values

    def make_mask(self, N, return_array=False, window_size=None):
        return "causal" if N > 1 else None


def _ids(lm, text: str) -> list[int]:
    """Token ids of a continuation (no BOS: it follows a cache)."""
    return lm.tokenizer.encode(text, add_special_tokens=False)


def _f32(a) -> np.ndarray:
    return np.array(a.astype(mx.float32))


def test_moved_cache_equals_the_cache_computed_at_the_new_positions(lm):
    """Every layer (Gemma's sliding-window ones included): keys re-rotated to a new start equal the keys the model
    computes there; values are unchanged; moving back restores the original."""
    toks = lm.tokenizer.encode(SOURCE)
    c = run(lm, [toks], return_cache=True).cache
    for start in (5, 200):
        oracle = [_AtPosition(start) for _ in range(lm.n_layers)]
        lm.model(mx.array([toks]), cache=oracle)
        m = move(lm, c, start)
        assert m.start == start and m.tokens == c.tokens
        for i in range(lm.n_layers):
            k, v = _kv(m.layers[i])
            ko = _f32(oracle[i].keys)
            assert np.abs(_f32(k) - ko).max() < 1e-4 * np.abs(ko).max(), (lm.name, start, i)
            vo = _f32(oracle[i].values)  # float32 rounding of the rotations compounds with depth: relative to the largest
            assert np.abs(_f32(v) - vo).max() < 1e-3 * np.abs(vo).max(), (lm.name, start, i)
            if start == 5:
                assert np.abs(_f32(k) - _f32(_kv(c.layers[i])[0])).max() > 1e-3  # the move did rotate
        back = move(lm, m, 0)
        for a, b in zip(back.layers, c.layers):
            np.testing.assert_allclose(_f32(_kv(a)[0]), _f32(_kv(b)[0]), atol=1e-4 * np.abs(_f32(_kv(b)[0])).max())


def test_identity_transplants_reproduce_the_baseline(lm):
    """A span replaced by the target's own span moved away and back, a splice of a cache with itself, and a source
    placed after nothing (a prefix) each continue exactly like the untouched cache."""
    t = run(lm, [TARGET], return_cache=True).cache
    n = len(t.tokens[0])
    q = _ids(lm, QUESTION)
    base = _f32(run(lm, [q], cache=t).logits)
    span = move(lm, move(lm, t.slice(positions=slice(3, 8)), 0), 40)  # rotated away, then placed back at 3
    for c in (replace_span(lm, t, span, 3), splice(t, t), place(lm, t)):
        assert c.columns == n
        np.testing.assert_allclose(_f32(run(lm, [q], cache=c).logits), base, atol=2e-3 * np.abs(base).max())


def test_transplants_change_what_they_should_and_nothing_else(lm):
    """A splice takes the source exactly where asked (layers, K or V, heads) and the target elsewhere; a placed
    source sits after the target's prefix; a replaced span changes the continuation."""
    t = run(lm, [TARGET], return_cache=True).cache
    n = len(t.tokens[0])
    src_toks = lm.tokenizer.encode("Zephyr is the president of Mars and lives on Olympus.")
    s = run(lm, [src_toks[:n] if len(src_toks) >= n else src_toks + src_toks[:n - len(src_toks)]], return_cache=True).cache
    H = _kv(t.layers[0])[0].shape[1]
    x = splice(t, s, layers=range(2, 4), kv="k", heads=[0])
    for i in range(lm.n_layers):
        (kx, vx), (kt, vt), (ks, _) = _kv(x.layers[i]), _kv(t.layers[i]), _kv(s.layers[i])
        assert mx.array_equal(vx, vt).item()
        for h in range(H):
            want = ks if (i in (2, 3) and h == 0) else kt
            assert mx.array_equal(kx[:, h], want[:, h]).item(), (i, h)
    both = splice(splice(t, s, kv="k"), s, kv="v")
    for a, b in zip(both.layers, s.layers):
        assert mx.array_equal(_kv(a)[0], _kv(b)[0]).item() and mx.array_equal(_kv(a)[1], _kv(b)[1]).item()
    pre = run(lm, ["Note:"], return_cache=True).cache
    placed = place(lm, s, before=pre)
    assert placed.tokens == [pre.tokens[0] + s.tokens[0]] and placed.start == 0
    ks0 = _f32(_kv(move(lm, s, len(pre.tokens[0])).layers[1])[0])
    np.testing.assert_array_equal(_f32(_kv(placed.layers[1])[0])[..., len(pre.tokens[0]):, :], ks0)
    q = _ids(lm, QUESTION)
    base = _f32(run(lm, [q], cache=t).logits)
    other = _f32(run(lm, [q], cache=replace_span(lm, t, s.slice(positions=slice(0, 6)), 2)).logits)
    assert np.abs(other - base).max() > 1e-2


def test_noise_control_and_cache_statistics(smol):
    """Matched-norm noise keeps every stored vector's norm; per-head K/V norms agree with the k/v sites a capture
    reads during the forward pass (the same tensors, seen through the hook, not through the cache object);
    distances and signatures can tell caches apart."""
    c = run(smol, [SOURCE], return_cache=True).cache
    z = noise_like(c, seed=1)
    for a, b in zip(c.layers, z.layers):
        for x, y in zip(_kv(a), _kv(b)):
            np.testing.assert_allclose(np.linalg.norm(_f32(y), axis=-1), np.linalg.norm(_f32(x), axis=-1), rtol=1e-4)
            assert np.abs(_f32(x) - _f32(y)).max() > 1e-2
    n = cache_stats.norms(c)
    tr = run(smol, [SOURCE], capture=[Capture("k", 4, "all"), Capture("v", 4, "all")])
    for kind in ("k", "v"):
        a = _f32(tr[kind, 4][0])  # [T, H, d] as the site stores them
        want = np.linalg.norm(a, axis=-1).mean(axis=0)  # per head, averaged over positions
        np.testing.assert_allclose(n[kind][4], want, rtol=1e-4)
    d0, dz = cache_stats.distance(c, c), cache_stats.distance(z, c)
    assert np.all(d0["k"] == 0) and np.all(dz["k"] > 0.5) and np.all(dz["v"] > 0.5)
    a = [run(smol, [p], return_cache=True).cache for p in ("The sky is blue.", "Water is wet.", "Fire is hot today.")]
    b = [run(smol, [p], return_cache=True).cache for p in ("Zorp glim vex.", "Qua nix blorb tam.", "Flee flu flo fly.")]
    same = cache_stats.compare_signatures(a, a, n_boot=200)
    diff = cache_stats.compare_signatures(a, b, n_boot=200)
    assert same["k_all_layers"]["d"] == 0 and len(diff["k"]) == smol.n_layers
    assert abs(diff["k_all_layers"]["d"]) > 0 and diff["n_a"] == 3


def test_cache_transplant_refusals_are_one_line(smol, gemma, qwen, tmp_path):
    c = run(smol, [SOURCE], return_cache=True).cache
    cq = run(qwen, [SOURCE], return_cache=True).cache
    with pytest.raises(MlxInterpError, match="without a projector"):
        splice(c, cq)
    with pytest.raises(MlxInterpError, match="layer 30 is not valid"):
        splice(c, c, layers=[30])
    with pytest.raises(MlxInterpError, match="kv='q' is not valid"):
        splice(c, c, kv="q")
    with pytest.raises(MlxInterpError, match=r"heads=\[3\] is not valid"):
        splice(c, c, heads=[3])
    with pytest.raises(MlxInterpError, match="beyond smollm2-135m.*context of 8192"):
        move(smol, c, 8190)
    with pytest.raises(MlxInterpError, match="start=-1 is not a valid position"):
        move(smol, c, -1)
    with pytest.raises(MlxInterpError, match="is from qwen2.5-coder-0.5b"):
        move(smol, cq, 2)
    with pytest.raises(MlxInterpError, match="does not fit a cache"):
        replace_span(smol, c, c, 1)
    with pytest.raises(MlxInterpError, match="empty cache"):
        noise_like(PromptCache([], c.model, c.tokens))
    cg = run(gemma, [SOURCE], return_cache=True).cache
    window = cg.layers[0].max_size
    long = run(gemma, [[2] + [1123] * (window - 3)], return_cache=True).cache  # the window almost full
    with pytest.raises(MlxInterpError, match="do not fit a sliding-window cache"):
        place(gemma, cg, before=long)
    with pytest.raises(MlxInterpError, match="cannot be compared position by position"):
        cache_stats.distance(c, run(smol, ["Hi."], return_cache=True).cache)
    with pytest.raises(MlxInterpError, match="at least 2 caches per set"):
        cache_stats.compare_signatures([c], [c, c])


def test_exp14_end_to_end_on_a_tiny_configuration(smol, tmp_path):
    """exp14's signatures, transplant conditions and cross-topic classes on a handful of items: the source's own
    cache reproduces the text exactly, every condition has every item, and the classes partition the answers."""
    from experiments import exp14_kv_transfer as e

    items = e.load_items(None)
    res = e.run_study(smol, items, {"persistence": 2, "retrieval": 2, "signatures": 3, "cross_topic": 2, "max_tokens": 6,
                                    "filler": 8})
    assert res["config"]["filler_tokens"] == 8
    assert res["signatures"]["n_a"] == 3 and len(res["signatures"]["k"]) == smol.n_layers
    for part in ("persistence", "retrieval"):
        r = res[part]
        assert r["identity_mismatches"] == 0 and r["n"] == 2
        assert r["flags"]["same_cache"] == r["flags"]["text"]
        names = set(r["flags"])
        assert {"none", "noise", "other", "neutral", "pos_middle", "pos_end_unrotated", "k_only", "v_only", "head_0",
                "layers_0_8", "layers_22_30"} <= names
        assert all(r["rates"][n]["n"] == 2 for n in names)
    assert set(res["retrieval"]["by_kind"]) == {"known", "counterfactual"}
    for name, cls in res["cross_topic"]["classes"].items():
        assert sum(c["k"] for c in cls.values()) == 2, name
    # its kept file feeds the figures and the note's tables
    import sys
    from pathlib import Path

    from figures import make_all
    from mlx_interp.runs.results import save_result

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "docs"))
    import make_tables

    out = Path(tmp_path)
    save_result("exp14_kv_transfer", res, lm=smol, config={"quick": True}, out_dir=out)
    names = {p.name for p in make_all.main(["--results", str(out), "--out", str(out / "figs")])}
    assert {"exp14_signatures.png", "exp14_conditions.png", "exp14_layer_windows.png", "exp14_position.png",
            "exp14_cross_topic.png"} <= names
    text = make_tables.render("<!-- table: exp14_transfer -->\n<!-- /table -->", out)
    r = res["persistence"]["rates"]["noise"]
    assert f"| {smol.name} | matched-norm noise | {r['p']:.2f} [{r['lo']:.2f}, {r['hi']:.2f}] ({r['k']}/2) |" in text
