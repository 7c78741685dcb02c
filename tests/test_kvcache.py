"""KV caches as values on the three real models: continue, save/load, slice, join, copy, refuse."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest

from mlx_interp import Add, Capture, PromptCache
from mlx_interp.core.generate import generate
from mlx_interp.core.trace import run
from mlx_interp.errors import MlxInterpError

PREFIX = "The capital of France is Paris. The capital of Italy is"
SUFFIX = " Rome. The capital of Spain is"


def _split(lm):
    ids = lm.tokenizer.encode(PREFIX + SUFFIX)
    n = len(lm.tokenizer.encode(PREFIX))
    return ids[:n], ids[n:]


def test_continuing_a_cache_equals_one_pass_over_both(lm):
    """run(prefix, return_cache) then run(suffix, cache=...) gives the logits and steered captures of one pass
    over prefix + suffix; positions count from the first cached token."""
    pre, suf = _split(lm)
    full = run(lm, [pre + suf], logits="all", capture=Capture("resid_post", 3, "last"),
               interventions=[Add(np.ones(lm.width), layers=2, positions=-1)])
    first = run(lm, [pre], return_cache=True)
    assert first.cache.tokens == [pre] and first.cache.model == lm.name
    cont = run(lm, [suf], cache=first.cache, logits="all", capture=Capture("resid_post", 3, "last"),
               interventions=[Add(np.ones(lm.width), layers=2, positions=-1)])
    assert cont.tokens == [pre + suf] and cont.start == len(pre)
    np.testing.assert_allclose(np.array(cont.logits[0]), np.array(full.logits[0, len(pre):]), atol=2e-3, rtol=1e-4)
    np.testing.assert_allclose(np.array(cont["resid_post", 3]), np.array(full["resid_post", 3]), atol=1e-3, rtol=1e-4)
    # greedy generation from the cache continues exactly like generation from the whole prompt
    a = generate(lm, [suf], cache=first.cache, max_tokens=8)
    b = generate(lm, [pre + suf], max_tokens=8)
    assert a[0].tokens == b[0].tokens and a[0].prompt_tokens == pre + suf
    # using the cache never changed it
    assert first.cache.tokens == [pre] and first.cache.columns == len(pre)


def test_one_row_cache_is_shared_by_every_prompt_and_generation_returns_its_cache(smol):
    pre, _ = _split(smol)
    c = run(smol, [pre], return_cache=True).cache
    sufs = [smol.tokenizer.encode(s, add_special_tokens=False) for s in (" Rome. And", " Milan. And")]
    out = run(smol, sufs, cache=c)
    for b, s in enumerate(sufs):
        np.testing.assert_allclose(np.array(out.logits[b]), np.array(run(smol, [pre + s]).logits[0]), atol=2e-3, rtol=1e-4)
    g = generate(smol, sufs, cache=c, max_tokens=4, stop_at_eos=False, return_cache=True)
    assert g.cache.n_rows == 2 and g.cache.tokens[0][:len(pre) + len(sufs[0])] == pre + sufs[0]
    assert g.cache.columns == len(pre) + len(sufs[0]) + 3  # 4 tokens generated, 3 fed back


def test_save_load_slice_join_copy(tmp_path, lm):
    pre, suf = _split(lm)
    c = run(lm, [pre + suf], return_cache=True).cache
    p = c.save(tmp_path / "c.safetensors")
    d = PromptCache.load(p, lm)
    assert d.tokens == c.tokens and d.model == lm.name and d.n_layers == lm.n_layers
    for x, y in zip(c.layers, d.layers):
        assert mx.array_equal(x.keys[..., :c.columns, :], y.keys[..., :d.columns, :]).item()
    n = len(pre)
    head, tail = c.slice(positions=slice(0, n)), c.slice(positions=slice(n, None))
    assert head.start == 0 and tail.start == n and head.tokens == [pre]
    joined = head.concat(tail)
    for x, y in zip(c.layers, joined.layers):
        assert mx.array_equal(x.keys[..., :c.columns, :], y.keys[..., :joined.columns, :]).item()
        assert mx.array_equal(x.values[..., :c.columns, :], y.values[..., :joined.columns, :]).item()
    # a prefix slice is a cache of the prefix: continuing from it equals continuing from the prefix's own cache
    a = run(lm, [suf], cache=head).logits
    b = run(lm, [suf], cache=run(lm, [pre], return_cache=True).cache).logits
    np.testing.assert_allclose(np.array(a), np.array(b), atol=1e-3, rtol=1e-4)
    some = c.slice(layers=range(2, 5))
    assert some.n_layers == 3
    with pytest.raises(MlxInterpError, match="holds 3 layers"):
        run(lm, [suf], cache=some)
    cp = c.copy()
    run(lm, [suf], cache=cp)
    assert cp.columns == c.columns and mx.array_equal(cp.layers[0].keys, c.layers[0].keys).item()


def test_stacked_caches_continue_each_row_as_if_alone(lm):
    """PromptCache.stack pads caches of different lengths into one batch: each row's logits and greedy tokens equal
    continuing its own cache alone (so a study's transplant conditions can share one decode)."""
    texts = [PREFIX, "Once upon a time", "The capital of France is Paris. The capital of Italy is Rome. The capital of"]
    caches = [run(lm, [lm.tokenizer.encode(t)], return_cache=True).cache for t in texts]
    suf = lm.tokenizer.encode(" Spain, and then", add_special_tokens=False)
    stacked = PromptCache.stack(caches)
    longest = max(c.columns for c in caches)
    assert stacked.n_rows == 3 and stacked.pads == [longest - c.columns for c in caches] and stacked.columns == longest
    both = run(lm, [suf] * 3, cache=stacked, logits="all")
    gens = generate(lm, [suf] * 3, cache=stacked, max_tokens=4, stop_at_eos=False)
    for b, c in enumerate(caches):
        alone = run(lm, [suf], cache=c, logits="all")
        np.testing.assert_allclose(np.array(both.logits[b]), np.array(alone.logits[0]), atol=2e-3, rtol=1e-4)
        assert gens[b].tokens == generate(lm, [suf], cache=c, max_tokens=4, stop_at_eos=False)[0].tokens
    assert [c.columns for c in caches] == [len(c.tokens[0]) for c in caches]  # stacking changed none of them
    with pytest.raises(MlxInterpError, match="start at position 0"):
        PromptCache.stack([caches[0], caches[2].slice(positions=slice(1, None))])
    with pytest.raises(MlxInterpError, match="non-empty list"):
        PromptCache.stack([])


def test_cache_refusals_are_one_line(tmp_path, smol, qwen):
    pre, suf = _split(smol)
    c = run(smol, [pre], return_cache=True).cache
    with pytest.raises(MlxInterpError, match="is from smollm2-135m@4bit-g32-mirror, not qwen2.5-coder-0.5b"):
        run(qwen, [suf], cache=c)
    other = PromptCache(c.layers, "smollm2-135m@8bit-g32-mirror", c.tokens)
    with pytest.raises(MlxInterpError, match="8bit-g32-mirror, not smollm2-135m@4bit-g32-mirror"):
        run(smol, [suf], cache=other)
    with pytest.raises(MlxInterpError, match="starts at position 2"):
        run(smol, [suf], cache=c.slice(positions=slice(2, None)))
    with pytest.raises(MlxInterpError, match="equal length"):
        run(smol, [suf, suf[:1]], cache=c)
    with pytest.raises(MlxInterpError, match="batch_size=None"):
        run(smol, [pre] * 3, return_cache=True, batch_size=2)
    lying = PromptCache(c.layers, c.model, [pre + [1, 2]])
    p = lying.save(tmp_path / "lying.safetensors")
    with pytest.raises(MlxInterpError, match="claims 1 x"):
        PromptCache.load(p)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file at all")
    with pytest.raises(MlxInterpError, match="not a readable KV-cache file"):
        PromptCache.load(bad)
    with pytest.raises(MlxInterpError, match="does not exist"):
        PromptCache.load(tmp_path / "missing.safetensors")
