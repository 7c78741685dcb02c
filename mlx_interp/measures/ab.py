"""CAA's A/B metric: how much of the answer-letter probability goes to the behaviour-matching letter."""

from __future__ import annotations

from typing import Sequence

import mlx.core as mx
import numpy as np

from ..core.batching import DEFAULT_CHAT, format_prompt
from ..errors import MlxInterpError


def ab_tokens(lm, question: str, answer: str, chat: bool = DEFAULT_CHAT) -> list[int]:
    """Token ids of an A/B item answered with ``answer`` (e.g. "(" or "(A)").

    ``chat=True`` (instruct models): the chat-formatted question, then the answer as the assistant's
    first words (CAA's ``[INST] q [/INST] (A)``). Otherwise: ``question\\n\\nAnswer: (A)``.
    """
    if chat:
        return lm.tokenizer.encode(format_prompt(lm, question, True) + answer, add_special_tokens=False)
    return lm.tokenizer.encode(question + "\n\nAnswer: " + answer, add_special_tokens=True)


def ab_prompts(lm, questions: Sequence[str], chat: bool = DEFAULT_CHAT) -> list[list[int]]:
    """The token lists ``ab_scores`` runs: each A/B item up to the "(" before the answer letter."""
    return [ab_tokens(lm, q, "(", chat) for q in questions]


def ab_scores(lm, questions: Sequence[str], matching: Sequence[str], *, interventions=(), chat: bool = DEFAULT_CHAT,
              resume=None) -> np.ndarray:
    """CAA's A/B metric per item: p(matching letter) / (p(A) + p(B)) at the token after "(".

    ``questions`` are full A/B items (question with both options); the prompt is ``ab_tokens(q, "(")``.
    ``resume=(base, k)`` is passed to ``run`` (base: a run of ``ab_prompts`` capturing ``resid_pre k`` everywhere).
    """
    from ..core.trace import run

    if len(questions) != len(matching) or not questions:
        raise MlxInterpError(f"need one matching letter per question; got {len(questions)} questions, {len(matching)} letters")
    _check_letters(matching)
    logits = run(lm, ab_prompts(lm, questions, chat), interventions=interventions, resume=resume).logits
    return ab_from_logits(lm, logits, matching)


def _check_letters(matching: Sequence[str]) -> None:
    bad = [m for m in matching if m not in ("A", "B")]
    if bad:
        raise MlxInterpError(f"matching letters must be 'A' or 'B'; got {bad[0]!r}")


def ab_from_logits(lm, logits, matching: Sequence[str]) -> np.ndarray:
    """The A/B metric from last-position logits (B, V) of ``ab_prompts``: reuse a pass already run."""
    if logits.ndim != 2 or logits.shape[0] != len(matching):
        raise MlxInterpError(f"need last-position logits of shape (n_items={len(matching)}, vocab); got {tuple(logits.shape)}")
    _check_letters(matching)
    ids = {c: lm.tokenizer.encode(c, add_special_tokens=False)[0] for c in "AB"}
    lp = np.array(logits.astype(mx.float32), dtype=np.float64)
    pa, pb = np.exp(lp[:, ids["A"]] - lp.max(-1)), np.exp(lp[:, ids["B"]] - lp.max(-1))
    match = np.where(np.array(matching) == "A", pa, pb)
    return match / (pa + pb)
