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
    out = capsys.readouterr().out
    assert (tmp_path / "refusal_qwen.gguf").exists() and "r2" in out and "'cosine'" in out
    assert list(ns["qwen_own"].vectors) == [12]  # Qwen's own direction at the layer the map carried to


def test_every_suggested_command_exists():
    """Each ``mlx-interp CMD [SUB] --option`` that a message, docstring or note tells a user to run names a real command
    (an exp6 note once said ``mlx-interp lens train``, which runs the logit lens on the prompt "train")."""
    import click

    from mlx_interp.app.cli import cli

    root = Path(__file__).resolve().parents[1]
    files = [p for d in ("mlx_interp", "experiments", "docs", "bench", "figures", "validation") for p in (root / d).rglob("*")
             if p.suffix in (".py", ".md")] + [root / "README.md"]
    bad, seen = [], 0
    for p in files:
        for m in re.finditer(r"mlx-interp ([a-z][a-z-]*)(?: ([a-z][a-z-]*))? --", p.read_text()):
            seen += 1
            cmd = cli.commands.get(m[1])
            sub_ok = (m[2] in cmd.commands) if isinstance(cmd, click.Group) else m[2] is None
            if cmd is None or not sub_ok:
                bad.append(f"{p.relative_to(root)}: {m[0]}")
    assert seen >= 10 and not bad, bad
