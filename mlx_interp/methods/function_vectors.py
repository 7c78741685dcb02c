"""Function vectors (Todd et al., ICLR 2024): attention heads found by causal mediation, and two layer-level baselines.

The paper's procedure, step by step (``experiments/exp13_function_vectors.py`` runs it on the ICL tasks):

1. ``mean_stats``: every head's output (the ``head`` site: its slice of the ``o_proj`` input) at the last token,
   averaged over clean 10-shot prompts, and each head's mean contribution to the residual stream.
2. ``indirect_effects``: on prompts whose demonstration labels are shuffled, replace one head's last-token output
   by its mean and measure the gain in p(first answer token); the average over prompts is the head's AIE.
3. ``function_vector``: the sum over the top heads of their mean contributions to the residual stream
   (``head_to_resid``: through the layer's ``o_proj``; Gemma's norm after ``o_proj`` is linearised per prompt).
4. ``fv_intervention``: add a vector to the output of one decoder layer (``resid_post``) at the last token only.

Layer-level baselines on the same footing: ``MeanStats.layer_means`` (the study's exp8: the mean last-token
residual of clean ICL prompts) and ``icl_minus_zero_shot`` (exp11: ICL mean minus zero-shot mean). ``score`` is the one
metric: top-1 accuracy and probability of the answer's first token, read as the model tokenizes the answer in
context (``answer_ids``).

The mediation sweep is layers x heads x prompts patched forwards. ``indirect_effects`` never re-runs a prompt per
head: the prompt's prefix (every token but the last) is computed once into a KV cache, and the patched passes
process only the last token, one (layer, head) per batch row, each group of layers started at its lowest layer
from the unpatched pass's residual (``run(resume=...)``). ``indirect_effects_naive`` is the one-forward-per-
(prompt, layer, head) loop it must agree with (tests) and beat (``bench/bench_mediation.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Sequence

import mlx.core as mx
import numpy as np

from ..core.batching import DEFAULT_BATCH_SIZE, encode
from ..core.capture import Capture
from ..core.interventions import Add, Edit, Patch, as_vector, check_width
from ..core.parts import head_shape, parts, writers
from ..core.trace import run
from ..errors import MlxInterpError
from ..readouts.directions import collect

Head = tuple[int, int]  # (layer, head)


# ---- the metric ----

def answer_ids(lm, prompts: Sequence[str], answers: Sequence[str]) -> list[int]:
    """The first token the model must emit for each answer: the token after the prompt in ``prompt + " " + answer``,
    tokenized together (so a tokenizer that merges the space or the first characters differently in context is
    read as it really emits them)."""
    if len(prompts) != len(answers):
        raise MlxInterpError(f"{len(prompts)} prompts but {len(answers)} answers")
    out = []
    for p, y in zip(prompts, answers):
        if not str(y).strip():
            raise MlxInterpError(f"empty answer for prompt {p[-40:]!r}")
        a, b = encode(lm, [p, p + " " + str(y).strip()])
        if b[:len(a)] != a or len(b) == len(a):
            raise MlxInterpError(f"{lm.name} tokenizes prompt {p[-30:]!r} differently when the answer {y!r} follows; "
                                 "cannot say which token is the answer's first")
        out.append(b[len(a)])
    return out


def score(lm, prompts: Sequence[str], ids: Sequence[int], interventions: Sequence = (),
          batch_size: int | None = DEFAULT_BATCH_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """(top-1 correct [n] bool, p(answer's first token) [n]) at the last position."""
    tr = run(lm, list(prompts), interventions=interventions, batch_size=batch_size)
    logits = tr.logits.astype(mx.float32)
    ids_a = mx.array(np.asarray(ids, dtype=np.int32))
    top = np.array(mx.argmax(logits, axis=-1))
    lp = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
    p = np.exp(np.array(mx.take_along_axis(lp, ids_a[:, None], axis=-1)[:, 0]))
    return top == np.asarray(ids), p


def score_with_vectors(lm, prompts: Sequence[str], ids: Sequence[int], adds: Sequence[tuple[np.ndarray, int]]
                       ) -> tuple[np.ndarray, np.ndarray]:
    """(top-1 correct [1 + R, n], p(answer) [1 + R, n]): row 0 with no vector, row r with ``adds[r - 1]`` =
    (vector, layer) added to that layer's output at the last token. The same numbers as ``score`` with one
    ``fv_intervention`` per vector (tested), at the cost of one pass per prompt: a last-token edit cannot change
    the prefix, so each prompt's prefix is cached once and its last token runs once per vector, one per batch row."""
    if len(prompts) != len(ids):
        raise MlxInterpError(f"{len(prompts)} prompts but {len(ids)} answer tokens")
    ivs = [replace(fv_intervention(lm, v, layer), rows=[r]) for r, (v, layer) in enumerate(adds, start=1)]
    R = 1 + len(ivs)
    ok, prob = np.zeros((R, len(prompts)), dtype=bool), np.zeros((R, len(prompts)))
    for i, (t, a) in enumerate(zip(encode(lm, list(prompts)), ids)):
        if len(t) < 2:
            raise MlxInterpError(f"prompt {i} has one token; a cached prefix needs at least two")
        pre = run(lm, [t[:-1]], logits="none", return_cache=True, batch_size=None)
        tr = run(lm, [t[-1:]] * R, cache=pre.cache, interventions=ivs, batch_size=None)
        lg = tr.logits.astype(mx.float32)
        ok[:, i] = np.array(mx.argmax(lg, axis=-1)) == a
        prob[:, i] = _prob(lg, a)
    return ok, prob


# ---- step 1: means over clean prompts ----

@dataclass(frozen=True)
class MeanStats:
    """Last-token means over clean prompts, all from one forward pass."""

    head_means: np.ndarray  # [L, H, d] each head's output (its o_proj-input slice): what the AIE patches in
    head_resid: np.ndarray  # [L, H, D] each head's contribution to the residual stream (head_to_resid, per prompt)
    layer_means: np.ndarray  # [L, D] resid_post: exp8's vector
    resid_norm: np.ndarray  # [L] mean norm of resid_post: the scale a vector added there meets


def mean_stats(lm, prompts: Sequence[str], batch_size: int | None = DEFAULT_BATCH_SIZE) -> MeanStats:
    """One pass over ``prompts`` capturing every head and every layer's output at the last token.

    ``head_resid`` averages each prompt's mapped head outputs. Where ``o_proj`` writes straight into the residual
    stream this equals mapping the mean output (the paper's FV); for Gemma, whose norm after ``o_proj`` depends on
    each prompt's total, it is the head's actual mean contribution (mapping the mean instead would linearise the
    norm at the RMS of an average, which is smaller than any prompt's when heads vary across prompts)."""
    prompts = list(prompts)
    if not prompts:
        raise MlxInterpError("mean statistics need at least one clean prompt (no items survived the filter?)")
    tr = run(lm, prompts, capture=[Capture("head", "all", "last"), Capture("resid_post", "all", "last")], logits="none",
             batch_size=batch_size)
    L = lm.n_layers
    heads = [np.array(tr["head", l].astype(mx.float32), dtype=np.float64) for l in range(L)]
    resid = [np.array(tr["resid_post", l].astype(mx.float32), dtype=np.float64) for l in range(L)]
    return MeanStats(head_means=np.stack([a.mean(axis=0) for a in heads]),
                     head_resid=np.stack([head_to_resid(lm, l, heads[l]).mean(axis=0) for l in range(L)]),
                     layer_means=np.stack([r.mean(axis=0) for r in resid]),
                     resid_norm=np.array([np.linalg.norm(r, axis=-1).mean() for r in resid]))


def head_means(lm, prompts: Sequence[str], batch_size: int | None = DEFAULT_BATCH_SIZE) -> np.ndarray:
    """[L, H, d] mean last-token output of every head (its slice of the ``o_proj`` input) over ``prompts``."""
    acts = collect(lm, prompts, site="head", layers="all", positions="last", batch_size=batch_size)
    return np.stack([acts[l].mean(axis=0) for l in range(lm.n_layers)])


def _check_means(lm, means: np.ndarray) -> None:
    L, (H, d) = lm.n_layers, head_shape(parts(lm.model).layers[0].self_attn)
    if means.shape != (L, H, d):
        raise MlxInterpError(f"head means of shape {means.shape} do not fit {lm.name}: expected (layers, heads, width) "
                             f"= {(L, H, d)}")


# ---- step 2: causal mediation ----

def _patch_rows(means: np.ndarray, rows: list[Head]) -> Edit:
    """One Edit that, in batch row r, replaces head rows[r][1] of layer rows[r][0] by its mean (last token)."""
    L, H = means.shape[:2]
    masks = {}
    for r, (l, h) in enumerate(rows):
        masks.setdefault(l, np.zeros((len(rows), 1, H, 1), dtype=bool))[r, 0, h, 0] = True
    mean_mx = {l: mx.array(means[l].astype(np.float32)) for l in masks}
    masks_mx = {l: mx.array(m) for l, m in masks.items()}

    def fn(h, layer):
        return mx.where(masks_mx[layer], mean_mx[layer].astype(h.dtype)[None, None], h)

    return Edit(fn=fn, site="head", layers=sorted(masks), positions="last")


def _layer_groups(layers: list[int], groups: int) -> list[list[int]]:
    groups = max(1, min(groups, len(layers)))
    return [list(g) for g in np.array_split(np.array(layers), groups) if len(g)]


def indirect_effects(lm, prompts: Sequence[str], ids: Sequence[int], means: np.ndarray, layers: Sequence[int] | None = None,
                     groups: int = 4, progress=None) -> np.ndarray:
    """[n_prompts, L, H] gain in p(first answer token) when one head's last-token output is set to its mean
    (NaN for layers not swept). One cached prefix per prompt; all (layer, head) patches of a layer group in one
    batched single-token pass started at the group's lowest layer (``groups`` passes per prompt)."""
    _check_means(lm, means)
    prompts, ids = list(prompts), list(ids)
    if not prompts:
        raise MlxInterpError("indirect effects need at least one prompt (no items survived the filter?)")
    if len(ids) != len(prompts):
        raise MlxInterpError(f"{len(prompts)} prompts but {len(ids)} answer tokens")
    L, H = means.shape[:2]
    layers = list(range(L)) if layers is None else sorted(set(int(l) for l in layers))
    if any(not 0 <= l < L for l in layers):
        raise MlxInterpError(f"layers {layers} out of range for a {L}-layer model")
    out = np.full((len(prompts), L, H), np.nan)
    for i, (t, a) in enumerate(zip(encode(lm, prompts), ids)):
        pre = run(lm, [t[:-1]], logits="none", return_cache=True, batch_size=None)
        base = run(lm, [t[-1:]], cache=pre.cache, capture=Capture("resid_pre", "all", "all"), batch_size=None)
        p0 = _prob(base.logits, a)[0]
        for g in _layer_groups(layers, groups):
            rows = [(l, h) for l in g for h in range(H)]
            tr = run(lm, [t[-1:]] * len(rows), cache=pre.cache, resume=(base, g[0]), interventions=[_patch_rows(means, rows)],
                     batch_size=None)
            p = _prob(tr.logits, a)
            for (l, h), pr in zip(rows, p):
                out[i, l, h] = pr - p0
        if progress:
            progress(i + 1, len(prompts))
    return out


def indirect_effects_naive(lm, prompts: Sequence[str], ids: Sequence[int], means: np.ndarray,
                           layers: Sequence[int] | None = None, heads: Sequence[int] | None = None) -> np.ndarray:
    """The same quantity, one full forward per (prompt, layer, head) with a ``Patch``: the reference loop."""
    _check_means(lm, means)
    L, H = means.shape[:2]
    out = np.full((len(prompts), L, H), np.nan)
    for i, (p, a) in enumerate(zip(prompts, ids)):
        p0 = _prob(run(lm, [p]).logits, a)[0]
        for l in (range(L) if layers is None else layers):
            for h in (range(H) if heads is None else heads):
                tr = run(lm, [p], interventions=[Patch(means[l, h], site="head", layers=l, heads=[h], positions="last")])
                out[i, l, h] = _prob(tr.logits, a)[0] - p0
    return out


def _prob(logits: mx.array, token: int) -> np.ndarray:
    lg = logits.astype(mx.float32)
    return np.exp(np.array(lg[:, token] - mx.logsumexp(lg, axis=-1)))


def top_heads(aie: np.ndarray, n: int) -> list[tuple[int, int, float]]:
    """The ``n`` heads with the largest average indirect effect ([L, H]), as (layer, head, AIE)."""
    if not 1 <= n <= aie.size:
        raise MlxInterpError(f"top {n} heads requested; the model has {aie.size} heads")
    flat = np.argsort(-np.nan_to_num(aie, nan=-np.inf), axis=None)[:n]
    return [(int(i // aie.shape[1]), int(i % aie.shape[1]), float(aie.flat[i])) for i in flat]


def random_heads(lm, n: int, seed: int = 0) -> list[tuple[int, int]]:
    """``n`` distinct (layer, head) pairs drawn uniformly: the control set of heads."""
    H = head_shape(parts(lm.model).layers[0].self_attn)[0]
    idx = np.random.default_rng(seed).choice(lm.n_layers * H, size=n, replace=False)
    return [(int(i // H), int(i % H)) for i in idx]


# ---- step 3: from heads to the residual stream ----

def head_to_resid(lm, layer: int, vecs: np.ndarray) -> np.ndarray:
    """[H, D] (or [n, H, D]): what each head's output ``vecs[h]`` ([H, d], or [n, H, d] for n prompts) adds to the
    residual stream.

    Head h's part of ``o_proj`` applied to its slice (the others zero); a bias, if ``o_proj`` has one, belongs to
    no head and is left out. Where a norm sits between ``o_proj`` and the residual stream (Gemma's
    ``post_attention_layernorm``), it is linearised at each prompt's own total output: each head's vector is
    scaled, channel by channel, by the norm's gain over the RMS of ``o_proj`` of all that prompt's heads together.
    The mapped heads then sum exactly to what the layer's attention adds (``attn_out``) for that prompt."""
    p = parts(lm.model)
    if not 0 <= layer < lm.n_layers:
        raise MlxInterpError(f"layer {layer} out of range; valid: 0..{lm.n_layers - 1}")
    attn = p.layers[layer].self_attn
    H, d = head_shape(attn)
    vecs = np.asarray(vecs, dtype=np.float64)
    one = vecs.ndim == 2
    vecs = vecs[None] if one else vecs
    if vecs.ndim != 3 or vecs.shape[1:] != (H, d) or not np.all(np.isfinite(vecs)):
        raise MlxInterpError(f"head outputs of shape {vecs.shape[1:] if vecs.ndim == 3 else vecs.shape} do not fit layer "
                             f"{layer} of {lm.name}: expected finite {(H, d)} per prompt")
    n = len(vecs)
    Z = np.zeros((n, H + 2, H * d), dtype=np.float32)
    for h in range(H):
        Z[:, h, h * d:(h + 1) * d] = vecs[:, h]
    Z[:, H] = vecs.reshape(n, -1)  # all heads together (for the norm's linearisation); row H + 1 stays zero (the bias)
    Y = np.array(attn.o_proj(mx.array(Z)).astype(mx.float32), dtype=np.float64)
    per_head, total = Y[:, :H] - Y[:, H + 1:], Y[:, H]
    writer = writers(p.layers[layer])[0]
    if writer is not attn:
        eps = float(getattr(writer, "eps", 1e-6))
        gain = np.array(writer(mx.ones((lm.width,))).astype(mx.float32), dtype=np.float64) * np.sqrt(1 + eps)
        per_head = per_head * (gain / np.sqrt(np.mean(total ** 2, axis=-1, keepdims=True) + eps))[:, None]
    return per_head[0] if one else per_head


def function_vector(lm, head_resid: np.ndarray, heads: Sequence[Head]) -> np.ndarray:
    """[D] sum over ``heads`` of the head's mean contribution to the residual stream (``MeanStats.head_resid``)."""
    L, (H, _) = lm.n_layers, head_shape(parts(lm.model).layers[0].self_attn)
    if head_resid.shape != (L, H, lm.width):
        raise MlxInterpError(f"head contributions of shape {head_resid.shape} do not fit {lm.name}: expected "
                             f"(layers, heads, width) = {(L, H, lm.width)}")
    heads = [(int(h[0]), int(h[1])) for h in heads]
    if not heads:
        raise MlxInterpError("a function vector needs at least one head")
    for l, h in heads:
        if not (0 <= l < L and 0 <= h < H):
            raise MlxInterpError(f"head (layer {l}, head {h}) is out of range: layers 0..{L - 1}, heads 0..{H - 1}")
    return np.sum([head_resid[l, h] for l, h in heads], axis=0)


# ---- step 4: the intervention, and the layer-level baselines ----

def fv_intervention(lm, vector: np.ndarray, layer: int, positions="last") -> Add:
    """Add ``vector`` to the output of decoder layer ``layer`` at the last token only (the paper's edit;
    ``positions="generated"`` adds it at every generated token too, as the reference's natural-text evaluation)."""
    a = as_vector(vector, "function vector")
    check_width(a, lm.width, lm.name, "function vector")
    return Add(a, site="resid_post", layers=layer, positions=positions)


def layer_means(lm, prompts: Sequence[str], batch_size: int | None = DEFAULT_BATCH_SIZE) -> np.ndarray:
    """[L, D] mean last-token ``resid_post`` of every layer (exp8's vector: the mean layer activation)."""
    acts = collect(lm, prompts, site="resid_post", layers="all", positions="last", batch_size=batch_size)
    return np.stack([acts[l].mean(axis=0) for l in range(lm.n_layers)])


def icl_minus_zero_shot(lm, icl_prompts: Sequence[str], zero_shot_prompts: Sequence[str],
                        batch_size: int | None = DEFAULT_BATCH_SIZE) -> np.ndarray:
    """[L, D] mean last-token ``resid_post`` of ICL prompts minus that of zero-shot prompts (exp11's vector)."""
    return layer_means(lm, icl_prompts, batch_size) - layer_means(lm, zero_shot_prompts, batch_size)
