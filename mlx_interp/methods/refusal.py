"""Arditi et al.'s refusal direction as API: candidates, scores, selection, ablation and addition.

Layer convention is the paper's and the toolkit's: candidate ``layer=l`` is the residual stream
entering block l, the ``resid_pre l`` site, and ``addition`` adds there. So a selected ``layer``
compares directly with the paper's l* (Table 5). Block 0's input (the embedding) is not a
candidate, as in the paper.

Procedure (papers.md section 3):

1. ``candidates``: for every layer and post-instruction position i (the chat-template tokens after
   the instruction, ``post_instruction_positions``), r = mean(harmful) - mean(harmless), float64.
2. ``refusal_metric``: log-odds of the refusal-start tokens at the last position (per model, see
   ``metrics.refusal_start_tokens``).
3. ``select``: bypass score = mean metric on harmful val under directional ablation (exact:
   ``Ablate`` with sublayers, every layer, every position); induce score = mean metric on harmless
   val with r added at its layer (all positions); KL = mean KL(base || ablated) of the last-position
   distribution on harmless val. Keep l < int(0.8 L) (the reference's prune), induce > 0, KL < 0.1; pick the
   lowest bypass. Candidates at l >= int(0.8 L) are not scored at all (they cannot be selected). ``score`` computes the
   three scores, ``choose`` applies the filters, so other filter settings cost no new forward passes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

import numpy as np

from ..core.batching import format_prompt
from ..core.capture import Capture
from ..core.generate import generate
from ..core.interventions import Ablate, Add
from ..core.trace import run
from ..errors import MlxInterpError
from ..measures.distributions import kl, refusal_logodds
from ..measures.text import refusal_score
from ..readouts.directions import collect, diff_of_means_vec

BATCH = 16  # rows per forward pass in selection (three passes per candidate)


def post_instruction_positions(lm) -> list[int]:
    """Negative offsets of the chat-template tokens that follow the instruction (e.g. -5..-1)."""
    marker = "Write a poem about the sea."
    if not getattr(lm.tokenizer, "chat_template", None):
        raise MlxInterpError(f"{lm.name} has no chat template; refusal directions need an instruct model")
    text = format_prompt(lm, marker, chat=True)
    suffix = text[text.rindex(marker) + len(marker):]
    n = len(lm.tokenizer.encode(suffix, add_special_tokens=False))
    if n < 1:
        raise MlxInterpError(f"{lm.name}'s chat template adds nothing after the instruction; no post-instruction positions")
    return list(range(-n, 0))


def _logits(lm, prompts, interventions=(), batch_size: int = BATCH, replay=None, start: int = 0) -> np.ndarray:
    """Last-position logits of chat-formatted prompts as float32 numpy.

    ``replay``: a run of the same prompts capturing ``resid_pre`` at every layer and position; with
    ``start=k`` the pass runs only blocks k.. (``run(resume=)``), exactly as a full pass would.
    """
    import mlx.core as mx

    resume = (replay, start) if replay is not None else None
    lg = run(lm, list(prompts), interventions=interventions, chat=True, batch_size=batch_size, resume=resume).logits
    return np.array(lg.astype(mx.float32))


def _replay(lm, prompts, batch_size: int):
    return run(lm, list(prompts), chat=True, capture=Capture("resid_pre", "all", "all"), batch_size=batch_size)


def refusal_metric(lm, prompts: Sequence[str], refusal_ids: Sequence[int], interventions=(), batch_size: int = BATCH) -> np.ndarray:
    """Arditi et al.'s refusal metric per prompt (chat template applied)."""
    import mlx.core as mx

    if not prompts:
        raise MlxInterpError("prompt list is empty; the refusal metric needs prompts")
    return refusal_logodds(mx.array(_logits(lm, prompts, interventions, batch_size)), refusal_ids)


