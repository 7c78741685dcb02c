"""How much each 4-bit conversion recipe changes the model, against the fp32 conversion.

For each offline model, converts the same GGUF three ways into a temporary folder
(mirror/group 32 = the default, mirror/group 64, uniform/group 32) and prints the mean
KL(fp32 || variant) of next-token distributions over every position of four prompts,
and the top-1 agreement. The fp32 conversion itself matches an independent PyTorch
reference to 1e-4 (tests/test_conversion.py).

    python bench/quant_recipes.py [--models smollm2-135m ...]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import mlx_interp  # noqa: F401  (first: fast BLAS)
import numpy as np

from mlx_interp.store.convert import convert_gguf
from mlx_interp.store.fetch import assemble_gguf
from mlx_interp.store.models import cache_dir, load
from mlx_interp.store.registry import REGISTRY
from mlx_interp.core.trace import run

PROMPTS = [
    "The capital of France is a city with a long history and",
    "def fibonacci(n):\n    if n < 2:\n        return n\n",
    "Once upon a time, in a small village by the sea, there lived",
    "Water is made of hydrogen and oxygen. The chemical formula",
]


def _logsoftmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", nargs="*", default=["smollm2-135m", "gemma-3-270m", "qwen2.5-coder-0.5b"])
    a = ap.parse_args()
    print(f"{'model':<20} {'recipe':<16} {'KL(fp32||q)':>12} {'top-1 agree':>12} {'disk MB':>8}")
    for alias in a.models:
        ref = load(f"{alias}@fp32")
        refs = [_logsoftmax(np.array(run(ref, p, logits="all").logits[0], dtype=np.float64)) for p in PROMPTS]
        gguf = assemble_gguf(REGISTRY[alias].offline, cache_dir(), progress=lambda s: None)
        with tempfile.TemporaryDirectory() as tmp:
            for recipe, gs in (("mirror", 32), ("mirror", 64), ("uniform", 32)):
                out = Path(tmp) / f"{recipe}-{gs}"
                convert_gguf(gguf, out, f"4bit-g{gs}-{recipe}",
                             config_overrides=REGISTRY[alias].offline.config_overrides, progress=lambda s: None)
                lm = load(str(out))
                kls, agree = [], []
                for p, lr in zip(PROMPTS, refs):
                    lq = _logsoftmax(np.array(run(lm, p, logits="all").logits[0], dtype=np.float64))
                    kls.append((np.exp(lr) * (lr - lq)).sum(-1).mean())
                    agree.append((lr.argmax(-1) == lq.argmax(-1)).mean())
                mb = sum(f.stat().st_size for f in out.glob("*.safetensors")) / 1e6
                print(f"{alias:<20} {recipe + '/g' + str(gs):<16} {np.mean(kls):>12.4f} {np.mean(agree):>12.3f} {mb:>8.0f}", flush=True)


if __name__ == "__main__":
    main()
