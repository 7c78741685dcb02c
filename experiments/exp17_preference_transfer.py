"""exp17: a concise-vs-verbose preference vector, learned in one model and carried to others (the study's
preference-vector run with linear adapters).

    python -m experiments.exp17_preference_transfer --model qwen2.5-coder-0.5b --model smollm2-135m \\
        --model qwen2.5-coder-0.5b@fp32 [--model ...] [--quick] [--out results]

The first --model is the source (an instruct model); every other instruct model is a target.

1. **Summary pairs.** On the shipped passages (``tasks/data/passages``: 120 AG News items, train 60 / val 20 /
   test 40), the source writes a concise summary ("one short sentence") and a verbose one ("a detailed paragraph"),
   greedy.
2. **Vector.** The source reads each train passage under a neutral instruction ("Summarize the following
   passage.") followed by each of its two summaries; per layer, the mean ``resid_pre`` over the summary's tokens;
   v = mean(verbose) - mean(concise).
3. **Validation on the source** (val passages choose; test passages report). Steering adds c * (residual norm at
   l) * v/|v| at ``resid_pre`` of block l, every position, under the neutral instruction; +v should lengthen and
   -v shorten the summary. (l, c) is chosen on val by the length-direction score among settings whose steered
   outputs stay coherent (>= 75%, ``measures.coherence``). Test: the same score with a random direction of the same
   norm as control; verbosity (log2 word ratio); content preservation against the unsteered summary (ROUGE-L,
   TF-IDF cosine, entity retention: ``measures.summaries``).
4. **Transfer** to each target at the layer of the same relative depth, with the source's c (norm-relative, so no
   target data tunes it): directly where widths match, through ridge and Procrustes maps, and through a linear
   adapter trained in MLX, all fitted on paired activations of the two models on the train passages' text (scored
   on the val passages'). Each carried vector and a carried random vector of the same norm, on the test passages;
   beside them how far each carrier turned the vector (``carried_geometry``: cosine with the source's where the
   widths match, norm ratio).
5. **The study's hypotheses**: source score > 0.7; direct transfer succeeds 10-30% of the time; adapter > direct
   + 20 points. Each reported as met / not met / not applicable, with its interval.

Files, as the study lays them out, in ``<out>/exp17_preference_transfer/<stamp>_<source>/``: ``experiment_results.json``
(with provenance), ``summary_report.md``, ``preference_vector.safetensors``, ``summary_pairs.json``, and the figures
(``python -m figures.make_all`` redraws them from the JSON).

**In parts** (the full run outlasts a session on a 2-core CPU): ``--model SRC`` alone runs the source's part (steps
1-3); ``--model SRC --model TGT [...] --from FOLDER`` carries that part's vector to more targets, reusing its
summary pairs, choice and source test (the vector is recomputed from the kept pairs and must equal the kept one).
Each part writes a complete folder holding every target so far; ``parts`` in the result names each part's folder,
commit and wall time, and ``wall_s`` is their sum.

--quick: train 12, val 4, test 8 passages; layers at 1/3 and 1/2 of depth; c in (0.125, 0.25); 48 / 96 tokens
(minutes; the kept quick run of 2026-12-01 used 16 / 6 / 10 passages and a third layer at 2/3, as its file records).
Full: 60 / 20 / 40; every 0.1 of depth from 0.2 to 0.8; c in (0.0625, 0.125, 0.25, 0.5); 64 / 160 tokens.
(A first quick run on Qwen2.5-Coder-0.5B with c in (0.5, 1.0) stopped: every setting moved length the intended
way on val, scores 0.67-1.00, but none kept both signs 75% coherent, -v least of all.)
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import mlx_interp as mi  # first: it preloads the fast BLAS before mlx (runtime/blas.py)
import numpy as np

from experiments.common import journaled, parse, progress
from mlx_interp.core.generate import generate, generate_conditions
from mlx_interp.errors import MlxInterpError
from mlx_interp.measures import summaries as sm
from mlx_interp.measures.coherence import coherence, coherence_by_condition
from mlx_interp.measures.stats import bootstrap_ci, paired_diff, rate
from mlx_interp.methods.steering import residual_norms
from mlx_interp.readouts.directions import collect_responses, random_direction
from mlx_interp.readouts.vectors import VectorSet, cosine_and_norm_ratio, load_vector, save_vector
from mlx_interp.runs.results import atomic_write_new, provenance
from mlx_interp.runtime.parallel import world
from mlx_interp.tasks.datasets import passages
from mlx_interp.transfer import adapters, maps
from mlx_interp.transfer.pairs import TextStates, matched_layer, pair_states, text_states

NAME = "exp17_preference_transfer"
NEUTRAL = "Summarize the following passage.\n\n{p}"
CONCISE = "Summarize the following passage in one short sentence.\n\n{p}"
VERBOSE = "Summarize the following passage in a detailed paragraph, with background and context.\n\n{p}"
HYPOTHESES = {"source_score_gt": 0.7, "direct_range": [0.1, 0.3], "adapter_minus_direct_gt": 0.2,
              "source": "the study's three hypotheses (issue 18)"}
CARRIERS = ("direct", "ridge", "procrustes", "adapter")


@dataclass(frozen=True)
class Config:
    n_train: int
    n_val: int
    n_test: int
    depths: tuple
    coefs: tuple
    concise_tokens: int
    verbose_tokens: int
    min_coherent: float = 0.75
    adapter_steps: int = 300
    seed: int = 0


def config(quick: bool) -> Config:
    if quick:
        return Config(12, 4, 8, (1 / 3, 1 / 2), (0.125, 0.25), 48, 96)
    return Config(60, 20, 40, tuple(np.arange(0.2, 0.81, 0.1)), (0.0625, 0.125, 0.25, 0.5), 64, 160)


def _texts(lm, prompts, ivs, max_tokens) -> tuple[list[str], dict]:
    gens = generate(lm, prompts, max_tokens=max_tokens, interventions=ivs, chat=True)
    return [g.text for g in gens], coherence(lm, gens)


def summary_pairs(lm, ps: list[str], cfg: Config) -> list[dict]:
    concise, _ = _texts(lm, [CONCISE.format(p=p) for p in ps], [], cfg.concise_tokens)
    verbose, _ = _texts(lm, [VERBOSE.format(p=p) for p in ps], [], cfg.verbose_tokens)
    return [{"passage": p, "concise": c, "verbose": v} for p, c, v in zip(ps, concise, verbose)]


def response_means(lm, prompts: list[str], responses: list[str]) -> dict[int, np.ndarray]:
    """Per layer [n, D]: the mean resid_pre over each response's tokens, read after the chat-formatted prompt."""
    return collect_responses(lm, prompts, responses, site="resid_pre", chat=True)["mean"]


