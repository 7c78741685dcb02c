"""experiments/compare_results.py: how closely a rerun reproduces a kept result, on a kept exp15 file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from experiments.compare_results import main

KEPT = Path(__file__).resolve().parent.parent / "results/published/exp15_quantization/20261203T144035Z_gemma-3-270m@fp32.json"


def test_a_file_against_itself_and_against_a_changed_copy(tmp_path, capsys):
    same = main([str(KEPT), str(KEPT)])
    assert same["non_float_differ"] == [] and same["float_max_difference"] == 0.0 and same["floats"] > 1000
    doc = json.loads(KEPT.read_text())
    row = doc["results"]["rows"]["8bit"]
    row["capability"]["mmlu"]["accuracy"]["k"] += 1  # a count: must be reported as it is
    row["fidelity"]["kl"] *= 1.01  # a float: a relative difference of 0.01
    row["wall_s"] += 100.0  # timings differ between any two runs: left out
    del row["vetting"]  # a key one file lacks: counted, not compared
    changed = tmp_path / "changed.json"
    changed.write_text(json.dumps(doc))
    out = main([str(KEPT), str(changed)])
    assert out["non_float_differ"] == [["/rows/8bit/capability/mmlu/accuracy/k", 28, 29]]
    assert out["float_max_difference"] == pytest.approx(0.01 / 1.01) and out["largest"][0][1] == "/rows/8bit/fidelity/kl"
    assert out["keys_in_one_file_only"] == 1 and out["floats_over_0.0001"] == 1
    assert main([str(KEPT), str(changed), "--ignore", "fidelity"])["float_max_difference"] == 0.0


def test_bad_input_is_one_line(tmp_path, capsys):
    other = tmp_path / "x.json"
    other.write_text(json.dumps({"experiment": "exp9_back_patching", "results": {}}))
    for argv, msg in (([str(KEPT), str(other)], "compare two runs of one study"),
                      ([str(KEPT), str(tmp_path / "none.json")], "cannot read result file")):
        with pytest.raises(SystemExit) as e:
            main(argv)
        err = capsys.readouterr().err
        assert e.value.code == 2 and msg in err and err.count("\n") == 1, err


def test_require_same_holds_nan_to_nan_and_with_all_keys_every_key():
    """A recomputation reproduces NaN only with NaN (a NaN's difference once compared below every tolerance), and
    with ``all_keys`` a key only one side has is a difference, not a count."""
    from experiments.compare_results import Comparison, require_same
    from mlx_interp.errors import MlxInterpError

    nan = float("nan")
    require_same({"a": nan, "b": 1.0}, {"a": nan, "b": 1.0 + 1e-7}, "r", "f.json", Comparison(), "the rows")
    with pytest.raises(MlxInterpError, match=r"^f.json: the rows differ from the kept ones at r/a \(kept 0.5, now nan"):
        require_same({"a": nan}, {"a": 0.5}, "r", "f.json", Comparison(), "the rows")
    require_same({"a": 1.0, "new": 2}, {"a": 1.0}, "r", "f.json", Comparison(), "the rows")  # added since: not compared
    with pytest.raises(MlxInterpError, match=r"at r/x/old \(kept 'present', now 'absent'"):
        require_same({"x": {"a": 1}}, {"x": {"a": 1, "old": 2}}, "r", "f.json", Comparison(), "the rows", all_keys=True)
    with pytest.raises(MlxInterpError, match=r"at r \(kept \{\}, now \{\}"):  # nothing compared is no reproduction
        require_same({}, {}, "r", "f.json", Comparison(), "the rows")
