"""Interventions at named sites: add, ablate, patch, or any edit.

Every intervention takes the same arguments for the same things:

``vector``     the value it writes (first argument; ``Edit`` takes a function instead)
``site=``      a site kind or a list of kinds (``core.sites``), default ``"resid_post"``
``layers=``    ``"all"`` (default), an int or a list; negatives count from the end
``positions=`` a position rule (``core.positions``), default ``"all"``
``heads=``     head indices, only for per-head sites (``head``, ``k``, ``v``); default all heads
``rows=``      batch rows to edit (default all), e.g. one sweep variant per row

Shapes of ``vector``: ``[W]`` shared by every row, position and head (W = residual width, or
the width of one head); ``[H_sel, W]`` one per selected head (per-head sites); a leading batch
axis gives one value per row (``[B, W]``, ``[B, H_sel, W]``), and for ``Patch`` a second axis
one value per selected position (``[B, k, W]``, in position order).

``bind(lm)`` checks everything against a model (sites, layers, widths, heads, finite values)
before any forward pass and returns a *new* bound object: the user's intervention is never
mutated, so one ``Add`` can be used on several models. All edits are out of place
(``h = h + v``): MLX's in-place operators would rebind arrays a caller may hold.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import mlx.core as mx
import numpy as np

from ..errors import MlxInterpError
from .positions import DEFAULT_POSITIONS, Positions
from .sites import KINDS, Heads, Layers, SiteArg, head_counts, resolve_heads, sites, width

DEFAULT_SITE = "resid_post"
DEFAULT_LAYERS = "all"


def as_vector(v: Any, name: str = "vector") -> np.ndarray:
    """A finite float array; one-line error otherwise."""
    if isinstance(v, mx.array):
        v = np.array(v.astype(mx.float32))
    a = np.asarray(v, dtype=np.float64)
    if a.size == 0:
        raise MlxInterpError(f"{name} is empty")
    if not np.all(np.isfinite(a)):
        bad = int(np.sum(~np.isfinite(a)))
        raise MlxInterpError(f"{name} has {bad} non-finite values (NaN or inf); refusing to use it")
    return a


def check_width(a: np.ndarray, expected: int, model_name: str, name: str = "vector", where: str = "residual stream") -> None:
    if a.shape[-1] != expected:
        raise MlxInterpError(
            f"{name} has width {a.shape[-1]} but {model_name}'s {where} has width {expected}; "
            "a vector from another model needs an adapter (see transfer)"
        )


def _where(m: np.ndarray | None, new: mx.array, old: mx.array) -> mx.array:
    if m is None:
        return new
    if not m.any():
        return old
    if m.all():
        return new
    sel = mx.array(m)
    sel = sel.reshape(sel.shape + (1,) * (old.ndim - sel.ndim))
    return mx.where(sel, new, old)


@dataclass(frozen=True, eq=False)
class Intervention:
    """Base class: the shared arguments, binding, row and head selection. Subclasses define ``edit``."""

    site: SiteArg = field(default=DEFAULT_SITE, kw_only=True)
    layers: Layers = field(default=DEFAULT_LAYERS, kw_only=True)
    positions: Positions = field(default=DEFAULT_POSITIONS, kw_only=True)
    heads: Heads = field(default=None, kw_only=True)
    rows: Sequence[int] | None = field(default=None, kw_only=True)

    # set on the bound copy only
    sites: frozenset = field(default=frozenset(), init=False, repr=False)
    _heads: Any = field(default=None, init=False, repr=False)
    _rows: Any = field(default=None, init=False, repr=False)
    _v: Any = field(default=None, init=False, repr=False)
    _per_row: bool = field(default=False, init=False, repr=False)
    _bound: bool = field(default=False, init=False, repr=False)

    # ---- binding ----

    def bind(self, lm) -> "Intervention":
        """A checked copy bound to ``lm`` (the original is left as it was)."""
        b = copy.copy(self)
        s = frozenset(sites(lm, self.site, self.layers))
        per_head = {KINDS[k].per_head for k, _ in s}
        if len(per_head) > 1 and self._payload_name():
            raise MlxInterpError(f"{type(self).__name__} mixes per-head and residual sites ({sorted({k for k, _ in s})}); "
                                 "a vector has one width: use one intervention per kind of site")
        object.__setattr__(b, "sites", s)
        object.__setattr__(b, "_heads", resolve_heads(lm, s, self.heads))
        if self.rows is not None:
            rows = rows_list(self.rows)
            if not rows or any(not isinstance(r, (int, np.integer)) or isinstance(r, bool) or r < 0 for r in rows):
                raise MlxInterpError(f"rows={self.rows!r} is not valid; give non-negative batch row indices")
            object.__setattr__(b, "_rows", sorted(set(int(r) for r in rows)))
        b._bind_payload(lm, s)
        object.__setattr__(b, "_bound", True)
        return b

    def _payload_name(self) -> str | None:
        return "vector"

    def _bind_payload(self, lm, s: frozenset) -> None:
        """Check the vector's width and layout; residual sites: [W] shared, [B, W] / [B, k, W] per row;
        per-head sites: [W] shared, [H_sel, W] one per selected head, [B, H_sel, W] / [B, k, H_sel, W] per row."""
        name = self._payload_name()
        a = as_vector(self.vector, name)
        per_head = KINDS[next(iter(s))[0]].per_head
        for k, l in s:
            check_width(a, width(lm, k, l), lm.name, name, f"{k} at layer {l} (per head)" if per_head else "residual stream")
        if per_head and a.ndim >= 2:
            for k, l in s:
                n_sel = len(self._heads) if self._heads is not None else head_counts(lm, k, l)[0]
                if a.shape[-2] != n_sel:
                    raise MlxInterpError(f"{name} of shape {a.shape} has {a.shape[-2]} heads on its second-to-last axis but "
                                         f"{k} at layer {l} selects {n_sel}; give [W], [heads, W] or [B, heads, W]")
        object.__setattr__(self, "_per_row", a.ndim > (2 if per_head else 1))
        object.__setattr__(self, "_v", self._prepare(a, per_head))

    def _prepare(self, a: np.ndarray, per_head: bool) -> mx.array:
        return mx.array(a.astype(np.float32))

    # ---- running ----

    def check_batch(self, n_rows: int) -> None:
        """One-line errors for rows / per-row values that do not fit a batch of ``n_rows`` prompts."""
        if self._rows is not None and self._rows[-1] >= n_rows:
            raise MlxInterpError(f"rows={self._rows} is outside the batch of {n_rows} prompts; valid rows: 0..{n_rows - 1}")
        if self._per_row and self._v.shape[0] != n_rows:
            raise MlxInterpError(f"{type(self).__name__} has one {self._payload_name()} per row ({self._v.shape[0]} rows) "
                                 f"but the batch has {n_rows} prompts")

    def for_rows(self, idx: Sequence[int]) -> "Intervention | None":
        """The bound intervention restricted to a chunk holding the caller's rows ``idx`` (None: nothing to do there)."""
        b = copy.copy(self)
        if self._rows is not None:
            local = [j for j, i in enumerate(idx) if i in set(self._rows)]
            if not local:
                return None
            object.__setattr__(b, "_rows", local)
        if self._per_row:
            object.__setattr__(b, "_v", self._v[mx.array(list(idx))])
        return b

    def apply(self, h: mx.array, site, m: np.ndarray | None) -> mx.array:
        """Edit activation ``h`` at ``site`` where the position mask ``m`` (and rows, heads) select."""
        if self._rows is not None:
            keep = np.zeros((h.shape[0], 1), dtype=bool)
            keep[self._rows] = True
            m = keep & (np.ones(h.shape[:2], dtype=bool) if m is None else m)
        if m is not None and not m.any():
            return h
        new = self.edit(h, site, m)
        if new is h:
            return h
        if self._heads is not None and KINDS[site[0]].per_head:
            H = h.shape[2]
            sel = np.zeros(H, dtype=bool)
            sel[[x % H for x in self._heads]] = True
            new = mx.where(mx.array(sel)[:, None], new, h)
        return _where(m, new, h)

    def _value(self, h: mx.array, site) -> mx.array:
        """The payload laid out like ``h`` ([.., W] or [.., H, W]); per-row values get a position axis."""
        v = self._v.astype(h.dtype)
        if KINDS[site[0]].per_head and v.ndim >= 2 and self._heads is not None:
            H = h.shape[2]  # one value per selected head -> every head (zeros elsewhere; the head mask keeps them out)
            P = np.zeros((H, len(self._heads)), dtype=np.float32)
            P[[x % H for x in self._heads], np.arange(len(self._heads))] = 1.0
            v = mx.array(P).astype(h.dtype) @ v
        if self._per_row and v.ndim < h.ndim:
            v = mx.expand_dims(v, 1)
        return v

    def edit(self, h: mx.array, site, m: np.ndarray | None) -> mx.array:  # pragma: no cover - abstract
        raise NotImplementedError


