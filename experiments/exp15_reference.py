"""exp15 parts that reuse a kept part's fp32 reference instead of recomputing it (``--reference-from``).

    python -m experiments.exp15_quantization --precision 4bit-g64 --precision mxfp4 \\
        --reference-from results/published/exp15_quantization/parts/<part>.json --out results/parts

Why: the full grid on an instruct Qwen model takes about an hour per precision on two cores, and a session's machine
does not keep a run's journal, so the grid runs in parts of one or two precisions (``exp15_merge``). Each part
recomputed the fp32 reference stage and the fp32 row: on Qwen-0.5B about an hour of a part's two, for the merge to
find the same numbers again.

A part given ``--reference-from FILE`` runs with the file's model and configuration and takes from it what only the
validation layer choice and fp32's steering searches produce: the steering layers and the fp32 row, copied as kept
(so ``exp15_merge``'s check that parts share their fp32 row holds for this part because it copied it, and for the
kept part because the merge compares it). It still recomputes what comparing a variant with fp32 needs, and every
recomputation must reproduce the kept file (``compare_results.require_same``: counts, choices and texts equal, floats
within 1e-4), or the part stops with a one-line error before measuring any variant:

- fp32's own texts and their vetting (the vetting report: counts and rates);
- fp32's vectors (each vector's split-half cosine and probe AUROC at its steering layer, from the native cosines);
- fp32's capability (each benchmark's accuracy, logit difference and letter mass; the per-item outcomes, which the
  file does not keep, pair each variant's with fp32's);
- per generation trait, fp32's test rows at the kept coefficient: unsteered, steered and the random direction (rates,
  coherence, example texts); the unsteered texts are what steering fp32 with a variant's vector is judged against;
- sycophancy's CAA test rows: unsteered (the pass its crossings resume from), x1 and its random controls, and the
  kept searched coefficient with its random control.

Not recomputed, so not checked again: the validation layer choice and fp32's validation searches, which is what the
part saves. The new file records ``reference_from`` (the kept file, its SHA-256
and commit, and the check's summary), and ``provenance.config.reference_from`` its name; its fp32 row's ``wall_s``
and ``stage_s`` are this part's (``reference_check``: the recomputation and the check).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from experiments.compare_results import ABS_TOLERANCE, TOLERANCE, Comparison, require_same
from experiments.exp15_quantization import (METHODS, NAME, REFERENCE, STEER_WITH, SYC_SEARCH, Config, _prompts, _public,
                                            capability, cosines, recorded_config, steer_test, steerable, sycophancy_test,
                                            sycophancy_x1)
from experiments.exp15_sycophancy import KEPT
from mlx_interp.errors import MlxInterpError


class Reused:
    """A kept exp15 result whose steering layers and fp32 row a new part takes (see the module docstring)."""

    def __init__(self, path: str):
        p = Path(path)
        try:
            raw = p.read_bytes()
            doc = json.loads(raw)
        except (OSError, ValueError) as e:
            raise MlxInterpError(f"--reference-from {path!r}: cannot read it ({e}); give an {NAME} result file") from None
        if not isinstance(doc, dict) or doc.get("experiment") != NAME:
            raise MlxInterpError(f"--reference-from {p.name} is not an {NAME} result "
                                 f"(experiment {doc.get('experiment') if isinstance(doc, dict) else None!r})")
        try:
            r = doc["results"]
            self.alias = r["reference"].split("@")[0]
            self.cfg: Config = recorded_config(doc)
            self.quick = bool(doc["provenance"]["config"]["quick"])
            self.layers, self.kept = r["layers"], r["rows"][REFERENCE]
        except (KeyError, TypeError, AttributeError) as e:
            raise MlxInterpError(f"--reference-from {p.name} is not a complete {NAME} result (no {e}); give a kept "
                                 "result file") from None
        if not r.get("sycophancy_search"):
            raise MlxInterpError(f"--reference-from {p.name} predates sycophancy's coefficient search, so its fp32 row "
                                 "cannot serve today's variants; run the part without --reference-from")
        today = json.loads(json.dumps(_public({"sycophancy_search": SYC_SEARCH, "positions": STEER_WITH,
                                               "methods": METHODS})))
        for key, value in today.items():  # what its fp32 row was measured with must be what the variants will be
            if r.get(key) != value:
                raise MlxInterpError(f"--reference-from {p.name} measured fp32 with {key} {r.get(key)!r}, the study now "
                                     f"uses {value!r}; run the part without --reference-from")
        self.file_name, self.doc, self.sha256 = p.name, doc, hashlib.sha256(raw).hexdigest()
        self.seen = Comparison()

    def _same(self, got, kept, where: str) -> None:
        require_same(_public(got), kept, where, self.file_name, self.seen, "the fp32 values this part recomputed",
                     all_keys=True)

    def reference_row(self, ref, d: dict, reference: tuple, cfg: Config) -> tuple[dict, dict]:
        """(the kept fp32 row, fp32's steering rows as cross-precision steering reads them), after checking what this
        part recomputed (``reference``: fp32's texts, vetted sets and vectors) and recomputing the rest it needs."""
        _, ref_kept, ref_vecs = reference
        kept = self.kept
        L = {t: v["layer"] for t, v in self.layers.items()}
        self._same(ref_kept.get("report"), kept["vetting"], f"rows/{REFERENCE}/vetting")
        native = cosines(ref_vecs, ref_vecs, ref, ref, L)
        self._same({k: {f: v[f] for f in ("reference_split_half", "probe_auroc", "steering_layer")} for k, v in native.items()},
                   {k: {f: v[f] for f in ("reference_split_half", "probe_auroc", "steering_layer")}
                    for k, v in kept["cosine"]["native"].items()}, f"rows/{REFERENCE}/cosine/native")
        cap = capability(ref, d)
        self._same(cap, kept["capability"], f"rows/{REFERENCE}/capability")
        steered = {}
        for trait in steerable(ref):
            row = kept["steering"][trait]
            if "skipped" in row:
                steered[trait] = dict(row)
                continue
            k, best = row["layer"], row.get("best")
            if (trait, STEER_WITH[trait]) not in ref_vecs:
                raise MlxInterpError(f"{self.file_name}: its fp32 row steered {trait}, but this part has no fp32 {trait} "
                                     "vector (another code?); run the part without --reference-from")
            v = ref_vecs[(trait, STEER_WITH[trait])]["diff_of_means"][k]
            test = _prompts(ref, trait, d["steer"][trait][1])
            tested, base_test = steer_test(ref, ref, trait, v, k, best and best["alpha"], test, cfg)
            self._same(tested, {name: row.get(name) for name in tested}, f"rows/{REFERENCE}/steering/{trait}")
            steered[trait] = {**row, "_vector": v, "_base_test": base_test}
        row = kept["steering"]["sycophancy"]
        k = row["layer"]
        v = ref_vecs[("sycophancy", "answer_letter")]["diff_of_means"][k]
        x1 = sycophancy_x1(ref, d, v, k, cfg)  # the unsteered CAA test pass, which sycophancy's crossings resume from
        got = {name: x1.get(name) for name in (KEPT if "skipped" not in row else ("0",))}
        if row.get("best"):  # the test items at the kept searched coefficient, beside its random control
            got.update(sycophancy_test(ref, d, v, k, row["best"]["alpha"], x1["_ab_base"], cfg))
        self._same(got, {name: row.get(name) for name in got}, f"rows/{REFERENCE}/steering/sycophancy")
        steered["sycophancy"] = {**row, "_vector": v, "_ab_base": x1["_ab_base"]}
        out = json.loads(json.dumps(kept))  # the kept row, with this part's per-item outcomes to pair variants with
        for name, c in cap.items():
            out["capability"][name]["_correct"] = c["_correct"]
        out["model"] = ref.describe()
        return out, steered

    def provenance(self) -> dict:
        """What the new file records of the kept part it reused, and of the check."""
        s = self.seen.summary()
        return {"file": self.file_name, "sha256": self.sha256, "git_commit": self.doc["provenance"].get("git_commit"),
                "taken": ["layers", f"rows/{REFERENCE}"],
                "reproduction": {**{k: s[k] for k in ("non_float_values", "floats", "float_max_difference")},
                                 "tolerance": TOLERANCE, "abs_tolerance": ABS_TOLERANCE}}
