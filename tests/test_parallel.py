"""Data parallel (issue 19): balanced assignment, and the one batching path on 2 ranks over loopback (mlx.launch, ring
backend) giving what one process gives: captures, per-row interventions, a difference of means, generations."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mlx_interp.errors import MlxInterpError
from mlx_interp.runtime.parallel import assign, world

HERE = Path(__file__).resolve().parent


def test_assign_is_balanced_deterministic_and_complete():
    costs = [5, 1, 9, 3, 3, 7, 2]
    a = assign(costs, 2)
    assert sorted(i for r in a for i in r) == list(range(len(costs))) and a == assign(costs, 2)
    loads = [sum(costs[i] for i in r) for r in a]
    assert abs(loads[0] - loads[1]) <= max(costs) and loads == [15, 15]
    assert assign(costs, 1) == [list(range(7))] and assign([], 3) == [[], [], []]
    with pytest.raises(MlxInterpError, match="at least one rank"):
        assign(costs, 0)


def test_a_plain_process_is_a_world_of_one():
    assert world().size == 1 and world().main and world().backend == "none"


def _launch(tmp_path: Path, script: Path, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    """``mlx.launch -n 2 --backend ring python SCRIPT ARGS`` on loopback (``script`` may be ``-m``)."""
    launcher = shutil.which("mlx.launch") or str(Path(sys.executable).parent / "mlx.launch")
    env = {**os.environ, "PYTHONPATH": str(HERE.parent), "MLX_INTERP_DIST_TIMEOUT": "240"}
    env.pop("MLX_INTERP_THREADS", None)  # the ranks split the cores themselves
    return subprocess.run([launcher, "-n", "2", "--backend", "ring", sys.executable, str(script), *args],
                          capture_output=True, text=True, timeout=timeout, env=env, cwd=str(tmp_path))


@pytest.mark.slow
def test_two_ranks_equal_one_process(tmp_path, smol):
    sys.path.insert(0, str(HERE))
    import parallel_worker

    out = tmp_path / "dp.json"
    p = _launch(tmp_path, HERE / "parallel_worker.py", str(out))
    assert p.returncode == 0, p.stderr[-2000:]
    got = json.loads(out.read_text())
    assert got["world"] == {"rank": 0, "size": 2, "backend": "ring"} and got["provenance_world"]["size"] == 2
    assert not list(tmp_path.glob("dp-*.json"))  # rank 1 wrote nothing
    one = parallel_worker.compute(smol)
    for k in ("logits", "resid", "head", "steered"):
        np.testing.assert_allclose(np.array(got[k]), np.array(one[k]), rtol=1e-4, atol=1e-4, err_msg=k)
    for k in one["dom"]:
        np.testing.assert_allclose(np.array(got["dom"][k]), np.array(one["dom"][k]), rtol=1e-4, atol=1e-5)
    assert got["texts"] == one["texts"]


def _same(a, b, path="results"):
    """Equal JSON values, numbers to 1e-6 relative (the ranks' BLAS thread count may round differently)."""
    if isinstance(a, dict):
        assert set(a) == set(b), path
        for k in a:
            _same(a[k], b[k], f"{path}/{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _same(x, y, f"{path}[{i}]")
    elif isinstance(a, float) and isinstance(b, float):
        assert a == pytest.approx(b, rel=1e-6, abs=1e-9, nan_ok=True), path
    else:
        assert a == b, path


@pytest.mark.slow
def test_a_quick_experiment_on_two_ranks_writes_one_file_equal_to_one_process(tmp_path):
    """exp6 --quick on three user queries: one process vs `mlx.launch -n 2`; rank 0 alone writes, the same numbers."""
    queries = tmp_path / "q.jsonl"
    src = (HERE.parent / "mlx_interp" / "tasks" / "data" / "two_hop" / "queries.jsonl").read_text().splitlines()
    queries.write_text("\n".join(src[:3]) + "\n")
    args = ["-m", "experiments.exp6_twohop_scaling", "--model", "smollm2-135m", "--quick", "--prompts", str(queries)]
    env = {**os.environ, "PYTHONPATH": str(HERE.parent), "MLX_INTERP_THREADS": "1"}
    one = subprocess.run([sys.executable, *args, "--out", str(tmp_path / "one")], capture_output=True, text=True,
                         timeout=600, env=env, cwd=str(tmp_path))
    assert one.returncode == 0, one.stderr[-2000:]
    two = _launch(tmp_path, Path("-m"), "experiments.exp6_twohop_scaling", *args[2:], "--out", str(tmp_path / "two"))
    assert two.returncode == 0, two.stderr[-2000:]
    (f1,), files2 = list((tmp_path / "one").glob("*/*.json")), list((tmp_path / "two").glob("*/*.json"))
    assert len(files2) == 1  # one result file for the run, written by rank 0
    a, b = json.loads(f1.read_text()), json.loads(files2[0].read_text())
    assert b["provenance"]["world"] == {"rank": 0, "size": 2, "backend": "ring"} and a["provenance"]["world"]["size"] == 1
    _same(a["results"], b["results"])


@pytest.mark.slow
@pytest.mark.parametrize("mode, message", [
    ("models", "ranks disagree on the model: rank 0 has 'smollm2-135m@4bit-g32-mirror', rank 1 has 'gemma-3-270m"),
    ("dies", "a test gather failed: another rank stopped"),
    ("shard_gemma", "(gemma3_text) has no tensor-parallel sharding in mlx-lm"),
    ("shard_smollm2", "num_attention_heads = 9 is not divisible by 2 ranks")])
def test_a_broken_world_stops_with_one_line(tmp_path, mode, message):
    p = _launch(tmp_path, HERE / "parallel_bad.py", mode, timeout=300)
    errors = [line for line in p.stderr.splitlines() if line.startswith("error: ")]
    assert errors and message in errors[0] and "Traceback" not in p.stderr


@pytest.mark.slow
@pytest.mark.parametrize("alias, ranks", [("qwen2.5-coder-0.5b", 2), ("smollm2-135m", 3)])
def test_tensor_parallel_model_equals_one_process(tmp_path, alias, ranks):
    """load(shard=True) over N ranks (Qwen: 14 heads on 2 ranks; SmolLM2, Llama family: 9 heads on 3): residual sites
    are replicated, per-head sites (head, k, v) show every head in the model's order, a patch of heads owned by
    different ranks lands where it should, and logits and greedy text equal one process."""
    from tests.conftest import get_model

    sys.path.insert(0, str(HERE))
    import parallel_tp_worker

    out = tmp_path / "tp.json"
    launcher = shutil.which("mlx.launch") or str(Path(sys.executable).parent / "mlx.launch")
    env = {**os.environ, "PYTHONPATH": str(HERE.parent), "MLX_INTERP_DIST_TIMEOUT": "240"}
    env.pop("MLX_INTERP_THREADS", None)
    p = subprocess.run([launcher, "-n", str(ranks), "--backend", "ring", sys.executable, str(HERE / "parallel_tp_worker.py"),
                        alias, str(out)], capture_output=True, text=True, timeout=600, env=env, cwd=str(tmp_path))
    assert p.returncode == 0, p.stderr[-2000:]
    got = json.loads(out.read_text())
    one = parallel_tp_worker.compute(get_model(alias))
    assert got["tensor_parallel"] == ranks and got["texts"] == one["texts"]
    for k in one:
        if k != "texts":
            a, b = np.array(got[k]), np.array(one[k])
            assert a.shape == b.shape, k
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * np.abs(b).max(), err_msg=k)


def test_shard_in_a_world_of_one_is_refused():
    with pytest.raises(MlxInterpError, match="world of one"):
        from mlx_interp.store.models import load

        load("smollm2-135m", shard=True)