def preference_vectors(lm, pairs: list[dict]) -> dict[int, np.ndarray]:
    prompts = [NEUTRAL.format(p=x["passage"]) for x in pairs]
    v = response_means(lm, prompts, [x["verbose"] for x in pairs])
    c = response_means(lm, prompts, [x["concise"] for x in pairs])
    return {l: v[l].mean(axis=0) - c[l].mean(axis=0) for l in v}


def _unit(v: np.ndarray) -> np.ndarray:
    return np.asarray(v, dtype=np.float64) / max(float(np.linalg.norm(v)), 1e-12)


def steer_evals(lm, ps: list[str], specs: dict, cfg: Config, base: list[str] | None = None) -> dict:
    """``{name: (vec, layer, scale)}`` -> ``{name: result}``: +/-(scale * unit vec) at resid_pre[layer] on the neutral
    summary prompts, against the unsteered summaries. Every spec's two signs (and the unsteered summaries, unless
    ``base`` is given) decode in one ``generate_conditions`` call and are judged in one coherence pass."""
    prompts = [NEUTRAL.format(p=p) for p in ps]
    conds = {}
    for name, (vec, layer, scale) in specs.items():
        u = _unit(vec) * scale
        conds[(name, "plus")] = (prompts, [mi.Add(u, site="resid_pre", layers=layer)])
        conds[(name, "minus")] = (prompts, [mi.Add(-u, site="resid_pre", layers=layer)])
    if base is None:
        conds["base"] = (prompts, [])
    gens = generate_conditions(lm, conds, max_tokens=cfg.verbose_tokens, chat=True)  # one call: shared decode steps
    if base is None:
        base = [g.text for g in gens["base"]]
    judged = coherence_by_condition(lm, {k: v for k, v in gens.items() if k != "base"})  # one pass: shared prompts
    return {name: _scored(base, gens[(name, "plus")], gens[(name, "minus")], judged[(name, "plus")],
                          judged[(name, "minus")], cfg) for name in specs}


