"""Steering vectors and directions as ``.safetensors`` files with metadata.

A file holds one tensor per layer (``layer.<i>``, shape [D]) and string metadata:
model, width, method, position rule, norm per layer, created timestamp, plus any extra
keys. ``load_vector`` validates finiteness and, given a model, the width.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import mlx.core as mx
import numpy as np

from ..errors import MlxInterpError
from ..runs.files import read_safetensors, write_safetensors


@dataclass
class VectorSet:
    """Per-layer vectors of one direction, with provenance."""

    vectors: dict[int, np.ndarray]
    model: str  # LoadedModel.name (alias@precision) of the model they came from
    method: str
    meta: dict = field(default_factory=dict)
    site: str = "resid_post"  # the site kind the vectors live at

    @property
    def width(self) -> int:
        return int(next(iter(self.vectors.values())).shape[-1])

    def __getitem__(self, layer: int) -> np.ndarray:
        if layer not in self.vectors:
            raise MlxInterpError(f"no vector for layer {layer}; this file has layers {sorted(self.vectors)}")
        return self.vectors[layer]

    def norms(self) -> dict[int, float]:
        return {k: float(np.linalg.norm(v)) for k, v in self.vectors.items()}


def save_vector(path: str | Path, vs: VectorSet) -> Path:
    path = Path(path)
    if path.suffix != ".safetensors":
        raise MlxInterpError(f"vector file {str(path)!r} must end in .safetensors")
    if not vs.vectors:
        raise MlxInterpError("no vectors to save")
    arrays = {}
    for k, v in vs.vectors.items():
        a = np.asarray(v, dtype=np.float32)
        if not np.all(np.isfinite(a)):
            raise MlxInterpError(f"vector for layer {k} has non-finite values; not saving")
        arrays[f"layer.{k}"] = mx.array(a)
    meta = {
        "model": vs.model,
        "method": vs.method,
        "site": vs.site,
        "width": str(vs.width),
        "layers": json.dumps(sorted(vs.vectors)),
        "norms": json.dumps({str(k): round(n, 6) for k, n in vs.norms().items()}),
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "extra": json.dumps(vs.meta, default=str),
    }
    return write_safetensors(path, arrays, meta, "vector")


def load_vector(path: str | Path, lm=None) -> VectorSet:
    path = Path(path)
    arrays, meta = read_safetensors(path, "vector")
    vecs = {}
    for k, a in arrays.items():
        if not k.startswith("layer."):
            continue
        v = np.array(a.astype(mx.float32))
        if not np.all(np.isfinite(v)):
            raise MlxInterpError(f"{path.name}: vector {k} has non-finite values")
        vecs[int(k.split(".", 1)[1])] = v
    if not vecs:
        raise MlxInterpError(f"{path.name} holds no 'layer.<i>' tensors; not an mlx-interp vector file")
    vs = VectorSet(vecs, meta.get("model", "?"), meta.get("method", "?"), json.loads(meta.get("extra", "{}")),
                   meta.get("site", "resid_post"))
    if lm is not None and vs.width != lm.width:
        raise MlxInterpError(
            f"{path.name} has width {vs.width} (from {vs.model}) but {lm.name}'s residual stream has width {lm.width}"
        )
    return vs


def compare_vectors(a: VectorSet, b: VectorSet, layers=None) -> dict[int, dict]:
    """Per shared layer: cosine of ``b`` with ``a`` and the norm ratio |b| / |a|.

    Both sets must live at the same site with the same width (two precisions of one model, say); a cross-model
    comparison goes through ``transfer.maps`` first. ``layers``: those to compare (default: every layer of ``a``,
    each of which ``b`` must have)."""
    if a.width != b.width:
        raise MlxInterpError(f"cannot compare vectors of width {a.width} ({a.model}) and {b.width} ({b.model}); "
                             "map one into the other's space first (mlx_interp.transfer.maps)")
    if a.site != b.site:
        raise MlxInterpError(f"cannot compare vectors at {a.site} ({a.model}) with vectors at {b.site} ({b.model})")
    want = sorted(a.vectors) if layers is None else sorted(layers)
    missing = [k for k in want if k not in a.vectors or k not in b.vectors]
    if missing:
        raise MlxInterpError(f"layer {missing[0]} is missing: {a.model} has layers {sorted(a.vectors)}, "
                             f"{b.model} has {sorted(b.vectors)}")
    return {k: cosine_and_norm_ratio(a.vectors[k], b.vectors[k]) for k in want}


def cosine_and_norm_ratio(va, vb) -> dict:
    """``{"cosine": cos(va, vb), "norm_ratio": |vb| / |va|}`` of two vectors; the cosine is None where the widths
    differ (two spaces: map one into the other first)."""
    va, vb = np.asarray(va, dtype=np.float64), np.asarray(vb, dtype=np.float64)
    na, nb = float(np.linalg.norm(va)), float(np.linalg.norm(vb))
    cos = float(va @ vb / max(na * nb, 1e-300)) if va.shape == vb.shape else None
    return {"cosine": cos, "norm_ratio": nb / na if na > 0 else float("nan")}
