"""Tuned lens (Belrose et al. 2023): an affine translator per layer, trained so the lens matches the final layer.

The logit lens reads ``resid_post l`` with the model's own final norm and unembedding; in small tied-embedding
models almost nothing surfaces before the last layers that way. The tuned lens first maps the state with a
learned affine translator, ``h + A_l h + b_l`` (A, b start at zero, so training starts from the logit lens), then
applies the same frozen norm and unembedding. As in the reference (AlignmentResearch/tuned-lens): one translator
per layer but the last (whose lens is the model itself), trained to minimise KL(final || lens) at the same
position, each layer's loss on its own; weight decay pulls the map toward the identity.

Training runs in MLX (``mlx.optimizers``) on text that ships with the package (``tasks.datasets.lens_texts``):
residuals and the final distributions are computed once, then ``steps`` minibatches of tokens per layer.
Deviations from the reference, stated with every result: Adam (lr 1e-3, decay 1e-3) instead of SGD-Nesterov, tens
of thousands of tokens instead of 65M, and the target distribution stored as its top ``TOP_K`` tokens plus one
bucket for the rest (the lens side keeps the full vocabulary), which gives a lower bound on the KL that is tight
when the top tokens carry the mass (their mean mass is reported). ``held_out`` reports the mean KL per layer on
separate text for the logit lens and the tuned lens.

A lens is saved as ``.safetensors`` (``A.<layer>``, ``b.<layer>``) with its model name, training settings and
held-out KL; it loads only for the model it was trained on (``load(path, lm)``). Training can stop and resume layer
by layer: ``on_layer`` receives the lens after each finished layer (the CLI writes it, marked incomplete), and
``resume=`` a partial lens with the same settings skips its finished layers. Each layer draws its minibatches from
its own generator (``seed, layer``), so a resumed lens is the lens an uninterrupted run trains.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import mlx.core as mx
import numpy as np

from ..core.capture import Capture
from ..core.parts import parts
from ..core.trace import run
from ..errors import MlxInterpError
from ..runs.files import read_safetensors, write_safetensors

TOP_K = 128


@dataclass
class TunedLens:
    model: str  # LoadedModel.name it was trained on
    translators: dict = field(default_factory=dict)  # layer -> (A [D, D], b [D]) as mx arrays
    meta: dict = field(default_factory=dict)

    def logits(self, lm, h: mx.array, layer: int) -> mx.array:
        """Lens logits [..., V] (fp32) of residuals ``h`` [..., D] at ``resid_post layer`` (the last layer: the model's own)."""
        p = parts(lm.model)
        if layer == lm.n_layers - 1:
            return p.logits(h).astype(mx.float32)
        if layer not in self.translators:
            raise MlxInterpError(f"this tuned lens has no translator for layer {layer}; it has {sorted(self.translators)}")
        A, b = self.translators[layer]
        return p.logits(h + h @ A.T + b).astype(mx.float32)

    @property
    def complete(self) -> bool:
        """False for a lens whose training stopped part-way (files from before resumable training are complete)."""
        return bool(self.meta.get("complete", True))

    def save(self, path: str | Path) -> Path:
        arrays = {f"{k}.{l}": v for l, (A, b) in self.translators.items() for k, v in (("A", A), ("b", b))}
        return write_safetensors(path, arrays, {"model": self.model, "meta": json.dumps(self.meta)}, "tuned-lens")

    @classmethod
    def load(cls, path: str | Path, lm=None) -> "TunedLens":
        path = Path(path)
        arrays, meta = read_safetensors(path, "tuned-lens", " (train one: mlx-interp train-lens --model M)")
        layers = sorted({int(k.split(".")[1]) for k in arrays})
        lens = cls(meta.get("model", "?"), {l: (arrays[f"A.{l}"], arrays[f"b.{l}"]) for l in layers}, json.loads(meta.get("meta", "{}")))
        if lm is not None and lens.model != lm.name:
            raise MlxInterpError(f"{path.name} is a tuned lens for {lens.model}, not {lm.name}")
        return lens


def default_path(lm) -> Path:
    """Where ``mlx-interp train-lens`` keeps a model's lens: ``$MLX_INTERP_CACHE/lenses/<name>.safetensors``."""
    from ..store.models import cache_dir

    return cache_dir() / "lenses" / f"{lm.name.replace('/', '_')}.safetensors"


def _residuals(lm, texts: Sequence[str], max_len: int, batch_size: int = 8):
    """Per text token (BOS and padding dropped): resid_post of layers 0..L-2 and the final top-K distribution."""
    toks = [lm.tokenizer.encode(t)[:max_len] for t in texts]
    layers = list(range(lm.n_layers - 1))
    hs: dict[int, list] = {l: [] for l in layers}
    top_ids, top_lp, rest = [], [], []
    p = parts(lm.model)
    for i in range(0, len(toks), batch_size):
        chunk = [t for t in toks[i:i + batch_size] if len(t) > 1]
        if not chunk:
            continue
        tr = run(lm, chunk, capture=Capture("resid_post", "all", "all"), logits="none", batch_size=None)
        last = tr["resid_post", lm.n_layers - 1]
        for b, pad in enumerate(tr.pads):
            keep = slice(pad + 1, None)  # skip each text's first token (an attention sink with outsized norms)
            lg = p.logits(last[b, keep]).astype(mx.float32)
            lp = lg - mx.logsumexp(lg, axis=-1, keepdims=True)
            ids = mx.argpartition(-lp, kth=TOP_K - 1, axis=-1)[:, :TOP_K]
            tl = mx.take_along_axis(lp, ids, axis=-1)
            top_ids.append(np.array(ids))
            top_lp.append(np.array(tl))
            rest.append(np.array(mx.log(mx.maximum(1 - mx.exp(tl).sum(-1), 1e-12))))
            for l in layers:
                hs[l].append(np.array(tr["resid_post", l][b, keep]))
    return ({l: np.concatenate(v) for l, v in hs.items()}, np.concatenate(top_ids), np.concatenate(top_lp), np.concatenate(rest))


def _kl(lm, A, b, h, ids, tlp, rest):
    """Bucketed KL(final || lens) per token: the final top-K tokens plus one bucket for the rest of the vocabulary."""
    q = parts(lm.model).logits(h + h @ A.T + b).astype(mx.float32)
    lq = q - mx.logsumexp(q, axis=-1, keepdims=True)
    ql = mx.take_along_axis(lq, ids, axis=-1)
    q_rest = mx.log(mx.maximum(1 - mx.exp(ql).sum(-1), 1e-12))
    p = mx.exp(tlp)
    return (p * (tlp - ql)).sum(-1) + mx.exp(rest) * (rest - q_rest)


def _fingerprint(texts: Sequence[str]) -> str:
    return hashlib.sha256("\x00".join(texts).encode()).hexdigest()[:16]


def train_tuned_lens(lm, texts: Sequence[str], val_texts: Sequence[str], *, layers=None, steps: int = 200,
                     batch_tokens: int = 256, lr: float = 1e-3, weight_decay: float = 1e-3, max_len: int = 128,
                     seed: int = 0, resume: TunedLens | None = None,
                     on_layer: Callable[[TunedLens], None] | None = None,
                     progress: Callable[[str], None] | None = None) -> TunedLens:
    """Train one translator per layer (default: every layer but the last) and report held-out KL per layer.

    ``resume``: a partial lens from an interrupted run with the same settings; its finished layers are kept.
    ``on_layer``: called with the lens after each finished layer (``meta["complete"]`` says whether all are done)."""
    import mlx.optimizers as optim

    if not texts or not val_texts:
        raise MlxInterpError("a tuned lens needs training texts and separate held-out texts")
    if steps < 1 or batch_tokens < 1:
        raise MlxInterpError(f"steps={steps} and batch_tokens={batch_tokens} must be >= 1")
    all_layers = list(range(lm.n_layers - 1))
    layers = all_layers if layers is None else sorted(set(layers))
    bad = [l for l in layers if l not in all_layers]
    if bad:
        raise MlxInterpError(f"tuned-lens layer {bad[0]} is not valid; valid: 0..{lm.n_layers - 2} (the last layer is the model)")
    settings = {"layers": layers, "steps": steps, "batch_tokens": batch_tokens, "optimizer": f"AdamW lr {lr} weight decay {weight_decay}",
                "top_k_target": TOP_K, "max_len": max_len, "seed": seed, "sampling": "numpy default_rng((seed, layer)) per layer",
                "train_texts": _fingerprint(texts), "val_texts": _fingerprint(val_texts)}
    lens, held, wall_before = TunedLens(lm.name), {}, 0.0
    if resume is not None:
        if resume.model != lm.name:
            raise MlxInterpError(f"cannot resume a tuned lens for {resume.model} on {lm.name}")
        old = resume.meta
        if "sampling" not in old:
            raise MlxInterpError("this lens file predates resumable training (its metadata has no 'sampling'); train it again without --resume")
        diff = next((k for k in settings if old.get(k) != settings[k]), None)
        if diff is not None:
            raise MlxInterpError(f"cannot resume: this lens was trained with {diff}={old.get(diff)!r}, this run has {settings[diff]!r}")
        lens.translators = dict(resume.translators)
        held = {int(k): v for k, v in resume.meta.get("held_out_kl", {}).items()}
        wall_before = float(resume.meta.get("wall_s", 0.0))
    todo = [l for l in layers if l not in lens.translators]
    t0 = time.time()
    tr_h, tr_ids, tr_lp, tr_rest = _residuals(lm, texts, max_len)
    va_h, va_ids, va_lp, va_rest = _residuals(lm, val_texts, max_len)
    D, n = lm.width, len(tr_ids)

    def loss_fn(prm, h, ids, tlp, rest):
        return _kl(lm, prm["A"], prm["b"], h, ids, tlp, rest).mean()

    grad = mx.value_and_grad(loss_fn)

    def finish(complete: bool) -> None:
        lens.meta = {"train_tokens": int(n), "val_tokens": int(len(va_ids)), **settings,
                     "target_top_k_mass_val": float(np.exp(va_lp).sum(-1).mean()),
                     "held_out_kl": {str(k): held[k] for k in sorted(held)}, "wall_s": round(wall_before + time.time() - t0, 1),
                     "objective": "bucketed KL(final || lens), nats per token",
                     "complete": complete, "layers_done": sorted(lens.translators)}

    for j, l in enumerate(todo):
        params = {"A": mx.zeros((D, D)), "b": mx.zeros((D,))}
        opt = optim.AdamW(learning_rate=lr, weight_decay=weight_decay)
        rng = np.random.default_rng((seed, l))
        for step in range(steps):
            idx = rng.integers(0, n, size=min(batch_tokens, n))
            loss, g = grad(params, mx.array(tr_h[l][idx]), mx.array(tr_ids[idx]), mx.array(tr_lp[idx]), mx.array(tr_rest[idx]))
            params = opt.apply_gradients(g, params)
            mx.eval(params, opt.state, loss)
            if progress and (step + 1) % max(1, steps // 5) == 0:
                progress(f"layer {l} ({j + 1}/{len(todo)} this run, {len(layers)} in all) step {step + 1}/{steps}: train KL {float(loss):.3f}")
        lens.translators[l] = (params["A"], params["b"])
        zero = mx.zeros((D, D)), mx.zeros((D,))
        kls = {}
        for name, (A, b) in (("logit_lens", zero), ("tuned_lens", (params["A"], params["b"]))):
            vals = [_kl(lm, A, b, mx.array(va_h[l][i:i + 512]), mx.array(va_ids[i:i + 512]), mx.array(va_lp[i:i + 512]),
                       mx.array(va_rest[i:i + 512])) for i in range(0, len(va_ids), 512)]
            kls[name] = float(mx.concatenate(vals).mean().item())
        held[l] = kls
        finish(complete=len(lens.translators) == len(layers))
        if on_layer is not None:
            on_layer(lens)
    if not todo:
        finish(complete=True)
    return lens
