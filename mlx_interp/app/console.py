"""Plain-text layout for the terminal: texts side by side."""

from __future__ import annotations

import textwrap


def side_by_side(out: dict, width: int = 44) -> str:
    """``out["baseline"]`` beside ``out["steered"]`` (if present), wrapped to ``width`` columns each."""
    cols = [("baseline", out["baseline"])]
    if "steered" in out:
        cols.append((out.get("label") or f"steered (layer {out['layer']}, alpha {out['alpha']})", out["steered"]))
    wrapped = [textwrap.wrap(t.replace("\n", " / "), width) or [""] for _, t in cols]
    lines = ["  |  ".join(f"{h:<{width}}" for h, _ in cols), "-" * ((width + 5) * len(cols))]
    for i in range(max(len(w) for w in wrapped)):
        lines.append("  |  ".join(f"{(w[i] if i < len(w) else ''):<{width}}" for w in wrapped))
    return "\n".join(lines)
