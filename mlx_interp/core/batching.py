"""The one batching path: encode, chat template, left padding, length-sorted chunks, caller's order.

Everything that runs prompts through a model (``run``, ``generate``, and through them direction
extraction, metrics, vetting, refusal selection and steering searches) goes through ``encode`` and
``plan``: prompts are tokenized once, split into chunks of at most ``batch_size`` rows (sorted by
length, so a chunk's left padding is small), and results are put back in the caller's order.
This is the single place where work could be spread over processes.

Padded batches run with mlx-lm's batch KV caches, whose masks hide the padding and whose per-row
offsets keep RoPE positions equal to an unpadded run: a prompt's results do not depend on the
other prompts of its chunk (tested to float tolerance).
"""

from __future__ import annotations

from typing import Sequence, Union

from mlx_lm.models.cache import BatchKVCache, BatchRotatingKVCache, KVCache, RotatingKVCache, make_prompt_cache

from ..errors import MlxInterpError

Prompts = Union[str, Sequence[str], Sequence[Sequence[int]]]

#: rows per forward call unless the caller says otherwise (a 9B model's KV cache for 32 long
#: prompts stays small on a laptop; bench/bench_generate_batch.py measures the per-prompt cost)
DEFAULT_BATCH_SIZE = 32
#: a forward pass (``run``) starts a new chunk rather than pad more than this share of extra tokens
#: (``plan``); measured in bench/bench_packing.py
MAX_PADDING = 0.25
#: ``chat=`` everywhere: the text you pass is what runs, unless you ask for the chat template
DEFAULT_CHAT = False
PAD_ID = 0


def format_prompt(lm, text: str, chat: bool = DEFAULT_CHAT) -> str:
    """``text``, or with ``chat=True`` the chat template's user turn plus generation prompt."""
    tmpl = getattr(lm.tokenizer, "chat_template", None)
    if not chat:
        return text
    if not tmpl:
        raise MlxInterpError(f"chat=True but {lm.name} has no chat template (a base model); use chat=False")
    return lm.tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True)


def encode(lm, prompts: Prompts, chat: bool = DEFAULT_CHAT, *, special: bool = True) -> list[list[int]]:
    """Token ids per prompt. Strings get BOS as the tokenizer decides (``special=False``: none, for text
    that continues a cache); token lists pass through."""
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
            ids = lm.tokenizer.encode(text, add_special_tokens=special and text == p)
        else:
            ids = [int(t) for t in p]
            if not ids:
                raise MlxInterpError(f"prompt {i} has no tokens")
        out.append(ids)
    return out


def plan(lengths: Sequence[int], batch_size: int | None = DEFAULT_BATCH_SIZE, *,
         max_padding: float | None = None) -> list[list[int]]:
    """Chunks of caller indices: one chunk in the caller's order if everything fits, else sorted by length.

    ``max_padding``: also start a new chunk (in length order) when one more prompt would make the chunk's padded
    token count exceed ``1 + max_padding`` times its real tokens. A forward pass pays for every padded position
    (and attention for its square), so prompts of very different lengths in one chunk waste most of the work (CAA's
    MMLU items: 57-602 tokens, 2.7x padded/real in one chunk). Generation keeps big chunks (``None``): its decode
    steps cost per chunk, not per padded position."""
    n = len(lengths)
    if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
        raise MlxInterpError(f"batch_size={batch_size!r} must be a positive integer (or None for one batch)")
    if max_padding is not None and max_padding < 0:
        raise MlxInterpError(f"max_padding={max_padding!r} must be >= 0 (extra padded tokens per real token)")
    fits = batch_size is None or batch_size >= n
    if fits and (max_padding is None or n * max(lengths) <= (1 + max_padding) * sum(lengths)):
        return [list(range(n))]
    order = sorted(range(n), key=lambda i: (lengths[i], i))
    chunks, cur, real = [], [], 0
    for i in order:
        full = batch_size is not None and len(cur) == batch_size
        wasteful = max_padding is not None and (len(cur) + 1) * lengths[i] > (1 + max_padding) * (real + lengths[i])
        if cur and (full or wasteful):
            chunks.append(cur)
            cur, real = [], 0
        cur.append(i)
        real += lengths[i]
    return chunks + [cur]


