"""Write experiment results as JSON with full provenance, atomically, never overwriting.

``save_result("exp6_twohop", payload, lm=lm, config={...}, seed=0, wall_s=12.3)`` writes
``results/exp6_twohop/<UTC timestamp>_<model>.json`` (a numeric suffix is added if the name
exists) through a temporary file and ``os.replace``, so a crash never leaves half a file
and an earlier run is never overwritten.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..errors import MlxInterpError


def _version(pkg: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(pkg)
    except Exception:
        return None


def git_commit(cwd: Path | None = None) -> str | None:
    """HEAD of the checkout this package lives in; with uncommitted code, "+dirty." and a hash of it (edits to
    tracked files, as paths and the diff against HEAD, and the paths and contents of untracked ``.py`` files), so two
    different uncommitted states never share a version (a journal keyed by it is not replayed under other edits).
    Untracked data (result files a run has just written, a symlinked venv) is not code and does not count: a run
    resumed after its first model's result appeared keeps its version. None outside git."""
    where = cwd or Path(__file__).parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=where)
        commit = out.stdout.strip() or None
        if not commit:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True,
                               cwd=where).stdout
        top = Path(subprocess.run(["git", "rev-parse", "--show-toplevel"], capture_output=True, text=True,
                                  cwd=where).stdout.strip())
        new_code = sorted(subprocess.run(["git", "ls-files", "--others", "--exclude-standard", "--full-name", "--", ":/*.py"],
                                         capture_output=True, text=True, cwd=where).stdout.split())
        if not dirty.strip() and not new_code:
            return commit
        h = hashlib.sha256(dirty.encode())
        h.update(subprocess.run(["git", "diff", "HEAD", "--binary"], capture_output=True, cwd=where).stdout)
        for f in new_code:
            h.update(f.encode() + b"\0" + (top / f).read_bytes())
        return f"{commit}+dirty.{h.hexdigest()[:12]}"
    except OSError:
        return None


_CODE: dict = {}


def code_version() -> str | None:
    """The commit the running code came from, read once and kept (experiments read it when they start).

    HEAD may move while a long experiment runs (BUGFIX.md #11); reading it lazily, not at import,
    keeps ``import mlx_interp`` free of subprocesses.
    """
    if "commit" not in _CODE:
        _CODE["commit"] = git_commit()
    return _CODE["commit"]


def provenance(lm=None, *, config: dict | None = None, seed: int | None = None, wall_s: float | None = None) -> dict:
    import mlx.core as mx

    from ..runtime import blas as _blas
    from ..runtime import jit as _jit
    from ..runtime.parallel import world
    from . import work

    w, replayed = world(), work.take_replayed()
    prov = {
        "timestamp_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "mlx_version": _version("mlx"),
        "mlx_lm_version": _version("mlx-lm"),
        "mlx_interp_version": _version("mlx-interp"),
        "git_commit": code_version(),
        "platform": f"{platform.system()} {platform.machine()} python {platform.python_version()}",
        "device": str(mx.default_device()),
        "blas": _blas.STATE.get("loaded"),
        "blas_threads": _blas.STATE.get("threads"),
        "blas_threads_reason": _blas.STATE.get("threads_reason"),
        "jit_flags": _jit.STATE.get("flags"),
        "world": w.describe(),
        "argv": sys.argv,
        "seed": seed,
        "config": config or {},
        "wall_s": None if wall_s is None else round(wall_s, 3),
        "work": {**work.take(), "counted_on": "this process" if w.size == 1 else f"rank {w.rank} of {w.size} (its own share)",
                 "replayed": replayed},
    }
    if wall_s is not None:  # a resumed run: this process's time plus what its replayed calls took when computed
        prov["wall_s_total"] = round(wall_s + replayed["seconds"], 3)
    now = git_commit()
    if now != prov["git_commit"]:  # the tree changed during the run: record both, the first is what ran
        prov["git_commit_at_save"] = now
    if lm is not None:
        prov["model"] = lm.describe()
    return prov


def _jsonable(x: Any):
    import mlx.core as mx
    import numpy as np

    if isinstance(x, mx.array):
        return x.tolist()
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    if isinstance(x, Path):
        return str(x)
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")


def atomic_write_new(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` or, if it exists, to ``path`` with a ``-2``, ``-3``... suffix. In a data-parallel
    run only the main rank writes (the others hold the same numbers; ``runtime.parallel``)."""
    from ..runtime.parallel import world

    if not world().main:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".part")  # never matched by "*.json" readers
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        stem, suffix, n = path.stem, path.suffix, 1
        target = path
        while True:
            try:
                os.link(tmp, target)  # fails if target exists: never overwrites
                break
            except FileExistsError:
                n += 1
                target = path.with_name(f"{stem}-{n}{suffix}")
    finally:
        os.unlink(tmp)
    return target


def save_result(
    experiment: str,
    payload: dict,
    *,
    lm=None,
    config: dict | None = None,
    seed: int | None = None,
    wall_s: float | None = None,
    out_dir: str | Path = "results",
    tag: str | None = None,
) -> Path:
    """Write one result file and return its path: ``<out_dir>/<experiment>/<UTC stamp>_<tag>.json``, the tag being
    the model's name unless given (a study over several models names its files, e.g. ``b1_transfer_a_to_b``)."""
    if not experiment or "/" in experiment:
        raise MlxInterpError(f"experiment name {experiment!r} is not valid; use a plain name like exp6_twohop")
    if tag is not None and (not tag or "/" in tag or tag.startswith(".")):
        raise MlxInterpError(f"result tag {tag!r} is not valid; use a plain file-name part like b1_self_smollm2-135m")
    doc = {"experiment": experiment, "provenance": provenance(lm, config=config, seed=seed, wall_s=wall_s), "results": payload}
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    model = tag or (lm.name if lm is not None else "nomodel").replace("/", "_")
    path = Path(out_dir) / experiment / f"{stamp}_{model}.json"
    try:
        text = json.dumps(doc, indent=2, default=_jsonable)
    except (TypeError, ValueError) as e:  # json's protocol for values it cannot write
        raise MlxInterpError(f"result payload for {experiment} cannot be written as JSON: {e}; "
                             "use numbers, strings, lists, dicts, numpy or mlx arrays") from None
    try:
        return atomic_write_new(path, text)
    except OSError as e:
        raise MlxInterpError(f"cannot write results to {path.parent}: {e.strerror or e}") from None


def load_results_with_paths(experiment: str, out_dir: str | Path = "results") -> list[tuple[Path, dict]]:
    """Every saved result of an experiment with its file, oldest first (see ``load_results``)."""
    d = Path(out_dir) / experiment
    if not d.exists():
        return []
    files = sorted(d.glob("*.json"), key=lambda p: (p.stat().st_mtime_ns, p.name))
    return [(p, json.loads(p.read_text())) for p in files]


def load_results(experiment: str, out_dir: str | Path = "results") -> list[dict]:
    """Every saved result of an experiment, oldest first (for figures and for experiments that build on others).

    Ordered by write time, not by name: a second result in the same second gets a ``-2`` suffix,
    and ``..._model-2.json`` sorts *before* ``..._model.json`` by name.
    """
    return [doc for _, doc in load_results_with_paths(experiment, out_dir)]
