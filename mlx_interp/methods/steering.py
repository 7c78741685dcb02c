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


def alpha_per_multiplier(vector, layers: Sequence[int], norms: dict[int, float]) -> float:
    """The coefficient on ``vector`` that one unit of a norm-relative multiplier means: the mean residual norm at
    ``layers`` (``residual_norms``) over the vector's norm. The CLI and the search scale by this one rule."""
    n = float(np.linalg.norm(as_vector(vector)))
    if n < 1e-12:
        raise MlxInterpError("steering vector has zero norm; nothing to steer with")
    return float(np.mean([norms[k] for k in layers])) / n


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
    judge=None, lookahead: int = 1,
) -> Search:
    """Adaptive search for the strongest coherent multiplier (see module docstring).

    ``score(generations) -> float``: the trait, higher is more (e.g. refusal rate).
    ``relative``: multipliers in units of the mean residual norm at ``layers`` (vector normalised);
    otherwise the multiplier is the raw coefficient on ``vector``. ``sign=-1`` searches subtraction.
    A step is coherent when at least ``min_coherent`` of its generations pass the coherence thresholds.
    ``control``: also evaluate a random direction of the same norm at the best multiplier (``Search.control``),
    the comparison every steering result needs. ``judge``: the model whose perplexity judges coherence (default
    ``lm`` unsteered; exp15 judges every precision with the reference precision, so all share one judge).
    ``lookahead``: levels of the search tree generated per call (``search_multipliers``).
    """
    return search_multipliers(lm, [(vector, layers)], prompts, score, site=site, steps=steps, start=start,
                              relative=relative, sign=sign, min_coherent=min_coherent, max_tokens=max_tokens, chat=chat,
                              positions=positions, ppl_max=ppl_max, rep_max=rep_max, with_baseline=with_baseline,
                              control=control, judge=judge, lookahead=lookahead)[0]


def next_multiplier(m: float, coherent: bool, lo: float | None, hi: float | None) -> tuple[float, float | None, float | None]:
    """One step of the search after evaluating ``m``: (next multiplier, largest coherent, smallest incoherent).
    Doubling while nothing was incoherent, then bisecting between the two bounds (0 below the first)."""
    lo, hi = (m, hi) if coherent else (lo, m)
    return (m * 2 if hi is None else ((lo if lo is not None else 0.0) + hi) / 2), lo, hi


def multiplier_tree(m: float, lo: float | None, hi: float | None, levels: int) -> list[float]:
    """Every multiplier the search can visit in its next ``levels`` evaluations from this state, breadth-first."""
    out, frontier = [], [(m, lo, hi)]
    for _ in range(levels):
        nxt = []
        for x, a, b in frontier:
            out.append(x)
            nxt += [next_multiplier(x, ok, a, b) for ok in (True, False)]
        frontier = nxt
    return list(dict.fromkeys(out))


