"""Logit lens: decode every layer's residual stream with the model's own final norm and head.

Uses ``Parts.logits`` = the model's ``norm`` then its ``lm_head`` or tied (possibly quantized)
embedding, plus Gemma 2's final soft-capping; Gemma's embedding scale is already inside the
residual. So the last layer's lens equals the model's own logits exactly (tested).

Rows of a reading: ``resid_pre 0`` (the embeddings, labelled ``emb``, layer -1) then
``resid_post l`` for every layer. ``logit_lens`` takes a batch of prompts and any positions;
``LensResult.plot`` draws a layer x position heatmap (PNG) and ``LensResult.html`` a
self-contained page where hovering a cell shows its top-k tokens (``readouts.lens_view``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import mlx.core as mx
import numpy as np

from ..core.batching import DEFAULT_CHAT, Prompts
from ..core.capture import Capture
from ..core.parts import parts
from ..core.positions import DEFAULT_READ_POSITION
from ..core.trace import run
from ..errors import MlxInterpError



@dataclass
class LayerReading:
    layer: int  # -1 = embeddings (resid_pre 0)
    top: list[tuple[str, float]]  # (token, probability), best first
    targets: dict[str, tuple[int, float]] = field(default_factory=dict)  # target -> (rank, prob); rank 0 = top-1


@dataclass
class LensResult:
    """Readings for prompts x layers x positions: ``cells[p][r][j]`` is a ``LayerReading``."""

    prompts: list[str]
    tokens: list[list[str]]  # per prompt, the input token at each read position
    positions: list[list[int]]  # per prompt, the prompt positions read (0-based)
    layers: list[int]  # row labels: -1 (embeddings) then 0..L-1
    cells: list  # [prompt][row][position] -> LayerReading
    top_k: int = 5

    def readings(self, prompt: int = 0, position: int = -1) -> list[LayerReading]:
        """Every layer's reading at one read position (index into ``positions[prompt]``)."""
        return [row[position] for row in self.cells[prompt]]

    def rank_trajectory(self, target: str, prompt: int = 0, position: int = -1) -> list[int]:
        return [r.targets[target][0] for r in self.readings(prompt, position)]

    def table(self, k: int = 5, prompt: int = 0, position: int = -1) -> str:
        """One row per layer (embeddings first, final layer last) at one position."""
        rows = self.readings(prompt, position)
        tnames = list(rows[0].targets) if rows else []
        head = f"{'layer':>5}  " + "  ".join(f"top{i + 1:<14}" for i in range(k))
        if tnames:
            head += "  " + "  ".join(f"{t!r} rank/p" for t in tnames)
        lines = [head]
        for r in rows:
            name = "emb" if r.layer < 0 else str(r.layer)
            cells = [f"{t!r:>9.9} {p:4.2f}" for t, p in r.top[:k]]
            line = f"{name:>5}  " + "  ".join(f"{c:<16}" for c in cells)
            if tnames:
                line += "  " + "  ".join(f"{r.targets[t][0]:>6}/{r.targets[t][1]:.3f}" for t in tnames)
            lines.append(line)
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"prompts": self.prompts, "tokens": self.tokens, "positions": self.positions, "layers": self.layers,
                "cells": [[[{"top": [[t, p] for t, p in c.top], "targets": {k: list(v) for k, v in c.targets.items()}}
                            for c in row] for row in rows] for rows in self.cells]}

    def plot(self, path, prompt: int = 0):
        """Layer x position heatmap of the top-1 token (colour: its probability) as a PNG."""
        from .lens_view import plot_png

        return plot_png(self, path, prompt)

    def html(self, path):
        """A self-contained HTML page, one heatmap per prompt; hovering a cell shows its top-k tokens."""
        from .lens_view import write_html

        return write_html(self, path)


def target_token(lm, text: str) -> int:
    """First token of ``text`` as it would continue a prompt (no BOS)."""
    if not text:
        raise MlxInterpError("lens target is an empty string; give a token such as ' Paris'")
    ids = lm.tokenizer.encode(text, add_special_tokens=False)
    if not ids:
        raise MlxInterpError(f"lens target {text!r} encodes to no tokens")
    return ids[0]


def layer_logits(lm, states) -> mx.array:
    """Lens logits [..., V] in fp32 for residual vectors [..., D] (or a list of [D] vectors)."""
    h = mx.stack(list(states)) if isinstance(states, (list, tuple)) else states
    return parts(lm.model).logits(h).astype(mx.float32)


def _select(positions, n: int) -> list[int]:
    if positions == "all":
        return list(range(n))
    if positions == "last":
        return [n - 1]
    items = [positions] if isinstance(positions, (int, np.integer)) else list(positions)
    out = []
    for i in items:
        if not isinstance(i, (int, np.integer)) or not -n <= i < n:
            raise MlxInterpError(f"lens position {i!r} is outside a prompt of {n} tokens; valid: {-n}..{n - 1}, 'last' or 'all'")
        out.append(int(i) % n)
    return out


