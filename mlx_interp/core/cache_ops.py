"""Cache transplants: move a ``PromptCache`` to other positions, splice one into another, place it inside a
prompt, replace a span, and matched-norm noise as the control.

Every operation returns a new ``PromptCache`` and never changes its inputs. Keys are stored after RoPE, i.e.
rotated for the positions they were computed at; ``move`` re-rotates them for a position shift with the layer's
own rope module (each stored key treated as a one-token sequence at offset ``delta``: RoPE's rotations compose,
R(p + delta) = R(delta) R(p)), so a cache computed at positions 0.. can be injected at the start, the middle or
the end of another prompt. Values carry no position and are unchanged. The equality "moved cache = the cache the
model computes at the new positions" is tested on every family, Gemma's sliding-window layers included.

    src = run(lm, ["Hello, my name is Lyra."], return_cache=True).cache
    pre = run(lm, ["Note: "], return_cache=True).cache
    both = place(lm, src, before=pre)            # the source's tokens now sit right after "Note: "
    generate(lm, ["What is my name?"], cache=both)
"""

from __future__ import annotations

from typing import Sequence

import mlx.core as mx
import numpy as np

from ..errors import MlxInterpError
from .kvcache import PromptCache, _build, _kv
from .parts import parts

KV = ("k", "v", "kv")


def _plain(cache: PromptCache, what: str) -> None:
    if any(cache.pads):
        raise MlxInterpError(f"{what} needs rows of equal length; this cache has left padding {cache.pads} "
                             "(capture the rows one at a time)")


def context_length(lm) -> int | None:
    """The model's position limit (``max_position_embeddings``), or None when its config does not say."""
    args = getattr(lm.model, "args", None)
    n = getattr(args, "max_position_embeddings", None)
    return int(n) if n else None


def _rotate(rope, k: mx.array, delta: int) -> mx.array:
    """Keys [B, H, T, d] rotated by ``delta`` positions: each stored key as a one-token sequence at offset delta."""
    B, H, T, d = k.shape
    x = k.astype(mx.float32).reshape(B * H * T, 1, d)
    return rope(x, offset=delta).reshape(B, H, T, d).astype(k.dtype)


def move(lm, cache: PromptCache, start: int, rotate: bool = True) -> PromptCache:
    """``cache`` with its keys re-rotated so that its first token sits at position ``start``. ``rotate=False``
    relabels the positions without re-rotating: the ablation that shows what the rotation is for."""
    cache.check(lm)
    _plain(cache, "moving a cache")
    if isinstance(start, bool) or not isinstance(start, (int, np.integer)) or start < 0:
        raise MlxInterpError(f"start={start!r} is not a valid position; use an int >= 0")
    n = len(cache.tokens[0])
    limit = context_length(lm)
    if limit is not None and start + n > limit:
        raise MlxInterpError(f"moving {n} cached tokens to position {start} ends at {start + n}, beyond "
                             f"{lm.name}'s context of {limit} positions")
    delta = int(start) - cache.start
    layers = []
    for i, c in enumerate(cache.layers):
        k, v = _kv(c)
        rope = getattr(parts(lm.model).layers[i].self_attn, "rope", None)
        if rope is None:
            raise MlxInterpError(f"layer {i} of {lm.name} has no rope module; its cache cannot be moved")
        layers.append(_build(c, _rotate(rope, k, delta) if delta and rotate else k, v, cache.pads))
    return PromptCache(layers, cache.model, [list(t) for t in cache.tokens], list(cache.pads), int(start))


def place(lm, cache: PromptCache, before: PromptCache | None = None, rotate: bool = True) -> PromptCache:
    """``cache`` moved to follow ``before`` (the target's own cache of the text that precedes it), joined to it;
    with no ``before`` it is moved to position 0 (a prefix). Continue with ``run``/``generate(cache=...)``."""
    if before is None:
        return move(lm, cache, 0, rotate)
    before.check(lm)
    _plain(before, "placing a cache")
    return before.concat(move(lm, cache, before.start + len(before.tokens[0]), rotate))


