"""exp16: does a refusal direction learned in one model work in another? (the run plan's B1 and B2)

    python -m experiments.exp16_refusal_transfer --model qwen2.5-coder-0.5b --model qwen2.5-coder-0.5b@fp32 \\
        --model smollm2-135m --model gemma-3-270m [--quick] [--out results]

The run plan ("B1/B2 Transfer Experiments", 2026-02-19) has two stages, and the files carry its names: **B1**,
same-family transfer (its Qwen 3B-32B ladder), and **B2**, cross-family transfer (Qwen <-> Gemma), whose
prerequisite is B1's self-controls and which it skips when B1 shows zero same-family transfer. Here a pair of models
is B1 when both are of one family and B2 otherwise; a self-control is B1 when another model of the run shares its
family and B2 when none does (the plan's B2 self-control is the one Gemma). ``b<k>`` below is that stage.

1. **Self-controls** (``b<k>_self_<model>``). Each model's own difference-in-means refusal direction: vetted harmful
   minus harmless train prompts (chat template, last token), at ``resid_pre`` of every block. The layer is chosen
   on *validation* prompts: among l < int(0.8 L), the one whose +r (alpha 1, every position) gives the highest mean
   refusal metric (Arditi et al.'s log-odds of the model's own refusal-start tokens) on harmless val prompts. Held
   out, greedy, on the test prompts: harmless refusal and coherent rates with +r, beside a random direction of the
   same norm; harmful refusal with r ablated. The run plan's stop rules: +r coherent < 50%, or 0% refusal with +r
   (or a base model, or one that refuses fewer than 2 train prompts) stops that model with a message; it then takes
   no part in steering transfer.
2. **Transfer** (``b<k>_transfer_<src>_to_<tgt>``, for every ordered pair of models that passed; B1 pairs first).
   The source's direction at its chosen layer, carried to the target layer at the same relative depth: directly where the
   widths match, and through each alignment map (ridge, Procrustes) fitted on paired activations of the two
   models on fit texts (scored on disjoint eval texts). Each is added at alpha 1 to harmless test prompts, beside a
   random source direction of the same norm carried the same way, and beside the target's own direction. The
   plan's rule "if B1 shows zero same-family transfer, skip B2": when B1 transfers ran and none of their carried
   directions made the target refuse more test prompts than its carried random control, the B2 transfers are
   skipped with a message (their geometry is still measured: the plan counts a cosine without behavioural
   transfer as a valid result).
3. **Geometry** (``b1_geometric_comparisons`` for the B1 pairs, ``b2_geometric_comparisons`` for the B2 pairs;
   every ordered pair, passed or not; a model the plan stopped on gives
   its unvetted difference of means at L // 2, flagged): cosine of the carried source
   direction with the target's own at the matched layer, the norm ratio, a 95% paired basic bootstrap interval
   (the train prompts resampled once for both models; basic, not percentile: resampling biases a cosine toward 0,
   and the percentile interval can exclude the estimate), and the cosine 200 random source directions get through
   the same map (mean and 2.5-97.5 percentiles). The run plan's predictions: 0.2-0.6 within a family, 0.1-0.4 across families.
   The same comparison at every matched layer pair (``per_layer``: every ``layer_step``-th source block, each with
   its own maps), of which the headline row at the chosen layer is one.

Each model reads the map texts once, at every block (``transfer.pairs.text_states``); every pair and layer pairs
those states, so k models cost k passes, not one per ordered pair and layer.

Maps are fitted on train prompts (harmful and harmless) and scored on val prompts; no test prompt is used before
the held-out evaluation. Deviations from the run plan: maps are fitted on the raw prompt texts (no chat template: the two templates do not
align by character), while directions come from chat-formatted prompts; lstsq is scored for geometry only (its fit
records whether it was underdetermined: more width than paired token rows).

--quick: 32+32 train, 6+6 val, 10+10 test prompts, 24 new tokens, every 2nd layer, 48+16 map texts (minutes; the kept
quick runs of 2026-12-01 and 12-03 used 8+8 val and 16+16 test prompts and 32 tokens, as their files record; with 24
train prompts SmolLM2 refuses only one and the plan stops it, so the quick run would carry no direction across
families). Full: 128+128, 32+32, 30+30 (the run plan's 30), 48 tokens, every layer, 192+64.
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass

import numpy as np

import mlx_interp as mi
from experiments.common import journaled, parse, progress
from mlx_interp.core.generate import generate_conditions
from mlx_interp.errors import MlxInterpError
from mlx_interp.measures.generations import score_conditions
from mlx_interp.measures.stats import basic_interval
from mlx_interp.measures.text import refusal_score
from mlx_interp.methods import refusal
from mlx_interp.methods.vetting import vet
from mlx_interp.readouts.directions import collect, random_direction
from mlx_interp.tasks.datasets import refusal_eval_prompts, refusal_prompts, refusal_substrings
from mlx_interp.transfer import maps
from mlx_interp.transfer.pairs import TextStates, matched_layer, pair_states, text_states

NAME = "exp16_refusal_transfer"
PREDICTED = {"within_family": [0.2, 0.6], "across_families": [0.1, 0.4],
             "source": "the run plan (issue 18): cosine of a mapped direction with the target's own"}
STEER_MAPS = ("ridge", "procrustes")
GEOMETRY_MAPS = ("lstsq", "ridge", "procrustes")
# the run plan's other pre-registered outcomes, quoted beside the measured rates (docs/results_transfer.md)
PLAN_PREDICTIONS = {
    "B1": {"self_control": "coherent >= 90% (its 3B/7B)",
           "transfer": "coherent 50-80% of the self-control's (its 14B -> 32B direct transfer; 32B -> 14B: 'less "
                       "degradation')"},
    "B2": {"self_control": "coherent about 93% (its Gemma 9B)",
           "transfer": "coherent < 50% (its Qwen 7B -> Gemma 9B)"},
}


def pair_stage(src, tgt) -> str:
    """The run plan's stage of an ordered pair: B1 (same family) or B2 (across families)."""
    return "B1" if src.family == tgt.family else "B2"


