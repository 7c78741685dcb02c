"""exp7 and exp10 on Qwen2.5-Coder-0.5B, the smallest packaged model that refuses: the study runs past vetting, so
selection, the coefficient search and every steering condition's random control are exercised (on SmolLM2 the
study stops at vetting: tests/test_experiments.py). Tiny sets keep exp7 inside the suite's budget; exp10 on top of it (about 85 s more) is in the ``extended`` tier."""

from __future__ import annotations

import json

import numpy as np
import pytest

from experiments import exp7_refusal_scaling as e7, exp10_crosslingual_refusal as e10
from experiments.common import main
from mlx_interp.core.generate import generate
from mlx_interp.methods import refusal
from mlx_interp.readouts.directions import random_direction
from mlx_interp.runs.results import save_result

# the steering conditions exp7 reports, each with the control it must carry
CONTROLS = {"harmful_ablation": "harmful_ablation_random", "harmful_minus_r": "harmful_minus_random",
            "harmless_plus_r": "harmless_plus_random", "harmless_plus_searched": "harmless_plus_searched_random"}


def _tiny(sets: dict) -> dict:
    """12 + 12 train, 4 + 4 val, 3 + 3 held-out prompts (the quick rules otherwise)."""
    return {k: tuple(s[:n] for s in v) for (k, v), n in zip(sets.items(), (12, 4, 3))}


_RUN: dict = {}


def _exp7(qwen) -> tuple[dict, dict]:
    """(sets, exp7 result) on the tiny sets, computed once per session."""
    if "r7" not in _RUN:
        _RUN["sets"] = _tiny(e7.load_sets(None))
        _RUN["r7"] = e7.run(qwen, _RUN["sets"], True)
    return _RUN["sets"], _RUN["r7"]


def test_exp7_reports_every_steering_condition_beside_a_random_direction_on_qwen(qwen):
    sets, r7 = _exp7(qwen)
    assert r7["applies"] is True, r7.get("reason")
    s, eff = r7["summary"], r7["effect"]
    # chosen on validation prompts, below the paper's 0.8 depth cut
    assert s["selected_on"].startswith("validation") and s["layer"] < int(0.8 * qwen.n_layers)
    r = np.array(r7["direction"])
    searched = "harmless_plus_searched" in eff
    for cond, ctrl in CONTROLS.items():
        if cond == "harmless_plus_searched" and not searched:
            continue
        assert eff[ctrl]["n"] == eff[cond]["n"] == 3, cond
        assert eff[ctrl]["refusal"]["n"] == 3 and eff[ctrl]["refusal"]["lo"] <= eff[ctrl]["refusal"]["p"] <= eff[ctrl]["refusal"]["hi"]
    if searched:
        assert eff["harmless_plus_searched_random"]["alpha"] == eff["harmless_plus_searched"]["alpha"]
    # the control is a random direction of r's norm at the same layer and coefficient: generating that by hand gives
    # the recorded text (a weak direction may leave the text unchanged, so control and steered text can agree)
    rnd = random_direction(qwen.width, float(np.linalg.norm(r)), seed=s["layer"])
    hl_te = sets["test"][1]
    by_hand = [g.text for g in generate(qwen, hl_te, max_tokens=32, chat=True, interventions=[refusal.addition(rnd, s["layer"], 1.0)])]
    assert by_hand[:3] == eff["harmless_plus_random"]["examples"]
    # the search's own control: a random direction at the best multiplier
    search = r7["addition_search"]
    if search["best"] is not None:
        assert search["control"]["multiplier"] == search["best"]["multiplier"]
        assert search["control"]["examples"] != search["best"]["examples"]


@pytest.mark.extended
def test_exp10_from_exp7s_file_reports_each_languages_random_controls_on_qwen(tmp_path, qwen):
    """exp10 from an exp7 file, through the script's entry point: the direction and coefficient are exp7's, and each
    language's steering rows carry their random control on the same prompts."""
    _, r7 = _exp7(qwen)
    s, search = r7["summary"], r7["addition_search"]
    out = tmp_path / "res"
    p7 = save_result("exp7_refusal_scaling", r7, lm=qwen, out_dir=out)

    def few_rows(path):  # 2 harmful + 2 harmless rows, each in every language
        rows = e10.load_data(path)
        return [x for x in rows if x["label"] == "harmful"][:2] + [x for x in rows if x["label"] == "harmless"][:2]

    [p10] = main("exp10_crosslingual_refusal", e10.run, few_rows, e10.__doc__,
                 ["--model", qwen.name, "--quick", "--out", str(out), "--from", str(p7)])
    r10 = json.loads(p10.read_text())["results"]
    assert r10["applies"] is True and r10["direction"]["exp7_result"] == str(p7)
    assert r10["direction"]["layer"] == s["layer"]
    assert r10["direction"]["alpha"] == (search["best"]["alpha"] if search["best"] else 1.0)
    for lang, row in r10["langs"].items():
        for cond, ctrl in (("harmful_ablation", "harmful_ablation_random"), ("harmless_plus_r", "harmless_plus_random")):
            assert row["rates"][ctrl]["n"] == row["rates"][cond]["n"] == 2, (lang, cond)
