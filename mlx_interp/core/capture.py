"""Capture activations at named sites during a forward pass.

``Capture(site="resid_post", layers="all", positions="all", heads=None)`` says what to keep;
``site`` is a kind or a list of kinds (``core.sites``), ``heads`` keeps only some heads of a
per-head site. Reductions over positions:

* ``"all"``: the whole padded stream ``[B, T, ...]`` (``Trace.per_prompt`` drops the padding)
* one fixed position per prompt (``"last"``, an int): ``[B, ...]``
* several fixed positions (a list, or a slice of equal length in every prompt): ``[B, k, ...]``
* ``Span`` / ``"prompt"`` / ``"generated"``: the mean over the selected positions ``[B, ...]``,
  accumulated across prefill and decode steps

Per-head sites keep their head axis (``[B, H, d]`` for one position). Nothing is captured that
was not asked for (MLX is lazy: unneeded arrays would keep whole graphs alive). ``bind`` returns
a new bound object with its own store, so one ``Capture`` can serve many runs and models.
"""

from __future__ import annotations

from dataclasses import dataclass

import mlx.core as mx
import numpy as np

from ..errors import MlxInterpError
from .positions import DEFAULT_POSITIONS, Positions, Span, count
from .sites import KINDS, Heads, Layers, SiteArg, resolve_heads, sites


@dataclass(frozen=True)
class Capture:
    """What to record: sites (``site`` kinds x ``layers``), at which ``positions``, which ``heads``."""

    site: SiteArg = "resid_post"
    layers: Layers = "all"
    positions: Positions = DEFAULT_POSITIONS
    heads: Heads = None

    def bind(self, lm) -> "BoundCapture":
        s = sites(lm, self.site, self.layers)
        return BoundCapture(frozenset(s), self.positions, resolve_heads(lm, s, self.heads))


class BoundCapture:
    """A capture checked against one model, with the records of one pass."""

    def __init__(self, site_set: frozenset, positions: Positions, heads: list[int] | None):
        self.sites, self.positions, self.heads = site_set, positions, heads
        self._store: dict = {}
        p = positions
        self.mode = "all" if p == "all" else "mean" if isinstance(p, Span) or p in ("prompt", "generated") else "gather"

    def fresh(self) -> "BoundCapture":
        """The same capture with an empty store (one per batch chunk)."""
        return BoundCapture(self.sites, self.positions, self.heads)

    def record(self, site, h: mx.array, m: np.ndarray | None) -> None:
        if self.heads is not None and KINDS[site[0]].per_head:
            n = h.shape[2]
            h = h[:, :, mx.array([x % n for x in self.heads])]
        st = self._store.setdefault(site, [])
        if self.mode == "all" or m is None:
            st.append(h)
            return
        if not m.any():
            return
        if self.mode == "mean":
            w = mx.array(m.astype(np.float32))
            w = w.reshape(w.shape + (1,) * (h.ndim - 2))
            st.append(((h.astype(mx.float32) * w).sum(axis=1), m.sum(axis=1)))
            return
        per_row = m.sum(axis=1)
        k = count(self.positions) or int(per_row[0])
        if not np.all(per_row == k):
            raise MlxInterpError(
                f"capture positions {self.positions!r} select {per_row.tolist()} tokens per prompt in one call; expected {k}"
            )
        cols = np.nonzero(m)[1].reshape(m.shape[0], k)
        idx = mx.array(cols.astype(np.int32)).reshape((m.shape[0], k) + (1,) * (h.ndim - 2))
        g = mx.take_along_axis(h, idx, axis=1)
        st.append(g[:, 0] if k == 1 else g)

    def result(self) -> dict:
        """Site -> array, combining the records of every forward call of the pass."""
        out = {}
        for site, recs in self._store.items():
            if not recs:
                continue
            if self.mode == "mean":
                s = sum(r[0] for r in recs)
                n = np.sum([r[1] for r in recs], axis=0)
                out[site] = s / mx.array(np.maximum(n, 1).astype(np.float32)).reshape((-1,) + (1,) * (s.ndim - 1))
            elif self.mode == "all" or self.positions == "all":
                out[site] = mx.concatenate(recs, axis=1)
            else:  # fixed prompt positions are all seen in the single prefill call
                out[site] = recs[0]
        return out


def bind_captures(lm, capture) -> list[BoundCapture]:
    """``capture=`` of run/generate: None, one Capture or several; one-line error on overlaps."""
    if capture is None:
        return []
    items = [capture] if isinstance(capture, Capture) else list(capture)
    bound, seen = [], {}
    for c in items:
        if not isinstance(c, Capture):
            raise MlxInterpError(f"{c!r} is not a Capture")
        b = c.bind(lm)
        for s in b.sites:
            if s in seen:
                raise MlxInterpError(f"site {s} is captured twice (by {seen[s]!r} and {c!r}); "
                                     "capture each site once per run")
            seen[s] = c
        bound.append(b)
    return bound