def self_stage(lm, models: list) -> str:
    """The run plan's stage of a self-control: B1 when another model of the run shares ``lm``'s family, else B2."""
    return "B1" if any(m is not lm and m.family == lm.family for m in models) else "B2"


def b1_shows_no_transfer(b1_steering: list[dict]) -> bool:
    """The plan's skip rule for B2: B1 transfers ran, and no carried direction (direct or through a map) made its
    target refuse more harmless test prompts than the random direction carried the same way (a target that refuses
    a few prompts unsteered would otherwise count as transfer)."""
    pairs = [(c, st[k + "_random"]) for st in b1_steering for k, c in st.items()
             if k != "target_own_at_layer" and not k.endswith("_random")]
    return bool(b1_steering) and all(c["refusal"]["k"] <= r["refusal"]["k"] for c, r in pairs)


@dataclass(frozen=True)
class Config:
    n_train: int
    n_val: int
    n_test: int
    max_tokens: int
    layer_step: int
    n_fit_texts: int
    n_eval_texts: int
    n_boot: int = 200
    n_random: int = 200
    ridge_alpha: float = 0.1
    seed: int = 0


def config(quick: bool) -> Config:
    return Config(32, 6, 10, 24, 2, 48, 16) if quick else Config(128, 32, 30, 48, 1, 192, 64)


def _gen_eval(lm, conditions: dict, max_tokens: int, phrases) -> dict:
    """``{name: (prompts, interventions)}`` -> each condition's refusal and coherent rates; every condition is
    generated in one call (``generate_conditions``), each judged by ``lm`` unsteered."""
    gens = generate_conditions(lm, conditions, max_tokens=max_tokens, chat=True)
    return score_conditions(lm, gens, {"refusal": lambda t: bool(refusal_score(t, phrases))})


def _sets(cfg: Config) -> dict:
    (h_tr, hl_tr), (h_va, hl_va), (h_te, hl_te) = refusal_prompts("train"), refusal_prompts("val"), refusal_eval_prompts()
    return {"train": (h_tr[:cfg.n_train], hl_tr[:cfg.n_train]), "val": (h_va[:cfg.n_val], hl_va[:cfg.n_val]),
            "test": (h_te[:cfg.n_test], hl_te[:cfg.n_test])}


def _directions(lm, harmful, harmless, chat: bool) -> tuple[dict, tuple]:
    """Difference of means (harmful - harmless, last token) at resid_pre of blocks 1..L-1, and the activations."""
    layers = list(range(1, lm.n_layers))
    pos = collect(lm, harmful, site="resid_pre", layers=layers, chat=chat)
    neg = collect(lm, harmless, site="resid_pre", layers=layers, chat=chat)
    return {l: pos[l].mean(axis=0) - neg[l].mean(axis=0) for l in pos}, (pos, neg)


