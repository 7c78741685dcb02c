"""bench/wall_times.py: the matmul lower bound of a kept run, from its work counts and its model's config."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.wall_times import main, matmul_gflop  # noqa: E402


def _model(tmp_path: Path, tied: bool) -> dict:
    folder = tmp_path / ("tied" if tied else "untied")
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"vocab_size": 10, "hidden_size": 5, "tie_word_embeddings": tied}))
    return {"params": 1000, "source": str(folder), "name": "m"}


def test_the_bound_counts_block_weights_per_position_and_the_unembedding_per_decode_row(tmp_path):
    work = {"positions": 100, "decode_positions": 10}
    # tied: 1000 - 50 block params; 2 * 950 * 100 + 2 * 50 * 10 = 191000 FLOP
    tied = _model(tmp_path, True)
    assert matmul_gflop(tied, work) == pytest.approx(191000 / 1e9)
    # untied: the head is counted once more in params: 1000 - 100 = 900; 2 * 900 * 100 + 1000 = 181000
    assert matmul_gflop(_model(tmp_path, False), work) == pytest.approx(181000 / 1e9)
    # a resumed pass ran a share of the blocks: block_positions (where recorded) weighs the block term
    assert matmul_gflop(tied, {**work, "block_positions": 50}) == pytest.approx((2 * 950 * 50 + 2 * 50 * 10) / 1e9)
    assert matmul_gflop({"params": 1000, "source": str(tmp_path / "absent")}, work) is None


def test_wall_times_prints_the_bound_at_the_given_roofline(tmp_path, capsys):
    results = tmp_path / "results" / "expX"
    results.mkdir(parents=True)
    prov = {"wall_s": 120.0, "config": {"quick": False}, "blas_threads": 2, "timestamp_utc": "2026-12-02T00:00:00",
            "model": _model(tmp_path, True), "work": {"positions": 10**9, "decode_positions": 0, "decode_steps": 0}}
    (results / "r.json").write_text(json.dumps({"experiment": "expX", "provenance": prov}))
    rs = main(["--results", str(tmp_path / "results"), "--roofline", "100"])
    # 2 * 950 * 1e9 FLOP = 1900 GFLOP at 100 GFLOP/s = 19 s
    assert rs[0]["bound_min"] == pytest.approx(19 / 60)
    assert " 0.3  2026-12-02" in capsys.readouterr().out


def test_a_bad_roofline_is_one_line():
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "wall_times.py"), "--roofline", "-5"],
                         capture_output=True, text=True)
    assert out.returncode != 0
    assert out.stderr.strip().splitlines() == ["--roofline -5.0 is not valid; give the machine's sgemm rate in GFLOP/s (> 0)"]


def test_smoke_runs_are_listed_but_parts_are_not(tmp_path):
    """A study's smoke/ folder (runs kept for their wall time only) is listed with its path; other subfolders, such as
    parts/ that a merged result already covers, are not."""
    prov = {"wall_s": 60.0, "config": {"quick": True}, "blas_threads": 2, "timestamp_utc": "2026-12-05T00:00:00",
            "model": {"name": "m"}}
    for where in ("expX", "expX/smoke", "expX/parts", "expY/smoke/run1"):
        (tmp_path / where).mkdir(parents=True)
    for f in ("expX/a.json", "expX/smoke/b.json", "expX/parts/c.json", "expY/smoke/run1/experiment_results.json"):
        (tmp_path / f).write_text(json.dumps({"experiment": f[:4], "provenance": prov}))
    assert sorted(r["file"] for r in main(["--results", str(tmp_path)])) == \
        ["expX/a.json", "expX/smoke/b.json", "expY/smoke/run1/experiment_results.json"]


def test_a_resumed_run_is_listed_with_its_replayed_time_and_work(tmp_path):
    """A run resumed from its journal records what its replayed calls took (``work.replayed``, ``wall_s_total``):
    its row reads both processes' time and work, so positions per second and the bound cover the whole run."""
    (tmp_path / "expX").mkdir()
    work = {"positions": 600, "decode_steps": 10, "decode_positions": 40, "counted_on": "this process",
            "replayed": {"calls": 3, "seconds": 240.0, "positions": 400, "decode_steps": 5, "decode_positions": 20}}
    prov = {"wall_s": 60.0, "wall_s_total": 300.0, "config": {}, "blas_threads": 2,
            "timestamp_utc": "2026-12-06T00:00:00", "model": _model(tmp_path, True), "work": work}
    (tmp_path / "expX" / "r.json").write_text(json.dumps({"experiment": "expX", "provenance": prov}))
    r = main(["--results", str(tmp_path)])[0]
    assert (r["minutes"], r["mpos"], r["steps"], r["pos_per_s"]) == (5.0, 1000 / 1e6, 15, 1000 / 300)
    assert r["gflop"] == pytest.approx((2 * 950 * 1000 + 2 * 50 * 60) / 1e9)
