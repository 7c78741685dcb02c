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


def _states(lm, ids: list[list[int]], layer: int, site: str) -> list[np.ndarray]:
    """Every token's state at (``site``, ``layer``) for each text, in one batched pass (padding stripped)."""
    tr = run(lm, ids, capture=Capture(site, layer, "all"), logits="none")
    return [np.array(a.astype(mx.float32), dtype=np.float64) for a in tr.per_prompt(site, layer)]


def paired_activations(source_lm, target_lm, texts: Sequence[str], layer: int, target_layer: int | None = None,
                       site: str = "resid_post", align: str = "offsets") -> Pairs:
    """States of both models at (``layer``, ``target_layer``: default the same relative depth) on ``texts``."""
    if align not in ALIGN:
        raise MlxInterpError(f"align={align!r} is not valid; use one of {', '.join(ALIGN)}")
    texts = list(texts)
    if not texts:
        raise MlxInterpError("paired activations need at least one text")
    tl = matched_layer(source_lm, layer, target_lm) if target_layer is None else int(target_layer)
    if not 0 <= tl < target_lm.n_layers:
        raise MlxInterpError(f"target layer {tl} out of range for {target_lm.name}: 0..{target_lm.n_layers - 1}")
    A, B, idx = [], [], []
    enc_a, enc_b = [tokens_with_offsets(source_lm, t) for t in texts], [tokens_with_offsets(target_lm, t) for t in texts]
    states_a = _states(source_lm, [ia for ia, _ in enc_a], layer, site)
    states_b = _states(target_lm, [ib for ib, _ in enc_b], tl, site)
    for i, ((ia, ea), (ib, eb), sa, sb) in enumerate(zip(enc_a, enc_b, states_a, states_b)):
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
    a, b = np.concatenate(A), np.concatenate(B)
    if len(a) == 0:
        raise MlxInterpError("no character position ends a token in both tokenizers; use align='mean'")
    return Pairs(a, b, np.asarray(idx), source_lm.name, target_lm.name, (int(layer), tl), site, align)