def replace_span(lm, target: PromptCache, source: PromptCache, at: int) -> PromptCache:
    """``target`` with its positions ``at .. at + len(source)`` replaced by ``source`` (moved there); the target's
    own entries before and after stay as they were computed."""
    target.check(lm)
    _plain(target, "replacing a span")
    n, m = len(target.tokens[0]), len(source.tokens[0])
    if isinstance(at, bool) or not isinstance(at, (int, np.integer)) or not 0 <= at or at + m > n:
        raise MlxInterpError(f"a span of {m} tokens at {at!r} does not fit a cache of {n} tokens; valid: 0..{n - m}")
    out = target.slice(positions=slice(0, at)) if at else None
    mid = move(lm, source, target.start + at)
    out = mid if out is None else out.concat(mid)
    return out if at + m == n else out.concat(target.slice(positions=slice(at + m, n)))


def _check_pair(target: PromptCache, source: PromptCache) -> None:
    if source.model != target.model:
        raise MlxInterpError(f"the source cache is from {source.model}, the target from {target.model}; caches do "
                             "not transfer between models or precisions without a projector")
    if (source.n_layers, source.n_rows, source.columns, source.start) != (target.n_layers, target.n_rows, target.columns, target.start):
        raise MlxInterpError(f"splicing needs caches of the same shape: source {source.n_layers} layers x {source.n_rows} rows x "
                             f"{source.columns} positions from {source.start}, target {target.n_layers} x {target.n_rows} x "
                             f"{target.columns} from {target.start} (move or slice one first)")


def splice(target: PromptCache, source: PromptCache, layers: Sequence[int] | range | None = None, kv: str = "kv",
           heads: Sequence[int] | None = None) -> PromptCache:
    """``target`` with the ``source``'s keys and/or values (``kv``: "k", "v" or "kv") in ``layers`` (default all)
    and ``heads`` (KV heads; default all); the target's own entries everywhere else. Both caches must cover the
    same positions (same model, rows and length)."""
    _check_pair(target, source)
    if kv not in KV:
        raise MlxInterpError(f"kv={kv!r} is not valid; use one of {', '.join(KV)}")
    idx = set(range(target.n_layers) if layers is None else [int(i) for i in layers])
    bad = sorted(i for i in idx if not 0 <= i < target.n_layers)
    if bad or not idx:
        raise MlxInterpError(f"layer {bad[0] if bad else '[]'} is not valid for splicing; the caches have layers 0..{target.n_layers - 1}")
    out = []
    for i, (ct, cs) in enumerate(zip(target.layers, source.layers)):
        kt, vt = _kv(ct)
        if i not in idx:
            out.append(_build(ct, kt, vt, target.pads))
            continue
        ks, vs = _kv(cs)
        if heads is None:
            mask = mx.array(True)
        else:
            H = kt.shape[1]
            hs = [int(h) for h in heads]
            if not hs or any(not 0 <= h < H for h in hs):
                raise MlxInterpError(f"heads={list(heads)} is not valid; layer {i} has KV heads 0..{H - 1}")
            mask = mx.array(np.isin(np.arange(H), hs))[None, :, None, None]
        k = mx.where(mask, ks, kt) if "k" in kv else kt
        v = mx.where(mask, vs, vt) if "v" in kv else vt
        out.append(_build(ct, k, v, target.pads))
    return PromptCache(out, target.model, [list(t) for t in target.tokens], list(target.pads), target.start)


def noise_like(cache: PromptCache, seed: int = 0) -> PromptCache:
    """Gaussian noise with every stored key and value vector's norm (per layer, head, row and position): the
    matched-norm control for a transplant. Keys carry no rotation structure, values no content."""
    if not cache.layers:
        raise MlxInterpError("noise was requested for an empty cache (no layers)")
    rng = np.random.default_rng(seed)
    out = []
    for c in cache.layers:
        k, v = _kv(c)
        pair = []
        for a in (k, v):
            x = np.array(a.astype(mx.float32))
            z = rng.standard_normal(x.shape).astype(np.float32)
            z *= np.linalg.norm(x, axis=-1, keepdims=True) / np.maximum(np.linalg.norm(z, axis=-1, keepdims=True), 1e-12)
            pair.append(mx.array(z).astype(a.dtype))
        out.append(_build(c, pair[0], pair[1], cache.pads))
    return PromptCache(out, cache.model, [list(t) for t in cache.tokens], list(cache.pads), cache.start)
