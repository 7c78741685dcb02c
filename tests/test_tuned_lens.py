"""The tuned lens trains in MLX, beats the logit lens on held-out text, and round-trips through its file."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest

from mlx_interp.errors import MlxInterpError
from mlx_interp.readouts.lens import layer_logits
from mlx_interp.readouts.tuned_lens import TunedLens, train_tuned_lens
from mlx_interp.tasks.datasets import lens_texts


def test_tuned_lens_lowers_held_out_kl_and_round_trips(tmp_path, smol, gemma):
    train, val = lens_texts()
    lens = train_tuned_lens(smol, train[:24], val[:12], layers=[6, 20], steps=12, max_len=48)
    kl = lens.meta["held_out_kl"]
    for l in ("6", "20"):  # identity start = the logit lens; training on other text must bring it closer to the model
        assert kl[l]["tuned_lens"] < kl[l]["logit_lens"], (l, kl[l])
    assert lens.meta["val_tokens"] > 100 and 0.5 < lens.meta["target_top_k_mass_val"] <= 1.0
    p = lens.save(tmp_path / "lens.safetensors")
    back = TunedLens.load(p, smol)
    h = mx.array(np.random.default_rng(0).normal(size=(3, smol.width)).astype(np.float32))
    assert mx.array_equal(back.logits(smol, h, 6), lens.logits(smol, h, 6)).item()
    # the last layer's lens is the model itself; a layer without a translator is refused
    assert mx.array_equal(back.logits(smol, h, smol.n_layers - 1), layer_logits(smol, h)).item()
    with pytest.raises(MlxInterpError, match="no translator for layer 7"):
        back.logits(smol, h, 7)
    with pytest.raises(MlxInterpError, match="not gemma-3-270m"):
        TunedLens.load(p, gemma)
    with pytest.raises(MlxInterpError, match="valid: 0..28"):
        train_tuned_lens(smol, train[:2], val[:2], layers=[29], steps=1)


def test_resumed_training_equals_an_uninterrupted_one(tmp_path, smol):
    """Stopped after its first layer and resumed from the file, training yields the translators (and held-out KL) of
    one uninterrupted run; a resume with other settings, or onto a file without them, is refused."""
    train, val = lens_texts()
    kw = dict(layers=[3, 12], steps=4, batch_tokens=64, max_len=32)
    full = train_tuned_lens(smol, train[:12], val[:6], **kw)
    assert full.complete and full.meta["layers_done"] == [3, 12]
    path = tmp_path / "partial.safetensors"

    class Stop(Exception):
        pass

    def save_then_stop(lens):
        lens.save(path)
        raise Stop

    with pytest.raises(Stop):
        train_tuned_lens(smol, train[:12], val[:6], on_layer=save_then_stop, **kw)
    partial = TunedLens.load(path, smol)
    assert not partial.complete and sorted(partial.translators) == [3]
    resumed = train_tuned_lens(smol, train[:12], val[:6], resume=partial, **kw)
    assert resumed.complete
    for l in (3, 12):
        for a, b in zip(resumed.translators[l], full.translators[l]):
            assert mx.array_equal(a, b).item(), l
    assert resumed.meta["held_out_kl"] == full.meta["held_out_kl"]
    with pytest.raises(MlxInterpError, match="steps=4.*this run has 5"):
        train_tuned_lens(smol, train[:12], val[:6], resume=partial, **{**kw, "steps": 5})
    old = TunedLens(smol.name, dict(partial.translators), {k: v for k, v in partial.meta.items() if k != "sampling"})
    with pytest.raises(MlxInterpError, match="predates resumable training"):
        train_tuned_lens(smol, train[:12], val[:6], resume=old, **kw)


def test_cli_refuses_to_overwrite_or_resume_the_wrong_file(tmp_path, smol):
    from click.testing import CliRunner

    from mlx_interp.app.cli import cli

    path = tmp_path / "lens.safetensors"
    TunedLens(smol.name, {3: (mx.zeros((smol.width, smol.width)), mx.zeros((smol.width,)))}, {"complete": False}).save(path)
    res = CliRunner().invoke(cli, ["train-lens", "--model", "smollm2-135m", "--out", str(path)])
    assert isinstance(res.exception, MlxInterpError) and "partial lens (1 of 29 layers); pass --resume" in str(res.exception)
    res = CliRunner().invoke(cli, ["train-lens", "--model", "smollm2-135m", "--out", str(tmp_path / "none.safetensors"), "--resume"])
    assert isinstance(res.exception, MlxInterpError) and "does not exist; train without --resume" in str(res.exception)
    TunedLens(smol.name, {}, {"complete": True}).save(path)
    res = CliRunner().invoke(cli, ["train-lens", "--model", "smollm2-135m", "--out", str(path), "--resume"])
    assert isinstance(res.exception, MlxInterpError) and "already a complete lens" in str(res.exception)
