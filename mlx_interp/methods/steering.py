"""How hard to steer: residual norms, norm-relative multipliers, and a coherence-bounded search.

A multiplier means little across models: a vector of norm 5 is a shove in SmolLM2's residual
stream and a nudge in Gemma's (whose residual norms run in the hundreds). ``relative=True`` makes
multiplier m mean "add a vector whose norm is m times the typical residual norm at that layer",
which transfers across layers and models.

``search_multiplier`` finds the multiplier that maximises a trait score while generations stay
coherent (``metrics.coherence``): it doubles from ``start`` while coherent, then bisects between
the largest coherent and the smallest incoherent multiplier, for exactly ``steps`` evaluations
(one generation batch plus one scoring pass each), and returns every step it took.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

import numpy as np

from ..core.batching import DEFAULT_BATCH_SIZE, DEFAULT_CHAT
from ..core.capture import Capture
from ..core.generate import Generation, generate_conditions
from ..core.interventions import Add, as_vector, check_width
from ..core.sites import resolve_layers
from ..core.trace import run
from ..errors import MlxInterpError
from ..measures.coherence import PPL_MAX, REP_MAX, coherence_by_condition
from ..readouts.directions import random_direction


def residual_norms(lm, prompts: Sequence[str], layers="all", *, site: str = "resid_post", chat: bool = DEFAULT_CHAT,
                   batch_size: int | None = DEFAULT_BATCH_SIZE) -> dict[int, float]:
    """Mean L2 norm of the residual stream at ``site`` over prompt tokens, skipping each prompt's first token.

    The first token is skipped because it is an attention sink in most models, with a norm
    10-100x the others; including it would make "typical" mean "the sink's".
    """
    prompts = list(prompts)
    if not prompts:
        raise MlxInterpError("prompt list is empty; residual norms need prompts")
    tr = run(lm, prompts, capture=Capture(site, layers, "all"), logits="none", chat=chat, batch_size=batch_size)
    count = sum(len(t) - 1 for t in tr.tokens)
    out = {}
    for k in tr[site]:
        total = 0.0
        for a in tr.per_prompt(site, k):
            total += float(np.linalg.norm(np.array(a[1:], dtype=np.float64), axis=-1).sum())
        out[k] = total / max(count, 1)
    return out


@dataclass
class Step:
    multiplier: float
    alpha: float  # the absolute coefficient actually applied to the vector
    score: float
    coherent_rate: float
    median_perplexity: float
    median_repetition: float
    coherent: bool
    examples: list[str] = field(default_factory=list)


@dataclass
class Search:
    layers: list[int]
    relative: bool
    unit_alpha: float  # alpha per unit multiplier
    steps: list[Step]
    best: Step | None  # highest-scoring coherent step (None: even the first multiplier was incoherent)
    baseline: Step | None = None  # multiplier 0
    control: Step | None = None  # a random direction of the vector's norm at the best step's multiplier

    def as_dict(self) -> dict:
        return {"layers": self.layers, "relative": self.relative, "unit_alpha": self.unit_alpha,
                "steps": [asdict(s) for s in self.steps], "best": asdict(self.best) if self.best else None,
                "baseline": asdict(self.baseline) if self.baseline else None,
                "control": asdict(self.control) if self.control else None}


def search_multiplier(
    lm, vector, layers, prompts: Sequence[str], score: Callable[[list[Generation]], float], *,
    site: str = "resid_post", steps: int = 6, start: float = 0.25, relative: bool = True, sign: float = 1.0,
    min_coherent: float = 0.75, max_tokens: int = 32, chat: bool = DEFAULT_CHAT, positions="all",
    ppl_max: float = PPL_MAX, rep_max: float = REP_MAX, with_baseline: bool = True, control: bool = True,
    judge=None,
) -> Search:
    """Adaptive search for the strongest coherent multiplier (see module docstring).

    ``score(generations) -> float``: the trait, higher is more (e.g. refusal rate).
    ``relative``: multipliers in units of the mean residual norm at ``layers`` (vector normalised);
    otherwise the multiplier is the raw coefficient on ``vector``. ``sign=-1`` searches subtraction.
    A step is coherent when at least ``min_coherent`` of its generations pass the coherence thresholds.
    ``control``: also evaluate a random direction of the same norm at the best multiplier (``Search.control``),
    the comparison every steering result needs. ``judge``: the model whose perplexity judges coherence (default
    ``lm`` unsteered; exp15 judges every precision with the reference precision, so all share one judge).
    """
    if steps < 1:
        raise MlxInterpError(f"steps={steps} must be at least 1")
    if start <= 0:
        raise MlxInterpError(f"start={start} must be > 0 (the search doubles it)")
    prompts = list(prompts)
    if not prompts:
        raise MlxInterpError("prompt list is empty; the search needs prompts to generate from")
    v = as_vector(vector)
    check_width(v, lm.width, lm.name)
    norm_v = float(np.linalg.norm(v))
    if norm_v < 1e-12:
        raise MlxInterpError("steering vector has zero norm; nothing to steer with")
    ls = resolve_layers(layers, lm.n_layers)
    unit = 1.0
    if relative:
        norms = residual_norms(lm, prompts, ls, site=site, chat=chat)
        unit = float(np.mean([norms[k] for k in ls])) / norm_v

    def evaluate(*ms: float, vec=v) -> list[Step]:
        """Each multiplier's generations on its own rows of one batched call, judged in one coherence pass."""
        conds = {str(i): (prompts, [Add(vec, site=site, layers=ls, alpha=sign * m * unit, positions=positions)] if m else [])
                 for i, m in enumerate(ms)}
        gens = generate_conditions(lm, conds, max_tokens=max_tokens, chat=chat)
        cs = coherence_by_condition(judge or lm, gens, ppl_max=ppl_max, rep_max=rep_max)
        return [Step(m, sign * m * unit, float(score(gens[str(i)])), cs[str(i)]["coherent_rate"],
                     cs[str(i)]["median_perplexity"], cs[str(i)]["median_repetition"],
                     cs[str(i)]["coherent_rate"] >= min_coherent, [g.text for g in gens[str(i)][:3]])
                for i, m in enumerate(ms)]

    # the unsteered baseline and the first step do not depend on each other: one call
    first = evaluate(0.0, start) if with_baseline else [None] + evaluate(start)
    base = first[0]
    done: list[Step] = []
    lo, hi = None, None  # largest coherent, smallest incoherent multiplier
    m = start
    for i in range(steps):
        s = first[1] if i == 0 else evaluate(m)[0]
        done.append(s)
        if s.coherent:
            lo = m
        else:
            hi = m
        m = m * 2 if hi is None else ((lo if lo is not None else 0.0) + hi) / 2
    ok = [s for s in done if s.coherent]
    best = max(ok, key=lambda s: (s.score, -s.multiplier)) if ok else None
    ctrl = evaluate(best.multiplier, vec=random_direction(v.shape[-1], norm_v, seed=ls[0]))[0] if control and best else None
    return Search(ls, relative, unit, done, best, base, ctrl)
