"""Measures on next-token distributions and vectors: KL, cosine, Arditi's refusal log-odds, two models' agreement."""

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


def agreement(reference, lm, texts: Sequence[str], *, batch_size: int = 8) -> dict:
    """How far ``lm``'s next-token distributions are from ``reference``'s on the same texts (same tokenizer):
    mean KL(reference || lm) in nats and top-1 agreement over every position of every text (exp15's fidelity
    measure for a precision variant against the reference precision)."""
    from ..core.trace import run
    from ..errors import MlxInterpError

    if reference.tokenizer.get_vocab() != lm.tokenizer.get_vocab():
        raise MlxInterpError(f"{reference.name} and {lm.name} have different tokenizers; agreement compares two "
                             "precisions of one model")
    kls, agree = [], []
    for i in range(0, len(texts), batch_size):
        chunk = list(texts[i:i + batch_size])
        ra, rb = run(reference, chunk, logits="all"), run(lm, chunk, logits="all")
        for b, toks in enumerate(ra.tokens):
            cols = slice(ra.pads[b], ra.pads[b] + len(toks))
            lp, lq = _logsoftmax64(ra.logits[b, cols]), _logsoftmax64(rb.logits[b, cols])
            kls.extend((np.exp(lp) * (lp - lq)).sum(-1).tolist())
            agree.extend((lp.argmax(-1) == lq.argmax(-1)).tolist())
    return {"kl": float(np.mean(kls)), "kl_median": float(np.median(kls)), "top1_agreement": float(np.mean(agree)),
            "positions": len(kls), "texts": len(texts)}
