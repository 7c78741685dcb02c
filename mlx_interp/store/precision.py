"""A model's precision, as part of its identity: ``4bit-g32-mirror``, ``8bit-g64``, ``bf16``, ``fp32``.

Two precisions of one model are two models for every result: ``LoadedModel.name`` is
``<alias>@<precision>`` (``smollm2-135m@4bit-g32-mirror``), and result files, provenance,
figures and lookups of earlier results all use that name, so they never collide.

Grammar (``Precision.parse``): ``fp32`` | ``fp16`` | ``bf16`` | ``<bits>bit[-g<group>][-<recipe>]``
(MLX's affine integers, 2-8 bits) | ``<format>[-<recipe>]`` for MLX's floating-point formats (``mxfp4``,
``nvfp4``, ``mxfp8``, whose group size the format fixes). Omitted parts take the offline defaults (group 32,
the GGUF block size; recipe ``mirror``, see ``store.convert``). Hub checkpoints get theirs from
``config.json`` (``quantization`` block or ``torch_dtype``) and have no recipe. Which formats this mlx
can build is asked of mlx itself (``supported_formats``), so an older mlx refuses with the list it has.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from ..errors import MlxInterpError

FLOATS = ("fp32", "fp16", "bf16")
RECIPES = ("mirror", "uniform")
#: affine bit widths and groups ``store.convert`` can build from a GGUF (bits x groups x recipes, plus the floats)
OFFLINE_BITS = (2, 3, 4, 5, 6, 8)
OFFLINE_GROUPS = (32, 64, 128)
#: MLX's floating-point formats: name -> (bits, the group size the format fixes)
FP_FORMATS = {"mxfp4": (4, 32), "nvfp4": (4, 16), "mxfp8": (8, 32)}
DEFAULT_GROUP = 32
DEFAULT_RECIPE = "mirror"

_QUANT = re.compile(r"(\d+)bit(?:-g(\d+))?(?:-([a-z]+))?")
_FORMAT = re.compile(r"([a-z]+fp\d+)(?:-([a-z]+))?")


@lru_cache(maxsize=None)
def supported_formats() -> tuple[str, ...]:
    """The quantized formats this mlx can build (``4bit``, ``3bit``, ``mxfp4``, ...), asked of ``mx.quantize`` itself."""
    import mlx.core as mx

    w = mx.ones((8, 128))
    out = []
    for b in OFFLINE_BITS:
        try:
            mx.eval(mx.quantize(w, group_size=32, bits=b, mode="affine"))
            out.append(f"{b}bit")
        except (ValueError, RuntimeError, TypeError):
            pass
    for name, (b, g) in FP_FORMATS.items():
        try:
            mx.eval(mx.quantize(w, group_size=g, bits=b, mode=name))
            out.append(name)
        except (ValueError, RuntimeError, TypeError):
            pass
    return tuple(out)


@dataclass(frozen=True)
class Precision:
    """How a checkpoint's weights are stored. ``bits=None`` means unquantized floats of ``dtype``."""

    bits: int | None = None
    group_size: int | None = None
    recipe: str | None = None  # offline conversions only: "mirror" | "uniform"
    dtype: str | None = None  # floats: "fp32" | "fp16" | "bf16"
    mode: str = "affine"  # MLX quantization mode

    def __str__(self) -> str:
        if self.bits is None:
            return self.dtype or "fp32"
        if self.mode != "affine":  # the format fixes its group size
            return self.mode + (f"-{self.recipe}" if self.recipe else "")
        s = f"{self.bits}bit" + (f"-g{self.group_size}" if self.group_size else "")
        return s + (f"-{self.recipe}" if self.recipe else "")

    @property
    def quantized(self) -> bool:
        return self.bits is not None

    @classmethod
    def parse(cls, text: str, *, offline: bool = True) -> "Precision":
        """Parse ``4bit``, ``8bit-g64-uniform``, ``bf16`` ...; offline defaults fill what is omitted."""
        t = text.strip().lower()
        if t in FLOATS:
            return cls(dtype=t)
        f = _FORMAT.fullmatch(t)
        if f and f.group(1) in FP_FORMATS:
            _check_recipe(f.group(2), text)
            bits, group = FP_FORMATS[f.group(1)]
            return cls(bits, group, f.group(2) or (DEFAULT_RECIPE if offline else None), None, f.group(1))
        m = _QUANT.fullmatch(t)
        if not m:
            raise MlxInterpError(f"precision {text!r} is not valid; use {', '.join(FLOATS)}, <bits>bit[-g<group>][-mirror|-uniform] "
                                 f"or {'/'.join(FP_FORMATS)}[-mirror|-uniform], e.g. 4bit, 8bit-g64, 3bit-g32-uniform, mxfp4")
        bits, group, recipe = int(m.group(1)), m.group(2), m.group(3)
        _check_recipe(recipe, text)
        return cls(bits, int(group) if group else (DEFAULT_GROUP if offline else None),
                   recipe or (DEFAULT_RECIPE if offline else None))

    @classmethod
    def from_config(cls, config: dict, source: dict | None = None) -> "Precision":
        """The precision a checkpoint declares: our conversion record, else config.json."""
        if source:  # mlx_interp_source.json written by store.convert
            if source.get("precision"):
                return cls.parse(source["precision"])
            bits = source.get("bits")
            if bits in (16, 32):
                return cls(dtype=f"fp{bits}")
            return cls(bits, source.get("group_size"), source.get("recipe"))
        q = config.get("quantization") or config.get("quantization_config")
        if q and q.get("bits"):
            mode = q.get("mode", "affine")
            return cls(int(q["bits"]), q.get("group_size"), None, None, mode)
        dt = str(config.get("torch_dtype") or config.get("dtype") or "float32")
        return cls(dtype={"float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}.get(dt, dt))

    def check_offline(self) -> None:
        """One-line error unless ``store.convert`` can build this precision from a GGUF with this mlx."""
        if self.bits is None:
            return
        fmt = self.mode if self.mode != "affine" else f"{self.bits}bit"
        have = supported_formats()
        if fmt not in have:
            raise MlxInterpError(f"precision {self} cannot be built with this mlx; supported: {', '.join(FLOATS + have)}")
        if self.mode == "affine" and self.group_size not in OFFLINE_GROUPS:
            raise MlxInterpError(f"group size {self.group_size} in precision {self} is not valid; use {', '.join(map(str, OFFLINE_GROUPS))}")


def _check_recipe(recipe: str | None, text: str) -> None:
    if recipe is not None and recipe not in RECIPES:
        raise MlxInterpError(f"recipe {recipe!r} in precision {text!r} is not valid; use {' or '.join(RECIPES)}")


DEFAULT = Precision(4, DEFAULT_GROUP, DEFAULT_RECIPE)


def split_name(name: str) -> tuple[str, str | None]:
    """``"smollm2-135m@8bit"`` -> ``("smollm2-135m", "8bit")``; no ``@`` -> ``(name, None)``."""
    if "@" in name:
        base, _, prec = name.rpartition("@")
        return base, prec
    return name, None