def _scored(base: list[str], plus_gens, minus_gens, cp: dict, cm: dict, cfg: Config) -> dict:
    plus, minus = [g.text for g in plus_gens], [g.text for g in minus_gens]
    score = sm.length_direction(base, plus, minus)
    lo, hi = bootstrap_ci(score, seed=cfg.seed) if len(score) > 1 else (float("nan"), float("nan"))
    ent_p = [x for x in sm.entity_retention(base, plus) if x is not None]
    ent_m = [x for x in sm.entity_retention(base, minus) if x is not None]
    return {"score": float(np.mean(score)), "score_ci95": [lo, hi], "per_item": score, "n": len(score),
            "coherent_plus": rate(cp["coherent"]).as_dict(), "coherent_minus": rate(cm["coherent"]).as_dict(),
            "log2_words_plus": float(np.mean(sm.log_length_ratio(base, plus))),
            "log2_words_minus": float(np.mean(sm.log_length_ratio(base, minus))),
            "words": {"base": float(np.mean([sm.words(t) for t in base])), "plus": float(np.mean([sm.words(t) for t in plus])),
                      "minus": float(np.mean([sm.words(t) for t in minus]))},
            "rouge_l": {"plus": float(np.mean(sm.rouge_l(base, plus))), "minus": float(np.mean(sm.rouge_l(base, minus)))},
            "tfidf_cosine": {"plus": float(np.mean(sm.tfidf_cosine(base, plus))), "minus": float(np.mean(sm.tfidf_cosine(base, minus)))},
            "entity_retention": {"plus": float(np.mean(ent_p)) if ent_p else None, "minus": float(np.mean(ent_m)) if ent_m else None,
                                 "rule": "capitalized non-sentence-initial words and numbers (heuristic)"},
            "examples": [{"base": b, "plus": p, "minus": m} for b, p, m in list(zip(base, plus, minus))[:2]], "_base": base}


def _public(d):
    if isinstance(d, dict):
        return {k: _public(v) for k, v in d.items() if not k.startswith("_")}
    return d


def choose(lm, vecs: dict, cfg: Config, val: list[str]) -> dict:
    """(layer, c) with the best val length-direction score among coherent settings."""
    L = lm.n_layers
    layers = sorted({min(L - 1, max(1, int(round(d * L)))) for d in cfg.depths})
    norms = residual_norms(lm, [NEUTRAL.format(p=p) for p in val], layers, site="resid_pre", chat=True)
    base, _ = _texts(lm, [NEUTRAL.format(p=p) for p in val], [], cfg.verbose_tokens)
    grid, best = [], None
    for i, l in enumerate(layers):  # one call per layer: its multipliers decode together
        progress(i + 1, len(layers), f"{lm.name}: val layer {l}, c in {list(cfg.coefs)}")
        rs = steer_evals(lm, val, {c: (vecs[l], l, c * norms[l]) for c in cfg.coefs}, cfg, base)
        for c in cfg.coefs:
            r = rs[c]
            ok = min(r["coherent_plus"]["p"], r["coherent_minus"]["p"]) >= cfg.min_coherent
            grid.append({"layer": l, "c": c, "score": r["score"], "coherent": ok,
                         "coherent_plus": r["coherent_plus"]["p"], "coherent_minus": r["coherent_minus"]["p"]})
            if ok and (best is None or r["score"] > best["score"]):
                best = grid[-1]
    return {"grid": grid, "best": best, "residual_norms_val": {str(k): v for k, v in norms.items()},
            "chosen_on": f"val passages ({len(val)}): length-direction score, both signs >= {cfg.min_coherent:.0%} coherent"}


