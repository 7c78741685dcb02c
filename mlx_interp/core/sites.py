"""Named sites: every place in a forward pass the toolkit can read or write, in one table.

A site is ``(kind, layer)``; the kinds use TransformerLens's names:

=============  =====================================================================  ==================
kind           what it is (layer l)                                                   shape at the hook
=============  =====================================================================  ==================
``resid_pre``  the residual stream entering block l (``resid_pre 0`` = scaled embedding)  [B, T, D]
``resid_mid``  after block l's attention, before its MLP (sequential blocks only)     [B, T, D]
``resid_post`` the residual stream leaving block l (= ``resid_pre l+1``)              [B, T, D]
``attn_out``   what block l's attention adds to the residual stream                   [B, T, D]
``mlp_out``    what block l's MLP adds to the residual stream                         [B, T, D]
``head``       per-head attention outputs: the ``o_proj`` input split into heads      [B, T, H, d]
``k``, ``v``   keys / values as stored in the KV cache (after RoPE and any k-norm)    [B, T, H_kv, d_kv]
=============  =====================================================================  ==================

Every hook sees its activation with positions on axis 1 (K/V are transposed from the cache's
[B, H, T, d] and back), so position rules, row selection and captures work alike everywhere.
``HOOK`` names, per kind, the module whose call ``core.hooks`` intercepts; adding a site kind is
one row here plus, if it needs a new hook point, one method in ``core.hooks``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence, Union

from ..errors import MlxInterpError
from .parts import head_shape, kv_head_shape, parts


@dataclass(frozen=True)
class Kind:
    name: str
    hook: str  # hook point in core.hooks: "block", "attn_writer", "mlp_writer", "o_proj", "cache"
    per_head: bool  # the activation has a head axis (axis 2)
    doc: str


KINDS: dict[str, Kind] = {k.name: k for k in (
    Kind("resid_pre", "block", False, "residual stream entering block l (resid_pre 0 is the scaled embedding)"),
    Kind("resid_mid", "attn_writer", False, "residual stream after block l's attention, before its MLP"),
    Kind("resid_post", "block", False, "residual stream leaving block l"),
    Kind("attn_out", "attn_writer", False, "what block l's attention adds to the residual stream"),
    Kind("mlp_out", "mlp_writer", False, "what block l's MLP adds to the residual stream"),
    Kind("head", "o_proj", True, "per-head attention outputs (o_proj input split into heads)"),
    Kind("k", "cache", True, "keys as stored in the KV cache (after RoPE)"),
    Kind("v", "cache", True, "values as stored in the KV cache"),
)}

Site = tuple  # (kind, layer)
SiteArg = Union[str, Sequence[str]]
Layers = Union[int, Sequence[int], str]
Heads = Union[None, int, Sequence[int]]


def kinds(site: SiteArg, lm=None) -> list[str]:
    """Normalise a ``site=`` argument (one kind or several) with one-line errors."""
    items = [site] if isinstance(site, str) else list(site)
    if not items:
        raise MlxInterpError(f"empty site list; valid kinds: {', '.join(KINDS)}")
    for k in items:
        if k not in KINDS:
            raise MlxInterpError(f"unknown site kind {k!r}; valid: {', '.join(KINDS)}")
        if k == "resid_mid" and lm is not None and not parts(lm.model).has_resid_mid:
            raise MlxInterpError(f"resid_mid does not exist in {lm.name} (model type {parts(lm.model).model_type!r}: "
                                 "attention and MLP read the same block input); valid here: "
                                 f"{', '.join(x for x in KINDS if x != 'resid_mid')}")
    return list(dict.fromkeys(items))


def resolve_layers(layers: Layers, n_layers: int, what: str = "layer") -> list[int]:
    """Normalise ``layers`` ("all", int, or list; negatives from the end) with range checks."""
    import numpy as np

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
            raise MlxInterpError(f"{what} {layer} is out of range for a {n_layers}-layer model; "
                                 f"valid: 0..{n_layers - 1} (or -{n_layers}..-1)")
        out.append(int(layer) % n_layers)
    return list(dict.fromkeys(out))


def sites(lm, site: SiteArg, layers: Layers) -> set:
    """Every (kind, layer) named by a ``site=`` / ``layers=`` pair, checked against the model."""
    ls = resolve_layers(layers, lm.n_layers)
    return {(k, l) for k in kinds(site, lm) for l in ls}


def head_counts(lm, kind: str, layer: int) -> tuple[int, int]:
    """(heads, width per head) of a per-head site: query heads for ``head``, KV heads for ``k``/``v``."""
    attn = parts(lm.model).layers[layer].self_attn
    return head_shape(attn) if kind == "head" else kv_head_shape(attn)


def width(lm, kind: str, layer: int) -> int:
    """Last-axis width of a site's activation (the residual width, or the width of one head)."""
    return head_counts(lm, kind, layer)[1] if KINDS[kind].per_head else lm.width


def resolve_heads(lm, site_set: Iterable, heads: Heads) -> list[int] | None:
    """Head indices (checked against every per-head site they apply to), or None for all heads.

    Negative indices count from the last head of each site (query heads for ``head``, KV heads for ``k``/``v``)."""
    if heads is None:
        return None
    import numpy as np

    hs = [heads] if isinstance(heads, (int, np.integer)) else list(heads)
    if not hs:
        raise MlxInterpError("empty heads list; give head indices or None for all heads")
    if len(set(hs)) != len(hs):
        raise MlxInterpError(f"heads={list(hs)} repeats a head; give each head once")
    per_head = [(k, l) for k, l in site_set if KINDS[k].per_head]
    if not per_head:
        raise MlxInterpError(f"heads={list(hs)} needs a per-head site (head, k or v); "
                             f"got {sorted({k for k, _ in site_set})}")
    for k, l in per_head:
        n = head_counts(lm, k, l)[0]
        for h in hs:
            if not isinstance(h, (int, np.integer)) or isinstance(h, bool) or not -n <= h < n:
                raise MlxInterpError(f"head {h!r} is out of range for {k} at layer {l}, which has heads 0..{n - 1}")
    return [int(h) for h in hs]


def before(site: Site, k: int) -> bool:
    """True for sites that lie in the blocks a pass resumed at block k skips (layers < k)."""
    return site[1] < k


def depth(layer: int, n_layers: int) -> float:
    """The toolkit's one depth convention: layer index / number of layers (0 for the first block; the last block is
    (L-1)/L), as Arditi et al. (l*/L) and CAA report layers. Every experiment and figure uses it."""
    return layer / n_layers
