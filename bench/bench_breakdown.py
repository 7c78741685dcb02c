"""Where a CPU forward pass spends its time: per op class at the model's own shapes, beside the sgemm roofline.

Per model, in one process, on an idle machine (median of ``--reps``): the whole prefill of 8 prompts x 128 tokens
(the model called directly, and through ``run`` with its hooks), then each op class alone at the same shapes, times
the number of layers: the linear projections (q, k, v, o, gate, up, down as fp32 matmuls), attention
(``mx.fast.scaled_dot_product_attention``, causal), RMSNorm (``mx.fast.rms_norm``), RoPE (``mx.fast.rope``), the
gated activation (mlx-lm's compiled ``swiglu``), the residual adds, and the last-token unembedding. The roofline is the best fp32 GFLOP/s of a
large square matmul here; "matmul at roofline" is the time the projections' FLOPs need at that rate. The share not
explained by the sum of the parts is the graph's own cost (scheduling, copies, masks, hooks).

Llama-family shapes (SmolLM2, Qwen2.5): Gemma's extra norms and GELU are not broken out.

    python bench/bench_breakdown.py [--models smollm2-135m@fp32 qwen2.5-coder-0.5b@fp32] [--reps 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import mlx_interp  # noqa: F401  (first: fast BLAS)

import mlx.core as mx
from mlx_lm.models.activations import swiglu  # mlx-lm's compiled silu(gate) * up

from mlx_interp.core.trace import run
from mlx_interp.store.models import load

B, T = 8, 128


def median_s(fn, reps: int) -> float:
    """Median wall seconds of ``fn()`` (which returns arrays to evaluate), after one warm-up."""
    mx.eval(fn())
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        mx.eval(fn())
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def roofline_gflops(reps: int, n: int = 1536) -> float:
    a, b = mx.random.normal((n, n)), mx.random.normal((n, n))
    return 2 * n ** 3 / median_s(lambda: a @ b, reps) / 1e9


def parts(lm, reps: int) -> tuple[dict, float]:
    """{op class: seconds for the whole model} and the projections' FLOPs."""
    a = lm.model.args
    d, L, H, KV = a.hidden_size, a.num_hidden_layers, a.num_attention_heads, a.num_key_value_heads
    hd = getattr(a, "head_dim", None) or d // H
    f, V = a.intermediate_size, a.vocab_size
    x = mx.random.normal((B * T, d))
    shapes = {"q": H * hd, "k": KV * hd, "v": KV * hd, "gate": f, "up": f}
    ws = {k: mx.random.normal((n, d)) * 0.02 for k, n in shapes.items()}
    w_o, w_down = mx.random.normal((d, H * hd)) * 0.02, mx.random.normal((d, f)) * 0.02
    xo, xf = mx.random.normal((B * T, H * hd)), mx.random.normal((B * T, f))
    q, kv = mx.random.normal((B, H, T, hd)), mx.random.normal((B, KV, T, hd))
    norm_w, h3 = mx.ones((d,)), mx.random.normal((B, T, d))
    w_emb, last = mx.random.normal((V, d)) * 0.02, mx.random.normal((B, d))
    base = getattr(a, "rope_theta", 10000.0)
    per_layer = {
        "linear projections": lambda: [x @ w.T for w in ws.values()] + [xo @ w_o.T, xf @ w_down.T],
        "attention (sdpa)": lambda: mx.fast.scaled_dot_product_attention(q, kv, kv, scale=hd ** -0.5, mask="causal"),
        "rmsnorm (x2)": lambda: [mx.fast.rms_norm(h3, norm_w, 1e-5), mx.fast.rms_norm(h3 + 1, norm_w, 1e-5)],
        "rope (q, k)": lambda: [mx.fast.rope(q, hd, traditional=False, base=base, scale=1.0, offset=0),
                                mx.fast.rope(kv, hd, traditional=False, base=base, scale=1.0, offset=0)],
        "activation (swiglu)": lambda: swiglu(xf, xf),
        "residual adds (x2)": lambda: [h3 + h3, h3 * 1.0 + h3],
    }
    out = {k: L * median_s(fn, reps) for k, fn in per_layer.items()}
    out["unembed (last token)"] = median_s(lambda: last @ w_emb.T, reps)
    flops = 2 * B * T * L * d * (sum(shapes.values()) + H * hd + f)
    return out, flops


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", nargs="*", default=["smollm2-135m@fp32", "qwen2.5-coder-0.5b@fp32"])
    ap.add_argument("--reps", type=int, default=5)
    a = ap.parse_args()
    peak = roofline_gflops(a.reps)
    print(f"forward-pass breakdown, {time.strftime('%Y-%m-%d %H:%M')}, prefill {B} x {T} tokens, median of {a.reps}; "
          f"sgemm roofline {peak:.1f} GFLOP/s")
    for name in a.models:
        lm = load(name)
        ids = mx.array([[(7 * i + j) % 1000 + 100 for j in range(T)] for i in range(B)])
        whole = median_s(lambda: lm.model(ids)[:, -1], a.reps)
        hooked = median_s(lambda: run(lm, ids.tolist(), batch_size=None).logits, a.reps)
        ops, flops = parts(lm, a.reps)
        total = sum(ops.values())
        print(f"\n{name}: whole forward {whole * 1e3:.0f} ms (model call), {hooked * 1e3:.0f} ms through run() "
              f"({hooked / whole:.2f}x); {B * T / whole:.0f} tokens/s")
        print(f"  {'op class':<26} {'ms':>8} {'share of whole':>15}")
        for k, s in sorted(ops.items(), key=lambda kv: -kv[1]):
            print(f"  {k:<26} {s * 1e3:>8.1f} {s / whole:>14.0%}")
        print(f"  {'sum of the parts':<26} {total * 1e3:>8.1f} {total / whole:>14.0%}")
        print(f"  {'not in the parts':<26} {(whole - total) * 1e3:>8.1f} {(whole - total) / whole:>14.0%}")
        at_peak = flops / (peak * 1e9)
        print(f"  projections: {flops / 1e9:.1f} GFLOP, {flops / ops['linear projections'] / 1e9:.1f} GFLOP/s alone "
              f"({flops / ops['linear projections'] / 1e9 / peak:.0%} of roofline); at roofline they need "
              f"{at_peak * 1e3:.0f} ms = {at_peak / whole:.0%} of the whole forward")


if __name__ == "__main__":
    main()