def map_texts(cfg: Config) -> tuple[list[str], list[str]]:
    """(fit, eval) texts of every map: the first 2 x n_train train passages (all 60 in the full run) and the val
    passages (scores only; no choice is made on them)."""
    return passages("train")[:cfg.n_train * 2], passages("val")


def _carriers(src, src_states: TextStates, tgt, layer: int, tl: int, cfg: Config) -> tuple[dict, dict]:
    """How the source vector reaches the target; with each fitted map's held-out score. ``src_states``: the source's
    states on ``map_texts`` at ``layer``, collected once for every target."""
    fit_texts, eval_texts = map_texts(cfg)
    pairs = pair_states(src_states, text_states(tgt, fit_texts + eval_texts, [tl], site="resid_pre"), layer, tl)
    fit_p, eval_p = pairs.split(range(len(fit_texts))), pairs.split(range(len(fit_texts), len(fit_texts) + len(eval_texts)))
    fitted = {k: maps.fit(fit_p, k, alpha=0.1) for k in ("ridge", "procrustes")}
    fitted["adapter"] = adapters.train_adapter(fit_p, steps=cfg.adapter_steps, seed=cfg.seed, progress=lambda s, v: None)
    scores = {k: {kk: vv for kk, vv in maps.evaluate(m, eval_p).items()} for k, m in fitted.items()}
    scores["adapter"]["loss_curve"] = fitted["adapter"].meta["loss_curve"]
    return maps.carriers(src, tgt, fitted), scores


def hypotheses(source: dict, targets: dict) -> dict:
    s = source["test"]["steered"]
    out = {"H1_source_gt_0.7": {"value": s["score"], "ci95": s["score_ci95"],
                                "met": s["score"] > HYPOTHESES["source_score_gt"]}}
    for name, t in targets.items():
        if "carried" not in t:
            continue
        c = t["carried"]
        if "direct" in c:
            d = c["direct"]["score"]
            lo, hi = HYPOTHESES["direct_range"]
            out[f"H2_direct_10_30pct:{name}"] = {"value": d, "ci95": c["direct"]["score_ci95"], "met": lo <= d <= hi}
            diff = paired_diff(c["adapter"]["per_item"], c["direct"]["per_item"])
            out[f"H3_adapter_gt_direct_plus_20:{name}"] = {**diff, "met": diff["diff"] > HYPOTHESES["adapter_minus_direct_gt"]}
        else:
            out[f"H2_direct_10_30pct:{name}"] = {"met": None, "why": "widths differ: no direct transfer"}
            out[f"H3_adapter_gt_direct_plus_20:{name}"] = {"met": None, "why": "widths differ: no direct transfer"}
    return out


