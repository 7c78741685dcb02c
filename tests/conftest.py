"""Shared fixtures: the three packaged real models, prepared once and loaded once per session.

Models come from PyPI wheels and are converted into $MLX_INTERP_CACHE on first use
(about 1 minute for all three); later runs reuse the cache.
"""

from __future__ import annotations

import mlx_interp  # noqa: F401  (first, so the fast BLAS is preloaded before mlx)
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
