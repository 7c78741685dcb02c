"""Greedy or sampled, KV-cached, batched generation with interventions active.

Our own small loop instead of ``mlx_lm.generate_step``: it prefills the whole (left-padded)
prompt in one call, then feeds one token per row per step, so the hooks always know each
token's prompt-relative position (steering "generated" tokens only, or the prompt only,
works under the KV cache). With no interventions it produces the same greedy tokens as
``mlx_lm.generate`` (tested). Instruct models get their chat template by default.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import mlx.core as mx
import numpy as np
from mlx_lm.sample_utils import make_sampler

from .errors import MlxInterpError
from .hooks import Context, hooked
from .interventions import bind_all
from .positions import validate
from .trace import Prompts, encode, forward, make_caches


@dataclass
class Generation:
    text: str
    tokens: list[int]  # generated token ids (without the stop token)
    prompt_tokens: list[int]
    finish_reason: str  # "stop" (EOS) or "length"


def generate(
    lm,
    prompts: Prompts,
    *,
    max_tokens: int = 64,
    interventions: Sequence = (),
    temperature: float = 0.0,
    top_p: float = 1.0,
    seed: int | None = 0,
    chat: bool | None = None,
    stop_at_eos: bool = True,
) -> list[Generation]:
    """Generate for each prompt; returns one ``Generation`` per prompt, in order.

    ``stop_at_eos=False`` always produces ``max_tokens`` tokens (benchmarks, fixed-length sweeps).
    """
    if max_tokens < 1:
        raise MlxInterpError(f"max_tokens={max_tokens} must be at least 1")
    if temperature < 0:
        raise MlxInterpError(f"temperature={temperature} must be >= 0")
    toks = encode(lm, prompts, chat)
    lens = [len(t) for t in toks]
    ivs = bind_all(lm, interventions)
    for iv in ivs:
        validate(iv.positions, lens)
    caches, pads = make_caches(lm.model, lens)
    padded = [[0] * pd + t for pd, t in zip(pads, toks)]
    ctx = Context(np.array(lens), np.array(pads))
    sampler = make_sampler(temp=temperature, top_p=top_p)
    if seed is not None and temperature > 0:
        mx.random.seed(seed)
    eos = set(getattr(lm.tokenizer, "eos_token_ids", None) or [lm.tokenizer.eos_token_id]) if stop_at_eos else set()
    B = len(toks)
    out: list[list[int]] = [[] for _ in range(B)]
    done = [False] * B
    reason = ["length"] * B
    with hooked(lm.model, ivs, None, ctx):
        logits = forward(lm, padded, caches, ctx, "last")
        for _ in range(max_tokens):
            logprobs = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
            nxt = sampler(logprobs)
            ids = nxt.tolist()
            for b, t in enumerate(ids):
                if done[b]:
                    continue
                if t in eos:
                    done[b], reason[b] = True, "stop"
                else:
                    out[b].append(t)
            if all(done) or all(len(o) >= max_tokens for o, d in zip(out, done) if not d):
                break
            logits = forward(lm, [[t] for t in ids], caches, ctx, "last")
    return [Generation(lm.tokenizer.decode(o), o, t, r) for o, t, r in zip(out, toks, reason)]
