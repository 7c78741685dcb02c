"""What every experiment script shares: arguments, model loop, progress, saving.

Each ``experiments/expN_name.py`` defines ``run(lm, queries, quick) -> dict`` and calls
``main(NAME, run, default_prompts)``; this module parses
``--model M [--model M2 ...] [--quick] [--prompts FILE.jsonl] [--out DIR]``, loads each model,
runs, and writes one results JSON per model through ``mlx_interp.runs.results``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable

import mlx_interp as mi
from mlx_interp.runs.journal import active, fingerprint, opened, others
from mlx_interp.errors import MlxInterpError
from mlx_interp.runs.results import code_version, load_results_with_paths
from mlx_interp.store.registry import DEFAULT_MODEL


def progress(i: int, n: int, what: str = "") -> None:
    """One overwriting status line on stderr."""
    print(f"\r  {i}/{n} {what[:60]:<60}", end="" if i < n else "\n", file=sys.stderr, flush=True)


def parse(description: str, argv=None, extra: Callable | None = None) -> argparse.Namespace:
    """The shared arguments; ``extra(parser)`` adds an experiment's own (e.g. exp15's ``--precision``)."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--model", action="append", help=f"model: alias[@precision], repo id or folder (repeatable; default {DEFAULT_MODEL})")
    ap.add_argument("--quick", action="store_true", help="a small subset, minutes on a 2-core CPU")
    ap.add_argument("--prompts", help="your own queries (JSONL, same schema as the built-in set)")
    ap.add_argument("--out", default="results", help="results folder")
    ap.add_argument("--resume", action="store_true", help="continue an interrupted run of the same command: replay the "
                                                           "calls its journal (<out>/<experiment>/.journal-*) kept")
    ap.add_argument("--from", dest="source", help="the result file an experiment builds on (e.g. exp10's exp7 result); "
                                                  "default: the newest matching one in --out, named in the result")
    if extra is not None:
        extra(ap)
    return ap.parse_args(argv)


def source_result(experiment: str, lm, out_dir: str, source: str | None,
                  keep: Callable[[dict], bool] = lambda doc: True) -> tuple[Path, dict] | None:
    """(path, document) of the result an experiment builds on (``--from``): ``source`` if given, which must be an
    ``experiment`` result for ``lm``; else the newest such result in ``out_dir`` that ``keep`` accepts, or None."""
    if source:
        path = Path(source)
        if not path.is_file():
            raise MlxInterpError(f"--from {source!r} does not exist; give an {experiment} result file")
        doc = json.loads(path.read_text())
        found = (doc.get("experiment"), doc.get("provenance", {}).get("model", {}).get("name"))
        if found != (experiment, lm.name):
            raise MlxInterpError(f"--from {path.name} is a {found[0]} result for {found[1]}; needs {experiment} for {lm.name}")
        return path, doc
    runs = [(p, d) for p, d in load_results_with_paths(experiment, out_dir)
            if d["provenance"]["model"]["name"] == lm.name and keep(d)]
    return runs[-1] if runs else None


ARGS: argparse.Namespace | None = None  # the parsed arguments of the running experiment (e.g. for --out)


def journal(name: str, a: argparse.Namespace, argv=None) -> opened:
    """The resumable-run journal of this command (``runs.journal``): one folder per experiment and argument list
    (``--resume`` aside), beside the results; kept when a run is interrupted, deleted when it completes."""
    args = [x for x in (sys.argv[1:] if argv is None else list(argv)) if x != "--resume"]
    # the commit is part of the key: a resume after the code changed starts afresh instead of replaying old results
    folder = Path(a.out) / name / f".journal-{fingerprint(name, args, code_version())[:16]}"
    command = [name, *args]
    if a.resume and not folder.is_dir():
        found = others(folder, command)
        if found:
            f, meta = found[-1]
            c = str(meta.get("code_version") or "?")
            raise mi.MlxInterpError(
                f"--resume found no journal of this command for the running code ({str(code_version())[:12]}); {f} holds "
                f"one made by commit {c[:12]}: run that commit's code to continue it (git worktree add DIR "
                f"{c.split('+')[0][:12]}, then the same command from DIR with the journal under its --out), or drop "
                "--resume to start afresh")
    return opened(folder, a.resume, meta={"command": command, "code_version": code_version()})


def journaled(name: str, a: argparse.Namespace, argv, body: Callable[[], Any]) -> Any:
    """``body()`` inside this command's journal, after reading the commit it starts from (before HEAD can move,
    BUGFIX.md #11); a bad input's one-line error exits with status 2. Every script's entry point goes through it."""
    code_version()
    try:
        with journal(name, a, argv):
            return body()
    except mi.MlxInterpError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


def main(name: str, run: Callable, load_queries: Callable, doc: str, argv=None, extra: Callable | None = None) -> list:
    """Run experiment ``name`` on every requested model; returns the written paths. ``extra`` adds the
    experiment's own arguments (``parse``)."""
    global ARGS
    a = ARGS = parse(doc.strip().splitlines()[0], argv, extra)
    return journaled(name, a, argv, lambda: _models(name, run, load_queries, a))


def _models(name: str, run: Callable, load_queries: Callable, a: argparse.Namespace) -> list:
    """Run the experiment on each model and write its result (the body of ``main``, inside the journal)."""
    paths = []
    queries = load_queries(a.prompts)
    j = active()
    for model in a.model or [DEFAULT_MODEL]:
        done = j.finished(f"{name}:{model}") if j is not None else None
        if done:  # an interrupted run of this command wrote it already
            print(f"  -> {done} (written before the interruption)")
            paths.append(Path(done))
            continue
        t0 = time.time()
        lm = mi.load(model)
        n = f", {len(queries)} queries" if isinstance(queries, list) else ""
        print(f"{name} on {lm.name} ({lm.n_layers} layers){n}{' (quick)' if a.quick else ''}", file=sys.stderr)
        payload = run(lm, queries, a.quick)
        path = mi.save_result(name, payload, lm=lm, wall_s=time.time() - t0, out_dir=a.out,
                              config={"quick": a.quick, "prompts": a.prompts or "built-in", "from": a.source})
        print(f"  -> {path}")
        paths.append(path)
        if j is not None:
            j.finish(f"{name}:{model}", path)
    return paths
