"""Capture residual-stream states (and per-head attention outputs) during a forward pass.

``Capture(layers, positions)`` says what to keep; the hooks call ``record`` with the state
at each site and the host-side position mask. Reductions:

* one fixed position per prompt (``"last"``, an int): ``[B, D]``
* several fixed positions (a list, or a slice of equal length in every prompt): ``[B, k, D]``
* ``Span`` / ``"prompt"`` / ``"generated"``: the mean over the selected positions ``[B, D]``,
  accumulated across prefill and decode steps
* ``"all"``: the whole padded stream ``[B, T, D]`` (see ``Trace.per_prompt`` to drop pads)

``sublayers=`` also records what each layer's attention and MLP add to the residual (sites
``("attn_out", l)``, ``("mlp_out", l)``; ``Trace.sublayer(kind, l)``).
Per-head captures have an extra head axis: ``[B, H, d]`` etc. Nothing is captured that
was not asked for (MLX is lazy: unneeded arrays would keep whole graphs alive).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import mlx.core as mx
import numpy as np

from .errors import MlxInterpError
from .hooks import ATTN_OUT, EMBED, MLP_OUT
from .positions import Positions, Span, count


@dataclass
class Capture:
    """What to record. ``layers``: "all", an int or a list; ``embed``: also the embedding site."""

    layers: Any = "all"
    positions: Positions = "last"
    embed: bool = False
    heads: Any = None  # None, "all" or layer list: capture per-head o_proj inputs too
    sublayers: Any = None  # None, "all" or layer list: capture ("attn_out", l) and ("mlp_out", l) too
    _sites: set = field(default_factory=set, init=False, repr=False)
    _store: dict = field(default_factory=dict, init=False, repr=False)

    @property
    def needs_heads(self) -> bool:
        return self.heads is not None

    @property
    def needs_writers(self) -> bool:
        return self.sublayers is not None

    def bind(self, lm) -> "Capture":
        from .interventions import resolve_layers

        self._sites = set(resolve_layers(self.layers, lm.n_layers)) if self.layers is not None else set()
        if self.embed:
            self._sites.add(EMBED)
        if self.heads is not None:
            self._sites |= {("heads", i) for i in resolve_layers(self.heads, lm.n_layers, "head layer")}
        if self.sublayers is not None:
            self._sites |= {(s, i) for i in resolve_layers(self.sublayers, lm.n_layers, "sublayer") for s in (ATTN_OUT, MLP_OUT)}
        self._store = {}
        return self

    def wants(self, site) -> bool:
        return site in self._sites

    def _mode(self) -> str:
        p = self.positions
        if p == "all":
            return "all"
        if isinstance(p, Span) or p in ("prompt", "generated"):
            return "mean"
        return "gather"

    def record(self, site, h: mx.array, m: np.ndarray | None) -> None:
        mode = self._mode()
        st = self._store.setdefault(site, [])
        if mode == "all" or m is None:
            st.append(h)
            return
        if not m.any():
            return
        if mode == "mean":
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
        """Site -> array, combining the records of every forward call."""
        out = {}
        for site, recs in self._store.items():
            if not recs:
                continue
            mode = self._mode()
            if mode == "mean":
                s = sum(r[0] for r in recs)
                n = np.sum([r[1] for r in recs], axis=0)
                out[site] = s / mx.array(np.maximum(n, 1).astype(np.float32)).reshape((-1,) + (1,) * (s.ndim - 1))
            elif mode == "all":
                out[site] = mx.concatenate(recs, axis=1)
            else:  # fixed prompt positions are all seen in the single prefill call
                out[site] = recs[0]
        return out
