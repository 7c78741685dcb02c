"""The logit lens draws itself: a PNG heatmap and an HTML page checked in a real headless browser."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from html import unescape

import pytest

from mlx_interp.readouts.lens import logit_lens

PROMPTS = ["The capital of France is", "Water is made of hydrogen and"]


def _chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if exe is None:
        if sys.platform.startswith("linux"):
            pytest.fail("no chromium on PATH: the README's test command installs Debian's chromium (bash run.sh test)")
        pytest.skip("no chromium on this machine (only the Linux test command installs it)")
    return exe


def _dom(exe: str, url: str, tmp_path) -> str:
    cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=3000", "--dump-dom", url]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-500:]
    return p.stdout


def test_lens_heatmap_png_and_html_page_in_a_browser(tmp_path, smol):
    res = logit_lens(smol, PROMPTS, positions="all", top_k=4, targets=[" Paris"])
    png = res.plot(tmp_path / "lens.png")
    assert png.stat().st_size > 10_000 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = res.html(tmp_path / "lens.html")
    exe = _chromium()
    # a known cell: prompt 0, the final layer (last row), the last position: the model's own next token
    p, r, j = 0, len(res.layers) - 1, len(res.positions[0]) - 1
    dom = _dom(exe, page.as_uri() + f"#hover={p},{r},{j}", tmp_path)
    # the page rendered one table per prompt, with a cell for every (layer, position)
    for q in range(len(PROMPTS)):
        cells = re.findall(rf'id="c-{q}-(\d+)-(\d+)"', dom)
        assert len(cells) == len(res.layers) * len(res.positions[q]), q
    tip = re.search(r'<div id="tip"[^>]*data-cell="([\d,]+)"[^>]*>(.*?)</div>', dom, re.S)
    assert tip and tip.group(1) == f"{p},{r},{j}"
    toks = [unescape(t) for t in re.findall(r"<span class=\"tok\">(.*?)</span>", tip.group(2))]
    assert len(toks) == 4 and toks[0] == '" Paris"' == f'"{res.cells[p][r][j].top[0][0]}"'
    assert "target \" Paris\": rank 0" in unescape(tip.group(2))
    # an early-layer cell shows that cell's own top token, not the final one
    dom2 = _dom(exe, page.as_uri() + "#hover=1,1,2", tmp_path)
    tip2 = re.search(r'<div id="tip"[^>]*>(.*?)</div>', dom2, re.S).group(1)
    first = unescape(re.findall(r"<span class=\"tok\">(.*?)</span>", tip2)[0])
    assert first == '"' + res.cells[1][1][2].top[0][0].replace('"', '\\"') + '"'


def test_cli_lens_writes_html_and_png(tmp_path):
    exe = shutil.which("mlx-interp")
    cmd = [exe] if exe else [sys.executable, "-m", "mlx_interp.app.cli"]
    out = subprocess.run(cmd + ["lens", "--model", "smollm2-135m", "--position", "all", "--html", str(tmp_path / "l.html"),
                                "--png", str(tmp_path / "l.png"), "The capital of France is"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "l.html").stat().st_size > 5_000 and (tmp_path / "l.png").stat().st_size > 10_000
    assert "position=4 (' is')" in out.stdout
