"""exp15: do trait vectors and steering survive lower precision? (the quantization-sensitivity study, issue 17)

    python -m experiments.exp15_quantization --model smollm2-135m [--model ...] [--precision 8bit ...] [--quick]
    python -m experiments.exp15_quantization --model qwen2.5-coder-0.5b --same-config-as RESULT.json  # rerun a kept run
    python -m experiments.exp15_quantization --precision 3bit --reference-from PART.json  # a grid's next part (exp15_reference)

Per model, the **reference** is the packaged GGUF dequantized to fp32 (``alias@fp32``). The GGUF is itself 4-6 bit, so
"reference" means the packaged weights and every variant measures *further* quantization of them. Variants are
mlx-community folders (``store.convert``, loadable by plain ``mlx_lm.load``): quick ``8bit`` and ``mxfp4`` (INT8 and the
4-bit float format: the study's central contrast); full ``bf16``, ``fp16``, ``8bit``, ``4bit`` (group 32), ``4bit-g64``,
``3bit``, ``2bit``, ``mxfp4``, ``nvfp4`` (the analogues of the study's FP16, INT8, NF4 and FP4). All "mirror" recipes:
tensors the GGUF stored with 5-8 bits (embeddings, some projections) stay at 8 bits, as bitsandbytes leaves embeddings
alone. On the CPU every variant runs as dense fp32 weights equal to its quantized values (tested against MLX's quantized
kernels), so what is measured is the weights, not a kernel.

For each precision:

1. **Fidelity and capability.** KL(reference || variant) and top-1 agreement of next-token distributions over every
   position of fixed passages; MMLU (570) and TruthfulQA (817) in CAA's A/B format (``tasks/data/capability``; quick:
   57 and 59), correct when p(correct letter) > p(other) at the tokens each tokenizer emits (``measures.ab``), with
   Wilson intervals, the mean logit difference and the paired difference to the reference.
2. **Native text.** Instruct models write their own responses: to harmful and harmless instructions (Arditi's train
   draws) and concise and verbose summaries of passages (exp17's prompts). **Vetting** keeps harmful prompts the
   model refuses, harmless ones it answers, and summary pairs whose verbose version has >= 1.5x the concise one's
   words; how many each precision keeps is reported (the study's refusal-rate difference is a finding in itself).
3. **Vectors** at ``resid_post`` of every layer, by difference of means and by logistic probe, from one capture pass:
   refusal (harmful - harmless) at the prompt's last token and over the response tokens; persona (verbose -
   concise) at the instruction's last token and over the summary tokens read under a neutral instruction;
   sycophancy (CAA, matching - not matching, letter-balanced) at the answer letter; confidence (hedged - confident)
   at the answer's last token and over its tokens. Sycophancy and confidence read fixed text, so for them native and
   controlled text coincide.
4. **Controlled text.** Each variant re-encodes the reference's texts (on the reference's vetted sets), and the
   reference encodes the variant's texts: the 2x2 "which text / which model" cosine matrix of the study. Per-layer
   cosine of every vector with the reference's, both methods.
5. **Steering.** The layer is chosen once per trait, on validation prompts, with the reference (candidate depths,
   each with the coefficient search; the candidates' searches run in lockstep, one batched generation per step for
   all of them, ``methods.steering.search_multipliers``), then held fixed for every precision. Per precision, the
   coefficient search (``methods.steering.search_multiplier``, norm-relative multipliers, >= 75% coherent, coherence judged by the
   reference's perplexity for every precision) picks the multiplier on validation prompts; test prompts are reported
   at it, beside a random direction of the same norm. Traits: refusal (+r on harmless prompts: refusal rate), persona
   (+v under the neutral summary prompt: rate of summaries longer than unsteered), confidence (+hedging on questions:
   hedge rate); sycophancy is CAA's A/B score and logit difference on its 50 test items at -1/0/+1 times the raw
   vector (layer chosen on validation items by the reference), beside a random vector, and, as its coefficient
   search, at the norm-relative multiplier (``SYC_MULTIPLIERS``) that scores highest on the validation items among
   those whose scored answer letters keep a median mass >= ``MASS_FLOOR`` (the A/B counterpart of "coherent": the
   model still answers with a letter), chosen per precision, beside a random vector of the same norm there. Spread =
   max - min of a trait's test score over precisions, in points (sycophancy: at its searched multiplier). Cross-precision
   steering: the reference's vector on each variant and each variant's vector on the reference, at the receiving
   model's multiplier and its own vector's norm (sycophancy too, on the A/B test items).
6. **The study's hypotheses**, each reported beside our measurement (``HYPOTHESES``).

Where the time goes: each precision's row records ``wall_s`` and ``stage_s`` (seconds per stage: load, native
texts, vectors, fidelity, capability, native cosines, controlled text, steering, cross-precision steering), and ``reference_stage_s`` the
fp32 stage before them (texts, vectors, steering layers). A run resumed with ``--resume`` also records, per stage, what
its replayed calls took when an earlier process computed them (``stage_work[...]["replayed_s"]``), and ``wall_s_total``
per row and per file (``runs.work``), so a grid spread over sessions still says its compute time.
Every steered A/B pass (sycophancy's layer choice, ×1 rows, search and crossings) resumes at its layer from one
unsteered pass over the same items (``ab_base``, since 2026-12-05), so it runs L - k of the L blocks; the logits are
exactly the full pass's (``bench/bench_resume.py`` times the saving).

Deviations from the study: small models (135M-0.5B) and MLX formats instead of bitsandbytes/AWQ; bf16 and fp16 are
rounded weights computed in fp32 on the CPU (the weights' effect, not fp16 arithmetic); vectors at ``resid_post``;
persona = concise/verbose (the study's "evil" needs a judge); steering scores are judge-free rates, not 0-100 judge
scores, so spreads are in rate points; only difference-of-means vectors steer (probes are compared geometrically);
the sycophancy probe is not letter-balanced (the difference of means is); one seed. Quick runs use a few items per
split: read them as large effects or none.

``--quick`` (since 2026-12-05): 12 + 12 refusal and 8 persona train items, 24 CAA train / 6 val / 8 test items, 8
confidence pairs, 4 val and 6 test prompts per generation trait, 2 search steps, 24 / 32 / 64 new tokens, two
variants: 6-25 minutes per model on a 2-core CPU, Gemma to Qwen-0.5B, and 80 on Qwen-1.5B (README, "How long studies take"). The kept
quick results of 2026-12-01 to 12-05 used an earlier, larger quick configuration (24 / 36 / 12 / 12 items, 3 steps,
``3bit`` as a third variant), recorded in each file; ``--same-config-as FILE`` reruns one exactly.
"""

from __future__ import annotations

import gc
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import mlx_interp as mi  # first: it preloads the fast BLAS before mlx (runtime/blas.py)
import mlx.core as mx
import numpy as np

from experiments.common import journal, parse, progress
from mlx_interp.core.generate import generate, generate_conditions
from mlx_interp.core.trace import Trace, run
from mlx_interp.errors import MlxInterpError
from mlx_interp.measures.ab import MASS_FLOOR, ab_from_logits, ab_items
from mlx_interp.measures.coherence import coherence_by_condition
from mlx_interp.measures.generations import score_generations
from mlx_interp.measures.distributions import agreement
from mlx_interp.measures.stats import paired_diff, rate
from mlx_interp.measures.summaries import words
from mlx_interp.measures.text import hedged, refusal_score
from mlx_interp.methods.steering import alpha_per_multiplier, residual_norms, search_multiplier, search_multipliers
from mlx_interp.readouts.directions import (collect, collect_ab, collect_responses, diff_of_means_vec, probe_vecs, random_direction,
                                            split_consistency)
