"""Convert a GGUF file into an ``mlx-community``-style checkpoint directory, without torch.

Output layout (what ``mlx_lm.load(dir)`` reads with no help from us):
``config.json`` (model_type, hyper-parameters, ``quantization`` block when quantized),
``model.safetensors`` + ``model.safetensors.index.json`` (written by mlx-lm's own
``save_model``/``quantize_model``, so the format is exactly the one mlx-community uses),
``tokenizer.json`` + ``tokenizer_config.json`` (special tokens, chat template).

Weights: ``gguf`` (numpy) dequantizes every GGUF type to fp32 in Hugging Face
``[out, in]`` layout; names are mapped to HF names; llama.cpp's q/k row permutation is undone
for the llama architecture; Gemma norms, stored by llama.cpp as ``w + 1``, get 1 subtracted.
Then we quantize (``minmax_quantize``, MLX's packing) or store fp16/bf16/fp32 floats, as ``store.precision`` names them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import MlxInterpError
from .precision import Precision

Progress = Callable[[str], None]

# llama.cpp tensor names -> Hugging Face names (per layer part)
_LAYER_NAMES = {
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "attn_q_norm": "self_attn.q_norm",
    "attn_k_norm": "self_attn.k_norm",
    "attn_norm": "input_layernorm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
    "post_attention_norm": "post_attention_layernorm",
    "post_ffw_norm": "post_feedforward_layernorm",
}
_TOP_NAMES = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}
SUPPORTED_ARCHS = ("llama", "qwen2", "gemma3")
MIRROR_BASE_BITS = 4  # "mirror": the packaged GGUFs' base width; tensors stored wider keep 8 bits
FP_KEPT_GROUP = 32  # "mirror" on a floating-point format: the group of the 8-bit affine tensors kept from Q5-Q8 tensors


def _open_reader(path: Path):
    import gguf

    try:
        return gguf.GGUFReader(str(path))
    except Exception as e:  # gguf raises ValueError/struct errors/IndexError on bad files
        raise MlxInterpError(f"{path} is not a readable GGUF file ({type(e).__name__}: {str(e)[:80]})") from None


def _field(reader, key: str, default=None):
    f = reader.fields.get(key)
    if f is None:
        return default
    if len(f.types) > 1 and f.types[0].name == "ARRAY" and f.types[1].name == "STRING":
        # fast path for big string arrays (262k Gemma tokens): decode the raw parts directly
        return [bytes(f.parts[i]).decode("utf-8", errors="replace") for i in f.data]
    return f.contents()


def _hf_name(gguf_name: str, arch: str) -> str:
    base, _, kind = gguf_name.rpartition(".")  # kind: weight | bias
    m = re.fullmatch(r"blk\.(\d+)\.(\w+)", base)
    if m:
        part = m.group(2)
        if part == "ffn_norm":
            part_hf = "pre_feedforward_layernorm" if arch == "gemma3" else "post_attention_layernorm"
        elif part in _LAYER_NAMES:
            part_hf = _LAYER_NAMES[part]
        else:
            raise MlxInterpError(f"GGUF tensor {gguf_name!r} has no known mapping for architecture {arch}")
        return f"model.layers.{m.group(1)}.{part_hf}.{kind}"
    if base in _TOP_NAMES:
        return f"{_TOP_NAMES[base]}.{kind}"
    raise MlxInterpError(f"GGUF tensor {gguf_name!r} has no known mapping for architecture {arch}")


def _unpermute(w: np.ndarray, n_head: int) -> np.ndarray:
    """Undo llama.cpp's rope permutation of q/k rows (transformers' _reverse_permute_weights)."""
    shape = w.shape
    return w.reshape(n_head, shape[0] // n_head // 2, 2, *shape[1:]).swapaxes(1, 2).reshape(shape)


def gguf_config(reader, overrides: dict | None = None) -> dict:
    """The Hugging Face style config.json for the model a GGUF describes."""
    arch = _field(reader, "general.architecture")
    if arch not in SUPPORTED_ARCHS:
        raise MlxInterpError(f"GGUF architecture {arch!r} is not supported; supported: {', '.join(SUPPORTED_ARCHS)}")

    def hp(key, default=None):
        return _field(reader, f"{arch}.{key}", default)

    names = {t.name for t in reader.tensors}
    emb = next(t for t in reader.tensors if t.name == "token_embd.weight")
    n_heads = int(hp("attention.head_count"))
    hidden = int(hp("embedding_length"))
    cfg = {
        "hidden_size": hidden,
        "num_hidden_layers": int(hp("block_count")),
        "intermediate_size": int(hp("feed_forward_length")),
        "num_attention_heads": n_heads,
        "num_key_value_heads": int(hp("attention.head_count_kv", n_heads)),
        "rms_norm_eps": float(hp("attention.layer_norm_rms_epsilon")),
        "vocab_size": int(emb.shape[1]),
        "max_position_embeddings": int(hp("context_length")),
        "rope_theta": float(hp("rope.freq_base", 10000.0)),
        "tie_word_embeddings": "output.weight" not in names,
        "bos_token_id": _field(reader, "tokenizer.ggml.bos_token_id"),
        "eos_token_id": _field(reader, "tokenizer.ggml.eos_token_id"),
    }
    if arch == "llama":
        cfg.update(model_type="llama", architectures=["LlamaForCausalLM"], head_dim=hidden // n_heads, hidden_act="silu")
    elif arch == "qwen2":
        cfg.update(model_type="qwen2", architectures=["Qwen2ForCausalLM"], hidden_act="silu")
    elif arch == "gemma3":
        cfg.update(
            model_type="gemma3_text",
            architectures=["Gemma3ForCausalLM"],
            head_dim=int(hp("attention.key_length")),
            sliding_window=int(hp("attention.sliding_window")),
            hidden_activation="gelu_pytorch_tanh",
            final_logit_softcapping=None,
        )
    cfg.update(overrides or {})
    return cfg


# bits of the GGUF quantization types, for the "mirror" recipe
GGUF_TYPE_BITS = {"Q4_0": 4, "Q4_1": 4, "Q4_K": 4, "IQ4_NL": 4, "IQ4_XS": 4, "Q5_0": 5, "Q5_1": 5, "Q5_K": 5,
                  "Q6_K": 6, "Q8_0": 8, "Q8_K": 8, "Q2_K": 4, "Q3_K": 4}


def gguf_source_bits(reader) -> dict[str, int]:
    """HF module path -> bits of its GGUF tensor type (float tensors are absent)."""
    arch = _field(reader, "general.architecture")
    out = {}
    for t in reader.tensors:
        b = GGUF_TYPE_BITS.get(t.tensor_type.name)
        if b and t.name.endswith(".weight"):
            out[_hf_name(t.name, arch).rsplit(".", 1)[0]] = b
    return out


def gguf_weights(reader, config: dict, progress: Progress = print) -> dict[str, np.ndarray]:
    """All tensors dequantized to fp32, with HF names and HF conventions."""
    from gguf.quants import dequantize

    arch = _field(reader, "general.architecture")
    out: dict[str, np.ndarray] = {}
    n = len(reader.tensors)
    step = max(1, n // 10)
    for i, t in enumerate(reader.tensors, 1):
        name = _hf_name(t.name, arch)
        try:
            w = np.asarray(dequantize(t.data, t.tensor_type), dtype=np.float32)
        except Exception as e:
            raise MlxInterpError(f"cannot dequantize GGUF tensor {t.name} ({t.tensor_type.name}): {e}") from None
        if arch == "llama" and t.name.endswith("attn_q.weight"):
            w = _unpermute(w, config["num_attention_heads"])
        elif arch == "llama" and t.name.endswith("attn_k.weight"):
            w = _unpermute(w, config["num_key_value_heads"])
        if arch == "gemma3" and "norm" in t.name:
            w = w - 1.0  # llama.cpp stores Gemma RMSNorm weights as w + 1
        out[name] = w
        if i % step == 0 or i == n:
            progress(f"  dequantized {i}/{n} tensors")
    return out


def gguf_tokenizer(reader):
    """A transformers tokenizer built from GGUF metadata (torch-free builders of transformers 5)."""
    try:
        from transformers.integrations.gguf.gguf_tokenizer_mapping import (
            GGUF_TOKENIZER_MAPPING,
            add_gguf_special_tokens,
            select_tokenizer_builder,
            set_split_regex,
        )
    except ImportError as e:  # the module layout is transformers-5 specific
        raise MlxInterpError(f"this transformers version cannot build GGUF tokenizers ({e}); install transformers>=5,<6") from None
    arch = _field(reader, "general.architecture")
    td = {
        name: _field(reader, f"tokenizer.{key}")
        for key, name in GGUF_TOKENIZER_MAPPING["tokenizer"].items()
        if f"tokenizer.{key}" in reader.fields
    }
    tok = select_tokenizer_builder(arch, td.get("tokenizer_type"))(td)
    tok = add_gguf_special_tokens(tok, td)
    tok = set_split_regex(tok, td)
    add_bos = bool(_field(reader, "tokenizer.ggml.add_bos_token", False))
    # Must be set on the object: transformers rebuilds the BOS post-processor from it.
    # (Writing it only into tokenizer_config.json left Gemma without <bos>: BUGFIX.md #1.)
    tok.add_bos_token = add_bos
    tokens = td["tokens"]
    for attr, key in (("bos_token", "bos_token_id"), ("eos_token", "eos_token_id"), ("unk_token", "unk_token_id"), ("pad_token", "pad_token_id")):
        if td.get(key) is not None:
            setattr(tok, attr, tokens[td[key]])
    return tok, {
        "chat_template": _field(reader, "tokenizer.chat_template"),
        "add_bos_token": add_bos,
    }


def _save_tokenizer(tok, extra: dict, out: Path) -> None:
    tok.save_pretrained(str(out))
    # mlx-community checkpoints keep the chat template inside tokenizer_config.json
    cfg_path = out / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["add_bos_token"] = extra["add_bos_token"]
    if extra["chat_template"]:
        cfg["chat_template"] = extra["chat_template"]
    (out / "chat_template.jinja").unlink(missing_ok=True)
    cfg_path.write_text(json.dumps(cfg, indent=2, ensure_ascii=False))


def pack_bits(q: np.ndarray, bits: int) -> np.ndarray:
    """Pack integers < 2**bits into uint32 the way MLX does (first value in the lowest bits)."""
    per = 32 // bits
    q = q.astype(np.uint32).reshape(q.shape[0], -1, per)
    shifts = np.arange(per, dtype=np.uint32) * np.uint32(bits)
    return (q << shifts).sum(-1, dtype=np.uint64).astype(np.uint32)


CHUNK_VALUES = 1 << 24  # values quantized at once: bounds the fp32 temporaries (64 MiB each; BUGFIX.md #52)


def minmax_quantize(w: np.ndarray, group_size: int, bits: int, chunk_values: int = CHUNK_VALUES):
    """Affine quantization with scale = (max-min)/(2^b-1) and bias = min per group.

    Unlike ``mx.quantize`` (which keeps zero exactly representable), this reproduces a
    GGUF Q4_1/Q4_K block grid exactly when groups align with the GGUF's 32-value blocks,
    so re-quantizing a 4-bit GGUF to MLX 4-bit loses (almost) nothing. Returns MLX's
    (packed weight, scales, biases); scales and biases are float16 like mlx-community's.
    Rows are quantized ``chunk_values`` values at a time, so a 150k-row embedding does not
    need several full-size fp32 temporaries at once.
    """
    rows, cols = w.shape
    step = max(1, chunk_values // cols)
    if rows > step:
        parts = [_minmax_rows(w[i:i + step], group_size, bits) for i in range(0, rows, step)]
        return tuple(np.concatenate(x) for x in zip(*parts))
    return _minmax_rows(w, group_size, bits)


def _minmax_rows(w: np.ndarray, group_size: int, bits: int):
    rows, cols = w.shape
    g = w.reshape(rows, cols // group_size, group_size).astype(np.float32)
    lo, hi = g.min(-1), g.max(-1)
    n = 2**bits - 1
    scale = ((hi - lo) / n).astype(np.float16)
    bias = lo.astype(np.float16)
    s32 = np.where(scale == 0, np.float32(1), scale.astype(np.float32))
    q = np.clip(np.rint((g - bias.astype(np.float32)[..., None]) / s32[..., None]), 0, n)
    return pack_bits(q.reshape(rows, cols), bits), scale, bias


def _quantize_plan(model, weights: dict, prec: Precision, src_bits: dict) -> dict[str, dict]:
    """Module path -> MLX quantization parameters ({group_size, bits, mode}) for every Linear/Embedding we quantize.

    Recipe "mirror" keeps tensors that the GGUF stored with more bits than both its 4-bit base and the requested
    format (Q5/Q6/Q8: embeddings, some projections) at 8-bit affine; "uniform" puts every tensor in the requested
    format. So 2- and 3-bit mirrors lower the GGUF's 4-bit tensors only, as 4-bit mirrors keep the rest.
    """
    import mlx.nn as nn

    main = {"group_size": prec.group_size, "bits": prec.bits, "mode": prec.mode}
    kept = {"group_size": prec.group_size if prec.mode == "affine" else FP_KEPT_GROUP, "bits": 8, "mode": "affine"}
    plan = {}
    for path, m in model.named_modules():
        if not isinstance(m, (nn.Linear, nn.Embedding)) or f"{path}.weight" not in weights:
            continue
        q = kept if prec.recipe == "mirror" and src_bits.get(path, 4) > max(prec.bits, MIRROR_BASE_BITS) else main
        if weights[f"{path}.weight"].shape[-1] % q["group_size"]:
            continue  # like mlx-lm: layers whose input dim is not a multiple of the group stay float
        plan[path] = q
    return plan


def quantize_weight(w: np.ndarray, q: dict) -> list:
    """One weight in MLX's packed format for ``q`` ({group_size, bits, mode}): [weight, scales(, biases)].

    4- and 8-bit affine use ``minmax_quantize`` (it reproduces the GGUF's 4-bit blocks, so the default
    checkpoint loses almost nothing); every other format uses ``mx.quantize``, MLX's own quantizer, exactly
    as ``mlx_lm.convert`` writes an mlx-community checkpoint (scales and biases float16 for affine).
    """
    import mlx.core as mx

    if q["mode"] == "affine" and q["bits"] in (4, 8):
        return [mx.array(a) for a in minmax_quantize(w, q["group_size"], q["bits"])]
    out = mx.quantize(mx.array(w, dtype=mx.float32), group_size=q["group_size"], bits=q["bits"], mode=q["mode"])
    out = [a.astype(mx.float16) if a.dtype == mx.float32 else a for a in out]
    mx.eval(out)  # now, not at the model's eval: a lazy result keeps its fp32 input alive (BUGFIX.md #52)
    return out


def convert_gguf(
    gguf_path: Path,
    out_dir: Path,
    precision: Precision | str = "4bit-g32-mirror",
    *,
    config_overrides: dict | None = None,
    progress: Progress = print,
) -> Path:
    """Convert ``gguf_path`` into ``out_dir`` atomically (temp dir, then rename).

    ``precision`` (``store.precision``): affine 2-8 bits or an MLX floating-point format (mxfp4, nvfp4,
    mxfp8), recipe "mirror" keeping tensors that were 5-8 bit in the GGUF at 8 bits and "uniform" using the
    format everywhere; or fp16/bf16/fp32 floats.
    """
    import mlx.core as mx
    import mlx.nn as nn
    from mlx_lm.utils import _get_classes, save_config, save_model

    prec = Precision.parse(precision) if isinstance(precision, str) else precision
    prec.check_offline()
    t0 = time.time()
    reader = _open_reader(gguf_path)
    progress(f"converting {gguf_path.name} -> {out_dir.name} ({prec})")
    config = gguf_config(reader, config_overrides)
    weights = gguf_weights(reader, config, progress)
    tok, tok_extra = gguf_tokenizer(reader)
    progress("  tokenizer built")

    model_cls, args_cls = _get_classes(config)
    model = model_cls(args_cls.from_dict(config))
    if hasattr(model, "sanitize"):
        weights = model.sanitize(weights)
    qw = {}
    if prec.quantized:
        plan = _quantize_plan(model, weights, prec, gguf_source_bits(reader))
        nn.quantize(model, class_predicate=lambda p, m: plan.get(p, False))
        main = {"group_size": prec.group_size, "bits": prec.bits, "mode": prec.mode}
        quant = dict(main)
        for path, q in plan.items():
            parts = quantize_weight(weights.pop(f"{path}.weight"), q)
            qw.update(zip([f"{path}.weight", f"{path}.scales", f"{path}.biases"], parts))
            if q != main:
                quant[path] = q
        config["quantization"] = quant
        progress(f"  quantized {len(plan)} matrices ({sum(q != main for q in plan.values())} kept at 8 bits)")
    fdtype = {"fp32": mx.float32, "bf16": mx.bfloat16}.get(prec.dtype or "", mx.float16)  # quantized: float16 like mlx-community
    mxw = {}
    for k in list(weights):  # one tensor at a time, each numpy copy freed as its MLX array is made (BUGFIX.md #52)
        mxw[k] = mx.array(weights.pop(k), dtype=mx.float32).astype(fdtype)
        mx.eval(mxw[k])
    mxw.update(qw)
    del weights, qw
    model.load_weights(list(mxw.items()), strict=True)
    del mxw
    mx.eval(model.parameters())

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / f".tmp-{out_dir.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        save_model(tmp, model, donate_model=True)
        save_config(config, config_path=tmp / "config.json")
        _save_tokenizer(tok, tok_extra, tmp)
        (tmp / "mlx_interp_source.json").write_text(
            json.dumps({"gguf": gguf_path.name, "precision": str(prec), "bits": prec.bits, "group_size": prec.group_size,
                        "recipe": prec.recipe, "mode": prec.mode}, indent=2)
        )
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    progress(f"  done in {time.time() - t0:.1f}s: {out_dir}")
    return out_dir
