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
