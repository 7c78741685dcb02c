"""Find the pieces of an mlx-lm model that interpretability needs, for any architecture.

mlx-lm models share a shape: ``top`` (owns ``lm_head`` unless embeddings are tied) wraps
``inner`` (owns ``embed_tokens``, the decoder ``layers`` list and the final ``norm``).
Multimodal Gemma 3 adds one level (``model.language_model``). We never re-implement a
forward pass; we only locate these modules and call them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import mlx.core as mx
import mlx.nn as nn

from ..errors import MlxInterpError

#: model types whose blocks run attention, then the MLP on the updated residual (so a
#: residual stream "between" them, resid_mid, exists). Parallel-block architectures (GPT-J,
#: Phi-2, Cohere, GPT-NeoX with parallel residual) feed both from the block input and have none.
SEQUENTIAL_BLOCKS = frozenset({
    "llama", "mistral", "qwen2", "qwen3", "qwen3_moe", "qwen2_moe", "gemma", "gemma2", "gemma3", "gemma3_text",
    "phi3", "granite", "olmo2", "smollm3", "ministral3", "exaone", "internlm2", "starcoder2",
})


@dataclass
class Parts:
    top: Any  # module whose __call__ returns logits
    inner: Any  # module with embed_tokens, layers, norm
    layers: list  # the real list (never a copy: Qwen2's model.layers returns a slice)
    norm: Any
    embed: Any
    softcap: float | None  # Gemma 2 final-logit soft-capping
    model_type: str

    def unembed(self, h_normed: mx.array) -> mx.array:
        """The model's own head on already-normed states (tied, quantized or not; softcap)."""
        if "lm_head" in self.top:
            logits = self.top.lm_head(h_normed)
        else:
            logits = self.embed.as_linear(h_normed)
        if self.softcap:
            logits = mx.tanh(logits / self.softcap) * self.softcap
        return logits

    def logits(self, h: mx.array) -> mx.array:
        """Final norm then unembedding: what the model does after its last layer."""
        return self.unembed(self.norm(h))

    @property
    def has_resid_mid(self) -> bool:
        return self.model_type in SEQUENTIAL_BLOCKS


def parts(model: nn.Module) -> Parts:
    """The model's parts, located once and kept on the model object (decode steps ask every token)."""
    p = model.__dict__.get("_mi_parts")
    if p is not None:
        return p
    top = model.language_model if "language_model" in model else model
    inner = top.model
    if "layers" not in inner:
        raise MlxInterpError(f"{type(model).__module__} has no model.layers list; this architecture is not supported")
    # Qwen2 keeps layers in a pipeline slice; the stored list is the real one
    layers = inner["layers"] if isinstance(inner["layers"], list) else list(inner.layers)
    args = getattr(top, "args", None)
    softcap = getattr(top, "final_logit_softcapping", None) or getattr(args, "final_logit_softcapping", None)
    model_type = str(getattr(args, "model_type", "") or getattr(getattr(model, "args", None), "model_type", ""))
    p = Parts(top, inner, layers, inner.norm, inner.embed_tokens, softcap, model_type)
    object.__setattr__(model, "_mi_parts", p)  # outside the parameter tree
    return p


def _proj_in(proj) -> int:
    return proj.weight.shape[1] * (32 // proj.bits if "scales" in proj else 1)


def tensor_parallel(attn) -> tuple[int, int] | None:
    """(this rank, ranks) when the attention module is sharded over ranks (``store.models.load(shard=True)``)."""
    return attn.get("_mi_tp") if isinstance(attn, dict) else getattr(attn, "_mi_tp", None)


def _local_heads(attn) -> tuple[int, int]:
    n = int(getattr(attn, "n_heads", getattr(attn, "num_heads", 0)))
    return n, _proj_in(attn.o_proj) // n


def head_shape(attn, *, local: bool = False) -> tuple[int, int]:
    """(number of query heads, head width) of an attention module, from its o_proj input size. On a
    tensor-parallel model: every rank's heads (the model's own count) unless ``local``."""
    n, d = _local_heads(attn)
    tp = tensor_parallel(attn)
    return (n * tp[1] if tp and not local else n), d


def kv_head_shape(attn, *, local: bool = False) -> tuple[int, int]:
    """(number of key/value heads, their width), as stored in the KV cache (every rank's heads unless ``local``)."""
    n = int(getattr(attn, "n_kv_heads", getattr(attn, "num_key_value_heads", 0)) or _local_heads(attn)[0])
    d = attn.k_proj.weight.shape[0] // n if "k_proj" in attn else _local_heads(attn)[1]  # [out, in], dense or packed
    tp = tensor_parallel(attn)
    return (n * tp[1] if tp and not local else n), d


def writers(layer) -> tuple[Any, Any]:
    """The (attention, MLP) modules whose outputs a decoder layer adds to the residual stream.

    Llama/Qwen add ``self_attn``'s and ``mlp``'s outputs directly. Gemma 2/3 ("sandwich" norms)
    add them through ``post_attention_layernorm`` / ``post_feedforward_layernorm``, so those norms
    are the writers there (Llama's ``post_attention_layernorm`` is the *pre*-MLP norm, hence the
    test on ``pre_feedforward_layernorm``).
    """
    if "pre_feedforward_layernorm" in layer and "post_feedforward_layernorm" in layer:
        return layer.post_attention_layernorm, layer.post_feedforward_layernorm
    return layer.self_attn, layer.mlp
