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

    ``batch_size`` stays small: every position's logits are computed (Gemma 3: 262k per token)."""
    from ..core.trace import run

    full = [list(p) + list(c) for p, c in zip(prompt_tokens, cont_tokens)]
    keep = [i for i, c in enumerate(cont_tokens) if len(c)]
    out = [np.zeros(0) for _ in full]
    if not keep:
        return out
    tr = run(lm, [full[i] for i in keep], logits="tokens", batch_size=batch_size)
    lp = np.array(tr.logits, dtype=np.float64)
    for b, i in enumerate(keep):
        n_p, n_c = len(prompt_tokens[i]), len(cont_tokens[i])
        cols = tr.pads[b] + n_p + np.arange(n_c)  # column t holds log p(token t | tokens < t)
        out[i] = -lp[b, cols]
    return out


def coherence(lm, generations, *, ppl_max: float = PPL_MAX, rep_max: float = REP_MAX) -> dict:
    """Judge-free coherence of generated texts (``Generation`` list) under the unsteered model.

    Returns per-text perplexity and repetition, their medians, and the fraction of texts that pass
    both thresholds ("coherent_rate").
    """
    gens = list(generations)
    if not gens:
        raise MlxInterpError("no generations to score for coherence")
    nll = continuation_nll(lm, [g.prompt_tokens for g in gens], [g.tokens for g in gens])
    ppl = [float(np.exp(x.mean())) if len(x) else float("nan") for x in nll]
    rep = [repetition_rate(g.tokens) for g in gens]
    ok = [bool(np.isfinite(p) and p <= ppl_max and r <= rep_max) for p, r in zip(ppl, rep)]
    return {"perplexity": ppl, "repetition": rep, "coherent": ok, "median_perplexity": float(np.nanmedian(ppl)),
            "median_repetition": float(np.median(rep)), "coherent_rate": float(np.mean(ok)),
            "thresholds": {"ppl_max": ppl_max, "rep_max": rep_max, "rep_ngram": 3}}
