"""Data parallelism over ``mx.distributed``: the world, sharding, gathering in the caller's order, "only the main rank
writes".

Launch any script or experiment unchanged on N processes (one machine) or N Macs::

    mlx.launch -n 2 --backend ring python -m experiments.exp6_twohop_scaling --model smollm2-135m --quick
    mlx.launch --hostfile hosts.json --backend ring python -m experiments.exp7_refusal_scaling ...

A plain ``python`` run is a world of one, and nothing here changes it. In a larger world the one batching path
(``core.trace.run``, ``core.generate.generate``) gives each rank a share of the chunks, balanced by token count, and
gathers every chunk's result on every rank, so everything built on them (captures, directions, metrics, vetting,
searches, experiments) computes on all ranks exactly what one process would, from the same numbers, with no code of
its own. Results are written by rank 0 only (``runs.results``). We use MLX's engine and launcher and write no
scheduler: collectives are ``all_sum`` and ``all_gather`` of byte buffers.

A rank that dies closes its ring connections: the others' next collective fails, which ``gather_objects`` detects and
turns into one line. Each gather first waits until every rank has arrived (a rank may still be computing its share,
so this wait is long: ``MLX_INTERP_DIST_ARRIVAL_TIMEOUT`` seconds, default 4 hours; MLX's ring has twice left a rank
waiting here with no error after its peer exited); the transfer itself then runs under a watchdog of
``MLX_INTERP_DIST_TIMEOUT`` seconds (default 900). Either watchdog stops the process with one line instead of hanging. An error on one rank inside the batching path is
shared with every rank (``core.batching.gather_chunks``), so all stop together and the collectives keep pairing up.
"""

from __future__ import annotations

import os
import pickle
import sys
import threading
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Sequence

import numpy as np

from ..errors import MlxInterpError

DEFAULT_TIMEOUT_S = 900.0
#: how long a gather waits for the other ranks to arrive (they may still be computing their share)
DEFAULT_ARRIVAL_TIMEOUT_S = 4 * 3600.0


@dataclass(frozen=True)
class World:
    """This process's place among the ranks of one run."""

    rank: int
    size: int
    backend: str  # "ring", "mpi", ... or "none" for a world of one

    @property
    def main(self) -> bool:
        return self.rank == 0

    def describe(self) -> dict:
        return {"rank": self.rank, "size": self.size, "backend": self.backend}


@lru_cache(maxsize=1)
def _group():
    import mlx.core as mx

    if "MLX_RANK" not in os.environ and "OMPI_COMM_WORLD_RANK" not in os.environ:
        return None  # not launched by mlx.launch / mpirun: a world of one, no backend to start
    try:
        return mx.distributed.init(strict=True, backend=os.environ.get("MLX_INTERP_BACKEND", "any"))
    except RuntimeError as e:
        raise MlxInterpError(f"mx.distributed could not start ({str(e)[:120]}); launch with mlx.launch -n N --backend "
                             "ring (one machine) or --hostfile FILE (several)") from None


def group():
    """The ``mx.distributed`` group of this run (a tensor-parallel model's collectives run on it)."""
    g = _group()
    if g is None:
        raise MlxInterpError("no distributed world: this process was not started by mlx.launch (or mpirun)")
    return g


def world() -> World:
    """The world of this run (cached; a world of one unless launched by ``mlx.launch`` or ``mpirun``)."""
    g = _group()
    if g is None or g.size() == 1:
        return World(0, 1, "none")
    backend = "mpi" if "OMPI_COMM_WORLD_RANK" in os.environ else os.environ.get("MLX_INTERP_BACKEND", "any")
    if backend == "any":  # mlx.launch's ring launcher sets MLX_HOSTFILE (a JSON list of ip:port per rank)
        backend = "ring" if "MLX_HOSTFILE" in os.environ else "any"
    return World(g.rank(), g.size(), backend)


def assign(costs: Sequence[float], size: int) -> list[list[int]]:
    """Deterministic balanced assignment of work items (with costs, e.g. token counts) to ``size`` ranks: the largest
    item first to the least-loaded rank (ties: the lower rank). Returns, per rank, its item indices in order."""
    if size < 1:
        raise MlxInterpError(f"a world has at least one rank; got size {size}")
    load = [0.0] * size
    out: list[list[int]] = [[] for _ in range(size)]
    for i in sorted(range(len(costs)), key=lambda i: (-costs[i], i)):
        r = min(range(size), key=lambda r: (load[r], r))
        out[r].append(i)
        load[r] += costs[i]
    return [sorted(x) for x in out]


