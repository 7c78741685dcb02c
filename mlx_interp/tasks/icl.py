"""In-context-learning tasks of the function-vector study (Todd et al., ICLR 2024): data, splits, prompts.

A task is a list of ``(x, y)`` word pairs (``data/function_vectors``, copied from the authors' repository with
its SOURCE.md). ``split`` reproduces the authors' ``split_icl_dataset`` exactly (scikit-learn's
``train_test_split(test_size=0.3, random_state=42)`` twice: train 70%, test 21%, valid 9%; checked against
scikit-learn in the tests). Prompts use the paper's default template: each demonstration is
``Q: {x}\\nA: {y}\\n\\n`` and the query ``Q: {x}\\nA:``; the answer the model should emit is `` {y}``.
BOS is whatever the tokenizer adds. Demonstrations come from the train split; queries from valid or test.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from importlib.resources import files
from typing import Sequence

import numpy as np

from ..errors import MlxInterpError

#: the paper's six headline tasks, then the study's own task that is not among them
HEADLINE = ("antonym", "capitalize", "country-capital", "english-french", "present-past", "singular-plural")
TASKS = HEADLINE + ("sentiment",)
N_SHOTS = 10
SEED = 42


@dataclass(frozen=True)
class Pair:
    x: str
    y: str


@dataclass(frozen=True)
class Task:
    name: str
    train: list[Pair]
    valid: list[Pair]
    test: list[Pair]


@dataclass(frozen=True)
class Template:
    """How a prompt is written: demonstrations ``Q: x\\nA: y\\n\\n``, then the query ``Q: x\\nA:``."""

    q: str = "Q:"
    a: str = "A:"
    sep: str = "\n"  # between question and answer
    end: str = "\n\n"  # after each demonstration


DEFAULT_TEMPLATE = Template()


def _check(items: list, name: str) -> list[Pair]:
    out = []
    for i, it in enumerate(items):
        if not isinstance(it, dict) or "input" not in it or "output" not in it:
            raise MlxInterpError(f"task {name!r} item {i} is not an {{'input', 'output'}} pair: {it!r}")
        x, y = it["input"], it["output"]
        if isinstance(y, list):  # a few upstream tasks list several answers: the first is the reference answer
            y = y[0] if y else ""
        if not str(x).strip() or not str(y).strip():
            raise MlxInterpError(f"task {name!r} item {i} has an empty {'input' if not str(x).strip() else 'answer'}: {it!r}")
        out.append(Pair(str(x), str(y)))
    return out


def split(items: Sequence, seed: int = SEED) -> tuple[list, list, list]:
    """(train, test, valid) as the authors' ``split_icl_dataset``: scikit-learn's shuffle split with
    ``test_size=0.3`` twice (numpy ``RandomState(seed).permutation``; test = the first ceil(0.3 n))."""
    def tts(a: list) -> tuple[list, list]:
        n = len(a)
        n_test = math.ceil(0.3 * n)
        perm = np.random.RandomState(seed).permutation(n)
        return [a[i] for i in perm[n_test:]], [a[i] for i in perm[:n_test]]

    items = list(items)
    train, rest = tts(items)
    test, valid = tts(rest)
    return train, test, valid


def load_task(name: str, path: str | None = None, min_train: int = N_SHOTS) -> Task:
    """A packaged task (``TASKS``) or a JSON file of ``{"input", "output"}`` pairs, split as the reference."""
    if path is None:
        if name not in TASKS:
            raise MlxInterpError(f"unknown task {name!r}; packaged: {', '.join(TASKS)} (or give a JSON file)")
        text = files("mlx_interp.tasks").joinpath("data", "function_vectors", f"{name}.json").read_text(encoding="utf-8")
    else:
        text = open(path, encoding="utf-8").read()
    items = _check(json.loads(text), name)
    train, test, valid = split(items)
    if len(train) < min_train:
        raise MlxInterpError(f"task {name!r} has {len(train)} train items after the split; {min_train} demonstrations "
                             f"are needed (give at least {math.ceil(min_train / 0.7) + 1} items)")
    return Task(name, train, valid, test)


def prompt(demos: Sequence[Pair], query: str, template: Template = DEFAULT_TEMPLATE) -> str:
    """The ICL prompt: each demonstration ``Q: x\\nA: y\\n\\n``, then ``Q: query\\nA:`` (x and y with a leading space)."""
    t = template
    body = "".join(f"{t.q} {d.x}{t.sep}{t.a} {d.y}{t.end}" for d in demos)
    return body + f"{t.q} {query}{t.sep}{t.a}"


def draw_demos(task: Task, rng: np.random.Generator, n: int = N_SHOTS, shuffle_labels: bool = False) -> list[Pair]:
    """``n`` demonstrations drawn without replacement from the train split (as the reference; queries come from
    valid or test, which share no item with train); with
    ``shuffle_labels`` the answers are permuted among the demonstrations (the paper's corrupted prompts)."""
    if n > len(task.train):
        raise MlxInterpError(f"{n} demonstrations requested but task {task.name!r} has {len(task.train)} train items")
    idx = rng.choice(len(task.train), size=n, replace=False)
    demos = [task.train[i] for i in idx]
    if shuffle_labels:
        ys = [d.y for d in demos]
        perm = rng.permutation(n)
        demos = [Pair(d.x, ys[j]) for d, j in zip(demos, perm)]
    return demos


def zero_shot(query: str, template: Template = DEFAULT_TEMPLATE) -> str:
    """``Q: x\\nA:`` (no demonstrations)."""
    return prompt([], query, template)


#: the reference's natural-text templates (``natural_text_eval.py``): zero-shot, no Q/A frame, {x} as given; the
#: answer is scored as a case-sensitive substring of the greedy continuation of ``NATURAL_TOKENS`` tokens
NATURAL = {
    "antonym": ['The word "{x}", means', 'When I think of the word "{x}", it usually means', 'When I think of "{x}", I usually',
                'While reading a book, I came across the word "{x}". I looked it up in a dictionary and it turns out that it means',
                'The word "{x}" can be understood as a synonym for'],
    "country-capital": ["A couple years ago I visited {x}, and", "If you ever travel to {x}, you have to visit",
                        "When you think of {x},"],
}
NATURAL_TOKENS = {"antonym": 5, "country-capital": 10}
