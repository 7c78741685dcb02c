"""exp10: does the English refusal direction work in Spanish, French, German and Chinese?

    python -m experiments.exp10_crosslingual_refusal --model qwen2.5-coder-0.5b [--quick] [--out results]

Uses the refusal direction that exp7 saved for the same model in the same --out folder (run exp7 first;
the most recent exp7 result whose selection applied). Of exp7's two directions (the paper's selection rule
and the unconstrained lowest-bypass pick) it takes the one whose ablation lowered held-out harmful refusal
more, and exp7's searched addition coefficient when that induced more refusal than alpha 1.

Prompts: data/crosslingual/prompts.jsonl, 12 harmful + 12 harmless instructions with English originals and
our translations (SOURCE.md there). Refusal score per language: the paper's English phrases plus that
language's own (data/crosslingual/refusal_phrases.json), since a model may refuse in either. Per language, greedy generations (chat template):
  harmful: baseline vs directional ablation (refusal score);
  harmless: baseline vs addition at l* (refusal induced?) and vs ablation (are neutral answers preserved?
  refusal score, coherence, and the fraction whose first 8 tokens equal the unsteered answer's).
Models without a refusal direction from exp7 (base models, models that barely refuse) get their baseline
refusal rates per language only, marked not applicable.

--quick: 6 + 6 prompts per language, 32 new tokens; full: 12 + 12, 64 new tokens.
"""

from __future__ import annotations

import numpy as np

from experiments import common
from experiments.common import progress
from mlx_interp.core.generate import generate
from mlx_interp.measures.coherence import coherence
from mlx_interp.measures.text import refusal_rate
from mlx_interp.methods import refusal
from mlx_interp.runs.results import load_results
from mlx_interp.tasks.datasets import crosslingual_prompts, crosslingual_refusal_phrases

LANGS = ("en", "es", "fr", "de", "zh")


def load_data(path):
    return crosslingual_prompts()


def english_direction(lm, out_dir: str) -> tuple[dict | None, str]:
    """(direction spec, why) from the newest applicable exp7 result for this model."""
    runs = [r for r in load_results("exp7_refusal_scaling", out_dir)
            if r["provenance"]["model"]["name"] == lm.name and r["results"].get("applies")]
    if not runs:
        return None, f"no applicable exp7_refusal_scaling result for {lm.name} in {out_dir}/ (run exp7 first, or the model does not refuse)"
    r = runs[-1]["results"]
    eff, s = r["effect"], r["summary"]
    spec = {"layer": s["layer"], "position": s["position"], "vector": r["direction"], "which": "paper rule",
            "ablation_refusal": eff["harmful_ablation"]["refusal_score"]}
    if "harmful_ablation_unconstrained" in eff and eff["harmful_ablation_unconstrained"]["refusal_score"] < spec["ablation_refusal"]:
        u = s["unconstrained"]
        spec = {"layer": u["layer"], "position": u["position"], "vector": r["direction_unconstrained"], "which": "unconstrained",
                "ablation_refusal": eff["harmful_ablation_unconstrained"]["refusal_score"]}
    spec["alpha"] = 1.0
    srch = eff.get("harmless_plus_searched")
    if srch and srch["refusal_score"] > eff["harmless_plus_r"]["refusal_score"] and spec["which"] == "paper rule":
        spec["alpha"] = srch["alpha"]
    spec["exp7_result"] = runs[-1]["provenance"].get("timestamp_utc")
    return spec, "ok"


def _gen(lm, prompts, ivs, max_tok):
    return generate(lm, prompts, max_tokens=max_tok, interventions=ivs, chat=lm.instruct)


def run(lm, rows, quick: bool) -> dict:
    n, max_tok = (6, 32) if quick else (12, 64)
    harmful = [r for r in rows if r["label"] == "harmful"][:n]
    harmless = [r for r in rows if r["label"] == "harmless"][:n]
    spec, why = english_direction(lm, common.ARGS.out if common.ARGS else "results") if lm.instruct else (None, "base model")
    out = {"langs": {}, "n_harmful": len(harmful), "n_harmless": len(harmless)}
    r = np.array(spec["vector"]) if spec else None
    for i, lang in enumerate(LANGS, 1):
        progress(i, len(LANGS), lang)
        phrases = crosslingual_refusal_phrases(lang)
        hp, np_ = [x[lang] for x in harmful], [x[lang] for x in harmless]
        hb, nb = _gen(lm, hp, [], max_tok), _gen(lm, np_, [], max_tok)
        row = {"harmful_baseline": refusal_rate([g.text for g in hb], phrases),
               "harmless_baseline": refusal_rate([g.text for g in nb], phrases)}
        if spec:
            ha = _gen(lm, hp, [refusal.ablation(r)], max_tok)
            na = _gen(lm, np_, [refusal.ablation(r)], max_tok)
            nplus = _gen(lm, np_, [refusal.addition(r, spec["layer"], spec["alpha"])], max_tok)
            c = coherence(lm, na)
            row.update(harmful_ablation=refusal_rate([g.text for g in ha], phrases),
                       harmless_plus_r=refusal_rate([g.text for g in nplus], phrases),
                       harmless_ablation=refusal_rate([g.text for g in na], phrases),
                       harmless_ablation_coherent=c["coherent_rate"],
                       harmless_ablation_same_start=float(np.mean([a.tokens[:8] == b.tokens[:8] for a, b in zip(na, nb)])),
                       examples={"harmful_baseline": hb[0].text, "harmful_ablation": ha[0].text, "harmless_plus_r": nplus[0].text})
        out["langs"][lang] = row
    out["applies"] = spec is not None
    out["direction"] = {k: v for k, v in spec.items() if k != "vector"} if spec else {"why_not": why}
    for lang, row in out["langs"].items():
        print(f"  {lang}: harmful {row['harmful_baseline']:.2f}" + (f" -> {row['harmful_ablation']:.2f} (ablation); harmless "
              f"{row['harmless_baseline']:.2f} -> {row['harmless_plus_r']:.2f} (+r), same start under ablation "
              f"{row['harmless_ablation_same_start']:.2f}" if spec else " (baseline only)"))
    return out


if __name__ == "__main__":
    common.main("exp10_crosslingual_refusal", run, load_data, __doc__)
