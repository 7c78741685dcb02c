"""The one mechanism behind capture, steering, ablation and patching: hooked modules.

We never edit mlx-lm or re-implement an architecture. For the duration of a ``with hooked(...)``
block, the modules behind the requested sites (``core.sites.KINDS[kind].hook``) get their class
swapped for a subclass whose call runs the original and hands the activation to the active
``HookSet``:

* ``block``: every decoder layer (always; it also tracks positions): ``resid_pre`` on its input,
  ``resid_post`` on its output;
* ``attn_writer`` / ``mlp_writer``: the module whose output the layer adds to the residual
  (``parts.writers``): ``attn_out`` / ``mlp_out``; ``resid_mid`` is the block input plus the
  attention write (an edit of it is folded back into the attention write);
* ``o_proj``: the attention output projection, whose input split into heads is ``head``;
* ``cache``: each layer's KV-cache object, whose ``update_and_fetch`` receives ``k``/``v``.

Class swap keeps parameter paths, attributes (``use_sliding``, ``is_sliding``...) and
``isinstance`` unchanged; leaving the block swaps every class back, so the model is restored
exactly. With nothing asked at a site its activation is returned untouched (bit-identical).

Positions: the forward driver (``core.trace``/``core.generate``) tells the hooks, through a
``Context``, the prompt lengths, the left padding of each row and the column of the current
call; hooks compute prompt-relative positions on the host (numpy), so position rules behave the
same in a full pass, in prefill and in every KV-cached decode step.

Replay (``run(resume=(base, k))``): blocks below k return at once, block k-1 with the
``resid_pre k`` captured in an earlier pass, so a layer sweep skips the unchanged lower blocks.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterable

import mlx.core as mx
import numpy as np

from ..errors import MlxInterpError
from .parts import head_shape, parts, tensor_parallel, writers
from .sites import KINDS


@dataclass
class Context:
    """What the forward driver knows about the rows of the current batch."""

    prompt_lens: np.ndarray  # [B] prompt tokens per row (a continued cache's tokens included)
    pads: np.ndarray  # [B] left padding per row
    start: int = 0  # padded column index of the first token of the current call

    def positions(self, L: int) -> np.ndarray:
        """Prompt-relative positions [B, L] of the columns of a call of length L."""
        return self.start + np.arange(L)[None, :] - self.pads[:, None]


class HookSet:
    """The bound interventions and captures active on one model during a ``hooked`` block."""

    def __init__(self, interventions: Iterable, captures: Iterable, ctx: Context | None, skip: tuple | None):
        self.ctx, self.skip = ctx, skip
        self.by_site: dict = {}
        self.caps_by_site: dict = {}
        for iv in interventions:
            for s in iv.sites:
                self.by_site.setdefault(s, []).append(iv)
        for c in captures:
            for s in c.sites:
                self.caps_by_site.setdefault(s, []).append(c)
        self.wanted = set(self.by_site) | set(self.caps_by_site)
        self.n_heads: dict[int, int] = {}  # this rank's query heads per layer
        self.tp: dict[int, tuple[int, int]] = {}  # layer -> (rank, ranks) on a tensor-parallel model
        self._pos: dict[int, np.ndarray | None] = {}
        self._x: dict[int, mx.array] = {}  # block inputs, kept only where resid_mid is wanted

    def points(self, layer: int) -> set[str]:
        """Hook points needed at one layer."""
        return {KINDS[k].hook for k, l in self.wanted if l == layer}

    def _mask(self, rule, pos):
        from .positions import mask

        if self.ctx is None:
            if rule != "all":
                raise MlxInterpError(f"position rule {rule!r} needs mlx_interp's forward driver (run/generate); "
                                     "with plain mlx-lm calls only positions='all' is available")
            return None
        return mask(rule, pos, self.ctx.prompt_lens)

    def site(self, site, h: mx.array, pos) -> mx.array:
        """Apply the interventions at ``site`` in order, then record captures of the result."""
        ivs, caps = self.by_site.get(site), self.caps_by_site.get(site)
        if ivs:
            for iv in ivs:
                h = iv.apply(h, site, self._mask(iv.positions, pos))
        if caps:
            for c in caps:
                c.record(site, h, self._mask(c.positions, pos))
        return h

    # ---- hook points (one method each; see the module docstring) ----

    def block_call(self, idx: int, layer, base, x, args, kwargs):
        pos = self.ctx.positions(x.shape[1]) if self.ctx is not None else None
        self._pos[idx] = pos
        if self.skip is not None and idx < self.skip[0]:  # replay: block k only needs resid_pre k
            return self.skip[1] if idx == self.skip[0] - 1 else x
        x = self.site(("resid_pre", idx), x, pos)
        if ("resid_mid", idx) in self.wanted:
            self._x[idx] = x
        out = base(layer, x, *args, **kwargs)
        if isinstance(out, tuple):  # future architectures returning (h, extras)
            return (self.site(("resid_post", idx), out[0], pos),) + out[1:]
        return self.site(("resid_post", idx), out, pos)

    def writer_call(self, idx: int, which: str, module, base, args, kwargs):
        out = base(module, *args, **kwargs)
        pos = self._pos.get(idx)
        if which == "mlp":
            return self.site(("mlp_out", idx), out, pos)
        out = self.site(("attn_out", idx), out, pos)
        if ("resid_mid", idx) in self.wanted:
            x = self._x.pop(idx)
            h = x + out  # exactly what the block adds next (fp32: Gemma's clip_residual is x + y too)
            h2 = self.site(("resid_mid", idx), h, pos)
            if h2 is not h:
                out = out + (h2 - h)  # the block then computes x + out = h2 (to rounding; exact if h2 == h)
        return out

    def oproj_call(self, idx: int, proj, base, z):
        B, L, HD = z.shape
        H = self.n_heads[idx]
        zh = z.reshape(B, L, H, HD // H)
        tp = self.tp.get(idx)
        if tp:  # tensor parallel: the site sees every rank's heads in the model's order; each rank keeps its own
            full = _gather_heads(zh)
            full2 = self.site(("head", idx), full, self._pos.get(idx))
            return base(proj, z if full2 is full else full2[:, :, tp[0] * H:(tp[0] + 1) * H].reshape(B, L, HD))
        zh2 = self.site(("head", idx), zh, self._pos.get(idx))
        return base(proj, z if zh2 is zh else zh2.reshape(B, L, HD))

    def cache_call(self, idx: int, cache, base, keys, values):
        pos = self._pos.get(idx)
        for kind in ("k", "v"):
            if (kind, idx) not in self.wanted:
                continue
            a = keys if kind == "k" else values
            t = a.transpose(0, 2, 1, 3)  # [B, H, T, d] -> [B, T, H, d]: positions on axis 1 like every site
            tp = self.tp.get(idx)
            if tp:  # tensor parallel: every rank's KV heads at the site, this rank's back into its cache
                h = t.shape[2]
                full = _gather_heads(t)
                full2 = self.site((kind, idx), full, pos)
                t2 = t if full2 is full else full2[:, :, tp[0] * h:(tp[0] + 1) * h]
            else:
                t2 = self.site((kind, idx), t, pos)
            if t2 is not t:
                if kind == "k":
                    keys = t2.transpose(0, 2, 1, 3)
                else:
                    values = t2.transpose(0, 2, 1, 3)
        return base(cache, keys, values)


def _gather_heads(t: mx.array) -> mx.array:
    """[B, T, h, d] of this rank's heads -> [B, T, h * ranks, d] of every rank's, in rank (= the model's head) order."""
    from ..runtime.parallel import group

    g = mx.distributed.all_gather(t.transpose(2, 0, 1, 3), group=group())
    return g.transpose(1, 2, 0, 3)


_SUBCLASSES: dict[tuple[type, str], type] = {}


def _hooked_class(cls: type, point: str) -> type:
    key = (cls, point)
    if key in _SUBCLASSES:
        return _SUBCLASSES[key]
    if point == "block":
        def __call__(self, x, *args, **kwargs):
            hs, idx = self.__dict__["_mi_hook"]
            return hs.block_call(idx, self, cls.__call__, x, args, kwargs)
        attrs = {"__call__": __call__}
    elif point in ("attn", "mlp"):
        def __call__(self, *args, **kwargs):
            hs, idx = self.__dict__["_mi_hook"]
            return hs.writer_call(idx, point, self, cls.__call__, args, kwargs)
        attrs = {"__call__": __call__}
    elif point == "o_proj":
        def __call__(self, z):
            hs, idx = self.__dict__["_mi_hook"]
            return hs.oproj_call(idx, self, cls.__call__, z)
        attrs = {"__call__": __call__}
    else:  # cache
        def update_and_fetch(self, keys, values):
            hs, idx = self.__dict__["_mi_hook"]
            return hs.cache_call(idx, self, cls.update_and_fetch, keys, values)
        attrs = {"update_and_fetch": update_and_fetch}
    _SUBCLASSES[key] = type(f"Hooked{cls.__name__}", (cls,), attrs)
    return _SUBCLASSES[key]


def _swap(obj, point: str, hs: HookSet, idx: int) -> None:
    if "_mi_hook" in obj.__dict__:
        raise MlxInterpError("this model already has mlx_interp hooks installed; nest interventions in one block instead")
    object.__setattr__(obj, "_mi_hook", (hs, idx))
    obj.__class__ = _hooked_class(type(obj), point)


def _unswap(obj) -> None:
    obj.__dict__.pop("_mi_hook", None)
    if type(obj).__name__.startswith("Hooked"):
        obj.__class__ = type(obj).__mro__[1]


@contextmanager
def hooked(model, interventions: Iterable = (), captures: Iterable = (), ctx: Context | None = None,
           skip: tuple | None = None, caches: list | None = None):
    """Install hooks for the duration of a ``with`` block; always removed on exit.

    ``interventions`` / ``captures`` are *bound* (``.bind(lm)``); ``caches`` are the per-layer
    KV caches of this pass, needed for ``k``/``v`` sites.
    """
    p = parts(model)
    hs = HookSet(list(interventions), list(captures), ctx, skip)
    installed = []
    try:
        for i, layer in enumerate(p.layers):
            _swap(layer, "block", hs, i)
            installed.append(layer)
            points = hs.points(i)
            if tensor_parallel(layer.self_attn):
                hs.tp[i] = tensor_parallel(layer.self_attn)
            if "o_proj" in points:
                attn = layer.self_attn
                hs.n_heads[i] = head_shape(attn, local=True)[0]
                _swap(attn.o_proj, "o_proj", hs, i)
                installed.append(attn.o_proj)
            for point, mod in zip(("attn_writer", "mlp_writer"), writers(layer)):
                if point in points:
                    _swap(mod, point.split("_")[0], hs, i)
                    installed.append(mod)
            if "cache" in points:
                if caches is None:
                    raise MlxInterpError("k/v sites need mlx_interp's forward driver (run/generate), which owns the KV cache")
                _swap(caches[i], "cache", hs, i)
                installed.append(caches[i])
        yield hs
    finally:
        for m in installed:
            _unswap(m)