def _stopped(lm, out: dict, sets: dict, why: str) -> dict:
    """A model the plan stops on still has a (unvetted) difference of means for the geometry, at L // 2."""
    h_tr, hl_tr = sets["train"]
    dirs, acts = _directions(lm, h_tr, hl_tr, chat=lm.instruct)
    return {**out, "passed": False, "stop": why, "direction_vetted": False, "layer": None,
            "geometry_layer": lm.n_layers // 2, "geometry_layer_rule": "L // 2 (no layer chosen: the plan stopped)",
            "_dirs": dirs, "_acts": acts, "_kept": (list(h_tr), list(hl_tr))}


def self_control(lm, cfg: Config, sets: dict) -> dict:
    """The model's own direction, its layer chosen on val, its held-out effect, and the stop rules' verdict.
    Keeps (outside the JSON) the per-layer directions and train activations for the geometry."""
    phrases = refusal_substrings()
    out = {"model": lm.name, "family": lm.family, "layers": lm.n_layers, "width": lm.width}
    if not lm.instruct:
        return _stopped(lm, out, sets, f"{lm.name} is a base model (no chat template): not trained to refuse")
    h_tr, hl_tr = sets["train"]
    refuses = lambda t: bool(refusal_score(t, phrases))  # noqa: E731
    v = vet(lm, h_tr, hl_tr, refuses, min_kept=0, chat=True, max_tokens=cfg.max_tokens)
    out["vetting"] = v.report()
    if min(len(v.positive), len(v.negative)) < 2:
        return _stopped(lm, out, sets, f"{lm.name} refused {len(v.positive)} of {len(h_tr)} harmful train prompts "
                                       "(need 2 to extract a vetted direction)")
    dirs, acts = _directions(lm, v.positive, v.negative, chat=True)
    ids = refusal.refusal_start_tokens(lm, v.positive, phrases, generations=v.responses_of(v.positive))
    h_va, hl_va = sets["val"]
    cands = [l for l in range(1, int(0.8 * lm.n_layers)) if l % cfg.layer_step == 0 or cfg.layer_step == 1]
    induce = {}
    for i, l in enumerate(cands):
        progress(i + 1, len(cands), f"{lm.name}: layer {l} on val")
        induce[l] = float(refusal.refusal_metric(lm, hl_va, ids, [refusal.addition(dirs[l], l, 1.0)]).mean())
    layer = max(induce, key=induce.get)
    r = dirs[layer]
    rnd = random_direction(lm.width, float(np.linalg.norm(r)), seed=cfg.seed + layer)
    h_te, hl_te = sets["test"]
    effect = _gen_eval(lm, {"harmless_baseline": (hl_te, []),
                            "harmless_plus_r": (hl_te, [refusal.addition(r, layer, 1.0)]),
                            "harmless_plus_random": (hl_te, [refusal.addition(rnd, layer, 1.0)]),
                            "harmful_baseline": (h_te, []),
                            "harmful_ablation": (h_te, [refusal.ablation(r)])}, cfg.max_tokens, phrases)
    plus = effect["harmless_plus_r"]
    stop = None
    if plus["coherent"]["p"] < 0.5:
        stop = f"{lm.name}: +r leaves {plus['coherent']['k']}/{plus['coherent']['n']} test generations coherent (< 50%)"
    elif plus["refusal"]["k"] == 0:
        stop = f"{lm.name}: +r makes it refuse 0 of {plus['refusal']['n']} harmless test prompts"
    out.update({"passed": stop is None, "stop": stop, "direction_vetted": True, "layer": layer, "depth": layer / lm.n_layers,
                "geometry_layer": layer, "geometry_layer_rule": "the layer chosen on val",
                "chosen_on": "harmless val prompts: mean refusal metric with +r (alpha 1), l < int(0.8 L)",
                "induce_val": {str(k): v for k, v in induce.items()}, "refusal_tokens": [lm.tokenizer.decode([t]) for t in ids],
                "norm": float(np.linalg.norm(r)), "effect": effect, "direction": r.tolist(),
                "_dirs": dirs, "_acts": acts, "_kept": (list(v.positive), list(v.negative))})
    return out


def _public(d: dict) -> dict:
    return {k: v for k, v in d.items() if not k.startswith("_")}


