"""The function-vector study shared by exp8 (mean layer activation), exp11 (ICL minus zero-shot) and exp13 (heads by
causal mediation, Todd et al. 2024): one data pipeline, one evaluation, so the three methods meet the same items.

Per task (``mlx_interp.tasks.icl``: the reference's splits, template and 10 demonstrations from train):
1. Filter (as the paper): valid and test items are kept only if the model's top-1 first token is right with a
   clean 10-shot prompt. Survivors are counted per task; a task with < 20 test survivors is reported, not averaged.
2. From valid survivors only: clean 10-shot prompts for the mean head outputs / mean layer activations, zero-shot
   prompts for exp11's difference, shuffled-label prompts for the mediation (AIE).
3. Heads: AIE averaged over tasks (the paper's "universal" set); the number of heads |A| is chosen on valid
   zero-shot accuracy at layer L//3 (full run; quick uses 10).
4. Layer: the a-priori layer L//3 (the paper: 9 of 28 for GPT-J) and, per method, the best layer of a zero-shot
   sweep over layers on the valid survivors ("chosen on valid"); the sweep curves are kept.
5. Test survivors: zero-shot and shuffled-label 10-shot top-1 accuracy with each method's vector added at the last
   token of the chosen layer's output, beside no vector and two controls (the FV of |A| random heads; a random
   vector of the FV's norm). The reference's natural-text templates for antonym and country-capital (greedy
   continuation, answer as a substring).
Every rate has its n and a Wilson interval; FV-minus-baseline has a paired bootstrap interval.

Deviations from the reference (stated in each result): valid/test items scanned are capped (``Config``), so the
paper's full test sets are subsampled; one seed, not five; |A| is chosen on valid (the reference fixes 10).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from experiments.common import progress
from mlx_interp.core.generate import generate
from mlx_interp.core.parts import head_shape, parts
from mlx_interp.core.sites import depth
from mlx_interp.errors import MlxInterpError
from mlx_interp.measures.stats import paired_diff, rate
from mlx_interp.methods import function_vectors as fv
from mlx_interp.readouts.directions import random_direction
from mlx_interp.tasks import icl

MIN_SURVIVORS = 20
PAPER = {"source": "Todd et al. (ICLR 2024), GPT-J 6B, layer 9, mean of the six headline tasks (papers.md §1, [2nd])",
         "zero_shot": [0.055, 0.575], "shuffled_10shot": [0.391, 0.908]}
SEED_TABLE = {"source": "the study's own layer-level function vectors (issue 15): antonym / capital / plural",
              "gemma-2b": [0.0, 0.0, 0.5], "llama-3b": [0.0, 0.0, 0.0], "qwen-7b": [0.5, 0.0, 1.0]}
METHODS = ("head_fv", "layer_mean", "icl_diff")


@dataclass(frozen=True)
class Config:
    tasks: tuple
    scan_valid: int  # valid items scanned by the filter (the survivors are used)
    scan_test: int
    n_mean: int  # clean prompts for the means (paper: 100)
    n_aie: int  # shuffled prompts for the AIE (paper: 25)
    sizes: tuple  # |A| candidates, chosen on valid
    sweep_every: int  # layer sweep step
    min_survivors: int = 0  # keep scanning in steps of scan_valid/scan_test until this many survive (or the split ends)
    seed: int = 0


def config(quick: bool, tasks=None) -> Config:
    if quick:
        return Config(tuple(tasks or ("antonym", "country-capital")), 24, 32, 16, 6, (10,), 3)
    return Config(tuple(tasks or icl.TASKS), 100, 150, 100, 25, (5, 10, 20), 1, min_survivors=MIN_SURVIVORS)


def _filter(lm, task, items, n_scan, rng, min_survivors: int = 0) -> tuple[list[dict], int]:
    """Items the model answers right (top-1 first token) with a clean 10-shot prompt, and how many were scanned.

    Scans ``n_scan`` items, then further steps of ``n_scan`` while fewer than ``min_survivors`` survive and the split
    has items left. The stopping rule reads only the clean filter, never an intervention's outcome."""
    kept: list[dict] = []
    start = 0
    while start < len(items) and (start == 0 or len(kept) < min_survivors):
        chunk = items[start:start + n_scan]
        prompts = [icl.prompt(icl.draw_demos(task, rng), q.x) for q in chunk]
        ok, _ = fv.score(lm, prompts, fv.answer_ids(lm, prompts, [q.y for q in chunk]))
        kept += [{"pair": q, "clean": p} for q, p, good in zip(chunk, prompts, ok) if good]
        start += len(chunk)
    return kept, start