def report(res: dict) -> str:
    """The summary_report.md of one run (regenerated from ``res``, never typed)."""
    s = res["source"]
    lines = [f"# exp17 preference vector: {s['model']} -> {', '.join(res['targets']) or '(the source part; no targets yet)'}", "",
             f"Run: {'quick' if res['config']['quick'] else 'full'}; chosen on {s['selection']['chosen_on']}.", "",
             "| model | carried by | layer | length-direction score [95% CI] (n) | random control | words base / +v / -v | "
             "ROUGE-L +v / -v | TF-IDF cos +v / -v | coherent +v / -v |", "|---|---|---|---|---|---|---|---|---|"]

    def row(model, carrier, layer, r, ctrl):
        w = r["words"]
        lines.append(f"| {model} | {carrier} | {layer} | {r['score']:.2f} [{r['score_ci95'][0]:.2f}, {r['score_ci95'][1]:.2f}] "
                     f"({r['n']}) | {ctrl['score']:.2f} | {w['base']:.0f} / {w['plus']:.0f} / {w['minus']:.0f} | "
                     f"{r['rouge_l']['plus']:.2f} / {r['rouge_l']['minus']:.2f} | "
                     f"{r['tfidf_cosine']['plus']:.2f} / {r['tfidf_cosine']['minus']:.2f} | "
                     f"{r['coherent_plus']['p']:.2f} / {r['coherent_minus']['p']:.2f} |")
    if s["test"]:
        row(s["model"], "own", s["test"]["layer"], s["test"]["steered"], s["test"]["random"])
    for name, t in res["targets"].items():
        for c, r in t.get("carried", {}).items():
            row(name, c, t["layer"], r, t["carried_random"][c])
        if "skipped" in t:
            lines.append(f"| {name} | — | — | skipped: {t['skipped']} | | | | | |")
    geo = [(n, c, g) for n, t in res["targets"].items() for c, g in t.get("carried_geometry", {}).items()]
    if geo:  # parts run before 2026-12-05 did not record it
        lines += ["", "## How each carrier turned the vector (cosine with the source's, where widths match; norm ratio)", "",
                  "| model | carried by | cosine: vector / random | norm ratio: vector / random |", "|---|---|---|---|"]
        cos = lambda x: "—" if x["cosine"] is None else f"{x['cosine']:.3f}"  # noqa: E731
        lines += [f"| {n} | {c} | {cos(g['vector'])} / {cos(g['random'])} | "
                  f"{g['vector']['norm_ratio']:.3f} / {g['random']['norm_ratio']:.3f} |" for n, c, g in geo]
    lines += ["", "## Hypotheses", ""]
    for k, h in res["hypotheses"].items():
        verdict = {True: "met", False: "not met", None: "not applicable"}[h["met"]]
        val = h.get("value", h.get("diff"))
        lines.append(f"- {k}: {verdict}" + ("" if val is None else f" ({val:.2f})") + (f" — {h['why']}" if "why" in h else ""))
    return "\n".join(lines) + "\n"


def _jsonable(x):
    return json.loads(json.dumps(x, default=float))


def prior_part(folder: str, src, cfg: Config, quick: bool, targets: list) -> dict:
    """The earlier part a run continues (``--from``): its result, summary pairs and vector file, checked to be a
    part of this run (same source, same configuration, none of ``targets`` carried yet)."""
    path = Path(folder)
    path = path.parent if path.name == "experiment_results.json" else path
    if not (path / "experiment_results.json").is_file() or not (path / "summary_pairs.json").is_file():
        raise MlxInterpError(f"--from {folder!r} is not an exp17 run folder (experiment_results.json and "
                             "summary_pairs.json); give the folder an earlier exp17 part wrote")
    doc = json.loads((path / "experiment_results.json").read_text())
    r = doc.get("results", {})
    if doc.get("experiment") != NAME or r.get("source", {}).get("model") != src.name:
        raise MlxInterpError(f"--from {path.name} is a {doc.get('experiment')} run with source "
                             f"{r.get('source', {}).get('model')}; needs {NAME} with source {src.name}")
    want = _jsonable({"quick": quick, **asdict(cfg)})
    if r["config"] != want:
        diff = sorted(k for k in want if r["config"].get(k) != want[k])
        raise MlxInterpError(f"--from {path.name} ran with another configuration ({', '.join(diff)} differ); "
                             f"continue it with the same --quick setting")
    if not r["source"].get("test"):
        raise MlxInterpError(f"--from {path.name} stopped before its source test ({r.get('stop')}); nothing to carry")
    again = [t.name for t in targets if t.name in r["targets"]]
    if again:
        raise MlxInterpError(f"--from {path.name} already carries the vector to {', '.join(again)}; give only new targets")
    parts = r.get("parts") or [{"folder": path.name, "git_commit": doc["provenance"].get("git_commit"),
                                "wall_s": r.get("wall_s", doc["provenance"].get("wall_s")), "targets": list(r["targets"])}]
    return {"folder": path, "doc": doc, "pairs": json.loads((path / "summary_pairs.json").read_text()),
            "vector": load_vector(path / "preference_vector.safetensors", src), "parts": parts}


