"""Dropout on the hidden layers' outputs, active in ``fit`` only, with inverted scaling.

``Network(..., dropout=0.2)`` (or one rate per hidden layer) makes every training step drop each unit of
a hidden layer's output with probability ``rate`` and scale the kept ones by ``1 / (1 - rate)``, so that
what the next layer sees has the undropped output's expectation: ``predict``, ``loss``, ``score`` and the
validation metrics use the whole network, unscaled. The output layer is never dropped.

The math, in the forward pass and back-propagation of every engine: hidden layer ``i`` computes
``A = g(Z)`` as always and layer ``i + 1`` sees ``A * mask`` (``mask`` holds 0 or ``1 / (1 - rate)``);
back-propagation multiplies the ``dA`` of what layer ``i + 1`` saw by the same mask before
``dZ = dA * g'(Z)``, and layer ``i + 1``'s ``dW`` uses what it saw, ``A * mask``. The values a forward pass
keeps are the undropped ``(Z, A)``, which the activations' derivatives are written on; the masks travel
beside them (``Network.evaluate(X, masks=...)``, ``Network.value_and_gradient(values, Y, masks=...)``).

A step's masks are a function of the network's ``dropout_seed`` (drawn once from its host generator when
it is made) and the optimizer's step count (:meth:`nn_xp.Network.dropout_masks`), drawn on the device by
the backend's own generator (:mod:`nn_xp._random`): undo points, checkpoints and rollbacks need no
generator state, a run is reproducible for a seed on a given backend, and every rank of a data-parallel
fit draws the whole batch's masks and takes its shard's rows of them. (A fit with a new optimizer counts
from 1 again, so it draws the masks the first fit drew, on other weights.)

The training metrics ``fit`` records are the dropped network's, as Keras' are; ``engine="cuda_graph"``
refuses dropout (its captured epoch would drop the same units every epoch).
"""
from __future__ import annotations

from collections.abc import Sequence
from numbers import Real
from typing import Any

from ._typing import Array, Namespace

__all__ = ["describe", "masks", "rates"]


def rates(dropout: Any, n_hidden: int) -> tuple[float, ...]:
    """``Network(dropout=...)`` checked: one rate in [0, 1) for every hidden layer (a single rate applies to
    each), as a tuple of floats (all 0 without dropout)."""
    if isinstance(dropout, (Real, str, bytes)):
        rate = _rate(dropout, "dropout")
        if rate and not n_hidden:
            raise ValueError(f"dropout={dropout!r} drops hidden layers' outputs, and this network has no "
                             "hidden layer: the output layer takes no dropout")
        return (rate,) * n_hidden
    try:
        given = list(dropout)
    except TypeError:
        raise ValueError(f"dropout must be a rate in [0, 1) or a sequence of them (one per hidden layer), "
                         f"got {dropout!r}") from None
    if len(given) != n_hidden:
        extra = "; the output layer takes no dropout" if len(given) == n_hidden + 1 else ""
        raise ValueError(f"dropout must be one rate, or one per hidden layer ({n_hidden}), got {len(given)} "
                         f"rates {given!r}{extra}")
    return tuple(_rate(r, f"dropout[{i}]") for i, r in enumerate(given))


def _rate(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, Real) or not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must be a rate in [0, 1) (the fraction of a hidden layer's units dropped "
                         f"at each training step), got {value!r}")
    return float(value)


def describe(dropout: tuple[float, ...]) -> str | None:
    """What ``repr`` shows: None without dropout, one rate where every layer has it, else the list."""
    if not any(dropout):
        return None
    return repr(dropout[0]) if len(set(dropout)) == 1 else repr(list(dropout))


def masks(dropout: tuple[float, ...], uniforms: Sequence[Array], xp: Namespace,
          dtype: Any) -> list[Array | None]:
    """One mask per hidden layer from the uniforms in [0, 1) drawn for the layers with a rate (in order):
    None where the rate is 0, else ``(u >= rate) / (1 - rate)`` in ``dtype``, each unit kept with
    probability ``1 - rate``."""
    draws = iter(uniforms)
    return [None if not p else xp.astype(next(draws) >= p, dtype) * (1.0 / (1.0 - p)) for p in dropout]