def refusal_start_tokens(lm, harmful: Sequence[str], phrases: Sequence[str], *, top: int = 2, max_tokens: int = 24,
                         generations: Sequence | None = None) -> list[int]:
    """The model's own refusal-start tokens: first tokens of its responses that are refusals, most common first.

    ``generations``: the prompts' greedy responses when already at hand (``Vetted.responses_of(v.positive)``), so they
    are not generated again; ``max_tokens`` then does not apply (vetting's responses have its own length)."""
    from collections import Counter

    if generations is not None and len(generations) != len(harmful):
        raise MlxInterpError(f"generations has {len(generations)} responses for {len(harmful)} prompts; give one per prompt")
    gens = list(generations) if generations is not None else generate(lm, list(harmful), max_tokens=max_tokens, chat=True)
    firsts = Counter(g.tokens[0] for g in gens if g.tokens and refusal_score(g.text, phrases))
    if not firsts:
        raise MlxInterpError(f"{lm.name} refused none of {len(gens)} harmful prompts; no refusal-start tokens to derive")
    return [t for t, _ in firsts.most_common(top)]


def candidates(lm, harmful: Sequence[str], harmless: Sequence[str], *, positions: Sequence[int] | None = None,
               batch_size: int = BATCH) -> dict[tuple[int, int], np.ndarray]:
    """{(layer, position): diff-of-means vector} at ``resid_pre`` of layers 1..L-1 and each position."""
    for name, s in (("harmful", harmful), ("harmless", harmless)):
        if len(s) < 2:
            raise MlxInterpError(f"{name} set has {len(s)} prompt(s); need at least 2 per class")
    # a list capture returns the selected positions in prompt order, so keep them sorted (-5..-1)
    positions = sorted(positions) if positions is not None else post_instruction_positions(lm)
    pos_acts, neg_acts = (collect(lm, p, site="resid_pre", layers=list(range(1, lm.n_layers)), positions=positions,
                                  chat=True, batch_size=batch_size) for p in (harmful, harmless))
    if len(positions) == 1:  # a one-position capture comes back [N, D]; make it [N, 1, D]
        pos_acts, neg_acts = ({k: a[:, None] for k, a in d.items()} for d in (pos_acts, neg_acts))
    out = {}
    for l in range(1, lm.n_layers):
        for j, p in enumerate(positions):
            out[(l, p)] = diff_of_means_vec(pos_acts[l][:, j], neg_acts[l][:, j])
    return out


def ablation(direction) -> tuple[Ablate, Ablate]:
    """Exact directional ablation, every position: the embeddings (``resid_pre`` 0), every block output and
    every attention and MLP write, so no state of the residual stream (the MLP's input included) carries it."""
    return (Ablate(direction, site="resid_pre", layers=0),
            Ablate(direction, site=["resid_post", "attn_out", "mlp_out"], layers="all"))


def addition(direction, layer: int, alpha: float = 1.0) -> Add:
    """Add ``alpha * r`` to ``resid_pre`` of block ``layer`` (the paper's convention), every position."""
    return Add(direction, site="resid_pre", layers=layer, alpha=alpha)


@dataclass
class Scored:
    layer: int
    position: int
    bypass: float | None
    induce: float | None
    kl: float | None
    norm: float
    eligible: bool
    why_not: str = ""


@dataclass
class Selection:
    layer: int
    position: int
    direction: np.ndarray
    scores: list[Scored] = field(default_factory=list)
    baseline: dict = field(default_factory=dict)  # mean metric on harmful / harmless val with no intervention

    def table(self) -> list[dict]:
        return [asdict(s) for s in self.scores]


def select(lm, cands: dict[tuple[int, int], np.ndarray], harmful_val: Sequence[str], harmless_val: Sequence[str],
           refusal_ids: Sequence[int], *, max_depth: float = 0.8, kl_max: float = 0.1, induce_min: float | str = 0.0,
           batch_size: int = BATCH, progress: Callable[[int, int, str], None] | None = None) -> Selection:
    """The paper's selection; raises if no candidate passes the filters (says which filter failed).

    ``induce_min``: the paper's 0 (addition makes P(refusal token) > 0.5 on harmless prompts), or
    ``"harmful_baseline"``: addition must raise the harmless metric above the *unsteered harmful*
    mean, a model-relative bar for small models whose refusals start with P(token) < 0.5.
    """
    _check_induce_min(induce_min)
    scored, baseline = score(lm, cands, harmful_val, harmless_val, refusal_ids, max_depth=max_depth,
                             batch_size=batch_size, progress=progress)
    return choose(scored, cands, baseline, induce_min, kl_max, lm.name)


