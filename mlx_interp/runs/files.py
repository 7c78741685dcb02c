"""Tensor files the toolkit writes (vectors, tuned lenses): ``.safetensors`` written atomically, read with one-line errors."""

from __future__ import annotations

from pathlib import Path

import mlx.core as mx

from ..errors import MlxInterpError


def write_safetensors(path: str | Path, arrays: dict, metadata: dict, what: str) -> Path:
    """Write ``arrays`` with string ``metadata`` to ``path`` through a temporary file (never half-written); in a
    data-parallel run only the main rank writes."""
    from ..runtime.parallel import world

    path = Path(path)
    if path.suffix != ".safetensors":
        raise MlxInterpError(f"{what} file {str(path)!r} must end in .safetensors")
    if not world().main:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{path.name}")
    mx.save_safetensors(str(tmp), arrays, metadata=metadata)
    tmp.replace(path)
    return path


def read_safetensors(path: str | Path, what: str, hint: str = "") -> tuple[dict, dict]:
    """(arrays, metadata) of a ``.safetensors`` file; one-line errors for a missing or unreadable file."""
    path = Path(path)
    if not path.is_file():
        raise MlxInterpError(f"{what} file {str(path)!r} does not exist{hint}")
    try:
        return mx.load(str(path), return_metadata=True)
    except Exception as e:
        raise MlxInterpError(f"{path.name} is not a readable {what} file ({type(e).__name__}: {str(e)[:80]})") from None
