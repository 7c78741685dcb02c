"""Greedy or sampled, KV-cached, batched generation with interventions active.

Our own small loop instead of ``mlx_lm.generate_step``: it prefills each (left-padded) chunk of
prompts in one call, then feeds one token per row per step, so the hooks always know each
token's prompt-relative position (steering "generated" tokens only, or the prompt only, works
under the KV cache). Like ``generate_step`` it builds step n+1 before reading token n on the host
(``mx.async_eval``), so the host's bookkeeping overlaps the next forward pass
(``bench/bench_overhead.py`` shows what that buys on the CPU). With no interventions it produces
the same greedy tokens as ``mlx_lm.generate`` (tested).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import mlx.core as mx
from mlx_lm.sample_utils import make_sampler

from ..errors import MlxInterpError
from .batching import DEFAULT_BATCH_SIZE, DEFAULT_CHAT, Prompts, distribute, encode, gather_chunks, plan, shared_errors
from .hooks import hooked
from ..runs import journal, work
from .interventions import bind_all, flatten, rows_list
from .kvcache import PromptCache
from .positions import validate
from .trace import continue_from, forward, start_chunk

#: overlap each step's forward pass with the host's reading of the previous token (bench toggles it)
ASYNC = True


@dataclass
class Generation:
    text: str
    tokens: list[int]  # generated token ids (without the stop token)
    prompt_tokens: list[int]  # the whole context the tokens follow (a continued cache's tokens first)
    finish_reason: str  # "stop" (EOS) or "length"


class Generations(list):
    """One ``Generation`` per prompt, in order; ``cache`` holds the KV cache when asked for."""

    cache: PromptCache | None = None


def generate(
    lm,
    prompts: Prompts,
    *,
    max_tokens: int = 64,
    interventions: Sequence = (),
    temperature: float = 0.0,
    top_p: float = 1.0,
    seed: int | None = 0,
    chat: bool = DEFAULT_CHAT,
    stop_at_eos: bool = True,
    batch_size: int | None = DEFAULT_BATCH_SIZE,
    cache: PromptCache | None = None,
    return_cache: bool = False,
) -> Generations:
    """Generate for each prompt; returns one ``Generation`` per prompt, in order.

    ``stop_at_eos=False`` always produces ``max_tokens`` tokens (benchmarks, fixed-length sweeps).
    ``cache``/``return_cache`` as in ``run``; the returned cache holds every token fed to the model
    (prompt and generated; rows that stopped early keep the tokens fed while others went on).
    """
    if not isinstance(max_tokens, int) or max_tokens < 1:
        raise MlxInterpError(f"max_tokens={max_tokens!r} must be an integer >= 1")
    if temperature < 0:
        raise MlxInterpError(f"temperature={temperature} must be >= 0")
    toks = encode(lm, prompts, chat, special=cache is None)
    j, key = journal.active(), None
    if j is not None and cache is None and not return_cache and temperature == 0:  # a resumable study: replay or record
        key = journal.fingerprint("generate", lm.name, toks, flatten(interventions), max_tokens, stop_at_eos, batch_size)
        hit = j.get(key)
        if hit is not None:
            return Generations(hit)
    meter = work.Meter()
    out = _generate(lm, toks, interventions, max_tokens, temperature, top_p, seed, stop_at_eos, batch_size, cache,
                    return_cache)
    if key is not None:
        j.put(key, list(out), meter)
    return out


def generate_conditions(lm, conditions: dict, **kw) -> dict[str, Generations]:
    """Several conditions' generations in one ``generate`` call: ``{name: (prompts, interventions)}`` ->
    ``{name: Generations}``. Each condition's prompts get their own block of batch rows and its interventions act
    on those rows only (``rows=``), so a steered row, its random control and its baseline share every decode
    step: on a CPU a decode step costs about the same for 2 rows as for 16 (reading the weights dominates), so a
    study's conditions cost one call instead of one each. ``kw`` goes to ``generate``."""
    from dataclasses import replace

    names, prompts, ivs = list(conditions), [], []
    bad = [n for n, c in conditions.items() if not (isinstance(c, tuple) and len(c) == 2)]
    if not names or bad:
        raise MlxInterpError(f"conditions must map names to (prompts, interventions); got {bad[0] if bad else 'nothing'!r}")
    for name in names:
        ps, cond_ivs = conditions[name]
        rows = list(range(len(prompts), len(prompts) + len(ps)))
        prompts += list(ps)
        ivs += [replace(iv, rows=rows if iv.rows is None else [rows[int(r)] for r in rows_list(iv.rows)]) for iv in flatten(cond_ivs)]
    gens = generate(lm, prompts, interventions=ivs, **kw)
    out, at = {}, 0
    for name in names:
        n = len(conditions[name][0])
        out[name] = Generations(gens[at:at + n])
        at += n
    return out