def run(models: list, quick: bool, out_dir: str, cfg: Config | None = None, source_from: str | None = None) -> Path:
    """The study; with ``source_from`` (an earlier part's folder) only the targets run, on that part's source."""
    cfg = cfg or config(quick)
    src, targets = models[0], models[1:]
    if not src.instruct:
        raise MlxInterpError(f"the source {src.name} is a base model; exp17's source writes summaries on request "
                             "(give an instruct model first)")
    prior = prior_part(source_from, src, cfg, quick, targets) if source_from else None
    t0 = time.time()
    train, val, test = passages("train")[:cfg.n_train], passages("val")[:cfg.n_val], passages("test")[:cfg.n_test]
    if prior:
        pr = prior["doc"]["results"]
        pairs, source = prior["pairs"], pr["source"]
        print(f"{NAME}: {src.name}'s part from {prior['folder'].name}", file=sys.stderr)
        vecs = preference_vectors(src, pairs)
        l = source["test"]["layer"]
        kept = prior["vector"].vectors[l]
        if not np.allclose(vecs[l], kept, rtol=1e-5, atol=1e-5 * float(np.abs(kept).max())):
            raise MlxInterpError(f"{src.name}'s vector recomputed from {prior['folder'].name}'s summary pairs differs "
                                 "from the kept one (another model build or code?); rerun every part at one commit")
        res = {**{k: pr[k] for k in ("config", "hypotheses_stated", "source")}, "targets": dict(pr["targets"])}
        models = [*prior["doc"]["models"], *targets]  # the earlier parts' models, as their result described them
    else:
        print(f"{NAME}: {src.name} writes summary pairs", file=sys.stderr)
        pairs = summary_pairs(src, train, cfg)
        vecs = preference_vectors(src, pairs)
        sel = choose(src, vecs, cfg, val)
        source = {"model": src.name, "selection": sel, "pairs_words": {
            "concise": float(np.mean([sm.words(x["concise"]) for x in pairs])),
            "verbose": float(np.mean([sm.words(x["verbose"]) for x in pairs]))}, "test": None}
        res = {"config": {"quick": quick, **asdict(cfg)}, "hypotheses_stated": HYPOTHESES, "source": source, "targets": {}}
    sel = source["selection"]
    if sel["best"] is None:
        res["stop"] = f"no (layer, c) on val kept both signs >= {cfg.min_coherent:.0%} coherent on {src.name}"
    else:
        l, c = sel["best"]["layer"], sel["best"]["c"]
        scale = c * sel["residual_norms_val"][str(l)]  # the norm the choice on val used
        rnd = random_direction(src.width, 1.0, seed=cfg.seed + l)
        if not prior:
            own = steer_evals(src, test, {"steered": (vecs[l], l, scale), "random": (rnd, l, scale)}, cfg)
            source["test"] = {"layer": l, "c": c, **own}
        src_states = text_states(src, sum(map_texts(cfg), []), [l], site="resid_pre") if targets else None
        for tgt in targets:
            t = {"model": tgt.name}
            res["targets"][tgt.name] = t
            if not tgt.instruct:
                t["skipped"] = "base model (no chat template)"
                continue
            print(f"{NAME}: {src.name} -> {tgt.name}", file=sys.stderr)
            tl = matched_layer(src, l, tgt)
            carriers, scores = _carriers(src, src_states, tgt, l, tl, cfg)
            tscale = c * residual_norms(tgt, [NEUTRAL.format(p=p) for p in val], [tl], site="resid_pre", chat=True)[tl]
            t.update(layer=tl, scale=tscale, map_scores_held_out=scores, carried_geometry={}, carried={}, carried_random={})
            specs = {}  # every carrier and its carried random control, decoded together
            for name, carry in carriers.items():
                v, rv = vecs[l], rnd * np.linalg.norm(vecs[l])
                cv, cr = carry(v), carry(rv)
                specs[("carried", name)], specs[("carried_random", name)] = (cv, tl, tscale), (cr, tl, tscale)
                # how far the carrier turned each (a map can fit the stream well and still turn a low-variance direction)
                t["carried_geometry"][name] = {"vector": cosine_and_norm_ratio(v, cv), "random": cosine_and_norm_ratio(rv, cr)}
            for (kind, name), r in steer_evals(tgt, test, specs, cfg).items():
                t[kind][name] = r
        res["hypotheses"] = hypotheses(source, res["targets"])
    wall = time.time() - t0
    if prior:
        res["parts"] = [*prior["parts"], {"folder": None, "git_commit": None, "wall_s": wall, "targets": [t.name for t in targets]}]
        wall += sum(p["wall_s"] for p in prior["parts"])
    res["wall_s"] = wall
    return write(res, src, models, pairs, vecs, out_dir)


