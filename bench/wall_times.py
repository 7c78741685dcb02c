"""Whole-study wall times, read from the kept result files (issue 19): what a user waits for, per study and model.

Every result file records its wall time and how it ran (quick or full, the BLAS thread count, the world size). This
prints one row per kept result under ``results/published/`` (or ``--results DIR``), so the table can never drift from
what was measured; a study's ``smoke/`` folder holds runs kept only for their wall time (today's ``--quick``, whose
numbers the notes do not read). Runs that shared the machine with other work say so in their thread reason; compare rows
measured alone. Results written since runs/work.py also say how much model work they did: token positions through the
model (padding included) and decode steps, so a slow row can be read as "much work" or "slow machine" (positions per
second; a decode step reads every weight, so it costs about the same for 1 row as for 16). A run resumed from its
journal (``--resume``) records what its replayed calls took when computed (``work.replayed``, ``wall_s_total``, since
2026-12-06): its row reads the whole compute, both processes' work and time; older resumed files show only their
last process.

With ``--roofline GFLOPS`` (the sgemm roofline ``bench/bench_breakdown.py`` prints for this machine) each row with work
counts also gets a lower bound: the minutes its matmul FLOPs alone would take at that rate. The count is 2 x (the
model's parameters less its embedding and unembedding) per position, weighed by the share of blocks it ran where
the file records ``block_positions`` (older files count a resumed pass in full, which overstates their bound), plus
2 x vocab x width per decode row for the unembedding (prompt blocks' last-position logits and all attention FLOPs are left out, so the bound stays a lower
bound). It reads vocab and tied embeddings from the model's ``config.json`` (the provenance's ``source`` folder); a row
whose model folder is not on this machine gets "-". A run near its bound can only get faster by doing less work.

    python bench/wall_times.py [--results DIR] [--markdown] [--roofline GFLOPS]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def matmul_gflop(model: dict, work: dict) -> float | None:
    """Matmul GFLOP of a run's counted work (see the module docstring), or None without the model's config."""
    cfg_path = Path(model.get("source", "")) / "config.json"
    if not model.get("params") or not cfg_path.is_file():
        return None
    cfg = json.loads(cfg_path.read_text())
    cfg = cfg.get("text_config", cfg) if "vocab_size" not in cfg else cfg
    vd = cfg["vocab_size"] * cfg["hidden_size"]
    blocks = model["params"] - vd * (1 if cfg.get("tie_word_embeddings", True) else 2)
    per_block = work.get("block_positions", work["positions"])  # older files: resumed passes counted in full
    return (2 * blocks * per_block + 2 * vd * work.get("decode_positions", 0)) / 1e9


def rows(results: Path) -> list[dict]:
    out = []
    found = [results.glob(g) for g in ("*/*.json", "*/*/experiment_results.json", "*/smoke/*.json",
                                       "*/smoke/*/experiment_results.json")]
    for p in sorted({p for g in found for p in g}):
        doc = json.loads(p.read_text())
        prov = doc.get("provenance", {})
        if prov.get("wall_s") is None:
            continue
        cfg = prov.get("config", {})
        wall = prov.get("wall_s_total", prov["wall_s"])
        if "work" in prov:  # this process's work plus its replayed calls' (a resumed run)
            rep = prov["work"].get("replayed", {})
            prov = {**prov, "work": {k: v + rep.get(k, 0) if isinstance(v, (int, float)) else v for k, v in prov["work"].items()}}
        out.append({"experiment": doc.get("experiment", p.parent.name), "model": prov.get("model", {}).get("name", "?"),
                    "run": "quick" if cfg.get("quick") else "full", "minutes": wall / 60,
                    "threads": prov.get("blas_threads"), "ranks": prov.get("world", {}).get("size", 1),
                    "date": prov.get("timestamp_utc", "")[:10], "file": str(p.relative_to(results)),
                    "mpos": None if "work" not in prov else prov["work"]["positions"] / 1e6,
                    "steps": None if "work" not in prov else prov["work"]["decode_steps"],
                    "pos_per_s": None if "work" not in prov else prov["work"]["positions"] / max(wall, 1e-9),
                    "gflop": None if "work" not in prov else matmul_gflop(prov.get("model", {}), prov["work"])})
    return sorted(out, key=lambda r: (r["experiment"], r["model"], r["run"], r["date"]))


def _f(x, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", default=str(ROOT / "results" / "published"))
    ap.add_argument("--markdown", action="store_true", help="a markdown table instead of aligned text")
    ap.add_argument("--roofline", type=float, default=None, metavar="GFLOPS",
                    help="this machine's sgemm roofline (bench/bench_breakdown.py prints it): adds each run's lower bound")
    a = ap.parse_args(argv)
    if a.roofline is not None and not a.roofline > 0:
        raise SystemExit(f"--roofline {a.roofline} is not valid; give the machine's sgemm rate in GFLOP/s (> 0)")
    rs = rows(Path(a.results))
    for r in rs:
        r["bound_min"] = None if a.roofline is None or r["gflop"] is None else r["gflop"] / a.roofline / 60
    if a.markdown:
        print("| study | model | run | minutes | BLAS threads | ranks | M positions | decode steps | positions/s | "
              "matmul bound (min) | date |\n|---|---|---|---|---|---|---|---|---|---|---|")
        for r in rs:
            print(f"| {r['experiment']} | {r['model']} | {r['run']} | {r['minutes']:.1f} | {r['threads']} | {r['ranks']} | "
                  f"{_f(r['mpos'], '.2f')} | {_f(r['steps'], 'd')} | {_f(r['pos_per_s'], '.0f')} | "
                  f"{_f(r['bound_min'], '.1f')} | {r['date']} |")
    else:
        print(f"{'study':<30} {'model':<36} {'run':<6} {'min':>7} {'thr':>4} {'ranks':>5} {'Mpos':>7} {'steps':>6} "
              f"{'pos/s':>6} {'bound':>6}  date")
        for r in rs:
            print(f"{r['experiment']:<30} {r['model']:<36} {r['run']:<6} {r['minutes']:>7.1f} {str(r['threads']):>4} "
                  f"{r['ranks']:>5} {_f(r['mpos'], '.2f'):>7} {_f(r['steps'], 'd'):>6} {_f(r['pos_per_s'], '.0f'):>6} "
                  f"{_f(r['bound_min'], '.1f'):>6}  {r['date']}")
    return rs


if __name__ == "__main__":
    main()
