"""The forward driver: tokenize, batch with left padding, run one hooked forward pass.

``run(lm, prompts, interventions=[...], capture=Capture(...))`` returns a ``Trace`` with
the next-token logits and whatever was captured. Batches of prompts of different lengths
are left-padded and run with mlx-lm's batch KV caches, whose masks hide the padding and
whose per-row offsets keep RoPE positions equal to an unpadded run; so a prompt's results
do not depend on the other prompts in its batch (tested).

The unembedding is applied only where logits are needed (``logits="last"`` by default):
for Gemma 3's 262k-token vocabulary it costs as much as the rest of the model.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Sequence, Union

import mlx.core as mx
import numpy as np
from mlx_lm.models.cache import BatchKVCache, BatchRotatingKVCache, KVCache, RotatingKVCache, make_prompt_cache

from .capture import Capture
from .errors import MlxInterpError
from .hooks import EMBED, Context, hooked, sites_below
from .interventions import bind_all
from .model_parts import parts
from .positions import validate

Prompts = Union[str, Sequence[str], Sequence[Sequence[int]]]


def format_prompt(lm, text: str, chat: bool | None = None) -> str:
    """Apply the chat template (user turn + generation prompt) for instruct models."""
    use_chat = lm.instruct if chat is None else chat
    tmpl = getattr(lm.tokenizer, "chat_template", None)
    if not use_chat or not tmpl:
        return text
    return lm.tokenizer.apply_chat_template(
        [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True
    )


def encode(lm, prompts: Prompts, chat: bool | None = False) -> list[list[int]]:
    """Token ids per prompt. Strings get BOS as the tokenizer decides; chat adds the template."""
    if isinstance(prompts, str):
        prompts = [prompts]
    prompts = list(prompts)
    if not prompts:
        raise MlxInterpError("prompt list is empty; give at least one prompt")
    out = []
    for i, p in enumerate(prompts):
        if isinstance(p, str):
            if not p.strip():
                raise MlxInterpError(f"prompt {i} is empty; every prompt needs at least one non-blank character")
            text = format_prompt(lm, p, chat)
            # chat templates already contain BOS where the model wants it
            ids = lm.tokenizer.encode(text, add_special_tokens=text == p)
        else:
            ids = [int(t) for t in p]
            if not ids:
                raise MlxInterpError(f"prompt {i} has no tokens")
        out.append(ids)
    return out


def make_caches(model, lens: Sequence[int]) -> tuple[list, list[int]]:
    """Prompt caches for a batch; batch caches with left padding when lengths differ."""
    n = max(lens)
    pads = [n - x for x in lens]
    base = make_prompt_cache(model)
    if not any(pads):
        return base, pads
    out = []
    for c in base:
        if isinstance(c, RotatingKVCache):
            out.append(BatchRotatingKVCache(c.max_size, pads))
        elif isinstance(c, KVCache):
            out.append(BatchKVCache(pads))
        else:
            raise MlxInterpError(f"padded batches are not supported for cache type {type(c).__name__}; run prompts one at a time")
    return out, pads


@dataclass
class Trace:
    """Result of one forward pass."""

    tokens: list[list[int]]
    prompt_lens: list[int]
    pads: list[int]
    logits: mx.array | None  # [B, V] at the last position, or [B, T, V] for logits="all"
    captured: dict = field(default_factory=dict)
    cache: Any = None

    @property
    def resid(self) -> dict:
        """Layer index -> captured residual (output of that layer)."""
        return {k: v for k, v in self.captured.items() if isinstance(k, int)}

    @property
    def embed(self):
        return self.captured.get(EMBED)

    @property
    def heads(self) -> dict:
        """Layer index -> captured per-head attention outputs ([B, H, d] for one position)."""
        return {k[1]: v for k, v in self.captured.items() if isinstance(k, tuple) and k[0] == "heads"}

    def sublayer(self, kind: str, layer: int):
        """What layer ``layer``'s attention (``kind="attn_out"``) or MLP (``"mlp_out"``) added."""
        return self.captured[(kind, layer)]

    def per_prompt(self, layer) -> list[mx.array]:
        """For positions="all" captures: each prompt's [n_tokens, D] without its padding."""
        a = self.captured[layer]
        return [a[b, p:] for b, p in enumerate(self.pads)]