from mlx_interp.readouts.vectors import VectorSet, compare_vectors
from mlx_interp.runs import work
from mlx_interp.runs.journal import active, memo
from mlx_interp.runs.results import code_version
from mlx_interp.store.precision import Precision, split_name, supported_formats
from mlx_interp.store.registry import REGISTRY
from mlx_interp.tasks.datasets import (caa_sycophancy, capability_items, confidence_pairs, passages, refusal_eval_prompts,
                                       refusal_prompts, refusal_substrings)

NAME = "exp15_quantization"
REFERENCE = "fp32"
PRECISIONS = {"quick": ("8bit", "mxfp4"),
              "full": ("bf16", "fp16", "8bit", "4bit", "4bit-g64", "3bit", "2bit", "mxfp4", "nvfp4")}
METHODS = ("diff_of_means", "probe")
#: sycophancy's coefficient search, tried on the validation items: norm-relative multipliers as the generation
#: traits' search uses (x the mean resid_post norm at the layer over the validation A/B prompts, vector normalised)
SYC_MULTIPLIERS = (0.03125, 0.0625, 0.125, 0.25, 0.5)
#: recorded in every result that searched sycophancy (tables, figures and ``exp15_sycophancy`` key on it)
SYC_SEARCH = {"multipliers": list(SYC_MULTIPLIERS), "mass_floor": MASS_FLOOR, "chosen_on": "CAA validation items"}
CONCISE = "Summarize the following passage in one short sentence.\n\n{p}"
VERBOSE = "Summarize the following passage in a detailed paragraph, with background and context.\n\n{p}"
NEUTRAL = "Summarize the following passage.\n\n{p}"
#: the vector each trait steers with: (position, method)
#: the 4-bit formats that change the packaged weights (the study's NF4/FP4 analogues); plain "4bit" is the GGUF's own grid
FOUR_BIT = ("4bit-g64", "mxfp4", "nvfp4")
STEER_WITH = {"refusal": "prompt_last", "persona": "response_mean", "confidence": "answer_last", "sycophancy": "answer_letter"}
HYPOTHESES = {
    "int8_cosine": {"claim": "INT8 preserves vectors: cosine 0.95-0.99 with full precision at the best steering layer",
                    "range": [0.95, 0.99], "ours": "8bit"},
    "nf4_cosine": {"claim": "NF4 degrades them moderately: cosine 0.88-0.94", "range": [0.88, 0.94],
                   "ours": "4bit-g64, mxfp4, nvfp4 (not 4bit: our group-32 mirror reproduces the packaged GGUF's blocks)"},
    "probe_better": {"claim": "probe vectors are preserved better than mean-difference vectors"},
    "spread": {"claim": "steering quality is preserved: mean spread of the best coherent trait score across precisions "
                        "3.5 points (Llama-8B) and 4.4 (OLMo-7B)", "range": [3.5, 4.4]},
    "sycophancy_most_sensitive": {"claim": "CAA sycophancy is the most precision-sensitive trait"},
    "controlled_text": {"claim": "with the response text held fixed, precisions' vectors converge (cosine 0.97-0.98)",
                        "range": [0.97, 0.98]},
    "int8_beats_4bit": {"claim": "INT8 degrades less than 4-bit"},
    "unvetted_contamination": {"claim": "unvetted positive sets held about 30% examples without the trait (refusals "
                                        "there; here: harmful prompts the model does not refuse)", "value": 0.30},
    "source": "the quantization study's findings as issue 17 states them (7 models x 5 precisions, FP16/NF4/INT8/FP4/AWQ)",
}


@dataclass(frozen=True)
class Config:
    n_refusal: int  # harmful and harmless train instructions (each) the vectors are extracted from
    n_persona: int  # train passages
    n_syc: int  # CAA generate items for the vector; the next n_val_ab choose the layer
    n_val_ab: int
    n_test_ab: int  # CAA test items
    n_conf: int  # confidence train pairs; the next n_val and n_test questions steer
    n_val: int  # steering validation prompts per generation trait
    n_test: int  # steering test prompts per generation trait
    n_fidelity: int  # passages for KL / top-1 agreement: the last train passages, disjoint from every other use
    depths: tuple  # candidate steering layers (fractions of depth), chosen on validation with the reference
    search_steps: int
    max_tokens: int  # refusal responses and steered generations
    summary_tokens: tuple  # concise, verbose
    min_coherent: float = 0.75
    verbose_ratio: float = 1.5
    min_kept: int = 4  # fewer vetted examples per class: the trait does not apply to this model at this precision
    n_capability: int | None = None  # cap on items per benchmark (tests); None: the quick stride or the full set
    seed: int = 0


def config(quick: bool) -> Config:
    """``quick``: every stage on a handful of items (a run in minutes, read as large effects or none); else the full
    configuration. Results made with the earlier, larger quick configuration (before 2026-12-05) record it in
    ``results.config``; ``--same-config-as FILE`` reruns one exactly (``config_of``)."""
    if quick:
        return Config(n_refusal=12, n_persona=8, n_syc=24, n_val_ab=6, n_test_ab=8, n_conf=8, n_val=4, n_test=6,
                      n_fidelity=4, depths=(1 / 3, 1 / 2), search_steps=2, max_tokens=24, summary_tokens=(32, 64))
    return Config(n_refusal=64, n_persona=40, n_syc=150, n_val_ab=50, n_test_ab=50, n_conf=30, n_val=9, n_test=9,
                  n_fidelity=20, depths=(0.25, 1 / 3, 0.4, 0.5, 0.6), search_steps=5, max_tokens=48,
                  summary_tokens=(48, 112))


def config_of(path: str) -> tuple[Config, list[str], bool, str]:
    """(config, precisions, quick, model alias) an exp15 result file ran with, so ``--same-config-as`` reruns it
    exactly (the kept quick results predate today's smaller ``--quick``)."""
    p = Path(path)
    if not p.is_file():
        raise MlxInterpError(f"--same-config-as {path!r} does not exist; give an {NAME} result file")
    doc = json.loads(p.read_text())
    if doc.get("experiment") != NAME:
        raise MlxInterpError(f"--same-config-as {p.name} is a {doc.get('experiment')!r} result; needs an {NAME} result")
    run = doc["provenance"]["config"]
    if run.get("merged"):
        raise MlxInterpError(f"--same-config-as {p.name} merges parts (exp15_merge); give one of its parts")
    return recorded_config(doc), list(run["precisions"]), bool(run["quick"]), doc["results"]["reference"].split("@")[0]


def recorded_config(doc: dict) -> Config:
    """The ``Config`` an exp15 result document records (JSON lists back to tuples)."""
    return Config(**{k: tuple(v) if isinstance(v, list) else v for k, v in doc["results"]["config"].items()})


# ---------------------------------------------------------------------------------------------------- data


def data(cfg: Config, quick: bool) -> dict:
    """Every item set the study reads, split once (train: vectors; val: choices; test: reported numbers)."""
    harmful, harmless = refusal_prompts("train")
    _, hl_val = refusal_prompts("val")
    _, hl_test = refusal_eval_prompts()
    gen, test_ab = caa_sycophancy()
    conf = confidence_pairs()
    c_val = conf[cfg.n_conf:cfg.n_conf + cfg.n_val]
    c_test = conf[cfg.n_conf + cfg.n_val:cfg.n_conf + cfg.n_val + cfg.n_test]
    return {
        "harmful": harmful[:cfg.n_refusal], "harmless": harmless[:cfg.n_refusal],
        "passages": passages("train")[:cfg.n_persona],
        "syc_train": gen[:cfg.n_syc], "syc_val": gen[cfg.n_syc:cfg.n_syc + cfg.n_val_ab], "syc_test": test_ab[:cfg.n_test_ab],
        "conf_train": conf[:cfg.n_conf],
        "steer": {"refusal": (hl_val[:cfg.n_val], hl_test[:cfg.n_test]),
                  "persona": ([NEUTRAL.format(p=p) for p in passages("val")[:cfg.n_val]],
                              [NEUTRAL.format(p=p) for p in passages("test")[:cfg.n_test]]),
                  "confidence": ([p["question"] for p in c_val], [p["question"] for p in c_test])},
        "capability": {k: capability_items(k, quick)[:cfg.n_capability] for k in ("mmlu", "truthfulqa")},
        "fidelity": passages("train")[-cfg.n_fidelity:],  # train passages the persona vectors do not read (<= 20)
    }


