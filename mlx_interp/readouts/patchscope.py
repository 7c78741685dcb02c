"""Patchscope entity readout (Ghandeharioun et al. 2024, as Hopping Too Late uses it): what entity does a state name?

A hidden state h (``resid_post`` of source layer s at some position) is written over the last token ``x`` of an
inspection prompt that describes entities, at target layer t, on the prefill pass only; the model then generates a
short description, which names the entity the state encodes. ``describe`` runs one generation per (state, target
layer) as batch rows; ``names_entity`` labels a description with the reference's patterns.

Reference (edenbiran/HoppingTooLate ``generate_entity_description.py``): the prompt below, x = its last token,
the full s x t grid, 10 new tokens sampled with 3 seeds, any match counts. Deviations here: greedy decoding (one
description per cell, deterministic) and the target layers the caller chooses (exp6: t = s), to keep the grid
affordable on a CPU.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..core.generate import generate
from ..core.interventions import Patch
from ..errors import MlxInterpError

INSPECTION = ("Syria: Syria is a country in the Middle East, Leonardo DiCaprio: Leonardo DiCaprio is an American actor, "
              "Samsung: Samsung is a South Korean multinational corporation, x")


def describe(lm, states: Sequence[np.ndarray], targets: Sequence[int], *, prompt: str = INSPECTION,
             max_tokens: int = 10) -> list[str]:
    """Greedy descriptions, one per (state, target layer) pair given as parallel lists."""
    if len(states) != len(targets) or not states:
        raise MlxInterpError(f"describe needs one target layer per state; got {len(states)} states, {len(targets)} targets")
    ivs = [Patch(np.asarray(h), layers=int(t), positions="last", rows=[i]) for i, (h, t) in enumerate(zip(states, targets))]
    return [g.text for g in generate(lm, [prompt] * len(states), max_tokens=max_tokens, interventions=ivs)]


def names_entity(text: str, names: Sequence[str]) -> bool:
    """The reference's label patterns: ``": {a} "``, ``": {a},"``, ``": {a}."``, ``": {a}:"``, ``"{a}: "`` (case-insensitive),
    on the description as generated after ``x`` (which continues ``x: ...``), so ``x: Paris is`` names Paris."""
    t = " ".join(("x" + text).split()).lower() + " "  # the prompt's last token followed by what was generated
    for a in names:
        a = a.strip().lower()
        if len(a) <= 1:
            continue
        if any(p in t for p in (f": {a} ", f": {a},", f": {a}.", f": {a}:", f"{a}: ")):
            return True
    return False
