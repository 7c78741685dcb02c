"""mlx-interp: mechanistic interpretability and activation steering for mlx-lm models.

Importing this package first (before ``mlx``) lets it preload an optimized BLAS on Linux,
which makes MLX's CPU backend 70-120x faster at decoding (README, "Fast Linux CPU path"), and lets MLX's CPU JIT compile for this CPU (x86-64:
AVX2/FMA, bit-identical results); on macOS it does nothing.

Layout (one concept per module; see the README's "Layout" section):
``store`` (where models come from; never imports the core), ``runtime`` (BLAS, CPU path),
``core`` (sites, hooks, interventions, captures, batching, the forward driver, generation,
KV caches and their transplants), ``readouts`` (lens, directions, vectors), ``measures`` (judge-free metrics),
``methods`` (paper procedures: refusal direction, steering search, vetting), ``tasks``
(packaged data), ``runs`` (results with provenance), ``app`` (CLI, demo).
"""

from .runtime import blas as _blas
from .runtime import jit as _jit

_blas.preload()
_jit.configure()

from .core.cache_ops import move, noise_like, place, replace_span, splice  # noqa: E402
from .core.capture import Capture  # noqa: E402
from .core.generate import Generation, Generations, generate, generate_conditions  # noqa: E402
from .core.interventions import Ablate, Add, Edit, Patch  # noqa: E402
from .core.kvcache import PromptCache  # noqa: E402
from .core.positions import Span  # noqa: E402
from .core.sites import KINDS  # noqa: E402
from .core.trace import Trace, intervene, run  # noqa: E402
from .errors import MlxInterpError  # noqa: E402
from .readouts.control_vectors import export_control_vector, import_control_vector  # noqa: E402
from .readouts.directions import diff_of_means, extract  # noqa: E402
from .readouts.lens import logit_lens  # noqa: E402
from .readouts.vectors import VectorSet, load_vector, save_vector  # noqa: E402
from .runs.results import save_result  # noqa: E402
from .store.models import LoadedModel, load, prepare  # noqa: E402

__version__ = "0.2.0"
__all__ = [
    "Ablate", "Add", "Capture", "Edit", "Generation", "Generations", "KINDS", "LoadedModel", "MlxInterpError", "Patch",
    "PromptCache", "Span", "Trace", "VectorSet", "diff_of_means", "export_control_vector", "extract", "generate",
    "import_control_vector", "intervene", "load", "load_vector",
    "logit_lens", "move", "noise_like", "place", "prepare", "replace_span", "run", "save_result", "save_vector", "splice",
    "__version__",
]