def _draw(items: list, n: int, rng) -> list:
    """``n`` queries drawn with replacement (the reference draws one filtered valid query per trial)."""
    return [items[i] for i in rng.choice(len(items), size=n, replace=True)]


def prepare(lm, task, cfg: Config, methods) -> dict:
    """Filter, means, AIE for one task (valid survivors only)."""
    rng = np.random.default_rng(cfg.seed)
    valid, n_valid = _filter(lm, task, task.valid, cfg.scan_valid, rng, cfg.min_survivors)
    test, n_test = _filter(lm, task, task.test, cfg.scan_test, rng, cfg.min_survivors)
    out = {"valid": valid, "test": test,
           "counts": {"valid_scanned": n_valid, "valid_survivors": len(valid),
                      "test_scanned": n_test, "test_survivors": len(test)}}
    if not valid:
        return out
    qs = _draw([v["pair"] for v in valid], cfg.n_mean, rng)
    clean = [icl.prompt(icl.draw_demos(task, rng), q.x) for q in qs]
    stats = fv.mean_stats(lm, clean)  # heads and layers from one pass over the clean prompts
    out["resid_norm"] = stats.resid_norm
    if "head_fv" in methods:
        out["head_means"], out["head_resid"] = stats.head_means, stats.head_resid
        corrupted_q = _draw([v["pair"] for v in valid], cfg.n_aie, rng)
        corrupted = [icl.prompt(icl.draw_demos(task, rng, shuffle_labels=True), q.x) for q in corrupted_q]
        ids = fv.answer_ids(lm, corrupted, [q.y for q in corrupted_q])
        ie = fv.indirect_effects(lm, corrupted, ids, out["head_means"], progress=lambda i, n: progress(i, n, f"AIE {task.name}"))
        out["aie"] = ie.mean(axis=0)
    if "layer_mean" in methods or "icl_diff" in methods:
        out["layer_mean"] = stats.layer_means
        if "icl_diff" in methods:
            out["icl_diff"] = stats.layer_means - fv.layer_means(lm, [icl.zero_shot(q.x) for q in qs])
    return out


def _top_share(v: np.ndarray, k: int = 5) -> float:
    """Share of the squared norm in the ``k`` largest channels."""
    sq = np.sort(np.asarray(v, dtype=np.float64) ** 2)
    return float(sq[-k:].sum() / sq.sum())


def _vector(method: str, prep: dict, layer: int, head_vec: np.ndarray | None):
    return head_vec if method == "head_fv" else prep[method][layer]


def evaluate(lm, task, prep, layer: int, vectors: dict, rng) -> dict:
    """Test survivors: zero-shot and shuffled 10-shot accuracy with each vector added at ``layer``'s output."""
    test = prep["test"]
    qs = [t["pair"] for t in test]
    ys = [q.y for q in qs]
    prompts = {"zero_shot": [icl.zero_shot(q.x) for q in qs],
               "shuffled_10shot": [icl.prompt(icl.draw_demos(task, rng, shuffle_labels=True), q.x) for q in qs]}
    out = {}
    names = list(vectors)
    for kind, ps in prompts.items():
        ok, _ = fv.score_with_vectors(lm, ps, fv.answer_ids(lm, ps, ys), [(vectors[n], layer) for n in names])
        base = ok[0]
        row = {"none": rate(base).as_dict()}
        for r, name in enumerate(names, start=1):
            row[name] = rate(ok[r]).as_dict()
            row[name + "_minus_none"] = paired_diff(ok[r].astype(float), base.astype(float))
        out[kind] = row
    return out