def distribute(chunks: list[list[int]], lengths: Sequence[int], batch_size: int | None, *,
               keep_local: bool = False) -> tuple[list[list[int]], list[int], bool]:
    """(chunks, the ids of the chunks this rank computes, whether every rank must gather). In a world of one (or
    with ``keep_local``, e.g. a pass that keeps its KV cache): the chunks as planned, all computed here, no gather.
    With N ranks (``runtime.parallel``): the prompts re-planned into up to N or more length-sorted chunks, shared out
    by padded token count; every rank then gathers every chunk's result (``gather_chunks``), even a rank that had
    none to compute, so the collectives pair up. A prompt's results do not depend on its chunk, so they equal one
    process's to float tolerance (bit-identical in the 2-rank test)."""
    from ..runtime.parallel import assign, world

    w = world()
    if w.size == 1 or keep_local:
        return chunks, list(range(len(chunks))), False
    n = len(lengths)
    b = max(1, -(-n // w.size)) if batch_size is None else max(1, min(batch_size, -(-n // w.size)))
    order = sorted(range(n), key=lambda i: (lengths[i], i))
    chunks = [order[i:i + b] for i in range(0, n, b)]
    mine = assign([len(c) * max(lengths[i] for i in c) for c in chunks], w.size)[w.rank]
    SHARE["computed"] += len(mine)
    SHARE["total"] += len(chunks)
    return chunks, mine, True


#: chunks this rank computed / chunks shared out, over the process (tests check that work really was split)
SHARE = {"computed": 0, "total": 0}


class RankFailed:
    """What a rank sends instead of its chunk results when computing them raised (the error travels to every rank)."""

    def __init__(self, rank: int, error: BaseException):
        self.rank, self.kind, self.message = rank, type(error).__name__, str(error)


class shared_errors:
    """``with shared_errors(shared, n_chunks, what):`` around a rank's share of the chunks: when the chunks are shared
    out, an error raised inside reaches every rank (each raises it in one line at the same collective)."""

    def __init__(self, shared: bool, n_chunks: int, what: str):
        self.shared, self.n_chunks, self.what = shared, n_chunks, what

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc is not None and self.shared and isinstance(exc, Exception):
            from ..runtime.parallel import world

            gather_chunks(RankFailed(world().rank, exc), self.n_chunks, self.what)  # raises on every rank
        return False


def gather_chunks(local: dict | RankFailed, n_chunks: int, what: str) -> dict:
    """Every rank's chunk results (chunk id -> picklable value), merged on every rank. If any rank failed, every rank
    raises its error (one line), so all stop at the same collective; a missing chunk is an error too."""
    from ..runtime.parallel import gather_objects

    merged: dict = {}
    for part in gather_objects(local, what):
        if isinstance(part, RankFailed):
            raise MlxInterpError(f"rank {part.rank} failed during {what}: {part.message}"
                                 + ("" if part.kind == "MlxInterpError" else f" ({part.kind})"))
        merged.update(part)
    if len(merged) != n_chunks:
        raise MlxInterpError(f"{what}: the ranks returned {len(merged)} of {n_chunks} chunks; every rank must run the "
                             "same prompts with the same settings")
    return merged


def left_pad(tokens: Sequence[Sequence[int]]) -> tuple[list[list[int]], list[int]]:
    """Rows padded on the left to the longest, and the padding of each row."""
    n = max(len(t) for t in tokens)
    pads = [n - len(t) for t in tokens]
    return [[PAD_ID] * p + list(t) for p, t in zip(pads, tokens)], pads


def make_caches(model, pads: Sequence[int]) -> list:
    """Per-layer prompt caches for a batch: batch caches with left padding when rows differ in length."""
    base = make_prompt_cache(model)
    if not any(pads):
        return base
    out = []
    for c in base:
        if isinstance(c, RotatingKVCache):
            out.append(BatchRotatingKVCache(c.max_size, list(pads)))
        elif isinstance(c, KVCache):
            out.append(BatchKVCache(list(pads)))
        else:
            raise MlxInterpError(f"padded batches are not supported for cache type {type(c).__name__}; "
                                 "run prompts one at a time (batch_size=1)")
    return out