def write(res: dict, src, models, pairs, vecs, out_dir) -> Path:
    """The study's files, each written once (a new folder per run)."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    folder = Path(out_dir) / NAME / f"{stamp}_{src.name}"
    if not world().main:  # data parallel: the main rank writes the study's files
        return folder
    if folder.exists():
        raise MlxInterpError(f"{folder} exists; runs never overwrite an earlier run")
    folder.mkdir(parents=True)
    res = _public(res)
    res.setdefault("hypotheses", {})
    prov = provenance(src, config=res["config"], wall_s=res["wall_s"])
    if res.get("parts"):  # this part's own entry
        res["parts"][-1].update(folder=folder.name, git_commit=prov["git_commit"])
    doc = {"experiment": NAME, "provenance": prov,
           "models": [m if isinstance(m, dict) else m.describe() for m in models], "results": res}
    atomic_write_new(folder / "experiment_results.json", json.dumps(doc, indent=2, default=float))
    atomic_write_new(folder / "summary_pairs.json", json.dumps(pairs, indent=2, ensure_ascii=False))
    if res["source"]["test"]:
        atomic_write_new(folder / "summary_report.md", report(res))
        l = res["source"]["test"]["layer"]
        save_vector(folder / "preference_vector.safetensors",
                    VectorSet({l: np.asarray(vecs[l], dtype=np.float32)}, src.name, "mean_diff_verbose_minus_concise",
                              {"c": res["source"]["test"]["c"], "prompt": NEUTRAL}, "resid_pre"))
        from figures import preference_transfer

        preference_transfer.all_figures({folder.name: doc}, folder)
    return folder


def main(argv=None) -> Path:
    a = parse(__doc__.strip().splitlines()[0], argv)
    if not a.model or (a.source and len(a.model) < 2):
        print("error: exp17 needs a source --model (alone: the source's part) and, with --from, at least one new "
              "target --model", file=sys.stderr)
        sys.exit(2)
    folder = journaled(NAME, a, argv, lambda: run([mi.load(m) for m in a.model], a.quick, a.out, source_from=a.source))
    print(f"  -> {folder}")
    return folder


if __name__ == "__main__":
    main()
