"""Resumable runs: a journal of every completed forward pass and generation batch, replayed by ``--resume``.

Every experiment is a deterministic sequence of calls to the one batching path (``core.trace.run``,
``core.generate.generate``). While a journal is open, each call's result is written atomically (temporary file, then
rename) under a key that fingerprints everything the result depends on: the model's name, the token lists, the
interventions and captures with their vectors' bytes, the sampling settings. An interrupted study rerun with
``--resume`` finds the calls it already made in the journal and replays them instead of recomputing, then goes on; its
result equals an uninterrupted run's exactly, because the same code consumes the same numbers. Nothing half-written is
read: a file appears only complete, and an unreadable one is recomputed. The journal is deleted when the study's
result has been written. Beside each call it keeps what computing it took (seconds and model work, ``runs.work.Meter``),
and a replay credits that to ``runs.work``'s replayed ledger, so a run resumed over several processes reports its
whole compute time (``wall_s_total``) as well as its last process's (``wall_s``).

Calls whose result would not be reproducible from their key are not journaled: an ``Edit`` with an arbitrary function,
a continued ``cache=``, ``resume=`` from a base trace, a pass keeping its KV cache, sampling at ``temperature > 0``, or
a result above ``MAX_BYTES``. A readout that reduces large passes to a small value (``collect_responses``' means
over all-position captures, ``collect_ab``'s cache-continued passes) journals that value instead (``memo``), so a
resumed run replays it rather than recomputing passes that were too large, or not keyable, to journal.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pickle
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np

MAX_BYTES = 256 << 20  # results larger than this are recomputed rather than journaled
_ACTIVE: "Journal | None" = None


class Unkeyable(Exception):
    """A call argument that cannot be fingerprinted (a function): the call is not journaled."""


def _feed(h, x: Any) -> None:
    import mlx.core as mx

    if x is None or isinstance(x, (bool, int, float, str)):
        h.update(repr((type(x).__name__, x)).encode())
    elif isinstance(x, (mx.array, np.ndarray)):
        a = np.array(x.astype(mx.float32) if isinstance(x, mx.array) and x.dtype == mx.bfloat16 else x)
        h.update(repr((a.dtype.str, a.shape)).encode())
        h.update(np.ascontiguousarray(a).tobytes())
    elif isinstance(x, (np.integer, np.floating)):
        _feed(h, x.item())
    elif isinstance(x, (list, tuple)):
        h.update(f"{type(x).__name__}[{len(x)}]".encode())
        for v in x:
            _feed(h, v)
    elif isinstance(x, (set, frozenset)):
        _feed(h, ("set", sorted(x, key=repr)))
    elif isinstance(x, dict):
        h.update(f"dict[{len(x)}]".encode())
        for k in sorted(x, key=repr):
            _feed(h, k)
            _feed(h, x[k])
    elif isinstance(x, slice):
        _feed(h, ("slice", x.start, x.stop, x.step))
    elif dataclasses.is_dataclass(x) and not isinstance(x, type):
        h.update(type(x).__qualname__.encode())
        for f in dataclasses.fields(x):
            _feed(h, (f.name, getattr(x, f.name)))
    else:
        raise Unkeyable(type(x).__name__)


def fingerprint(*parts: Any) -> str | None:
    """sha256 of the parts (arrays by their bytes), or None when one of them cannot be fingerprinted."""
    h = hashlib.sha256()
    try:
        _feed(h, parts)
    except Unkeyable:
        return None
    return h.hexdigest()


class Journal:
    """Completed calls of one study run, in ``folder`` (one pickle per call, named by its key)."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.hits = self.writes = 0
        self.seen: set[str] = set()  # keys this process computed or already credited: a hit on one credits nothing
        self.stop_after = int(os.environ.get("MLX_INTERP_JOURNAL_STOP_AFTER", "0") or 0)  # tests: simulate a kill

    def finished(self, tag: str) -> str | None:
        """The result file an earlier, interrupted run of this command already wrote for ``tag`` (e.g. one model of
        several), so a resumed run does not write it twice."""
        p = self.folder / f"done-{fingerprint(tag)[:16]}.txt"
        path = p.read_text().strip() if p.is_file() else None
        return path if path and Path(path).exists() else None

    def finish(self, tag: str, path) -> None:
        from ..runtime.parallel import world

        if world().main:
            self.folder.mkdir(parents=True, exist_ok=True)
            tmp = self.folder / f".tmp-done-{os.getpid()}"
            tmp.write_text(str(path))
            os.replace(tmp, self.folder / f"done-{fingerprint(tag)[:16]}.txt")

    def get(self, key: str | None):
        """The journaled result of a call, or None. In a data-parallel run the ranks agree first: a call is replayed
        only if every rank finds it, so their collectives keep pairing up."""
        from ..runtime.parallel import gather_objects, world

        if key is None:
            return None
        out = self._read(key)
        if world().size > 1 and not all(gather_objects(out is not None, "agreeing on a journaled call")):
            return None
        if out is not None:
            self.hits += 1
            if key not in self.seen and world().main:
                self._credit(key)
            self.seen.add(key)
        return out

    def _credit(self, key: str) -> None:
        """Credit what an earlier process's call cost (``runs.work``), on the main rank, which measured it (the other
        ranks' ledgers stay empty); journals written before costs were kept have none: a call, no seconds."""
        from . import work

        try:
            work.credit(json.loads((self.folder / f"{key}.cost.json").read_text()))
        except (OSError, ValueError):
            work.credit({})

    def _read(self, key: str):
        p = self.folder / f"{key}.pkl"
        if not p.is_file():
            return None
        try:
            with open(p, "rb") as f:
                return pickle.load(f)
        except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ValueError):
            return None  # unreadable: recompute

    def put(self, key: str | None, value, meter=None) -> None:
        """Keep a completed call's result; ``meter`` (``runs.work.Meter``, started before the call): what computing
        it took, read once the value is pickled (so any lazy evaluation is in it) and credited when a later process
        replays the call. Written before the result, so a result never appears without its cost."""
        from ..runtime.parallel import world

        if key is None:
            return
        blob = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        if len(blob) > MAX_BYTES:
            return
        self.seen.add(key)
        if world().main:  # the ranks of a data-parallel run hold the same gathered results; rank 0 keeps them
            self.folder.mkdir(parents=True, exist_ok=True)
            if meter is not None:
                tmp = self.folder / f".tmp-{key}-{os.getpid()}.cost"
                tmp.write_text(json.dumps(meter.cost()))
                os.replace(tmp, self.folder / f"{key}.cost.json")
            tmp = self.folder / f".tmp-{key}-{os.getpid()}"
            tmp.write_bytes(blob)
            os.replace(tmp, self.folder / f"{key}.pkl")
        self.writes += 1
        if self.stop_after and self.writes >= self.stop_after:
            print(f"mlx-interp: stopping after {self.writes} journaled calls (MLX_INTERP_JOURNAL_STOP_AFTER)",
                  file=sys.stderr, flush=True)
            os._exit(75)


