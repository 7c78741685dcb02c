"""Alignment maps from one model's residual stream to another's: least squares, ridge, orthogonal Procrustes.

A ``LinearMap`` sends a state x [D_a] to x @ W + b [D_b]. A *direction* (a difference of states) maps through W
alone (``map_direction``), because the offset cancels in a difference. ``fit`` learns a map on ``Pairs`` from some
texts, and ``evaluate`` scores it on pairs from other texts: R^2 of the mapped states, and the mean cosine of each
mapped state with its partner, both after centring. Maps save and load as ``.safetensors`` with provenance.

Procrustes needs equal widths. Where the widths differ, both sides are first reduced to their top-k principal
components, with k = min(D_a, D_b, n - 1). The rotation between the reduced spaces is scaled by the least-squares
factor, so W = P_a R s P_b^T.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import mlx.core as mx
import numpy as np

from ..errors import MlxInterpError
from ..readouts.vectors import VectorSet
from ..runs.files import read_safetensors, write_safetensors
from .pairs import Pairs

KINDS = ("lstsq", "ridge", "procrustes")
FORMAT = "mlx-interp-linear-map-1"
MIN_TEXTS = 8  # a map fitted on fewer texts learns those texts, not the two models (rows within a text are correlated)


def check_enough(pairs: Pairs) -> None:
    """Refuse pairs too few to fit a map: at least MIN_TEXTS distinct texts. (With fewer rows than source
    dimensions least squares returns the minimum-norm solution; ``fit`` records that as ``underdetermined``.)"""
    n_texts = int(len(np.unique(pairs.text_index)))
    if n_texts < MIN_TEXTS or len(pairs.a) < 2:
        raise MlxInterpError(f"fitting a map needs pairs from at least {MIN_TEXTS} texts; these come from {n_texts} "
                             f"({len(pairs.a)} rows)")


@dataclass
class LinearMap:
    W: np.ndarray  # [D_a, D_b]
    b: np.ndarray  # [D_b]
    kind: str
    source: str
    target: str
    layers: tuple[int, int]
    meta: dict = field(default_factory=dict)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if x.shape[-1] != self.W.shape[0]:
            raise MlxInterpError(f"a state of width {x.shape[-1]} cannot go through a map from {self.source} "
                                 f"(width {self.W.shape[0]})")
        return x @ self.W + self.b

    def map_direction(self, v: np.ndarray) -> np.ndarray:
        """A direction (difference of states) in the target's space: v @ W (the offset cancels)."""
        v = np.asarray(v, dtype=np.float64)
        if v.shape[-1] != self.W.shape[0]:
            raise MlxInterpError(f"a direction of width {v.shape[-1]} cannot go through a map from {self.source} "
                                 f"(width {self.W.shape[0]})")
        return v @ self.W

    def save(self, path: str | Path) -> Path:
        meta = {"format": FORMAT, "kind": self.kind, "source": self.source, "target": self.target,
                "layers": json.dumps(list(self.layers)), "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "extra": json.dumps(self.meta, default=str)}
        return write_safetensors(path, {"W": mx.array(self.W.astype(np.float32)), "b": mx.array(self.b.astype(np.float32))},
                                 meta, "linear map")

    @classmethod
    def load(cls, path: str | Path, source=None, target=None) -> "LinearMap":
        """A saved map or adapter; given the models (``LoadedModel`` or name), checks it is theirs."""
        arrays, meta = read_safetensors(path, "linear map")
        if meta.get("format") != FORMAT or set(arrays) != {"W", "b"}:
            raise MlxInterpError(f"{Path(path).name} is not an mlx-interp linear map (format {meta.get('format')!r})")
        W, b = (np.array(arrays[k], dtype=np.float64) for k in ("W", "b"))
        m = cls(W, b, meta["kind"], meta["source"], meta["target"], tuple(json.loads(meta["layers"])), json.loads(meta["extra"]))
        want = tuple(getattr(x, "name", x) for x in (source, target))
        for side, have, w in (("source", m.source, want[0]), ("target", m.target, want[1])):
            if w is not None and w != have:
                raise MlxInterpError(f"{Path(path).name} is a {m.kind} map {m.source} -> {m.target}; its {side} is not {w}")
        return m

    def map_vectors(self, vs: VectorSet) -> VectorSet:
        """A ``VectorSet`` of the source model at the map's source layer, carried to the target's layer."""
        if vs.model != self.source:
            raise MlxInterpError(f"these vectors come from {vs.model}; the map starts at {self.source}")
        if self.layers[0] not in vs.vectors:
            raise MlxInterpError(f"the map was fitted at source layer {self.layers[0]}; the vectors have layers "
                                 f"{sorted(vs.vectors)}")
        site = self.meta.get("site", vs.site)
        if vs.site != site:
            raise MlxInterpError(f"the map was fitted on {site}; the vectors live at {vs.site}")
        out = self.map_direction(vs.vectors[self.layers[0]]).astype(np.float32)
        return VectorSet({self.layers[1]: out}, self.target, vs.method,
                         {**vs.meta, "mapped_from": vs.model, "map_kind": self.kind, "source_layer": self.layers[0]}, vs.site)


def _pcs(X: np.ndarray, k: int) -> np.ndarray:
    """[D, k] top-k principal directions of centred X."""
    _, _, vt = np.linalg.svd(X, full_matrices=False)
    return vt[:k].T


def fit(pairs: Pairs, kind: str = "ridge", alpha: float = 1.0) -> LinearMap:
    """A map from ``pairs.a`` to ``pairs.b``. ``alpha``: ridge strength, relative to the mean eigenvalue of the
    centred source scatter matrix (so one value suits models of any scale)."""
    if kind not in KINDS:
        raise MlxInterpError(f"kind={kind!r} is not valid; use one of {', '.join(KINDS)}")
    check_enough(pairs)
    A, B = np.asarray(pairs.a, dtype=np.float64), np.asarray(pairs.b, dtype=np.float64)
    n = len(A)
    ma, mb = A.mean(axis=0), B.mean(axis=0)
    Ac, Bc = A - ma, B - mb
    meta = {"n_rows": n, "n_texts": int(len(np.unique(pairs.text_index))), "site": pairs.site, "align": pairs.align}
    if kind == "lstsq":
        W = np.linalg.lstsq(Ac, Bc, rcond=None)[0]
        meta["underdetermined"] = bool(n <= A.shape[1])
    elif kind == "ridge":
        if alpha < 0:
            raise MlxInterpError(f"alpha={alpha} must be >= 0")
        lam = alpha * float(np.mean(np.sum(Ac ** 2, axis=0)))
        W = np.linalg.solve(Ac.T @ Ac + lam * np.eye(A.shape[1]), Ac.T @ Bc)
        meta["alpha"] = alpha
    else:
        k = min(A.shape[1], B.shape[1], n - 1)
        Pa, Pb = _pcs(Ac, k), _pcs(Bc, k)
        a, b = Ac @ Pa, Bc @ Pb
        u, s, vt = np.linalg.svd(a.T @ b)
        R = u @ vt
        scale = float(s.sum() / max(np.sum(a ** 2), 1e-12))
        W = Pa @ (scale * R) @ Pb.T
        meta.update({"reduced_to": k, "scale": scale})
    return LinearMap(W, mb - ma @ W, kind, pairs.source, pairs.target, pairs.layers, meta)


def evaluate(m: LinearMap, pairs: Pairs) -> dict:
    """R^2 (1 - residual / total variance of the target, over held-out rows) and the mean cosine between each
    mapped state and its partner, both centred on the held-out target mean."""
    if (pairs.source, pairs.target) != (m.source, m.target):
        raise MlxInterpError(f"the map goes {m.source} -> {m.target}; these pairs are {pairs.source} -> {pairs.target}")
    P, B = m(pairs.a), np.asarray(pairs.b, dtype=np.float64)
    mb = B.mean(axis=0)
    r2 = 1.0 - float(np.sum((B - P) ** 2) / max(np.sum((B - mb) ** 2), 1e-12))
    pc, bc = P - mb, B - mb
    cos = np.sum(pc * bc, axis=1) / np.maximum(np.linalg.norm(pc, axis=1) * np.linalg.norm(bc, axis=1), 1e-12)
    return {"r2": r2, "cosine_mean": float(cos.mean()), "n_rows": int(len(B)), "n_texts": int(len(np.unique(pairs.text_index)))}


def carriers(source, target, fitted: dict) -> dict:
    """How a source direction reaches the target: ``"direct"`` where the widths match (the vector as it is), then
    each fitted map (name -> ``LinearMap``) by its ``map_direction``: name -> function of a vector."""
    out = {"direct": (lambda v: np.asarray(v, dtype=np.float64))} if source.width == target.width else {}
    out.update({k: m.map_direction for k, m in fitted.items()})
    return out