def _timeout(var: str = "MLX_INTERP_DIST_TIMEOUT", default: float = DEFAULT_TIMEOUT_S) -> float:
    try:
        t = float(os.environ.get(var, default))
    except ValueError:
        t = -1.0
    if not t > 0:
        raise MlxInterpError(f"{var}={os.environ[var]!r} is not a positive number of seconds")
    return t


def _collective(fn, what: str, timeout: float | None = None, waiting: str = "during"):
    """Run one collective under a watchdog: if the other ranks do not answer in time, say so and stop."""
    w = world()
    t = _timeout() if timeout is None else timeout

    def stop():
        print(f"mlx-interp rank {w.rank}/{w.size}: no answer from the other ranks for {t:.0f} s {waiting} {what} "
              "(a rank died or hangs?); stopping", file=sys.stderr, flush=True)
        os._exit(3)

    timer = threading.Timer(t, stop)
    timer.daemon = True
    timer.start()
    try:
        return fn()
    finally:
        timer.cancel()


def gather_objects(local: Any, what: str = "a gather") -> list[Any]:
    """Every rank's ``local`` (any picklable value), in rank order, on every rank."""
    w = world()
    if w.size == 1:
        return [local]
    import mlx.core as mx

    g = _group()
    blob = np.frombuffer(pickle.dumps(local, protocol=pickle.HIGHEST_PROTOCOL), dtype=np.uint8)

    # arrive: every rank posts its size (a long limit: the others may still be computing their share)
    sizes = np.zeros(w.size, dtype=np.int64)
    sizes[w.rank] = blob.size
    lo, hi = (sizes & 0x7FFFFFFF).astype(np.int32), (sizes >> 31).astype(np.int32)  # int32 words: no overflow at 2 GiB

    def arrive():
        a = np.array(mx.distributed.all_sum(mx.array(lo), group=g, stream=mx.cpu)).astype(np.int64)
        b = np.array(mx.distributed.all_sum(mx.array(hi), group=g, stream=mx.cpu)).astype(np.int64)
        return a + (b << 31)

    sizes = _collective(arrive, what, _timeout("MLX_INTERP_DIST_ARRIVAL_TIMEOUT", DEFAULT_ARRIVAL_TIMEOUT_S),
                        "waiting for every rank to arrive at")
    if sizes[w.rank] != blob.size or (sizes <= 0).any():  # MLX fails a broken ring's pending tasks silently
        _lost(w, what)

    def run():
        buf = np.zeros(int(sizes.max()), dtype=np.uint8)
        buf[:blob.size] = blob
        every = np.array(mx.distributed.all_gather(mx.array(buf), group=g, stream=mx.cpu)).reshape(w.size, -1)
        try:
            return [pickle.loads(every[r, :sizes[r]].tobytes()) for r in range(w.size)]
        except (pickle.UnpicklingError, EOFError, ValueError):
            _lost(w, what)

    return _collective(run, what)


def _lost(w: World, what: str):
    raise MlxInterpError(f"rank {w.rank}/{w.size}: {what} failed: another rank stopped or its connection closed; "
                         "the run cannot go on (see that rank's error above)")


def all_sum64(x: np.ndarray, what: str = "a sum") -> np.ndarray:
    """The exact float64 sum over ranks (gathered, then added in rank order, so every rank gets the same bits)."""
    parts = gather_objects(np.asarray(x, dtype=np.float64), what)
    out = np.zeros_like(parts[0])
    for p in parts:
        out = out + p
    return out


def check_same(value: str, what: str) -> None:
    """One-line error when the ranks disagree on ``value`` (e.g. the model each loaded)."""
    w = world()
    if w.size == 1:
        return
    seen = gather_objects(value, f"checking {what}")
    bad = [(r, v) for r, v in enumerate(seen) if v != seen[0]]
    if bad:
        r, v = bad[0]
        raise MlxInterpError(f"ranks disagree on {what}: rank 0 has {seen[0]!r}, rank {r} has {v!r}; every rank must "
                             "load the same model at the same precision")


def to_host(x):
    """An mx array as (numpy array, dtype name) for pickling (bfloat16 travels as float32)."""
    import mlx.core as mx

    if x is None:
        return None
    name = str(x.dtype).split(".")[-1]
    return (np.array(x.astype(mx.float32) if x.dtype == mx.bfloat16 else x), name)


def from_host(h):
    import mlx.core as mx

    if h is None:
        return None
    a, name = h
    return mx.array(a).astype(getattr(mx, name))
