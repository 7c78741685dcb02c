"""The GGUF -> mlx-community conversion is faithful: format, tokenizer, answers, logits."""

from __future__ import annotations

import json
import os

import mlx.core as mx
import numpy as np
import pytest

from mlx_interp.core.trace import run
from mlx_interp.store.convert import _field, _open_reader
from mlx_interp.store.fetch import assemble_gguf
from mlx_interp.store.models import cache_dir, prepare
from mlx_interp.store.registry import REGISTRY, TEST_MODELS

TOKENIZER_STRINGS = [
    "Hello world",
    " leading space",
    "  two leading spaces",
    "digits 0123456789 and 3.14159",
    "line one\nline two\n\nline four",
    "tabs\tand\ttabs",
    "unicode: café, naïve, Straße, Ελληνικά, 日本語, emoji 🙂",
    "def f(x):\n    return x**2  # code",
]


@pytest.mark.parametrize("alias", TEST_MODELS)
def test_checkpoint_has_mlx_community_layout(alias):
    d = prepare(alias)
    cfg = json.loads((d / "config.json").read_text())
    assert cfg["model_type"] in ("llama", "gemma3_text", "qwen2")
    assert cfg["quantization"]["bits"] == 4 and cfg["quantization"]["group_size"] == 32
    assert cfg["quantization_config"] == cfg["quantization"]
    assert (d / "model.safetensors").is_file() and (d / "tokenizer.json").is_file()
    tc = json.loads((d / "tokenizer_config.json").read_text())
    assert tc["eos_token"] and tc["bos_token"]
    assert bool(tc.get("chat_template")) == REGISTRY[alias].instruct
    # plain mlx-lm loads it with no help from us
    from mlx_lm import load as mlx_load

    model, tok = mlx_load(str(d))
    assert model.layers[0] is not None and tok.encode("hi")


def _spelled(token: str) -> str:
    """GGUF Gemma vocabularies store all-space tokens as real spaces; HF spells them with U+2581."""
    return "\u2581" * len(token) if token and not token.strip(" ") else token


@pytest.mark.parametrize("alias", TEST_MODELS)
def test_tokenizer_matches_gguf_vocabulary(alias):
    from mlx_interp.store.models import load

    lm = load(alias, fast_cpu=False)
    reader = _open_reader(assemble_gguf(REGISTRY[alias].offline, cache_dir(), progress=lambda s: None))
    vocab = _field(reader, "tokenizer.ggml.tokens")
    assert len(lm.tokenizer.get_vocab()) >= len(vocab) - 1
    bos = _field(reader, "tokenizer.ggml.bos_token_id")
    add_bos = bool(_field(reader, "tokenizer.ggml.add_bos_token", False))
    for s in TOKENIZER_STRINGS:
        ids = lm.tokenizer.encode(s)
        assert (ids[0] == bos) == add_bos, f"BOS handling differs from the GGUF flag for {s!r}"
        body = ids[1:] if add_bos else ids
        # every id indexes the same token string in the GGUF vocabulary
        assert all(0 <= i < len(vocab) for i in body)
        assert lm.tokenizer.convert_ids_to_tokens(body) == [_spelled(vocab[i]) for i in body], s
        assert lm.tokenizer.decode(body) == s, f"round trip failed for {s!r}"
    # whole words that are single GGUF tokens map to exactly that id
    for word in (" Paris", " the", "\n", "1"):
        for cand in (word, word.replace(" ", "\u0120"), word.replace(" ", "\u2581"), word.replace("\n", "\u010a")):
            if cand in vocab:
                assert lm.tokenizer.encode(word, add_special_tokens=False) == [vocab.index(cand)], word
                break


