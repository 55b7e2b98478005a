"""How ``fit`` runs a step on a backend: the one place that chooses the portable, buffered or compiled path.

An engine belongs to one network (``net.engine``). It lays out the network's
parameters (:mod:`.storage`), keeps the buffers ``fit`` reuses, and makes a
:class:`Trainer` per ``fit``, which runs epochs and takes a gradient hook
between back-propagation and the optimizer's step (where a data-parallel
allreduce of the gradients goes). The loop drives a Trainer through
``run``; the model's math stays in :mod:`nn_xp.network`.

- ``"portable"``: the model's own ``evaluate`` / ``value_and_gradient``, any array-API library.
- ``"buffered"``: the same arithmetic into reused buffers, parameters in one flat buffer (NumPy, CuPy).
- ``"fused"``: the model's step in the library's fused operations, plain gradient descent inside
  back-propagation (torch; see :mod:`.fused`).
- ``"compiled"``: epochs as compiled JAX programs, several per call (JAX only; see :mod:`.compiled`).
- ``"cuda_graph"``: the buffered engine's full-batch SGD epoch captured once as a CUDA graph and replayed
  (CuPy only; opt-in; see :mod:`.graphs`).
- ``"auto"`` (default): compiled on JAX, buffered where the library takes ``out=``, fused where it fuses
  products (torch), else portable.
"""
from __future__ import annotations

from typing import Any

from array_api_compat import is_cupy_namespace, is_jax_namespace

from .. import _kernels as K
from .buffered import BufferedEngine, BufferedTrainer, InferenceBuffers, Workspace
from .compiled import CompiledEngine, CompiledTrainer, ImmutableParameters
from .fused import FusedEngine, FusedTrainer
from .graphs import CudaGraphEngine, CudaGraphTrainer, CupyCapture
from .portable import (
    INFERENCE_CHUNK_ELEMENTS,
    GradientHook,
    PortableEngine,
    Trainer,
    chunk_rows,
    eager_epochs_per_call,
)
from .storage import FlatParameters, Parameters, Snapshot

__all__ = ["ENGINES", "INFERENCE_CHUNK_ELEMENTS", "BufferedEngine", "BufferedTrainer", "CompiledEngine",
           "CompiledTrainer", "CudaGraphEngine", "CudaGraphTrainer", "CupyCapture", "FlatParameters",
           "FusedEngine", "FusedTrainer", "GradientHook", "ImmutableParameters", "InferenceBuffers",
           "Parameters", "PortableEngine", "Snapshot", "Trainer", "Workspace", "chunk_rows",
           "eager_epochs_per_call", "select_engine"]

#: names accepted by ``Network(engine=...)``
ENGINES = ("auto", "portable", "buffered", "fused", "compiled", "cuda_graph")


def select_engine(backend: Any, dtype: Any, name: str | None = None) -> PortableEngine:
    """A new engine for a network on ``backend`` in ``dtype``: ``name`` from :data:`ENGINES` (None: auto)."""
    name = "auto" if name is None else name
    if not isinstance(name, str) or name not in ENGINES:
        raise ValueError(f"unknown engine {name!r}; valid names: {', '.join(ENGINES)}")
    if name == "cuda_graph":
        if not is_cupy_namespace(backend.xp):
            raise ValueError(f"engine='cuda_graph' captures CUDA graphs with CuPy, and the network is on the "
                             f"{backend.name} backend; use backend='cupy' on a GPU, or engine='auto'")
        return CudaGraphEngine(backend, dtype)
    jax = is_jax_namespace(backend.xp)
    if name == "compiled" and not jax:
        raise ValueError(f"engine='compiled' compiles with JAX, and the network is on the {backend.name} "
                         "backend; use backend='jax', or engine='auto' or 'portable'")
    if name == "compiled" or (name == "auto" and jax):
        return CompiledEngine(backend, dtype)
    fused = K.fuses_products(backend.xp)
    if name == "fused" and not fused:
        raise ValueError(f"engine='fused' runs the step in torch's own fused calls, and the network is on "
                         f"the {backend.name} backend; use backend='torch', or engine='auto'")
    if name == "fused" or (name == "auto" and fused):
        return FusedEngine(backend, dtype)
    buffered = K.supports_out(backend.xp)
    if name == "buffered" and not buffered:
        raise ValueError(f"engine='buffered' writes into out= buffers, which the {backend.name} backend "
                         "does not take (NumPy and CuPy do); use engine='auto' or 'portable'")
    if name == "portable" or not buffered:
        return PortableEngine(backend, dtype)
    return BufferedEngine(backend, dtype)