@dataclass(frozen=True, eq=False)
class Add(Intervention):
    """Add ``alpha * vector``. With ``alpha == 0`` nothing is added at all (bit-identical logits)."""

    vector: Any = None
    alpha: float = field(default=1.0, kw_only=True)

    def _bind_payload(self, lm, s):
        if not np.isfinite(self.alpha):
            raise MlxInterpError(f"alpha {self.alpha!r} is not finite")
        super()._bind_payload(lm, s)

    def _prepare(self, a, per_head):
        return mx.array((float(self.alpha) * a).astype(np.float32))

    def edit(self, h, site, m):
        if self.alpha == 0:
            return h
        return h + self._value(h, site)


@dataclass(frozen=True, eq=False)
class Ablate(Intervention):
    """Project a direction out: h <- h - (h.r) r with r = vector / |vector|.

    Arditi et al.'s exact directional ablation removes it from every state of the residual
    stream: ``refusal.ablation(r)`` = ``resid_pre`` 0 plus ``resid_post``, ``attn_out`` and
    ``mlp_out`` at every layer (so the MLP's input never sees it either).
    """

    vector: Any = None

    def _prepare(self, a, per_head):
        norms = np.linalg.norm(a, axis=-1, keepdims=True)
        if np.any(norms < 1e-12):
            raise MlxInterpError("ablation direction has zero norm; nothing to project out (extract a non-degenerate direction)")
        return mx.array((a / norms).astype(np.float32))

    def edit(self, h, site, m):
        r = self._value(h, site)
        if r.ndim == 1:
            return h - (h @ r)[..., None] * r
        return h - (h * r).sum(axis=-1, keepdims=True) * r


