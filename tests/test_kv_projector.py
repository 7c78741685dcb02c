"""The cross-model KV-cache projector (transfer/kv_projector.py) and exp14e, on the real packaged models."""

from __future__ import annotations

import json

import mlx.core as mx
import numpy as np
import pytest

from mlx_interp.core.kvcache import _kv
from mlx_interp.core.trace import run
from mlx_interp.errors import MlxInterpError
from mlx_interp.tasks.datasets import passages
from mlx_interp.transfer.kv_projector import KVProjector, fit_projector, identity_projector, kv_states
from mlx_interp.transfer.maps import evaluate
from mlx_interp.transfer.pairs import Pairs, tokens_with_offsets

TEXT = "Hello, my name is Lyra and I live in Seattle."


def test_identity_projection_is_the_models_own_cache_on_every_family(lm):
    """Un-rotating keys to position 0, covering the receiver's tokens and rotating them back reproduces the cache
    the model computes (Gemma's sliding-window layers and their own rope bases included); a batched pass gives each
    text the states it gets alone (left padding does not shift positions)."""
    got = identity_projector(lm).project(lm, lm, TEXT)
    ids, _ = tokens_with_offsets(lm, TEXT)
    own = run(lm, [ids], logits="none", return_cache=True, batch_size=None).cache
    assert got.tokens == own.tokens and got.model == own.model and got.n_layers == lm.n_layers
    for a, b in zip(got.layers, own.layers):
        assert type(a) is type(b)
        for x, y in zip(_kv(a), _kv(b)):
            assert x.shape == y.shape
            np.testing.assert_allclose(np.array(x), np.array(y), atol=2e-5 * float(mx.abs(y).max()))
    short = tokens_with_offsets(lm, "Short text.")[0]
    both, alone = kv_states(lm, [ids, short], [1, 3]), kv_states(lm, [short], [1, 3])
    for l in (1, 3):
        for i in (0, 1):
            np.testing.assert_allclose(both[1][l][i], alone[0][l][i], atol=1e-4)


def test_fitted_projector_reads_aligned_caches_round_trips_and_refuses_other_models(smol, qwen, tmp_path):
    proj = fit_projector(smol, qwen, passages("train")[:8], val_texts=passages("val")[:4], steps=30)
    assert proj.source_layers == [round(l / 24 * 30) for l in range(24)] and len(proj.maps) == 48
    assert proj.meta["fit_rows"] > 100 and len(proj.meta["loss_curves"]) == 48 and len(proj.meta["val"]) == 48
    # held out, the keys of the first layer are predicted from the aligned source keys, and not from misaligned ones
    from mlx_interp.transfer.kv_projector import _pairs

    val = _pairs(smol, qwen, passages("val")[:4], proj.source_layers)[(0, "k")]
    good = evaluate(proj.maps[(0, "k")], val)["r2"]
    rng = np.random.default_rng(0)
    shuffled = Pairs(val.a, val.b[rng.permutation(len(val.b))], val.text_index, val.source, val.target, val.layers,
                     val.site, val.align)
    assert good == pytest.approx(proj.meta["val"]["k0"]["r2"]) and good > 0.3 > evaluate(proj.maps[(0, "k")], shuffled)["r2"]
    cache = proj.project(smol, qwen, TEXT)
    ids, _ = tokens_with_offsets(qwen, TEXT)
    assert cache.model == qwen.name and cache.tokens == [ids] and cache.n_layers == qwen.n_layers
    assert _kv(cache.layers[0])[0].shape == (1, 2, len(ids), 64)
    path = proj.save(tmp_path / "p.safetensors")
    back = KVProjector.load(path, source=smol, target=qwen)
    again = back.project(smol, qwen, TEXT)
    for a, b in zip(cache.layers, again.layers):
        for x, y in zip(_kv(a), _kv(b)):
            np.testing.assert_allclose(np.array(x), np.array(y), atol=1e-5)
    with pytest.raises(MlxInterpError, match="projects smollm2-135m@4bit-g32-mirror -> qwen2.5-coder-0.5b@4bit-g32-mirror; its target is not"):
        KVProjector.load(path, source=smol, target=smol)
    with pytest.raises(MlxInterpError, match="this projector maps .* not qwen"):
        proj.project(qwen, smol, TEXT)
    with pytest.raises(MlxInterpError, match="both smollm2-135m@4bit-g32-mirror; a projector maps between two models"):
        fit_projector(smol, smol, passages("train")[:8])
    with pytest.raises(MlxInterpError, match="non-empty text"):
        proj.project(smol, qwen, "")


def test_exp14e_tiny_run_writes_its_result_with_controls(smol, qwen, tmp_path, monkeypatch):
    """One direction on a tiny configuration (the default runs both, one file each)."""
    from experiments import exp14e_kv_projector as e

    monkeypatch.setattr(e, "QUICK", {"fit": 8, "val": 2, "persistence": 2, "retrieval": 2, "max_tokens": 4})
    monkeypatch.setattr(e, "STEPS", 10)
    paths = e.run([smol, qwen], True, str(tmp_path), both_ways=False)
    assert [p.split("/")[-1].split("_", 1)[1] for p in paths] == [f"e_{smol.name}_to_{qwen.name}.json"]
    for p, (src, tgt) in zip(paths, ((smol, qwen),)):
        doc = json.loads(open(p).read())
        r = doc["results"]
        assert r["source"]["name"] == src.name and doc["provenance"]["model"]["name"] == tgt.name
        assert len(r["projector"]["val"]) == 2 * tgt.n_layers and r["projector"]["fit_wall_s"] > 0
        for part, n in (("persistence", 2), ("retrieval", 2)):
            assert r[part]["n"] == n and set(r[part]["rates"]) == set(e.CONDITIONS)
            assert all(len(v) == n for v in r[part]["flags"].values())
            assert {"diff", "lo", "hi", "n"} <= set(r[part]["projected_minus_noise"])
    # the note's tables and the figure read the file
    import sys
    from pathlib import Path

    sys.path[:0] = [str(Path(__file__).resolve().parent.parent / "docs")]
    import make_tables
    from figures import kv_transfer

    fit_t, res_t = (make_tables.TABLES[k](tmp_path) for k in ("exp14e_fit", "exp14e"))
    assert fit_t.count("\n") == 3 and f"{smol.name} → {qwen.name}" in fit_t
    assert res_t.count("\n") == 2 + len(e.CONDITIONS) + 2 and "projected − noise" in res_t
    png = kv_transfer.fig_projector({qwen.name: json.loads(open(paths[0]).read())}, tmp_path)
    assert png.stat().st_size > 5000
    with pytest.raises(MlxInterpError, match="exactly two models; got 1"):
        e.run([smol], True, str(tmp_path))
