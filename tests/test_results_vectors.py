"""Results are atomic and never overwrite; vectors round-trip with metadata; CLI works."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

import mlx_interp as mi
from mlx_interp.errors import MlxInterpError
from mlx_interp.readouts.vectors import VectorSet


def test_results_never_overwrite_and_carry_provenance(tmp_path, smol):
    a = mi.save_result("exp_test", {"x": 1}, lm=smol, config={"k": 2}, seed=3, wall_s=1.5, out_dir=tmp_path)
    b = mi.save_result("exp_test", {"x": 2}, lm=smol, out_dir=tmp_path)
    assert a != b and a.exists() and b.exists()
    doc = json.loads(a.read_text())
    assert doc["results"] == {"x": 1}
    prov = doc["provenance"]
    for key in ("timestamp_utc", "mlx_version", "mlx_lm_version", "git_commit", "platform", "seed", "config", "wall_s"):
        assert key in prov
    assert prov["model"]["layers"] == 30 and prov["model"]["width"] == 576 and prov["model"]["family"] == "llama"
    assert prov["model"]["name"] == "smollm2-135m@4bit-g32-mirror" and prov["model"]["precision"] == "4bit-g32-mirror"
    assert a.name.endswith("_smollm2-135m@4bit-g32-mirror.json")
    assert json.loads(b.read_text())["results"] == {"x": 2}
    assert not list(tmp_path.glob("exp_test/.tmp-*"))


def test_provenance_names_the_commit_that_ran_not_the_one_at_save(monkeypatch):
    from mlx_interp.runs import results

    head = results.git_commit()
    assert results.provenance()["git_commit"] == head and "git_commit_at_save" not in results.provenance()
    monkeypatch.setitem(results._CODE, "commit", "0" * 40)  # as if HEAD moved after the experiment started
    prov = results.provenance()
    assert prov["git_commit"] == "0" * 40 and prov["git_commit_at_save"] == head


def test_code_version_tells_uncommitted_states_apart(tmp_path):
    """Two different sets of uncommitted edits never share a code version (journals are keyed by it)."""
    import subprocess

    from mlx_interp.runs.results import git_commit

    def git(*a):
        subprocess.run(["git", *a], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "a.py").write_text("x = 1\n")
    git("add", "a.py")
    git("-c", "user.email=t@t", "-c", "user.name=t", "commit", "-q", "-m", "c")
    clean = git_commit(tmp_path)
    assert len(clean) == 40 and "+" not in clean
    (tmp_path / "a.py").write_text("x = 2\n")
    one = git_commit(tmp_path)
    (tmp_path / "a.py").write_text("x = 3\n")
    two = git_commit(tmp_path)
    assert one.startswith(clean + "+dirty.") and two.startswith(clean + "+dirty.") and one != two
    (tmp_path / "a.py").write_text("x = 2\n")
    assert git_commit(tmp_path) == one  # the same edits, the same version
    (tmp_path / "a.py").write_text("x = 1\n")
    assert git_commit(tmp_path) == clean
    # data a run writes (an untracked result file, a symlinked venv) is not code: the version stays clean, so a
    # multi-model run resumed after its first result file appeared keeps its journal
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "r.json").write_text("{}")
    (tmp_path / ".venv").symlink_to(tmp_path / "results")
    assert git_commit(tmp_path) == clean
    # a new, untracked module is code: its content counts
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "b.py").write_text("y = 1\n")
    three = git_commit(tmp_path)
    (tmp_path / "pkg" / "b.py").write_text("y = 2\n")
    four = git_commit(tmp_path)
    assert three.startswith(clean + "+dirty.") and four.startswith(clean + "+dirty.") and three != four
    assert git_commit(tmp_path / "pkg") == four  # the same from a subfolder


def test_vector_roundtrip_and_width_check(tmp_path, smol, gemma):
    vs = VectorSet({3: np.arange(576, dtype=float), 5: np.ones(576)}, "smollm2-135m", "diff_of_means", {"note": "t"})
    p = mi.save_vector(tmp_path / "v.safetensors", vs)
    back = mi.load_vector(p, smol)
    assert sorted(back.vectors) == [3, 5] and back.method == "diff_of_means" and back.meta == {"note": "t"}
    np.testing.assert_allclose(back[3], np.arange(576))
    with pytest.raises(MlxInterpError) as e:
        mi.load_vector(p, gemma)
    assert "576" in str(e.value) and "640" in str(e.value)
    with pytest.raises(MlxInterpError):
        mi.save_vector(tmp_path / "bad.safetensors", VectorSet({0: np.full(4, np.inf)}, "m", "x"))


def test_diff_of_means_on_constructed_case(smol):
    """Identical classes give a zero vector; swapping classes flips the sign exactly."""
    a = ["The cat sat on the mat.", "A dog ran in the park."]
    b = ["I am very happy today!", "What a wonderful surprise!"]
    same = mi.diff_of_means(smol, a, a, layers=[4])
    assert np.abs(same[4]).max() == 0
    ab, ba = mi.diff_of_means(smol, a, b, layers=[4]), mi.diff_of_means(smol, b, a, layers=[4])
    np.testing.assert_allclose(ab[4], -ba[4])
    with pytest.raises(MlxInterpError):
        mi.diff_of_means(smol, a[:1], b, layers=[4])


def _cli(*args):
    exe = shutil.which("mlx-interp")
    cmd = [exe] if exe else [sys.executable, "-m", "mlx_interp.app.cli"]
    return subprocess.run(cmd + list(args), capture_output=True, text=True)


def test_cli_lens_table_and_json():
    p = _cli("lens", "--model", "smollm2-135m", "-t", " Paris", "The capital of France is")
    assert p.returncode == 0, p.stderr
    rows = [line for line in p.stdout.splitlines() if line.strip()[:3].strip().isdigit() or line.strip().startswith("emb")]
    assert rows[0].strip().startswith("emb") and rows[-1].strip().startswith("29") and len(rows) == 31
    j = _cli("lens", "--model", "smollm2-135m", "--json", "The capital of France is")
    doc = json.loads(j.stdout)
    assert doc["layers"] == [-1] + list(range(30)) and doc["cells"][0][-1][0]["top"][0][0] == " Paris"
    assert doc["model"] == "smollm2-135m@4bit-g32-mirror"


def test_cli_generate_side_by_side(tmp_path, smol):
    v = np.random.default_rng(0).normal(size=576) * 3
    f = mi.save_vector(tmp_path / "v.safetensors", VectorSet({10: v}, "smollm2-135m", "random"))
    p = _cli("generate", "--model", "smollm2-135m", "--steer", str(f), "--alpha", "4", "--max-tokens", "12", "--json", "Hello")
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    assert doc["layer"] == 10 and doc["baseline"] != doc["steered"] and doc["random"] != doc["steered"]
    bad = _cli("generate", "--model", "gemma-3-270m", "--steer", str(f), "Hello")
    assert bad.returncode == 2 and "width 576" in bad.stderr


def test_cli_generate_scales_by_the_residual_norm_or_the_files_choice(tmp_path, smol):
    """--multiplier m adds m x the residual norm at the layer (on the prompt); with no option the file's recorded choice
    (the demo's search) applies; a file without one, or both options, is a one-line error."""
    from click.testing import CliRunner

    from mlx_interp.app.cli import cli
    from mlx_interp.methods.steering import residual_norms

    v = np.random.default_rng(0).normal(size=576) * 3
    plain = mi.save_vector(tmp_path / "v.safetensors", VectorSet({10: v}, "smollm2-135m", "random"))
    chosen = mi.save_vector(tmp_path / "c.safetensors", VectorSet({10: v}, "smollm2-135m", "random",
                                                                  {"steer": {"layer": 10, "multiplier": 0.25, "alpha": 1.5}}))
    prompt = "Tell me about your weekend."
    gen = ["generate", "--model", "smollm2-135m", "--max-tokens", "6", "--json"]
    r = CliRunner().invoke(cli, gen + ["--steer", str(plain), "--multiplier", "0.5", prompt])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output)
    norm = residual_norms(smol, [prompt], [10], chat=smol.instruct)[10]  # the vector's site is resid_post
    assert doc["multiplier"] == 0.5 and doc["alpha"] == pytest.approx(0.5 * norm / np.linalg.norm(v), rel=1e-6)
    r = CliRunner().invoke(cli, gen + ["--steer", str(chosen), prompt])
    assert r.exit_code == 0 and (json.loads(r.output)["alpha"], json.loads(r.output)["multiplier"]) == (1.5, 0.25)
    r = CliRunner().invoke(cli, gen + ["--steer", str(plain), prompt])
    assert isinstance(r.exception, MlxInterpError) and "records no chosen multiplier for layer 10" in str(r.exception)
    r = CliRunner().invoke(cli, gen + ["--steer", str(chosen), "--multiplier", "1", "--alpha", "2", prompt])
    assert isinstance(r.exception, MlxInterpError) and "not both" in str(r.exception)
    zero = mi.save_vector(tmp_path / "z.safetensors", VectorSet({10: np.zeros(576)}, "smollm2-135m", "random"))
    r = CliRunner().invoke(cli, gen + ["--steer", str(zero), "--multiplier", "0.5", prompt])  # was alpha 0.5 x norm / 1e-12
    assert isinstance(r.exception, MlxInterpError) and "zero norm" in str(r.exception)


