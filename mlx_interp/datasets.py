"""Task data shipped with the package (each folder under ``data/`` has a SOURCE.md)."""

from __future__ import annotations

import json
from importlib.resources import files


def _load(folder: str, name: str):
    return json.loads(files("mlx_interp").joinpath("data", folder, name).read_text())


def refusal_prompts(split: str = "train") -> tuple[list[str], list[str]]:
    """(harmful, harmless) instructions from Arditi et al.'s seed-42 draws: train 128+128, val 32+32."""
    n = {"train": 128, "val": 32}[split]
    return _load("refusal_direction", f"harmful_{split}_n{n}.json"), _load("refusal_direction", f"harmless_{split}_n{n}.json")


def refusal_substrings() -> list[str]:
    """The paper's 12 refusal phrases (case-insensitive substring match)."""
    return list(_load("refusal_direction", "refusal_substrings.json")["substrings"])


def refusal_eval_prompts() -> tuple[list[str], list[str]]:
    """(harmful, harmless) held-out evaluation sets: JailbreakBench (100) and Alpaca eval (100)."""
    return ([r["instruction"] for r in _load("refusal_direction", "jailbreakbench.json")],
            [r["instruction"] for r in _load("refusal_direction", "harmless_alpaca_eval100.json")])
