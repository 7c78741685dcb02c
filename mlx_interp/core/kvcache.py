"""KV caches as values: keep a pass's cache, hand it to another pass, save it, slice it, join it.

``run(lm, prompts, return_cache=True).cache`` is a ``PromptCache``: mlx-lm's per-layer cache
objects plus what identifies them (the model's ``name``, which includes its precision; the token
ids each row holds; the left padding; the position of the first stored token). Passing it back,
``run(lm, more, cache=c)`` or ``generate(lm, more, cache=c)``, continues exactly where it stopped:
the result equals one pass over the cached and the new tokens (tested). The driver always works
on a deep copy, so a ``PromptCache`` is never changed by being used.

Positions: keys are stored after RoPE, rotated for the positions they were computed at.
``start`` is the position of the first stored token (0 unless the cache was sliced). A cache
with ``start != 0`` has no tokens 0..start-1, so continuing from it would put the new tokens at
the wrong distance from the stored keys; the driver refuses it. ``core.cache_ops`` re-rotates keys for other
positions (``move``) and builds transplants from these values (``place``, ``splice``, ``replace_span``).
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import mlx.core as mx
from mlx_lm.models.cache import (BatchKVCache, BatchRotatingKVCache, KVCache, RotatingKVCache, load_prompt_cache,
                                 save_prompt_cache)

from ..errors import MlxInterpError

FORMAT = "mlx-interp-prompt-cache-1"


def _kv(c) -> tuple[mx.array, mx.array]:
    """Keys and values [B, H, T, d] of one layer in temporal order (T = columns, padding included)."""
    if isinstance(c, BatchRotatingKVCache):
        if c.rotated or c._offset > c.max_size:
            raise MlxInterpError(f"a sliding-window cache holding {c._offset} tokens (window {c.max_size}) has wrapped; "
                                 "it cannot be sliced or joined")
        n = c._idx
    elif isinstance(c, RotatingKVCache):
        if c.offset > c.max_size:
            raise MlxInterpError(f"a sliding-window cache holding {c.offset} tokens (window {c.max_size}) has wrapped; "
                                 "it cannot be sliced or joined")
        n = c._idx
    elif isinstance(c, BatchKVCache):
        n = c._idx
    elif isinstance(c, KVCache):
        n = c.offset
    else:
        raise MlxInterpError(f"cache type {type(c).__name__} is not supported here; supported: KVCache, RotatingKVCache "
                             "and their batch versions")
    if c.keys is None:
        raise MlxInterpError("the cache is empty")
    return c.keys[..., :n, :], c.values[..., :n, :]


def _seen(c) -> int:
    """Columns a layer's cache has taken in (sliding-window caches may keep fewer)."""
    if isinstance(c, BatchRotatingKVCache):
        return int(c._offset)
    if isinstance(c, BatchKVCache):
        return int(c._idx)
    return int(c.offset)


def _build(like, keys: mx.array, values: mx.array, pads: Sequence[int]):
    """A cache of ``like``'s family holding ``keys``/``values`` ([B, H, T, d], left-padded by ``pads``)."""
    T = keys.shape[2]
    rotating = isinstance(like, (RotatingKVCache, BatchRotatingKVCache))
    if rotating and T > like.max_size:
        raise MlxInterpError(f"{T} tokens do not fit a sliding-window cache of {like.max_size}")
    if any(pads):
        c = BatchRotatingKVCache(like.max_size, list(pads)) if rotating else BatchKVCache(list(pads))
        c.keys, c.values, c._idx = keys, values, T
        c.offset = c.offset + T
        if rotating:
            c._offset = T
        return c
    c = RotatingKVCache(like.max_size, keep=like.keep if isinstance(like, RotatingKVCache) else 0) if rotating else KVCache()
    c.keys, c.values, c.offset = keys, values, T
    if rotating:
        c._idx = T
    return c


