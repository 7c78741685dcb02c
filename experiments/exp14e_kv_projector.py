"""exp14e: a cross-model KV-cache projector (the study's stretch goal, after Cache-to-Cache): can one model continue
from another model's cache of a text?

    python -m experiments.exp14e_kv_projector [--model smollm2-135m --model qwen2.5-coder-0.5b] [--quick] [--one-way]

For each ordered pair of the two models (source -> receiver; default the study's pair, SmolLM2-135M with 30 layers
and 3 KV heads of 64, and Qwen2.5-Coder-0.5B with 24 layers and 2 KV heads of 64):

1. **Fit** (``mlx_interp.transfer.kv_projector``): per receiver layer, linear maps of un-rotated keys and of values
   from the source's layer at the same relative depth, trained with AdamW in MLX (``transfer.adapters``) on the
   shipped passages' train split, tokens aligned by character offsets; held-out R^2 and cosine per layer on the val
   split. Wall time and aligned tokens per second are recorded.
2. **Evaluate** 14a persistence and 14b retrieval (known and counterfactual facts) on the receiver, greedy, each
   item under: the question alone; the source as text, read by the receiver itself (the ceiling); the source's cache
   projected; another item's source projected (does the answer follow the projected content?); matched-norm noise
   in place of the projected cache (``cache_ops.noise_like``). Rates with Wilson intervals; paired differences of
   the projected cache to the noise control and to the question alone, with bootstrap intervals.

Nothing is chosen on the evaluation items: the maps are fitted on passages the evaluation never reads, with fixed
settings (200 AdamW steps, lr 0.01, seed 0). Deviations from C2C: linear per-layer maps (C2C trains a non-linear
projector with a learned gate that fuses the projected cache with the receiver's own), fitted to reproduce the
receiver's own cache of the same text rather than trained end to end on the receiver's next-token loss, and the
projected cache replaces the receiver's cache of the source instead of being fused with it.
--quick: 24 fit + 8 val passages, 6 persistence and 8 retrieval items (4 known + 4 counterfactual), 16 tokens.
Full: 60 + 20 passages, every item, 24 tokens.
"""

from __future__ import annotations

import sys
import time

import mlx_interp as mi
from experiments.common import journaled, parse, progress
from experiments.exp14_kv_transfer import answers, load_items
from mlx_interp.core.cache_ops import noise_like
from mlx_interp.errors import MlxInterpError
from mlx_interp.measures.stats import paired_diff, rate
from mlx_interp.methods import kv_transfer as kt
from mlx_interp.tasks.datasets import passages
from mlx_interp.tasks.twohop import mentions
from mlx_interp.transfer.kv_projector import fit_projector
from mlx_interp.transfer.pairs import tokens_with_offsets

NAME = "exp14e_kv_projector"
DEFAULT_PAIR = ("smollm2-135m", "qwen2.5-coder-0.5b")
QUICK = {"fit": 24, "val": 8, "persistence": 6, "retrieval": 8, "max_tokens": 16}
FULL = {"fit": 60, "val": 20, "persistence": None, "retrieval": None, "max_tokens": 24}
CONDITIONS = ("none", "text", "projected", "projected_other", "noise")
STEPS, LR, SEED = 200, 1e-2, 0


def item_conditions(proj, source_lm, target_lm, it: dict, other: dict) -> dict:
    """name -> (receiver cache or None, receiver tokens to generate from) for one item."""
    q = kt.question_ids(target_lm, it["question"])
    src = proj.project(source_lm, target_lm, it["source"])
    return {"none": (None, kt.alone_ids(target_lm, it["question"])),
            "text": (None, tokens_with_offsets(target_lm, it["source"])[0] + q),
            "projected": (src, q),
            "projected_other": (proj.project(source_lm, target_lm, other["source"]), q),
            "noise": (noise_like(src, seed=SEED), q)}