# Simple completions that a correctly converted model of this size gets right. (Chosen by
# checking the fp32 conversion, which matches the PyTorch reference below to 1e-4; the Gemma
# base model prefers " the" after "The capital of France is", so 4 of 5 is the bar.)
FACTS = [
    ("The capital of France is", " Paris"),
    ("The Eiffel Tower is in the city of", " Paris"),
    ("The capital of Japan is", " Tokyo"),
    ("The days of the week are Monday, Tuesday, Wednesday,", " Thursday"),
    ("One, two, three,", " four"),
]


def test_factual_top1_at_least_4_of_5(lm):
    hits = []
    for prompt, answer in FACTS:
        logits = run(lm, prompt).logits[0]
        top = int(mx.argmax(logits).item())
        want = lm.tokenizer.encode(answer, add_special_tokens=False)[0]
        hits.append(top == want)
    assert sum(hits) >= 4, f"{lm.name}: top-1 right for {sum(hits)}/5: {list(zip([f[0] for f in FACTS], hits))}"


# fp32 conversion vs an independent reference: transformers' own GGUF loader + PyTorch forward, computed by
# tests/reference/pytorch_reference.py and kept as JSON (top-32 logits and the logsumexp at every position).
# Tolerance (max |logit diff|): 1e-3 for llama/qwen; 0.1 for Gemma, because mlx-lm rounds Gemma's
# sqrt(d) embedding scale to bfloat16 (25.25) while transformers uses 25.298 in fp32.
REF_TOL = {"smollm2-135m": 1e-3, "gemma-3-270m": 0.1, "qwen2.5-coder-0.5b": 1e-3}


def _kl(p_logits: np.ndarray, q_logits: np.ndarray) -> float:
    """Mean over positions of KL(p || q), from logits."""
    lp = p_logits - p_logits.max(-1, keepdims=True)
    lp -= np.log(np.exp(lp).sum(-1, keepdims=True))
    lq = q_logits - q_logits.max(-1, keepdims=True)
    lq -= np.log(np.exp(lq).sum(-1, keepdims=True))
    return float((np.exp(lp) * (lp - lq)).sum(-1).mean())


@pytest.mark.parametrize("alias", TEST_MODELS)
def test_logits_match_pytorch_reference_of_same_gguf(alias):
    from tests.reference.pytorch_reference import logits_path

    from mlx_interp.store.models import load

    ref = json.loads(logits_path(alias).read_text())
    assert ref["gguf_sha256"] == REGISTRY[alias].offline.sha256, \
        "the packaged GGUF changed: regenerate with python tests/reference/pytorch_reference.py"
    exact = load(f"{alias}@fp32")
    quant = load(alias)
    assert exact.name == f"{alias}@fp32" and quant.name == f"{alias}@4bit-g32-mirror"
    for p in ref["prompts"]:
        ids = exact.tokenizer.encode(p["text"])
        assert ids == p["ids"], f"tokenization differs from transformers' for {p['text']!r}"
        got = np.array(run(exact, [ids], logits="all").logits[0], dtype=np.float64)
        top, want = np.array(p["top_ids"]), np.array(p["top_logits"])
        diff = max(np.abs(np.take_along_axis(got, top, -1) - want).max(),  # the reference's top logits
                   np.abs(got.max(-1) - want[:, 0]).max(),  # no other token rises above them
                   np.abs(np.log(np.exp(got - got.max(-1, keepdims=True)).sum(-1)) + got.max(-1) - p["logsumexp"]).max())
        assert diff < REF_TOL[alias], f"fp32 conversion differs by {diff}"
        # the default 4-bit checkpoint: same next token at the last position, small KL from the fp32 conversion
        # (which the lines above tie to the reference's full distribution through its logsumexp)
        q = np.array(run(quant, [ids], logits="all").logits[0], dtype=np.float64)
        kl = _kl(got, q)
        assert kl < 0.05, f"{alias} 4-bit vs reference KL {kl:.3f}"
        assert q[-1].argmax() == top[-1, 0]


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("MLX_INTERP_LIVE_REFERENCE"),
                    reason="recomputes the kept PyTorch reference (~5 min): set MLX_INTERP_LIVE_REFERENCE=1")
