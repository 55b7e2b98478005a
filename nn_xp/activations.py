"""Activation functions, each an immutable pair: the function and its derivative.

Derivatives are written on what the forward pass already computed (the output
``a`` where that is cheaper, as in ``sigmoid' = a (1 - a)``), so back-propagation
never recomputes an exponential. Everything goes through the namespace ``xp``.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from . import _kernels as K
from ._typing import Array, Namespace

__all__ = ["ACTIVATIONS", "Activation", "get_activation"]

LEAKY_SLOPE = 0.01


@dataclass(frozen=True)
class Activation:
    """An activation ``a = g(z)`` with its derivative.

    Attributes
    ----------
    name : str
    forward : callable ``(z, xp, out=None) -> a``
        Never writes ``z`` unless ``out`` is ``z`` (in place, as inference does).
        Returns ``z`` itself for the identity, else a new array, or ``out`` when a
        buffer is given (NumPy and CuPy; see _kernels; softmax and exp, output
        activations, always return a new array).
    derivative : callable ``(z, a, xp) -> g'(z)``, or None
        The elementwise derivative, same dtype as ``z``. None only for
        softmax, which is used fused with cross-entropy (its Jacobian is not elementwise).
    backward : callable ``(dA, z, a, xp, consume=False) -> dZ``, or None
        ``dA * g'(z)``, free to overwrite ``dA`` (the caller hands over a
        temporary); with ``consume``, free to overwrite ``a`` and ``z`` too.
    """

    name: str
    forward: Callable[..., Array]
    derivative: Callable[[Array, Array, Namespace], Array] | None
    backward: Callable[..., Array] | None


# Forward functions take ``out``: a buffer to write ``a`` into (see _kernels), or None
# for a new array. Backward functions may overwrite ``dA``; with ``consume`` they
# may also overwrite ``a`` and ``z``, which fit's back-propagation no longer needs.

# --- identity ---------------------------------------------------------------
def _identity(z: Array, xp: Namespace, out: Array | None = None) -> Array:
    return z


def _identity_derivative(z: Array, a: Array, xp: Namespace) -> Array:
    return xp.ones_like(z)


def _identity_backward(dA: Array, z: Array, a: Array, xp: Namespace, consume: bool = False) -> Array:
    return dA


# --- sigmoid ----------------------------------------------------------------
_sigmoid = K.sigmoid  # never an overflow warning, for any z (see _kernels.sigmoid)


def _sigmoid_derivative(z: Array, a: Array, xp: Namespace) -> Array:
    return a * (1.0 - a)


def _sigmoid_backward(dA: Array, z: Array, a: Array, xp: Namespace, consume: bool = False) -> Array:
    return K.sigmoid_backward(dA, a, xp, consume)  # dA * a * (1 - a), (1 - a) over the spent a if allowed


# --- tanh -------------------------------------------------------------------
def _tanh(z: Array, xp: Namespace, out: Array | None = None) -> Array:
    return K.tanh(z, xp, out)


def _tanh_derivative(z: Array, a: Array, xp: Namespace) -> Array:
    return 1.0 - a * a


def _tanh_backward(dA: Array, z: Array, a: Array, xp: Namespace, consume: bool = False) -> Array:
    return K.tanh_backward(dA, a, xp, consume)  # dA * (1 - a^2), a^2 over the spent a if allowed


# --- relu and leaky relu ----------------------------------------------------
# their derivatives read a > 0, which is z > 0: back-propagation never needs z
def _relu(z: Array, xp: Namespace, out: Array | None = None) -> Array:
    return K.maximum(z, 0.0, xp, out)


def _relu_derivative(z: Array, a: Array, xp: Namespace) -> Array:
    # defined at 0 as 0 (the subgradient PyTorch and scikit-learn use)
    return xp.where(z > 0, xp.ones_like(z), xp.zeros_like(z))


def _relu_backward(dA: Array, z: Array, a: Array, xp: Namespace, consume: bool = False) -> Array:
    return K.relu_backward(dA, a, xp)  # dA where a > 0, else 0


def _leaky_relu(z: Array, xp: Namespace, out: Array | None = None) -> Array:
    if out is z:  # in place: slope * z is needed beside z, so one temporary
        return K.maximum(z, z * LEAKY_SLOPE, xp, out)
    a = K.multiply(z, LEAKY_SLOPE, xp, out)  # max(z, slope * z) for a slope below 1
    return K.maximum(a, z, xp, None if out is None else a)


def _leaky_relu_derivative(z: Array, a: Array, xp: Namespace) -> Array:
    return xp.where(z > 0, xp.ones_like(z), xp.full_like(z, LEAKY_SLOPE))


def _leaky_relu_backward(dA: Array, z: Array, a: Array, xp: Namespace, consume: bool = False) -> Array:
    return xp.where(a > 0, dA, dA * LEAKY_SLOPE)


# --- exp (the output of the Poisson loss: the inverse of its log link) -------
def _exp(z: Array, xp: Namespace, out: Array | None = None) -> Array:
    # a new array, as softmax's; z is capped at log(largest finite), so exp saturates there instead of
    # overflowing to inf with a warning (a fit that gets there diverges, and fit says so)
    info = xp.finfo(z.dtype)
    cap = math.log(info.max) * (1.0 - 4.0 * info.eps)  # below log(max) once rounded to the dtype
    return xp.exp(xp.minimum(z, cap))


def _exp_derivative(z: Array, a: Array, xp: Namespace) -> Array:
    return a * 1.0  # exp' = exp: what forward computed (a copy, never a itself)


def _exp_backward(dA: Array, z: Array, a: Array, xp: Namespace, consume: bool = False) -> Array:
    dA *= a
    return dA


# --- softmax (only as an output fused with cross-entropy) -------------------
def _softmax(z: Array, xp: Namespace, out: Array | None = None) -> Array:
    e = xp.exp(z - xp.max(z, axis=1, keepdims=True))  # max shift: exp never overflows
    e /= xp.sum(e, axis=1, keepdims=True)
    return e


ACTIVATIONS: dict[str, Activation] = {
    a.name: a
    for a in (
        Activation("identity", _identity, _identity_derivative, _identity_backward),
        Activation("sigmoid", _sigmoid, _sigmoid_derivative, _sigmoid_backward),
        Activation("tanh", _tanh, _tanh_derivative, _tanh_backward),
        Activation("relu", _relu, _relu_derivative, _relu_backward),
        Activation("leaky_relu", _leaky_relu, _leaky_relu_derivative, _leaky_relu_backward),
        Activation("softmax", _softmax, None, None),
        Activation("exp", _exp, _exp_derivative, _exp_backward),
    )
}
ACTIVATIONS["linear"] = IDENTITY = ACTIVATIONS["identity"]


def get_activation(name: str | Activation) -> Activation:
    """Look up an activation by name (or pass an :class:`Activation` through)."""
    if isinstance(name, Activation):
        return name
    try:
        return ACTIVATIONS[name]
    except (KeyError, TypeError):
        valid = ", ".join(sorted(ACTIVATIONS))
        raise ValueError(f"unknown activation {name!r}; valid names: {valid}") from None
