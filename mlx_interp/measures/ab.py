"""CAA's A/B metric, read at the tokens the model itself would emit for each answer.

An A/B item is a question with two options; the model answers ``(A)`` or ``(B)``. CAA scores
p(matching letter) / (p(A) + p(B)) at the answer position. Which token is "the letter" depends on
the tokenizer and the context: SmolLM2 writes ``(`` then ``A``; Qwen2.5 writes ``(A`` as one token
after a newline; Gemma's base prompt merges the space before ``(``. So, per item, we tokenize the
whole answers ``(A)`` and ``(B)`` in context, take their longest common prefix as the prompt and
score the first tokens where they differ (``ab_items``). Scoring the letter after a forced ``(`` on
Qwen read tokens the model does not emit (median mass 0.10 on them; issue 14).

Every score comes with the probability mass on the two scored tokens (``ABResult.mass``): a metric that
covers little of the distribution measures something else, so ``ABResult.check`` refuses (one line) when
the median mass is below ``MASS_FLOOR``. ``ABResult.summary`` also reports the letter prior: how often
p(A) > p(B), whatever the behaviour.

CAA steers "from the end of the instruction on" (its ``add_vector_from_position``: the last token of
``[/INST]`` and every later one). ``ab_prefix`` runs each item's prompt up to that token once, unsteered, and
keeps its KV cache; ``ab_scores(..., prefix=)`` then runs only the few tokens from the instruction's end on
under the interventions, so a sweep of many (layer, multiplier) conditions costs a few tokens per item each,
not the whole prompt.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import mlx.core as mx
import numpy as np

from ..core.batching import DEFAULT_CHAT, format_prompt
from ..errors import MlxInterpError
from .stats import bootstrap_ci, rate

#: the median probability mass the two scored tokens must carry on unsteered items for the score to mean anything
MASS_FLOOR = 0.2


def ab_tokens(lm, question: str, answer: str, chat: bool = DEFAULT_CHAT) -> list[int]:
    """Token ids of an A/B item answered with ``answer`` (e.g. "(A)").

    ``chat=True`` (instruct models): the chat-formatted question, then the answer as the assistant's
    first words (CAA's ``[INST] q [/INST] (A)``). Otherwise: ``question\\n\\nAnswer: (A)``.
    """
    if chat:
        return lm.tokenizer.encode(format_prompt(lm, question, True) + answer, add_special_tokens=False)
    return lm.tokenizer.encode(question + "\n\nAnswer: " + answer, add_special_tokens=True)


@dataclass
class ABItems:
    """Per item: the prompt (tokens both answers share) and the token each answer continues it with."""

    prompts: list[list[int]]
    a_ids: list[int]
    b_ids: list[int]
    letter_offsets: list[int]  # position of the scored token in the full answer "(A)", counted from its end (<0)
    instruction_ends: list[int] = field(default_factory=list)  # per prompt: index of the instruction's last token

    def token_strings(self, lm) -> set[tuple[str, str]]:
        return {(lm.tokenizer.decode([a]), lm.tokenizer.decode([b])) for a, b in zip(self.a_ids, self.b_ids)}


def ab_items(lm, questions: Sequence[str], chat: bool = DEFAULT_CHAT) -> ABItems:
    """Tokenize each question answered "(A)" and "(B)"; the prompt is their common prefix, the scored
    tokens the first ones that differ. ``instruction_ends``: the last token the prompt shares with the
    instruction alone (chat: the formatted question with its assistant header; base: "question\\n\\nAnswer:"),
    where CAA's steering starts."""
    if not questions:
        raise MlxInterpError("no A/B questions given")
    prompts, a_ids, b_ids, offs, ends = [], [], [], [], []
    for q in questions:
        fa, fb = ab_tokens(lm, q, "(A)", chat), ab_tokens(lm, q, "(B)", chat)
        n = 0
        while n < min(len(fa), len(fb)) and fa[n] == fb[n]:
            n += 1
        if n == len(fa) or n == len(fb):
            raise MlxInterpError(f"answers (A) and (B) tokenize identically for {lm.name}; cannot score the letter")
        prompts.append(fa[:n])
        a_ids.append(fa[n])
        b_ids.append(fb[n])
        offs.append(n - len(fa))
        ends.append(_shared(fa[:n], _instruction(lm, q, chat)) - 1)
    return ABItems(prompts, a_ids, b_ids, offs, ends)


def _instruction(lm, question: str, chat: bool) -> list[int]:
    """The instruction's tokens alone: what ``ab_tokens`` puts before the answer, without it."""
    if chat:
        return lm.tokenizer.encode(format_prompt(lm, question, True), add_special_tokens=False)
    return lm.tokenizer.encode(question + "\n\nAnswer:", add_special_tokens=True)


def _shared(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


@dataclass
class ABPrefix:
    """Each item's prompt before its instruction's last token, run once unsteered: groups of items whose
    remaining tokens (the steered ones) have the same length, each with its KV cache."""

    groups: list[tuple[list[int], Any]]  # (item indices, PromptCache of their prefixes)
    tails: list[list[int]]  # per item: the tokens from the instruction's last one on
    n_items: int


def ab_prefix(lm, items: ABItems) -> ABPrefix:
    """Run every item's prompt up to (not including) its instruction's last token and keep the caches: the
    unsteered part of CAA's steered pass, shared by every condition of a sweep."""
    from ..core.trace import run

    if len(items.instruction_ends) != len(items.prompts):
        raise MlxInterpError("these A/B items carry no instruction ends; build them with ab_items")
    for p, e in zip(items.prompts, items.instruction_ends):
        if e < 1:
            raise MlxInterpError(f"an A/B prompt's instruction ends at token {e}: nothing before it to cache "
                                 "(the question does not tokenize as a prefix of the prompt)")
    tails = [p[e:] for p, e in zip(items.prompts, items.instruction_ends)]
    by_len: dict[int, list[int]] = {}
    for i, t in enumerate(tails):
        by_len.setdefault(len(t), []).append(i)
    groups = []
    for _, idx in sorted(by_len.items()):
        tr = run(lm, [items.prompts[i][:items.instruction_ends[i]] for i in idx], logits="none", return_cache=True,
                 batch_size=None)
        groups.append((idx, tr.cache))
    return ABPrefix(groups, tails, len(items.prompts))


def ab_prompts(lm, questions: Sequence[str], chat: bool = DEFAULT_CHAT) -> list[list[int]]:
    """The token lists ``ab_scores`` runs: each item up to the token where the answers "(A)" and "(B)" part."""
    return ab_items(lm, questions, chat).prompts


@dataclass
class ABResult:
    """Per-item CAA scores with the probabilities they come from."""

    score: np.ndarray  # p(matching) / (p(A) + p(B))
    mass: np.ndarray  # p(A) + p(B): how much of the next-token distribution the metric reads
    p_a: np.ndarray
    p_b: np.ndarray

    def mean(self) -> float:
        return float(self.score.mean())

    def summary(self) -> dict:
        """Mean score with a bootstrap interval, the mass it covers, and the letter prior (p(A) > p(B))."""
        n = len(self.score)
        lo, hi = bootstrap_ci(self.score) if n >= 2 else (float("nan"), float("nan"))
        return {"score": self.mean(), "score_lo": lo, "score_hi": hi, "n": n,
                "mass_median": float(np.median(self.mass)), "mass_min": float(self.mass.min()),
                "prefers_a": rate(self.p_a > self.p_b).as_dict()}

    def check(self, floor: float = MASS_FLOOR, what: str = "the A/B metric") -> "ABResult":
        """One-line error when the scored tokens carry too little probability to mean anything."""
        m = float(np.median(self.mass))
        if m < floor:
            raise MlxInterpError(f"{what}: the scored answer tokens carry a median probability of {m:.3f} < {floor} "
                                 "(the model puts its mass elsewhere); the A/B score would not measure its choice")
        return self


def ab_from_logits(items: ABItems, logits, matching: Sequence[str]) -> ABResult:
    """The A/B metric from last-position logits (B, V) of ``items.prompts``: reuse a pass already run."""
    if logits.ndim != 2 or logits.shape[0] != len(matching) or len(matching) != len(items.prompts):
        raise MlxInterpError(f"need last-position logits of shape (n_items={len(items.prompts)}, vocab) and one letter "
                             f"per item; got {tuple(logits.shape)} and {len(matching)} letters")
    _check_letters(matching)
    lp = np.array(logits.astype(mx.float32), dtype=np.float64)
    lp = lp - lp.max(-1, keepdims=True)
    lp -= np.log(np.exp(lp).sum(-1, keepdims=True))
    rows = np.arange(len(matching))
    pa, pb = np.exp(lp[rows, items.a_ids]), np.exp(lp[rows, items.b_ids])
    match = np.where(np.array(matching) == "A", pa, pb)
    return ABResult(match / (pa + pb), pa + pb, pa, pb)


def ab_scores(lm, questions: Sequence[str], matching: Sequence[str], *, interventions=(), chat: bool = DEFAULT_CHAT,
              resume=None, items: ABItems | None = None, prefix: ABPrefix | None = None) -> ABResult:
    """CAA's A/B metric per item (see module docstring); ``resume=(base, k)`` is passed to ``run`` (base: a run
    of ``ab_prompts`` capturing ``resid_pre k`` everywhere). ``prefix`` (``ab_prefix`` of the same items): the
    interventions act from the instruction's last token on only (CAA's rule), and only those tokens are run."""
    from ..core.trace import run

    if len(questions) != len(matching) or not questions:
        raise MlxInterpError(f"need one matching letter per question; got {len(questions)} questions, {len(matching)} letters")
    _check_letters(matching)
    items = items or ab_items(lm, questions, chat)
    if prefix is None:
        logits = run(lm, items.prompts, interventions=interventions, resume=resume).logits
        return ab_from_logits(items, logits, matching)
    if resume is not None:
        raise MlxInterpError("ab_scores takes resume= or prefix=, not both")
    if prefix.n_items != len(items.prompts):
        raise MlxInterpError(f"this prefix holds {prefix.n_items} items but {len(items.prompts)} were given; "
                             "build it with ab_prefix from the same items")
    for iv in interventions:
        if getattr(iv, "rows", None) is not None:
            raise MlxInterpError("rows= selects batch rows, which prefix= regroups; give one intervention for every item")
    logits: list = [None] * len(items.prompts)
    for idx, cache in prefix.groups:
        out = run(lm, [prefix.tails[i] for i in idx], interventions=interventions, cache=cache, batch_size=None).logits
        for j, i in enumerate(idx):
            logits[i] = out[j]
    return ab_from_logits(items, mx.stack(logits), matching)


def _check_letters(matching: Sequence[str]) -> None:
    bad = [m for m in matching if m not in ("A", "B")]
    if bad:
        raise MlxInterpError(f"matching letters must be 'A' or 'B'; got {bad[0]!r}")