@dataclass(frozen=True, eq=False)
class Patch(Intervention):
    """Set the activation to given values (activation patching).

    ``vector`` [W] (every selected row and position), [B, W] (one per row), or [B, k, W]
    (k selected positions per row, in position order); per-head sites take a head axis
    before W. Default positions are all; patching one token is ``positions="last"`` or an int.
    """

    vector: Any = None

    def edit(self, h, site, m):
        v = self._value(h, site)
        if self._per_row and v.ndim == h.ndim and v.shape[1] > 1 and m is not None:  # k selected positions per row
            out = h
            ranks = np.cumsum(m, axis=1) - 1  # which selected position each column is
            for j in range(v.shape[1]):
                out = _where(m & (ranks == j), v[:, j:j + 1], out)
            return out
        return mx.broadcast_to(v, h.shape)


@dataclass(frozen=True, eq=False)
class Edit(Intervention):
    """Replace the activation by ``fn(h, layer)`` (baukit's ``edit_output``): any edit add/ablate/patch do not cover.

    ``h`` is the activation at the site, positions on axis 1 (``[B, T, D]`` or ``[B, T, H, d]``);
    ``fn`` must return an ``mx.array`` of the same shape and dtype. Positions, rows and heads
    select where its result is used; elsewhere the activation is unchanged.
    """

    fn: Callable[[mx.array, int], mx.array] = None

    def _payload_name(self) -> str | None:
        return None

    def _bind_payload(self, lm, s):
        if not callable(self.fn):
            raise MlxInterpError(f"Edit needs a function fn(activation, layer) -> activation; got {self.fn!r}")

    def edit(self, h, site, m):
        out = self.fn(h, site[1])
        if not isinstance(out, mx.array) or out.shape != h.shape or out.dtype != h.dtype:
            got = f"shape {tuple(out.shape)}, dtype {out.dtype}" if isinstance(out, mx.array) else type(out).__name__
            raise MlxInterpError(f"Edit function returned {got} at {site}; it must return an mx.array of shape "
                                 f"{tuple(h.shape)} and dtype {h.dtype}")
        return out


def rows_list(rows) -> list:
    """``rows=`` as a list (an int is one row)."""
    return [rows] if isinstance(rows, (int, np.integer)) else list(rows)


def flatten(interventions) -> list:
    """Interventions as a flat list (groups such as ``refusal.ablation()`` are tuples)."""
    out = []
    for iv in interventions or ():
        if isinstance(iv, (list, tuple)):
            out += flatten(iv)
        else:
            out.append(iv)
    return out


def bind_all(lm, interventions) -> list[Intervention]:
    out = []
    for iv in flatten(interventions):
        if not isinstance(iv, Intervention):
            raise MlxInterpError(f"{iv!r} is not an intervention; use Add, Ablate, Patch or Edit")
        out.append(iv.bind(lm))
    return out
