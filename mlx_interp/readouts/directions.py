"""Direction extraction from captured activations: one interface, three methods.

``extract(lm, positive, negative, method=...)`` captures residuals (``collect``) and applies, per layer:

* ``"diff_of_means"``: mean(positive) - mean(negative), accumulated in float64 (Arditi et al.);
* ``"probe"``: L2-regularised logistic regression on a random 75/25 split, solved exactly (Newton); the direction
  is the weight vector mapped back to the residual's units (divided by the feature scale), and the held-out
  accuracy and AUROC are reported per layer;
* ``"pca"``: first principal component of the paired differences positive_i - negative_i
  (repeng's "pca_diff"), sign chosen so that the differences project positively, scaled to the mean
  projection so that it has the size of a typical difference.

The array-level functions (``diff_of_means_vec``, ``probe_vec``, ``pca_vec``) take [N, D] arrays, so
they can be tested on constructed data and reused on any activations. ``split_consistency`` gives the
cosine between vectors from two disjoint halves of the data.
"""

from __future__ import annotations

from typing import Sequence

import mlx.core as mx
import numpy as np

from ..core.batching import DEFAULT_BATCH_SIZE, DEFAULT_CHAT
from ..core.capture import Capture
from ..core.positions import DEFAULT_READ_POSITION, Positions
from ..core.sites import SiteArg
from ..core.trace import run
from ..errors import MlxInterpError
from ..measures.stats import auroc_value
from ..runs import journal
from .vectors import VectorSet

METHODS = ("diff_of_means", "probe", "pca")


def collect(
    lm,
    prompts,
    *,
    site: SiteArg = "resid_post",
    layers="all",
    positions: Positions = DEFAULT_READ_POSITION,
    batch_size: int | None = DEFAULT_BATCH_SIZE,
    chat: bool = DEFAULT_CHAT,
) -> dict[int, np.ndarray]:
    """Activations [N, D] (or [N, k, D] for k positions) in float64 per layer of one site kind.

    ``positions`` must give each prompt a fixed number of vectors ("last", an int, a list, or a
    Span / "prompt" for a mean); prompts may be strings or token lists (already formatted).
    """
    prompts = list(prompts)
    if not prompts:
        raise MlxInterpError("prompt list is empty; direction extraction needs prompts")
    if positions == "all":
        raise MlxInterpError("collect needs one vector per prompt; positions='all' gives a variable number "
                             "(use 'last', an int, a list, Span(a, b) or 'prompt' for a mean)")
    if not isinstance(site, str):
        raise MlxInterpError(f"collect reads one site kind at a time; got {site!r}")
    tr = run(lm, prompts, capture=Capture(site, layers, positions), logits="none", chat=chat, batch_size=batch_size)
    return {l: np.array(a.astype(mx.float32), dtype=np.float64) for l, a in tr[site].items()}


def collect_ab(
    lm,
    items,
    *,
    site: SiteArg = "resid_post",
    layers="all",
    matching: Sequence[str] | None = None,
    batch_size: int | None = DEFAULT_BATCH_SIZE,
) -> tuple[dict[int, np.ndarray], dict[int, np.ndarray]]:
    """Activations at the answer letter of each A/B item (``measures.ab.ABItems``) answered (A) and answered (B):
    two ``{layer: [N, D]}``, float64, in item order; with ``matching`` (each item's behaviour-matching letter),
    answered with the matching letter and with the other one (CAA's positive and negative examples).

    The prompt both answers share runs once and its cache is continued by each answer's letter token: the
    activation at the letter does not depend on what follows it, so this reads what a pass over each full answer
    reads at its letter (tested equal) for one pass over the prompts instead of two. Journaled as its activations
    (``runs.journal.memo``): its cache-continued passes cannot be."""
    if not isinstance(site, str):
        raise MlxInterpError(f"collect_ab reads one site kind at a time; got {site!r}")
    n = len(items.prompts)
    if not n:
        raise MlxInterpError("no A/B items given; direction extraction needs prompts")
    if matching is not None and (len(matching) != n or set(matching) - {"A", "B"}):
        raise MlxInterpError(f"matching needs one letter 'A' or 'B' per item ({n} items); got {list(matching)[:5]!r}")
    a, b = journal.memo("collect_ab", (lm.name, items.prompts, items.a_ids, items.b_ids, site, layers, batch_size),
                        lambda: _collect_ab(lm, items, site, layers, batch_size))
    if matching is None:
        return a, b
    is_a = np.array([m == "A" for m in matching])[:, None]
    return {l: np.where(is_a, a[l], b[l]) for l in a}, {l: np.where(is_a, b[l], a[l]) for l in a}


