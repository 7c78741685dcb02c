"""llama.cpp control vectors: export a ``VectorSet`` as the GGUF file ``llama-cli --control-vector`` reads, and
import one (written by repeng, llama.cpp's cvector-generator or this module) back into a ``VectorSet``.

The format (llama.cpp ``common_control_vector_load`` and ``llama_adapter_cvec``; repeng ``export_gguf``):
``general.architecture = "controlvector"``, ``controlvector.model_hint`` (the model type, e.g. ``llama``),
``controlvector.layer_count``, and one 1-D float32 tensor ``direction.<k>`` per layer. llama.cpp adds
``direction.<k>`` (times ``--control-vector-scaled``'s strength) to the output of block ``k`` (0-based) at every
token, and ``k = 0`` is rejected as invalid. In this toolkit's vocabulary that is ``resid_post`` at layer ``k``,
equivalently ``resid_pre`` at layer ``k + 1``; the output of block 0 cannot be steered through a control vector.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import MlxInterpError
from .vectors import VectorSet

ARCH = "controlvector"


def _gguf():
    try:
        import gguf
    except ImportError as e:  # a declared dependency; a broken install should say so, not fail later
        raise MlxInterpError("control vectors need the 'gguf' package (pip install gguf)") from e
    return gguf


def _direction_index(site: str, layer: int) -> int:
    """The ``direction.<k>`` index llama.cpp uses for a vector at ``site``/``layer``."""
    if site == "resid_post":
        k = layer
    elif site == "resid_pre":
        k = layer - 1
    else:
        raise MlxInterpError(f"a llama.cpp control vector lives in the residual stream between blocks; site {site!r} "
                             "cannot be exported (valid: 'resid_post', 'resid_pre')")
    if k < 1:
        raise MlxInterpError(f"llama.cpp cannot steer the output of block 0 (direction.0 is invalid there): "
                             f"{site} layer {layer} has no control-vector index; use a later layer")
    return k


def export_control_vector(path: str | Path, vs: VectorSet, model_type: str, scale: float = 1.0) -> Path:
    """Write ``scale * vs`` as a llama.cpp control-vector GGUF, atomically (a temporary file renamed into place).

    ``model_type`` is the hint llama.cpp and repeng store (``parts(lm.model).model_type`` or the config's
    ``model_type``). An existing file is never overwritten."""
    path = Path(path)
    if path.suffix != ".gguf":
        raise MlxInterpError(f"control-vector file {str(path)!r} must end in .gguf")
    if path.exists():
        raise MlxInterpError(f"{path} exists; control vectors are never overwritten (choose another name)")
    if not vs.vectors:
        raise MlxInterpError("no vectors to export")
    if not model_type:
        raise MlxInterpError("model_type is empty; llama.cpp control vectors name the model type they are for")
    gguf = _gguf()
    tmp = path.with_name(path.name + ".tmp")
    writer = gguf.GGUFWriter(str(tmp), ARCH)
    writer.add_string(f"{ARCH}.model_hint", model_type)
    writer.add_uint32(f"{ARCH}.layer_count", len(vs.vectors))
    for layer in sorted(vs.vectors):
        v = np.asarray(vs.vectors[layer], dtype=np.float32) * np.float32(scale)
        if v.ndim != 1 or not np.all(np.isfinite(v)):
            raise MlxInterpError(f"vector for layer {layer} must be 1-D and finite to export (shape {v.shape})")
        writer.add_tensor(f"direction.{_direction_index(vs.site, layer)}", v)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    tmp.replace(path)
    return path


def _field_str(reader, key: str) -> str | None:
    f = reader.get_field(key)
    if f is None or not len(f.parts):
        return None
    return bytes(f.parts[-1]).decode("utf-8", errors="replace")


def import_control_vector(path: str | Path, lm=None) -> VectorSet:
    """Read a llama.cpp control-vector GGUF as a ``VectorSet`` at ``resid_post`` (``direction.<k>`` -> layer ``k``).

    Given a loaded model, checks that the file's model hint names its model type and that the width and layers
    fit it."""
    path = Path(path)
    if not path.is_file():
        raise MlxInterpError(f"control-vector file {str(path)!r} does not exist")
    with open(path, "rb") as f:
        if f.read(4) != b"GGUF":
            raise MlxInterpError(f"{path.name} is not a GGUF file (no GGUF magic); a control vector is a .gguf file")
    reader = _gguf().GGUFReader(str(path))
    arch = _field_str(reader, "general.architecture")
    if arch != ARCH:
        raise MlxInterpError(f"{path.name} is a GGUF of architecture {arch!r}, not a control vector ({ARCH!r})")
    hint = _field_str(reader, f"{ARCH}.model_hint")
    vecs: dict[int, np.ndarray] = {}
    for t in reader.tensors:
        if not t.name.startswith("direction."):
            continue
        try:
            k = int(t.name.split(".", 1)[1])
        except ValueError:
            raise MlxInterpError(f"{path.name}: tensor {t.name!r} is not direction.<layer>") from None
        if k < 1:
            raise MlxInterpError(f"{path.name}: {t.name} is invalid (llama.cpp control vectors start at direction.1)")
        vecs[k] = np.array(t.data, dtype=np.float32).reshape(-1)
    if not vecs:
        raise MlxInterpError(f"{path.name} holds no direction.<layer> tensors")
    vs = VectorSet(vecs, model=f"llama.cpp control vector ({hint})", method="control_vector",
                   meta={"model_hint": hint, "source": path.name}, site="resid_post")
    if len({v.shape[0] for v in vecs.values()}) != 1:
        raise MlxInterpError(f"{path.name}: direction tensors have different widths")
    if lm is not None:
        from ..core.parts import parts

        mt = parts(lm.model).model_type
        if hint != mt:
            raise MlxInterpError(f"{path.name} is a control vector for model type {hint!r}, but {lm.name} is {mt!r}")
        if vs.width != lm.width:
            raise MlxInterpError(f"{path.name} has width {vs.width}, but {lm.name}'s residual stream has width {lm.width}")
        if max(vecs) >= lm.n_layers:
            raise MlxInterpError(f"{path.name} has direction.{max(vecs)}, but {lm.name} has blocks 0..{lm.n_layers - 1}")
    return vs
