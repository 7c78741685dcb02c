"""Interventions on the residual stream and on attention heads: add, ablate, patch.

Each intervention names its sites (layer outputs, the embedding site, or per-head
``o_proj`` inputs), a position rule (see ``positions``), and how it edits the state.
All edits are out-of-place (``h = h + v``): MLX's in-place operators rebind arrays that
a caller may hold. ``bind(lm)`` validates against a model (layer range, width, finite
values) before any forward pass runs, so bad input fails with one line, not numbers.

Layer ``l`` always means the *output* of decoder layer ``l`` (0-based; negative counts from
the end), which is what papers call the residual stream after block l (resid_post).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence, Union

import mlx.core as mx
import numpy as np

from .errors import MlxInterpError
from .hooks import ATTN_OUT, EMBED, MLP_OUT
from .model_parts import head_shape
from .positions import Positions

Layers = Union[int, Sequence[int], str]


def as_vector(v: Any, name: str = "vector") -> np.ndarray:
    """A finite 1-D or 2-D float array; one-line error otherwise."""
    a = np.asarray(v.tolist() if isinstance(v, mx.array) else v, dtype=np.float64)
    if a.size == 0:
        raise MlxInterpError(f"{name} is empty")
    if not np.all(np.isfinite(a)):
        bad = int(np.sum(~np.isfinite(a)))
        raise MlxInterpError(f"{name} has {bad} non-finite values (NaN or inf); refusing to steer with it")
    return a


def resolve_layers(layers: Layers, n_layers: int, what: str = "layer") -> list[int]:
    """Normalise ``layers`` ("all", int, or list; negatives from the end) with range checks."""
    if isinstance(layers, str):
        if layers != "all":
            raise MlxInterpError(f"{what} {layers!r} is not valid; use 'all', an int or a list of ints")
        return list(range(n_layers))
    items = [layers] if isinstance(layers, (int, np.integer)) else list(layers)
    if not items:
        raise MlxInterpError(f"empty {what} list; valid layers are 0..{n_layers - 1}")
    out = []
    for layer in items:
        if not isinstance(layer, (int, np.integer)) or isinstance(layer, bool):
            raise MlxInterpError(f"{what} {layer!r} is not an integer; valid: 0..{n_layers - 1} or -{n_layers}..-1")
        if not -n_layers <= layer < n_layers:
            raise MlxInterpError(f"{what} {layer} is out of range for a {n_layers}-layer model; valid: 0..{n_layers - 1} (or -{n_layers}..-1)")
        out.append(int(layer) % n_layers)
    return out


def check_width(a: np.ndarray, width: int, model_name: str, name: str = "vector") -> None:
    if a.shape[-1] != width:
        raise MlxInterpError(
            f"{name} has width {a.shape[-1]} but {model_name}'s residual stream has width {width}; "
            "a vector from another model needs an adapter (see transfer)"
        )


class Intervention:
    """Base class: subclasses (dataclasses) fill ``sites`` in ``bind`` and implement ``apply``."""

    positions: Positions = "all"
    sites: set = frozenset()
    needs_heads = False

    def applies(self, site) -> bool:
        return site in self.sites

    def bind(self, lm) -> "Intervention":  # pragma: no cover - abstract
        raise NotImplementedError

    def apply(self, h: mx.array, m: np.ndarray | None) -> mx.array:  # pragma: no cover
        raise NotImplementedError


def _where(m: np.ndarray | None, new: mx.array, old: mx.array) -> mx.array:
    if m is None:
        return new
    if not m.any():
        return old
    sel = mx.array(m)
    while sel.ndim < old.ndim:
        sel = sel[..., None]
    return mx.where(sel, new, old)


@dataclass
class Add(Intervention):
    """Add ``alpha * vector`` to the residual at ``layers`` and ``positions``.

    With ``alpha == 0`` nothing is added at all, so logits stay bit-identical.
    ``vector`` may be [D] or [B, D] (one per prompt).
    """

    vector: Any = None
    layers: Layers = 0
    alpha: float = 1.0
    positions: Positions = "all"

    def bind(self, lm):
        a = as_vector(self.vector)
        check_width(a, lm.width, lm.name)
        self.sites = set(resolve_layers(self.layers, lm.n_layers))
        if not np.isfinite(self.alpha):
            raise MlxInterpError(f"alpha {self.alpha!r} is not finite")
        self._v = mx.array((float(self.alpha) * a).astype(np.float32))
        return self

    def apply(self, h, m):
        if self.alpha == 0:
            return h
        v = self._v.astype(h.dtype)
        if v.ndim == 2:
            v = v[:, None, :]
        return _where(m, h + v, h)


@dataclass
class Ablate(Intervention):
    """Project a direction out of the residual: h <- h - (h.r) r, r unit-norm.

    Defaults to Arditi et al.'s exact directional ablation: the embedding site, every layer
    output *and* every attention and MLP output that is added to the residual inside a layer
    (``sublayers=True``), so no state of the residual stream ever carries the direction (the
    MLP's input included). ``sublayers=False`` ablates at block boundaries only.
    """

    direction: Any = None
    layers: Layers = "all"
    include_embed: bool = True
    positions: Positions = "all"
    sublayers: bool = True

    @property
    def needs_writers(self) -> bool:
        return self.sublayers

    def bind(self, lm):
        a = as_vector(self.direction, "direction")
        if a.ndim != 1:
            raise MlxInterpError(f"ablation direction must be 1-D, got shape {a.shape}")
        check_width(a, lm.width, lm.name, "direction")
        norm = float(np.linalg.norm(a))
        if norm < 1e-12:
            raise MlxInterpError("ablation direction has zero norm; nothing to project out (extract a non-degenerate direction)")
        layers = resolve_layers(self.layers, lm.n_layers)
        self.sites = set(layers)
        if self.sublayers:
            self.sites |= {(s, i) for i in layers for s in (ATTN_OUT, MLP_OUT)}
        if self.include_embed and self.layers == "all":
            self.sites.add(EMBED)
        self._r = mx.array((a / norm).astype(np.float32))
        return self

    def apply(self, h, m):
        r = self._r.astype(h.dtype)
        return _where(m, h - (h @ r)[..., None] * r, h)


@dataclass
class Patch(Intervention):
    """Set the residual at ``layer`` and ``positions`` to given vectors (activation patching).

    ``value``: [D] (same for every prompt and position), [B, D] (one per prompt; one
    position per prompt), or [B, k, D] (k positions per prompt, in position order).
    ``rows``: patch only these batch rows (e.g. one (source, target) layer pair per row).
    """

    value: Any = None
    layer: int = 0
    positions: Positions = "last"
    rows: Sequence[int] | None = None

    def bind(self, lm):
        a = as_vector(self.value, "patch value").astype(np.float32)
        check_width(a, lm.width, lm.name, "patch value")
        self.sites = set(resolve_layers(self.layer, lm.n_layers))
        self._v = mx.array(a)
        return self

    def apply(self, h, m):
        if self.rows is not None:
            keep = np.zeros((h.shape[0], 1), dtype=bool)
            keep[list(self.rows)] = True
            m = (np.ones(h.shape[:2], dtype=bool) if m is None else m) & keep
        return _patch(h, m, self._v)


def _patch(h: mx.array, m: np.ndarray | None, v: mx.array) -> mx.array:
    v = v.astype(h.dtype)
    if v.ndim == h.ndim and m is not None:  # [B, k, D] or [B, k, H, d]: k selected positions per row
        out = h
        ranks = np.cumsum(m, axis=1) - 1  # which selected position each column is
        for j in range(v.shape[1]):
            out = _where(m & (ranks == j), v[:, j : j + 1], out)
        return out
    if v.ndim == h.ndim - 1:  # one vector per row
        v = v[:, None]
    return _where(m, mx.broadcast_to(v, h.shape), h)


@dataclass
class HeadPatch(Intervention):
    """Set attention head outputs (the ``o_proj`` input, split into heads) at ``layer``.

    ``heads``: head index or list. ``value``: [d] or [H_sel, d] (broadcast to every prompt),
    or [B, H_sel, d]. This is the site of function-vector head means; for Gemma the head's
    effect on the residual passes through ``post_attention_layernorm``.
    """

    value: Any = None
    layer: int = 0
    heads: int | Sequence[int] = 0
    positions: Positions = "last"
    needs_heads = True

    def bind(self, lm):
        self._layer = resolve_layers(self.layer, lm.n_layers)[0]
        self.sites = {("heads", self._layer)}
        n_heads, d = head_shape(_attn(lm, self._layer))
        hs = [self.heads] if isinstance(self.heads, (int, np.integer)) else list(self.heads)
        for h in hs:
            if not -n_heads <= h < n_heads:
                raise MlxInterpError(f"head {h} is out of range; layer {self._layer} has heads 0..{n_heads - 1}")
        self._heads = [h % n_heads for h in hs]
        a = as_vector(self.value, "head value").astype(np.float32)
        if a.shape[-1] != d:
            raise MlxInterpError(f"head value has width {a.shape[-1]} but heads of layer {self._layer} have width {d}")
        if a.ndim == 1:
            a = np.broadcast_to(a, (len(self._heads), d))
        self._v = mx.array(np.ascontiguousarray(a))
        return self

    def apply(self, zh, m):  # zh: [B, L, H, d]
        sel = np.zeros(zh.shape[2], dtype=bool)
        sel[self._heads] = True
        hm = mx.array(sel)[:, None]
        v = self._v
        full = mx.zeros(zh.shape[-2:], dtype=zh.dtype)
        if v.ndim == 2:  # [H_sel, d] -> [H, d]
            full = full.at[mx.array(self._heads)].add(v.astype(zh.dtype))
            new = mx.where(hm, full, zh)
        else:  # [B, H_sel, d]
            fullb = mx.zeros((v.shape[0],) + zh.shape[-2:], dtype=zh.dtype)
            fullb = fullb.at[:, mx.array(self._heads)].add(v.astype(zh.dtype))
            new = mx.where(hm, fullb[:, None], zh)
        return _where(m, new, zh)


def _attn(lm, layer: int):
    from .model_parts import parts

    return parts(lm.model).layers[layer].self_attn


def bind_all(lm, interventions) -> list[Intervention]:
    out = []
    for iv in interventions or ():
        if not isinstance(iv, Intervention):
            raise MlxInterpError(f"{iv!r} is not an intervention; use Add, Ablate, Patch or HeadPatch")
        out.append(iv.bind(lm))
    return out