def _collect_ab(lm, items, site, layers, batch_size) -> tuple[dict, dict]:
    from ..core.kvcache import PromptCache

    n = len(items.prompts)
    step = n if batch_size is None else batch_size
    a_parts, b_parts = [], []
    for at in range(0, n, step):
        rows = slice(at, min(n, at + step))
        shared = run(lm, items.prompts[rows], logits="none", return_cache=True, batch_size=None).cache
        letters = [[t] for t in items.a_ids[rows]] + [[t] for t in items.b_ids[rows]]
        tr = run(lm, letters, cache=PromptCache.stack([shared, shared]), capture=Capture(site, layers, "last"),
                 logits="none", batch_size=None)
        k = len(letters) // 2
        acts = {l: np.array(a.astype(mx.float32), dtype=np.float64) for l, a in tr[site].items()}
        a_parts.append({l: x[:k] for l, x in acts.items()})
        b_parts.append({l: x[k:] for l, x in acts.items()})
    return ({l: np.concatenate([p[l] for p in a_parts]) for l in a_parts[0]},
            {l: np.concatenate([p[l] for p in b_parts]) for l in b_parts[0]})


def collect_responses(
    lm,
    prompts: Sequence[str],
    responses: Sequence[str],
    *,
    site: SiteArg = "resid_post",
    layers="all",
    chat: bool = DEFAULT_CHAT,
    batch_size: int | None = 4,
) -> dict[str, dict[int, np.ndarray]]:
    """Activations over each response read after its prompt: ``{"mean": {layer: [N, D]}, "last": {layer: [N, D]}}``,
    the mean over the response's tokens and its last token, float64.

    The prompt is formatted as everywhere (``chat``); the response is tokenized on its own, without special tokens,
    and appended (an empty response reads the end-of-sequence token). Used where a trait lives in what a model
    writes rather than in what it is asked (exp15's response vectors, exp17's preference vector). Journaled as the
    reduced activations (``runs.journal.memo``), not the all-position pass, which can exceed what a journal keeps."""
    from ..core.batching import encode

    if len(prompts) != len(responses) or not prompts:
        raise MlxInterpError(f"need one response per prompt; got {len(prompts)} prompts and {len(responses)} responses")
    heads = encode(lm, list(prompts), chat)
    tails = [lm.tokenizer.encode(r, add_special_tokens=False) or [lm.tokenizer.eos_token_id] for r in responses]
    return journal.memo("collect_responses", (lm.name, heads, tails, site, layers, batch_size),
                        lambda: _collect_responses(lm, heads, tails, site, layers, batch_size))


def _collect_responses(lm, heads, tails, site, layers, batch_size) -> dict:
    tr = run(lm, [h + t for h, t in zip(heads, tails)], capture=Capture(site, layers, "all"), logits="none",
             batch_size=batch_size)
    out = {"mean": {}, "last": {}}
    for l in tr[site]:
        rows = [np.array(r[-len(t):].astype(mx.float32), dtype=np.float64) for r, t in zip(tr.per_prompt(site, l), tails)]
        out["mean"][l] = np.stack([r.mean(axis=0) for r in rows])
        out["last"][l] = np.stack([r[-1] for r in rows])
    return out


def _check(pos: np.ndarray, neg: np.ndarray, what: str = "") -> None:
    for name, a in (("positive", pos), ("negative", neg)):
        if a.ndim != 2 or a.shape[0] < 2:
            raise MlxInterpError(f"{name} set{what} has {a.shape[0] if a.ndim else 0} example(s); need at least 2 per class")
        if not np.all(np.isfinite(a)):
            raise MlxInterpError(f"{name} activations{what} contain NaN or inf; cannot extract a direction")
    if pos.shape[1] != neg.shape[1]:
        raise MlxInterpError(f"positive width {pos.shape[1]} != negative width {neg.shape[1]}")