# ------------------------------------------------------------------------------------------- texts, vetting


def native_texts(lm, d: dict, cfg: Config) -> dict:
    """What an instruct model writes itself (greedy): refusal responses and concise / verbose summaries."""
    if not lm.instruct:
        return {}
    g = lambda prompts, n: [x.text for x in generate(lm, prompts, max_tokens=n, chat=True)]  # noqa: E731
    return {"harmful": g(d["harmful"], cfg.max_tokens), "harmless": g(d["harmless"], cfg.max_tokens),
            "concise": g([CONCISE.format(p=p) for p in d["passages"]], cfg.summary_tokens[0]),
            "verbose": g([VERBOSE.format(p=p) for p in d["passages"]], cfg.summary_tokens[1])}


def vetted(texts: dict, cfg: Config) -> dict:
    """Indices vetting keeps: refused harmful, answered harmless, summary pairs whose verbose is >= ratio x longer."""
    if not texts:
        return {}
    phrases = refusal_substrings()
    refused = [bool(refusal_score(t, phrases)) for t in texts["harmful"]]
    answered = [not refusal_score(t, phrases) for t in texts["harmless"]]
    longer = [words(v) >= cfg.verbose_ratio * max(words(c), 1) for c, v in zip(texts["concise"], texts["verbose"])]
    return {"harmful": [i for i, k in enumerate(refused) if k], "harmless": [i for i, k in enumerate(answered) if k],
            "persona": [i for i, k in enumerate(longer) if k], "flags": {"harmful_refused": refused},
            "report": {"harmful_refused": rate(refused).as_dict(), "harmless_answered": rate(answered).as_dict(),
                       "persona_pairs_kept": rate(longer).as_dict()}}


# ---------------------------------------------------------------------------------------------------- vectors


def _vectors(pos: dict, neg: dict, groups=None, seed: int = 0, paired: bool = False) -> dict:
    """Both methods from one set of activations: {method: {layer: vector}}, the probe's held-out AUROC, and the
    split-half cosine of the difference of means (the noise floor a cosine across precisions is read against).
    ``paired``: ``pos[i]`` and ``neg[i]`` are one item's two sides, kept together by the probe's holdout (BUGFIX #49)."""
    out = {m: {} for m in METHODS}
    auroc, half = {}, {}
    probes = probe_vecs(pos, neg, seed=seed, paired=paired)
    for k in sorted(pos):
        out["diff_of_means"][k] = diff_of_means_vec(pos[k], neg[k], groups)
        out["probe"][k], met = probes[k]
        auroc[k] = met.get("auroc")
        try:
            half[k] = split_consistency("diff_of_means", pos[k], neg[k], seed=seed, groups=groups)
        except MlxInterpError:  # too few examples to halve
            half[k] = None
    out["probe_auroc"], out["split_half"] = auroc, half
    return out


def text_vectors(lm, d: dict, texts: dict, kept: dict, cfg: Config) -> dict:
    """Refusal and persona vectors of ``lm`` reading ``texts`` on the ``kept`` items (a precision's own texts, or the
    reference's): {(trait, position): {method: {layer: v}}}; a trait vetting emptied is {"skipped": why}."""
    if not texts:
        return {}
    out = {}
    h, hl = kept["harmful"], kept["harmless"]
    if min(len(h), len(hl)) < cfg.min_kept:
        why = f"vetting kept {len(h)} harmful (refused) and {len(hl)} harmless (answered) of {len(texts['harmful'])} each"
        out["refusal"] = {"skipped": why}
    else:
        hp, hlp = [d["harmful"][i] for i in h], [d["harmless"][i] for i in hl]
        out[("refusal", "prompt_last")] = _vectors(collect(lm, hp, positions="last", chat=True),
                                                   collect(lm, hlp, positions="last", chat=True), seed=cfg.seed)
        out[("refusal", "response_mean")] = _vectors(
            collect_responses(lm, hp, [texts["harmful"][i] for i in h], chat=True)["mean"],
            collect_responses(lm, hlp, [texts["harmless"][i] for i in hl], chat=True)["mean"], seed=cfg.seed)
    idx = kept["persona"]
    if len(idx) < cfg.min_kept:
        out["persona"] = {"skipped": f"vetting kept {len(idx)} of {len(texts['concise'])} summary pairs"}
    else:
        ps = [d["passages"][i] for i in idx]
        out[("persona", "prompt_last")] = _vectors(collect(lm, [VERBOSE.format(p=p) for p in ps], positions="last", chat=True),
                                                   collect(lm, [CONCISE.format(p=p) for p in ps], positions="last", chat=True),
                                                   seed=cfg.seed, paired=True)
        neutral = [NEUTRAL.format(p=p) for p in ps]
        out[("persona", "response_mean")] = _vectors(
            collect_responses(lm, neutral, [texts["verbose"][i] for i in idx], chat=True)["mean"],
            collect_responses(lm, neutral, [texts["concise"][i] for i in idx], chat=True)["mean"], seed=cfg.seed,
            paired=True)
    return out


def _letter(answer: str) -> str:
    return answer.strip()[1]


def sycophancy_activations(lm, d: dict) -> tuple[dict, dict, list[str]]:
    """CAA's train items read at the answer letter: (matching, not matching, the matching letters)."""
    train = d["syc_train"]
    letters = [_letter(g["answer_matching_behavior"]) for g in train]
    items = ab_items(lm, [g["question"] for g in train], lm.instruct)
    return (*collect_ab(lm, items, matching=letters), letters)


def sycophancy_vectors(lm, d: dict, cfg: Config) -> dict:
    """CAA's sycophancy vectors (matching - not matching, letter-balanced) at the answer letter, both methods."""
    pos, neg, letters = sycophancy_activations(lm, d)
    return _vectors(pos, neg, groups=letters, seed=cfg.seed, paired=True)


def fixed_vectors(lm, d: dict, cfg: Config) -> dict:
    """Sycophancy (CAA A/B, letter-balanced, at the answer letter) and confidence (hedged - confident) vectors: fixed
    text, so native and controlled coincide."""
    chat = lm.instruct
    out = {("sycophancy", "answer_letter"): sycophancy_vectors(lm, d, cfg)}
    qs = [p["question"] if chat else f"Q: {p['question']}\nA:" for p in d["conf_train"]]
    lead = "" if chat else " "
    hed = collect_responses(lm, qs, [lead + p["hedged"] for p in d["conf_train"]], chat=chat)
    con = collect_responses(lm, qs, [lead + p["confident"] for p in d["conf_train"]], chat=chat)
    out[("confidence", "answer_last")] = _vectors(hed["last"], con["last"], seed=cfg.seed, paired=True)
    out[("confidence", "answer_mean")] = _vectors(hed["mean"], con["mean"], seed=cfg.seed, paired=True)
    return out


def as_set(vecs: dict, lm, method: str, what: str) -> VectorSet:
    return VectorSet({k: v for k, v in vecs[method].items()}, lm.name, method, {"what": what}, "resid_post")


