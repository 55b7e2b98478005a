"""Loss functions, each paired with the gradient it sends back into the output layer.

Every loss is a mean over the ``m`` samples. The cross-entropies are fused with
their output activation (sigmoid, softmax) and computed from the logits ``z``, so
they never take ``log(0)`` and their output gradient is ``dZ = (A - Y) / m``
(scikit-learn's rule). ``mse`` is the blog's ``0.5 ||A - Y||^2 / m`` with
``dA = (A - Y) / m``. ``poisson`` is scikit-learn's half Poisson deviance, fused
with its ``exp`` output (the inverse of the log link): ``dZ = (exp(z) - Y) / m``.

``m`` is the number of rows of ``y``, unless ``value_and_delta`` is given another:
in data-parallel training ``y`` is one rank's shard of a batch and ``m`` the whole
batch's row count, so that each rank's rows of ``delta`` are exactly those of one
process and the ranks' gradients sum to its gradient.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from . import _kernels as K
from ._typing import Array, Namespace

__all__ = ["LOSSES", "Loss", "get_loss"]


@dataclass(frozen=True)
class Loss:
    """A loss with its output gradient.

    Attributes
    ----------
    name : str
    value_and_delta : callable ``(z, a, y, xp, m=None) -> (loss, delta)``
        ``loss`` is a 0-d array on the device (no host round trip); ``delta``
        is ``dA`` for the output layer, or ``dZ`` directly when the output
        activation is ``fused_with``. Both divide by ``m``, the batch's row
        count (None: ``y``'s; data-parallel ``fit`` passes the global batch's).
    value : callable ``(z, a, y, xp) -> loss``
    fused_with : str or None
        The output activation this loss requires and is fused with.
    correct : callable ``(a, y, xp) -> count``, or None
        How many samples the outputs ``a`` classify right (a device scalar);
        None where accuracy means nothing (regression).
    """

    name: str
    value_and_delta: Callable[[Array, Array, Array, Namespace], tuple[Array, Array]]
    value: Callable[[Array, Array, Array, Namespace], Array]
    fused_with: str | None
    correct: Callable[[Array, Array, Namespace], Array] | None = None

    @property
    def classification(self) -> bool:
        return self.correct is not None


def _rows(y: Array, m: int | None) -> int:
    """The mean's denominator: the batch's row count, ``y``'s own unless given (a rank's shard of a batch)."""
    return y.shape[0] if m is None else m


def _mse_value_and_delta(z: Array, a: Array, y: Array, xp: Namespace,
                         m: int | None = None) -> tuple[Array, Array]:
    m = _rows(y, m)
    diff = a - y  # (m, n_out)
    flat = K.flat_view(diff, xp)  # ||diff||^2 as one dot
    loss = (flat @ flat) * (0.5 / m)
    diff /= m
    return loss, diff


def _mse_value(z: Array, a: Array, y: Array, xp: Namespace, m: int | None = None) -> Array:
    flat = xp.reshape(a - y, (-1,))
    return (flat @ flat) * (0.5 / _rows(y, m))


def _bce_value(z: Array, a: Array, y: Array, xp: Namespace, m: int | None = None) -> Array:
    # -[y log s(z) + (1-y) log(1-s(z))] = softplus(z) - y z, stable for any z
    return xp.sum(xp.logaddexp(0.0, z) - y * z) / _rows(y, m)


def _bce_value_and_delta(z: Array, a: Array, y: Array, xp: Namespace,
                         m: int | None = None) -> tuple[Array, Array]:
    return _bce_value(z, a, y, xp, m), (a - y) / _rows(y, m)


def _ce_value(z: Array, a: Array, y: Array, xp: Namespace, m: int | None = None) -> Array:
    zmax = xp.max(z, axis=1, keepdims=True)  # (m, 1)
    shifted = z - zmax
    lse = xp.log(xp.sum(xp.exp(shifted), axis=1))  # (m,)
    return (xp.sum(lse) - xp.sum(y * shifted)) / _rows(y, m)


def _ce_value_and_delta(z: Array, a: Array, y: Array, xp: Namespace,
                        m: int | None = None) -> tuple[Array, Array]:
    return _ce_value(z, a, y, xp, m), (a - y) / _rows(y, m)


def _poisson_value(z: Array, a: Array, y: Array, xp: Namespace, m: int | None = None) -> Array:
    # scikit-learn's half Poisson deviance y log(y / a) - y + a, with a = exp(z) and so log(a) = z;
    # y log y is 0 at y = 0 (scipy's xlogy), a mean over the samples and a sum over the outputs
    positive = y > 0
    ylogy = xp.where(positive, y * xp.log(xp.where(positive, y, 1.0)), 0.0)  # (m, n_out)
    return xp.sum(ylogy - y * z - y + a) / _rows(y, m)


def _poisson_value_and_delta(z: Array, a: Array, y: Array, xp: Namespace,
                             m: int | None = None) -> tuple[Array, Array]:
    # d/dz (exp(z) - y z) = a - y: dZ itself
    return _poisson_value(z, a, y, xp, m), (a - y) / _rows(y, m)


def _argmax_correct(a: Array, y: Array, xp: Namespace) -> Array:
    return xp.sum(xp.astype(xp.argmax(a, axis=1) == xp.argmax(y, axis=1), a.dtype))


def _threshold_correct(a: Array, y: Array, xp: Namespace) -> Array:
    # each output is its own yes/no question; a sample counts by the share it gets right
    return xp.sum(xp.astype((a > 0.5) == (y > 0.5), a.dtype)) / y.shape[1]


LOSSES: dict[str, Loss] = {
    loss.name: loss
    for loss in (
        Loss("mse", _mse_value_and_delta, _mse_value, None),
        Loss("binary_cross_entropy", _bce_value_and_delta, _bce_value, "sigmoid", _threshold_correct),
        Loss("cross_entropy", _ce_value_and_delta, _ce_value, "softmax", _argmax_correct),
        Loss("poisson", _poisson_value_and_delta, _poisson_value, "exp"),
    )
}


def get_loss(name: str | Loss) -> Loss:
    """Look up a loss by name (or pass a :class:`Loss` through)."""
    if isinstance(name, Loss):
        return name
    try:
        return LOSSES[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown loss {name!r}; valid names: {', '.join(LOSSES)}") from None