def forward(lm, ids: list[list[int]], caches, ctx: Context | None, logits: str = "last"):
    """One forward call of the token block ``ids`` (already padded) through the hooked model."""
    p = parts(lm.model)
    x = mx.array(ids)
    h = p.inner(x, cache=caches)
    if ctx is not None:
        ctx.start += x.shape[1]
    if logits == "none":
        return None
    if logits == "last":
        return p.unembed(h[:, -1:, :])[:, 0, :]
    return p.unembed(h)


def run(
    lm,
    prompts: Prompts,
    *,
    interventions: Sequence = (),
    capture: Capture | None = None,
    logits: str = "last",
    chat: bool | None = False,
    keep_cache: bool = False,
    resume: tuple[Trace, int] | None = None,
) -> Trace:
    """Run prompts through the model once, with interventions and captures active.

    ``resume=(base, k)`` runs only blocks k..L-1, starting from the residual that entered block k in
    ``base`` (a run of the same prompts with ``Capture(layers=k-1, positions="all")``). A layer sweep
    (steer at layer k, for every k) then skips the k lower blocks of each pass, with results identical to full passes.
    Interventions and captures must all lie at block k or later.
    """
    if logits not in ("last", "all", "none"):
        raise MlxInterpError(f"logits={logits!r} is not valid; use 'last', 'all' or 'none'")
    toks = encode(lm, prompts, chat)
    lens = [len(t) for t in toks]
    ivs = bind_all(lm, interventions)
    for iv in ivs:
        validate(iv.positions, lens)
    if capture is not None:
        capture.bind(lm)
        validate(capture.positions, lens)
    skip = _resume(lm, resume, toks, ivs, capture, keep_cache)
    caches, pads = make_caches(lm.model, lens)
    pad_id = 0
    padded = [[pad_id] * pd + t for pd, t in zip(pads, toks)]
    ctx = Context(np.array(lens), np.array(pads))
    with hooked(lm.model, ivs, capture, ctx, skip):
        out = forward(lm, padded, caches, ctx, logits)
        captured = capture.result() if capture is not None else {}
    mx.eval(out if out is not None else [], list(_arrays(captured)))
    return Trace(toks, lens, pads, out, captured, caches if keep_cache else None)


def _resume(lm, resume, toks, ivs, capture, keep_cache) -> tuple[int, mx.array] | None:
    """Check a ``resume=(base, k)`` request; returns the hooks' (k, residual entering block k) or None."""
    if resume is None:
        return None
    base, k = resume
    if not isinstance(k, (int, np.integer)) or not 0 <= k < lm.n_layers:
        raise MlxInterpError(f"resume layer {k!r} is out of range; valid: 0..{lm.n_layers - 1}")
    if k == 0:
        return None  # nothing to skip
    if base.tokens != toks:
        raise MlxInterpError("resume trace was run on different prompts (or a different batch); resume needs the same token lists")
    h = base.captured.get(k - 1)
    B, T = len(toks), max(len(t) for t in toks)
    if h is None or h.ndim != 3 or tuple(h.shape[:2]) != (B, T):
        raise MlxInterpError(f"resume needs the residual out of layer {k - 1} at every position: run the base trace with "
                             f"Capture(layers=[..., {k - 1}, ...], positions='all')")
    if keep_cache:
        raise MlxInterpError("resume cannot keep a KV cache: the skipped blocks' caches are never filled")
    below = sites_below(k)
    bad = [type(iv).__name__ for iv in ivs if any(iv.applies(s) for s in below)]
    if capture is not None and any(capture.wants(s) for s in below):
        bad.append("Capture")
    if bad:
        raise MlxInterpError(f"{bad[0]} acts on a site before block {k}, which resume={k} skips; "
                             f"restrict it to layers >= {k} or run without resume")
    return k, h


def _arrays(d: dict):
    for v in d.values():
        if isinstance(v, mx.array):
            yield v


@contextmanager
def intervene(lm, *interventions):
    """Scope interventions around *any* forward of ``lm.model``, including plain mlx-lm calls.

    Outside mlx_interp's driver the hooks cannot know prompt positions, so only
    ``positions="all"`` interventions are accepted here (others raise a one-line error).
    Leaving the block removes the hooks and restores the model exactly.
    """
    ivs = bind_all(lm, interventions)
    for iv in ivs:
        if iv.positions != "all":
            raise MlxInterpError(
                f"{type(iv).__name__} with positions={iv.positions!r} needs mi.run/mi.generate; "
                "intervene() supports positions='all' only"
            )
    with hooked(lm.model, ivs, None, None):
        yield lm