def score(lm, cands: dict[tuple[int, int], np.ndarray], harmful_val: Sequence[str], harmless_val: Sequence[str],
          refusal_ids: Sequence[int], *, max_depth: float = 0.8, batch_size: int = BATCH,
          progress: Callable[[int, int, str], None] | None = None) -> tuple[list[Scored], dict]:
    """Bypass / induce / KL scores of every candidate below ``max_depth`` (the filters are applied by ``choose``)."""
    import mlx.core as mx

    if not cands:
        raise MlxInterpError("no candidate directions to select from")
    L = lm.n_layers
    replay = _replay(lm, harmless_val, batch_size)  # unsteered resid_pre everywhere: addition at l skips blocks < l
    base_harmless = np.array(replay.logits.astype(mx.float32))
    baseline = {"harmful": float(refusal_metric(lm, harmful_val, refusal_ids, (), batch_size).mean()),
                "harmless": float(refusal_logodds(mx.array(base_harmless), refusal_ids).mean())}
    scored: list[Scored] = []
    todo = []  # only these cost forward passes; progress counts them, not the rows kept for the table
    for (l, p), r in sorted(cands.items()):
        s = Scored(l, p, None, None, None, float(np.linalg.norm(r)), False)
        scored.append(s)
        if l >= int(max_depth * L):  # the reference prunes source_layer >= int(n_layer * 0.8)
            s.why_not = f"layer >= int({max_depth} * {L}) = {int(max_depth * L)}"
        elif s.norm < 1e-12:
            s.why_not = "zero vector"
        else:
            todo.append((s, r))
    for n, (s, r) in enumerate(todo, 1):
        l = s.layer
        if progress:
            progress(n, len(todo), f"layer {l} pos {s.position}")
        abl = _logits(lm, harmless_val, [ablation(r)], batch_size)
        s.kl = float(kl(mx.array(base_harmless), mx.array(abl)).mean())
        add = _logits(lm, harmless_val, [addition(r, l)], batch_size, replay, l)
        s.induce = float(refusal_logodds(mx.array(add), refusal_ids).mean())
        s.bypass = float(refusal_metric(lm, harmful_val, refusal_ids, [ablation(r)], batch_size).mean())
    return scored, baseline


def _check_induce_min(induce_min) -> None:
    if not (induce_min is None or isinstance(induce_min, (int, float)) or induce_min == "harmful_baseline"):
        raise MlxInterpError(f"induce_min={induce_min!r} is not valid; use a number, 'harmful_baseline' or None")


def choose(scored: list[Scored], cands: dict, baseline: dict, induce_min: float | str | None = 0.0,
           kl_max: float = 0.1, model: str = "model") -> Selection:
    """Apply the KL and induce filters to scored candidates and pick the lowest bypass score.

    ``induce_min=None`` drops the induce filter; ``kl_max=float("inf")`` drops the KL filter.
    """
    _check_induce_min(induce_min)
    bar = (-np.inf if induce_min is None else
           baseline["harmful"] if induce_min == "harmful_baseline" else float(induce_min))
    for s in scored:
        if s.induce is not None:
            s.eligible = bool(s.induce > bar and s.kl < kl_max)
            s.why_not = "" if s.eligible else (f"KL >= {kl_max}" if s.kl >= kl_max else f"induce <= {bar:.3g}")
    ok = [s for s in scored if s.eligible]
    if not ok:
        reasons = sorted({s.why_not for s in scored})
        top = max((s.induce for s in scored if s.induce is not None), default=None)
        raise MlxInterpError(f"no candidate passed the filters ({'; '.join(reasons)}; best induce score {top}); "
                             f"{model} may not refuse, or the val sets are too small")
    best = min(ok, key=lambda s: s.bypass)
    sel = Selection(best.layer, best.position, cands[(best.layer, best.position)], scored, dict(baseline))
    sel.baseline["induce_threshold"] = None if induce_min is None else float(bar)
    sel.baseline["kl_max"] = kl_max
    return sel
