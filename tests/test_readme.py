"""The README's Python API block runs as written (on the default model)."""

from __future__ import annotations

import re
from pathlib import Path


def test_readme_api_example_runs(capsys):
    text = (Path(__file__).parent.parent / "README.md").read_text()
    block = re.search(r"## Python API\n\n```python\n(.*?)```", text, re.S).group(1)
    ns: dict = {}
    exec(compile(block, "README.md", "exec"), ns)
    out = capsys.readouterr().out
    assert "smollm2-135m@4bit-g32-mirror" in out and "Paris" in out  # the name and the lens table printed by the example
    lines = out.splitlines()
    assert lines.index(" Paris") < lines.index(" Rome") < lines.index(" a")  # the patch moves the answer; the control does not
    s = ns["s"]  # the steering search found a coherent multiplier that raised the sentiment score above the baseline
    assert s.best is not None and s.best.coherent and s.best.score > s.baseline.score
    assert ns["tr"]["resid_post", 12].shape == (2, 576)
    assert ns["pre"].tokens[0][-1] == ns["lm"].tokenizer.encode(" is", add_special_tokens=False)[0]


def test_readme_transfer_example_runs(tmp_path, monkeypatch, capsys):
    """The README's cross-model transfer block runs as written (in a scratch folder: it writes a control vector)."""
    text = (Path(__file__).parent.parent / "README.md").read_text()
    block = re.search(r"Cross-model transfer \(`mlx_interp.transfer`\):\n\n```python\n(.*?)```", text, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    ns: dict = {}
    exec(compile(block, "README.md", "exec"), ns)
    assert ns["qwen_vs"].model == "qwen2.5-coder-0.5b@4bit-g32-mirror" and list(ns["qwen_vs"].vectors) == [12]
    assert (tmp_path / "refusal_qwen.gguf").exists() and "r2" in capsys.readouterr().out