def _cos_rows(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """Row-wise cosine of two stacks of vectors (``B`` may be one vector)."""
    return np.sum(A * B, axis=-1) / np.maximum(np.linalg.norm(A, axis=-1) * np.linalg.norm(B, axis=-1), 1e-12)


def _fit_maps(src, tgt, layer: int, cfg: Config, states: dict[str, TextStates]) -> tuple[dict, dict, int]:
    """Maps from ``src`` resid_pre ``layer`` to ``tgt`` at the matched depth, fitted on the first texts, scored on
    the rest; from each model's states on the map texts, collected once per model (``text_states``)."""
    tl = matched_layer(src, layer, tgt)
    pairs = pair_states(states[src.name], states[tgt.name], layer, tl)
    fit_p = pairs.split(range(cfg.n_fit_texts))
    eval_p = pairs.split(range(cfg.n_fit_texts, len(states[src.name].texts)))
    fitted = {k: maps.fit(fit_p, k, alpha=cfg.ridge_alpha) for k in GEOMETRY_MAPS}
    scores = {k: {**maps.evaluate(m, eval_p), "meta": {kk: vv for kk, vv in m.meta.items() if kk != "loss_curve"}}
              for k, m in fitted.items()}
    return fitted, scores, tl


def _paired_draws(s_self: dict, t_self: dict, n_boot: int, rng) -> list[tuple]:
    """Bootstrap draws of the train prompts both models read: resample the union of their vetted prompts (per class)
    once per draw and give each model the rows of the drawn prompts it kept, so sampling noise the two directions
    share (the same prompts) is not counted twice. Returns [(source rows (pos, neg), target rows (pos, neg))]."""
    pools = [list(dict.fromkeys(s_self["_kept"][c] + t_self["_kept"][c])) for c in (0, 1)]
    rows_of = [[{p: i for i, p in enumerate(d["_kept"][c])} for d in (s_self, t_self)] for c in (0, 1)]
    out = []
    for _ in range(n_boot):
        rows = ([], [])
        for c, pool in enumerate(pools):
            drawn = [pool[i] for i in rng.integers(0, len(pool), len(pool))]
            for at in rows_of[c]:
                rows[c].append([at[p] for p in drawn if p in at])
        (sp, tp), (sn, tn) = rows
        if min(map(len, (sp, tp, sn, tn))) > 0:
            out.append(((sp, sn), (tp, tn)))
    return out


def _boot_dir(acts, rows, layer) -> np.ndarray:
    (pos, neg), (rp, rn) = acts, rows
    return pos[layer][rp].mean(axis=0) - neg[layer][rn].mean(axis=0)


def geometry(src, s_self: dict, tgt, t_self: dict, carriers: dict, ls: int, tl: int, cfg: Config) -> dict:
    """Cosine and norm ratio of the source direction at layer ``ls``, carried, against the target's own at ``tl``,
    with a paired basic bootstrap interval and the random-direction baseline through the same carrier. Each carrier
    takes the bootstrap and random directions as one stack (one matrix product, not one per draw)."""
    rng = np.random.default_rng(cfg.seed)
    r_s, r_t = s_self["_dirs"][ls], t_self["_dirs"][tl]
    draws = _paired_draws(s_self, t_self, cfg.n_boot, rng)
    boot_s = np.stack([_boot_dir(s_self["_acts"], rs, ls) for rs, _ in draws])
    boot_t = np.stack([_boot_dir(t_self["_acts"], rt, tl) for _, rt in draws])
    rand = rng.standard_normal((cfg.n_random, src.width))
    out = {}
    for name, carry in carriers.items():
        m = carry(r_s)
        bc = _cos_rows(carry(boot_s), boot_t)
        rc = np.abs(_cos_rows(carry(rand), r_t))
        c = float(_cos_rows(m, r_t))
        out[name] = {"cosine": c, "cosine_ci95": list(basic_interval(c, list(bc), bounds=(-1.0, 1.0))),
                     "cosine_ci95_method": "paired basic bootstrap (train prompts resampled once for both models; "
                                           "basic, not percentile: resampling biases a cosine toward 0)",
                     "bootstrap_bias": float(np.mean(bc) - c), "n_boot": len(bc),
                     "norm_ratio": float(np.linalg.norm(m) / np.linalg.norm(r_t)),
                     "random_cosine_mean": float(rc.mean()),
                     "random_abs_cosine_range95": [float(np.percentile(rc, 2.5)), float(np.percentile(rc, 97.5))],
                     "beats_random": bool(abs(c) > np.percentile(rc, 97.5))}
    return out


def geometry_layers(src, tgt, cfg: Config) -> list[tuple[int, int]]:
    """(source layer, matched target layer) for the per-layer comparison: every ``layer_step``-th source block of
    1..L-1 whose matched target block is also >= 1 (block 0's resid_pre is the embedding: no direction there)."""
    out = []
    for k in range(1, src.n_layers):
        tl = matched_layer(src, k, tgt)
        if (k % cfg.layer_step == 0 or cfg.layer_step == 1) and tl >= 1:
            out.append((k, tl))
    return out


def compare_at(src, s_self: dict, tgt, t_self: dict, layer: int, cfg: Config, states: dict) -> tuple:
    """Maps fitted at source block ``layer`` and the geometric comparison through them:
    (fitted maps, their held-out scores, target layer, comparison)."""
    fitted, scores, tl = _fit_maps(src, tgt, layer, cfg, states)
    return fitted, scores, tl, geometry(src, s_self, tgt, t_self, maps.carriers(src, tgt, fitted), layer, tl, cfg)


def per_layer_geometry(src, s_self: dict, tgt, t_self: dict, cfg: Config, states: dict,
                       done: dict | None = None) -> list[dict]:
    """The geometric comparison at every matched layer pair (the run plan's "per matched layer"), each with its own
    maps fitted on the train texts and scored on the val texts, its bootstrap interval and its random baseline.
    ``done`` (optional) receives each layer's ``compare_at`` tuple, so the headline row at the source's chosen layer
    is read from here rather than fitted twice."""
    rows = []
    pairs = geometry_layers(src, tgt, cfg)
    for i, (k, tl) in enumerate(pairs):
        progress(i + 1, len(pairs), f"{src.name} -> {tgt.name}: layer {k} -> {tl}")
        at = compare_at(src, s_self, tgt, t_self, k, cfg, states)
        if done is not None:
            done[k] = at
        _, scores, _, comp = at
        rows.append({"source_layer": k, "target_layer": tl, "source_depth": k / src.n_layers,
                     "map_r2_held_out": {m: sc["r2"] for m, sc in scores.items()},
                     "comparisons": {m: {kk: c[kk] for kk in ("cosine", "cosine_ci95", "norm_ratio", "random_cosine_mean",
                                                              "random_abs_cosine_range95", "beats_random")}
                                     for m, c in comp.items()}})
    return rows


def transfer(src, s_self: dict, tgt, t_self: dict, carriers: dict, tl: int, cfg: Config, sets: dict) -> dict:
    """The carried source direction steering the target on harmless test prompts, beside a carried random direction
    of the source direction's norm and the target's own direction at the same layer."""
    phrases = refusal_substrings()
    hl_te = sets["test"][1]
    r_s = s_self["_dirs"][s_self["geometry_layer"]]
    rnd = random_direction(src.width, float(np.linalg.norm(r_s)), seed=cfg.seed + 7)
    conds = {"target_own_at_layer": (hl_te, [refusal.addition(t_self["_dirs"][tl], tl, 1.0)])}
    for name, carry in carriers.items():
        if name not in STEER_MAPS and name != "direct":
            continue
        conds[name] = (hl_te, [refusal.addition(carry(r_s), tl, 1.0)])
        conds[name + "_random"] = (hl_te, [refusal.addition(carry(rnd), tl, 1.0)])
    return _gen_eval(tgt, conds, cfg.max_tokens, phrases)


def run(models: list, quick: bool, out_dir: str, cfg: Config | None = None) -> list:
    """The run plan's B1 and B2 on the given models; returns the written paths."""
    cfg = cfg or config(quick)
    if len(models) < 2:
        raise MlxInterpError(f"exp16 compares models: give at least 2 --model (got {len(models)})")
    sets = _sets(cfg)
    run_cfg = {"quick": quick, **asdict(cfg), "models": [m.name for m in models]}
    paths, selves = [], {}
    for lm in models:
        t0 = time.time()
        stage = self_stage(lm, models)
        print(f"{NAME}: {stage} self-control on {lm.name}", file=sys.stderr)
        s = {**self_control(lm, cfg, sets), "plan_stage": stage}
        if not s["passed"]:
            print(f"  stop: {s['stop']}", file=sys.stderr)
        selves[lm.name] = s
        paths.append(mi.save_result(NAME, _public(s), lm=lm, config=run_cfg, wall_s=time.time() - t0, out_dir=out_dir,
                                    tag=f"{stage.lower()}_self_{lm.name}"))
    (h, hl), (hv, hlv) = refusal_prompts("train"), refusal_prompts("val")  # maps: fitted on train texts, scored on val
    texts = h[:cfg.n_fit_texts // 2] + hl[:cfg.n_fit_texts // 2] + hv[:cfg.n_eval_texts // 2] + hlv[:cfg.n_eval_texts // 2]
    states = {}  # each model's states on the map texts at blocks 1..L-1: one pass per model, reused by every pair
    for lm in models:
        print(f"{NAME}: map texts on {lm.name}", file=sys.stderr)
        states[lm.name] = text_states(lm, texts, range(1, lm.n_layers), site="resid_pre")
    ordered = sorted([(s, t) for s in models for t in models if s is not t], key=lambda p: pair_stage(*p) != "B1")
    geo: dict[str, list] = {"B1": [], "B2": []}
    b1_steering: list[dict] = []
    b2_skipped = None
    for src, tgt in ordered:
        t0 = time.time()
        stage = pair_stage(src, tgt)
        if stage == "B2" and b2_skipped is None and b1_shows_no_transfer(b1_steering):
            b2_skipped = (f"B1 shows zero same-family transfer ({len(b1_steering)} transfer(s), no carried direction "
                          "beat its random control): the run plan skips B2's transfers; their geometry is still measured")
            print(f"  stop: {b2_skipped}", file=sys.stderr)
        s_self, t_self = selves[src.name], selves[tgt.name]
        print(f"{NAME}: {stage} {src.name} -> {tgt.name}", file=sys.stderr)
        done: dict = {}
        per_layer = per_layer_geometry(src, s_self, tgt, t_self, cfg, states, done)
        ls = s_self["geometry_layer"]
        fitted, scores, tl, comp = done.get(ls) or compare_at(src, s_self, tgt, t_self, ls, cfg, states)
        carriers = maps.carriers(src, tgt, fitted)
        same = src.family == tgt.family
        g = {"source": src.name, "target": tgt.name, "plan_stage": stage, "source_layer": s_self["geometry_layer"],
             "target_layer": tl, "source_layer_rule": s_self["geometry_layer_rule"],
             "directions_vetted": [s_self["direction_vetted"], t_self["direction_vetted"]],
             "same_family": same, "predicted": PREDICTED["within_family" if same else "across_families"],
             "map_scores_held_out": scores, "widths": [src.width, tgt.width],
             "direct": "applies" if src.width == tgt.width else f"widths differ ({src.width} vs {tgt.width})",
             "comparisons": comp, "per_layer": per_layer,
             "both_passed_self_control": bool(s_self["passed"] and t_self["passed"])}
        geo[stage].append(g)
        if g["both_passed_self_control"] and not (stage == "B2" and b2_skipped):
            res = {**{k: g[k] for k in ("source", "target", "plan_stage", "source_layer", "target_layer", "direct",
                                        "map_scores_held_out")},
                   "steering": transfer(src, s_self, tgt, t_self, carriers, tl, cfg, sets),
                   "source_model": src.describe(), "plan_prediction": PLAN_PREDICTIONS[stage]["transfer"]}
            if stage == "B1":
                b1_steering.append(res["steering"])
            paths.append(mi.save_result(NAME, res, lm=tgt, config=run_cfg, wall_s=time.time() - t0, out_dir=out_dir,
                                        tag=f"{stage.lower()}_transfer_{src.name}_to_{tgt.name}"))
    for stage, pairs in geo.items():
        if not pairs:
            continue
        names = {n for g in pairs for n in (g["source"], g["target"])}
        doc = {"pairs": pairs, "plan_stage": stage, "predicted": PREDICTED, "plan_predictions": PLAN_PREDICTIONS[stage],
               "models": [m.describe() for m in models if m.name in names],
               "self_controls": {k: {"passed": v["passed"], "stop": v["stop"], "layer": v.get("layer"),
                                     "plan_stage": v["plan_stage"]} for k, v in selves.items() if k in names}}
        if stage == "B2":
            doc["b2_transfers_skipped"] = b2_skipped
        paths.append(mi.save_result(NAME, doc, config=run_cfg, out_dir=out_dir, tag=f"{stage.lower()}_geometric_comparisons"))
    return paths


def main(argv=None) -> list:
    a = parse(__doc__.strip().splitlines()[0], argv)
    paths = journaled(NAME, a, argv, lambda: run([mi.load(m) for m in (a.model or [])], a.quick, a.out))
    for p in paths:
        print(f"  -> {p}")
    return paths


if __name__ == "__main__":
    main()
