"""Coherence without a judge: perplexity under the unsteered model, and repetition.

Steered text counts as coherent when (a) the *unsteered* model does not find it surprising
(perplexity of the continuation given the prompt <= PPL_MAX) and (b) it does not loop
(fraction of repeated 3-grams <= REP_MAX). Calibrated with bench/coherence_calibration.py on SmolLM2 and
Qwen2.5 (docs/results_directions.md, "Coherence thresholds"): unsteered continuations had median ppl
1.4-1.8 and repetition 0.0; coherent steered refusals 2.2-6.9; degraded text (URL fragments, looping
lists) 11-77 or repetition 0.3-0.5. Perplexity also penalises a fluent but surprising change (a refusal
of a harmless request), so the bar is conservative for strong steering.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..errors import MlxInterpError
from .text import repetition_rate

PPL_MAX = 15.0
REP_MAX = 0.5


def continuation_nll(lm, prompt_tokens: Sequence[Sequence[int]], cont_tokens: Sequence[Sequence[int]], *,
                     batch_size: int = 4) -> list[np.ndarray]:
    """Per-token negative log-likelihood of each continuation given its prompt, under ``lm`` unsteered.

    Continuations that share a prompt (a study's conditions on the same test prompts) read it from one KV cache:
    the prompt runs once, its continuations run as rows continuing that cache (right-padded; causal attention keeps
    padding out of every real token), and only their tokens are unembedded. A prompt with one continuation runs
    with it in a plain batched pass. ``batch_size`` stays small: every scored position's logits are computed
    (Gemma 3: 262k per token). Journaled as the values (``runs.journal.memo``): the cached passes cannot be."""
    from ..runs import journal

    prompt_tokens = [list(map(int, t)) for t in prompt_tokens]
    cont_tokens = [list(map(int, t)) for t in cont_tokens]
    return journal.memo("continuation_nll", (lm.name, prompt_tokens, cont_tokens, batch_size),
                        lambda: _continuation_nll(lm, prompt_tokens, cont_tokens, batch_size))


def _continuation_nll(lm, prompt_tokens, cont_tokens, batch_size: int) -> list[np.ndarray]:
    from ..core.batching import PAD_ID
    from ..core.trace import run

    out = [np.zeros(0) for _ in prompt_tokens]
    groups: dict[tuple, list[int]] = {}
    for i, c in enumerate(cont_tokens):
        if len(c):
            groups.setdefault(tuple(prompt_tokens[i]), []).append(i)
    caches = getattr(lm, "tensor_parallel", 1) == 1  # a tensor-parallel model has no caches as values
    alone = [i for rows in groups.values() if len(rows) == 1 or not caches for i in rows]
    if alone:
        tr = run(lm, [list(prompt_tokens[i]) + list(cont_tokens[i]) for i in alone], logits="tokens", batch_size=batch_size)
        lp = np.array(tr.logits, dtype=np.float64)
        for b, i in enumerate(alone):
            cols = tr.pads[b] + len(prompt_tokens[i]) + np.arange(len(cont_tokens[i]))  # column t: log p(token t | < t)
            out[i] = -lp[b, cols]
    for prompt, rows in groups.items():
        if len(rows) == 1 or not caches:
            continue
        pre = run(lm, [list(prompt)], logits="last", return_cache=True, batch_size=None)
        first = np.array(pre.logits[0], dtype=np.float64)
        first = first - first.max() - np.log(np.exp(first - first.max()).sum())  # log p(first token | prompt)
        for at in range(0, len(rows), batch_size):
            sub = rows[at:at + batch_size]
            m = max(len(cont_tokens[i]) for i in sub)
            lp = None
            if m > 1:
                block = [list(cont_tokens[i]) + [PAD_ID] * (m - len(cont_tokens[i])) for i in sub]
                lp = np.array(run(lm, block, cache=pre.cache, logits="tokens", batch_size=None).logits,
                              dtype=np.float64)[:, -m:]
            for b, i in enumerate(sub):
                n = len(cont_tokens[i])
                rest = -lp[b, 1:n] if lp is not None else np.zeros(0)
                out[i] = np.concatenate([[-first[int(cont_tokens[i][0])]], rest])
    return out


def coherence(lm, generations, *, ppl_max: float = PPL_MAX, rep_max: float = REP_MAX) -> dict:
    """Judge-free coherence of generated texts (``Generation`` list) under the unsteered model.

    Returns per-text perplexity and repetition, their medians, and the fraction of texts that pass
    both thresholds ("coherent_rate").
    """
    return coherence_by_condition(lm, {"": generations}, ppl_max=ppl_max, rep_max=rep_max)[""]


def coherence_by_condition(lm, conditions: dict, *, ppl_max: float = PPL_MAX, rep_max: float = REP_MAX) -> dict:
    """``coherence`` of several conditions' generations (``{name: generations}``) in one scoring pass, so
    conditions on the same prompts share each prompt's cached pass (``continuation_nll``). ``{name: result}``."""
    bad = [k for k, g in conditions.items() if not list(g)]
    if not conditions or bad:
        raise MlxInterpError(f"no generations to score for coherence{f' in condition {bad[0]!r}' if bad and bad[0] else ''}")
    groups = {k: list(g) for k, g in conditions.items()}
    gens = [g for gs in groups.values() for g in gs]
    nll = continuation_nll(lm, [g.prompt_tokens for g in gens], [g.tokens for g in gens])
    out, at = {}, 0
    for name, gs in groups.items():
        part = nll[at:at + len(gs)]
        at += len(gs)
        ppl = [float(np.exp(x.mean())) if len(x) else float("nan") for x in part]
        rep = [repetition_rate(g.tokens) for g in gs]
        ok = [bool(np.isfinite(p) and p <= ppl_max and r <= rep_max) for p, r in zip(ppl, rep)]
        out[name] = {"perplexity": ppl, "repetition": rep, "coherent": ok, "median_perplexity": float(np.nanmedian(ppl)),
                     "median_repetition": float(np.median(rep)), "coherent_rate": float(np.mean(ok)),
                     "thresholds": {"ppl_max": ppl_max, "rep_max": rep_max, "rep_ngram": 3}}
    return out