def _group_index(groups, n: int) -> list[np.ndarray]:
    """Indices of each distinct label of a paired grouping (e.g. which letter the matching answer is)."""
    g = np.asarray(list(groups), dtype=object)
    if len(g) != n:
        raise MlxInterpError(f"groups has {len(g)} labels for {n} paired examples; give one label per pair")
    return [np.flatnonzero(g == u) for u in dict.fromkeys(g.tolist())]


def diff_of_means_vec(pos: np.ndarray, neg: np.ndarray, groups: Sequence | None = None) -> np.ndarray:
    """mean(pos) - mean(neg) in float64; with ``groups`` (paired sets), the mean over groups of each group's
    difference, so that a nuisance that flips between groups (the letter of the matching A/B answer) cancels
    exactly even when the groups are unequal in size."""
    _check(pos, neg)
    pos, neg = pos.astype(np.float64), neg.astype(np.float64)
    if groups is None:
        return pos.mean(0) - neg.mean(0)
    if pos.shape != neg.shape:
        raise MlxInterpError(f"groups need paired sets of equal size; got {len(pos)} and {len(neg)}")
    return np.mean([pos[i].mean(0) - neg[i].mean(0) for i in _group_index(groups, len(pos))], axis=0)


def _auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Probability that a random positive scores above a random negative (ties count half)."""
    p, n = scores[labels == 1], scores[labels == 0]
    if len(p) == 0 or len(n) == 0:
        return float("nan")
    return auroc_value(p, n)


def probe_vec(pos: np.ndarray, neg: np.ndarray, *, l2: float = 1e-2, seed: int = 0, holdout: float = 0.25,
              max_iter: int = 50, paired: bool = False) -> tuple[np.ndarray, dict]:
    """Logistic-regression direction and held-out metrics {"accuracy", "auroc", "n_train", "n_test"}; ``paired``:
    ``pos[i]`` and ``neg[i]`` are one item's two sides and the holdout keeps them together (``probe_vecs``)."""
    _check(pos, neg)
    return probe_vecs({0: pos}, {0: neg}, l2=l2, seed=seed, holdout=holdout, max_iter=max_iter, paired=paired)[0]


def _logistic_fit(Z: np.ndarray, y: np.ndarray, l2: float, max_iter: int) -> tuple[np.ndarray, float]:
    """The exact minimiser (w, b) of mean log-loss + l2/2 |w|^2 (bias unpenalised) on standardised features Z [n, D],
    by Newton's method with a backtracking line search. The D x D Newton system is solved through the n x n kernel
    Z Z^T (Woodbury), so D >> n costs n^3, not D^3. The objective is strongly convex, so the minimiser is unique and
    moves little when the activations move little (BUGFIX #48: the fixed-step gradient descent this replaces was
    unstable on correlated residual features, and rounding noise of 1e-7 moved a held-out AUROC by 0.12)."""
    n, D = Z.shape
    K = Z @ Z.T
    w, b = np.zeros(D), 0.0
    sign = 2 * y - 1

    def loss(w, b):
        return float(np.logaddexp(0.0, -sign * (Z @ w + b)).mean() + 0.5 * l2 * w @ w)

    f = loss(w, b)
    for _ in range(max_iter):
        p = 1 / (1 + np.exp(-np.clip(Z @ w + b, -500, 500)))
        r = p - y
        gw, gb = Z.T @ r / n + l2 * w, float(r.mean())
        if max(np.abs(gw).max(), abs(gb)) < 1e-9:
            break
        s = np.sqrt(p * (1 - p))
        inner = l2 * np.eye(n) + (s[:, None] * K * s[None, :]) / n  # I l2 + U^T U, U = Z^T S^(1/2) / sqrt(n)

        def solve(v):  # (l2 I + Z^T S Z / n)^-1 v
            return (v - Z.T @ (s * np.linalg.solve(inner, s * (Z @ v))) / n) / l2

        c = Z.T @ (p * (1 - p)) / n  # the w-b block of the Hessian
        a_gw, a_c = solve(gw), solve(c)
        db = (gb - c @ a_gw) / max(float((p * (1 - p)).mean() - c @ a_c), 1e-300)
        dw = a_gw - a_c * db
        t = 1.0
        while (f_new := loss(w - t * dw, b - t * db)) > f - 1e-4 * t * (gw @ dw + gb * db) and t > 1e-10:
            t /= 2
        w, b, f = w - t * dw, b - t * db, f_new
    else:
        raise MlxInterpError(f"the logistic probe did not converge in {max_iter} Newton steps (l2={l2}); raise max_iter")
    return w, b