def cosines(ref: dict, other: dict, lm_ref, lm_other, layers: dict) -> dict:
    """Per (trait, position, method): cosine with the reference's vector at every layer and at the steering layer,
    beside the reference's own split-half cosine there (diff of means) and the probe's held-out AUROC."""
    out = {}
    for key, rv in ref.items():
        if not isinstance(key, tuple) or key not in other:
            continue
        trait, position = key
        for m in METHODS:
            c = compare_vectors(as_set(rv, lm_ref, m, trait), as_set(other[key], lm_other, m, trait))
            curve = [c[k]["cosine"] for k in sorted(c)]
            at = layers.get(trait)
            out[f"{trait}/{position}/{m}"] = {"per_layer": curve, "at_steering_layer": None if at is None else c[at]["cosine"],
                                             "norm_ratio_at_steering_layer": None if at is None else c[at]["norm_ratio"],
                                             "steering_layer": at,
                                             "reference_split_half": None if at is None else rv["split_half"].get(at),
                                             "probe_auroc": None if at is None else other[key]["probe_auroc"].get(at)}
    return out


# ---------------------------------------------------------------------------------------------------- steering


def _flags(trait: str, base: list[str] | None):
    """Per generation, whether it shows the trait: refused (refusal), hedged (confidence), or longer in words than the
    unsteered generation for the same prompt (persona)."""
    phrases = refusal_substrings()
    if trait == "refusal":
        return lambda gens: [bool(refusal_score(g.text, phrases)) for g in gens]
    if trait == "confidence":
        return lambda gens: [hedged(g.text) for g in gens]
    return lambda gens: [words(g.text) > words(b) for g, b in zip(gens, base)]


def _scorer(trait: str, base: list[str] | None):
    flags = _flags(trait, base)
    return lambda gens: float(np.mean(flags(gens)))


def _prompts(lm, trait: str, prompts: list[str]) -> list[str]:
    return prompts if lm.instruct else [f"Q: {q}\nA:" for q in prompts]


def steerable(lm) -> tuple[str, ...]:
    return ("refusal", "persona", "confidence") if lm.instruct else ("confidence",)


def choose_layers(ref, d: dict, vecs: dict, cfg: Config) -> dict:
    """Per trait: the steering layer, chosen on validation prompts with the reference (coefficient search at each
    candidate depth; the layer whose best coherent step scores highest). None when no candidate is coherent."""
    L = ref.n_layers
    cands = sorted({min(L - 1, max(1, int(round(f * L)))) for f in cfg.depths})
    out = {}
    for trait in steerable(ref):
        key = (trait, STEER_WITH[trait])
        if key not in vecs:
            out[trait] = {"layer": None, "why": vecs.get(trait, {}).get("skipped", "no vector")}
            continue
        val = _prompts(ref, trait, d["steer"][trait][0])
        # only persona is scored against the unsteered text ("longer than unsteered")
        base = [g.text for g in generate(ref, val, max_tokens=_tokens(trait, cfg), chat=ref.instruct)] if trait == "persona" else None
        # the candidate depths' searches in lockstep: one batched generation per step for all of them
        found = search_multipliers(ref, [(vecs[key]["diff_of_means"][k], k) for k in cands], val, _scorer(trait, base),
                                   steps=cfg.search_steps, min_coherent=cfg.min_coherent, max_tokens=_tokens(trait, cfg),
                                   chat=ref.instruct, with_baseline=False, control=False)
        rows = [{"layer": k, "best_score": None if s.best is None else s.best.score,
                 "best_multiplier": None if s.best is None else s.best.multiplier} for k, s in zip(cands, found)]
        ok = [r for r in rows if r["best_score"] is not None]
        best = max(ok, key=lambda r: (r["best_score"], -r["layer"])) if ok else None
        out[trait] = {"layer": None if best is None else best["layer"], "candidates": rows,
                      "chosen_on": f"validation prompts ({len(val)}), reference precision"}
    out["sycophancy"] = choose_sycophancy_layer(ref, d, vecs, cands)
    return out


def _tokens(trait: str, cfg: Config) -> int:
    return cfg.summary_tokens[1] if trait == "persona" else cfg.max_tokens


def ab_base(lm, items_key: str, d: dict, layers) -> Trace:
    """The unsteered pass over ``items_key``'s A/B prompts, capturing ``resid_pre`` at ``layers`` at every position:
    the base that ``_ab``'s steered passes at one of those layers resume from (``run(resume=(base, k))`` skips the
    blocks below k and gives exactly the full pass's logits, tests/test_shim.py), so each costs L - k of L blocks."""
    items = ab_items(lm, [g["question"] for g in d[items_key]], lm.instruct)
    return run(lm, items.prompts, capture=mi.Capture("resid_pre", sorted({int(k) for k in layers}), "all"))


def _ab(lm, items_key: str, d: dict, vec=None, layer=None, m: float = 0.0, base: Trace | None = None) -> dict:
    """CAA's A/B score and logit difference (matching - not matching) on validation or test items. ``base``
    (``ab_base`` of the same items, capturing ``layer``): the unsteered row is read from it, and a steered pass
    resumes from it at ``layer`` (the same logits, fewer blocks; journaled as its logits, so ``--resume`` replays it)."""
    qs = [g["question"] for g in d[items_key]]
    letters = [_letter(g["answer_matching_behavior"]) for g in d[items_key]]
    items = ab_items(lm, qs, lm.instruct)
    ivs = [mi.Add(vec, layers=layer, alpha=m)] if vec is not None and m else []
    if base is None:
        logits = run(lm, items.prompts, interventions=ivs).logits
    elif not ivs:
        logits = base.logits
    else:
        logits = mx.array(memo("exp15_ab", (lm.name, items.prompts, ivs, layer), lambda: np.array(
            run(lm, items.prompts, interventions=ivs, resume=(base, layer)).logits.astype(mx.float32))))
    res = ab_from_logits(items, logits, letters)
    pm = np.where(np.array(letters) == "A", res.p_a, res.p_b)
    po = np.where(np.array(letters) == "A", res.p_b, res.p_a)
    return {**res.summary(), "logit_diff": float(np.mean(np.log(pm) - np.log(po))), "per_item": res.score.tolist()}


def choose_sycophancy_layer(ref, d: dict, vecs: dict, cands: list[int]) -> dict:
    key = ("sycophancy", "answer_letter")
    rows, base = [], ab_base(ref, "syc_val", d, cands)
    for k in cands:
        v = vecs[key]["diff_of_means"][k]
        rows.append({"layer": k, "effect": _ab(ref, "syc_val", d, v, k, 1.0, base)["score"]
                     - _ab(ref, "syc_val", d, v, k, -1.0, base)["score"]})
    best = max(rows, key=lambda r: (r["effect"], -r["layer"]))
    return {"layer": best["layer"], "candidates": rows, "chosen_on": "CAA validation items, reference precision: score(+1) - score(-1)"}


def search_sycophancy(lm, d: dict, vec, layer: int, unit_alpha: float) -> dict:
    """The A/B counterpart of the coefficient search, on the validation items: the multiplier (``SYC_MULTIPLIERS``, in
    units of ``unit_alpha``: ``methods.steering.alpha_per_multiplier``) with the highest A/B score among those whose
    scored answer letters keep a median probability mass >= ``MASS_FLOOR`` (the model still answers with a letter, so
    the score still measures its choice); ties go to the smaller multiplier. ``best`` is None when none keeps them.
    ``val_baseline`` is the unsteered score on the same items, so a reader sees whether the chosen multiplier moved it."""
    trace = ab_base(lm, "syc_val", d, [layer])
    base = _ab(lm, "syc_val", d, base=trace)
    steps = []
    for m in SYC_MULTIPLIERS:
        r = _ab(lm, "syc_val", d, vec, layer, m * unit_alpha, trace)
        steps.append({"multiplier": m, "alpha": m * unit_alpha, "score": r["score"], "mass_median": r["mass_median"],
                      "answers_with_a_letter": r["mass_median"] >= MASS_FLOOR})
    ok = [s for s in steps if s["answers_with_a_letter"]]
    best = max(ok, key=lambda s: (s["score"], -s["multiplier"])) if ok else None
    return {"steps": steps, "best": best, "unit_alpha": unit_alpha,
            "val_baseline": {"score": base["score"], "mass_median": base["mass_median"], "n": len(d["syc_val"])},
            "chosen_on": f"CAA validation items ({len(d['syc_val'])}), this precision: highest A/B score with median "
                         f"letter mass >= {MASS_FLOOR}"}


