"""The one mechanism behind capture, steering, ablation and patching: hooked layers.

We never edit mlx-lm or re-implement an architecture. Each decoder layer (and, when asked,
each attention output projection ``self_attn.o_proj`` and each module that writes into the
residual stream inside a layer, see ``model_parts.writers``) gets its class swapped for a subclass
whose ``__call__`` runs the original and then hands the result to the active ``HookSet``.
Class swap keeps parameter paths, attributes (``use_sliding``, ``is_sliding``...) and
``isinstance`` unchanged; removing the hook swaps the class back, so the model is restored
exactly. With no intervention the original output is returned untouched (bit-identical).

Positions: the forward driver (``trace.py``/``generate.py``) tells the hooks, through a
``Context``, the prompt lengths, the left padding of each row and the column offset of the
current call; hooks compute prompt-relative positions on the host (numpy), so position
rules behave the same in a full pass, in prefill and in every KV-cached decode step.

Replay (``trace.run(resume=(base, k))``): the hooked blocks below k return at once, block k-1 with the
residual captured in an earlier pass, so a layer sweep does not recompute the unchanged lower blocks.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterable

import mlx.core as mx
import numpy as np

from .errors import MlxInterpError
from .model_parts import head_shape, parts, writers

EMBED = "embed"  # site name of the residual stream entering layer 0 (the scaled embeddings)
ATTN_OUT, MLP_OUT = "attn_out", "mlp_out"  # sites ("attn_out", l) / ("mlp_out", l): what layer l's
# attention / MLP adds to the residual stream (see model_parts.writers)


@dataclass
class Context:
    """What the forward driver knows about the rows of the current batch."""

    prompt_lens: np.ndarray  # [B] real prompt tokens per row
    pads: np.ndarray  # [B] left padding per row
    start: int = 0  # padded column index of the first token of the current call

    def positions(self, L: int) -> np.ndarray:
        """Prompt-relative positions [B, L] of the columns of a call of length L."""
        return self.start + np.arange(L)[None, :] - self.pads[:, None]


@dataclass
class HookSet:
    """The interventions and captures active on one model during a ``hooked`` block."""

    interventions: list
    capture: Any = None  # capture.Capture store, or None
    ctx: Context | None = None
    n_heads: list = field(default_factory=list)
    skip: tuple | None = None  # (k, h): blocks < k are not run; block k-1 "returns" h (see trace.run(resume=))
    _pos: dict = field(default_factory=dict)  # layer -> positions of the current call

    def _mask(self, rule, pos):
        from .positions import mask

        if self.ctx is None:
            if rule != "all":
                raise MlxInterpError(
                    f"position rule {rule!r} needs mlx_interp's forward driver (trace/generate); "
                    "with plain mlx-lm calls only positions='all' is available"
                )
            return None
        return mask(rule, pos, self.ctx.prompt_lens)

    def _site(self, site, h: mx.array, pos) -> mx.array:
        for iv in self.interventions:
            if iv.applies(site):
                h = iv.apply(h, self._mask(iv.positions, pos))
        if self.capture is not None and self.capture.wants(site):
            self.capture.record(site, h, self._mask(self.capture.positions, pos))
        return h

    def layer_call(self, idx: int, layer, base, x, args, kwargs):
        pos = self.ctx.positions(x.shape[1]) if self.ctx is not None else None
        self._pos[idx] = pos
        if self.skip is not None and idx < self.skip[0]:  # replay: the next block only needs block k-1's output
            return self.skip[1] if idx == self.skip[0] - 1 else x
        if idx == 0:
            x = self._site(EMBED, x, pos)
        out = base(layer, x, *args, **kwargs)
        if isinstance(out, tuple):  # future architectures returning (h, extras)
            return (self._site(idx, out[0], pos),) + out[1:]
        return self._site(idx, out, pos)

    def writer_call(self, site, module, base, args, kwargs):
        out = base(module, *args, **kwargs)
        return self._site(site, out, self._pos.get(site[1]))

    def oproj_call(self, idx: int, proj, base, z):
        head_ivs = [iv for iv in self.interventions if iv.applies(("heads", idx))]
        cap = self.capture is not None and self.capture.wants(("heads", idx))
        if not head_ivs and not cap:
            return base(proj, z)
        B, L, HD = z.shape
        H = self.n_heads[idx]
        zh = z.reshape(B, L, H, HD // H)
        pos = self._pos.get(idx)
        for iv in head_ivs:
            zh = iv.apply(zh, self._mask(iv.positions, pos))
        if cap:
            self.capture.record(("heads", idx), zh, self._mask(self.capture.positions, pos))
        return base(proj, zh.reshape(B, L, HD))


_SUBCLASSES: dict[tuple[type, str], type] = {}


def _hooked_class(cls: type, kind: str) -> type:
    key = (cls, kind)
    if key not in _SUBCLASSES:
        if kind == "layer":

            def __call__(self, x, *args, **kwargs):
                hs, idx = self.__dict__["_mi_hook"]
                return hs.layer_call(idx, self, cls.__call__, x, args, kwargs)

        elif kind == "writer":

            def __call__(self, *args, **kwargs):
                hs, site = self.__dict__["_mi_hook"]
                return hs.writer_call(site, self, cls.__call__, args, kwargs)

        else:

            def __call__(self, z):
                hs, idx = self.__dict__["_mi_hook"]
                return hs.oproj_call(idx, self, cls.__call__, z)

        _SUBCLASSES[key] = type(f"Hooked{cls.__name__}", (cls,), {"__call__": __call__})
    return _SUBCLASSES[key]


def _swap(module, kind: str, hs: HookSet, key) -> None:
    if "_mi_hook" in module.__dict__:
        raise MlxInterpError("this model already has mlx_interp hooks installed; nest interventions in one block instead")
    object.__setattr__(module, "_mi_hook", (hs, key))
    module.__class__ = _hooked_class(type(module), kind)


def _unswap(module) -> None:
    module.__dict__.pop("_mi_hook", None)
    if type(module).__name__.startswith("Hooked"):
        module.__class__ = type(module).__mro__[1]


def sites_below(k: int) -> list:
    """Every hook site that lies before block ``k`` runs (skipped by a resumed pass)."""
    return [EMBED] + [s for i in range(k) for s in (i, ("heads", i), (ATTN_OUT, i), (MLP_OUT, i))]


@contextmanager
def hooked(model, interventions: Iterable = (), capture=None, ctx: Context | None = None, skip: tuple | None = None):
    """Install hooks for the duration of a ``with`` block; always removed on exit."""
    p = parts(model)
    ivs = list(interventions)
    want_heads = any(iv.needs_heads for iv in ivs) or (capture is not None and capture.needs_heads)
    want_writers = any(getattr(iv, "needs_writers", False) for iv in ivs) or bool(getattr(capture, "needs_writers", False))
    hs = HookSet(ivs, capture, ctx, skip=skip)
    installed = []
    try:
        for i, layer in enumerate(p.layers):
            _swap(layer, "layer", hs, i)
            installed.append(layer)
            if want_heads:
                attn = layer.self_attn
                hs.n_heads.append(head_shape(attn)[0])
                _swap(attn.o_proj, "oproj", hs, i)
                installed.append(attn.o_proj)
            if want_writers:
                for site, mod in zip((ATTN_OUT, MLP_OUT), writers(layer)):
                    _swap(mod, "writer", hs, (site, i))
                    installed.append(mod)
        yield hs
    finally:
        for m in installed:
            _unswap(m)
