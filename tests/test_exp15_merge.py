"""exp15 grids run in parts (``--precision``) and merged (``experiments.exp15_merge``): the newest kept full grid, split
into two parts that share its fp32 row, merges back into the same rows and the same hypotheses the one-process run
computed; parts that measured different references, or the same precision twice, are refused."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from experiments.exp15_merge import first_difference, merge, merge_docs
from mlx_interp.errors import MlxInterpError

KEPT = Path(__file__).resolve().parent.parent / "results" / "published" / "exp15_quantization"


def _full_grid() -> dict:
    """The newest kept full (not quick) exp15 run with more than two variants."""
    for p in sorted(KEPT.glob("*.json"), reverse=True):
        d = json.loads(p.read_text())
        if not d["provenance"]["config"].get("quick") and len(d["results"]["precisions"]) > 3:
            return d
    pytest.fail("no kept full exp15 grid in results/published")


def _part(doc: dict, precisions: list[str]) -> dict:
    """``doc`` as a run of only ``precisions`` (besides fp32) would have written it."""
    d = copy.deepcopy(doc)
    r = d["results"]
    r["rows"] = {p: row for p, row in r["rows"].items() if p == "fp32" or p in precisions}
    r["precisions"] = ["fp32"] + precisions
    r["hypotheses"] = {"from": "this part only"}
    d["provenance"]["config"]["precisions"] = precisions
    return d


def test_two_parts_merge_back_into_the_one_process_grid(tmp_path):
    doc = _full_grid()
    variants = doc["results"]["precisions"][1:]
    a, b = _part(doc, variants[:3]), _part(doc, variants[3:])
    a["results"]["rows"]["fp32"]["wall_s"] += 5.0  # a part's own timing may differ, and its work profile (a resumed
    a["results"]["rows"]["fp32"]["stage_work"] = {"capability": {"positions": 0, "replayed_s": 9.0}}  # part replays)
    b["provenance"]["wall_s_total"] = b["provenance"]["wall_s"] + 100.0  # b was resumed: 100 s replayed
    payload, config = merge_docs([("a.json", a), ("b.json", b)])
    assert payload["precisions"] == doc["results"]["precisions"] and config["merged"]
    # the only difference is the work profile the test changed (how deep it shows depends on the kept file's keys)
    assert (first_difference(payload["rows"], doc["results"]["rows"], "rows") or "").startswith("rows/fp32/stage_work")
    # the hypotheses the study computed in one process, recomputed from the merged rows
    assert first_difference(payload["hypotheses"], doc["results"]["hypotheses"], "hypotheses") is None
    assert [m["precisions"] for m in payload["merged_from"]] == [variants[:3], variants[3:]]
    fa, fb = tmp_path / "a.json", tmp_path / "b.json"
    fa.write_text(json.dumps(a))
    fb.write_text(json.dumps(b))
    path = merge([fa, fb], tmp_path / "out")
    written = json.loads(path.read_text())
    assert written["provenance"]["model"]["name"] == doc["provenance"]["model"]["name"]
    assert written["provenance"]["wall_s"] == pytest.approx(a["provenance"]["wall_s"] + b["provenance"]["wall_s"] + 100.0,
                                                            abs=1e-3)


def test_parts_that_measured_different_references_or_the_same_precision_are_refused():
    doc = _full_grid()
    variants = doc["results"]["precisions"][1:]
    a, b = _part(doc, variants[:2]), _part(doc, variants[2:])
    moved = copy.deepcopy(b)
    moved["results"]["rows"]["fp32"]["fidelity"]["kl"] += 0.01
    with pytest.raises(MlxInterpError, match="differ at rows/fp32/fidelity/kl"):
        merge_docs([("a.json", a), ("b.json", moved)])
    last_bits = copy.deepcopy(b)  # the same computation in another process: equal within 1e-9, accepted
    last_bits["results"]["rows"]["fp32"]["fidelity"]["top1_agreement"] *= 1 + 1e-13
    merge_docs([("a.json", a), ("b.json", last_bits)])
    with pytest.raises(MlxInterpError, match=f"precision '{variants[0]}' is in both a.json and c.json"):
        merge_docs([("a.json", a), ("c.json", _part(doc, variants[:1]))])
    other_layers = copy.deepcopy(b)
    other_layers["results"]["layers"]["confidence"]["layer"] += 1
    with pytest.raises(MlxInterpError, match="differ at layers/confidence/layer"):
        merge_docs([("a.json", a), ("b.json", other_layers)])
    quick = copy.deepcopy(b)
    quick["provenance"]["config"]["quick"] = True
    with pytest.raises(MlxInterpError, match="quick run"):
        merge_docs([("a.json", a), ("b.json", quick)])
    with pytest.raises(MlxInterpError, match="at least 2"):
        merge_docs([("a.json", a)])