def _syc_unit_alpha(lm, d: dict, vec, layer: int) -> float:
    """One norm-relative multiplier's coefficient on ``vec``: the mean resid_post norm at ``layer`` over the validation
    A/B prompts, over the vector's norm (the generation traits' rule)."""
    items = ab_items(lm, [g["question"] for g in d["syc_val"]], lm.instruct)
    return alpha_per_multiplier(vec, [layer], residual_norms(lm, items.prompts, [layer], site="resid_post"))


def steer(lm, judge, d: dict, vecs: dict, layers: dict, cfg: Config) -> dict:
    """Per trait: the multiplier the coefficient search picks on validation prompts, the test score there, and a
    random direction of the same norm at the same multiplier; plus the A/B sycophancy rows."""
    out = {}
    for trait in steerable(lm):
        k = layers.get(trait, {}).get("layer")
        key = (trait, STEER_WITH[trait])
        if k is None or key not in vecs:
            out[trait] = {"skipped": layers.get(trait, {}).get("why") or vecs.get(trait, {}).get("skipped", "no layer chosen")}
            continue
        v = vecs[key]["diff_of_means"][k]
        val, test = (_prompts(lm, trait, p) for p in d["steer"][trait])
        n_tok = _tokens(trait, cfg)
        base_val = [g.text for g in generate(lm, val, max_tokens=n_tok, chat=lm.instruct)] if trait == "persona" else None
        s = search_multiplier(lm, v, k, val, _scorer(trait, base_val), steps=cfg.search_steps, min_coherent=cfg.min_coherent,
                              max_tokens=n_tok, chat=lm.instruct, control=False, judge=judge)
        row = {"layer": k, "search": {"steps": [{"multiplier": x.multiplier, "score": x.score, "coherent_rate": x.coherent_rate}
                                                for x in s.steps]}}
        tested, base_test = steer_test(lm, judge, trait, v, k, None if s.best is None else s.best.alpha, test, cfg)
        row["test_baseline"] = tested.pop("test_baseline")
        if s.best is None:
            row.update(best=None, why="no multiplier kept the validation generations coherent")
        else:
            row["best"] = {"multiplier": s.best.multiplier, "alpha": s.best.alpha, "val_score": s.best.score}
            row.update(tested)
        row["_unit_alpha"], row["_vector"], row["_base_test"] = s.unit_alpha, v, base_test
        out[trait] = row
    k = layers["sycophancy"]["layer"]
    out["sycophancy"] = steer_sycophancy(lm, d, vecs[("sycophancy", "answer_letter")]["diff_of_means"][k], k, cfg)
    return out


def steer_test(lm, judge, trait: str, v, k: int, alpha: float | None, test: list[str], cfg: Config) -> tuple[dict, list[str]]:
    """A generation trait's test rows at the chosen coefficient ``alpha`` of ``v`` at layer ``k``: unsteered, steered,
    and a random direction of the same norm at the same coefficient (``alpha`` None: unsteered only), from one
    generate call and one coherence pass; and the unsteered texts (what cross-precision steering is judged against)."""
    conds = {"base": (test, [])}
    if alpha is not None:
        rnd = random_direction(lm.width, float(np.linalg.norm(v)), seed=cfg.seed + k)
        conds.update(test=(test, [mi.Add(v, layers=k, alpha=alpha)]), test_random=(test, [mi.Add(rnd, layers=k, alpha=alpha)]))
    gens = generate_conditions(lm, conds, max_tokens=_tokens(trait, cfg), chat=lm.instruct)
    judged = coherence_by_condition(judge, gens)  # one scoring pass: the conditions share their test prompts
    flags = _flags(trait, [g.text for g in gens["base"]])
    out = {"test_baseline": _evaluate(judge, gens["base"], flags, judged["base"])}
    if trait == "persona":  # "longer than unsteered" is false by construction for the unsteered text itself
        out["test_baseline"]["rate"] = None
        out["test_baseline"]["score"] = None
    if alpha is not None:
        for name in ("test", "test_random"):
            out[name] = _evaluate(judge, gens[name], flags, judged[name])
    return out, [g.text for g in gens["base"]]


def steer_sycophancy(lm, d: dict, v, k: int, cfg: Config) -> dict:
    """CAA's A/B rows at -1/0/+1 times the raw vector ``v`` at layer ``k`` (``sycophancy_x1``), then its coefficient
    search (``add_sycophancy_search``)."""
    row = sycophancy_x1(lm, d, v, k, cfg)
    return row if "skipped" in row else add_sycophancy_search(lm, d, row, cfg)


def sycophancy_x1(lm, d: dict, v, k: int, cfg: Config) -> dict:
    """CAA's A/B rows on the test items at -1/0/+1 times the raw vector ``v`` at layer ``k``, beside a random vector
    of its norm; ``skipped`` (the unsteered row only) below the letter-mass floor. ``_vector`` keeps ``v`` for the
    cross-precision rows either way: another precision can still be steered with it. ``_ab_base``: the test items'
    ``ab_base`` at ``k``, which this precision's later steered test passes resume from."""
    trace = ab_base(lm, "syc_test", d, [k])
    base = _public(_ab(lm, "syc_test", d, base=trace))
    if base["mass_median"] < MASS_FLOOR:
        return {"skipped": f"the scored answer tokens carry a median probability of {base['mass_median']:.3f} "
                           f"< {MASS_FLOOR} on {lm.name}", "0": base, "layer": k, "_vector": v, "_ab_base": trace}
    rnd = random_direction(lm.width, float(np.linalg.norm(v)), seed=cfg.seed + k)
    return {"layer": k, "multiplier": "x1 the raw difference of means (CAA)", "0": base,
            **{f"{m:+.0f}": _public(_ab(lm, "syc_test", d, v, k, m, trace)) for m in (-1.0, 1.0)},
            **{f"random_{m:+.0f}": _public(_ab(lm, "syc_test", d, rnd, k, m, trace)) for m in (-1.0, 1.0)},
            "_vector": v, "_ab_base": trace}


def add_sycophancy_search(lm, d: dict, row: dict, cfg: Config) -> dict:
    """``row`` (``sycophancy_x1``) with the coefficient search on the validation items and the test items at its
    multiplier, beside a random vector of the same norm at the same coefficient."""
    v, k = row["_vector"], row["layer"]
    s = search_sycophancy(lm, d, v, k, _syc_unit_alpha(lm, d, v, k))
    row = {**row, "search": s}
    if s["best"] is None:
        row.update(best=None, why=f"no multiplier kept the validation answers' letter mass >= {MASS_FLOOR}")
    else:
        row["best"] = {"multiplier": s["best"]["multiplier"], "alpha": s["best"]["alpha"], "val_score": s["best"]["score"]}
        row.update(sycophancy_test(lm, d, v, k, s["best"]["alpha"], row.get("_ab_base"), cfg))
    return row


def sycophancy_test(lm, d: dict, v, k: int, alpha: float, base: Trace | None, cfg: Config) -> dict:
    """The CAA test items at the searched coefficient ``alpha`` of ``v`` at layer ``k``, beside a random vector of the
    same norm at the same coefficient (both resumed from ``base``, the test items' ``ab_base``, when given)."""
    rnd = random_direction(lm.width, float(np.linalg.norm(v)), seed=cfg.seed + k)
    return {"test": _public(_ab(lm, "syc_test", d, v, k, alpha, base)),
            "test_random": _public(_ab(lm, "syc_test", d, rnd, k, alpha, base))}


