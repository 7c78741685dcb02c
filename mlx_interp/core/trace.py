"""The forward driver: one hooked forward pass over a batch of prompts.

``run(lm, prompts, interventions=[...], capture=Capture(...))`` returns a ``Trace`` with the
next-token logits and whatever was captured, read by site: ``tr["resid_post", 12]``. Prompts go
through the one batching path (``core.batching``): chunks of ``batch_size`` rows, left-padded,
results in the caller's order. ``cache=`` continues from a ``PromptCache`` and
``return_cache=True`` hands the pass's own cache back (``core.kvcache``). ``resume=(base, k)``
runs only blocks k..L-1 from the ``resid_pre k`` captured in ``base``; it combines with ``cache=``
(the skipped blocks' caches are not extended, so such a pass cannot return its cache).

The unembedding is applied only where logits are needed (``logits="last"`` by default): for
Gemma 3's 262k-token vocabulary it costs as much as the rest of the model.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Sequence

import mlx.core as mx
import numpy as np

from ..errors import MlxInterpError
from ..runtime.parallel import from_host, to_host
from .batching import (DEFAULT_BATCH_SIZE, DEFAULT_CHAT, MAX_PADDING, Prompts, distribute, encode, gather_chunks, left_pad,
                       make_caches, plan, shared_errors)
from .capture import BoundCapture, bind_captures
from .hooks import Context, hooked
from ..runs import journal, work
from .interventions import bind_all, flatten
from .kvcache import PromptCache, _build, _kv
from .parts import parts
from .positions import validate
from .sites import KINDS, before

#: ``logits=``: last position [B, V]; every position [B, T, V]; none; or "tokens": log p(token t | tokens < t)
#: at every position [B, T] (column 0 and padding hold 0), which scores text without keeping [T, V] per row
LOGITS = ("last", "all", "none", "tokens")


@dataclass
class Trace:
    """Result of one forward pass over a batch (rows in the caller's order)."""

    tokens: list[list[int]]  # per row, the whole prompt (a continued cache's tokens first)
    prompt_lens: list[int]
    pads: list[int]  # left padding of each row in the padded layout of the arrays below
    logits: mx.array | None  # [B, V] at the last position, or [B, T, V] for logits="all"
    captured: dict = field(default_factory=dict)  # (kind, layer) -> array
    cache: PromptCache | None = None
    start: int = 0  # padded column of the first token this pass computed (>0 when it continued a cache)

    def __getitem__(self, key):
        """``tr["resid_post", 12]`` -> that capture; ``tr["head"]`` -> {layer: capture} for one kind."""
        if isinstance(key, str):
            if key not in KINDS:
                raise MlxInterpError(f"unknown site kind {key!r}; valid: {', '.join(KINDS)}")
            return {l: a for (k, l), a in sorted(self.captured.items()) if k == key}
        if key not in self.captured:
            have = ", ".join(f"{k}[{l}]" for k, l in sorted(self.captured)) or "nothing"
            raise MlxInterpError(f"this trace has no capture at {key!r}; it captured {have}")
        return self.captured[key]

    def sites(self) -> list:
        return sorted(self.captured)

    def per_prompt(self, kind: str, layer: int) -> list[mx.array]:
        """For positions="all" captures: each prompt's rows without padding ([n_tokens, ...])."""
        a = self[kind, layer]
        return [a[b, max(0, p - self.start):] for b, p in enumerate(self.pads)]


def forward(lm, ids, caches, ctx: Context | None, logits: str = "last", first_block: int = 0):
    """One forward call of the token block ``ids`` (already padded) through the (hooked) model; ``first_block``: the
    block a resumed pass starts at (the hooks skip the ones below it), for the work count."""
    p = parts(lm.model)
    x = ids if isinstance(ids, mx.array) else mx.array(ids)
    h = p.inner(x, cache=caches)
    work.count(x.shape[0], x.shape[1], step=ctx is not None and ctx.start > 0 and x.shape[1] == 1,
               blocks=(lm.n_layers - first_block) / lm.n_layers)
    if ctx is not None:
        ctx.start += x.shape[1]
    if logits == "none":
        return None
    if logits == "last":
        return p.unembed(h[:, -1:, :])[:, 0, :]
    full = p.unembed(h)
    if logits == "all":
        return full
    lp = (full - mx.logsumexp(full, axis=-1, keepdims=True)).astype(mx.float32)
    nxt = mx.take_along_axis(lp[:, :-1], x[:, 1:, None], axis=-1)[..., 0]
    return mx.concatenate([mx.zeros((x.shape[0], 1), dtype=nxt.dtype), nxt], axis=1)


def continue_from(lm, cache: PromptCache | None, toks: list[list[int]]) -> PromptCache | None:
    """A private copy of ``cache`` ready to continue with ``toks`` (one row, or one per prompt); checks."""
    if cache is None:
        return None
    if not isinstance(cache, PromptCache):
        raise MlxInterpError(f"cache= takes a PromptCache (run(..., return_cache=True).cache); got {type(cache).__name__}")
    cache.check(lm)
    if cache.start != 0:
        raise MlxInterpError(f"this cache starts at position {cache.start} (a slice): its keys are rotated for positions "
                             f"{cache.start}.., so new tokens cannot follow it; continue from a cache that starts at 0 "
                             "(cache_ops.place puts it after a prefix, or moves it to 0)")
    if len({len(t) for t in toks}) > 1:
        raise MlxInterpError(f"continuing a cache needs new prompts of equal length; got {sorted({len(t) for t in toks})} tokens")
    c = cache.copy()
    if c.n_rows == len(toks):
        return c
    if c.n_rows != 1:
        raise MlxInterpError(f"this cache holds {c.n_rows} rows but {len(toks)} prompts were given; give one prompt per row "
                             "(or a one-row cache, which is shared by every prompt)")
    n = len(toks)
    layers = []
    for layer in c.layers:
        k, v = _kv(layer)
        layers.append(_build(layer, mx.repeat(k, n, axis=0), mx.repeat(v, n, axis=0), [0] * n))
    return PromptCache(layers, c.model, [list(c.tokens[0]) for _ in range(n)], [0] * n, 0)


def run(
    lm,
    prompts: Prompts,
    *,
    interventions: Sequence = (),
    capture=None,
    logits: str = "last",
    chat: bool = DEFAULT_CHAT,
    batch_size: int | None = DEFAULT_BATCH_SIZE,
    cache: PromptCache | None = None,
    return_cache: bool = False,
    resume: tuple[Trace, int] | None = None,
) -> Trace:
    """Run prompts through the model once, with interventions and captures active.

    ``capture``: a ``Capture`` or a list of them. ``cache``: continue from a ``PromptCache`` (new
    prompts are token continuations: no BOS is added). ``return_cache``: keep this pass's cache
    in ``Trace.cache`` (both need the prompts in one chunk). ``resume=(base, k)``: start at block k
    from ``base["resid_pre", k]`` (a run of the same prompts capturing it at every position); every
    intervention and capture must lie at layer k or later; with ``cache=``, ``base`` is a run continuing the
    same cache with the same tokens (one row of it may serve every row). Results equal full passes.
    """
    if logits not in LOGITS:
        raise MlxInterpError(f"logits={logits!r} is not valid; use {', '.join(map(repr, LOGITS))}")
    toks = encode(lm, prompts, chat, special=cache is None)
    j, key = journal.active(), None
    if j is not None and cache is None and resume is None and not return_cache:  # a resumable study: replay or record
        key = journal.fingerprint("run", lm.name, toks, flatten(interventions), capture, logits, batch_size)
        hit = j.get(key)
        if hit is not None:
            return _from_host(hit)
    meter = work.Meter()
    tr = _run(lm, toks, interventions, capture, logits, batch_size, cache, return_cache, resume)
    if key is not None:
        j.put(key, _to_host(tr), meter)  # _to_host evaluates the pass, so its cost includes it
    return tr


def _to_host(tr: Trace) -> dict:
    return {"tokens": tr.tokens, "prompt_lens": tr.prompt_lens, "pads": tr.pads, "logits": to_host(tr.logits),
            "captured": {k: to_host(a) for k, a in tr.captured.items()}, "start": tr.start}


def _from_host(d: dict) -> Trace:
    return Trace(d["tokens"], d["prompt_lens"], d["pads"], from_host(d["logits"]),
                 {k: from_host(a) for k, a in d["captured"].items()}, None, d["start"])


def _run(lm, toks, interventions, capture, logits, batch_size, cache, return_cache, resume) -> Trace:
    if getattr(lm, "tensor_parallel", 1) > 1 and (cache is not None or return_cache):
        raise MlxInterpError("KV caches as values are not supported on a tensor-parallel model yet (each rank holds only "
                             "its own KV heads); run without cache= / return_cache=")
    ivs = bind_all(lm, interventions)
    caps = bind_captures(lm, capture)
    prefix = continue_from(lm, cache, toks)
    full = [list(p) + t for p, t in zip(prefix.tokens, toks)] if prefix else toks
    lens = [len(t) for t in full]
    for x in ivs + caps:
        validate(x.positions, lens)
    for iv in ivs:
        iv.check_batch(len(toks))
    one = prefix is not None or return_cache  # a cache is one chunk's: keep every prompt together if batch_size allows
    chunks = plan([len(t) for t in toks], batch_size, max_padding=None if one else MAX_PADDING)
    if one and len(chunks) > 1:
        raise MlxInterpError(f"{'cache=' if prefix is not None else 'return_cache'} needs every prompt in one chunk; "
                             f"{len(toks)} prompts > batch_size={batch_size}: pass batch_size=None")
    base = _check_resume(lm, resume, full, ivs, caps, return_cache, len(toks[0]) if prefix is not None else max(lens))
    T = max(lens) if prefix is None else prefix.columns + len(toks[0])
    chunks, mine, shared = distribute(chunks, [len(t) for t in toks], batch_size,
                                      keep_local=prefix is not None or return_cache or getattr(lm, "tensor_parallel", 1) > 1)
    results = {}
    with shared_errors(shared, len(chunks), "a forward pass"):
        for ci in mine:
            idx = chunks[ci]
            sub_ivs = [b for b in (iv.for_rows(idx) for iv in ivs) if b is not None]
            sub_caps = [c.fresh() for c in caps]
            skip = None
            if base is not None:
                k, h = base
                if h.shape[0] == 1 and len(toks) > 1:  # a one-row base shared by every row
                    h = mx.broadcast_to(h, (len(toks),) + tuple(h.shape[1:]))
                Tc = h.shape[1] if prefix is not None else max(lens[i] for i in idx)
                skip = (k, h[mx.array(idx)][:, h.shape[1] - Tc:])
            results[ci] = _chunk(lm, [toks[i] for i in idx], sub_ivs, sub_caps, logits, prefix, skip)
    if shared:  # data parallel: every rank gets every chunk's logits and captures
        local = {ci: (to_host(r[0]), {k: to_host(a) for k, a in r[1].items()}) for ci, r in results.items()}
        results = {ci: (from_host(o), {k: from_host(a) for k, a in c.items()}, None, None)
                   for ci, (o, c) in gather_chunks(local, len(chunks), "a forward pass").items()}
    results = [results[ci] for ci in range(len(chunks))]
    out, captured = _combine(results, chunks, caps, logits, T)
    pads = [T - n for n in lens] if prefix is None else list(prefix.pads)
    start = 0 if prefix is None else prefix.columns
    kept = None
    if return_cache:
        layers, cpads = results[0][2], results[0][3]
        kept = PromptCache(layers, lm.name, full, list(cpads), 0)
    return Trace(full, lens, pads, out, captured, kept, start)


def start_chunk(lm, toks, prefix: PromptCache | None):
    """(padded token block, left padding, per-layer caches, hook Context) for one chunk, fresh or continuing ``prefix``."""
    if prefix is None:
        padded, pads = left_pad(toks)
        ctx = Context(np.array([len(t) for t in toks]), np.array(pads), 0)
        return padded, pads, make_caches(lm.model, pads), ctx
    ctx = Context(np.array([len(p) + len(t) for p, t in zip(prefix.tokens, toks)]), np.array(prefix.pads), prefix.columns)
    return toks, prefix.pads, prefix.layers, ctx


def _chunk(lm, toks, ivs, caps: list[BoundCapture], logits: str, prefix: PromptCache | None, skip):
    """One forward pass of one chunk; returns (logits, {site: array}, caches, pads)."""
    padded, pads, caches, ctx = start_chunk(lm, toks, prefix)
    with hooked(lm.model, ivs, caps, ctx, skip, caches):
        out = forward(lm, padded, caches, ctx, logits, skip[0] if skip is not None else 0)
    captured = {}
    for c in caps:
        captured.update(c.result())
    mx.eval(out if out is not None else [], list(captured.values()))
    return out, captured, caches, pads


def _left_pad_to(a: mx.array, T: int) -> mx.array:
    if a.shape[1] == T:
        return a
    return mx.concatenate([mx.zeros((a.shape[0], T - a.shape[1]) + a.shape[2:], dtype=a.dtype), a], axis=1)


def _combine(results, chunks, caps: list[BoundCapture], logits: str, T: int):
    """Chunk results back in the caller's order (padded-layout arrays left-padded to the longest prompt)."""
    if len(chunks) == 1:
        return results[0][0], results[0][1]
    order = [i for idx in chunks for i in idx]
    inv = mx.array(np.argsort(order))
    out = None
    if logits != "none":
        parts_ = [r[0] if logits == "last" else _left_pad_to(r[0], T) for r in results]  # "all", "tokens": [b, Tc, ...]
        out = mx.concatenate(parts_, axis=0)[inv]
    all_sites = {s for c in caps if c.mode == "all" for s in c.sites}
    captured = {}
    for site in results[0][1]:
        arrs = [r[1][site] for r in results]
        if site in all_sites:
            arrs = [_left_pad_to(a, T) for a in arrs]
        captured[site] = mx.concatenate(arrs, axis=0)[inv]
    mx.eval(out if out is not None else [], list(captured.values()))
    return out, captured


def _check_resume(lm, resume, full, ivs, caps, keep_cache: bool, columns: int) -> tuple[int, mx.array] | None:
    """Check a ``resume=(base, k)`` request; returns (k, base's resid_pre k) or None.

    ``full``: each row's whole token list (a continued cache's tokens first); ``columns``: the columns this pass
    computes. A one-row ``base`` run on the same tokens serves every row (as a one-row cache does)."""
    if resume is None:
        return None
    base, k = resume
    if not isinstance(k, (int, np.integer)) or not 0 <= k < lm.n_layers:
        raise MlxInterpError(f"resume layer {k!r} is out of range; valid: 0..{lm.n_layers - 1}")
    if k == 0:
        return None  # nothing to skip
    if keep_cache:
        raise MlxInterpError("resume cannot keep a KV cache (return_cache=True): the skipped blocks' caches are never filled")
    shared = len(base.tokens) == 1 and len(full) > 1
    if (base.tokens != full) and not (shared and all(t == base.tokens[0] for t in full)):
        raise MlxInterpError("resume trace was run on different prompts; resume needs the same token lists "
                             "(a continued cache's tokens included)")
    h = base.captured.get(("resid_pre", k))
    B = 1 if shared else len(full)
    if h is None or h.ndim != 3 or tuple(h.shape[:2]) != (B, columns):
        raise MlxInterpError(f"resume needs resid_pre {k} at every position: run the base trace with "
                             f"Capture('resid_pre', layers=[..., {k}, ...], positions='all')")
    bad = [type(iv).__name__ for iv in ivs if any(before(s, k) for s in iv.sites)]
    bad += ["Capture" for c in caps if any(before(s, k) for s in c.sites)]
    if bad:
        raise MlxInterpError(f"{bad[0]} acts on a site before block {k}, which resume={k} skips; "
                             f"restrict it to layers >= {k} or run without resume")
    return k, h


@contextmanager
def intervene(lm, *interventions):
    """Scope interventions around *any* forward of ``lm.model``, including plain mlx-lm calls.

    Outside mlx_interp's driver the hooks cannot know prompt positions or own the KV cache, so
    only ``positions="all"`` and sites other than ``k``/``v`` are accepted here.
    Leaving the block removes the hooks and restores the model exactly.
    """
    ivs = bind_all(lm, interventions)
    for iv in ivs:
        if iv.positions != "all" or iv._rows is not None:
            raise MlxInterpError(f"{type(iv).__name__} with positions={iv.positions!r}, rows={iv.rows!r} needs mi.run/mi.generate; "
                                 "intervene() supports positions='all' on every row only")
        if any(KINDS[k].hook == "cache" for k, _ in iv.sites):
            raise MlxInterpError("k/v sites need mi.run/mi.generate, which own the KV cache; intervene() cannot reach it")
    with hooked(lm.model, ivs, (), None):
        yield lm