def natural(lm, task, prep, layer: int, vectors: dict) -> dict:
    """The reference's natural-text evaluation: greedy continuation of each template, the vector added at the last
    prompt token and every generated token of ``layer``'s output; correct if the answer is a substring of it."""
    out = {}
    qs = [t["pair"] for t in prep["test"]]
    n_tok = icl.NATURAL_TOKENS[task.name]
    for tmpl in icl.NATURAL[task.name]:
        ps = [tmpl.format(x=q.x) for q in qs]
        row = {}
        for name, v in [("none", None)] + list(vectors.items()):
            ivs = [] if v is None else [fv.fv_intervention(lm, v, layer), fv.fv_intervention(lm, v, layer, "generated")]
            texts = [g.text for g in generate(lm, ps, max_tokens=n_tok, interventions=ivs)]
            row[name] = rate([q.y in t for q, t in zip(qs, texts)]).as_dict()
        out[tmpl] = row
    return out


def sweep(lm, prep, layers, vector_at) -> list[float]:
    """Valid zero-shot accuracy with ``vector_at(layer)`` added at each layer (the layer is chosen from this)."""
    qs = [v["pair"] for v in prep["valid"]]
    ps, ys = [icl.zero_shot(q.x) for q in qs], [q.y for q in qs]
    ok, _ = fv.score_with_vectors(lm, ps, fv.answer_ids(lm, ps, ys), [(vector_at(l), l) for l in layers])
    return [float(x) for x in ok[1:].mean(axis=1)]


def run(lm, tasks: list, quick: bool, methods=METHODS) -> dict:
    """The whole study on one model for the given methods."""
    cfg = config(quick, [t.name for t in tasks] if tasks else None)
    tasks = tasks or [icl.load_task(n) for n in cfg.tasks]
    L = lm.n_layers
    H = head_shape(parts(lm.model).layers[0].self_attn)[0]
    edit_layer = L // 3
    preps = {}
    for t in tasks:
        print(f"  task {t.name}", flush=True)
        preps[t.name] = prepare(lm, t, cfg, methods)
    usable = [n for n, p in preps.items() if p["valid"]]
    result = {"config": {**asdict(cfg), "edit_layer_a_priori": edit_layer, "methods": list(methods),
                         "template": "Q: {x}\\nA: {y}\\n\\n x10, query Q: {x}\\nA:", "n_shots": icl.N_SHOTS,
                         "splits": "train 70 / test 21 / valid 9 (reference split_icl_dataset, seed 42)",
                         "chosen_on": "valid survivors: |A|, the sweep layer; reported: test survivors",
                         "heads": "universal: top |A| by AIE averaged over the tasks' valid prompts (paper Sec. 2.3); "
                                  "the reference's evaluate script defaults to per-task heads (kept as top_heads_task)",
                         "deviations": ["valid/test scans capped: scan_valid/scan_test items, extended in steps of the same size "
                                        "until min_survivors survive or the split ends (the paper filters whole splits)", "one seed (the paper: 5)",
                                        "|A| chosen on valid among sizes (the reference fixes 10)"]},
              "paper": PAPER, "seed_table": SEED_TABLE, "layers": L, "heads": H, "tasks": {}}
    if not usable:
        raise MlxInterpError(f"{lm.name}: no task has a valid item the model answers with a clean 10-shot prompt; "
                             "the function-vector study needs surviving items")
    heads, aie_mean = None, None
    if "head_fv" in methods:
        aie_mean = np.mean([preps[n]["aie"] for n in usable], axis=0)
        result["aie_mean"] = aie_mean.tolist()
        size = cfg.sizes[0]
        if len(cfg.sizes) > 1:  # |A| by valid zero-shot accuracy at the a-priori layer, pooled over tasks
            scores = {}
            for s in cfg.sizes:
                hs = [(l, h) for l, h, _ in fv.top_heads(aie_mean, s)]
                oks = [sweep(lm, preps[n], [edit_layer], lambda l, n=n, hs=hs: fv.function_vector(lm, preps[n]["head_resid"], hs))[0]
                       for n in usable]
                scores[s] = float(np.mean(oks))
            size = max(cfg.sizes, key=lambda s: (scores[s], -s))
            result["size_selection"] = {"valid_zero_shot": scores, "chosen": size}
        top = fv.top_heads(aie_mean, size)
        heads = [(l, h) for l, h, _ in top]
        result["top_heads"] = [{"layer": l, "head": h, "aie": a, "depth": depth(l, L)} for l, h, a in top]
        result["n_heads_A"] = size
        rand = fv.random_heads(lm, size, seed=cfg.seed)
        result["random_heads"] = [list(x) for x in rand]
    sweep_layers = list(range(0, L, cfg.sweep_every))
    for t in tasks:
        p = preps[t.name]
        row = {"counts": p["counts"], "small_sample": p["counts"]["test_survivors"] < MIN_SURVIVORS}
        if not p["valid"] or not p["test"]:
            row["skipped"] = "no valid survivors" if not p["valid"] else "no test survivors"
            result["tasks"][t.name] = row
            continue
        rng = np.random.default_rng(cfg.seed + 1)
        head_vec = None
        if heads is not None:
            head_vec = fv.function_vector(lm, p["head_resid"], heads)
            row["aie"] = p["aie"].tolist()
            row["top_heads_task"] = [list(x) for x in fv.top_heads(p["aie"], 10)]
            row["fv_norm"] = float(np.linalg.norm(head_vec))
            # the scale the FV meets: mean last-token norm of the edited layer's output on clean prompts
            row["fv_norm_over_resid_norm"] = float(np.linalg.norm(head_vec) / p["resid_norm"][edit_layer])
            row["resid_norm"] = p["resid_norm"].tolist()
            # how much of the FV sits in a few channels (Gemma's massive-activation channels dominate its heads)
            row["fv_top5_channel_share"] = _top_share(head_vec)
        row["sweep"] = {"layers": sweep_layers}
        chosen = {}
        for m in methods:
            acc = sweep(lm, p, sweep_layers, lambda l, m=m: _vector(m, p, l, head_vec))
            row["sweep"][m] = acc
            # no layer is chosen when none helps on valid (argmax of all zeros would "choose" layer 0)
            chosen[m] = sweep_layers[int(np.argmax(acc))] if max(acc) > 0 else None
        row["chosen_layer"] = chosen
        # the evaluation at the a-priori layer: every method and both controls
        vecs = {m: _vector(m, p, edit_layer, head_vec) for m in methods}
        if head_vec is not None:
            vecs["random_heads"] = fv.function_vector(lm, p["head_resid"], rand)
            vecs["random_vector"] = random_direction(lm.width, float(np.linalg.norm(head_vec)), seed=cfg.seed)
        row["at_a_priori_layer"] = evaluate(lm, t, p, edit_layer, vecs, rng)
        # each method at its valid-chosen layer
        row["at_chosen_layer"] = {m: evaluate(lm, t, p, chosen[m], {m: _vector(m, p, chosen[m], head_vec)}, rng)
                                  if chosen[m] is not None else {"skipped": "no layer with valid accuracy > 0"} for m in methods}
        if t.name in icl.NATURAL:
            row["natural"] = natural(lm, t, p, edit_layer, {m: vecs[m] for m in methods})
        result["tasks"][t.name] = row
        print(f"  {t.name}: {p['counts']}", flush=True)
    result["summary"] = summarize(result, methods)
    return result


