"""Logit lens: decode every layer's residual with the model's own final norm and head.

Uses ``Parts.logits`` = the model's ``norm`` then its ``lm_head`` or tied (possibly
quantized) embedding, plus Gemma 2's final soft-capping; Gemma's embedding scale is already
inside the residual. So the last layer's lens equals the model's own logits exactly (tested).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import mlx.core as mx
import numpy as np

from .capture import Capture
from .errors import MlxInterpError
from .model_parts import parts
from .trace import Prompts, run


@dataclass
class LayerReading:
    layer: int  # -1 = embeddings
    top: list[tuple[str, float]]  # (token, probability)
    targets: dict[str, tuple[int, float]] = field(default_factory=dict)  # target -> (rank, prob); rank 0 = top-1


@dataclass
class LensResult:
    prompt: str
    position: int
    layers: list[LayerReading]

    def rank_trajectory(self, target: str) -> list[int]:
        return [r.targets[target][0] for r in self.layers]

    def to_dict(self) -> dict:
        return {
            "prompt": self.prompt,
            "position": self.position,
            "layers": [
                {"layer": r.layer, "top": [[t, p] for t, p in r.top], "targets": {k: list(v) for k, v in r.targets.items()}}
                for r in self.layers
            ],
        }

    def table(self, k: int = 5) -> str:
        """One row per layer (embeddings first, final layer last)."""
        lines = []
        tnames = list(self.layers[0].targets) if self.layers else []
        head = f"{'layer':>5}  " + "  ".join(f"top{i + 1:<14}" for i in range(k))
        if tnames:
            head += "  " + "  ".join(f"{t!r} rank/p" for t in tnames)
        lines.append(head)
        for r in self.layers:
            name = "emb" if r.layer < 0 else str(r.layer)
            cells = [f"{t!r:>9.9} {p:4.2f}" for t, p in r.top[:k]]
            row = f"{name:>5}  " + "  ".join(f"{c:<16}" for c in cells)
            if tnames:
                row += "  " + "  ".join(f"{r.targets[t][0]:>6}/{r.targets[t][1]:.3f}" for t in tnames)
            lines.append(row)
        return "\n".join(lines)


def target_token(lm, text: str) -> int:
    """First token of ``text`` as it would continue a prompt (no BOS)."""
    if not text:
        raise MlxInterpError("lens target is an empty string; give a token such as ' Paris'")
    ids = lm.tokenizer.encode(text, add_special_tokens=False)
    if not ids:
        raise MlxInterpError(f"lens target {text!r} encodes to no tokens")
    return ids[0]


def layer_logits(lm, states: Sequence[mx.array]) -> mx.array:
    """Lens logits [n_states, V] for a list of [D] residual vectors, in fp32."""
    p = parts(lm.model)
    h = mx.stack(list(states))
    return p.logits(h).astype(mx.float32)


def logit_lens(
    lm,
    prompt: Prompts,
    *,
    position: int = -1,
    top_k: int = 5,
    targets: Sequence[str] = (),
    include_embed: bool = True,
    chat: bool | None = False,
    interventions: Sequence = (),
) -> LensResult:
    """Lens readings at one prompt position for every layer (embeddings first)."""
    if isinstance(prompt, (list, tuple)) and len(prompt) != 1:
        raise MlxInterpError("logit_lens takes one prompt; call it per prompt")
    tr = run(lm, prompt, capture=Capture("all", position, embed=include_embed), chat=chat, interventions=interventions)
    sites = ([("emb", tr.embed[0])] if include_embed else []) + [(i, tr.resid[i][0]) for i in sorted(tr.resid)]
    logits = layer_logits(lm, [s for _, s in sites])
    probs = mx.softmax(logits, axis=-1)
    tids = {t: target_token(lm, t) for t in targets}
    order = mx.argsort(-logits, axis=-1)[:, :top_k]
    mx.eval(probs, order)
    probs_np = np.array(probs)
    order_np = np.array(order)
    logits_np = np.array(logits)
    readings = []
    for row, (site, _) in enumerate(sites):
        top = [(lm.tokenizer.decode([int(t)]), float(probs_np[row, t])) for t in order_np[row]]
        tg = {t: (int((logits_np[row] > logits_np[row, i]).sum()), float(probs_np[row, i])) for t, i in tids.items()}
        readings.append(LayerReading(-1 if site == "emb" else site, top, tg))
    text = prompt if isinstance(prompt, str) else str(prompt)
    return LensResult(text, position, readings)