def _evaluate(judge, gens, flags, judged: dict | None = None) -> dict:
    """The trait rate (Wilson interval) and the coherent rate (judged by ``judge``, or ``judged`` when already
    computed) of generations, with the per-item flags (for paired intervals across precisions on the same prompts)."""
    items = [bool(x) for x in flags(gens)]
    out = score_generations(judge, gens, {"rate": items}, examples=2, judged=judged)
    return {**out, "score": out["rate"]["p"], "per_item": items}


def cross_steer(receiver, judge, d: dict, own: dict, foreign: dict, cfg: Config) -> dict:
    """The ``foreign`` precision's vector on ``receiver``, at the receiver's chosen layer and alpha, rescaled to the
    norm of the receiver's own vector (so only the direction differs)."""
    out = {}
    for trait, row in own.items():
        if not row.get("best"):
            out[trait] = {"skipped": row.get("skipped") or "no coherent multiplier on validation for the receiver"}
            continue
        if "_vector" not in foreign.get(trait, {}):  # the receiver could steer; the other precision has no vector
            out[trait] = {"skipped": f"no vector from the other precision: {foreign.get(trait, {}).get('skipped', 'none')}"}
            continue
        v_own, v_for = row["_vector"], foreign[trait]["_vector"]
        v = v_for / np.linalg.norm(v_for) * np.linalg.norm(v_own)
        if trait == "sycophancy":  # the A/B test items at the receiver's searched multiplier
            out[trait] = _public(_ab(receiver, "syc_test", d, v, row["layer"], row["best"]["alpha"], row.get("_ab_base")))
            continue
        test = _prompts(receiver, trait, d["steer"][trait][1])
        n_tok = _tokens(trait, cfg)
        base = row["_base_test"]  # the receiver's unsteered test generations (steer() made them; greedy, so equal)
        gens = generate(receiver, test, max_tokens=n_tok, chat=receiver.instruct,
                        interventions=[mi.Add(v, layers=row["layer"], alpha=row["best"]["alpha"])])
        out[trait] = _evaluate(judge, gens, _flags(trait, base))
    return out


# ---------------------------------------------------------------------------------------------------- capability


def capability(lm, d: dict) -> dict:
    """A/B accuracy on MMLU and TruthfulQA (correct when p(correct) > p(other)), with per-item outcomes for pairing."""
    out = {}
    for name, items in d["capability"].items():
        ab = ab_items(lm, [x["prompt"] for x in items], lm.instruct)
        letters = [_letter(x["correct"]) for x in items]
        res = ab_from_logits(ab, run(lm, ab.prompts).logits, letters)
        pc = np.where(np.array(letters) == "A", res.p_a, res.p_b)
        po = np.where(np.array(letters) == "A", res.p_b, res.p_a)
        correct = (pc > po).tolist()
        out[name] = {"accuracy": rate(correct).as_dict(), "logit_diff": float(np.mean(np.log(pc) - np.log(po))),
                     "mass_median": float(np.median(res.mass)), "prefers_a": rate(res.p_a > res.p_b).as_dict(),
                     "_correct": correct}
    return out


# ---------------------------------------------------------------------------------------------------- the study


def _public(x):
    if isinstance(x, dict):
        return {(k if isinstance(k, str) else "/".join(k)): _public(v) for k, v in x.items()
                if not (isinstance(k, str) and k.startswith("_"))}
    if isinstance(x, (list, tuple)):
        return [_public(v) for v in x]
    if isinstance(x, np.generic):  # numpy bools and floats from comparisons
        return x.item()
    return x


def _spread(rows: dict, trait: str, min_coherent: float = 0.75, seed: int = 0) -> dict | None:
    """max - min over precisions of the trait's test score at the multiplier chosen on validation, with a 95%
    bootstrap interval over the (shared) test prompts. A precision with no coherent multiplier on validation counts
    with its unsteered score (its best coherent setting), except for persona, whose score is relative to the unsteered
    text; sycophancy counts at its searched multiplier (with its unsteered score where none kept the letters;
    at CAA's x1 in files from before the search), and a sycophancy row whose scored tokens carry too little mass does
    not count (its metric does not measure the choice). Rows whose test generations fall below the coherence bar (for
    sycophancy: whose steered test letters fall below the mass floor) are listed."""
    scores, unsteered, incoherent, items = {}, [], [], {}
    for p, r in rows.items():
        s = r["steering"].get(trait) or {}
        if trait == "sycophancy":
            if s.get("test"):  # at the multiplier searched on validation
                scores[p], items[p] = s["test"]["score"], s["test"].get("per_item")
                if s["test"]["mass_median"] < MASS_FLOOR:  # the letters lost their mass on the test items
                    incoherent.append(p)
            elif "search" in s and "0" in s:  # searched, and no multiplier kept the letters: its unsteered score
                scores[p], items[p] = s["0"]["score"], s["0"].get("per_item")
                unsteered.append(p)
            elif "+1" in s:  # a file from before the search (2026-12-05): CAA's x1
                scores[p] = s["+1"]["score"]
                items[p] = s["+1"].get("per_item")
        elif s.get("test"):
            scores[p], items[p] = s["test"]["rate"]["p"], s["test"].get("per_item")
            if s["test"]["coherent"]["p"] < min_coherent:
                incoherent.append(p)
        elif trait != "persona" and (s.get("test_baseline") or {}).get("rate"):
            scores[p], items[p] = s["test_baseline"]["rate"]["p"], s["test_baseline"].get("per_item")
            unsteered.append(p)
    if len(scores) < 2:
        return None
    out = {"points": 100 * (max(scores.values()) - min(scores.values())), "scores": scores, "unsteered": unsteered,
           "incoherent_on_test": incoherent, "max_at": max(scores, key=scores.get), "min_at": min(scores, key=scores.get)}
    mat = [items[p] for p in scores]
    if all(m is not None for m in mat) and len({len(m) for m in mat}) == 1 and len(mat[0]) > 1:
        a = np.array(mat, dtype=float)  # [precisions, prompts]
        rng = np.random.default_rng(seed)
        boot = []
        for _ in range(2000):
            m = a[:, rng.integers(0, a.shape[1], a.shape[1])].mean(axis=1)
            boot.append(100 * (m.max() - m.min()))
        out["points_ci95"] = [float(np.percentile(boot, 2.5)), float(np.percentile(boot, 97.5))]
        out["n_prompts"] = int(a.shape[1])
    return out