def others(folder: Path, command) -> list[tuple[Path, dict]]:
    """Journals beside ``folder`` whose ``meta.json`` names the same ``command`` (made by other code)."""
    out = []
    for f in sorted(Path(folder).parent.glob(".journal-*")):
        if f == Path(folder) or not (f / "meta.json").is_file():
            continue
        try:
            meta = json.loads((f / "meta.json").read_text())
        except (OSError, ValueError):
            continue
        if meta.get("command") == command:
            out.append((f, meta))
    return out


def active() -> Journal | None:
    return _ACTIVE


def memo(name: str, parts: tuple, compute):
    """``compute()``, journaled as one call keyed by ``name`` and ``parts`` (everything its value depends on: the
    model's name, token lists, sites...): replayed on ``--resume``; the passes inside it are not journaled themselves
    (its value is what is kept). Without an open journal, or with unkeyable parts, it just computes."""
    global _ACTIVE
    j = _ACTIVE
    key = fingerprint("memo", name, *parts) if j is not None else None
    if key is None:
        return compute()
    hit = j.get(key)
    if hit is not None:
        return hit
    from .work import Meter

    _ACTIVE, meter = None, Meter()
    try:
        out = compute()
    finally:
        _ACTIVE = j
    j.put(key, out, meter)
    return out


class opened:
    """``with opened(folder, resume):`` journal the calls inside; ``resume=False`` starts from an empty journal. The
    folder is deleted on a clean exit (the study's result has been written), kept when the study was interrupted.
    ``meta`` (e.g. the command and the code version) is written beside the calls as ``meta.json``, so a later
    ``--resume`` of the same command under other code can say which journal exists and what made it."""

    def __init__(self, folder: Path, resume: bool, meta: dict | None = None):
        self.folder, self.resume, self.meta = Path(folder), resume, meta

    def __enter__(self) -> Journal:
        global _ACTIVE
        from ..runtime.parallel import world

        if not self.resume and world().main:
            shutil.rmtree(self.folder, ignore_errors=True)
        if self.meta is not None and world().main:
            self.folder.mkdir(parents=True, exist_ok=True)
            tmp = self.folder / f".tmp-meta-{os.getpid()}"
            tmp.write_text(json.dumps(self.meta))
            os.replace(tmp, self.folder / "meta.json")
        _ACTIVE = Journal(self.folder)
        if self.resume and self.folder.is_dir():
            n = len(list(self.folder.glob("*.pkl")))
            print(f"mlx-interp: resuming from {n} journaled calls in {self.folder}", file=sys.stderr)
        return _ACTIVE

    def __exit__(self, exc_type, exc, tb) -> bool:
        global _ACTIVE
        from ..runtime.parallel import world

        j, _ACTIVE = _ACTIVE, None
        if j is not None and j.hits:
            print(f"mlx-interp: replayed {j.hits} journaled calls", file=sys.stderr)
        if exc_type is None and world().main:
            shutil.rmtree(self.folder, ignore_errors=True)
        elif exc_type is not None and j is not None and j.writes:
            print(f"mlx-interp: {j.writes} completed calls kept in {self.folder}; rerun with --resume to continue",
                  file=sys.stderr)
        return False
