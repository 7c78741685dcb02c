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


@dataclass
class Parts:
    top: Any  # module whose __call__ returns logits
    inner: Any  # module with embed_tokens, layers, norm
    layers: list  # the real list (never a copy: Qwen2's model.layers returns a slice)
    norm: Any
    embed: Any
    softcap: float | None  # Gemma 2 final-logit soft-capping

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


def parts(model: nn.Module) -> Parts:
    top = model.language_model if "language_model" in model else model
    inner = top.model
    if "layers" not in inner:
        raise TypeError(f"{type(model).__module__} has no model.layers list; architecture not supported")
    # Qwen2 keeps layers in a pipeline slice; the stored list is the real one
    layers = inner["layers"] if isinstance(inner["layers"], list) else list(inner.layers)
    args = getattr(top, "args", None)
    softcap = getattr(top, "final_logit_softcapping", None) or getattr(args, "final_logit_softcapping", None)
    return Parts(top, inner, layers, inner.norm, inner.embed_tokens, softcap)


def head_shape(attn) -> tuple[int, int]:
    """(number of query heads, head width) of an attention module, from its o_proj input size."""
    n = int(getattr(attn, "n_heads", getattr(attn, "num_heads", 0)))
    proj = attn.o_proj
    in_dim = proj.weight.shape[1] * (32 // proj.bits if "scales" in proj else 1)
    return n, in_dim // n


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