def summarize(result: dict, methods) -> dict:
    """Mean accuracy over the headline tasks with >= MIN_SURVIVORS test survivors, per method and prompt kind."""
    keep = [n for n in icl.HEADLINE if n in result["tasks"] and "skipped" not in result["tasks"][n]
            and not result["tasks"][n]["small_sample"]]
    out = {"tasks_averaged": keep, "tasks_small_sample": [n for n, r in result["tasks"].items() if r.get("small_sample")]}
    for kind in ("zero_shot", "shuffled_10shot"):
        row = {}
        for name in ("none",) + tuple(methods) + (("random_heads", "random_vector") if "head_fv" in methods else ()):
            vals = [result["tasks"][n]["at_a_priori_layer"][kind][name]["p"] for n in keep]
            row[name] = float(np.mean(vals)) if vals else None
        out[kind] = row
    return out


def depths(results: dict) -> dict:
    """Depths (fraction of layers) for the study's layer-specific table: the top heads' mean depth, and the median
    over tasks of the head FV's valid-chosen layer (None where no task chose one)."""
    L = results["layers"]
    chosen = [x["chosen_layer"]["head_fv"] for x in results["tasks"].values() if x.get("chosen_layer", {}).get("head_fv") is not None]
    return {"heads": float(np.mean([h["depth"] for h in results["top_heads"]])) if results.get("top_heads") else None,
            "fv_layer": float(np.median(chosen)) / L if chosen else None}
