"""Uncertainty for every number a study reports: rates with Wilson intervals, bootstrap intervals, effect sizes.

* ``rate(k, n)``: a proportion with its n and a 95% Wilson score interval (good at small n and at 0 or n,
  where the normal approximation gives impossible bounds);
* ``bootstrap_ci(values)``: percentile bootstrap of any statistic (mean by default), seeded;
* ``paired_diff(a, b)``: mean of a - b over the same items (e.g. fix rate with a patch minus with a control
  patch, item by item) with a paired bootstrap interval;
* ``cohens_d(a, b)``: standardised mean difference (pooled SD) with a bootstrap interval;
* ``auroc(pos, neg)``: how well scores separate two sets, with a bootstrap interval (over pairs for paired sets).

Everything takes plain numbers or numpy arrays and returns dicts that go straight into a result file.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable, Sequence

import numpy as np

from ..errors import MlxInterpError

Z95 = 1.959963984540054


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for k successes in n trials."""
    if n <= 0:
        raise MlxInterpError(f"a rate needs n >= 1 trials; got n={n}")
    if not 0 <= k <= n:
        raise MlxInterpError(f"successes k={k} must lie in 0..n={n}")
    p = k / n
    den = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / den
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    lo, hi = (0.0 if k == 0 else max(0.0, centre - half)), (1.0 if k == n else min(1.0, centre + half))
    return float(lo), float(hi)


@dataclass(frozen=True)
class Rate:
    k: int
    n: int
    p: float
    lo: float
    hi: float

    def as_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        return f"{self.p:.2f} [{self.lo:.2f}, {self.hi:.2f}] ({self.k}/{self.n})"


def rate(k_or_flags, n: int | None = None) -> Rate:
    """``rate(k, n)`` or ``rate(list_of_bools)``: the proportion with its n and 95% Wilson interval."""
    if n is None:
        flags = np.asarray(list(k_or_flags), dtype=bool)
        k, n = int(flags.sum()), int(flags.size)
    else:
        k = int(k_or_flags)
    lo, hi = wilson(k, n)
    return Rate(k, n, k / n, lo, hi)


def bootstrap_ci(values: Sequence[float], stat: Callable[[np.ndarray], float] = np.mean, *, n_boot: int = 10_000,
                 seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of ``stat`` over ``values`` (resampled with replacement, seeded)."""
    x = np.asarray(values, dtype=np.float64)
    if x.size < 2:
        raise MlxInterpError(f"a bootstrap interval needs at least 2 values; got {x.size}")
    idx = np.random.default_rng(seed).integers(0, x.size, size=(n_boot, x.size))
    boots = np.array([stat(x[i]) for i in idx]) if stat is not np.mean else x[idx].mean(axis=1)
    a = (1 - level) / 2
    return float(np.quantile(boots, a)), float(np.quantile(boots, 1 - a))


def basic_interval(point: float, replicates: Sequence[float], *, level: float = 0.95,
                   bounds: tuple[float, float] = (-np.inf, np.inf)) -> tuple[float, float]:
    """Basic (reverse-percentile) bootstrap interval ``[2 point - q_hi, 2 point - q_lo]``, clipped to ``bounds``.

    For a statistic the bootstrap biases (the cosine of two noisy mean directions: resampling adds noise to both, so
    every replicate sits below the estimate), the percentile interval can exclude the estimate itself; the basic
    interval reflects the replicates' spread about the estimate and corrects that shift."""
    r = np.asarray(replicates, dtype=np.float64)
    r = r[np.isfinite(r)]
    if r.size < 2:
        raise MlxInterpError(f"a bootstrap interval needs at least 2 finite replicates; got {r.size}")
    a = (1 - level) / 2
    q_lo, q_hi = np.quantile(r, [a, 1 - a])
    return float(np.clip(2 * point - q_hi, *bounds)), float(np.clip(2 * point - q_lo, *bounds))


def paired_diff(a: Sequence[float], b: Sequence[float], *, n_boot: int = 10_000, seed: int = 0) -> dict:
    """Mean of a - b over paired items with a 95% paired bootstrap interval (a, b: per-item values or 0/1 flags)."""
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.shape != y.shape:
        raise MlxInterpError(f"paired values need the same items; got {x.size} and {y.size}")
    d = x - y
    lo, hi = bootstrap_ci(d, n_boot=n_boot, seed=seed) if d.size >= 2 else (float("nan"), float("nan"))
    return {"diff": float(d.mean()) if d.size else float("nan"), "lo": lo, "hi": hi, "n": int(d.size)}


def cohens_d(a: Sequence[float], b: Sequence[float], *, n_boot: int = 5_000, seed: int = 0) -> dict:
    """(mean a - mean b) / pooled SD, with a 95% bootstrap interval resampling each group."""
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.size < 2 or y.size < 2:
        raise MlxInterpError(f"Cohen's d needs at least 2 values per group; got {x.size} and {y.size}")

    def d(u, v):  # rows of u and v: one d per row
        s = np.sqrt(((u.shape[-1] - 1) * u.var(-1, ddof=1) + (v.shape[-1] - 1) * v.var(-1, ddof=1))
                    / (u.shape[-1] + v.shape[-1] - 2))
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(s > 0, (u.mean(-1) - v.mean(-1)) / np.where(s > 0, s, 1.0), np.nan)

    rng = np.random.default_rng(seed)
    draws = [(rng.integers(0, x.size, x.size), rng.integers(0, y.size, y.size)) for _ in range(n_boot)]  # draw order kept
    boots = d(x[np.stack([i for i, _ in draws])], y[np.stack([j for _, j in draws])])  # every draw's d at once
    lo, hi = np.nanquantile(boots, [0.025, 0.975])
    return {"d": float(d(x, y)), "lo": float(lo), "hi": float(hi), "n_a": int(x.size), "n_b": int(y.size)}


def auroc_value(pos: np.ndarray, neg: np.ndarray) -> float:
    """Probability that a random positive scores above a random negative (ties count half)."""
    diff = np.asarray(pos, dtype=np.float64)[:, None] - np.asarray(neg, dtype=np.float64)[None, :]
    return float(((diff > 0).sum() + 0.5 * (diff == 0).sum()) / diff.size)


def auroc(pos: Sequence[float], neg: Sequence[float], *, paired: bool = False, n_boot: int = 2_000, seed: int = 0) -> dict:
    """AUROC of scores ``pos`` against ``neg`` with a 95% percentile bootstrap interval and its n.

    ``paired``: ``pos[i]`` and ``neg[i]`` come from one item (the same question answered both ways), so items are
    resampled whole; otherwise each set is resampled on its own (both stay non-empty)."""
    p, q = np.asarray(pos, dtype=np.float64), np.asarray(neg, dtype=np.float64)
    if p.size < 2 or q.size < 2:
        raise MlxInterpError(f"an AUROC interval needs at least 2 scores per set; got {p.size} and {q.size}")
    if paired and p.size != q.size:
        raise MlxInterpError(f"paired AUROC needs one positive and one negative per item; got {p.size} and {q.size}")
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(n_boot):
        if paired:
            i = rng.integers(0, p.size, p.size)
            boots.append(auroc_value(p[i], q[i]))
        else:
            boots.append(auroc_value(p[rng.integers(0, p.size, p.size)], q[rng.integers(0, q.size, q.size)]))
    lo, hi = np.quantile(boots, [0.025, 0.975])
    return {"auroc": auroc_value(p, q), "lo": float(lo), "hi": float(hi), "n_pos": int(p.size), "n_neg": int(q.size),
            "paired": paired}