def probe_vecs(pos: dict, neg: dict, *, l2: float = 1e-2, seed: int = 0, holdout: float = 0.25,
               max_iter: int = 50, paired: bool = False) -> dict:
    """``probe_vec`` at every layer: ``{layer: (direction, metrics)}`` for ``{layer: [N, D]}`` sets of equal shapes
    across layers. One train/test split for all layers (the same as ``probe_vec``'s for that seed); each layer's
    probe is the exact regularised optimum (``_logistic_fit``).

    ``paired=True`` says ``pos[i]`` and ``neg[i]`` are two sides of one item (one question answered two ways): the
    holdout then takes whole pairs. A row split would put an item's other side, nearly the same activation with
    the opposite label, in the training set, and the held-out AUROC would fall below 0.5 wherever the item, not
    the contrast, dominates the residual (BUGFIX #49)."""
    layers = list(pos)
    if not layers or set(layers) != set(neg):
        raise MlxInterpError(f"probe_vecs needs the same layers in both sets; got {sorted(pos)} and {sorted(neg)}")
    for k in layers:
        _check(pos[k], neg[k], f" at layer {k}")
    if len({(pos[k].shape, neg[k].shape) for k in layers}) > 1:
        raise MlxInterpError("probe_vecs needs activations of one shape at every layer")
    n_pos, n_neg = len(pos[layers[0]]), len(neg[layers[0]])
    y = np.concatenate([np.ones(n_pos), np.zeros(n_neg)])
    if paired:
        if n_pos != n_neg:
            raise MlxInterpError(f"paired probe sets need one negative per positive; got {n_pos} and {n_neg}")
        items = np.random.default_rng(seed).permutation(n_pos)
        n_items = max(1, int(round(holdout * n_pos))) if n_pos >= 4 else 0
        test = np.concatenate([items[:n_items], items[:n_items] + n_pos])
        train = np.concatenate([items[n_items:], items[n_items:] + n_pos])
    else:
        idx = np.random.default_rng(seed).permutation(len(y))
        n_test = max(2, int(round(holdout * len(y)))) if len(y) >= 8 else 0
        test, train = idx[:n_test], idx[n_test:]
    out = {}
    for k in layers:
        X = np.concatenate([pos[k], neg[k]]).astype(np.float64)
        mu, sd = X.mean(0), X.std(0)
        if np.all(sd < 1e-12):
            raise MlxInterpError(f"all activations at layer {k} are identical (zero variance); "
                                 "a probe cannot separate the classes")
        sd = np.where(sd < 1e-12, 1.0, sd)
        Z = (X - mu) / sd
        w, b = _logistic_fit(Z[train], y[train], l2, max_iter)
        metrics = {"n_train": int(len(train)), "n_test": int(len(test)), "accuracy": None, "auroc": None}
        if len(test):
            sc = Z[test] @ w + b
            metrics["accuracy"] = float(((sc > 0) == (y[test] == 1)).mean())
            metrics["auroc"] = _auroc(sc, y[test])
        out[k] = (w / sd, metrics)
    return out


