"""How much model work a run did: forward calls and token positions through the model, kept in provenance.

A wall time alone cannot say whether a study was slow because it asked for a lot or because the machine ran slowly.
Every forward of the shim (``core.trace.forward``: prompt blocks, decode steps, cached continuations) adds its
batch x length here, padding included, since padded positions cost the same. ``provenance`` records the work done
since the previous result was written, so ``bench/wall_times.py`` can turn a wall time into positions per second and
a lower bound at the matmul roofline. ``block_positions`` weighs each position by the share of the blocks it went
through: a pass resumed at block k (``run(resume=(base, k))``, a layer sweep) runs L - k of L blocks, so it counts
(L - k) / L per position; the lower bound reads it, since counting a resumed pass as a full one would overstate
the work. A journaled call replayed on ``--resume`` forwards nothing and counts nothing here: a resumed run's counts,
like its ``wall_s``, cover what it computed itself. What the replayed calls cost when they were computed (seconds and
the same counts, kept beside each call by ``runs.journal``) is credited to a separate ledger (``credit``), which
results record as ``work.replayed`` and fold into ``wall_s_total``: the compute time of a run spread over several
processes. In a data-parallel run each rank counts its own share (the result says whose).
"""

from __future__ import annotations

import time

_TOTAL = {"forward_calls": 0, "positions": 0, "block_positions": 0.0, "decode_steps": 0, "decode_positions": 0}
_MARK = dict(_TOTAL)
#: what replayed journaled calls cost when an earlier process computed them
_REPLAYED = {"calls": 0, "seconds": 0.0, "positions": 0, "block_positions": 0.0, "decode_steps": 0, "decode_positions": 0}
_REPLAYED_MARK = dict(_REPLAYED)
COSTED = ("positions", "block_positions", "decode_steps", "decode_positions")


def count(batch: int, length: int, step: bool = False, blocks: float = 1.0) -> None:
    """One forward of ``batch`` rows of ``length`` positions; ``step``: one position continuing a cache (a decode
    step, which reads every weight for ``batch`` positions: memory-bound where a prompt block is compute-bound);
    ``blocks``: the share of the decoder blocks the pass ran (1 unless resumed at a later block)."""
    _TOTAL["forward_calls"] += 1
    _TOTAL["positions"] += batch * length
    _TOTAL["block_positions"] += batch * length * blocks
    if step:
        _TOTAL["decode_steps"] += 1
        _TOTAL["decode_positions"] += batch


def totals() -> dict:
    """The counts since the process started."""
    return dict(_TOTAL)


def _since(total: dict, mark: dict) -> dict:
    """``total`` less ``mark``, then move ``mark`` up to ``total`` (one interval of a ledger)."""
    out = {k: total[k] - mark[k] for k in total}
    mark.update(total)
    return out


def take() -> dict:
    """The counts since the previous ``take`` (or the process start), and start a new interval."""
    return _since(_TOTAL, _MARK)


def credit(cost: dict) -> None:
    """A replayed call's recorded cost (``{"seconds": ..., "positions": ...}``, ``runs.journal``) into the ledger."""
    _REPLAYED["calls"] += 1
    _REPLAYED["seconds"] += float(cost.get("seconds", 0.0))
    for k in COSTED:
        _REPLAYED[k] += cost.get(k, 0)


def replayed_totals() -> dict:
    """The replayed calls' recorded cost since the process started."""
    return dict(_REPLAYED)


def take_replayed() -> dict:
    """The replayed calls' recorded cost since the previous ``take_replayed``, and start a new interval."""
    return _since(_REPLAYED, _REPLAYED_MARK)


class Meter:
    """The seconds and counted work of one computation: ``m = Meter()`` before it, ``m.cost()`` after (what the
    journal keeps beside a call's result, so a replay can credit it)."""

    def __init__(self):
        self.t, self.w = time.perf_counter(), totals()

    def cost(self) -> dict:
        w = totals()
        return {"seconds": time.perf_counter() - self.t, **{k: w[k] - self.w[k] for k in COSTED}}