def _generate(lm, toks, interventions, max_tokens, temperature, top_p, seed, stop_at_eos, batch_size, cache,
              return_cache) -> Generations:
    if getattr(lm, "tensor_parallel", 1) > 1 and (cache is not None or return_cache):
        raise MlxInterpError("KV caches as values are not supported on a tensor-parallel model yet (each rank holds only "
                             "its own KV heads); generate without cache= / return_cache=")
    ivs = bind_all(lm, interventions)
    prefix = continue_from(lm, cache, toks)
    full = [list(p) + t for p, t in zip(prefix.tokens, toks)] if prefix else toks
    for iv in ivs:
        validate(iv.positions, [len(t) for t in full])
        iv.check_batch(len(toks))
    chunks = plan([len(t) for t in toks], batch_size)
    if (prefix is not None or return_cache) and len(chunks) > 1:
        raise MlxInterpError(f"{'cache=' if prefix is not None else 'return_cache'} needs every prompt in one chunk; "
                             f"{len(toks)} prompts > batch_size={batch_size}: pass batch_size=None")
    if getattr(lm, "tensor_parallel", 1) > 1 and temperature > 0 and seed is None:
        raise MlxInterpError("sampling on a tensor-parallel model needs seed= (every rank must draw the same tokens)")
    sampler = make_sampler(temp=temperature, top_p=top_p)
    if seed is not None and temperature > 0:
        mx.random.seed(seed)
    eos = set(getattr(lm.tokenizer, "eos_token_ids", None) or [lm.tokenizer.eos_token_id]) if stop_at_eos else set()
    out = Generations([None] * len(toks))
    chunks, mine, shared = distribute(chunks, [len(t) for t in toks], batch_size,
                                      keep_local=prefix is not None or return_cache or getattr(lm, "tensor_parallel", 1) > 1)
    done = {}
    with shared_errors(shared, len(chunks), "a generation batch"):
        for ci in mine:
            idx = chunks[ci]
            sub = [b for b in (iv.for_rows(idx) for iv in ivs) if b is not None]
            done[ci], caches, pads, fed = _chunk(lm, [toks[i] for i in idx], [full[i] for i in idx], sub, prefix,
                                                 sampler, eos, max_tokens)
    if shared:  # data parallel: every rank gets every chunk's generations
        done = gather_chunks(done, len(chunks), "a generation batch")
    for ci, gens in done.items():
        for j, i in enumerate(chunks[ci]):
            out[i] = gens[j]
    if return_cache:
        out.cache = PromptCache(caches, lm.name, [f + d for f, d in zip(full, fed)], list(pads), 0)
    return out


def _chunk(lm, toks, full, ivs, prefix, sampler, eos, max_tokens):
    """Generate for one chunk; returns (generations, caches, pads, tokens fed after the prompt per row)."""
    B = len(toks)
    padded, pads, caches, ctx = start_chunk(lm, toks, prefix)
    out: list[list[int]] = [[] for _ in range(B)]
    fed: list[list[int]] = [[] for _ in range(B)]
    done = [False] * B
    reason = ["length"] * B

    def sample(logits):
        return sampler(logits - mx.logsumexp(logits, axis=-1, keepdims=True))

    with hooked(lm.model, ivs, (), ctx, None, caches):
        y = sample(forward(lm, padded, caches, ctx, "last"))
        mx.async_eval(y)
        for step in range(max_tokens):
            nxt = None
            if ASYNC and step + 1 < max_tokens:  # build and launch step n+1 before reading token n
                nxt = sample(forward(lm, y[:, None], caches, ctx, "last"))
                mx.async_eval(nxt)
            ids = y.tolist()
            if nxt is not None:
                for b, t in enumerate(ids):
                    fed[b].append(t)
            for b, t in enumerate(ids):
                if done[b]:
                    continue
                if t in eos:
                    done[b], reason[b] = True, "stop"
                else:
                    out[b].append(t)
            if all(done) or step + 1 == max_tokens:
                break
            if nxt is None:
                for b, t in enumerate(ids):
                    fed[b].append(t)
                nxt = sample(forward(lm, y[:, None], caches, ctx, "last"))
            y = nxt
    gens = [Generation(lm.tokenizer.decode(o), o, list(f), r) for o, f, r in zip(out, full, reason)]
    return gens, caches, pads, fed
