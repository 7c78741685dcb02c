"""The Patchscope entity readout (issue 14, defect 11): the reference's label patterns on hand-made descriptions, and
``describe`` on the real model, where writing the inspection prompt's own state back must change nothing and each
row must carry its own state."""

from __future__ import annotations

import numpy as np
import pytest

import mlx_interp as mi
from mlx_interp.errors import MlxInterpError
from mlx_interp.readouts.patchscope import INSPECTION, describe, names_entity


def test_names_entity_follows_the_reference_patterns():
    assert names_entity(": Paris is the capital of France", ["Paris"])  # "x: Paris is ..."
    assert names_entity(" Paris: Paris is a city", ["paris"])
    assert names_entity(": Paris, the capital", ["Paris"]) and names_entity(": Paris.", ["Paris"])
    assert not names_entity(": Parisian cooking is", ["Paris"])  # a prefix of a longer word is not the name
    assert not names_entity(": a city in France", ["Paris"])
    assert not names_entity(": P is a letter", ["P"])  # one-letter names never count


def test_describe_rows_carry_their_own_states(smol):
    layers = [3, 12]
    tr = mi.run(smol, INSPECTION, capture=mi.Capture("resid_post", layers, "last"))
    own = [np.array(tr["resid_post", t][0]) for t in layers]
    plain = mi.generate(smol, [INSPECTION], max_tokens=8)[0].text
    assert describe(smol, own, layers, max_tokens=8) == [plain, plain]  # the identity patch reproduces the baseline
    other = mi.run(smol, "The Eiffel Tower is in Paris", capture=mi.Capture("resid_post", [12], "last"))
    foreign = np.array(other["resid_post", 12][0])
    got = describe(smol, [own[0], foreign], [3, 12], max_tokens=8)
    assert got[0] == plain and got[1] != plain  # row 1's foreign state changes row 1 only
    with pytest.raises(MlxInterpError, match="one target layer per state"):
        describe(smol, own, [3], max_tokens=8)
