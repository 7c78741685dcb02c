"""exp14: KV-cache transfer: cache signatures, transplants into another context, and what carries them.

    python -m experiments.exp14_kv_transfer --model smollm2-135m [--quick] [--prompts RETRIEVAL.jsonl]

The study's plan, on our items (mlx_interp/tasks/data/kv_transfer/SOURCE.md; the study's own examples first):
- 14-0 signatures: per prompt and layer, the mean stored K (and V) vector norm of grounded vs confabulated
  statements; Cohen's d per layer with a bootstrap interval, and over all layers, beside the earlier phase's
  d = 0.83 (whose items and measure we do not have: the comparison is of magnitude only).
- 14a persistence: "Hello, my name is Lyra and I live in Seattle." -> "What is your name and where do you live?";
  the answer must name both (word boundaries). 21 name/place pairs.
- 14b retrieval: a statement -> its question; known facts and counterfactual ones (invented entities: only the
  source can supply the answer, so retrieval is told apart from memory).
- 14c/14d cross-topic and mode: a creative or fictional source before an unrelated factual question; each answer
  is broken (incoherent: perplexity under the question alone > 15 or 3-gram repetition > 0.5), transferred
  (coherent and naming a source marker) or unaffected.
Conditions (mlx_interp.methods.kv_transfer): controls (question alone; source as text; the source's own cache
continued, which must reproduce the text exactly; matched-norm noise; another item's cache; a neutral text's
cache), injection position (start / middle / end of a neutral filler, moved with re-rotated keys, beside the
same tokens as text and the cache moved without re-rotation), and the parts that carry it (the source's K/V
spliced into the neutral cache in one window of layers; keys only; values only; one KV head).
Greedy decoding; every rate has its n and a Wilson interval, and each transplant has a paired difference to
the noise control with a bootstrap interval. Nothing is chosen, so there is no selection split: the windows,
positions and heads are reported as a sweep.
--quick: 6 persistence items, 8 retrieval (4 + 4), 12 signature pairs, 4 cross-topic items, 16 tokens. Both runs
use a 200-token filler on each side of the moved cache (runs before 2026-12-02 used 24: see FILLER_TOKENS).
--prompts: your own retrieval items (JSONL of {"source", "question", "answer"[, "kind"]}) in place of 14b's.
14e, the cross-model projector, is experiments/exp14e_kv_projector.py (it needs a pair of models).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from experiments.common import main, progress
from mlx_interp.core import trace
from mlx_interp.core.generate import generate
from mlx_interp.core.kvcache import PromptCache
from mlx_interp.errors import MlxInterpError
from mlx_interp.measures.coherence import coherence
from mlx_interp.measures.stats import paired_diff, rate
from mlx_interp.methods import kv_transfer as kt
from mlx_interp.readouts import cache_stats
from mlx_interp.tasks.datasets import kv_transfer
from mlx_interp.tasks.twohop import mentions

EARLIER_PHASE_D = 0.83
#: transplant conditions compared with the noise control (paired over items)
VERSUS_NOISE = ("same_cache", "other", "neutral", "pos_start", "pos_middle", "pos_end", "pos_middle_unrotated",
                "pos_end_unrotated", "k_only", "v_only")


def load_items(path: str | None) -> dict:
    items = {n: kv_transfer(n) for n in ("persistence", "retrieval", "signatures", "cross_topic")}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise MlxInterpError(f"--prompts file {path!r} does not exist")
        rows = [json.loads(x) for x in p.read_text().splitlines() if x.strip()]
        bad = [i for i, r in enumerate(rows) if not all(str(r.get(k, "")).strip() for k in ("source", "question", "answer"))]
        if bad or len(rows) < 2:
            raise MlxInterpError(f"{path}: retrieval items need non-empty source, question and answer, and at least 2 rows "
                                 f"(bad rows: {bad[:5]})")
        items["retrieval"] = [{"kind": "user", **r} for r in rows]
    return items


def answers(lm, item_conditions: dict, max_tokens: int) -> dict:
    """name -> Generation for one item's conditions: the text conditions decode as one batch, and the transplanted
    caches, stacked (``PromptCache.stack``), as another, each row continuing its own cache."""
    texts = [n for n, (cache, _) in item_conditions.items() if cache is None]
    out = {}
    if texts:
        gens = generate(lm, [item_conditions[n][1] for n in texts], max_tokens=max_tokens, batch_size=None)
        out.update(zip(texts, gens))
    by_len: dict[int, list[str]] = {}
    for n, (cache, toks) in item_conditions.items():
        if cache is not None:
            by_len.setdefault(len(toks), []).append(n)
    for names in by_len.values():
        stacked = PromptCache.stack([item_conditions[n][0] for n in names])
        gens = generate(lm, [item_conditions[n][1] for n in names], cache=stacked, max_tokens=max_tokens, batch_size=None)
        out.update(zip(names, gens))
    return {n: out[n] for n in item_conditions}


def _rates(flags: dict) -> dict:
    """Per condition: the rate with its interval, and the paired difference to the noise control."""
    out = {name: rate(v).as_dict() for name, v in flags.items()}
    if "noise" in flags:
        out["minus_noise"] = {n: paired_diff([float(x) for x in flags[n]], [float(x) for x in flags["noise"]])
                              for n in flags if n != "noise" and (n in VERSUS_NOISE or n.startswith(("layers_", "head_")))}
    return out


def _qa(lm, items: list[dict], facts_of, max_tokens: int, label: str, filler: int,
        parts=("controls", "position", "splice")) -> dict:
    """Generate every condition for every item; flags[condition] = [all facts named?] per item, and per fact
    (``fact_flags``: each item's every fact, so a model that names one fact of two still counts half)."""
    flags, fact_flags, examples, mismatches = {}, {}, {}, 0
    for i, it in enumerate(items):
        other = items[(i + 1) % len(items)]["source"]
        gens = answers(lm, kt.conditions(lm, it["source"], other, it["question"], filler=filler, parts=parts), max_tokens)
        mismatches += int(gens["same_cache"].tokens != gens["text"].tokens)
        for name, g in gens.items():
            named = [mentions(g.text, [f]) for f in facts_of(it)]
            flags.setdefault(name, []).append(all(named))
            fact_flags.setdefault(name, []).extend(named)
        if i < 3:
            examples[it["source"]] = {n: g.text for n, g in gens.items()}
        progress(i + 1, len(items), label)
    return {"n": len(items), "rates": _rates(flags), "identity_mismatches": mismatches, "examples": examples,
            "per_fact": {n: rate(v).as_dict() for n, v in fact_flags.items()},
            "flags": {n: [bool(x) for x in v] for n, v in flags.items()}}


def signatures(lm, pairs: list[dict]) -> dict:
    caches = {k: [trace.run(lm, [p[k]], logits="none", return_cache=True, batch_size=None).cache for p in pairs]
              for k in ("confabulated", "grounded")}
    cmp = cache_stats.compare_signatures(caches["confabulated"], caches["grounded"])
    best = {kv: max(range(lm.n_layers), key=lambda l: abs(cmp[kv][l]["d"])) for kv in ("k", "v")}
    return {**cmp, "largest_abs_d_layer": best, "earlier_phase_d": EARLIER_PHASE_D,
            "direction": "d > 0: confabulated statements have larger mean stored-vector norms"}


def cross_topic(lm, items: list[dict], max_tokens: int) -> dict:
    classes, correct, examples = {}, {}, {}
    gens_by = {}
    for i, it in enumerate(items):
        other = items[(i + 1) % len(items)]["source"]
        gens = answers(lm, kt.conditions(lm, it["source"], other, it["question"], parts=("controls",)), max_tokens)
        alone = kt.alone_ids(lm, it["question"])
        for name, g in gens.items():
            gens_by.setdefault(name, []).append((it, dataclasses.replace(g, prompt_tokens=alone)))
        progress(i + 1, len(items), "cross-topic")
    for name, rows in gens_by.items():
        coh = coherence(lm, [g for _, g in rows])
        cls = ["broken" if not ok else ("transferred" if mentions(g.text, it["source_markers"]) else "unaffected")
               for (it, g), ok in zip(rows, coh["coherent"])]
        classes[name] = {c: rate([x == c for x in cls]).as_dict() for c in ("broken", "transferred", "unaffected")}
        correct[name] = rate([mentions(g.text, [it["answer"]]) for it, g in rows]).as_dict()
        examples[name] = [g.text for _, g in rows[:3]]
    return {"n": len(items), "classes": classes, "answer_correct": correct, "examples": examples,
            "classifier": "broken: not coherent (measures.coherence: ppl under the question alone > 15 or repetition > 0.5); "
                          "transferred: coherent and a source marker named; unaffected: otherwise"}


#: neutral filler tokens on each side of the moved cache: the end position shifts the keys by twice this, 400
#: positions, so the unrotated control is a real test of re-rotation (a 24-token filler, the runs of 2026-11-24,
#: changed nothing), while the longest context (~470 tokens) stays inside Gemma 3's 512-token sliding window
FILLER_TOKENS = 200
QUICK = {"persistence": 6, "retrieval": 8, "signatures": 12, "cross_topic": 4, "max_tokens": 16, "filler": FILLER_TOKENS}
FULL = {"max_tokens": 24, "filler": FILLER_TOKENS}


def run_study(lm, items: dict, sizes: dict) -> dict:
    """The whole study; ``sizes`` caps each item set (missing: all) and sets ``max_tokens``."""
    n, max_tokens, filler = sizes, sizes["max_tokens"], sizes.get("filler", FILLER_TOKENS)
    ret = items["retrieval"]
    if "retrieval" in n and any(r.get("kind") == "counterfactual" for r in ret):  # half known, half counterfactual
        h = n["retrieval"] // 2
        ret = [r for r in ret if r["kind"] == "known"][:h] + [r for r in ret if r["kind"] == "counterfactual"][:n["retrieval"] - h]
    per = items["persistence"][: n.get("persistence")]
    sig = items["signatures"][: n.get("signatures")]
    cross = items["cross_topic"][: n.get("cross_topic")]
    print("  14-0 signatures", flush=True)
    out = {"config": {"sizes": dict(n), "max_tokens": max_tokens, "decoding": "greedy", "filler_tokens": filler, "n_windows": 4,
                      "question_format": "chat template" if lm.instruct else "\\nQuestion: ...\\nAnswer:",
                      "selection": "none: every window, position and head is reported (a sweep, not a choice)"},
           "signatures": signatures(lm, sig)}
    print("  14a persistence", flush=True)
    out["persistence"] = _qa(lm, per, lambda it: it["facts"], max_tokens, "14a", filler)
    print("  14b retrieval", flush=True)
    out["retrieval"] = _qa(lm, ret, lambda it: [it["answer"]], max_tokens, "14b", filler)
    kinds = sorted({r.get("kind", "user") for r in ret})
    out["retrieval"]["by_kind"] = {k: {name: rate([f for f, r in zip(v, ret) if r.get("kind", "user") == k]).as_dict()
                                       for name, v in out["retrieval"]["flags"].items()} for k in kinds}
    print("  14c/d cross-topic", flush=True)
    out["cross_topic"] = cross_topic(lm, cross, max_tokens)
    out["windows"] = kt.windows(lm.n_layers, 4)
    return out


def run(lm, items, quick: bool) -> dict:
    return run_study(lm, items, QUICK if quick else FULL)


if __name__ == "__main__":
    main("exp14_kv_transfer", run, load_items, __doc__)
