"""A batch of generations scored once: each trait's rate and the coherent rate, with 95% Wilson intervals.

Every steering result reads the same way: how many generations show the trait (refusal, hedging, ...), how many stay
coherent (``measures.coherence``, judged by an unsteered model), and a few examples to read. One function, so exp7,
exp15 and exp16 (and yours) report generations identically.
"""

from __future__ import annotations

from typing import Callable, Sequence

from .coherence import coherence, coherence_by_condition
from .stats import rate


def score_generations(judge, generations: Sequence, traits: dict[str, Callable[[str], bool] | Sequence[bool]], *,
                      examples: int = 3, judged: dict | None = None) -> dict:
    """``{trait: rate, ..., "coherent": rate, "coherent_rate", "median_perplexity", "n", "examples"}`` for
    ``generations`` (``core.generate.Generation`` list). ``judge``: the unsteered model whose perplexity decides
    coherence (the generating model itself, or a reference shared by every model compared). ``traits``: name ->
    whether one text shows it. ``judged``: these generations' coherence, already computed with other conditions'
    (``coherence_by_condition``)."""
    gens = list(generations)
    return _score(gens, judged if judged is not None else coherence(judge, gens), traits, examples)


def score_conditions(judge, conditions: dict[str, Sequence], traits: dict[str, Callable[[str], bool]], *,
                     examples: int = 3) -> dict[str, dict]:
    """``score_generations`` for each of several conditions (``{name: generations}``, e.g. ``generate_conditions``'
    result), judged in one coherence pass: conditions on the same prompts share each prompt's cached pass."""
    groups = {k: list(g) for k, g in conditions.items()}
    c = coherence_by_condition(judge, groups)
    return {k: _score(g, c[k], traits, examples) for k, g in groups.items()}


def _score(gens: list, c: dict, traits: dict, examples: int) -> dict:
    out = {name: rate([bool(f(g.text)) for g in gens] if callable(f) else [bool(x) for x in f]).as_dict()
           for name, f in traits.items()}
    out.update(coherent=rate(c["coherent"]).as_dict(), coherent_rate=c["coherent_rate"],
               median_perplexity=c["median_perplexity"], n=len(gens), examples=[g.text for g in gens[:examples]])
    return out
