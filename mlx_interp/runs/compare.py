"""Compare two result files: what moved between two runs of a study, and by how much.

``diff(a, b)`` walks the ``results`` of two JSON result files and lists every difference: texts,
integers and structure exactly, floats with their absolute difference. ``mlx-interp results diff A B``
prints the differences above ``--atol`` and a count of the float differences within it; a refactor
that must not change a study's numbers (or a 2-process run that must equal a 1-process one) is
checked with it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..errors import MlxInterpError


@dataclass
class Difference:
    path: str  # e.g. /summary/bypass or /candidates[3]/kl
    old: object
    new: object
    abs_diff: float | None = None  # floats only


def _walk(a, b, path: str, out: list) -> None:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in list(dict.fromkeys(list(a) + list(b))):
            if k not in a or k not in b:
                out.append(Difference(f"{path}/{k}", a.get(k, "<missing>"), b.get(k, "<missing>")))
            else:
                _walk(a[k], b[k], f"{path}/{k}", out)
    elif isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            out.append(Difference(path, f"{len(a)} items", f"{len(b)} items"))
            return
        for i, (x, y) in enumerate(zip(a, b)):
            _walk(x, y, f"{path}[{i}]", out)
    elif isinstance(a, float) and isinstance(b, float) and not isinstance(a, bool):
        if a != b and not (a != a and b != b):  # NaN == NaN here
            out.append(Difference(path, a, b, abs(a - b)))
    elif a != b:
        out.append(Difference(path, a, b))


def load_doc(path: str | Path) -> dict:
    p = Path(path)
    try:
        doc = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise MlxInterpError(f"{str(p)!r} is not a readable result file ({type(e).__name__})") from None
    if "results" not in doc:
        raise MlxInterpError(f"{p.name} has no 'results' key; not an mlx-interp result file")
    return doc


def diff(a: str | Path | dict, b: str | Path | dict) -> list[Difference]:
    """Every difference between the ``results`` of two result files (or already loaded documents)."""
    da = a if isinstance(a, dict) else load_doc(a)
    db = b if isinstance(b, dict) else load_doc(b)
    out: list[Difference] = []
    _walk(da["results"], db["results"], "", out)
    return out