def pca_vec(pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    """First principal component of paired differences (needs pos[i] paired with neg[i])."""
    _check(pos, neg)
    if pos.shape != neg.shape:
        raise MlxInterpError(f"PCA of paired differences needs equal-size paired sets; got {len(pos)} and {len(neg)}")
    d = pos.astype(np.float64) - neg.astype(np.float64)
    c = d - d.mean(0)
    if np.all(np.abs(c) < 1e-12) and np.all(np.abs(d) < 1e-12):
        raise MlxInterpError("all paired differences are zero; there is no direction to find")
    if np.all(np.abs(c) < 1e-12):  # every pair differs by the same vector: that vector is the direction
        return d.mean(0)
    _, _, vt = np.linalg.svd(c, full_matrices=False)
    v = vt[0]
    proj = d @ v
    if proj.mean() < 0:
        v, proj = -v, -proj
    return v * float(np.abs(proj).mean())


def vector_for(method: str, pos: np.ndarray, neg: np.ndarray, groups: Sequence | None = None, **kw) -> tuple[np.ndarray, dict]:
    """The vector of one method (``groups`` balances only the difference of means)."""
    if method == "diff_of_means":
        return diff_of_means_vec(pos, neg, groups), {}
    if method == "probe":
        return probe_vec(pos, neg, **kw)
    if method == "pca":
        return pca_vec(pos, neg), {}
    raise MlxInterpError(f"unknown extraction method {method!r}; valid: {', '.join(METHODS)}")


def split_consistency(method: str, pos: np.ndarray, neg: np.ndarray, seed: int = 0, groups: Sequence | None = None) -> float:
    """Cosine between the vectors extracted from two disjoint random halves (pairs kept together).

    With ``groups`` each group is halved separately, so both halves hold the same mix of groups; an
    unbalanced random split of A/B items otherwise measures the letter, not the behaviour."""
    n = min(len(pos), len(neg))
    if n < 4:
        raise MlxInterpError(f"split consistency needs at least 4 examples per class, got {n}")
    rng = np.random.default_rng(seed)
    if groups is None:
        idx = rng.permutation(n)
        a, b = idx[: n // 2], idx[n // 2 :]
        ga = gb = None
    else:
        labels = np.asarray(list(groups), dtype=object)
        parts = [rng.permutation(i) for i in _group_index(labels, n)]
        if min(len(i) for i in parts) < 2:
            raise MlxInterpError("split consistency with groups needs at least 2 pairs in every group")
        a = np.concatenate([i[: len(i) // 2] for i in parts])
        b = np.concatenate([i[len(i) // 2 :] for i in parts])
        ga, gb = labels[a], labels[b]
    va, _ = vector_for(method, pos[a], neg[a], ga)
    vb, _ = vector_for(method, pos[b], neg[b], gb)
    return float(va @ vb / (np.linalg.norm(va) * np.linalg.norm(vb)))


def extract(
    lm,
    positive: Sequence[str],
    negative: Sequence[str],
    *,
    method: str = "diff_of_means",
    site: str = "resid_post",
    layers="all",
    positions: Positions = DEFAULT_READ_POSITION,
    chat: bool = DEFAULT_CHAT,
    batch_size: int | None = DEFAULT_BATCH_SIZE,
) -> VectorSet:
    """Per-layer vectors of one method, with provenance (and probe metrics per layer)."""
    if method not in METHODS:
        raise MlxInterpError(f"unknown extraction method {method!r}; valid: {', '.join(METHODS)}")
    for name, s in (("positive", positive), ("negative", negative)):
        if len(s) < 2:
            raise MlxInterpError(f"{name} set has {len(s)} prompt(s); need at least 2 per class")
    pos = collect(lm, positive, site=site, layers=layers, positions=positions, chat=chat, batch_size=batch_size)
    neg = collect(lm, negative, site=site, layers=layers, positions=positions, chat=chat, batch_size=batch_size)
    vecs, metrics = {}, {}
    probes = probe_vecs(pos, neg) if method == "probe" else {}  # every layer's probe, one split
    for k in pos:
        vecs[k], m = probes[k] if probes else vector_for(method, pos[k], neg[k])
        if m:
            metrics[k] = m
    meta = {"site": site, "positions": repr(positions), "n_pos": len(positive), "n_neg": len(negative), "chat": chat}
    if metrics:
        meta["probe_metrics"] = metrics
    return VectorSet(vecs, lm.name, method, meta, site)


def diff_of_means(lm, positive, negative, **kw) -> VectorSet:
    """Shortcut for ``extract(..., method="diff_of_means")``."""
    return extract(lm, positive, negative, method="diff_of_means", **kw)


def random_direction(width: int, norm: float, seed: int = 0) -> np.ndarray:
    """A random direction (isotropic Gaussian, normalised) scaled to ``norm``: the control every steering result
    is measured against (same layer, same multiplier, same norm as the real vector)."""
    if width < 1 or not np.isfinite(norm) or norm <= 0:
        raise MlxInterpError(f"a random direction needs width >= 1 and a positive finite norm; got width={width}, norm={norm}")
    u = np.random.default_rng(seed).normal(size=width)
    return u / np.linalg.norm(u) * norm
