"""Reference numbers from an independent implementation: transformers + PyTorch on the same packaged GGUF (fp32).

The conversion and function-vector tests compare mlx-interp against these numbers. Loading a GGUF through
transformers dequantizes it in Python (60-100 s per model on the 2-core machine), so the numbers are computed
once by this script and kept beside it as JSON, keyed by the GGUF's pinned sha256 (the way transformers' own
model tests keep expected logit slices). Regenerate, or check that the kept files still equal a live recomputation:

    pip install -e ".[reference]"; python tests/reference/pytorch_reference.py   # rewrite the JSON files
    python tests/reference/pytorch_reference.py --check    # recompute and compare, write nothing
    MLX_INTERP_LIVE_REFERENCE=1 pytest tests/test_conversion.py -k live   # the same check as a test
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
#: prompts whose logits the conversion test compares (base-model text: no chat template, the tokenizer's BOS)
LOGIT_PROMPTS = ("The capital of France is", "def fibonacci(n):\n    if n <")
#: how many of the largest logits per position are kept; the logsumexp keeps the rest of the distribution honest
TOP_K = 32
#: layers whose heads the function-vector check patches (SmolLM2: 9 heads of width 64)
FV_LAYERS = (4, 15)


def logits_path(alias: str) -> Path:
    return HERE / f"logits_{alias}.json"


FV_PATH = HERE / "fv_smollm2-135m.json"


def _torch_model(alias: str):
    import torch
    from transformers import AutoModelForCausalLM

    from mlx_interp.store.fetch import assemble_gguf
    from mlx_interp.store.models import cache_dir
    from mlx_interp.store.registry import REGISTRY

    torch.set_num_threads(2)
    gguf = assemble_gguf(REGISTRY[alias].offline, cache_dir(), progress=lambda s: None)
    return AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)


def _provenance(alias: str) -> dict:
    import torch
    import transformers

    from mlx_interp.store.registry import REGISTRY

    return {"gguf_sha256": REGISTRY[alias].offline.sha256, "transformers": transformers.__version__,
            "torch": torch.__version__, "loader": "AutoModelForCausalLM.from_pretrained(gguf_file=..., dtype=float32)"}


def compute_logits(alias: str) -> dict:
    """Top-``TOP_K`` logits and the logsumexp at every position of ``LOGIT_PROMPTS``, from transformers."""
    import torch

    from mlx_interp.store.models import load

    tok = load(f"{alias}@fp32").tokenizer
    ref = _torch_model(alias)
    prompts = []
    for text in LOGIT_PROMPTS:
        ids = tok.encode(text)
        with torch.no_grad():
            lg = ref(torch.tensor([ids])).logits[0].double()
        top = torch.topk(lg, TOP_K, dim=-1)
        prompts.append({"text": text, "ids": ids, "top_ids": top.indices.tolist(), "top_logits": top.values.tolist(),
                        "logsumexp": torch.logsumexp(lg, -1).tolist()})
    return {"alias": alias, **_provenance(alias), "top_k": TOP_K, "prompts": prompts}


def fv_inputs(lm) -> dict:
    """The function-vector check's inputs: 3 clean 10-shot country-capital prompts (for the mean head outputs) and
    the label-shuffled prompt, among 6, whose answer has the most probability to move."""
    from mlx_interp.methods import function_vectors as fv
    from mlx_interp.tasks import icl

    t = icl.load_task("country-capital")
    rng = np.random.default_rng(0)
    clean = [icl.prompt(icl.draw_demos(t, rng), q.x) for q in t.valid[:3]]
    cands = [icl.prompt(icl.draw_demos(t, rng, shuffle_labels=True), q.x) for q in t.valid[:6]]
    cand_ids = fv.answer_ids(lm, cands, [q.y for q in t.valid[:6]])
    best = int(np.argmax(fv.score(lm, cands, cand_ids)[1]))
    return {"clean": clean, "corrupted": cands[best], "answer_id": int(cand_ids[best])}


def compute_fv() -> dict:
    """Mean head outputs (o_proj input, last token) at ``FV_LAYERS`` over the clean prompts, and the gain in
    p(answer) on the corrupted prompt when each head's last-token output is replaced by its mean: the reference's
    own mechanism, a forward pre-hook on o_proj."""
    import torch

    from mlx_interp.store.models import load

    lm = load("smollm2-135m@fp32")
    inputs = fv_inputs(lm)
    ref = _torch_model("smollm2-135m")
    H, d = ref.config.num_attention_heads, ref.config.head_dim
    o_proj = {l: ref.model.layers[l].self_attn.o_proj for l in FV_LAYERS}
    seen: dict = {}
    hooks = [o_proj[l].register_forward_pre_hook(lambda m, a, l=l: seen.setdefault(l, []).append(a[0][0, -1].clone()))
             for l in FV_LAYERS]
    with torch.no_grad():
        for p in inputs["clean"]:
            ref(torch.tensor([lm.tokenizer.encode(p)]))
    for h in hooks:
        h.remove()
    means = {l: torch.stack(seen[l]).mean(0).reshape(H, d) for l in FV_LAYERS}
    x = torch.tensor([lm.tokenizer.encode(inputs["corrupted"])])
    a = inputs["answer_id"]
    with torch.no_grad():
        p0 = torch.softmax(ref(x).logits[0, -1].double(), -1)[a].item()
    effects = {}
    for l in FV_LAYERS:
        row = []
        for h in range(H):
            def patch(m, args, h=h, l=l):
                z = args[0].clone()
                z[0, -1, h * d:(h + 1) * d] = means[l][h]
                return (z,)
            hook = o_proj[l].register_forward_pre_hook(patch)
            with torch.no_grad():
                row.append(torch.softmax(ref(x).logits[0, -1].double(), -1)[a].item() - p0)
            hook.remove()
        effects[str(l)] = row
    return {"alias": "smollm2-135m", **_provenance("smollm2-135m"), "task": "country-capital", **inputs,
            "clean_ids": [lm.tokenizer.encode(p) for p in inputs["clean"]],
            "corrupted_ids": lm.tokenizer.encode(inputs["corrupted"]), "layers": list(FV_LAYERS), "p0": p0,
            "means": {str(l): means[l].tolist() for l in FV_LAYERS}, "effects": effects}


def agree(kept, live, where: str = "") -> list[str]:
    """Where a kept reference file differs from a live recomputation: ids and text exactly, numbers to 1e-5
    (library versions may differ)."""
    if isinstance(live, dict):
        if not isinstance(kept, dict) or set(kept) != set(live):
            return [where or "keys"]
        return [b for k in live if k not in ("transformers", "torch") for b in agree(kept[k], live[k], f"{where}.{k}")]
    if isinstance(live, list):
        if not isinstance(kept, list) or len(kept) != len(live):
            return [where]
        return [b for i, (k, v) in enumerate(zip(kept, live)) for b in agree(k, v, f"{where}[{i}]")]
    if isinstance(live, float):
        return [] if isinstance(kept, (int, float)) and abs(kept - live) <= 1e-5 else [where]
    return [] if kept == live else [where]


def _write(path: Path, doc: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=1) + "\n")
    tmp.replace(path)


def main(argv: list[str]) -> int:
    import mlx_interp  # noqa: F401  (the fast BLAS first)
    from mlx_interp.store.registry import TEST_MODELS

    check = "--check" in argv
    jobs = [(logits_path(a), lambda a=a: compute_logits(a)) for a in TEST_MODELS] + [(FV_PATH, compute_fv)]
    failed = []
    for path, make in jobs:
        doc = make()
        if check:
            bad = agree(json.loads(path.read_text()), doc)
            print(f"{path.name}: {'agrees' if not bad else 'DIFFERS at ' + ', '.join(bad[:5])}")
            failed += bad
        else:
            _write(path, doc)
            print(f"wrote {path}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
