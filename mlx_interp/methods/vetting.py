"""Vetting: keep only the contrast examples whose own responses show (or lack) the trait.

A direction is only as clean as its classes. A "harmful" prompt that the model answers
happily, or a "harmless" prompt it refuses, puts the wrong behaviour into the wrong mean:
the quantization study this toolkit supports found ~30% refusals in an unvetted positive
set, enough to flip its conclusions. ``vet`` generates a short response per prompt and keeps
the positive prompts whose response shows the trait and the negative prompts whose response
does not, and reports exactly how many were dropped and which.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

from ..core.batching import DEFAULT_BATCH_SIZE, DEFAULT_CHAT
from ..core.generate import generate
from ..errors import MlxInterpError


@dataclass
class Vetted:
    positive: list[str]
    negative: list[str]
    dropped_positive: list[str] = field(default_factory=list)
    dropped_negative: list[str] = field(default_factory=list)
    responses: dict = field(default_factory=dict, repr=False)  # prompt -> the Generation it was judged by

    def responses_of(self, prompts: Sequence[str]) -> list:
        """The greedy responses vetting judged, for ``prompts`` (e.g. ``v.positive``): reuse them, do not regenerate."""
        missing = [p for p in prompts if p not in self.responses]
        if missing:
            raise MlxInterpError(f"{len(missing)} prompt(s) were not vetted here, e.g. {missing[0][:60]!r}")
        return [self.responses[p] for p in prompts]

    def report(self) -> dict:
        """Counts for a results file."""
        np_, nn = len(self.positive) + len(self.dropped_positive), len(self.negative) + len(self.dropped_negative)
        return {"positive_kept": len(self.positive), "positive_dropped": len(self.dropped_positive), "positive_total": np_,
                "negative_kept": len(self.negative), "negative_dropped": len(self.dropped_negative), "negative_total": nn,
                "dropped_positive_prompts": self.dropped_positive, "dropped_negative_prompts": self.dropped_negative}


def vet(lm, positive: Sequence[str], negative: Sequence[str], trait: Callable[[str], bool], *, max_tokens: int = 32,
        batch_size: int | None = DEFAULT_BATCH_SIZE, chat: bool = DEFAULT_CHAT, min_kept: int = 2) -> Vetted:
    """Drop positives whose response lacks the trait and negatives whose response shows it.

    Raises if fewer than ``min_kept`` examples of a class survive (the model may not have the trait).
    """
    if not positive or not negative:
        raise MlxInterpError(f"vetting needs both classes; got {len(positive)} positive and {len(negative)} negative prompts")
    prompts = list(positive) + list(negative)  # one generation call for both classes: they share every decode step
    gens = generate(lm, prompts, max_tokens=max_tokens, chat=chat, batch_size=batch_size)
    flags = [bool(trait(g.text)) for g in gens]
    sp, sn = flags[:len(positive)], flags[len(positive):]
    v = Vetted([p for p, s in zip(positive, sp) if s], [p for p, s in zip(negative, sn) if not s],
               [p for p, s in zip(positive, sp) if not s], [p for p, s in zip(negative, sn) if s], dict(zip(prompts, gens)))
    for name, kept, total in (("positive", v.positive, len(positive)), ("negative", v.negative, len(negative))):
        if len(kept) < min_kept:
            raise MlxInterpError(f"vetting kept {len(kept)} of {total} {name} prompts (need {min_kept}); "
                                 f"{lm.name} may not show the trait on this data")
    return v
