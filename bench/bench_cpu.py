"""CPU throughput: plain mlx-lm as installed vs mlx-interp's CPU path vs PyTorch+transformers.

Each engine runs in its own subprocess (the BLAS preload is process-wide), on the same
prepared checkpoint / the same GGUF weights, and prints JSON; this script prints the
table and the ratios. Workload: prefill of 8 prompts x 128 tokens (tokens/s), and greedy
decode of 32 tokens for one prompt (tokens/s, prefill excluded).

Plain mlx-lm on a float16-scaled 4-bit checkpoint (the mlx-community format) runs MLX's
scalar fp16 quantized CPU kernels at well under 1 token/s here, so by default it prefills
1 prompt x 8 tokens and decodes 4 tokens (its tokens/s does not improve with batch or
length: it is compute bound); ``--full`` gives it the same 8 x 128 / 32 workload (hours).

    python bench/bench_cpu.py [--models smollm2-135m ...] [--full] [--no-torch]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

N_PROMPTS, N_TOKENS, N_DECODE = 8, 128, 32


def _prompts(vocab: int, n: int):
    import numpy as np

    return np.random.default_rng(0).integers(100, min(vocab, 30000), size=(n, N_TOKENS)).tolist()


def engine_plain(alias: str, n_prompts: int, n_tokens: int = 8, n_decode: int = 4) -> dict:
    import mlx.core as mx
    from mlx_lm import load
    from mlx_lm.generate import generate_step

    from mlx_interp.store.models import prepared_dir  # path only; imported after mlx: no BLAS preload

    model, tok = load(str(prepared_dir(alias)))
    if n_prompts == N_PROMPTS:
        n_tokens, n_decode = N_TOKENS, N_DECODE
    ids = mx.array(_prompts(model.args.vocab_size, n_prompts))[:, :n_tokens]
    t = time.perf_counter()
    mx.eval(model(ids))
    prefill = ids.size / (time.perf_counter() - t)
    gen = generate_step(ids[0, :8], model, max_tokens=n_decode + 1)
    next(gen)
    t = time.perf_counter()
    n = sum(1 for _ in gen)
    return {"prefill_tps": prefill, "decode_tps": n / (time.perf_counter() - t), "prefill_shape": [n_prompts, n_tokens],
            "decode_tokens": n}


def engine_interp(alias: str, n_prompts: int) -> dict:
    import mlx_interp  # noqa: F401  (first: preloads OpenBLAS)
    import mlx.core as mx

    from mlx_interp.core.generate import generate
    from mlx_interp.store.models import load
    from mlx_interp.core.trace import run

    lm = load(alias)
    ids = _prompts(lm.config["vocab_size"], n_prompts)
    run(lm, [ids[0][:8]])
    t = time.perf_counter()
    run(lm, ids)
    prefill = n_prompts * N_TOKENS / (time.perf_counter() - t)
    # decode: time N tokens after the prefill (prefill timed separately and subtracted)
    t = time.perf_counter()
    run(lm, [ids[0][:16]])
    t_pre = time.perf_counter() - t
    t = time.perf_counter()
    g = generate(lm, [ids[0][:16]], max_tokens=N_DECODE, chat=False)[0]
    dt = time.perf_counter() - t - t_pre
    mx.eval()
    return {"prefill_tps": prefill, "decode_tps": len(g.tokens) / dt, "prefill_shape": [n_prompts, N_TOKENS],
            "blas": mlx_interp.runtime.blas.STATE["loaded"]}


def engine_torch(alias: str, n_prompts: int) -> dict:
    import torch
    from transformers import AutoModelForCausalLM

    from mlx_interp.store.fetch import assemble_gguf
    from mlx_interp.store.models import cache_dir
    from mlx_interp.store.registry import REGISTRY

    torch.set_num_threads(2)
    g = assemble_gguf(REGISTRY[alias].offline, cache_dir(), progress=lambda s: None)
    model = AutoModelForCausalLM.from_pretrained(str(g.parent), gguf_file=g.name, dtype=torch.float32)
    ids = torch.tensor(_prompts(model.config.vocab_size, n_prompts))
    with torch.no_grad():
        model(ids[:1, :8])
        t = time.perf_counter()
        model(ids, logits_to_keep=1)
        prefill = ids.numel() / (time.perf_counter() - t)
        x = ids[:1, :16]
        t = time.perf_counter()
        model(x, logits_to_keep=1)
        t_pre = time.perf_counter() - t
        t = time.perf_counter()
        out = model.generate(x, max_new_tokens=N_DECODE, min_new_tokens=N_DECODE, do_sample=False)
        dt = time.perf_counter() - t - t_pre
    return {"prefill_tps": prefill, "decode_tps": (out.shape[1] - x.shape[1]) / dt, "prefill_shape": [n_prompts, N_TOKENS]}


def _sub(engine: str, alias: str, n: int) -> dict | None:
    p = subprocess.run([sys.executable, __file__, "--engine", engine, "--alias", alias, "--n", str(n)],
                       capture_output=True, text=True)
    lines = [line for line in p.stdout.splitlines() if line.startswith("{")]
    if p.returncode != 0 or not lines:
        print(f"  [{engine} on {alias} failed: {(p.stderr.strip().splitlines() or ['?'])[-1]}]", file=sys.stderr)
        return None
    return json.loads(lines[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", nargs="*", default=["smollm2-135m", "gemma-3-270m", "qwen2.5-coder-0.5b"])
    ap.add_argument("--full", action="store_true", help="plain mlx-lm also prefills 8 x 128")
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--engine")
    ap.add_argument("--alias")
    ap.add_argument("--n", type=int, default=N_PROMPTS)
    a = ap.parse_args()
    if a.engine:
        fn = {"plain": engine_plain, "interp": engine_interp, "torch": engine_torch}[a.engine]
        print(json.dumps(fn(a.alias, a.n)))
        return
    import importlib.util

    from mlx_interp.store.models import prepare

    has_torch = importlib.util.find_spec("torch") is not None and not a.no_torch
    if not has_torch and not a.no_torch:
        print("PyTorch peer skipped: torch is not installed (pip install -e '.[reference]')")
    print(f"CPU benchmark, {time.strftime('%Y-%m-%d %H:%M')}  (prefill tokens/s | decode tokens/s)")
    print(f"{'model':<20} {'engine':<22} {'prefill':>9} {'decode':>8}   prefill shape")
    for alias in a.models:
        prepare(alias, progress=lambda s: None)
        res = {"plain": _sub("plain", alias, N_PROMPTS if a.full else 1), "interp": _sub("interp", alias, N_PROMPTS)}
        if has_torch:
            res["torch"] = _sub("torch", alias, N_PROMPTS)
        names = {"plain": "mlx-lm as installed", "interp": "mlx-interp CPU path", "torch": "PyTorch+transformers"}
        for k, r in res.items():
            if r:
                print(f"{alias:<20} {names[k]:<22} {r['prefill_tps']:>9.1f} {r['decode_tps']:>8.1f}   {r['prefill_shape']}")
        i = res["interp"]
        for k in ("plain", "torch"):
            r = res.get(k)
            if i and r:
                print(f"{alias:<20} {'ratio interp/' + k:<22} {i['prefill_tps'] / r['prefill_tps']:>8.1f}x {i['decode_tps'] / r['decode_tps']:>7.2f}x")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