def logit_lens(
    lm,
    prompts: Prompts,
    *,
    positions=DEFAULT_READ_POSITION,
    top_k: int = 5,
    targets: Sequence[str] = (),
    include_embed: bool = True,
    chat: bool = DEFAULT_CHAT,
    interventions: Sequence = (),
) -> LensResult:
    """Lens readings for each prompt at ``positions`` ("last", "all", an int or a list) and every layer."""
    if top_k < 1:
        raise MlxInterpError(f"top_k={top_k} must be at least 1")
    caps = [Capture("resid_post", "all", "all")] + ([Capture("resid_pre", 0, "all")] if include_embed else [])
    tr = run(lm, prompts, capture=caps, chat=chat, interventions=interventions, logits="none")
    tids = {t: target_token(lm, t) for t in targets}
    layers = ([-1] if include_embed else []) + list(range(lm.n_layers))
    texts = [prompts] if isinstance(prompts, str) else [p if isinstance(p, str) else lm.tokenizer.decode(p) for p in prompts]
    all_cells, all_pos, all_tok = [], [], []
    for b, toks in enumerate(tr.tokens):
        pos = _select(positions, len(toks))
        rows = ([tr.per_prompt("resid_pre", 0)[b]] if include_embed else []) + \
               [tr.per_prompt("resid_post", l)[b] for l in range(lm.n_layers)]
        states = mx.stack([r[mx.array(pos)] for r in rows])  # [R, J, D]
        logits = layer_logits(lm, states)
        probs = mx.softmax(logits, axis=-1)
        k = min(top_k, logits.shape[-1])
        order = mx.argpartition(-logits, kth=k - 1, axis=-1)[..., :k]
        top_logit = mx.take_along_axis(logits, order, axis=-1)
        order = mx.take_along_axis(order, mx.argsort(-top_logit, axis=-1), axis=-1)
        top_p = mx.take_along_axis(probs, order, axis=-1)
        tgt = {t: (((logits > logits[..., i:i + 1]).sum(-1)), probs[..., i]) for t, i in tids.items()}
        mx.eval(order, top_p, *[x for pair in tgt.values() for x in pair])
        order_np, top_np = np.array(order), np.array(top_p)
        tgt_np = {t: (np.array(r), np.array(p)) for t, (r, p) in tgt.items()}
        cells = [[LayerReading(layers[r], [(lm.tokenizer.decode([int(t)]), float(pv)) for t, pv in zip(order_np[r, j], top_np[r, j])],
                               {t: (int(rk[r, j]), float(pp[r, j])) for t, (rk, pp) in tgt_np.items()})
                  for j in range(len(pos))] for r in range(len(rows))]
        all_cells.append(cells)
        all_pos.append(pos)
        all_tok.append([lm.tokenizer.decode([toks[i]]) for i in pos])
    return LensResult(texts, all_tok, all_pos, layers, all_cells, top_k)


def name_ranks(lm, prompt: str, names: Sequence[str], tuned=None) -> np.ndarray:
    """Per layer (``resid_post`` 0..L-1), the lens rank of a whole name continuing the plain-text ``prompt``: the
    *worst* rank over the name's tokens, each read at the position that predicts it with the name's earlier tokens
    fed (teacher forcing); the best such value over ``names`` (a label and its aliases).

    A first token alone is not evidence for a multi-token name: " G" ranks high for many words, " GBP" needs " G"
    then "BP". A name surfaces at a layer when this rank is small (e.g. < 30: every token in the top 30).
    ``tuned``: a ``TunedLens`` to read with instead of the logit lens.
    """
    if not names:
        raise MlxInterpError("name_ranks needs at least one name")
    pre = lm.tokenizer.encode(prompt)
    best = None
    for name in names:
        full = lm.tokenizer.encode(prompt + " " + name.strip())
        n = 0
        while n < min(len(pre), len(full)) and pre[n] == full[n]:
            n += 1
        toks = full[n:]
        if not toks or n == 0:
            raise MlxInterpError(f"name {name!r} adds no tokens after the prompt {prompt!r}")
        cols = list(range(n - 1, len(full) - 1))  # the state at position t predicts token t+1
        tr = run(lm, [full], capture=Capture("resid_post", "all", cols), logits="none")
        tgt = mx.array(toks)[:, None]
        ranks = []
        for l in range(lm.n_layers):
            h = tr["resid_post", l][0]
            h = h if h.ndim == 2 else h[None]
            lg = layer_logits(lm, h) if tuned is None else tuned.logits(lm, h, l)  # [n_name_tokens, V]
            ranks.append(int(mx.max((lg > mx.take_along_axis(lg, tgt, axis=-1)).sum(-1)).item()))
        best = np.array(ranks) if best is None else np.minimum(best, ranks)
    return best
