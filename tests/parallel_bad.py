"""Run under ``mlx.launch -n 2`` by tests/test_parallel.py: what a broken world does. ``models``: the ranks load
different models (one-line error on every rank); ``dies``: rank 1 leaves before a collective (rank 0 stops with one
line instead of hanging); ``shard_gemma`` / ``shard_smollm2``: tensor parallelism where mlx-lm has none for the model
type, or where 2 ranks do not divide the heads; ``error``: an error raised in rank 1's share of a pass reaches rank 0 too; ``stalls``: rank 1 arrives at a gather
after rank 0's arrival limit (rank 0 stops with the watchdog's line)."""

from __future__ import annotations

import sys

import mlx_interp as mi  # first: fast BLAS before mlx
from mlx_interp.runtime.parallel import gather_objects, world

if __name__ == "__main__":
    try:
        if sys.argv[1] == "models":
            mi.load("smollm2-135m" if world().rank == 0 else "gemma-3-270m")
        elif sys.argv[1].startswith("shard_"):
            mi.load({"shard_gemma": "gemma-3-270m", "shard_smollm2": "smollm2-135m"}[sys.argv[1]], shard=True)
        elif sys.argv[1] == "error":  # an error inside rank 1's share of the chunks only

            def edit(h, layer):
                if world().rank == 1:
                    raise mi.MlxInterpError("boom on rank 1")
                return h

            lm = mi.load("smollm2-135m")
            mi.run(lm, ["a b c", "d e f g", "h i"], interventions=[mi.Edit(edit, layers=2)], batch_size=1)
            mi.run(lm, ["this pass must not pair with the failed one"])
        elif sys.argv[1] == "dies":  # mid-run: after a first collective has joined the ring
            gather_objects(world().rank, "a first gather")
            if world().rank == 1:
                sys.exit(0)
            gather_objects(world().rank, "a test gather")
        elif sys.argv[1] == "stalls":  # rank 1 does not arrive in time (still computing, or hung without an error)
            gather_objects(world().rank, "a first gather")
            if world().rank == 1:
                import time

                time.sleep(20)
            gather_objects(world().rank, "a stalled gather")
    except mi.MlxInterpError as e:
        sys.stderr.write(f"error: {e}\n")  # one write: the launcher merges both ranks' lines
        sys.exit(2)
