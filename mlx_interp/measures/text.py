"""Judge-free measures of generated text: refusal phrases, hedging phrases, repetition, a small sentiment lexicon."""

from __future__ import annotations

from typing import Sequence

import re

import numpy as np


def refusal_score(text: str, phrases: Sequence[str]) -> int:
    """1 if any refusal phrase occurs anywhere in ``text`` (case-insensitive), as in Arditi et al."""
    low = text.lower().replace("\u2019", "'")
    return int(any(p.lower() in low for p in phrases))


def refusal_rate(texts: Sequence[str], phrases: Sequence[str]) -> float:
    return float(np.mean([refusal_score(t, phrases) for t in texts])) if texts else float("nan")


HEDGES = ("i think", "i believe", "not sure", "not certain", "might", "maybe", "perhaps", "possibly", "i could be wrong",
          "i could be mistaken", "if i remember", "probably", "not completely", "double-check", "it's possible")


def hedged(text: str) -> bool:
    """Whether a text contains a hedging phrase (case-insensitive, on word boundaries)."""
    low = text.lower().replace("\u2019", "'")
    return any(re.search(rf"\b{re.escape(h)}\b", low) for h in HEDGES)


def hedge_rate(texts: Sequence[str]) -> float:
    """Fraction of texts containing any hedging phrase."""
    return float(np.mean([hedged(t) for t in texts]))


def repetition_rate(tokens: Sequence[int], n: int = 3) -> float:
    """Fraction of n-grams that repeat an earlier n-gram (0 = no loops; -> 1 for "the the the ...")."""
    grams = [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]
    return 0.0 if not grams else 1.0 - len(set(grams)) / len(grams)


# A small hand-written sentiment lexicon for demos and smoke tests (not a validated instrument): words whose
# polarity does not depend on context. ``sentiment`` counts them on word boundaries.
POSITIVE_WORDS = ("love", "loved", "lovely", "happy", "happiness", "joy", "joyful", "wonderful", "great", "amazing",
                  "beautiful", "delighted", "delightful", "excellent", "fantastic", "glad", "grateful", "cheerful",
                  "fun", "enjoy", "enjoyed", "enjoying", "awesome", "pleasant", "best", "good", "nice", "smile", "smiling",
                  "excited", "exciting", "thrilled", "peaceful", "kind", "perfect", "brilliant")
NEGATIVE_WORDS = ("hate", "hated", "sad", "sadness", "miserable", "terrible", "awful", "horrible", "angry", "upset",
                  "disappointed", "disappointing", "gloomy", "dreadful", "worst", "bad", "cry", "crying", "cried",
                  "furious", "bitter", "cruel", "nasty", "depressed", "lonely", "painful", "annoying", "boring", "tired",
                  "disaster", "unhappy", "worried", "fear", "scared")
_POS, _NEG = frozenset(POSITIVE_WORDS), frozenset(NEGATIVE_WORDS)


def sentiment(text: str) -> int:
    """Positive minus negative lexicon words in ``text`` (case-insensitive, whole words)."""
    words = re.findall(r"[a-z']+", text.lower())
    return sum(w in _POS for w in words) - sum(w in _NEG for w in words)
