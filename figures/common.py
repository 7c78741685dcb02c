"""What every figure module shares: saving a figure and short model names for axes."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def save(fig, path: Path, dpi: int = 110) -> Path:
    """Tight layout, write ``path``, close the figure (so long runs do not accumulate open figures)."""
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def short(name: str) -> str:
    """``qwen2.5-coder-0.5b@4bit-g32-mirror`` -> ``qwen-0.5b``: the default precision is left out of axis labels."""
    return name.replace("@4bit-g32-mirror", "").replace("qwen2.5-coder-", "qwen-")
