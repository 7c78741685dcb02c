"""Direction extraction from captured activations.

``diff_of_means``: mean activation over the positive prompts minus the mean over the
negative prompts, per layer, accumulated in float64 (as Arditi et al. do). More methods
(probes, PCA of paired differences) build on ``collect``.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .capture import Capture
from .errors import MlxInterpError
from .positions import Positions
from .trace import run
from .vectors import VectorSet


def collect(
    lm,
    prompts: Sequence[str],
    *,
    layers="all",
    positions: Positions = "last",
    batch_size: int = 8,
    chat: bool | None = False,
) -> dict[int, np.ndarray]:
    """Residual vectors [N, D] (float64) per layer, batch by batch."""
    prompts = list(prompts)
    if not prompts:
        raise MlxInterpError("prompt list is empty; direction extraction needs prompts")
    acc: dict[int, list] = {}
    for i in range(0, len(prompts), batch_size):
        tr = run(lm, prompts[i : i + batch_size], capture=Capture(layers, positions), logits="none", chat=chat)
        for layer, a in tr.resid.items():
            acc.setdefault(layer, []).append(np.array(a, dtype=np.float64))
    out = {k: np.concatenate(v, axis=0) for k, v in acc.items()}
    for k, v in out.items():
        if not np.all(np.isfinite(v)):
            raise MlxInterpError(f"captured activations at layer {k} contain NaN/inf; cannot extract a direction")
    return out


def diff_of_means(
    lm,
    positive: Sequence[str],
    negative: Sequence[str],
    *,
    layers="all",
    positions: Positions = "last",
    chat: bool | None = False,
    batch_size: int = 8,
) -> VectorSet:
    """mean(positive) - mean(negative) per layer."""
    for name, s in (("positive", positive), ("negative", negative)):
        if len(s) < 2:
            raise MlxInterpError(f"{name} set has {len(s)} prompt(s); difference of means needs at least 2 per class")
    pos = collect(lm, positive, layers=layers, positions=positions, chat=chat, batch_size=batch_size)
    neg = collect(lm, negative, layers=layers, positions=positions, chat=chat, batch_size=batch_size)
    vecs = {k: pos[k].mean(0) - neg[k].mean(0) for k in pos}
    return VectorSet(
        vecs,
        lm.name,
        "diff_of_means",
        {"positions": repr(positions), "n_pos": len(positive), "n_neg": len(negative), "chat": chat},
    )