def test_load_results_is_oldest_first_even_within_one_second(tmp_path):
    from mlx_interp.runs.results import load_results, save_result

    for i in range(3):  # same second: names get -2, -3 suffixes, which sort before the plain name
        save_result("expX", {"i": i}, out_dir=tmp_path)
    assert [d["results"]["i"] for d in load_results("expX", tmp_path)] == [0, 1, 2]


def test_blas_threads_are_chosen_deliberately_and_recorded(monkeypatch):
    """Override first; otherwise free cores of the affinity (at least 1); provenance records the choice."""
    from mlx_interp.runs import results
    from mlx_interp.runtime import blas as _blas

    monkeypatch.setenv("MLX_INTERP_THREADS", "3")
    assert _blas.choose_threads() == (3, "$MLX_INTERP_THREADS=3")
    monkeypatch.delenv("MLX_INTERP_THREADS")
    monkeypatch.delenv("OPENBLAS_NUM_THREADS", raising=False)
    cores = len(__import__("os").sched_getaffinity(0))
    monkeypatch.setattr(_blas, "_busy_other_cores", lambda: 0)
    assert _blas.choose_threads()[0] == cores
    monkeypatch.setattr(_blas, "_busy_other_cores", lambda: cores + 5)
    n, why = _blas.choose_threads()
    assert n == 1 and f"{cores + 5} busy" in why
    prov = results.provenance()
    assert prov["blas_threads"] == _blas.STATE["threads"] and prov["blas_threads_reason"] == _blas.STATE["threads_reason"]
    from mlx_interp.runtime import jit

    assert "jit_flags" in prov and prov["jit_flags"] == jit.STATE["flags"]


