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
import sys
from dataclasses import dataclass, field

#: leaves that differ between any two runs by nature: timings, work profiles, and where the BLAS library lives
IGNORE = ("wall_s", "wall_s_total", "stage_s", "stage_work", "reference_stage_s", "reference_stage_work", "blas")


@dataclass
class Comparison:
    discrete: int = 0
    discrete_differ: list = field(default_factory=list)  # (path, kept, rerun)
    floats: list = field(default_factory=list)  # (difference, path, kept, rerun)
    only_one: int = 0

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
    elif isinstance(kept, list) and isinstance(rerun, list) and len(kept) == len(rerun):
        for i, (a, b) in enumerate(zip(kept, rerun)):
            compare(a, b, ignore, f"{path}[{i}]", out)
    elif isinstance(kept, float) and isinstance(rerun, (int, float)) and not isinstance(rerun, bool):
        size = max(abs(kept), abs(rerun))
        d = abs(kept - rerun)
        out.floats.append((d / size if size >= 1e-3 else d, path, kept, rerun))
    else:
        out.discrete += 1
        if kept != rerun:
            out.discrete_differ.append((path, kept, rerun))
    return out


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
