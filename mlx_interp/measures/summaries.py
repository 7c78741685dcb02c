"""Judge-free measures of how a summary changed under steering: length direction, verbosity, content preservation.

- ``length_direction``: per item, half a point for each of "the +v output is longer than the unsteered one" and
  "the -v output is shorter" (in words). 1.0 = both moved the intended way; a random direction scores near chance.
- ``log_length_ratio``: log2(words(steered) / words(unsteered)), the verbosity change.
- ``rouge_l``: ROUGE-L F-measure against the unsteered output (``rouge-score``, Porter stemming).
- ``tfidf_cosine``: cosine of TF-IDF vectors (scikit-learn, fitted on the pair's own two texts plus ``corpus``).
- ``entity_retention``: share of the unsteered output's named-entity-like tokens (capitalized words not opening a
  sentence, and numbers) that the steered output still contains. A heuristic, not an NER model: stated wherever it
  is reported.
"""

from __future__ import annotations

import math
import re
from typing import Sequence

_WORD = re.compile(r"\w+(?:[-']\w+)*")
_SENT_START = re.compile(r"(?:^|[.!?]\s+)(\w+)")


def words(text: str) -> int:
    return len(_WORD.findall(text))


def length_direction(base: Sequence[str], plus: Sequence[str], minus: Sequence[str]) -> list[float]:
    """Per-item score in {0, 0.5, 1} (see the module docstring)."""
    if not len(base) == len(plus) == len(minus):
        from ..errors import MlxInterpError

        raise MlxInterpError(f"length_direction needs aligned lists; got {len(base)}, {len(plus)}, {len(minus)}")
    return [0.5 * (words(p) > words(b)) + 0.5 * (words(m) < words(b)) for b, p, m in zip(base, plus, minus)]


def log_length_ratio(base: Sequence[str], steered: Sequence[str]) -> list[float]:
    return [math.log2(max(words(s), 1) / max(words(b), 1)) for b, s in zip(base, steered)]


def rouge_l(refs: Sequence[str], hyps: Sequence[str]) -> list[float]:
    from rouge_score import rouge_scorer

    sc = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    return [sc.score(r, h)["rougeL"].fmeasure for r, h in zip(refs, hyps)]


def tfidf_cosine(refs: Sequence[str], hyps: Sequence[str], corpus: Sequence[str] = ()) -> list[float]:
    """Per pair; the IDF comes from every text given (refs, hyps and ``corpus``), so common words weigh little."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    texts = list(refs) + list(hyps) + list(corpus)
    vec = TfidfVectorizer().fit([t if t.strip() else "_" for t in texts])
    a, b = vec.transform(list(refs)), vec.transform(list(hyps))
    num = a.multiply(b).sum(axis=1).A1
    den = (a.multiply(a).sum(axis=1).A1 ** 0.5) * (b.multiply(b).sum(axis=1).A1 ** 0.5)
    return [float(n / d) if d > 0 else 0.0 for n, d in zip(num, den)]


def entities(text: str) -> set[str]:
    """Capitalized words that do not open a sentence, and numbers (lower-cased)."""
    starts = {m.start(1) for m in _SENT_START.finditer(text)}
    out = set()
    for m in _WORD.finditer(text):
        w = m.group(0)
        if (w[0].isupper() and m.start() not in starts) or w[0].isdigit():
            out.add(w.lower())
    return out


def entity_retention(refs: Sequence[str], hyps: Sequence[str]) -> list[float | None]:
    """Per pair: share of the reference's entities in the hypothesis (None where the reference has none)."""
    out: list[float | None] = []
    for r, h in zip(refs, hyps):
        e = entities(r)
        hw = {w.lower() for w in _WORD.findall(h)}
        out.append(None if not e else len(e & hw) / len(e))
    return out