def search_multipliers(
    lm, targets: Sequence[tuple], prompts: Sequence[str], score: Callable[[list[Generation]], float], *,
    site: str = "resid_post", steps: int = 6, start: float = 0.25, relative: bool = True, sign: float = 1.0,
    min_coherent: float = 0.75, max_tokens: int = 32, chat: bool = DEFAULT_CHAT, positions="all",
    ppl_max: float = PPL_MAX, rep_max: float = REP_MAX, with_baseline: bool = True, control: bool = True,
    judge=None, lookahead: int = 1,
) -> list[Search]:
    """``search_multiplier`` for several ``(vector, layers)`` targets on the same prompts, run in lockstep: each
    round generates every target's next multipliers in one batched call and judges them in one coherence pass.
    A decode step on a CPU costs about the same for 6 rows as for 48 (reading the weights dominates), so a
    choice among k candidate layers costs ``steps`` calls instead of k x ``steps``; each target takes exactly the
    steps it would take alone. ``lookahead`` > 1 also generates the multipliers the next ``lookahead`` - 1 steps
    could visit (2**lookahead - 1 per target and round, most of them never used): fewer calls, more rows and
    more judging. The unsteered baseline is generated once and shared (it does not depend on the target)."""
    if steps < 1:
        raise MlxInterpError(f"steps={steps} must be at least 1")
    if start <= 0:
        raise MlxInterpError(f"start={start} must be > 0 (the search doubles it)")
    if lookahead < 1:
        raise MlxInterpError(f"lookahead={lookahead} must be at least 1 (levels of the search tree per call)")
    prompts = list(prompts)
    if not prompts:
        raise MlxInterpError("prompt list is empty; the search needs prompts to generate from")
    if not targets:
        raise MlxInterpError("no (vector, layers) targets to search")
    vecs, lss = [], []
    for i, target in enumerate(targets):
        if not (isinstance(target, (tuple, list)) and len(target) == 2):
            raise MlxInterpError(f"targets[{i}] is {type(target).__name__}; each target is a (vector, layers) pair")
        vector, layers = target
        v = as_vector(vector)
        check_width(v, lm.width, lm.name)
        if float(np.linalg.norm(v)) < 1e-12:
            raise MlxInterpError("steering vector has zero norm; nothing to steer with")
        vecs.append(v)
        lss.append(resolve_layers(layers, lm.n_layers))
    norms = residual_norms(lm, prompts, sorted({k for ls in lss for k in ls}), site=site, chat=chat) if relative else {}
    units = [alpha_per_multiplier(v, ls, norms) if relative else 1.0 for v, ls in zip(vecs, lss)]

    def evaluate(wanted: list[tuple[int, float, np.ndarray]]) -> list[Step]:
        """Each (target, multiplier, vector)'s generations on its own rows of one batched call, judged in one pass."""
        conds = {str(i): (prompts, [Add(vec, site=site, layers=lss[t], alpha=sign * m * units[t], positions=positions)]
                          if m else []) for i, (t, m, vec) in enumerate(wanted)}
        gens = generate_conditions(lm, conds, max_tokens=max_tokens, chat=chat)
        cs = coherence_by_condition(judge or lm, gens, ppl_max=ppl_max, rep_max=rep_max)
        return [Step(m, sign * m * units[t], float(score(gens[str(i)])), cs[str(i)]["coherent_rate"],
                     cs[str(i)]["median_perplexity"], cs[str(i)]["median_repetition"],
                     cs[str(i)]["coherent_rate"] >= min_coherent, [g.text for g in gens[str(i)][:3]])
                for i, (t, m, _) in enumerate(wanted)]

    n = len(targets)
    state = [(start, None, None)] * n  # (next multiplier, largest coherent, smallest incoherent)
    done: list[list[Step]] = [[] for _ in range(n)]
    base = None
    while len(done[0]) < steps:
        levels = min(lookahead, steps - len(done[0]))
        wanted = [(t, m, vecs[t]) for t in range(n) for m in multiplier_tree(*state[t], levels)]
        first_round = base is None and with_baseline
        got = evaluate(([(0, 0.0, vecs[0])] if first_round else []) + wanted)  # the baseline joins the first call
        if first_round:
            base, got = got[0], got[1:]
        by = {(t, m): s for (t, m, _), s in zip(wanted, got)}
        for t in range(n):
            for _ in range(levels):
                m, lo, hi = state[t]
                s = by[(t, m)]
                done[t].append(s)
                state[t] = next_multiplier(m, s.coherent, lo, hi)
    bests = []
    for steps_t in done:
        ok = [s for s in steps_t if s.coherent]
        bests.append(max(ok, key=lambda s: (s.score, -s.multiplier)) if ok else None)
    ctrl: list[Step | None] = [None] * n
    need = [t for t in range(n) if control and bests[t] is not None]
    if need:
        rnd = [(t, bests[t].multiplier, random_direction(vecs[t].shape[-1], float(np.linalg.norm(vecs[t])), seed=lss[t][0]))
               for t in need]
        for t, s in zip(need, evaluate(rnd)):
            ctrl[t] = s
    return [Search(lss[t], relative, units[t], done[t], bests[t], base, ctrl[t]) for t in range(n)]
