"""Make a loaded model fast on MLX's CPU backend without changing anything on Metal.

MLX's CPU kernels are fast only for fp32 matmul through BLAS (with the OpenBLAS that
``runtime.blas`` preloads); 4-bit ``quantized_matmul`` and fp16/bf16 matmuls run scalar
on one core (PLATFORM.md: 2 GFLOP/s and 0.06 GFLOP/s). So on the CPU we dequantize every
quantized layer once at load and cast all parameters to fp32. The checkpoint on disk stays
4-bit; only the in-memory copy changes. Models whose fp32 copy would not fit in half the
machine's memory keep their quantized layers (scales cast to fp32) and we say so.
"""

from __future__ import annotations

import os
import sys

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten

from . import blas as _blas


def running_on_cpu() -> bool:
    """True when MLX's default device is the CPU (Linux wheels, or forced by the user)."""
    return mx.default_device() == mx.cpu


def _total_memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 16 << 30


def param_count(model: nn.Module) -> int:
    """Number of weights as dense values (packed quantized weights counted unpacked)."""
    n = 0
    for _, m in model.named_modules():
        if isinstance(m, (nn.QuantizedLinear, nn.QuantizedEmbedding)):
            n += m.weight.size * 32 // m.bits  # 3-, 5- and 6-bit values straddle uint32 words
    for k, v in tree_flatten(model.parameters()):
        if not k.endswith(("scales", "biases")) and v.dtype != mx.uint32:
            n += v.size
    return n


def optimize_for_cpu(model: nn.Module, memory_fraction: float = 0.5) -> dict:
    """Dequantize to dense fp32 when it fits; returns what was done (for provenance)."""
    from mlx_lm.utils import dequantize_model

    fp32_bytes = param_count(model) * 4
    dense = fp32_bytes <= memory_fraction * _total_memory()
    # floating params only (packed uint32 weights and uint8 fp-format scales untouched); first, so that
    # dequantize_model, which works in the scales' dtype, computes scale * q + bias in fp32, not float16
    model.set_dtype(mx.float32)
    if dense:
        dequantize_model(model)
        # mxfp4/nvfp4 scales are uint8, so dequantize_model gives their layers bfloat16 weights (exact: e2m1 times a
        # power of two or an e4m3 scale fits bf16's mantissa), which every matmul then cast to fp32 again (BUGFIX #63)
        model.set_dtype(mx.float32)
    mx.eval(model.parameters())
    msg = _blas.notice()
    if msg:
        print(msg, file=sys.stderr)
    if not dense:
        print(
            f"mlx-interp: keeping quantized weights (fp32 copy would need {fp32_bytes / 2**30:.1f} GiB); "
            "prefill will be slow on the CPU",
            file=sys.stderr,
        )
    return {"dense_fp32": dense, "fp32_gib": round(fp32_bytes / 2**30, 2), "blas": _blas.STATE["loaded"]}
