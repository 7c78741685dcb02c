"""How closely a rerun reproduces a kept result: every value the two result files share, compared.

    python -m experiments.compare_results KEPT.json RERUN.json [--ignore wall_s --ignore stage_s ...]

Non-float values (counts, chosen layers and multipliers, names, flags) must be equal; floats are summarised by their
largest relative difference (absolute below 1e-3 in size, where a relative one means nothing). Keys only one file
has (what a study added since) are counted, not compared; provenance is left out (it names the commit and machine).
``exp15_merge.first_difference`` is the strict check (1e-9) for parts of one run; this one says how far two runs of
one configuration, made under different code, drift.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass, field

from mlx_interp.errors import MlxInterpError

#: leaves that differ between any two runs by nature: timings, work profiles, and where the BLAS library lives
IGNORE = ("wall_s", "wall_s_total", "stage_s", "stage_work", "reference_stage_s", "reference_stage_work", "blas")
TOLERANCE = 1e-4  # the largest float drift from kept values a recomputation may show (this module's measure; ~1e-6 seen)
ABS_TOLERANCE = 1e-5  # or this much absolute: a layer effect is a difference of two A/B scores near 0.5 (BUGFIX #62)


@dataclass
class Comparison:
    discrete: int = 0
    discrete_differ: list = field(default_factory=list)  # (path, kept, rerun)
    floats: list = field(default_factory=list)  # (difference, path, kept, rerun)
    only_one: int = 0
    one_sided: list = field(default_factory=list)  # (path, "kept" or "rerun": the side that has it)

    def summary(self, over: float = 1e-4) -> dict:
        worst = sorted(self.floats, reverse=True)
        return {"non_float_values": self.discrete, "non_float_differ": [list(x) for x in self.discrete_differ],
                "floats": len(self.floats), "float_max_difference": worst[0][0] if worst else 0.0,
                f"floats_over_{over:g}": sum(1 for d, *_ in worst if d > over),
                "largest": [list(x) for x in worst[:5]], "keys_in_one_file_only": self.only_one}


def compare(kept, rerun, ignore=IGNORE, path: str = "", out: Comparison | None = None) -> Comparison:
    """Walk the values both documents hold (see the module docstring)."""
    out = out or Comparison()
    if isinstance(kept, dict) and isinstance(rerun, dict):
        for k in kept.keys() | rerun.keys():
            if k in ignore:
                continue
            if k in kept and k in rerun:
                compare(kept[k], rerun[k], ignore, f"{path}/{k}", out)
            else:
                out.only_one += 1
                out.one_sided.append((f"{path}/{k}", "kept" if k in kept else "rerun"))
    elif isinstance(kept, list) and isinstance(rerun, list) and len(kept) == len(rerun):
        for i, (a, b) in enumerate(zip(kept, rerun)):
            compare(a, b, ignore, f"{path}[{i}]", out)
    elif isinstance(kept, float) and isinstance(rerun, (int, float)) and not isinstance(rerun, bool):
        if math.isnan(kept) or math.isnan(rerun):  # NaN only reproduces NaN
            out.discrete += 1
            if not (math.isnan(kept) and math.isnan(rerun)):
                out.discrete_differ.append((path, kept, rerun))
            return out
        size = max(abs(kept), abs(rerun))
        d = abs(kept - rerun)
        out.floats.append((d / size if size >= 1e-3 else d, path, kept, rerun))
    else:
        out.discrete += 1
        if kept != rerun:
            out.discrete_differ.append((path, kept, rerun))
    return out


def require_same(got, kept, where: str, file_name: str, seen: Comparison, what: str, all_keys: bool = False) -> None:
    """Raise unless ``got`` reproduces ``kept``: every count, choice, flag and text equal (NaN only to NaN), every
    float within ``TOLERANCE`` (relative; absolute under 1e-3) or ``ABS_TOLERANCE`` absolute, and with ``all_keys``
    every key on both sides (else a key one side lacks, what a study added since, is not compared); add what was
    compared to ``seen``. For a step that recomputes part of a kept result before building on it
    (``exp15_sycophancy``, exp15's ``--reference-from``): not ``exp15_merge``'s 1e-9, since code of another commit
    reorders float32 sums (BUGFIX #61)."""
    c = compare(kept, got, path=where)
    bad = [(path, k, g) for path, k, g in c.discrete_differ]
    if all_keys:
        bad += [(path, "present", "absent") if side == "kept" else (path, "absent", "present") for path, side in c.one_sided]
    bad += [(path, k, g) for d, path, k, g in sorted(c.floats, reverse=True)
            if d > TOLERANCE and abs(k - g) > ABS_TOLERANCE][:1]
    if not bad and c.discrete + len(c.floats) == 0:
        bad = [(where, kept, got)]  # nothing in common: a kept value this step cannot read is not a reproduction
    if bad:
        at, k, g = bad[0]
        raise MlxInterpError(f"{file_name}: {what} differ from the kept ones at {at.lstrip('/')} (kept {k!r}, now {g!r}; "
                             f"floats may drift by {TOLERANCE:g} relative or {ABS_TOLERANCE:g} absolute): another model "
                             "build or code? Rerun the study instead")
    seen.discrete += c.discrete
    seen.floats += c.floats


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    ap.add_argument("kept")
    ap.add_argument("rerun")
    ap.add_argument("--ignore", action="append", default=[], help="another key to leave out (repeatable)")
    a = ap.parse_args(argv)
    docs = []
    for f in (a.kept, a.rerun):
        try:
            docs.append(json.loads(open(f).read()))
        except (OSError, ValueError) as e:
            print(f"error: cannot read result file {f!r}: {e}", file=sys.stderr)
            sys.exit(2)
    if docs[0].get("experiment") != docs[1].get("experiment"):
        print(f"error: {a.kept} is a {docs[0].get('experiment')!r} result and {a.rerun} a {docs[1].get('experiment')!r} "
              "one; compare two runs of one study", file=sys.stderr)
        sys.exit(2)
    s = compare(docs[0]["results"], docs[1]["results"], IGNORE + tuple(a.ignore)).summary()
    print(json.dumps(s, indent=1))
    return s


if __name__ == "__main__":
    main()
