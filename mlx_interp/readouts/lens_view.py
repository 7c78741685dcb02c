"""Draw a ``LensResult``: a layer x position heatmap (PNG) and a self-contained HTML page.

Both show, per cell, the lens's top-1 token, coloured by its probability. The HTML page carries
its data as JSON and needs no network: hovering a cell shows that cell's top-k tokens with their
probabilities (and the targets' ranks). ``#hover=<prompt>,<row>,<col>`` in the page's URL hovers
a cell on load, which is how the test checks it in a headless browser.
"""

from __future__ import annotations

import html
import json
from pathlib import Path


def _label(layer: int) -> str:
    return "emb" if layer < 0 else str(layer)


def plot_png(res, path, prompt: int = 0) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    cells = res.cells[prompt]
    R, J = len(cells), len(cells[0])
    prob = np.array([[c.top[0][1] for c in row] for row in cells])
    fig, ax = plt.subplots(figsize=(max(4.0, 1.1 * J + 1.5), max(3.0, 0.32 * R + 1.2)))
    im = ax.imshow(prob, aspect="auto", origin="lower", cmap="Blues", vmin=0, vmax=1)
    for r in range(R):
        for j in range(J):
            ax.text(j, r, cells[r][j].top[0][0].strip()[:8] or repr(cells[r][j].top[0][0]), ha="center", va="center",
                    fontsize=7, color="white" if prob[r, j] > 0.6 else "black")
    ax.set_xticks(range(J), [repr(t)[1:-1][:10] for t in res.tokens[prompt]], rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(R), [_label(l) for l in res.layers], fontsize=7)
    ax.set_xlabel("input token (position)")
    ax.set_ylabel("layer (emb = resid_pre 0, then resid_post l)")
    ax.set_title(f"logit lens: top-1 token, colour = its probability\n{res.prompts[prompt][:80]!r}", fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.03, pad=0.02)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>logit lens: __TITLE__</title>
<style>
body { font: 13px system-ui, sans-serif; margin: 16px; }
table.lens { border-collapse: collapse; margin-bottom: 24px; }
table.lens td, table.lens th { border: 1px solid #ddd; padding: 2px 5px; text-align: center; white-space: pre; }
table.lens th { background: #f4f4f4; font-weight: normal; }
table.lens td.cell { cursor: default; min-width: 48px; }
#tip { position: fixed; display: none; background: #fff; border: 1px solid #888; padding: 6px 8px;
       box-shadow: 2px 2px 6px rgba(0,0,0,.2); font-family: monospace; z-index: 10; }
</style></head>
<body>
<h2>logit lens: __TITLE__</h2>
<p>Rows: layers (emb = the embeddings, resid_pre 0; then the residual stream after each block). Columns: input tokens.
Each cell shows the top-1 token of the model's own final norm and unembedding applied there; colour is its probability.
Hover a cell for its top-k.</p>
<div id="lens"></div>
<div id="tip"></div>
<script id="data" type="application/json">__DATA__</script>
<script>
const D = JSON.parse(document.getElementById("data").textContent);
const tip = document.getElementById("tip");
function esc(s) { return s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;"); }
function show(ev, p, r, j) {
  const c = D.cells[p][r][j];
  let h = "<b>layer " + (D.layers[r] < 0 ? "emb" : D.layers[r]) + ", token " + esc(JSON.stringify(D.tokens[p][j])) + "</b><br>";
  h += "<span class='topk'>" + c.top.map((t, i) => (i + 1) + ". <span class='tok'>" + esc(JSON.stringify(t[0])) + "</span> " + t[1].toFixed(3)).join("<br>") + "</span>";
  for (const [name, v] of Object.entries(c.targets)) h += "<br>target " + esc(JSON.stringify(name)) + ": rank " + v[0] + ", p " + v[1].toFixed(4);
  tip.innerHTML = h; tip.style.display = "block";
  tip.dataset.cell = p + "," + r + "," + j;
  tip.style.left = (ev.clientX + 12) + "px"; tip.style.top = (ev.clientY + 12) + "px";
}
const root = document.getElementById("lens");
D.cells.forEach((rows, p) => {
  const h3 = document.createElement("h3"); h3.textContent = D.prompts[p]; root.appendChild(h3);
  const t = document.createElement("table"); t.className = "lens"; t.id = "lens-" + p;
  for (let r = rows.length - 1; r >= 0; r--) {
    const tr = t.insertRow();
    const th = document.createElement("th"); th.textContent = D.layers[r] < 0 ? "emb" : D.layers[r]; tr.appendChild(th);
    rows[r].forEach((c, j) => {
      const td = tr.insertCell(); td.className = "cell"; td.id = "c-" + p + "-" + r + "-" + j;
      const pr = c.top[0][1]; td.textContent = c.top[0][0];
      td.style.background = "rgba(33, 102, 172, " + pr.toFixed(3) + ")"; td.style.color = pr > 0.6 ? "white" : "black";
      td.addEventListener("mouseover", ev => show(ev, p, r, j));
      td.addEventListener("mouseout", () => { tip.style.display = "none"; });
    });
  }
  const foot = t.insertRow(); foot.appendChild(document.createElement("th"));
  D.tokens[p].forEach(tok => { const th = document.createElement("th"); th.textContent = tok; foot.appendChild(th); });
  root.appendChild(t);
});
const m = location.hash.match(/^#hover=(\\d+),(\\d+),(\\d+)$/);
if (m) { const td = document.getElementById("c-" + m[1] + "-" + m[2] + "-" + m[3]);
         if (td) td.dispatchEvent(new MouseEvent("mouseover", {clientX: 10, clientY: 10, bubbles: true})); }
</script></body></html>
"""


def write_html(res, path) -> Path:
    data = res.to_dict()
    text = json.dumps(data, ensure_ascii=False).replace("</", "<\\/")
    title = html.escape(res.prompts[0][:60] + (" ..." if len(res.prompts) > 1 else ""))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(_PAGE.replace("__TITLE__", title).replace("__DATA__", text), encoding="utf-8")
    return path
