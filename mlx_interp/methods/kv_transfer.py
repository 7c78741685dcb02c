"""KV-cache transfer (the study's exp14): one source text's cache transplanted into the context a question reads,
under every condition the study asks about, each beside its controls.

A *condition* is the context the question continues: a ``PromptCache`` (a transplant) or a token list (text run
in one pass). ``conditions`` builds all of them for one source:

- controls: ``none`` (the question alone), ``text`` (source + question as one text), ``same_cache`` (the source's
  own cache, continued: must reproduce ``text``, an identity check), ``noise`` (matched-norm noise in place of
  the source's cache), ``other`` (the cache of an unrelated source), ``neutral`` (a neutral text of the source's
  length: the target that splices start from);
- position: the source's cache placed at the ``start``, ``middle`` or ``end`` of a neutral filler, computed
  alone and moved (``pos_*``), beside the same tokens as one text (``pos_*_text``) and, for middle and end, the
  cache moved without re-rotating its keys (``pos_*_unrotated``);
- which parts carry it: the source's K and V spliced into the neutral cache in one window of layers
  (``layers_a_b``), keys only or values only in every layer (``k_only``, ``v_only``), one KV head in every
  layer (``head_h``).

The question follows as chat-templated tokens for instruct models and as ``\\nQuestion: ...\\nAnswer:`` for base
models, identical in every condition; the source keeps its BOS (so does its text twin).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..core.batching import encode
from ..core.cache_ops import noise_like, place, splice
from ..core.kvcache import PromptCache
from ..core.trace import run
from ..errors import MlxInterpError

FILLER = ("The weather was mild, and the streets were quiet as people walked slowly to work in the early morning "
          "light. A few shops opened their doors, a bus passed by the park, and the bakery on the corner put fresh "
          "bread in the window. Nothing unusual happened that day, and the town went about its ordinary business. ")


def question_ids(lm, question: str) -> list[int]:
    """The question's tokens as they follow a context (no BOS): the chat turn for instruct models."""
    if lm.instruct:
        return encode(lm, [question], chat=True, special=False)[0]
    return encode(lm, ["\nQuestion: " + question + "\nAnswer:"], special=False)[0]


def alone_ids(lm, question: str) -> list[int]:
    """The question with nothing before it (the ``none`` control), BOS as the tokenizer does."""
    if lm.instruct:
        return encode(lm, [question], chat=True)[0]
    return encode(lm, ["Question: " + question + "\nAnswer:"])[0]


def filler_ids(lm, n: int, bos: bool = True) -> list[int]:
    """``n`` tokens of neutral text (with the tokenizer's BOS first when ``bos``)."""
    ids = encode(lm, [FILLER * (1 + n // 20)], special=bos)[0]
    if len(ids) < n:
        raise MlxInterpError(f"the neutral filler has {len(ids)} tokens; {n} were needed")
    return ids[:n]


def has_bos(lm) -> bool:
    """Whether the tokenizer starts a text with a special token of its own."""
    return encode(lm, ["x"])[0] != encode(lm, ["x"], special=False)[0]


def _cache(lm, ids: Sequence[int], before: PromptCache | None = None) -> PromptCache:
    return run(lm, [list(ids)], logits="none", return_cache=True, cache=before, batch_size=None).cache


def windows(n_layers: int, n: int = 4) -> list[tuple[int, int]]:
    """``n`` contiguous layer windows [a, b) covering every layer."""
    edges = np.linspace(0, n_layers, n + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:]) if b > a]


def conditions(lm, source: str, other: str, question: str, *, filler: int = 24, n_windows: int = 4, seed: int = 0,
               parts: Sequence[str] = ("controls", "position", "splice")) -> dict[str, tuple]:
    """name -> (context cache or None, tokens to generate from) for one source; see the module doc."""
    src_ids = encode(lm, [source])[0]
    q = question_ids(lm, question)
    src = _cache(lm, src_ids)
    out: dict[str, tuple] = {}
    if "controls" in parts:
        out["none"] = (None, alone_ids(lm, question))
        out["text"] = (None, src_ids + q)
        out["same_cache"] = (src, q)
        out["noise"] = (noise_like(src, seed=seed), q)
        out["other"] = (_cache(lm, encode(lm, [other])[0]), q)
    neutral_ids = filler_ids(lm, len(src_ids), bos=has_bos(lm))
    neutral = _cache(lm, neutral_ids)
    if "controls" in parts:
        out["neutral"] = (neutral, q)
    if "position" in parts:
        a = filler_ids(lm, filler)
        b = filler_ids(lm, 2 * filler, bos=False)[filler:]
        pre = _cache(lm, a)
        out["pos_start"] = (_cache(lm, b, place(lm, src)), q)
        out["pos_start_text"] = (None, src_ids + b + q)
        for where, before, after in (("middle", pre, b), ("end", _cache(lm, b, pre), [])):
            for rotate in (True, False):
                c = place(lm, src, before=before, rotate=rotate)
                c = _cache(lm, after, c) if after else c
                out[f"pos_{where}" + ("" if rotate else "_unrotated")] = (c, q)
        out["pos_middle_text"] = (None, a + src_ids + b + q)
        out["pos_end_text"] = (None, a + b + src_ids + q)
    if "splice" in parts:
        for lo, hi in windows(lm.n_layers, n_windows):
            out[f"layers_{lo}_{hi}"] = (splice(neutral, src, layers=range(lo, hi)), q)
        out["k_only"] = (splice(neutral, src, kv="k"), q)
        out["v_only"] = (splice(neutral, src, kv="v"), q)
        for h in range(src.layers[0].keys.shape[1]):
            out[f"head_{h}"] = (splice(neutral, src, heads=[h]), q)
    return out
