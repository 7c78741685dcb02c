"""Linear adapters: a source-to-target map learned by gradient descent in MLX (``mlx.optimizers``), where
``maps.fit`` solves one in closed form.

The adapter is a ``LinearMap`` of kind ``"adapter"`` (so it maps states and directions, saves and loads exactly as
the closed-form maps do). Training runs on standardized rows (each side centred on its fit mean and divided by its
RMS norm, so one learning rate suits Gemma's and Qwen's scales) and minimizes the mean squared error plus
``cosine_weight`` times (1 - cosine) between mapped and target states, and any extra ``objective`` (a behavioural
term: a function of the mapped states, the targets and the row indices, returning an MLX scalar). It is
deterministic given ``seed`` (initial weights and batch order) and reports its loss as it goes.
"""

from __future__ import annotations

from typing import Callable

import mlx.core as mx
import mlx.optimizers as optim
import numpy as np

from ..errors import MlxInterpError
from .maps import MIN_TEXTS, LinearMap, check_enough
from .pairs import Pairs

Objective = Callable[[mx.array, mx.array, mx.array], mx.array]


def _loss(W, b, x, y, rows, cosine_weight: float, objective: Objective | None):
    pred = x @ W + b
    loss = mx.mean(mx.sum((pred - y) ** 2, axis=-1))
    if cosine_weight:
        cos = mx.sum(pred * y, axis=-1) / mx.maximum(mx.linalg.norm(pred, axis=-1) * mx.linalg.norm(y, axis=-1), 1e-6)
        loss = loss + cosine_weight * mx.mean(1 - cos)
    if objective is not None:
        loss = loss + objective(pred, y, rows)
    return loss


def train_adapter(pairs: Pairs, steps: int = 300, lr: float = 1e-2, batch_size: int = 256, weight_decay: float = 1e-4,
                  cosine_weight: float = 0.0, objective: Objective | None = None, seed: int = 0,
                  progress: Callable[[int, float], None] | None = None, every: int = 50) -> LinearMap:
    """Fit a linear adapter from ``pairs.a`` to ``pairs.b`` with AdamW. ``progress(step, loss)`` is called every
    ``every`` steps and at the end with the loss over all fit rows (default: a printed line). The returned map
    records that loss curve."""
    if steps < 1 or lr <= 0 or batch_size < 1:
        raise MlxInterpError(f"steps={steps}, lr={lr}, batch_size={batch_size}: each must be positive")
    check_enough(pairs)
    A, B = np.asarray(pairs.a, dtype=np.float64), np.asarray(pairs.b, dtype=np.float64)
    ma, mb = A.mean(axis=0), B.mean(axis=0)
    sa = float(np.sqrt(np.mean(np.sum((A - ma) ** 2, axis=1)))) or 1.0
    sb = float(np.sqrt(np.mean(np.sum((B - mb) ** 2, axis=1)))) or 1.0
    x_all = mx.array(((A - ma) / sa).astype(np.float32))
    y_all = mx.array(((B - mb) / sb).astype(np.float32))
    d_a, d_b = A.shape[1], B.shape[1]
    key = mx.random.key(seed)
    params = {"W": mx.random.normal((d_a, d_b), key=key) * (1.0 / np.sqrt(d_a)) * 0.01, "b": mx.zeros((d_b,))}
    opt = optim.AdamW(learning_rate=lr, weight_decay=weight_decay)
    opt.init(params)
    rng = np.random.default_rng(seed)
    n = len(A)

    def loss_of(p, x, y, rows):
        return _loss(p["W"], p["b"], x, y, rows, cosine_weight, objective)

    grad_fn = mx.value_and_grad(loss_of)
    say = progress or (lambda s, v: print(f"  adapter step {s}/{steps}: loss {v:.4f}", flush=True))
    curve = []
    order, at = rng.permutation(n), 0
    for step in range(1, steps + 1):
        if at + batch_size > n:
            order, at = rng.permutation(n), 0
        rows = mx.array(order[at:at + batch_size])
        at += batch_size
        loss, grads = grad_fn(params, x_all[rows], y_all[rows], rows)
        params = opt.apply_gradients(grads, params)
        mx.eval(params, loss)
        if step % every == 0 or step == steps:  # the loss on every fit row, not one batch's, so the curve is smooth
            full = float(loss_of(params, x_all, y_all, mx.arange(n)))
            curve.append([step, full])
            say(step, full)
    W_std, b_std = np.array(params["W"], dtype=np.float64), np.array(params["b"], dtype=np.float64)
    W = W_std * (sb / sa)
    b = mb + b_std * sb - ma @ W
    meta = {"n_rows": n, "n_texts": int(len(np.unique(pairs.text_index))), "site": pairs.site, "align": pairs.align,
            "steps": steps, "lr": lr, "batch_size": batch_size, "weight_decay": weight_decay,
            "cosine_weight": cosine_weight, "objective": getattr(objective, "__name__", None), "seed": seed,
            "loss_curve": curve, "optimizer": "mlx.optimizers.AdamW", "min_texts": MIN_TEXTS}
    return LinearMap(W, b, "adapter", pairs.source, pairs.target, pairs.layers, meta)
