"""The CPU path under contention (issue 19): a forward pass alone, and beside a second process doing the same work.

OpenBLAS worker threads spin-wait, so two processes that each take every core slow each other by far more than 2x
(measured 2026-11-24: SmolLM2 8 x 128 tokens, 2.6 s alone, 8-57 s beside a second one). mlx-interp picks the BLAS
thread count at load from the cores other processes keep busy (``runtime/blas.py``); this prints, side by side in one
run, the median time of the same forward pass:

* alone, threads as mlx-interp picks them on an idle machine;
* beside a busy twin, each process with the threads mlx-interp picks (the second one sees the first busy);
* beside a busy twin, both forced to every core (``MLX_INTERP_THREADS=<cores>``): the collapse the choice avoids.

Ratios are against the alone time; 2.0 is a fair share of two cores. Run on an otherwise idle machine.

    python bench/bench_contention.py [--model smollm2-135m] [--reps 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

WORKER = r"""
import os, sys, time, json
import mlx_interp as mi
import mlx.core as mx
lm = mi.load(sys.argv[1])
prompts = [[int(x) for x in (list(range(10, 10 + 128)))] for _ in range(8)]
mi.run(lm, prompts[:1], logits="none")  # warm up
times = []
deadline = time.time() + float(sys.argv[3])
while len(times) < int(sys.argv[2]) or time.time() < deadline:
    t = time.perf_counter(); mx.eval(mi.run(lm, prompts).logits); times.append(time.perf_counter() - t)
    if len(times) >= int(sys.argv[2]) and time.time() >= deadline:
        break
from mlx_interp.runtime import blas
print(json.dumps({"times": times, "threads": blas.STATE["threads"]}))
"""


def _spawn(model: str, reps: int, busy_s: float, threads: int | None) -> subprocess.Popen:
    env = dict(os.environ)
    env.pop("MLX_INTERP_THREADS", None)
    if threads:
        env["MLX_INTERP_THREADS"] = str(threads)
    return subprocess.Popen([sys.executable, "-c", WORKER, model, str(reps), str(busy_s)], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, env=env)


def _result(p: subprocess.Popen) -> dict:
    import json

    out, _ = p.communicate()
    return json.loads(out.strip().splitlines()[-1])


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--reps", type=int, default=5)
    a = ap.parse_args(argv)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    alone = _result(_spawn(a.model, a.reps, 0, None))
    t_alone = statistics.median(alone["times"])
    rows = [("alone", alone["threads"], t_alone)]
    for label, threads in (("beside a busy twin (mlx-interp's choice)", None), (f"beside a busy twin ({cores} threads each)", cores)):
        busy = _spawn(a.model, 10_000, 0, threads)  # the twin keeps running forwards until we stop it
        time.sleep(20)  # let it load and start working, so the measured process sees it busy
        me = _result(_spawn(a.model, a.reps, 0, threads))
        busy.kill()
        rows.append((label, me["threads"], statistics.median(me["times"])))
    print(f"contention, {time.strftime('%Y-%m-%d %H:%M')}, {a.model}, forward of 8 x 128 tokens, median of {a.reps}, {cores} cores")
    print(f"{'condition':<46} {'threads':>7} {'s':>8} {'vs alone':>9}")
    for label, threads, t in rows:
        print(f"{label:<46} {threads!s:>7} {t:>8.2f} {t / t_alone:>8.2f}x")


if __name__ == "__main__":
    main()
