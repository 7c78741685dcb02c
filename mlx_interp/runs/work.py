"""How much model work a run did: forward calls and token positions through the model, kept in provenance.

A wall time alone cannot say whether a study was slow because it asked for a lot or because the machine ran slowly.
Every forward of the shim (``core.trace.forward``: prompt blocks, decode steps, cached continuations) adds its
batch x length here, padding included, since padded positions cost the same. ``provenance`` records the work done
since the previous result was written, so ``bench/wall_times.py`` can turn a wall time into positions per second and
a lower bound at the matmul roofline. ``block_positions`` weighs each position by the share of the blocks it went
through: a pass resumed at block k (``run(resume=(base, k))``, a layer sweep) runs L - k of L blocks, so it counts
(L - k) / L per position; the lower bound reads it, since counting a resumed pass as a full one would overstate
the work. A journaled call replayed on ``--resume`` forwards nothing and counts nothing:
a resumed run's counts, like its wall time, cover what it computed itself. In a data-parallel run each rank counts
its own share (the result says whose).
"""

from __future__ import annotations

_TOTAL = {"forward_calls": 0, "positions": 0, "block_positions": 0.0, "decode_steps": 0, "decode_positions": 0}
_MARK = dict(_TOTAL)


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


def take() -> dict:
    """The counts since the previous ``take`` (or the process start), and start a new interval."""
    out = {k: _TOTAL[k] - _MARK[k] for k in _TOTAL}
    _MARK.update(_TOTAL)
    return out
