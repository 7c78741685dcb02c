"""Add sycophancy's coefficient search to a kept exp15 result that predates it, without rerunning the grid.

    python -m experiments.exp15_sycophancy results/exp15_quantization/<file>.json [--out results]

Why: exp15 searched the generation traits' multipliers but read CAA sycophancy only at x1 the raw vector until
2026-12-05, and its full grids took 2-4 hours per model on two cores. Sycophancy reads fixed text (CAA's A/B items),
so its part can be redone alone: per precision, the vectors from the train items, the A/B rows at the kept layer, the
search on the validation items (``exp15_quantization.steer_sycophancy``) and both cross-precision rows. It is still
about 20 full passes over 50 long CAA prompts per precision (on Gemma-3-270M fp32, more than 9 minutes on two cores),
so a full grid's addition takes hours: it runs in a journal, and ``--resume`` continues an interrupted one.

It is only valid when it reproduces what the kept file measured on both splits the search touches: the reference's
sycophancy layer choice on the validation items, and every precision's x1 rows on the test items (-1, 0, +1 and their
random controls). Every count, choice and flag must be equal and every float within ``TOLERANCE`` (relative; absolute
for values under 1e-3, as ``compare_results`` measures drift) or ``ABS_TOLERANCE`` absolute (a layer's effect is a
difference of two A/B scores near 0.5, so its relative drift is large: BUGFIX #62), or it stops with a one-line error naming the first
difference and both values (another model build or code). Not ``exp15_merge``'s 1e-9: that is for parts of one run
on one build, while the code at 2026-12-05 reproduces the full grid of 12-04 (commit f1e3f8f) only to about 1e-6
relative, float32 sums taken in another order (BUGFIX #61). The largest drift is recorded in the new file. The new file holds the kept result
with each precision's sycophancy row replaced by the searched one, the sycophancy cross rows added, the hypotheses
recomputed (``exp15_quantization.hypotheses``), ``sycophancy_search`` (the search's settings, as a run of the study
records them) and ``sycophancy_search_added``: the kept file, its commit, this step's wall time and the
reproduction check's summary. Its ``wall_s`` is
the kept run's plus this step's. The kept file is never changed; the new one is the model's newest result, so the
notes' tables read it (run it on the newest file of a model, or the tables move to an older run).
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from pathlib import Path

import mlx_interp as mi  # first: it preloads the fast BLAS before mlx (runtime/blas.py)
import mlx.core as mx

from experiments.common import journaled
from experiments.compare_results import ABS_TOLERANCE, TOLERANCE, Comparison, require_same
from experiments.exp15_merge import _Described
from experiments.exp15_quantization import (NAME, REFERENCE, SYC_SEARCH, _public, add_sycophancy_search,
                                            choose_sycophancy_layer, cross_steer, data, hypotheses, prepare_variants,
                                            recorded_config, sycophancy_activations, sycophancy_x1)
from mlx_interp.errors import MlxInterpError
from mlx_interp.readouts.directions import diff_of_means_vec

KEPT = ("0", "-1", "+1", "random_-1", "random_+1")  # the x1 rows on the test items the recomputation must reproduce


def _same(got, kept, where: str, file_name: str, seen: Comparison) -> None:
    require_same(got, kept, where, file_name, seen, "the recomputed sycophancy rows")


def add_search(doc: dict, file_name: str) -> tuple[dict, dict, float]:
    """A kept exp15 document -> (results payload with the sycophancy search, provenance config, this step's wall s).

    Before searching, it reproduces what the kept file measured on each split the search touches: the reference's
    layer choice on the validation items (``layers.sycophancy``) and every precision's x1 rows on the test items."""
    t0 = time.time()
    if doc.get("experiment") != NAME:
        raise MlxInterpError(f"{file_name} is not an {NAME} result (experiment {doc.get('experiment')!r})")
    r = doc["results"]
    if r.get("sycophancy_search"):
        raise MlxInterpError(f"{file_name} already holds sycophancy's coefficient search; nothing to add")
    cfg = recorded_config(doc)
    d = data(cfg, bool(doc["provenance"]["config"].get("quick")))
    kept_layers = r["layers"]["sycophancy"]
    k, cands = kept_layers["layer"], [c["layer"] for c in kept_layers["candidates"]]
    alias = r["reference"].split("@")[0]
    prepare_variants(alias, r["precisions"])
    ref = mi.load(f"{alias}@{REFERENCE}")
    rows = json.loads(json.dumps(r["rows"]))  # a copy to edit
    searched, seen = {}, Comparison()
    for p in r["precisions"]:
        lm = ref if p == REFERENCE else mi.load(f"{alias}@{p}")
        print(f"{NAME} sycophancy search: {lm.name}", file=sys.stderr)
        pos, neg, letters = sycophancy_activations(lm, d)
        if p == REFERENCE:  # the validation items and the reference's vectors: its layer choice must come back
            vecs = {("sycophancy", "answer_letter"): {"diff_of_means": {c: diff_of_means_vec(pos[c], neg[c], letters)
                                                                        for c in cands}}}
            _same(_public(choose_sycophancy_layer(ref, d, vecs, cands)), kept_layers, "layers/sycophancy", file_name,
                  seen)
        row = sycophancy_x1(lm, d, diff_of_means_vec(pos[k], neg[k], letters), k, cfg)
        kept = r["rows"][p]["steering"]["sycophancy"]
        for key in KEPT if "skipped" not in kept else ("0",):
            _same(_public(row.get(key)), kept.get(key), f"rows/{p}/steering/sycophancy/{key}", file_name, seen)
        if "skipped" not in row:
            row = add_sycophancy_search(lm, d, row, cfg)
        searched[p] = row
        rows[p]["steering"]["sycophancy"] = _public(row)
        if p != REFERENCE:
            cross = rows[p].setdefault("cross_steering", {})  # the study's rule, for the one A/B trait
            for key, receiver, own, foreign in (("reference_vector_on_variant", lm, row, searched[REFERENCE]),
                                                ("variant_vector_on_reference", ref, searched[REFERENCE], row)):
                got = cross_steer(receiver, None, d, {"sycophancy": own}, {"sycophancy": foreign}, cfg)["sycophancy"]
                cross.setdefault(key, {})["sycophancy"] = _public(got)
            row.pop("_ab_base", None)  # its test-item activations: used up (fp32's serve every variant's crossing)
            del lm
            gc.collect()
            mx.clear_cache()  # give this variant's weights back before the next
    wall = time.time() - t0
    payload = {**{key: v for key, v in r.items() if key != "rows"}, "rows": rows, "hypotheses": hypotheses(rows, REFERENCE),
               "sycophancy_search": SYC_SEARCH,
               "sycophancy_search_added": {"file": file_name, "git_commit": doc["provenance"].get("git_commit"),
                                           "wall_s": wall, "reproduction": {**{k: v for k, v in seen.summary().items()
                                                                              if k in ("non_float_values", "floats",
                                                                                       "float_max_difference")},
                                                                           "tolerance": TOLERANCE,
                                                                           "abs_tolerance": ABS_TOLERANCE}}}
    config = {**doc["provenance"]["config"], "sycophancy_search_added": True}
    return _public(payload), config, wall


def _run(file: str, out: str) -> Path:
    f = Path(file)
    try:
        doc = json.loads(f.read_text())
    except (OSError, ValueError) as e:
        raise MlxInterpError(f"cannot read exp15 result {f}: {e}") from None
    payload, config, wall = add_search(doc, f.name)
    before = doc["provenance"].get("wall_s_total", doc["provenance"].get("wall_s"))  # a resumed run's: all of it
    return mi.save_result(NAME, payload, lm=_Described(doc["provenance"]["model"]), config=config,
                          wall_s=None if before is None else before + wall, out_dir=out)


def main(argv=None) -> Path:
    ap = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    ap.add_argument("file", help="a kept exp15 result file from before the sycophancy search")
    ap.add_argument("--out", default="results", help="results folder (the new file goes in <out>/exp15_quantization)")
    ap.add_argument("--resume", action="store_true", help="continue an interrupted run of the same command (its "
                                                          "journal replays the passes already made)")
    a = ap.parse_args(argv)
    path = journaled("exp15_sycophancy", a, argv, lambda: _run(a.file, a.out))
    print(f"  -> {path}")
    return path


if __name__ == "__main__":
    main()