@dataclass
class PromptCache:
    """One KV cache per decoder layer, with the identity and tokens it belongs to."""

    layers: list
    model: str  # LoadedModel.name: alias@precision
    tokens: list[list[int]]  # per row, the token ids the cache holds (no padding)
    pads: list[int] = field(default_factory=list)  # left padding columns per row
    start: int = 0  # position of the first stored token

    def __post_init__(self):
        if not self.pads:
            self.pads = [0] * len(self.tokens)

    @property
    def n_rows(self) -> int:
        return len(self.tokens)

    @property
    def n_layers(self) -> int:
        return len(self.layers)

    @property
    def columns(self) -> int:
        """Stored columns per row (padding included)."""
        return self.pads[0] + len(self.tokens[0])

    def check(self, lm) -> None:
        """One-line error unless this cache belongs to ``lm`` (same model and precision, every layer)."""
        if self.model != lm.name:
            raise MlxInterpError(f"this KV cache is from {self.model}, not {lm.name}; caches do not transfer between "
                                 "models or precisions")
        if self.n_layers != lm.n_layers:
            raise MlxInterpError(f"this KV cache holds {self.n_layers} layers but {lm.name} has {lm.n_layers}; "
                                 "a layer slice is not a cache a model can continue from")

    def copy(self) -> "PromptCache":
        """A deep copy: using or changing it never touches this one."""
        return PromptCache([copy.deepcopy(c) for c in self.layers], self.model, [list(t) for t in self.tokens],
                           list(self.pads), self.start)

    # ---- slicing and joining ----

    def slice(self, layers: Sequence[int] | range | None = None, positions: slice | None = None) -> "PromptCache":
        """A new cache with some layers and/or a span of positions (``slice(a, b)``, prompt-relative).

        A position slice keeps the keys rotated for their original positions and sets ``start``;
        it needs rows of equal length (no padding).
        """
        idx = list(range(self.n_layers)) if layers is None else list(layers)
        bad = [i for i in idx if not 0 <= i < self.n_layers]
        if bad or not idx:
            raise MlxInterpError(f"cache layer {bad[0] if bad else '[]'} is not valid; this cache has layers 0..{self.n_layers - 1}")
        if positions is None:
            return PromptCache([copy.deepcopy(self.layers[i]) for i in idx], self.model,
                               [list(t) for t in self.tokens], list(self.pads), self.start)
        if not isinstance(positions, slice) or positions.step not in (None, 1):
            raise MlxInterpError(f"positions={positions!r} is not valid for a cache slice; use slice(a, b)")
        if any(self.pads):
            raise MlxInterpError("slicing positions needs rows of equal length; this cache has left padding "
                                 f"{self.pads} (run the rows one at a time)")
        n = len(self.tokens[0])
        a, b, _ = positions.indices(n)
        if a >= b:
            raise MlxInterpError(f"position slice {positions.start}:{positions.stop} is empty for a cache of {n} tokens")
        out = []
        for i in idx:
            k, v = _kv(self.layers[i])
            out.append(_build(self.layers[i], k[..., a:b, :], v[..., a:b, :], [0] * self.n_rows))
        return PromptCache(out, self.model, [t[a:b] for t in self.tokens], [0] * self.n_rows, self.start + a)

    def concat(self, other: "PromptCache") -> "PromptCache":
        """This cache followed by ``other`` along positions; ``other`` must start where this one ends."""
        if other.model != self.model:
            raise MlxInterpError(f"cannot join caches of {self.model} and {other.model}")
        if other.n_layers != self.n_layers or other.n_rows != self.n_rows:
            raise MlxInterpError(f"cannot join caches of {self.n_layers} layers x {self.n_rows} rows and "
                                 f"{other.n_layers} layers x {other.n_rows} rows")
        if any(self.pads) or any(other.pads):
            raise MlxInterpError("joining caches needs rows of equal length (no left padding)")
        end = self.start + len(self.tokens[0])
        if other.start != end:
            raise MlxInterpError(f"the second cache starts at position {other.start} but the first ends at {end}; "
                                 "joined caches must be contiguous")
        out = []
        for c1, c2 in zip(self.layers, other.layers):
            (k1, v1), (k2, v2) = _kv(c1), _kv(c2)
            out.append(_build(c1, mx.concatenate([k1, k2], axis=2), mx.concatenate([v1, v2], axis=2), [0] * self.n_rows))
        return PromptCache(out, self.model, [a + b for a, b in zip(self.tokens, other.tokens)], [0] * self.n_rows, self.start)

    @classmethod
    def stack(cls, caches: Sequence["PromptCache"]) -> "PromptCache":
        """Every row of several caches as one batch, each left-padded to the longest, so rows that continue different
        caches share every forward pass (a study's transplant conditions decode in one call, not one call each).

        Positions do not move: a padded row's keys keep the rotation of its own positions, and the batch cache's
        per-row offsets continue each row where its cache stopped (tested equal to continuing each cache alone).
        """
        caches = list(caches)
        if not caches or not all(isinstance(c, PromptCache) for c in caches):
            raise MlxInterpError("PromptCache.stack takes a non-empty list of PromptCache values")
        first = caches[0]
        for c in caches[1:]:
            if c.model != first.model or c.n_layers != first.n_layers:
                raise MlxInterpError(f"cannot stack caches of {first.model} ({first.n_layers} layers) and {c.model} "
                                     f"({c.n_layers} layers)")
        starts = sorted({c.start for c in caches})
        if starts != [0]:
            raise MlxInterpError(f"stacking needs caches that start at position 0; got starts {starts} (a position "
                                 "slice cannot be continued: cache_ops.place moves it first)")
        T = max(c.columns for c in caches)
        pads = [p + T - c.columns for c in caches for p in c.pads]
        layers = []
        for i in range(first.n_layers):
            ks, vs = [], []
            for c in caches:
                k, v = _kv(c.layers[i])
                if k.shape[2] < T:
                    k = mx.concatenate([mx.zeros(k.shape[:2] + (T - k.shape[2],) + k.shape[3:], k.dtype), k], axis=2)
                    v = mx.concatenate([mx.zeros(v.shape[:2] + (T - v.shape[2],) + v.shape[3:], v.dtype), v], axis=2)
                ks.append(k)
                vs.append(v)
            layers.append(_build(first.layers[i], mx.concatenate(ks, axis=0), mx.concatenate(vs, axis=0), pads))
        return cls(layers, first.model, [list(t) for c in caches for t in c.tokens], pads, 0)

    # ---- files ----

    def save(self, path: str | Path) -> Path:
        """Write the cache as ``.safetensors`` with its identity in the metadata (atomic)."""
        path = Path(path)
        if path.suffix != ".safetensors":
            raise MlxInterpError(f"cache file {str(path)!r} must end in .safetensors")
        meta = {"format": FORMAT, "model": self.model, "tokens": json.dumps(self.tokens), "pads": json.dumps(self.pads),
                "start": str(self.start), "n_layers": str(self.n_layers)}
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".tmp-{path.name}")
        save_prompt_cache(str(tmp), self.layers, meta)
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path, lm=None) -> "PromptCache":
        """Read a cache written by ``save``; checks it against ``lm`` when given."""
        path = Path(path)
        if not path.is_file():
            raise MlxInterpError(f"cache file {str(path)!r} does not exist")
        try:
            layers, meta = load_prompt_cache(str(path), return_metadata=True)
        except Exception as e:
            raise MlxInterpError(f"{path.name} is not a readable KV-cache file ({type(e).__name__}: {str(e)[:80]})") from None
        if meta.get("format") != FORMAT:
            raise MlxInterpError(f"{path.name} is not an mlx-interp prompt cache (format {meta.get('format')!r}, "
                                 f"expected {FORMAT!r})")
        try:
            c = cls(layers, meta["model"], json.loads(meta["tokens"]), json.loads(meta["pads"]), int(meta["start"]))
        except (KeyError, ValueError) as e:
            raise MlxInterpError(f"{path.name} has corrupt cache metadata ({e})") from None
        c.validate(path.name)
        if lm is not None:
            c.check(lm)
        return c

    def validate(self, what: str = "cache") -> None:
        """One-line error if the stored arrays do not hold the tokens the metadata claims."""
        if len(self.pads) != self.n_rows or len({p + len(t) for p, t in zip(self.pads, self.tokens)}) != 1:
            raise MlxInterpError(f"{what}: {self.n_rows} rows with padding {self.pads} and lengths "
                                 f"{[len(t) for t in self.tokens]} do not line up")
        for i, c in enumerate(self.layers):
            if getattr(c, "keys", None) is None:
                raise MlxInterpError(f"{what}: layer {i} is empty")
            seen = _seen(c)
            if c.keys.shape[0] != self.n_rows or seen != self.columns:
                raise MlxInterpError(f"{what}: layer {i} holds {c.keys.shape[0]} rows x {seen} positions but the cache "
                                     f"claims {self.n_rows} x {self.columns}")
