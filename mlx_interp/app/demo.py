"""The main job of the README until experiments exist: logit lens + steering on one model.

1. Logit lens on "The capital of France is": at which layer does " Paris" appear?
2. A sentiment direction (difference of means of positive vs negative sentences, mean over
   prompt tokens) at the middle layer, added while generating from a neutral prompt; the
   baseline and steered continuations are printed side by side.
Writes ``results/demo/<stamp>_<model>.json`` and the vector as ``.safetensors`` beside it.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

POSITIVE = [
    "I love this, it is wonderful and makes me so happy.",
    "What a beautiful day, everything feels joyful and bright.",
    "This is the best gift ever, I am delighted and grateful.",
    "The party was fantastic and everyone was smiling.",
    "I am thrilled with the results, they are excellent.",
    "Such a lovely, kind and cheerful person.",
]
NEGATIVE = [
    "I hate this, it is terrible and makes me so miserable.",
    "What an awful day, everything feels gloomy and dark.",
    "This is the worst gift ever, I am disappointed and upset.",
    "The party was a disaster and everyone was crying.",
    "I am furious about the results, they are dreadful.",
    "Such a nasty, cruel and bitter person.",
]
STEER_PROMPT = "Tell me about your weekend."


def run_demo(model: str, out_dir: str = "results") -> dict:
    from ..core.generate import generate
    from ..core.interventions import Add
    from ..core.positions import Span
    from ..readouts.directions import diff_of_means
    from ..readouts.lens import logit_lens
    from ..readouts.vectors import save_vector
    from ..runs.results import save_result
    from ..store.models import load
    from .console import side_by_side

    t0 = time.time()
    lm = load(model)
    print(f"model {lm.name}: {lm.family}, {lm.n_layers} layers, width {lm.width}, cpu path {lm.cpu_path}")
    lens = logit_lens(lm, "The capital of France is", targets=[" Paris"])
    print(lens.table())
    traj = lens.rank_trajectory(" Paris")
    first = next((lens.layers[i] for i, r in enumerate(traj) if r == 0), None)
    print(f"' Paris' first ranks top-1 at layer {first}" if first is not None else "' Paris' never ranks top-1")

    layer = lm.n_layers // 2
    vs = diff_of_means(lm, POSITIVE, NEGATIVE, layers=[layer], positions=Span(0, None))
    v = vs[layer]
    alpha = 4.0
    chat = lm.instruct
    base = generate(lm, STEER_PROMPT, max_tokens=40, chat=chat)[0]
    pos = generate(lm, STEER_PROMPT, max_tokens=40, chat=chat, interventions=[Add(v, layers=layer, alpha=alpha)])[0]
    neg = generate(lm, STEER_PROMPT, max_tokens=40, chat=chat, interventions=[Add(v, layers=layer, alpha=-alpha)])[0]
    print()
    print(side_by_side({"baseline": base.text, "steered": pos.text, "layer": layer, "alpha": alpha}))
    print(side_by_side({"baseline": base.text, "steered": neg.text, "layer": layer, "alpha": -alpha}))
    payload = {
        "lens": lens.to_dict(),
        "paris_rank_by_layer": traj,
        "paris_first_top1_layer": first,
        "steering": {
            "prompt": STEER_PROMPT,
            "layer": layer,
            "alpha": alpha,
            "vector_norm": float(np.linalg.norm(v)),
            "baseline": base.text,
            "positive": pos.text,
            "negative": neg.text,
        },
    }
    path = save_result("demo", payload, lm=lm, config={"layer": layer, "alpha": alpha}, wall_s=time.time() - t0, out_dir=out_dir)
    save_vector(Path(path).with_suffix(".sentiment.safetensors"), vs)
    print(f"\nresult: {path}")
    return payload
