"""MLX's CPU JIT compiles for this CPU (runtime/jit.py): its kernels use the FMA instruction instead of libm calls,
whole-model logits stay bit-identical, and compiles that are not MLX's kernels are left alone."""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from mlx_interp.runtime import jit

pytestmark = pytest.mark.skipif(shutil.which("objdump") is None or shutil.which("g++") is None,
                                reason="needs g++ and objdump (binutils)")

CHILD = r"""
import json, sys
import mlx_interp as mi
from mlx_interp.runtime import jit
import mlx.core as mx, numpy as np
for name in sys.argv[2:]:
    lm = mi.load(name)
    ids = lm.tokenizer.encode("The capital of France is Paris, and the capital of Italy is")
    np.save(f"{sys.argv[1]}/{name}.npy", np.array(lm.model(mx.array([ids])).astype(mx.float32)))
print(json.dumps(jit.STATE))
"""

MODELS = ["smollm2-135m", "gemma-3-270m"]  # swiglu (Llama family) and gelu_approx (Gemma): MLX compiles both


def _child(out: str, tmpdir: str, **env) -> dict:
    os.makedirs(out, exist_ok=True)
    os.makedirs(tmpdir, exist_ok=True)
    e = {k: v for k, v in os.environ.items() if k != "MLX_INTERP_JIT_FLAGS"}
    e.update(TMPDIR=tmpdir, MLX_INTERP_THREADS="1", **env)  # one BLAS thread count for both: only the JIT differs
    p = subprocess.run([sys.executable, "-c", CHILD, out, *MODELS], env=e, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr[-2000:]
    return json.loads(p.stdout.strip().splitlines()[-1])


def _disassembly(folder: str) -> str:
    libs = glob.glob(os.path.join(folder, "mlx", "*", "cpu", "*.so"))
    assert libs, f"no JIT kernel was compiled under {folder}"
    return "".join(subprocess.run(["objdump", "-d", lib], capture_output=True, text=True, check=True).stdout
                   for lib in libs)


def test_jit_kernels_use_fma_and_logits_stay_bit_identical(tmp_path):
    if not jit._cpu_has(jit.MLX_AVX2_FLAGS):
        pytest.skip("this CPU lacks avx2/fma/f16c: the JIT keeps MLX's own flags")
    fast = _child(str(tmp_path / "fast"), str(tmp_path / "tmp-fast"))
    stock = _child(str(tmp_path / "stock"), str(tmp_path / "tmp-stock"), MLX_INTERP_JIT_FLAGS="none")
    assert fast["flags"] == "-mavx2 -mfma -mf16c -ffp-contract=off" and fast["kernels"].startswith(str(tmp_path / "tmp-fast"))
    assert stock["flags"] is None and "MLX_INTERP_JIT_FLAGS=none" in stock["reason"]
    fast_asm, stock_asm = _disassembly(fast["kernels"]), _disassembly(str(tmp_path / "tmp-stock"))
    assert "vfmadd" in fast_asm and "fmaf@plt" not in fast_asm  # the instruction, not a call
    assert "fmaf@plt" in stock_asm and "vfmadd" not in stock_asm  # what the portable wheel's JIT does
    for name in MODELS:
        a, b = np.load(tmp_path / "fast" / f"{name}.npy"), np.load(tmp_path / "stock" / f"{name}.npy")
        assert a.shape == b.shape and np.array_equal(a, b), f"{name}: max |diff| {np.abs(a - b).max()}"


def test_wrapper_adds_flags_only_to_kernels_in_its_folder(tmp_path):
    folder = str(tmp_path / "kernels")
    os.makedirs(folder)
    wrapper = tmp_path / "g++"
    wrapper.write_text(jit.wrapper_script(shutil.which("g++"), "-mavx2 -mfma", folder))
    wrapper.chmod(0o755)
    src = tmp_path / "f.cpp"
    src.write_text('#include <cmath>\nextern "C" float f(float a, float b, float c) { return std::fma(a, b, c); }\n')
    for out, fused in ((os.path.join(folder, "k.so"), True), (str(tmp_path / "other.so"), False)):
        subprocess.run([str(wrapper), "-std=c++17", "-O3", "-fPIC", "-shared", str(src), "-o", out], check=True)
        asm = subprocess.run(["objdump", "-d", out], capture_output=True, text=True, check=True).stdout
        assert ("vfmadd" in asm) == fused, out


def test_a_configured_process_pins_pythons_tempfile_and_its_children_reuse_the_folder(tmp_path):
    """The pytest process itself imported mlx_interp: Python's tempfile kept the original folder, MLX's C++ side sees
    the kernel folder, and a child process (which inherits both) wraps the real compiler into the same folder."""
    if jit.STATE["reason"] != "ok":
        pytest.skip(f"the JIT is not configured here: {jit.STATE['reason']}")
    import tempfile

    assert os.environ["TMPDIR"] == jit.STATE["kernels"] != tempfile.gettempdir()
    code = "import mlx_interp, json; from mlx_interp.runtime import jit; print(json.dumps(jit.STATE))"
    child = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                      check=True).stdout.strip().splitlines()[-1])
    assert child["kernels"] == jit.STATE["kernels"]
    real = jit._real_compiler(os.path.join(child["kernels"], "bin", "g++"))
    assert os.path.isfile(real) and jit._PREFIX not in real  # not a wrapper calling itself


def test_flags_the_compiler_rejects_stop_the_import_in_one_line():
    env = dict(os.environ, MLX_INTERP_JIT_FLAGS="-mno-such-flag")
    p = subprocess.run([sys.executable, "-c", "import mlx_interp"], env=env, capture_output=True, text=True)
    assert p.returncode != 0
    last = p.stderr.strip().splitlines()[-1]
    assert "MLX_INTERP_JIT_FLAGS='-mno-such-flag'" in last and "none" in last
