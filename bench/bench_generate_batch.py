"""Generation cost per prompt against batch size, for held-out refusal evaluations (exp7 `_gen_eval`).

Per model, in one process: greedy generation of a fixed number of tokens (no EOS stop, so every
batch does the same work) for the first N harmful eval prompts, in batches of 16, 32 and 64,
length-sorted; prints seconds per prompt and the ratio to batch 16.

    python bench/bench_generate_batch.py [--models qwen2.5-coder-0.5b] [--n 64] [--tokens 64]
"""

from __future__ import annotations

import argparse
import time

import mlx_interp  # noqa: F401  (first: fast BLAS)

from mlx_interp.tasks.datasets import refusal_eval_prompts
from mlx_interp.core.generate import generate
from mlx_interp.store.models import load


def per_prompt(lm, prompts: list[str], batch: int, tokens: int) -> float:
    """Seconds per prompt for greedy generation of ``tokens`` tokens in length-sorted batches."""
    t = time.perf_counter()
    generate(lm, prompts, max_tokens=tokens, stop_at_eos=False, chat=True, batch_size=batch)
    return (time.perf_counter() - t) / len(prompts)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", nargs="*", default=["qwen2.5-coder-0.5b"])
    ap.add_argument("--n", type=int, default=64, help="prompts per batch size (a multiple of 64 keeps batches full)")
    ap.add_argument("--tokens", type=int, default=64)
    a = ap.parse_args()
    print(f"generation cost vs batch size, {time.strftime('%Y-%m-%d %H:%M')}, {a.n} prompts x {a.tokens} tokens")
    print(f"{'model':<20} {'batch':>5} {'s/prompt':>9} {'vs 16':>6}")
    for alias in a.models:
        lm = load(alias)
        prompts = refusal_eval_prompts()[0][:a.n]
        generate(lm, prompts[:2], max_tokens=2, chat=True)  # warm-up
        base = None
        for b in (16, 32, 64):
            s = per_prompt(lm, prompts, b, a.tokens)
            base = base or s
            print(f"{alias:<20} {b:>5} {s:>9.3f} {s / base:>6.2f}", flush=True)


if __name__ == "__main__":
    main()
