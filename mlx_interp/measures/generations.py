"""A batch of generations scored once: each trait's rate and the coherent rate, with 95% Wilson intervals.

Every steering result reads the same way: how many generations show the trait (refusal, hedging, ...), how many stay
coherent (``measures.coherence``, judged by an unsteered model), and a few examples to read. One function, so exp7,
exp15 and exp16 (and yours) report generations identically.
"""

from __future__ import annotations

from typing import Callable, Sequence

from .coherence import coherence
from .stats import rate


def score_generations(judge, generations: Sequence, traits: dict[str, Callable[[str], bool] | Sequence[bool]], *,
                      examples: int = 3) -> dict:
    """``{trait: rate, ..., "coherent": rate, "coherent_rate", "median_perplexity", "n", "examples"}`` for
    ``generations`` (``core.generate.Generation`` list). ``judge``: the unsteered model whose perplexity decides
    coherence (the generating model itself, or a reference shared by every model compared). ``traits``: name ->
    whether one text shows it."""
    gens = list(generations)
    c = coherence(judge, gens)
    out = {name: rate([bool(f(g.text)) for g in gens] if callable(f) else [bool(x) for x in f]).as_dict()
           for name, f in traits.items()}
    out.update(coherent=rate(c["coherent"]).as_dict(), coherent_rate=c["coherent_rate"],
               median_perplexity=c["median_perplexity"], n=len(gens), examples=[g.text for g in gens[:examples]])
    return out