def test_live_pytorch_reference_equals_the_kept_files():
    """The kept reference files are what transformers computes today (run on demand; each GGUF load takes minutes)."""
    pytest.importorskip("torch", reason="reference extra not installed: pip install -e '.[reference]'")
    from tests.reference import pytorch_reference as pr

    for path, doc in [(pr.logits_path(a), pr.compute_logits(a)) for a in TEST_MODELS] + [(pr.FV_PATH, pr.compute_fv())]:
        assert pr.agree(json.loads(path.read_text()), doc) == [], path.name


def test_each_precision_is_its_own_folder_and_name():
    """A group-64 conversion is a different folder, model and name from the default group-32 one (BUGFIX #14)."""
    from mlx_interp.store.models import load, prepared_dir

    assert prepared_dir("smollm2-135m", "4bit-g64") != prepared_dir("smollm2-135m")
    g64 = load("smollm2-135m@4bit-g64")
    g32 = load("smollm2-135m")
    assert g64.name == "smollm2-135m@4bit-g64-mirror" and g32.name == "smollm2-135m@4bit-g32-mirror"
    cfg = json.loads((g64.path / "config.json").read_text())
    assert cfg["quantization"]["group_size"] == 64 and g64.path != g32.path
    ids = g32.tokenizer.encode("The capital of France is")
    assert not np.array_equal(np.array(run(g64, [ids]).logits), np.array(run(g32, [ids]).logits))


def test_two_processes_preparing_one_variant_convert_it_once(tmp_path, monkeypatch):
    """Two processes (two ranks on one host, two test workers) asking for the same unprepared variant at once:
    one converts, the other waits and reuses the folder; neither deletes the other's partial files."""
    import subprocess
    import sys

    spec = REGISTRY["smollm2-135m"].offline
    (tmp_path / "gguf").mkdir()
    (tmp_path / "gguf" / spec.gguf_name).symlink_to(assemble_gguf(spec, cache_dir(), lambda m: None))
    code = "from mlx_interp.store.models import prepare; print(prepare('smollm2-135m', '8bit'))"
    env = {**os.environ, "MLX_INTERP_CACHE": str(tmp_path), "MLX_INTERP_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert sum("done in" in err for _, err in outs) == 1, [err for _, err in outs]  # converted once
    assert outs[0][0] == outs[1][0] and not list((tmp_path / "models").glob(".tmp-*"))
    from mlx_interp.store.models import load

    monkeypatch.setenv("MLX_INTERP_CACHE", str(tmp_path))
    assert run(load("smollm2-135m@8bit"), ["Hi"], logits="last").logits.shape[-1] > 0


def test_minmax_quantize_in_row_chunks_equals_one_pass():
    """The converter quantizes big matrices a chunk of rows at a time (BUGFIX.md #52: a 1.5B conversion peaked at
    21 GB); the chunks, including a short last one, must give exactly the one-pass arrays, and MLX must read them back
    to within one quantization step of the real weights."""
    from mlx_interp.store.convert import minmax_quantize

    w = np.array(mx.load(str(prepare("smollm2-135m", "fp32") / "model.safetensors"))["model.embed_tokens.weight"][:1000])
    whole = minmax_quantize(w, 32, 4, chunk_values=w.size)
    chunked = minmax_quantize(w, 32, 4, chunk_values=w.shape[1] * 7)  # 1000 rows = 142 chunks of 7 and one of 6
    for a, b in zip(whole, chunked):
        assert a.shape == b.shape and a.dtype == b.dtype and np.array_equal(a, b)
    back = np.array(mx.dequantize(*(mx.array(a) for a in chunked), group_size=32, bits=4))
    step = (w.reshape(1000, -1, 32).max(-1) - w.reshape(1000, -1, 32).min(-1)) / 15
    assert np.all(np.abs(back - w).reshape(1000, -1, 32).max(-1) <= step * 0.5 + 1e-3)
