"""Paired activations of two models on the same texts, the data every cross-model map is fitted on.

Tokenizers differ, so positions do not line up. Two alignments:

- ``"offsets"``: each text is tokenized with character offsets; a pair is a position where *both* tokenizers end a
  token at the same character. The two states then summarize the same prefix of the text, text[:c]. A BOS token
  (offset 0) is never paired.
- ``"mean"``: one pair per text, the mean over its tokens (BOS excluded).

Layers are matched by relative depth (``matched_layer``) unless the caller names both.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import mlx.core as mx
import numpy as np

from ..core.capture import Capture
from ..core.trace import run
from ..errors import MlxInterpError

ALIGN = ("offsets", "mean")


def tokens_with_offsets(lm, text: str) -> tuple[list[int], list[int]]:
    """(token ids as the model reads ``text``, BOS included as the tokenizer adds it; each token's end character,
    0 for a special token that covers no text)."""
    hf = getattr(lm.tokenizer, "_tokenizer", lm.tokenizer)
    try:
        enc = hf(text, return_offsets_mapping=True)
    except (TypeError, NotImplementedError, ValueError) as e:
        raise MlxInterpError(f"{lm.name}'s tokenizer gives no character offsets ({e}); use align='mean'") from None
    return list(enc["input_ids"]), [int(b) for _, b in enc["offset_mapping"]]


def last_token_ending_at(ends: Sequence[int]) -> dict[int, int]:
    """End character -> the last token ending there (a later one has read more); special tokens (end 0) skipped."""
    return {e: j for j, e in enumerate(ends) if e > 0}


def matched_layer(source_lm, layer: int, target_lm) -> int:
    """The target layer at the same relative depth as ``layer`` of the source (layer / L, rounded)."""
    if not 0 <= layer < source_lm.n_layers:
        raise MlxInterpError(f"layer {layer} out of range for {source_lm.name}: 0..{source_lm.n_layers - 1}")
    return min(target_lm.n_layers - 1, int(round(layer / source_lm.n_layers * target_lm.n_layers)))


@dataclass
class Pairs:
    """Rows of paired states: ``a[i]`` (source model) and ``b[i]`` (target model) read the same text."""

    a: np.ndarray  # [N, D_a]
    b: np.ndarray  # [N, D_b]
    text_index: np.ndarray  # [N] which text each row came from (split by text, never by row)
    source: str
    target: str
    layers: tuple[int, int]
    site: str
    align: str

    def split(self, texts: Sequence[int]) -> "Pairs":
        """The rows of the given texts (fit on some texts, evaluate on others)."""
        m = np.isin(self.text_index, np.asarray(list(texts)))
        return Pairs(self.a[m], self.b[m], self.text_index[m], self.source, self.target, self.layers, self.site, self.align)


@dataclass
class TextStates:
    """One model's states on a set of texts, at every collected layer: collected once per model and text set, then
    paired with any other model's at any pair of layers (``pair_states``), so a study of k models makes k passes,
    not one per ordered pair and layer."""

    model: str
    texts: list[str]
    ids: list[list[int]]
    ends: list[list[int]]  # each token's end character (0: a special token)
    site: str
    states: dict[int, list[np.ndarray]]  # layer -> per text [T, D] (float32)

    def at(self, layer: int) -> list[np.ndarray]:
        if layer not in self.states:
            raise MlxInterpError(f"layer {layer} was not collected for {self.model}; collected: {sorted(self.states)}")
        return self.states[layer]


def text_states(lm, texts: Sequence[str], layers, site: str = "resid_post") -> TextStates:
    """Every token's state at (``site``, each of ``layers``) for each text, in one batched pass (padding stripped)."""
    texts = list(texts)
    if not texts:
        raise MlxInterpError("paired activations need at least one text")
    layers = sorted({int(k) for k in ([layers] if isinstance(layers, int) else layers)})
    for k in layers:
        if not 0 <= k < lm.n_layers:
            raise MlxInterpError(f"layer {k} out of range for {lm.name}: 0..{lm.n_layers - 1}")
    enc = [tokens_with_offsets(lm, t) for t in texts]
    tr = run(lm, [i for i, _ in enc], capture=Capture(site, layers, "all"), logits="none")
    states = {k: [np.array(a.astype(mx.float32)) for a in tr.per_prompt(site, k)] for k in layers}
    return TextStates(lm.name, texts, [i for i, _ in enc], [e for _, e in enc], site, states)


def pair_states(a: TextStates, b: TextStates, layer: int, target_layer: int, align: str = "offsets") -> Pairs:
    """Pairs of ``a`` at ``layer`` and ``b`` at ``target_layer`` on the texts both read (see the module docstring)."""
    if align not in ALIGN:
        raise MlxInterpError(f"align={align!r} is not valid; use one of {', '.join(ALIGN)}")
    if a.texts != b.texts:
        raise MlxInterpError(f"{a.model} and {b.model} states were collected on different texts; collect both on the same list")
    if a.site != b.site:
        raise MlxInterpError(f"sites differ: {a.model} at {a.site}, {b.model} at {b.site}")
    A, B, idx = [], [], []
    for i, (ea, eb, sa, sb) in enumerate(zip(a.ends, b.ends, a.at(layer), b.at(target_layer))):
        sa, sb = sa.astype(np.float64), sb.astype(np.float64)
        if align == "mean":
            ka, kb = [j for j, e in enumerate(ea) if e > 0], [j for j, e in enumerate(eb) if e > 0]
            A.append(sa[ka].mean(axis=0, keepdims=True))
            B.append(sb[kb].mean(axis=0, keepdims=True))
            idx.append(i)
            continue
        at_a, at_b = last_token_ending_at(ea), last_token_ending_at(eb)
        common = sorted(set(at_a) & set(at_b))
        A.append(sa[[at_a[e] for e in common]])
        B.append(sb[[at_b[e] for e in common]])
        idx += [i] * len(common)
    a_, b_ = np.concatenate(A), np.concatenate(B)
    if len(a_) == 0:
        raise MlxInterpError("no character position ends a token in both tokenizers; use align='mean'")
    return Pairs(a_, b_, np.asarray(idx), a.model, b.model, (int(layer), int(target_layer)), a.site, align)


def paired_activations(source_lm, target_lm, texts: Sequence[str], layer: int, target_layer: int | None = None,
                       site: str = "resid_post", align: str = "offsets") -> Pairs:
    """States of both models at (``layer``, ``target_layer``: default the same relative depth) on ``texts``."""
    if align not in ALIGN:  # before any pass (pair_states would say so only after both)
        raise MlxInterpError(f"align={align!r} is not valid; use one of {', '.join(ALIGN)}")
    tl = matched_layer(source_lm, layer, target_lm) if target_layer is None else int(target_layer)
    if not 0 <= tl < target_lm.n_layers:
        raise MlxInterpError(f"target layer {tl} out of range for {target_lm.name}: 0..{target_lm.n_layers - 1}")
    return pair_states(text_states(source_lm, texts, [layer], site), text_states(target_lm, texts, [tl], site),
                       layer, tl, align)