def test_results_diff_lists_what_moved(tmp_path):
    from mlx_interp.runs.compare import diff

    a = {"results": {"layer": 4, "text": "I cannot", "bypass": -0.76539, "rows": [{"kl": 0.1}, {"kl": 0.2}]}}
    b = {"results": {"layer": 4, "text": "I can't", "bypass": -0.76538, "rows": [{"kl": 0.1}], "new": 1}}
    d = {x.path: x for x in diff(a, b)}
    assert set(d) == {"/text", "/bypass", "/rows", "/new"}
    assert d["/bypass"].abs_diff == pytest.approx(1e-5) and d["/text"].abs_diff is None
    pa, pb = tmp_path / "a.json", tmp_path / "b.json"
    pa.write_text(json.dumps(a))
    pb.write_text(json.dumps({"results": {**a["results"], "bypass": -0.76538}}))
    p = _cli("results", "diff", str(pa), str(pb), "--atol", "1e-4")
    assert p.returncode == 0 and "0 differences; 1 float differences within atol=0.0001" in p.stdout
    p = _cli("results", "diff", str(pa), str(pb))
    assert p.returncode == 1 and "/bypass" in p.stdout
    (tmp_path / "c.json").write_text("{}")
    p = _cli("results", "diff", str(pa), str(tmp_path / "c.json"))
    assert p.returncode == 2 and "not an mlx-interp result file" in p.stderr