def evaluate(proj, source_lm, target_lm, items: list[dict], facts_of, max_tokens: int, label: str) -> dict:
    flags, examples = {c: [] for c in CONDITIONS}, {}
    for i, it in enumerate(items):
        gens = answers(target_lm, item_conditions(proj, source_lm, target_lm, it, items[(i + 1) % len(items)]), max_tokens)
        for name, g in gens.items():
            flags[name].append(all(mentions(g.text, [f]) for f in facts_of(it)))
        if i < 3:
            examples[it["source"]] = {n: g.text for n, g in gens.items()}
        progress(i + 1, len(items), label)
    as_float = {n: [float(x) for x in v] for n, v in flags.items()}
    return {"n": len(items), "rates": {n: rate(v).as_dict() for n, v in flags.items()},
            "projected_minus_noise": paired_diff(as_float["projected"], as_float["noise"]),
            "projected_minus_none": paired_diff(as_float["projected"], as_float["none"]),
            "examples": examples, "flags": {n: [bool(x) for x in v] for n, v in flags.items()}}


def study(source_lm, target_lm, items: dict, quick: bool) -> dict:
    sizes = QUICK if quick else FULL
    t0 = time.time()
    print(f"  fitting {source_lm.name} -> {target_lm.name}", file=sys.stderr, flush=True)
    proj = fit_projector(source_lm, target_lm, passages("train")[:sizes["fit"]], val_texts=passages("val")[:sizes["val"]],
                         steps=STEPS, lr=LR, seed=SEED, progress=lambda i, n: progress(i, n, "maps (layer x K/V)"))
    fit_s = time.time() - t0
    ret = items["retrieval"]
    if sizes["retrieval"] is not None:
        h = sizes["retrieval"] // 2
        ret = [r for r in ret if r["kind"] == "known"][:h] + [r for r in ret if r["kind"] == "counterfactual"][:sizes["retrieval"] - h]
    per = items["persistence"][:sizes["persistence"]]
    out = {"source": source_lm.describe(), "target": target_lm.describe(),
           "config": {**sizes, "steps": STEPS, "lr": LR, "seed": SEED, "decoding": "greedy", "conditions": list(CONDITIONS),
                      "fit_texts": "passages train split (mlx_interp/tasks/data/passages/SOURCE.md)",
                      "val_texts": "passages val split", "selection": "none: fixed settings, no choice on evaluation items"},
           "projector": {**proj.meta, "fit_wall_s": fit_s}}
    out["persistence"] = evaluate(proj, source_lm, target_lm, per, lambda it: it["facts"], sizes["max_tokens"], "14e persistence")
    out["retrieval"] = evaluate(proj, source_lm, target_lm, ret, lambda it: [it["answer"]], sizes["max_tokens"], "14e retrieval")
    kinds = sorted({r.get("kind", "user") for r in ret})
    out["retrieval"]["by_kind"] = {k: {n: rate([f for f, r in zip(v, ret) if r.get("kind", "user") == k]).as_dict()
                                       for n, v in out["retrieval"]["flags"].items()} for k in kinds}
    return out


def run(models: list, quick: bool, out_dir: str, both_ways: bool = True) -> list[str]:
    """Both directions of the pair (or the first model to the second only); one result file each
    (``e_<source>_to_<target>``)."""
    if len(models) != 2:
        raise MlxInterpError(f"exp14e projects between exactly two models; got {len(models)} (give --model twice)")
    a, b = models
    if a.name == b.name:
        raise MlxInterpError(f"exp14e needs two different models; both are {a.name}")
    items = load_items(None)
    paths = []
    for src, tgt in ((a, b), (b, a)) if both_ways else ((a, b),):
        t0 = time.time()
        res = study(src, tgt, items, quick)
        paths.append(str(mi.save_result(NAME, res, lm=tgt, wall_s=time.time() - t0, out_dir=out_dir,
                                        tag=f"e_{src.name}_to_{tgt.name}", config={"quick": quick})))
    return paths


def main(argv=None) -> list[str]:
    a = parse(__doc__.strip().splitlines()[0], argv, extra=lambda ap: ap.add_argument(
        "--one-way", action="store_true", help="project from the first model to the second only"))
    paths = journaled(NAME, a, argv, lambda: run([mi.load(m) for m in (a.model or DEFAULT_PAIR)], a.quick, a.out,
                                                 both_ways=not a.one_way))
    for p in paths:
        print(f"  -> {p}")
    return paths


if __name__ == "__main__":
    main()
