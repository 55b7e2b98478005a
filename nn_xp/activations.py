"""Activation functions, each an immutable pair: the function and its derivative.

Derivatives are written on what the forward pass already computed (the output
``a`` where that is cheaper, as in ``sigmoid' = a (1 - a)``), so back-propagation
never recomputes an exponential. Everything goes through the namespace ``xp``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ._typing import Array, Namespace

__all__ = ["ACTIVATIONS", "Activation", "get_activation"]

LEAKY_SLOPE = 0.01


@dataclass(frozen=True)
class Activation:
    """An activation ``a = g(z)`` with its derivative.

    Attributes
    ----------
    name : str
    forward : callable ``(z, xp) -> a``
        Returns a new array (or ``z`` itself for the identity); never writes ``z``.
    derivative : callable ``(z, a, xp) -> g'(z)``, or None
        The elementwise derivative, same dtype as ``z``. None only for
        softmax, which is used fused with cross-entropy (its Jacobian is not elementwise).
    backward : callable ``(dA, z, a, xp) -> dZ``, or None
        ``dA * g'(z)``, free to overwrite ``dA`` (the caller hands over a temporary).
    """

    name: str
    forward: Callable[[Array, Namespace], Array]
    derivative: Callable[[Array, Array, Namespace], Array] | None
    backward: Callable[[Array, Array, Array, Namespace], Array] | None


# --- identity ---------------------------------------------------------------
def _identity(z: Array, xp: Namespace) -> Array:
    return z


def _identity_derivative(z: Array, a: Array, xp: Namespace) -> Array:
    return xp.ones_like(z)


def _identity_backward(dA: Array, z: Array, a: Array, xp: Namespace) -> Array:
    return dA


# --- sigmoid ----------------------------------------------------------------
def _sigmoid(z: Array, xp: Namespace) -> Array:
    # 1/(1+exp(-z)) written through tanh: no exp overflow (and no warning) for |z| up to 1e4
    a = xp.tanh(z * 0.5)
    a *= 0.5
    a += 0.5
    return a


def _sigmoid_derivative(z: Array, a: Array, xp: Namespace) -> Array:
    return a * (1.0 - a)


def _sigmoid_backward(dA: Array, z: Array, a: Array, xp: Namespace) -> Array:
    t = 1.0 - a  # one temporary: dA * a * (1 - a)
    t *= a
    dA *= t
    return dA


# --- tanh -------------------------------------------------------------------
def _tanh(z: Array, xp: Namespace) -> Array:
    return xp.tanh(z)


def _tanh_derivative(z: Array, a: Array, xp: Namespace) -> Array:
    return 1.0 - a * a


def _tanh_backward(dA: Array, z: Array, a: Array, xp: Namespace) -> Array:
    t = a * a  # dA - dA * a^2
    t *= dA
    dA -= t
    return dA


# --- relu and leaky relu ----------------------------------------------------
def _relu(z: Array, xp: Namespace) -> Array:
    return xp.maximum(z, 0.0)


def _relu_derivative(z: Array, a: Array, xp: Namespace) -> Array:
    # defined at 0 as 0 (the subgradient PyTorch and scikit-learn use)
    return xp.where(z > 0, xp.ones_like(z), xp.zeros_like(z))


def _relu_backward(dA: Array, z: Array, a: Array, xp: Namespace) -> Array:
    return xp.where(z > 0, dA, 0.0)


def _leaky_relu(z: Array, xp: Namespace) -> Array:
    return xp.where(z > 0, z, z * LEAKY_SLOPE)


def _leaky_relu_derivative(z: Array, a: Array, xp: Namespace) -> Array:
    return xp.where(z > 0, xp.ones_like(z), xp.full_like(z, LEAKY_SLOPE))


def _leaky_relu_backward(dA: Array, z: Array, a: Array, xp: Namespace) -> Array:
    return xp.where(z > 0, dA, dA * LEAKY_SLOPE)


# --- softmax (only as an output fused with cross-entropy) -------------------
def _softmax(z: Array, xp: Namespace) -> Array:
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
    )
}
ACTIVATIONS["linear"] = ACTIVATIONS["identity"]


def get_activation(name: str | Activation) -> Activation:
    """Look up an activation by name (or pass an :class:`Activation` through)."""
    if isinstance(name, Activation):
        return name
    try:
        return ACTIVATIONS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown activation {name!r}; valid names: {', '.join(sorted(ACTIVATIONS))}") from None
