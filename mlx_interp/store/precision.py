"""A model's precision, as part of its identity: ``4bit-g32-mirror``, ``8bit-g64``, ``bf16``, ``fp32``.

Two precisions of one model are two models for every result: ``LoadedModel.name`` is
``<alias>@<precision>`` (``smollm2-135m@4bit-g32-mirror``), and result files, provenance,
figures and lookups of earlier results all use that name, so they never collide.

Grammar (``Precision.parse``): ``fp32`` | ``fp16`` | ``bf16`` | ``<bits>bit[-g<group>][-<recipe>]``.
Omitted parts take the offline defaults (group 32, the GGUF block size; recipe ``mirror``, see
``store.convert``). Hub checkpoints get theirs from ``config.json`` (``quantization`` block or
``torch_dtype``) and have no recipe.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import MlxInterpError

FLOATS = ("fp32", "fp16", "bf16")
RECIPES = ("mirror", "uniform")
#: what ``store.convert`` can build from a GGUF today (bits x groups x recipes, plus the floats)
OFFLINE_BITS = (4, 8)
OFFLINE_GROUPS = (32, 64, 128)
DEFAULT_GROUP = 32
DEFAULT_RECIPE = "mirror"

_QUANT = re.compile(r"(\d+)bit(?:-g(\d+))?(?:-([a-z]+))?")


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
        s = f"{self.bits}bit" if self.mode == "affine" else self.mode
        s += f"-g{self.group_size}" if self.group_size else ""
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
        m = _QUANT.fullmatch(t)
        if not m:
            raise MlxInterpError(f"precision {text!r} is not valid; use {', '.join(FLOATS)} or <bits>bit[-g<group>][-mirror|-uniform], "
                                 "e.g. 4bit, 8bit-g64, 4bit-g32-uniform")
        bits, group, recipe = int(m.group(1)), m.group(2), m.group(3)
        if recipe is not None and recipe not in RECIPES:
            raise MlxInterpError(f"recipe {recipe!r} in precision {text!r} is not valid; use {' or '.join(RECIPES)}")
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
        """One-line error unless ``store.convert`` can build this precision from a GGUF."""
        if self.bits is None:
            return
        if self.mode != "affine" or self.bits not in OFFLINE_BITS:
            raise MlxInterpError(f"precision {self} cannot be built offline yet; valid: {', '.join(FLOATS)} or "
                                 f"{'/'.join(map(str, OFFLINE_BITS))}bit with groups {'/'.join(map(str, OFFLINE_GROUPS))}")
        if self.group_size not in OFFLINE_GROUPS:
            raise MlxInterpError(f"group size {self.group_size} in precision {self} is not valid; use {', '.join(map(str, OFFLINE_GROUPS))}")


DEFAULT = Precision(4, DEFAULT_GROUP, DEFAULT_RECIPE)


def split_name(name: str) -> tuple[str, str | None]:
    """``"smollm2-135m@8bit"`` -> ``("smollm2-135m", "8bit")``; no ``@`` -> ``(name, None)``."""
    if "@" in name:
        base, _, prec = name.rpartition("@")
        return base, prec
    return name, None
