"""Measures on next-token distributions and vectors: KL, cosine, Arditi's refusal log-odds."""

from __future__ import annotations

from typing import Sequence

import mlx.core as mx
import numpy as np


def _logsoftmax64(logits: mx.array) -> np.ndarray:
    lp = np.array(logits.astype(mx.float32), dtype=np.float64)
    lp = lp - lp.max(-1, keepdims=True)
    return lp - np.log(np.exp(lp).sum(-1, keepdims=True))


def kl(p_logits: mx.array, q_logits: mx.array) -> np.ndarray:
    """KL(p || q) in nats per row, from logits (float64 softmax)."""
    lp, lq = _logsoftmax64(p_logits), _logsoftmax64(q_logits)
    return (np.exp(lp) * (lp - lq)).sum(-1)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def refusal_logodds(logits: mx.array, refusal_ids: Sequence[int]) -> np.ndarray:
    """Arditi et al.'s refusal metric per row: log P(R) - log(1 - P(R)), R = refusal-start tokens."""
    p = np.exp(_logsoftmax64(logits))
    pr = np.clip(p[:, list(refusal_ids)].sum(-1), 1e-12, 1 - 1e-12)
    return np.log(pr) - np.log1p(-pr)
