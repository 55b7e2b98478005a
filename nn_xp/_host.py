"""Host-side helpers: the seeded generator, initial weights, shuffles, host data.

NumPy is imported here because the host is the point: random draws happen on
the host from ``numpy.random.Generator(seed)`` and are then moved to the
device, so one seed gives the same start on every backend.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .backends import to_numpy

__all__ = ["host_weight", "initial_weights", "make_rng", "permutation", "to_host_array"]

# activations whose layers get He initialisation; the rest get Glorot
_HE = frozenset({"relu", "leaky_relu"})


def make_rng(seed: int | np.random.Generator | None) -> np.random.Generator:
    """A host ``numpy.random.Generator`` from a seed (or pass one through)."""
    if isinstance(seed, np.random.Generator):
        return seed
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0):
        raise ValueError(f"seed must be a non-negative integer, a numpy Generator or None, got {seed!r}")
    return np.random.default_rng(seed)


def initial_weights(rng: np.random.Generator, sizes: Sequence[int],
                    activations: Sequence[str]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Draw float64 ``(W, b)`` per layer on the host: He normal before relu-like units, else Glorot uniform.

    ``W`` is ``(n_out, n_in)``, ``b`` is ``(n_out,)`` and starts at zero.
    """
    weights = []
    for n_in, n_out, act in zip(sizes[:-1], sizes[1:], activations):
        if act in _HE:
            W = rng.standard_normal((n_out, n_in)) * np.sqrt(2.0 / n_in)
        else:
            limit = np.sqrt(6.0 / (n_in + n_out))
            W = rng.uniform(-limit, limit, size=(n_out, n_in))
        weights.append((W, np.zeros(n_out)))
    return weights


def permutation(rng: np.random.Generator, n: int) -> np.ndarray:
    """A shuffle of ``range(n)`` drawn on the host (int64, moved to the device by the caller)."""
    return rng.permutation(n)


def to_host_array(x: Any, name: str) -> np.ndarray:
    """Host data (lists, scalars, NumPy) as a NumPy array; a clear TypeError for anything else."""
    try:
        return np.asarray(x)
    except Exception as exc:
        raise TypeError(f"{name} must be array-like, got {type(x).__name__}: {exc}") from None


def rng_state(rng: np.random.Generator) -> dict:
    """The generator's state (JSON-serialisable) for checkpoints."""
    return rng.bit_generator.state


def set_rng_state(rng: np.random.Generator, state: dict) -> None:
    rng.bit_generator.state = state


def host_weight(arr: Any, name: str, shape: tuple[int, ...]) -> np.ndarray:
    """A user-supplied weight as a checked host array: right shape, real, finite."""
    host = to_host_array(to_numpy(arr) if hasattr(arr, "__dlpack__") else arr, name)
    if tuple(host.shape) != shape:
        raise ValueError(f"weights for {name} must have shape {shape}, got {tuple(host.shape)}")
    if host.dtype.kind not in "fiu":
        raise TypeError(f"weights for {name} must be real numbers, got dtype {host.dtype}")
    if not np.all(np.isfinite(host)):
        raise ValueError(f"weights for {name} contain NaN or infinity")
    return host


def concatenate_flat(arrays: list[np.ndarray], bias_column: bool = False) -> np.ndarray:
    """The host arrays raveled end to end, as one 1-D array (a new one). With ``bias_column``, the first two
    (``W (n_out, n_in)``, ``b (n_out,)``) go in as one ``(n_out, n_in + 1)`` block, ``b`` its last column."""
    if bias_column:
        arrays = [np.concatenate([arrays[0], arrays[1][:, None]], axis=1), *arrays[2:]]
    return np.concatenate([a.ravel() for a in arrays])
