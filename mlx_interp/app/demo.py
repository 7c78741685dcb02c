"""The main job's demo on one model: logit lens, then sentiment steering that shows its effect against a control.

1. Logit lens on "The capital of France is": at which layer does " Paris" appear?
2. A sentiment direction (difference of means of positive vs negative sentences, mean over prompt tokens) at the
   middle layer. Its multiplier, in units of the residual norm there, is the strongest that keeps generations
   coherent while raising a lexicon sentiment score, found by the coefficient search on four validation prompts
   (methods.steering.search_multiplier). On the demo prompt (not used by the search), the baseline, +m, -m and a
   random direction of the same norm at +m are printed side by side with their sentiment scores.
Writes ``results/demo/<stamp>_<model>.json`` and the vector as ``.safetensors`` beside it.
"""

from __future__ import annotations

import time
from dataclasses import replace
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
STEER_PROMPT = "Tell me about your day."
SEARCH_PROMPTS = ["Tell me about your weekend.", "Describe the town you live in.", "What did you have for lunch?",
                  "Write about a trip to the sea."]


def run_demo(model: str, out_dir: str = "results") -> dict:
    from ..core.generate import generate
    from ..core.interventions import Add
    from ..core.positions import Span
    from ..measures.text import sentiment
    from ..methods.steering import search_multiplier
    from ..readouts.directions import diff_of_means, random_direction
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
    chat = lm.instruct
    search = search_multiplier(lm, v, layer, SEARCH_PROMPTS, lambda g: float(np.mean([sentiment(x.text) for x in g])),
                               chat=chat, steps=5, max_tokens=32)
    conds = {"baseline": []}
    if search.best is not None:
        alpha = search.best.alpha
        rnd = random_direction(lm.width, float(np.linalg.norm(v)), seed=layer)
        conds.update({f"+{search.best.multiplier:g} x residual norm": [Add(v, layers=layer, alpha=alpha)],
                      f"-{search.best.multiplier:g} x residual norm": [Add(v, layers=layer, alpha=-alpha)],
                      f"random direction, +{search.best.multiplier:g}": [Add(rnd, layers=layer, alpha=alpha)]})
    gens = {k: generate(lm, STEER_PROMPT, max_tokens=40, chat=chat, interventions=ivs)[0].text for k, ivs in conds.items()}
    print(f"\nsentiment steering at layer {layer}: multiplier chosen on {len(SEARCH_PROMPTS)} other prompts = "
          f"{search.best.multiplier if search.best else None} (steps: "
          + ", ".join(f"{st.multiplier:g}: score {st.score:.1f}, coherent {st.coherent_rate:.2f}" for st in search.steps) + ")")
    names = list(gens)
    for k in names[1:]:
        print(side_by_side({"baseline": gens["baseline"], "steered": gens[k],
                            "label": f"{k} (sentiment {sentiment(gens[k]):+d} vs {sentiment(gens['baseline']):+d})"}))
    if search.best is None:
        print("no multiplier kept the generations coherent: nothing to show")
    payload = {
        "lens": lens.to_dict(),
        "paris_rank_by_layer": traj,
        "paris_first_top1_layer": first,
        "steering": {"prompt": STEER_PROMPT, "layer": layer, "vector_norm": float(np.linalg.norm(v)),
                     "search": search.as_dict(), "texts": gens, "sentiment": {k: sentiment(t) for k, t in gens.items()}},
    }
    path = save_result("demo", payload, lm=lm, config={"layer": layer}, wall_s=time.time() - t0, out_dir=out_dir)
    if search.best is not None:  # `mlx-interp generate --steer FILE` applies the chosen multiplier by default
        vs = replace(vs, meta={**vs.meta, "steer": {"layer": layer, "multiplier": search.best.multiplier, "alpha": search.best.alpha,
                                                    "chosen_on": f"{len(SEARCH_PROMPTS)} search prompts (not the demo prompt)"}})
    save_vector(Path(path).with_suffix(".sentiment.safetensors"), vs)
    print(f"\nresult: {path}")
    return payload
