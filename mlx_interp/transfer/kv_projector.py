"""A cross-model KV-cache projector (exp14e, after Cache-to-Cache): one model's cache of a text, mapped into another
model's cache space, so the receiver continues from what the source read.

For each receiver layer, the source layer at the same relative depth (``pairs.matched_layer``). Per token, the
source's keys of all its KV heads (concatenated) map linearly to the receiver's keys, and its values to the
receiver's values. Keys are compared *un-rotated*: each stored key is rotated back to position 0 with its layer's
own rope module, so a map never has to learn RoPE (the two models' positions for the same text differ, and so may
their rope bases); mapped keys are rotated for the receiver's positions. Training rows are the two caches of the
same shipped texts aligned by character offsets (positions where both tokenizers end a token at the same
character, ``pairs.tokens_with_offsets``), fitted on some texts and scored on others (R^2, cosine).

The projected cache covers the receiver's own tokenization of the text: each receiver token takes the source
token that ends where it ends or, between shared boundaries, the first source token that has read that far. So
the cache's tokens are the receiver's real tokens of the text, its positions are 0.., and anything reading it
(continuation, the coherence judge) sees the receiver's own token ids.

    proj = fit_projector(smol, qwen, passages("train"), val_texts=passages("val"))
    cache = proj.project(smol, qwen, "Hello, my name is Lyra and I live in Seattle.")
    generate(qwen, [question_ids(qwen, "What is your name?")], cache=cache)
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Sequence

import mlx.core as mx
import numpy as np
from mlx.utils import tree_flatten

from ..core.batching import make_caches
from ..core.capture import Capture
from ..core.kvcache import PromptCache, _build
from ..core.parts import parts
from ..core.trace import run
from ..errors import MlxInterpError
from ..runs.files import read_safetensors, write_safetensors
from .adapters import train_adapter
from .maps import LinearMap, evaluate, fit
from .pairs import Pairs, last_token_ending_at, matched_layer, tokens_with_offsets

FORMAT = "mlx-interp-kv-projector-1"
KINDS = ("adapter", "ridge")


def _rope(lm, layer: int):
    rope = getattr(parts(lm.model).layers[layer].self_attn, "rope", None)
    if rope is None:
        raise MlxInterpError(f"layer {layer} of {lm.name} has no rope module; its keys cannot be un-rotated")
    return rope


def unrotate(lm, layer: int, keys: mx.array) -> mx.array:
    """Keys [T, H, d] as stored at positions 0..T-1, rotated back to position 0 (each as a one-token sequence at
    offset -t: RoPE's rotations compose)."""
    T, H, d = keys.shape
    x = keys.astype(mx.float32).reshape(T, H, 1, d)
    return _rope(lm, layer)(x, offset=mx.array(-np.arange(T))).reshape(T, H, d)


def rotate(lm, layer: int, keys: mx.array) -> mx.array:
    """Un-rotated keys [T, H, d] rotated for positions 0..T-1 as the model does ([1, H, T, d], the cache layout)."""
    x = keys.astype(mx.float32).transpose(1, 0, 2)[None]  # [1, H, T, d]
    return _rope(lm, layer)(x)


def kv_states(lm, ids: Sequence[Sequence[int]], layers: Sequence[int]) -> list[dict]:
    """Per text, per layer: (un-rotated keys, values), each [T, H * d] float64, from one batched pass."""
    layers = sorted(set(int(l) for l in layers))
    tr = run(lm, [list(t) for t in ids], capture=[Capture("k", layers, "all"), Capture("v", layers, "all")],
             logits="none")
    out = [dict() for _ in ids]
    for l in layers:
        for i, (k, v) in enumerate(zip(tr.per_prompt("k", l), tr.per_prompt("v", l))):
            ku = unrotate(lm, l, k)
            out[i][l] = tuple(np.array(a.astype(mx.float32), dtype=np.float64).reshape(a.shape[0], -1) for a in (ku, v))
    return out


def _cover(src_ends: Sequence[int], tgt_ends: Sequence[int]) -> list[int]:
    """For each target token, the source token that has read at least as far: the first source token ending at or
    after the target token's end (a special token covering no text takes the source's first token)."""
    ends = np.asarray(src_ends)
    out = []
    for e in tgt_ends:
        if e <= 0:
            out.append(0)
            continue
        later = np.flatnonzero(ends >= e)
        out.append(int(later[0]) if len(later) else len(ends) - 1)
    return out


def _dtype(lm) -> mx.Dtype:
    """The receiver's activation dtype: that of its first floating parameter (fp32 on the CPU path)."""
    for _, p in tree_flatten(lm.model.parameters()):
        if mx.issubdtype(p.dtype, mx.floating):
            return p.dtype
    return mx.float32


@dataclass
class KVProjector:
    """Per receiver layer, linear maps of un-rotated keys and of values from the source's matched layer."""

    source: str
    target: str
    source_layers: list[int]  # index: receiver layer
    maps: dict  # (receiver layer, "k" | "v") -> LinearMap
    meta: dict = field(default_factory=dict)

    def check(self, source_lm, target_lm) -> None:
        if (source_lm.name, target_lm.name) != (self.source, self.target):
            raise MlxInterpError(f"this projector maps {self.source} -> {self.target}, not {source_lm.name} -> "
                                 f"{target_lm.name}")

    def project(self, source_lm, target_lm, text: str) -> PromptCache:
        """The receiver's cache of ``text`` built from the source's: see the module doc."""
        self.check(source_lm, target_lm)
        if not text:
            raise MlxInterpError("projecting a cache needs a non-empty text")
        ids_s, ends_s = tokens_with_offsets(source_lm, text)
        ids_t, ends_t = tokens_with_offsets(target_lm, text)
        states = kv_states(source_lm, [ids_s], set(self.source_layers))[0]
        idx = _cover(ends_s, ends_t)
        likes, dt = make_caches(target_lm.model, [0]), _dtype(target_lm)
        layers = []
        for l, ls in enumerate(self.source_layers):
            ks, vs = states[ls]
            k_like = likes[l]
            H = parts(target_lm.model).layers[l].self_attn.n_kv_heads
            k = self.maps[(l, "k")](ks[idx]).astype(np.float32).reshape(len(idx), H, -1)
            v = self.maps[(l, "v")](vs[idx]).astype(np.float32).reshape(len(idx), H, -1)
            keys = rotate(target_lm, l, mx.array(k)).astype(dt)
            values = mx.array(v).transpose(1, 0, 2)[None].astype(dt)
            layers.append(_build(k_like, keys, values, [0]))
        return PromptCache(layers, target_lm.name, [list(ids_t)], [0], 0)

    def save(self, path: str | Path) -> Path:
        arrays = {}
        for (l, kv), m in self.maps.items():
            arrays[f"{kv}.{l}.W"] = mx.array(m.W.astype(np.float32))
            arrays[f"{kv}.{l}.b"] = mx.array(m.b.astype(np.float32))
        meta = {"format": FORMAT, "source": self.source, "target": self.target,
                "source_layers": json.dumps(self.source_layers), "kind": self.meta.get("kind", ""),
                "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "extra": json.dumps(self.meta, default=str)}
        return write_safetensors(path, arrays, meta, "KV projector")

    @classmethod
    def load(cls, path: str | Path, source=None, target=None) -> "KVProjector":
        """A saved projector; given the models (``LoadedModel`` or name), checks it is theirs."""
        arrays, meta = read_safetensors(path, "KV projector")
        if meta.get("format") != FORMAT:
            raise MlxInterpError(f"{Path(path).name} is not an mlx-interp KV projector (format {meta.get('format')!r})")
        src_layers = json.loads(meta["source_layers"])
        maps = {}
        for l, ls in enumerate(src_layers):
            for kv in ("k", "v"):
                W, b = (np.array(arrays[f"{kv}.{l}.{x}"], dtype=np.float64) for x in ("W", "b"))
                maps[(l, kv)] = LinearMap(W, b, meta.get("kind") or "adapter", meta["source"], meta["target"], (ls, l))
        p = cls(meta["source"], meta["target"], src_layers, maps, json.loads(meta["extra"]))
        for side, have, want in (("source", p.source, source), ("target", p.target, target)):
            want = getattr(want, "name", want)
            if want is not None and want != have:
                raise MlxInterpError(f"{Path(path).name} projects {p.source} -> {p.target}; its {side} is not {want}")
        return p


def _pairs(source_lm, target_lm, texts: Sequence[str], source_layers: Sequence[int]) -> dict:
    """(receiver layer, "k" | "v") -> Pairs of un-rotated keys or values aligned by character offsets."""
    enc_s = [tokens_with_offsets(source_lm, t) for t in texts]
    enc_t = [tokens_with_offsets(target_lm, t) for t in texts]
    st_s = kv_states(source_lm, [i for i, _ in enc_s], set(source_layers))
    st_t = kv_states(target_lm, [i for i, _ in enc_t], range(target_lm.n_layers))
    rows: dict = {}
    for n, ((_, es), (_, et)) in enumerate(zip(enc_s, enc_t)):
        a_at, b_at = last_token_ending_at(es), last_token_ending_at(et)
        common = sorted(set(a_at) & set(b_at))
        ia, ib = [a_at[e] for e in common], [b_at[e] for e in common]
        for l, ls in enumerate(source_layers):
            for x, kv in enumerate(("k", "v")):
                r = rows.setdefault((l, kv), [[], [], []])
                r[0].append(st_s[n][ls][x][ia])
                r[1].append(st_t[n][l][x][ib])
                r[2].extend([n] * len(common))
    out = {}
    for (l, kv), (a, b, idx) in rows.items():
        out[(l, kv)] = Pairs(np.concatenate(a), np.concatenate(b), np.asarray(idx), source_lm.name, target_lm.name,
                             (int(source_layers[l]), l), kv, "offsets")
    if not len(out[(0, "k")].a):
        raise MlxInterpError("no character position ends a token in both tokenizers; these texts cannot pair the caches")
    return out


def fit_projector(source_lm, target_lm, texts: Sequence[str], *, val_texts: Sequence[str] = (), kind: str = "adapter",
                  steps: int = 300, lr: float = 1e-2, alpha: float = 1.0, seed: int = 0,
                  progress: Callable[[int, int], None] | None = None) -> KVProjector:
    """A projector from ``source_lm``'s cache to ``target_lm``'s, fitted on ``texts`` (``kind``: "adapter", trained
    with AdamW in MLX, or "ridge", closed form) and scored on ``val_texts`` (R^2 and cosine per layer, in ``meta``)."""
    if kind not in KINDS:
        raise MlxInterpError(f"kind={kind!r} is not valid; use one of {', '.join(KINDS)}")
    if source_lm.name == target_lm.name:
        raise MlxInterpError(f"source and target are both {source_lm.name}; a projector maps between two models "
                             "(a model continues its own cache directly)")
    texts, val_texts = list(texts), list(val_texts)
    src_layers = [matched_layer(target_lm, l, source_lm) for l in range(target_lm.n_layers)]
    t0 = time.time()
    fit_pairs = _pairs(source_lm, target_lm, texts, src_layers)
    val_pairs = _pairs(source_lm, target_lm, val_texts, src_layers) if val_texts else {}
    t1 = time.time()
    maps, scores, curves = {}, {}, {}
    for i, key in enumerate(sorted(fit_pairs)):
        p = fit_pairs[key]
        if kind == "adapter":
            m = train_adapter(p, steps=steps, lr=lr, seed=seed, progress=lambda s, v: None)
            curves[f"{key[1]}{key[0]}"] = m.meta["loss_curve"]
        else:
            m = fit(p, "ridge", alpha=alpha)
        maps[key] = m
        if val_pairs:
            scores[f"{key[1]}{key[0]}"] = evaluate(m, val_pairs[key])
        if progress:
            progress(i + 1, len(fit_pairs))
    t2 = time.time()
    rows = len(fit_pairs[(0, "k")].a)
    meta = {"kind": kind, "source_layers": src_layers, "n_fit_texts": len(texts), "n_val_texts": len(val_texts),
            "fit_rows": rows, "val_rows": len(val_pairs[(0, "k")].a) if val_pairs else 0,
            "align": "offsets (both tokenizers end a token at the same character)", "keys": "un-rotated to position 0",
            "steps": steps if kind == "adapter" else None, "lr": lr if kind == "adapter" else None,
            "alpha": alpha if kind == "ridge" else None, "seed": seed,
            "collect_s": t1 - t0, "train_s": t2 - t1, "aligned_tokens_per_s": rows / max(t2 - t0, 1e-9),
            "val": scores, "loss_curves": curves}
    return KVProjector(source_lm.name, target_lm.name, src_layers, maps, meta)


def identity_projector(lm) -> KVProjector:
    """A projector from a model to itself with identity maps (a test of the un-rotate / cover / rotate path: its
    projection must equal the model's own cache of the text)."""
    maps = {}
    for l in range(lm.n_layers):
        d = int(parts(lm.model).layers[l].self_attn.k_proj.weight.shape[0])  # KV heads x head dim (out features)
        for kv in ("k", "v"):
            maps[(l, kv)] = LinearMap(np.eye(d), np.zeros(d), "identity", lm.name, lm.name, (l, l))
    return KVProjector(lm.name, lm.name, list(range(lm.n_layers)), maps, {"kind": "identity"})