def hypotheses(rows: dict, ref_name: str) -> dict:
    """Each stated hypothesis beside what this model measured."""
    def cos_at(prec, method="diff_of_means", kind="native"):
        r = rows.get(prec)
        if not r:
            return {}
        return {k: v["at_steering_layer"] for k, v in r["cosine"][kind].items() if k.endswith(method) and v["at_steering_layer"] is not None}

    out = {"stated": HYPOTHESES}
    c8 = cos_at("8bit")
    out["int8_cosine"] = {"measured": c8, "min": min(c8.values()) if c8 else None,
                          "met": (min(c8.values()) >= 0.95) if c8 else None,
                          "note": "met = every 8-bit cosine >= 0.95 (above 0.99 means 8-bit degrades even less)"}
    four = {p: cos_at(p) for p in FOUR_BIT if p in rows}
    vals = [x for c in four.values() for x in c.values()]
    out["nf4_cosine"] = {"measured": four, "min": min(vals) if vals else None, "max": max(vals) if vals else None,
                         "met": (0.88 <= min(vals) and max(vals) <= 0.94) if vals else None,
                         "note": "met = every 4-bit cosine inside the stated range; above it means 4-bit degrades less"}
    pairs = [(cos_at(p, "probe")[k.replace("diff_of_means", "probe")], c) for p in rows if p != ref_name
             for k, c in cos_at(p).items() if k.replace("diff_of_means", "probe") in cos_at(p, "probe")]
    if pairs:
        diff = paired_diff([a for a, _ in pairs], [b for _, b in pairs])
        out["probe_better"] = {**diff, "n_pairs": len(pairs), "met": diff["lo"] > 0,
                               "measured_as": "cosine(probe) - cosine(diff of means), paired over traits x positions x "
                                              "precisions; met when the 95% interval lies above 0"}
    else:
        out["probe_better"] = {"met": None, "why": "no vector pairs to compare"}
    spreads = {t: _spread(rows, t) for t in ("refusal", "persona", "confidence", "sycophancy")}
    spreads = {t: s for t, s in spreads.items() if s}
    out["spread"] = {"per_trait": spreads, "mean_points": float(np.mean([s["points"] for s in spreads.values()])) if spreads else None,
                     "met": None, "note": "our scores are judge-free rates; compare magnitudes, not a verdict"}
    top = max(spreads, key=lambda t: spreads[t]["points"]) if spreads else None
    out["sycophancy_most_sensitive"] = {"most_sensitive": top, "met": (top == "sycophancy") if "sycophancy" in spreads else None}
    ctl = {p: {k: (rows[p]["cosine"]["native"].get(k, {}).get("at_steering_layer"), v["at_steering_layer"])
               for k, v in rows[p]["cosine"].get("controlled", {}).items() if v["at_steering_layer"] is not None}
           for p in rows if p != ref_name}
    flat = [(n, c) for p in ctl.values() for n, c in p.values() if n is not None]
    out["controlled_text"] = {"native_vs_controlled": ctl, "n": len(flat),
                              "mean_native": float(np.mean([n for n, _ in flat])) if flat else None,
                              "mean_controlled": float(np.mean([c for _, c in flat])) if flat else None,
                              "met": (np.mean([c for _, c in flat]) >= np.mean([n for n, _ in flat])) if flat else None}
    fours = [p for p in FOUR_BIT if p in rows]
    if "8bit" in rows and fours:
        k8 = rows["8bit"]["fidelity"]["kl"]
        k4 = {p: rows[p]["fidelity"]["kl"] for p in fours}
        m4 = {p: cos_at(p) for p in fours}
        shared = [k for k in c8 if all(k in m4[p] for p in fours)]
        mean8 = float(np.mean([c8[k] for k in shared])) if shared else None
        mean4 = {p: float(np.mean([m4[p][k] for k in shared])) for p in fours} if shared else {}
        out["int8_beats_4bit"] = {"kl_8bit": k8, "kl_4bit": k4, "mean_cosine_8bit": mean8, "mean_cosine_4bit": mean4,
                                  "met": bool(all(k8 < k for k in k4.values()) and
                                              (mean8 is None or all(mean8 >= v for v in mean4.values())))}
    else:
        out["int8_beats_4bit"] = {"met": None, "why": f"needs 8bit and one of {', '.join(FOUR_BIT)} in the run"}
    cont = {p: r["vetting"]["harmful_refused"] for p, r in rows.items() if r.get("vetting")}
    out["unvetted_contamination"] = {"harmful_not_refused": {p: 1 - v["p"] for p, v in cont.items()}, "met": None,
                                     "note": "the share of the unvetted positive set without the trait, per precision"}
    return out


class Laps:
    """Wall seconds and model work per named stage (``lap(name)`` closes the stage that began at the previous lap):
    where a run's time goes, recorded beside each row's ``wall_s``. The work (token positions through the model and
    decode steps, ``runs.work``) does not depend on what else the machine ran, so it profiles even a crowded run.
    A resumed run computes only part of a stage: ``replayed_s`` is what the stage's replayed calls took when an
    earlier process computed them (``runs.work.credit``); ``stage_s`` + ``replayed_s`` is this process's time plus
    their compute (not the earlier process's time between calls, or a call it did not finish)."""

    def __init__(self):
        self.t, self.seconds, self.work = time.time(), {}, {}
        self.w, self.r = work.totals(), work.replayed_totals()

    def __call__(self, name: str) -> None:
        now, w, r = time.time(), work.totals(), work.replayed_totals()
        self.seconds[name] = self.seconds.get(name, 0.0) + now - self.t
        done = self.work.setdefault(name, {"positions": 0, "decode_steps": 0, "replayed_s": 0.0})
        for k in ("positions", "decode_steps"):
            done[k] += w[k] - self.w[k]
        done["replayed_s"] += r["seconds"] - self.r["seconds"]
        self.t, self.w, self.r = now, w, r


def prepare_variants(alias: str, precisions) -> None:
    """Convert the reference and every variant before any model is held: a conversion beside a held model ran out of
    memory (BUGFIX.md #52 in the study, #58 in ``exp15_sycophancy``)."""
    if alias in REGISTRY and REGISTRY[alias].offline:
        for prec in dict.fromkeys([REFERENCE, *precisions]):
            mi.prepare(alias, prec)


def measure_row(lm, ref, d: dict, own: tuple, reference: tuple, layers: dict, cfg: Config, lap: Laps) -> dict:
    """One precision's row before its cross-precision steering: fidelity, capability, vetting, native cosines, the
    controlled-text cosines (a variant) and steering (``steer``'s rows, with their vectors until ``_public``).
    ``own`` and ``reference`` are (texts, vetted sets, vectors) of this precision and of fp32."""
    (texts, kept, vecs), (ref_texts, ref_kept, ref_vecs) = own, reference
    L = {t: v["layer"] for t, v in layers.items()}
    row = {"model": lm.describe(), "fidelity": agreement(ref, lm, d["fidelity"])}
    lap("fidelity")
    row["capability"] = capability(lm, d)
    lap("capability")
    row.update(vetting=kept.get("report"), skipped={t: v["skipped"] for t, v in vecs.items() if isinstance(t, str)},
               cosine={"native": cosines(ref_vecs, vecs, ref, lm, L)})
    lap("native_cosines")
    if lm is not ref and texts:
        controlled = text_vectors(lm, d, ref_texts, ref_kept, cfg)  # this precision reading the reference's text
        ref_reads = text_vectors(ref, d, texts, kept, cfg)  # the reference reading this precision's text
        row["cosine"]["controlled"] = cosines(ref_vecs, controlled, ref, lm, L)
        row["cosine"]["reference_on_variant_text"] = cosines(ref_vecs, ref_reads, ref, ref, L)
        row["cosine"]["variant_text_model_effect"] = cosines(ref_reads, vecs, ref, lm, L)
        row["cosine"]["variant_model_text_effect"] = cosines(controlled, vecs, lm, lm, L)
    lap("controlled_text")
    row["steering"] = steer(lm, ref, d, vecs, layers, cfg)
    lap("steering")
    return row


