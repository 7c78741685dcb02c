"""Two-hop queries (Hopping Too Late style): loading, validation, answer matching on word boundaries."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path

from ..errors import MlxInterpError

REQUIRED = ("id", "family", "e1", "e2", "e3", "two_hop", "first_hop")


@dataclass
class TwoHop:
    id: str
    family: str
    e1: str
    e2: str
    e3: str
    two_hop: str
    first_hop: str
    second_hop: str | None = None  # "The capital of France is": the second hop on its own (exp9's filter)
    e2_aliases: list = field(default_factory=list)
    e3_aliases: list = field(default_factory=list)

    def names(self, which: str) -> list[str]:
        """Label plus aliases; a leading "the " is dropped ("the United Kingdom" -> "United Kingdom")."""
        label = getattr(self, which)
        out = [label, *getattr(self, f"{which}_aliases", [])]
        return list(dict.fromkeys(x[4:] if x.lower().startswith("the ") else x for x in out))


def load_queries(path: str | Path | None = None) -> list[TwoHop]:
    """The built-in 31 queries, or a user's JSONL file with the same schema (see data/two_hop/SOURCE.md)."""
    if path is None:
        text = files("mlx_interp.tasks").joinpath("data", "two_hop", "queries.jsonl").read_text()
        src = "built-in queries"
    else:
        p = Path(path)
        if not p.is_file():
            raise MlxInterpError(f"prompt file {str(p)!r} does not exist")
        text, src = p.read_text(), str(p)
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            d = json.loads(line)
        except json.JSONDecodeError as e:
            raise MlxInterpError(f"{src} line {n} is not JSON ({e.msg})") from None
        missing = [k for k in REQUIRED if not d.get(k)]
        if missing:
            raise MlxInterpError(f"{src} line {n} lacks {', '.join(missing)}; required: {', '.join(REQUIRED)}")
        if d["e1"] not in d["two_hop"]:
            raise MlxInterpError(f"{src} line {n}: e1 {d['e1']!r} does not occur in two_hop {d['two_hop']!r}")
        out.append(TwoHop(**{k: d[k] for k in TwoHop.__dataclass_fields__ if k in d}))
    if not out:
        raise MlxInterpError(f"{src} holds no queries")
    return out


def mentions(text: str, names: list[str]) -> bool:
    """A label or alias longer than one character occurs as whole words (case-insensitive).

    The paper matches substrings; on word boundaries "German" no longer counts inside "Germany" nor "US"
    inside "must" (a deviation that can only lower accuracy)."""
    import re

    low = text.lower()
    return any(len(n) > 1 and re.search(rf"(?<!\w){re.escape(n.lower())}(?!\w)", low) for n in names)
