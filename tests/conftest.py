"""Shared fixtures: the three packaged real models, prepared once and loaded once per session.

Models come from PyPI wheels and are converted into $MLX_INTERP_CACHE on first use
(about 1 minute for all three); later runs reuse the cache.
"""

from __future__ import annotations

import os

# under pytest-xdist (run.sh runs 2 workers), each worker takes its share of the cores for BLAS: two workers at 2
# threads each on 2 cores spin-wait and collapse (../shared/PLATFORM.md); an explicit MLX_INTERP_THREADS still wins
if os.environ.get("PYTEST_XDIST_WORKER") and not os.environ.get("MLX_INTERP_THREADS"):
    os.environ["MLX_INTERP_THREADS"] = str(max(1, len(os.sched_getaffinity(0)) // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
                                           if hasattr(os, "sched_getaffinity") else 1)

import mlx_interp  # noqa: E402,F401  (first, so the fast BLAS is preloaded before mlx)
import pytest

from mlx_interp.store.models import load
from mlx_interp.store.registry import TEST_MODELS

_LOADED: dict = {}


def get_model(name: str):
    if name not in _LOADED:
        _LOADED[name] = load(name)
    return _LOADED[name]


@pytest.fixture(params=TEST_MODELS, scope="session")
def lm(request):
    """Each offline model (SmolLM2 / Gemma 3 / Qwen2.5), loaded with the default CPU path."""
    return get_model(request.param)


@pytest.fixture(scope="session")
def smol():
    return get_model("smollm2-135m")


@pytest.fixture(scope="session")
def gemma():
    return get_model("gemma-3-270m")


@pytest.fixture(scope="session")
def qwen():
    return get_model("qwen2.5-coder-0.5b")


def pytest_addoption(parser):
    parser.addoption("--extended", action="store_true",
                     help="also run the tests marked 'extended' (another model of a check the default tier makes, "
                          "launcher error paths); deselected otherwise, and counted as deselected")


def pytest_collection_modifyitems(config, items):
    """The default tier leaves out ``extended`` tests (deselected, so pytest's summary counts them): the suite's
    20-minute budget on 2 cores. ``bash run.sh test --extended`` runs every test."""
    if config.getoption("--extended"):
        return
    keep, drop = [], []
    for item in items:
        (drop if item.get_closest_marker("extended") else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
