"""Statistics of KV caches: per-layer, per-head norms of K and V, the distance between two caches, and a signature
comparison between two sets of prompts (effect size per layer with an interval).

A cache's "signature" here is, per layer, the mean over its KV heads and token positions of the L2 norm of the
stored key (or value) vectors: one number per prompt and layer, so prompts of different lengths compare (the
study's earlier phase reported Cohen's d = 0.83 between confabulated and grounded statements). Keys are stored
after RoPE, which is a rotation: it leaves their norms unchanged, so the position of a token does not enter a norm.
"""

from __future__ import annotations

from typing import Sequence

import mlx.core as mx
import numpy as np

from ..core.kvcache import PromptCache, _kv
from ..errors import MlxInterpError
from ..measures.stats import cohens_d


def _arrays(cache: PromptCache) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per layer (K, V) as float64 [B, H, T, d], padding columns dropped (rows must then share a length)."""
    if not cache.layers:
        raise MlxInterpError("the cache has no layers")
    if len(set(cache.pads)) > 1:
        raise MlxInterpError(f"cache rows have different left padding {cache.pads}; compute statistics one row at a time")
    p = cache.pads[0] if cache.pads else 0
    return [tuple(np.array(a.astype(mx.float32), dtype=np.float64)[..., p:, :] for a in _kv(c)) for c in cache.layers]


def norms(cache: PromptCache) -> dict[str, np.ndarray]:
    """{"k": [L, H], "v": [L, H]}: mean over rows and positions of each stored vector's L2 norm."""
    kv = _arrays(cache)
    return {name: np.stack([np.linalg.norm(pair[j], axis=-1).mean(axis=(0, 2)) for pair in kv])
            for j, name in enumerate(("k", "v"))}


def distance(a: PromptCache, b: PromptCache) -> dict[str, np.ndarray]:
    """{"k": [L], "v": [L]}: ||a - b|| / ||b|| per layer (Frobenius over rows, heads, positions): 0 for the same
    cache. Needs caches of the same model and shape (compare prompts of equal length, or slice first)."""
    if a.model != b.model:
        raise MlxInterpError(f"cannot compare caches of {a.model} and {b.model}")
    A, B = _arrays(a), _arrays(b)
    if len(A) != len(B) or any(x[0].shape != y[0].shape for x, y in zip(A, B)):
        raise MlxInterpError(f"caches of shapes {A[0][0].shape} x {len(A)} layers and {B[0][0].shape} x {len(B)} layers "
                             "cannot be compared position by position; slice them to equal length")
    return {name: np.array([np.linalg.norm(x[j] - y[j]) / max(np.linalg.norm(y[j]), 1e-12) for x, y in zip(A, B)])
            for j, name in enumerate(("k", "v"))}


def signature(cache: PromptCache) -> dict[str, np.ndarray]:
    """{"k": [L], "v": [L]} for a one-row cache: the mean stored-vector norm per layer (over heads and positions)."""
    if cache.n_rows != 1:
        raise MlxInterpError(f"a signature is per prompt: give one-row caches (this one has {cache.n_rows} rows)")
    n = norms(cache)
    return {k: v.mean(axis=1) for k, v in n.items()}


def compare_signatures(a: Sequence[PromptCache], b: Sequence[PromptCache], n_boot: int = 2000, seed: int = 0) -> dict:
    """Cohen's d (set a minus set b) of the per-prompt signature, per layer for K and for V, with 95% bootstrap
    intervals; also over the mean of all layers. Each set needs at least 2 one-row caches."""
    if len(a) < 2 or len(b) < 2:
        raise MlxInterpError(f"a signature comparison needs at least 2 caches per set; got {len(a)} and {len(b)}")
    sa, sb = [signature(c) for c in a], [signature(c) for c in b]
    out = {"n_a": len(a), "n_b": len(b)}
    for key in ("k", "v"):
        xa, xb = np.stack([s[key] for s in sa]), np.stack([s[key] for s in sb])  # [n, L]
        out[key] = [cohens_d(xa[:, l], xb[:, l], n_boot=n_boot, seed=seed) for l in range(xa.shape[1])]
        out[key + "_all_layers"] = cohens_d(xa.mean(axis=1), xb.mean(axis=1), n_boot=n_boot, seed=seed)
    return out
