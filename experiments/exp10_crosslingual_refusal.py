"""exp10: does the English refusal direction work in Spanish, French, German and Chinese?

    python -m experiments.exp10_crosslingual_refusal --model qwen2.5-coder-0.5b [--quick] [--out results] [--from EXP7.json]

Uses the refusal direction of one exp7 result for the same model (``--from FILE``, else the newest applicable
exp7 result in --out); the result names that file and its sha256, so the run can be repeated exactly. exp10
chooses nothing: it takes exp7's direction selected by the paper's rule on exp7's validation prompts, and the
addition coefficient exp7's coherence-bounded search chose on validation prompts (alpha 1 if that search found
none). (It used to pick, between two exp7 directions and two coefficients, whichever did better on exp7's
held-out prompts: selection on test data.)

Prompts: data/crosslingual/prompts.jsonl, 12 harmful + 12 harmless instructions with English originals and
our translations (SOURCE.md there). Refusal score per language: the paper's English phrases plus that
language's own (data/crosslingual/refusal_phrases.json), since a model may refuse in either. Per language, greedy
generations (chat template), each condition beside the same intervention with a random direction of the same
norm (``*_random``), rates with Wilson intervals:
  harmful: baseline vs directional ablation (refusal score);
  harmless: baseline vs addition at l* (refusal induced?) and vs ablation (are neutral answers preserved?
  refusal score, coherence, and the fraction whose first 8 tokens equal the unsteered answer's).
Models without a refusal direction from exp7 (base models, models that barely refuse) get their baseline
refusal rates per language only, marked not applicable. These are small samples (6 or 12 prompts per cell).

--quick: 6 + 6 prompts per language, 32 new tokens; full: 12 + 12, 64 new tokens.
"""

from __future__ import annotations

import numpy as np

from experiments import common
from experiments.common import progress
from mlx_interp.core.generate import generate_conditions
from mlx_interp.measures.coherence import coherence
from mlx_interp.measures.text import refusal_rate
from mlx_interp.methods import refusal
from mlx_interp.measures.stats import rate
from mlx_interp.measures.text import refusal_score
from mlx_interp.readouts.directions import random_direction
from mlx_interp.tasks.datasets import crosslingual_prompts, crosslingual_refusal_phrases

LANGS = ("en", "es", "fr", "de", "zh")


def load_data(path):
    return crosslingual_prompts()


def english_direction(lm, out_dir: str, source: str | None = None) -> tuple[dict | None, str]:
    """(direction spec, why) from one exp7 result: ``source`` if given, else the newest applicable one for this model."""
    import hashlib
    from pathlib import Path

    if source:
        path, doc = common.source_result("exp7_refusal_scaling", lm, out_dir, source)
        if not doc["results"].get("applies"):
            return None, f"{path.name}: exp7 found no direction for {lm.name} ({doc['results'].get('reason', '')[:120]})"
    else:
        found = common.source_result("exp7_refusal_scaling", lm, out_dir, None, keep=lambda d: d["results"].get("applies"))
        if found is None:
            return None, f"no applicable exp7_refusal_scaling result for {lm.name} in {out_dir}/ (run exp7 first, or the model does not refuse)"
        path, doc = found
    r = doc["results"]
    s = r["summary"]
    search = r.get("addition_search", {})
    best = search.get("best")
    spec = {"layer": s["layer"], "position": s["position"], "vector": r["direction"], "which": "paper rule (validation)",
            "alpha": best["alpha"] if best else 1.0,
            "alpha_from": "exp7's coherence-bounded search on validation prompts" if best else "alpha 1 (the search found no coherent step)",
            "exp7_result": str(path), "exp7_sha256": hashlib.sha256(Path(path).read_bytes()).hexdigest(),
            "exp7_timestamp": doc["provenance"].get("timestamp_utc")}
    return spec, "ok"


def run(lm, rows, quick: bool) -> dict:
    n, max_tok = (6, 32) if quick else (12, 64)
    harmful = [r for r in rows if r["label"] == "harmful"][:n]
    harmless = [r for r in rows if r["label"] == "harmless"][:n]
    a = common.ARGS
    spec, why = (english_direction(lm, a.out if a else "results", a.source if a else None) if lm.instruct
                 else (None, "base model"))
    out = {"langs": {}, "n_harmful": len(harmful), "n_harmless": len(harmless)}
    r = np.array(spec["vector"]) if spec else None
    rnd = random_direction(lm.width, float(np.linalg.norm(r)), seed=spec["layer"]) if spec else None

    def rates(gens, phrases) -> dict:
        return rate([bool(refusal_score(g.text, phrases)) for g in gens]).as_dict()

    for i, lang in enumerate(LANGS, 1):
        progress(i, len(LANGS), lang)
        phrases = crosslingual_refusal_phrases(lang)
        hp, np_ = [x[lang] for x in harmful], [x[lang] for x in harmless]
        conds = {"harmful_baseline": (hp, []), "harmless_baseline": (np_, [])}
        if spec:
            conds.update({"harmful_ablation": (hp, [refusal.ablation(r)]), "harmful_ablation_random": (hp, [refusal.ablation(rnd)]),
                          "harmless_ablation": (np_, [refusal.ablation(r)]),
                          "harmless_plus_r": (np_, [refusal.addition(r, spec["layer"], spec["alpha"])]),
                          "harmless_plus_random": (np_, [refusal.addition(rnd, spec["layer"], spec["alpha"])])})
        gens = generate_conditions(lm, conds, max_tokens=max_tok, chat=lm.instruct)  # one call, each on its own rows
        hb, nb = gens["harmful_baseline"], gens["harmless_baseline"]
        row = {"harmful_baseline": refusal_rate([g.text for g in hb], phrases),
               "harmless_baseline": refusal_rate([g.text for g in nb], phrases),
               "rates": {"harmful_baseline": rates(hb, phrases), "harmless_baseline": rates(nb, phrases)}}
        if spec:
            c = coherence(lm, gens["harmless_ablation"])
            for k, g in gens.items():
                if k in ("harmful_baseline", "harmless_baseline"):
                    continue
                row[k] = refusal_rate([x.text for x in g], phrases)
                row["rates"][k] = rates(g, phrases)
            row.update(harmless_ablation_coherent=c["coherent_rate"],
                       harmless_ablation_same_start=float(np.mean([x.tokens[:8] == y.tokens[:8]
                                                                   for x, y in zip(gens["harmless_ablation"], nb)])),
                       examples={"harmful_baseline": hb[0].text, "harmful_ablation": gens["harmful_ablation"][0].text,
                                 "harmless_plus_r": gens["harmless_plus_r"][0].text})
        out["langs"][lang] = row
    out["applies"] = spec is not None
    out["direction"] = {k: v for k, v in spec.items() if k != "vector"} if spec else {"why_not": why}
    for lang, row in out["langs"].items():
        print(f"  {lang}: harmful {row['harmful_baseline']:.2f}" + (
              f" -> {row['harmful_ablation']:.2f} (ablation; random {row['harmful_ablation_random']:.2f}); harmless "
              f"{row['harmless_baseline']:.2f} -> {row['harmless_plus_r']:.2f} (+r; random {row['harmless_plus_random']:.2f}), "
              f"same start under ablation {row['harmless_ablation_same_start']:.2f}" if spec else " (baseline only)"))
    return out


if __name__ == "__main__":
    common.main("exp10_crosslingual_refusal", run, load_data, __doc__)
