"""Precision variants (issue 17): every MLX format builds as an mlx-community folder that plain mlx_lm.load reads,
the CPU path's dense fp32 weights give the quantized kernels' logits, and a mislabelled folder is refused."""

from __future__ import annotations

import json
import shutil

import mlx.core as mx
import numpy as np
import pytest
from mlx.utils import tree_flatten

from mlx_interp.errors import MlxInterpError
from mlx_interp.store.models import load, prepare

PROMPT = "The capital of France is"
#: the dense CPU path must reproduce the quantized kernels (fp32 activations) to this fraction of the largest logit
DENSE_VS_KERNEL_RTOL = 1e-4


@pytest.mark.slow
@pytest.mark.parametrize("precision, bits, group, mode", [
    ("4bit", 4, 32, "affine"), ("4bit-g64", 4, 64, "affine"), ("8bit", 8, 32, "affine"), ("3bit", 3, 32, "affine"),
    ("2bit", 2, 32, "affine"), ("mxfp4", 4, 32, "mxfp4"), ("nvfp4", 4, 16, "nvfp4")])
def test_variant_loads_with_plain_mlx_lm_and_dense_path_equals_kernels(precision, bits, group, mode):
    """The study measures the weights, not the kernel: dequantized fp32 logits = quantized-kernel logits.

    Every quantized precision of exp15's full grid. Before this check the dense path dequantized in the scales'
    float16, off by 3e-3 of the largest logit."""
    import mlx_lm

    folder = prepare("smollm2-135m", precision)
    q = json.loads((folder / "config.json").read_text())["quantization"]
    assert (q["bits"], q["group_size"], q["mode"]) == (bits, group, mode)
    kernel_model, tok = mlx_lm.load(str(folder))  # plain mlx-lm: quantized modules and kernels
    kernel_model.set_dtype(mx.float32)
    ids = mx.array([tok.encode(PROMPT)])
    kernel = np.array(kernel_model(ids)[0])  # every position
    lm = load(f"smollm2-135m@{precision}")
    assert lm.cpu_path["dense_fp32"] and not any("Quantized" in type(m).__name__ for _, m in lm.model.named_modules())
    params = dict(tree_flatten(lm.model.parameters()))
    assert {str(v.dtype) for v in params.values()} == {"mlx.core.float32"}  # BUGFIX #63: mxfp4/nvfp4 came out bf16
    if mode != "affine":  # ... and bf16 held those weights exactly, so results computed before the fix are unchanged
        lowered = [w for k, w in params.items() if k.endswith("proj.weight")]
        assert len(lowered) == 7 * lm.n_layers
        assert all(mx.array_equal(w.astype(mx.bfloat16).astype(mx.float32), w) for w in lowered)
    dense = np.array(lm.model(ids)[0])
    assert np.abs(dense - kernel).max() <= DENSE_VS_KERNEL_RTOL * np.abs(kernel).max()
    if bits >= 3:  # 2-bit SmolLM2 no longer knows it; the equality above is what this test is for
        assert tok.decode([int(dense[-1].argmax())]) == " Paris"


@pytest.mark.slow
@pytest.mark.parametrize("precision, dtype", [("bf16", mx.bfloat16), ("fp16", mx.float16)])
def test_float_variant_loads_with_plain_mlx_lm(precision, dtype):
    """exp15's FP16 analogues are dense mlx-community folders in that dtype, and they still answer the prompt."""
    import mlx_lm

    folder = prepare("smollm2-135m", precision)
    assert "quantization" not in json.loads((folder / "config.json").read_text())
    model, tok = mlx_lm.load(str(folder))
    weight = model.model.layers[0].mlp.down_proj.weight
    assert weight.dtype == dtype
    logits = model(mx.array([tok.encode(PROMPT)]))[0, -1]
    assert tok.decode([int(logits.argmax())]) == " Paris"


def test_mirror_lowers_only_the_gguf_4bit_tensors():
    """A 3-bit mirror keeps the GGUF's 8-bit embedding at 8 bits (as the 4-bit default does) and lowers the rest."""
    q3 = json.loads((prepare("smollm2-135m", "3bit") / "config.json").read_text())["quantization"]
    q4 = json.loads((prepare("smollm2-135m") / "config.json").read_text())["quantization"]
    kept = lambda q: {k: v["bits"] for k, v in q.items() if isinstance(v, dict)}  # noqa: E731
    assert kept(q3) == kept(q4) == {"model.embed_tokens": 8}
    assert q3["bits"] == 3


@pytest.mark.parametrize("variant,key,label,msg", [("3bit", "bits", 4, "bits 4 declared, 3 found"),
                                                   ("4bit-g64", "group_size", 32, "group_size 32 declared, 64 found")])
def test_mislabelled_variant_folder_is_refused(tmp_path, variant, key, label, msg):
    """mlx-lm infers bits and group size from the weights' shapes when config.json is wrong; we refuse the mislabelled
    folder."""
    bad = tmp_path / f"smollm2-{variant}-labelled-{key}-{label}"
    shutil.copytree(prepare("smollm2-135m", variant), bad)
    cfg = json.loads((bad / "config.json").read_text())
    cfg["quantization"][key] = cfg["quantization_config"][key] = label
    (bad / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(MlxInterpError) as e:
        load(str(bad))
    assert "\n" not in str(e.value) and msg in str(e.value)
