"""Whole-study wall times, read from the kept result files (issue 19): what a user waits for, per study and model.

Every result file records its wall time and how it ran (quick or full, the BLAS thread count, the world size). This
prints one row per kept result under ``results/published/`` (or ``--results DIR``), so the table can never drift from
what was measured. Runs that shared the machine with other work say so in their thread reason; compare rows measured
alone. Results written since runs/work.py also say how much model work they did: token positions through the model
(padding included) and decode steps, so a slow row can be read as "much work" or "slow machine" (positions per
second; a decode step reads every weight, so it costs about the same for 1 row as for 16).

    python bench/wall_times.py [--results DIR] [--markdown]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def rows(results: Path) -> list[dict]:
    out = []
    for p in sorted(results.glob("*/*.json")) + sorted(results.glob("*/*/experiment_results.json")):
        doc = json.loads(p.read_text())
        prov = doc.get("provenance", {})
        if prov.get("wall_s") is None:
            continue
        cfg = prov.get("config", {})
        out.append({"experiment": doc.get("experiment", p.parent.name), "model": prov.get("model", {}).get("name", "?"),
                    "run": "quick" if cfg.get("quick") else "full", "minutes": prov["wall_s"] / 60,
                    "threads": prov.get("blas_threads"), "ranks": prov.get("world", {}).get("size", 1),
                    "date": prov.get("timestamp_utc", "")[:10], "file": str(p.relative_to(results)),
                    "mpos": None if "work" not in prov else prov["work"]["positions"] / 1e6,
                    "steps": None if "work" not in prov else prov["work"]["decode_steps"],
                    "pos_per_s": None if "work" not in prov else prov["work"]["positions"] / max(prov["wall_s"], 1e-9)})
    return sorted(out, key=lambda r: (r["experiment"], r["model"], r["run"], r["date"]))


def _f(x, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", default=str(ROOT / "results" / "published"))
    ap.add_argument("--markdown", action="store_true", help="a markdown table instead of aligned text")
    a = ap.parse_args(argv)
    rs = rows(Path(a.results))
    if a.markdown:
        print("| study | model | run | minutes | BLAS threads | ranks | M positions | decode steps | positions/s | date |\n"
              "|---|---|---|---|---|---|---|---|---|---|")
        for r in rs:
            print(f"| {r['experiment']} | {r['model']} | {r['run']} | {r['minutes']:.1f} | {r['threads']} | {r['ranks']} | "
                  f"{_f(r['mpos'], '.2f')} | {_f(r['steps'], 'd')} | {_f(r['pos_per_s'], '.0f')} | {r['date']} |")
    else:
        print(f"{'study':<30} {'model':<36} {'run':<6} {'min':>7} {'thr':>4} {'ranks':>5} {'Mpos':>7} {'steps':>6} "
              f"{'pos/s':>6}  date")
        for r in rs:
            print(f"{r['experiment']:<30} {r['model']:<36} {r['run']:<6} {r['minutes']:>7.1f} {str(r['threads']):>4} "
                  f"{r['ranks']:>5} {_f(r['mpos'], '.2f'):>7} {_f(r['steps'], 'd'):>6} {_f(r['pos_per_s'], '.0f'):>6}  "
                  f"{r['date']}")
    return rs


if __name__ == "__main__":
    main()
