"""mlx-interp: mechanistic interpretability and activation steering for mlx-lm models.

Importing this package first (before ``mlx``) lets it preload an optimized BLAS on Linux,
which makes MLX's CPU backend ~30x faster; on macOS it does nothing.
"""

from . import _blas

_blas.preload()

from .errors import MlxInterpError  # noqa: E402
from .models import LoadedModel, load, prepare  # noqa: E402

__version__ = "0.1.0"
__all__ = ["MlxInterpError", "LoadedModel", "load", "prepare", "__version__"]
