"""Which token positions an intervention or capture applies to.

Positions are always *prompt-relative*: 0 is the first real token of each prompt (BOS, if the
tokenizer adds one), whatever the left padding of a batch or the KV-cache offset of a decode
step. When a pass continues from a prompt cache (``run(..., cache=c)``), the prompt is the
cached tokens followed by the new ones: position 0 is the first cached token, and an
intervention acts only on the tokens computed in that pass. Negative integers count from the
end of each prompt (-1 = last prompt token). Every ``positions=`` defaults to ``"all"``. Rules:

``"all"``        every real token (prompt and generated)
``"prompt"``     prompt tokens only
``"generated"``  generated tokens only
``"last"``       the last prompt token (same as -1)
``int``          one prompt position; ``[i, j, ...]`` several
``slice(a, b)``  a span of the prompt (negative ends count from the prompt end)
``Span(a, b)``   like a slice, but captures return the mean over the span
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence, Union

import numpy as np

from ..errors import MlxInterpError


@dataclass(frozen=True)
class Span:
    """A span of prompt positions whose captured vectors are averaged (e.g. response tokens)."""

    start: int | None = None
    stop: int | None = None


Positions = Union[str, int, slice, Span, Sequence[int]]
_NAMED = ("all", "prompt", "generated", "last")
#: the default of every ``positions=`` of a capture or an intervention
DEFAULT_POSITIONS = "all"
#: the default of readouts that need one vector per prompt (lens, direction extraction)
DEFAULT_READ_POSITION = "last"


def validate(rule: Positions, prompt_lens: Sequence[int]) -> None:
    """One-line error if ``rule`` is malformed or points outside any prompt."""
    if isinstance(rule, str):
        if rule not in _NAMED:
            raise MlxInterpError(f"unknown position rule {rule!r}; valid: {', '.join(_NAMED)}, an int, a list, a slice or Span")
        return
    shortest = min(prompt_lens)
    if isinstance(rule, bool):
        raise MlxInterpError(f"position {rule!r} is not valid; use an int, list, slice, Span or {_NAMED}")
    if isinstance(rule, int):
        idx = [rule]
    elif isinstance(rule, (slice, Span)):
        a, b = rule.start, rule.stop
        idx = [i for i in (a, None if b is None else (b - 1 if b > 0 else b - 1)) if i is not None]
        if a is not None and b is not None and _norm(a, shortest) >= _norm(b, shortest):
            raise MlxInterpError(f"position span {a}:{b} is empty for a prompt of {shortest} tokens")
    elif isinstance(rule, (list, tuple)) and all(isinstance(i, int) for i in rule) and rule:
        idx = list(rule)
    else:
        raise MlxInterpError(f"position {rule!r} is not valid; use an int, list of ints, slice, Span or one of {_NAMED}")
    for i in idx:
        if i >= shortest or i < -shortest:
            raise MlxInterpError(
                f"position {i} is outside the prompt: the shortest prompt has {shortest} tokens "
                f"(valid: {-shortest}..{shortest - 1})"
            )


def _norm(i: int, n: int) -> int:
    return i + n if i < 0 else i


def mask(rule: Positions, pos: np.ndarray, prompt_lens: np.ndarray) -> np.ndarray | None:
    """Boolean [B, L] mask (host-side numpy) of the selected positions, or None for "all".

    ``pos`` holds the prompt-relative position of every column of one forward call
    (negative for left padding); ``prompt_lens`` is [B]. Computed on the host so that
    selecting positions never forces an evaluation of the MLX graph.
    """
    n = prompt_lens[:, None]
    if isinstance(rule, str):
        if rule == "all":
            return None
        if rule == "prompt":
            return (pos >= 0) & (pos < n)
        if rule == "generated":
            return pos >= n
        return pos == n - 1  # "last"
    if isinstance(rule, int):
        return pos == (n + rule if rule < 0 else rule)
    if isinstance(rule, (slice, Span)):
        a = 0 if rule.start is None else rule.start
        lo = n + a if a < 0 else np.full_like(n, a)
        b = rule.stop
        hi = n if b is None else (n + b if b < 0 else np.full_like(n, b))
        return (pos >= lo) & (pos < hi)
    m = np.zeros(pos.shape, dtype=bool)
    for i in rule:
        m |= pos == (n + i if i < 0 else i)
    return m


def count(rule: Positions) -> int | None:
    """Number of positions a rule selects per prompt when fixed (for gathered captures)."""
    if isinstance(rule, int) or rule == "last":
        return 1
    if isinstance(rule, (list, tuple)):
        return len(rule)
    return None
