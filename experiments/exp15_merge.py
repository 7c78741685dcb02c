"""Merge exp15 runs of one model that each covered some precisions into one result, as if one run had made them all.

    python -m experiments.exp15_merge results/exp15_quantization/A.json results/exp15_quantization/B.json [--out results]

Why: a full grid takes hours to days per model on two cores (Qwen-0.5B about 9 h, docs/results_quantization.md),
more than one session, and a session's machine does not keep a run's journal. Run the grid in parts with
``--precision`` (each part repeats the fp32 reference stage: its texts, vectors, steering layers; or, with
``--reference-from`` an earlier part, only what comparing a variant needs), keep each part's result, then merge them
here.

A merge is only valid when every part measured the same reference: the parts must agree on the model, the run
size (quick or full, and the study's config), the steering layers chosen on validation, and the fp32 row itself (its
capability, fidelity, cosines and steering, which a part run without ``--reference-from`` recomputes). Any
difference is a one-line error naming it; so is a precision that two parts both measured. A part run with
``--reference-from`` an earlier part (``exp15_reference``) copied that part's layers and fp32 row after reproducing
what it recomputes of fp32 to ``compare_results.TOLERANCE`` (1e-4 relative: it may run at another commit), so it
passes this 1e-9 check by construction. The merged file holds every part's rows, the hypotheses recomputed over all of
them (``exp15_quantization.hypotheses``), and ``merged_from``: each part's file, commit, precisions, wall time and
``reference_from`` (the part whose layers and fp32 row it took, with its SHA-256; None for a part that computed
them). Its ``wall_s`` is the sum of the parts' (each counts its own reference stage).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import mlx_interp as mi
from experiments.exp15_quantization import NAME, REFERENCE, _public, hypotheses
from mlx_interp.errors import MlxInterpError

SAME = ("reference", "config", "layers", "positions", "methods", "sycophancy_search")  # fields every part must share
#: a row's timings, work profile and load description: a part's own (a resumed part's work counts only what its last
#: process computed)
TIMING = ("wall_s", "wall_s_total", "stage_s", "stage_work", "model")


class _Described:
    """The model as a part's provenance described it (``save_result`` reads ``name`` and ``describe()``)."""

    def __init__(self, desc: dict):
        self.name, self._desc = desc["name"], desc

    def describe(self) -> dict:
        return self._desc


def first_difference(a, b, where: str = "") -> str | None:
    """The path of the first place two JSON values differ, or None. Numbers agree within a relative 1e-9 (the same
    computation can differ in its last bits between processes); everything else must be equal."""
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b), key=str):
            if k not in a or k not in b:
                return f"{where}/{k}"
            d = first_difference(a[k], b[k], f"{where}/{k}")
            if d:
                return d
        return None
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return f"{where} (length {len(a)} vs {len(b)})"
        return next((d for i, (x, y) in enumerate(zip(a, b)) if (d := first_difference(x, y, f"{where}[{i}]"))), None)
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool) and not isinstance(b, bool):
        if math.isnan(a) and math.isnan(b):  # an undefined interval (one item) is the same in both
            return None
        return None if abs(a - b) <= 1e-9 * max(abs(a), abs(b), 1e-300) else where or "/"
    return None if a == b else where or "/"


def merge_docs(parts: list[tuple[str, dict]]) -> tuple[dict, dict]:
    """``[(file name, exp15 document)]`` -> (merged results payload, provenance config). Raises on any disagreement."""
    if len(parts) < 2:
        raise MlxInterpError(f"merging needs at least 2 exp15 result files (got {len(parts)})")
    (f0, d0), rest = parts[0], parts[1:]
    for f, d in parts:
        if d.get("experiment") != NAME:
            raise MlxInterpError(f"{f} is not an {NAME} result (experiment {d.get('experiment')!r})")
    r0, quick0 = d0["results"], d0["provenance"]["config"].get("quick")
    rows, owner = dict(r0["rows"]), {p: f0 for p in r0["rows"]}
    for f, d in rest:
        r = d["results"]
        if d["provenance"]["config"].get("quick") != quick0:
            raise MlxInterpError(f"{f} is a {'quick' if d['provenance']['config'].get('quick') else 'full'} run and {f0} "
                                 "is not: merge parts of one run size")
        for k in SAME:
            if (at := first_difference(r.get(k), r0.get(k), k)):
                raise MlxInterpError(f"{f} and {f0} differ at {at}: parts of one grid must share the reference stage "
                                     "(same model, size and code)")
        ref, ref0 = ({k: v for k, v in x["rows"][REFERENCE].items() if k not in TIMING} for x in (r, r0))
        if (at := first_difference(ref, ref0, f"rows/{REFERENCE}")):
            raise MlxInterpError(f"{f} and {f0} differ at {at}: the parts measured different references (another "
                                 "commit or setting?); rerun them at one commit")
        for p, row in r["rows"].items():
            if p == REFERENCE:
                continue
            if p in rows:
                raise MlxInterpError(f"precision {p!r} is in both {owner[p]} and {f}: give each precision to one part")
            rows[p], owner[p] = row, f
    precisions = [REFERENCE] + [p for p in rows if p != REFERENCE]
    payload = {**{k: r0[k] for k in SAME if k in r0}, "precisions": precisions, "rows": rows,
               "hypotheses": hypotheses(rows, REFERENCE),
               "merged_from": [{"file": f, "git_commit": d["provenance"].get("git_commit"),
                                "precisions": [p for p in d["results"]["precisions"] if p != REFERENCE],
                                "wall_s": d["provenance"].get("wall_s"),
                                "wall_s_total": d["provenance"].get("wall_s_total", d["provenance"].get("wall_s")),
                                "reference_stage_s": d["results"].get("reference_stage_s"),
                                "reference_from": d["results"].get("reference_from")} for f, d in parts]}
    config = {"quick": quick0, "precisions": precisions[1:], "merged": True}
    return _public(payload), config


def merge(files: list[str | Path], out_dir: str | Path) -> Path:
    """Merge the exp15 result ``files`` (parts of one model's grid) and write the merged result under ``out_dir``."""
    parts = []
    for f in map(Path, files):
        try:
            parts.append((f.name, json.loads(f.read_text())))
        except (OSError, ValueError) as e:
            raise MlxInterpError(f"cannot read exp15 result {f}: {e}") from None
    payload, config = merge_docs(parts)
    walls = [d["provenance"].get("wall_s_total", d["provenance"].get("wall_s")) for _, d in parts]  # resumed parts: all
    return mi.save_result(NAME, payload, lm=_Described(parts[0][1]["provenance"]["model"]), config=config,
                          wall_s=sum(walls) if all(w is not None for w in walls) else None, out_dir=out_dir)


def main(argv=None) -> Path:
    ap = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    ap.add_argument("files", nargs="+", help="exp15 result files of one model, each from a run with some --precision")
    ap.add_argument("--out", default="results", help="results folder (the merged file goes in <out>/exp15_quantization)")
    a = ap.parse_args(argv)
    try:
        path = merge(a.files, a.out)
    except MlxInterpError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    print(f"  -> {path}")
    return path


if __name__ == "__main__":
    main()