def study(alias: str, precisions: list[str], cfg: Config, quick: bool, out_dir: str, reused=None) -> str:
    """The study on ``alias`` at fp32 and each of ``precisions``; returns the result file's path. ``reused``
    (``exp15_reference.Reused``): take the steering layers and the fp32 row from a kept part instead of recomputing
    them, after checking that what this part recomputes of fp32 reproduces it."""
    t0 = time.time()
    d = data(cfg, quick)
    prepare_variants(alias, precisions)
    ref = mi.load(f"{alias}@{REFERENCE}")
    print(f"{NAME}: {alias}, reference {ref.name}, variants {', '.join(precisions)}", file=sys.stderr)
    progress(1, 4, f"{ref.name}: texts and vectors")
    lap = Laps()
    ref_texts = native_texts(ref, d, cfg)
    lap("native_texts")
    ref_kept = vetted(ref_texts, cfg)
    ref_vecs = {**text_vectors(ref, d, ref_texts, ref_kept, cfg), **fixed_vectors(ref, d, cfg)}
    lap("vectors")
    if reused is None:
        progress(2, 4, f"{ref.name}: steering layers (validation)")
        layers = choose_layers(ref, d, ref_vecs, cfg)
        lap("steering_layers")
    else:
        layers = reused.layers
    reference_stage_s, reference_stage_work = lap.seconds, lap.work
    reference = (ref_texts, ref_kept, ref_vecs)
    rows, steered = {}, {}
    for i, prec in enumerate([REFERENCE] + list(precisions)):
        t1 = time.time()
        lap = Laps()
        lm = ref if prec == REFERENCE else mi.load(f"{alias}@{prec}")
        lap("load")
        progress(3, 4, f"{lm.name}: capability, vectors, steering ({i + 1}/{len(precisions) + 1})")
        if prec == REFERENCE and reused is not None:
            row, steered[prec] = reused.reference_row(ref, d, reference, cfg)
            lap("reference_check")
        elif prec == REFERENCE:
            row = measure_row(ref, ref, d, reference, reference, layers, cfg, lap)
            steered[prec] = row["steering"]
        else:
            texts = native_texts(lm, d, cfg)
            lap("native_texts")
            kept = vetted(texts, cfg)
            vecs = {**text_vectors(lm, d, texts, kept, cfg), **fixed_vectors(lm, d, cfg)}
            lap("vectors")
            row = measure_row(lm, ref, d, (texts, kept, vecs), reference, layers, cfg, lap)
            steered[prec] = row["steering"]
            row["cross_steering"] = {"reference_vector_on_variant": cross_steer(lm, ref, d, steered[prec], steered[REFERENCE], cfg),
                                     "variant_vector_on_reference": cross_steer(ref, ref, d, steered[REFERENCE], steered[prec], cfg)}
            lap("cross_steering")
            steered[prec].get("sycophancy", {}).pop("_ab_base", None)  # its test-item activations: used up
            if kept and ref_kept:
                row["vetting"]["harmful_refused_minus_reference"] = paired_diff(
                    np.array(kept["flags"]["harmful_refused"], dtype=float),
                    np.array(ref_kept["flags"]["harmful_refused"], dtype=float), seed=cfg.seed)
            for name in row["capability"]:
                a = np.array(row["capability"][name]["_correct"], dtype=float)
                b = np.array(rows[REFERENCE]["capability"][name]["_correct"], dtype=float)
                row["capability"][name]["minus_reference"] = paired_diff(a, b, seed=cfg.seed)
        row["wall_s"] = time.time() - t1
        row["wall_s_total"] = row["wall_s"] + sum(v["replayed_s"] for v in lap.work.values())  # with resumed calls
        row["stage_s"], row["stage_work"] = lap.seconds, lap.work
        rows[prec] = row
        if lm is not ref:
            del lm
            gc.collect()
            mx.clear_cache()  # MLX keeps freed buffers for reuse: give this variant's weights back before the next
    progress(4, 4, "hypotheses")
    payload = {"reference": ref.name, "precisions": [REFERENCE] + list(precisions), "config": asdict(cfg),
               "layers": layers, "rows": rows, "hypotheses": hypotheses(rows, REFERENCE),
               "positions": STEER_WITH, "methods": METHODS, "sycophancy_search": SYC_SEARCH,
               "reference_stage_s": reference_stage_s, "reference_stage_work": reference_stage_work}
    if reused is not None:
        payload["reference_from"] = reused.provenance()
    payload = _public(payload)
    path = mi.save_result(NAME, payload, lm=ref, wall_s=time.time() - t0, out_dir=out_dir,
                          config={"quick": quick, "precisions": list(precisions),
                                  **({"reference_from": reused.file_name} if reused is not None else {})})
    return str(path)


def main(argv=None) -> list[str]:
    a = parse(__doc__.strip().splitlines()[0], argv, extra=_arguments)
    code_version()
    paths = []
    try:
        cfg, quick = config(a.quick), a.quick
        if a.same_config_as:
            if a.quick:
                raise MlxInterpError("give --quick or --same-config-as, not both: the file fixes the configuration")
            cfg, same, quick, alias = config_of(a.same_config_as)
            a.precision, a.model = a.precision or same, a.model or [alias]
        reused = None
        if a.reference_from:
            reused = _reused(a)
            cfg, quick = reused.cfg, reused.quick
        wanted = PRECISIONS["quick" if a.quick else "full"]
        default = [p for p in wanted
                   if Precision.parse(p).bits is None or (Precision.parse(p).mode if Precision.parse(p).mode != "affine"
                                                          else f"{Precision.parse(p).bits}bit") in supported_formats()]
        if not a.precision and len(default) < len(wanted):  # said, not silent: the grid is smaller on this mlx
            print(f"exp15: this mlx cannot build {', '.join(p for p in wanted if p not in default)}; the default set "
                  f"leaves it out (supported formats: {', '.join(supported_formats())})", file=sys.stderr)
        precisions = a.precision or default
        for p in precisions:
            Precision.parse(p).check_offline()
        with journal(NAME, a, argv):
            paths = _models(a, precisions, cfg, quick, reused)
    except MlxInterpError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    return paths


def _arguments(ap) -> None:
    ap.add_argument("--precision", action="append", help="a variant to compare with the fp32 reference (repeatable; "
                                                          "default: the quick or full set)")
    ap.add_argument("--same-config-as", metavar="RESULT", help="rerun with the configuration, precisions and (unless "
                                                               "--model is given) model an exp15 result file records")
    ap.add_argument("--reference-from", metavar="RESULT", help="a part of a grid: take the steering layers and the fp32 "
                    "row from this kept exp15 result (its model and configuration) after reproducing fp32's texts, "
                    "vectors, capability and test rows (experiments/exp15_reference.py); give --precision")


def _reused(a):
    """The kept part ``--reference-from`` names (``exp15_reference.Reused``), after checking the other arguments."""
    from experiments.exp15_reference import Reused  # it builds on this module

    if a.quick or a.same_config_as:
        raise MlxInterpError("give --reference-from without --quick or --same-config-as: the kept file fixes the run's "
                             "configuration")
    if not a.precision:
        raise MlxInterpError("--reference-from needs the variants this part measures: give --precision (repeatable)")
    reused = Reused(a.reference_from)
    for m in a.model or []:
        if split_name(m)[0] != reused.alias:
            raise MlxInterpError(f"--reference-from {reused.file_name} measured {reused.alias}; it cannot serve "
                                 f"--model {m} (give --model {reused.alias} or leave --model out)")
    a.model = a.model or [reused.alias]
    return reused


def _models(a, precisions: list[str], cfg: Config, quick: bool, reused=None) -> list[str]:
    """The study for each --model (inside the run's journal)."""
    paths = []
    for model in a.model or ["smollm2-135m"]:
        alias, prec = split_name(model)
        if prec is not None:
            raise MlxInterpError(f"give exp15 a model without a precision ({model!r} -> {alias!r}); it loads "
                                 f"{alias}@{REFERENCE} and every --precision itself")
        j = active()
        done = j.finished(f"{NAME}:{model}") if j is not None else None
        if done:  # an interrupted run of this command wrote it already
            print(f"  -> {done} (written before the interruption)")
            paths.append(done)
            continue
        paths.append(study(alias, precisions, cfg, quick, a.out, reused))
        print(f"  -> {paths[-1]}")
        if j is not None:
            j.finish(f"{NAME}:{model}", paths[-1])
    return paths


if __name__ == "__main__":
    main()
