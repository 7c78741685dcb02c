"""Task data shipped with the package (each folder under ``data/`` has a SOURCE.md)."""

from __future__ import annotations

import json
from importlib.resources import files


def _load(folder: str, name: str):
    return json.loads(files("mlx_interp.tasks").joinpath("data", folder, name).read_text())


def refusal_prompts(split: str = "train") -> tuple[list[str], list[str]]:
    """(harmful, harmless) instructions from Arditi et al.'s seed-42 draws: train 128+128, val 32+32."""
    n = {"train": 128, "val": 32}[split]
    return _load("refusal_direction", f"harmful_{split}_n{n}.json"), _load("refusal_direction", f"harmless_{split}_n{n}.json")


def refusal_substrings() -> list[str]:
    """The paper's 12 refusal phrases (case-insensitive substring match)."""
    return list(_load("refusal_direction", "refusal_substrings.json")["substrings"])


def refusal_eval_prompts() -> tuple[list[str], list[str]]:
    """(harmful, harmless) held-out evaluation sets: JailbreakBench (100) and Alpaca eval (100)."""
    return ([r["instruction"] for r in _load("refusal_direction", "jailbreakbench.json")],
            [r["instruction"] for r in _load("refusal_direction", "harmless_alpaca_eval100.json")])


def caa_sycophancy() -> tuple[list[dict], list[dict]]:
    """(generate items, test A/B items) of CAA's sycophancy behaviour: the first 200 vector items and all 50 test items."""
    return _load("caa", "sycophancy_generate_first200.json"), _load("caa", "sycophancy_test_ab.json")


def caa_published_sycophancy() -> dict:
    """CAA's published A/B results for sycophancy (Llama-2 7B/13B chat), with the source note."""
    return _load("caa", "published_ab_sycophancy.json")


CAPABILITY = {"mmlu": ("mmlu.json", 10), "truthfulqa": ("truthfulqa.json", 14)}  # file, quick stride


def capability_items(name: str, quick: bool = False) -> list[dict]:
    """CAA's A/B versions of MMLU (570) and TruthfulQA (817) (data/capability/SOURCE.md); ``quick``: every 10th MMLU
    item (one per subject) and every 14th TruthfulQA item."""
    if name not in CAPABILITY:
        from ..errors import MlxInterpError

        raise MlxInterpError(f"no capability benchmark {name!r}; have {', '.join(CAPABILITY)}")
    file, stride = CAPABILITY[name]
    items = _load("capability", file)
    return items[::stride] if quick else items


def confidence_pairs() -> list[dict]:
    """Our confident-vs-hedged answer pairs: {"id", "question", "confident", "hedged"} (see data/confidence/SOURCE.md)."""
    text = files("mlx_interp.tasks").joinpath("data", "confidence", "pairs.jsonl").read_text()
    return [json.loads(x) for x in text.splitlines() if x.strip()]


def crosslingual_prompts() -> list[dict]:
    """Harmful/harmless instructions in en, es, fr, de, zh: {"id", "label", "source", "en", ...} (exp10)."""
    text = files("mlx_interp.tasks").joinpath("data", "crosslingual", "prompts.jsonl").read_text(encoding="utf-8")
    return [json.loads(x) for x in text.splitlines() if x.strip()]


def crosslingual_refusal_phrases(lang: str) -> list[str]:
    """Refusal phrases for ``lang`` (en, es, fr, de, zh): the paper's English list plus the language's own."""
    extra = {} if lang == "en" else _load("crosslingual", "refusal_phrases.json")
    if lang != "en" and lang not in extra:
        from ..errors import MlxInterpError

        raise MlxInterpError(f"no refusal phrases for language {lang!r}; have en, {', '.join(k for k in extra if not k.startswith('_'))}")
    return refusal_substrings() + list(extra.get(lang, []))


def lens_texts() -> tuple[list[str], list[str]]:
    """(train, held-out) text for the tuned lens, from data that ships here: train = the 200 CAA generate questions
    and the 256 refusal train instructions; held-out = the 50 CAA test questions and the 100 Alpaca eval instructions."""
    gen, test = caa_sycophancy()
    h, hl = refusal_prompts("train")
    return [g["question"] for g in gen] + h + hl, [t["question"] for t in test] + refusal_eval_prompts()[1]


KV_TRANSFER = ("persistence", "retrieval", "signatures", "cross_topic")


def kv_transfer(name: str) -> list[dict]:
    """exp14's items (data/kv_transfer/SOURCE.md): persistence, retrieval, signatures or cross_topic."""
    if name not in KV_TRANSFER:
        from ..errors import MlxInterpError

        raise MlxInterpError(f"no KV-transfer item set {name!r}; have {', '.join(KV_TRANSFER)}")
    text = files("mlx_interp.tasks").joinpath("data", "kv_transfer", f"{name}.jsonl").read_text(encoding="utf-8")
    return [json.loads(x) for x in text.splitlines() if x.strip()]


PASSAGE_SPLITS = {"train": (0, 60), "val": (60, 80), "test": (80, 120)}


def passages(split: str = "train") -> list[str]:
    """exp17's short news passages (data/passages/SOURCE.md: AG News, academic non-commercial use), fixed splits
    train 60 / val 20 / test 40 in file order."""
    if split not in PASSAGE_SPLITS:
        from ..errors import MlxInterpError

        raise MlxInterpError(f"no passage split {split!r}; have {', '.join(PASSAGE_SPLITS)}")
    text = files("mlx_interp.tasks").joinpath("data", "passages", "ag_news_120.jsonl").read_text(encoding="utf-8")
    rows = [json.loads(x)["text"] for x in text.splitlines() if x.strip()]
    a, b = PASSAGE_SPLITS[split]
    return rows[a:b]
