"""Loss functions, each paired with the gradient it sends back into the output layer.

Every loss is a mean over the ``m`` samples. The cross-entropies are fused with
their output activation (sigmoid, softmax) and computed from the logits ``z``, so
they never take ``log(0)`` and their output gradient is ``dZ = (A - Y) / m``
(scikit-learn's rule). ``mse`` is the blog's ``0.5 ||A - Y||^2 / m`` with
``dA = (A - Y) / m``. ``poisson`` is scikit-learn's half Poisson deviance, fused
with its ``exp`` output (the inverse of the log link): ``dZ = (exp(z) - Y) / m``.
``mae`` is ``sum |A - Y| / m`` with ``dA = sign(A - Y) / m`` (0 where ``A == Y``), and
``huber`` (:func:`huber`, Keras' ``delta``) is ``mse`` inside ``delta`` and ``delta`` times
``mae`` outside: ``dA = clip(A - Y, -delta, delta) / m``. Like ``mse``, both sum over the
outputs, where Keras and scikit-learn average over them: divide by ``n_outputs`` to compare.

``m`` is the number of rows of ``y``, unless ``value_and_delta`` is given another:
in data-parallel training ``y`` is one rank's shard of a batch and ``m`` the whole
batch's row count, so that each rank's rows of ``delta`` are exactly those of one
process and the ranks' gradients sum to its gradient.

``w`` (``fit``'s ``sample_weight``) weights each row's loss: ``sum_i w_i l_i / m``,
the denominator still the rows (Keras' ``"sum_over_batch_size"``), and
``delta``'s row ``i`` is multiplied by ``w_i``.
"""
from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, fields
from numbers import Real
from typing import Any

from . import _kernels as K
from ._typing import Array, Namespace

__all__ = ["LOSSES", "Loss", "get_loss", "huber", "is_builtin"]


@dataclass(frozen=True)
class Loss:
    """A loss with its output gradient.

    Attributes
    ----------
    name : str
    value_and_delta : callable ``(z, a, y, xp, m=None, w=None) -> (loss, delta)``
        ``loss`` is a 0-d array on the device (no host round trip); ``delta``
        is ``dA`` for the output layer, or ``dZ`` directly when the output
        activation is ``fused_with``. Both divide by ``m``, the batch's row
        count (None: ``y``'s; data-parallel ``fit`` passes the global batch's;
        ``fit(weighted_mean=True)`` the batch's sum of weights, a 0-d device array).
        ``w``: None, or the rows' sample weights ``(m, 1)``: each row's loss
        (and its row of ``delta``) is multiplied by its weight before the sum,
        so the loss is ``sum_i w_i l_i / m`` (Keras' ``"sum_over_batch_size"``);
        weights of 1 give the unweighted loss bit for bit, and None costs nothing.
    value : callable ``(z, a, y, xp, m=None, w=None) -> loss``
    fused_with : str or None
        The output activation this loss requires and is fused with.
    correct : callable ``(a, y, xp, w=None) -> count``, or None
        How many samples the outputs ``a`` classify right (a device scalar;
        with ``w``, the sum of their weights); None where accuracy means
        nothing (regression).
    config : tuple of (name, value) pairs
        The parameters a built-in loss was made with (``huber``'s ``delta``):
        with ``name``, what rebuilds it (:func:`get_loss`), and what model files save.
    """

    name: str
    value_and_delta: Callable[[Array, Array, Array, Namespace], tuple[Array, Array]]
    value: Callable[[Array, Array, Array, Namespace], Array]
    fused_with: str | None
    correct: Callable[[Array, Array, Namespace], Array] | None = None
    config: tuple[tuple[str, float], ...] = ()

    @property
    def classification(self) -> bool:
        return self.correct is not None

    def value_and_delta_of(self, z: Array, a: Array, y: Array, xp: Namespace, m: int | None = None,
                           w: Array | None = None) -> tuple[Array, Array]:
        """:attr:`value_and_delta` given only the arguments in use (``m`` a shard's denominator, ``w`` sample
        weights): a user's loss written as ``(z, a, y, xp)`` trains wherever it needs neither."""
        if w is not None:
            return self.value_and_delta(z, a, y, xp, m, w)
        if m is None:
            return self.value_and_delta(z, a, y, xp)
        return self.value_and_delta(z, a, y, xp, m)

    def __reduce__(self) -> tuple:
        # a built-in loss pickles (and deep-copies) as its name and config: the same object comes back
        if is_builtin(self):
            return get_loss, (self.name, dict(self.config) or None)
        return Loss, tuple(getattr(self, f.name) for f in fields(self))


def _rows(y: Array, m: int | None) -> int:
    """The mean's denominator: the batch's row count, ``y``'s own unless given (a rank's shard of a batch)."""
    return y.shape[0] if m is None else m


def _weighted_delta(a: Array, y: Array, w: Array | None, m: int) -> Array:
    """``(a - y) / m``, each row times its weight first: weights of 1 give the unweighted bits."""
    return (a - y) / m if w is None else ((a - y) * w) / m  # (m, n_out)


def _mse_value_and_delta(z: Array, a: Array, y: Array, xp: Namespace, m: int | None = None,
                         w: Array | None = None) -> tuple[Array, Array]:
    m = _rows(y, m)
    diff = a - y  # (m, n_out)
    flat = K.flat_view(diff, xp)  # ||diff||^2 as one dot
    if w is not None:  # sum_i w_i ||diff_i||^2, the same dot
        diff = diff * w
        loss = K.dot(K.flat_view(diff, xp), flat, xp) * (0.5 / m)
    else:
        loss = K.dot(flat, flat, xp) * (0.5 / m)
    diff /= m
    return loss, diff


def _mse_value(z: Array, a: Array, y: Array, xp: Namespace, m: int | None = None,
               w: Array | None = None) -> Array:
    diff = a - y  # (m, n_out)
    flat = xp.reshape(diff, (-1,))
    weighted = flat if w is None else xp.reshape(diff * w, (-1,))
    return (weighted @ flat) * (0.5 / _rows(y, m))


def _bce_value(z: Array, a: Array, y: Array, xp: Namespace, m: int | None = None,
               w: Array | None = None) -> Array:
    # -[y log s(z) + (1-y) log(1-s(z))] = softplus(z) - y z, stable for any z
    terms = xp.logaddexp(0.0, z) - y * z  # (m, n_out)
    return xp.sum(terms if w is None else terms * w) / _rows(y, m)


def _bce_value_and_delta(z: Array, a: Array, y: Array, xp: Namespace, m: int | None = None,
                         w: Array | None = None) -> tuple[Array, Array]:
    return _bce_value(z, a, y, xp, m, w), _weighted_delta(a, y, w, _rows(y, m))


def _ce_value(z: Array, a: Array, y: Array, xp: Namespace, m: int | None = None,
              w: Array | None = None) -> Array:
    zmax = xp.max(z, axis=1, keepdims=True)  # (m, 1)
    shifted = z - zmax
    lse = xp.log(xp.sum(xp.exp(shifted), axis=1))  # (m,)
    if w is None:
        return (xp.sum(lse) - xp.sum(y * shifted)) / _rows(y, m)
    return (xp.sum(lse * w[:, 0]) - xp.sum(y * shifted * w)) / _rows(y, m)


def _ce_value_and_delta(z: Array, a: Array, y: Array, xp: Namespace, m: int | None = None,
                        w: Array | None = None) -> tuple[Array, Array]:
    return _ce_value(z, a, y, xp, m, w), _weighted_delta(a, y, w, _rows(y, m))


def _poisson_value(z: Array, a: Array, y: Array, xp: Namespace, m: int | None = None,
                   w: Array | None = None) -> Array:
    # scikit-learn's half Poisson deviance y log(y / a) - y + a, with a = exp(z) and so log(a) = z;
    # y log y is 0 at y = 0 (scipy's xlogy), a mean over the samples and a sum over the outputs
    positive = y > 0
    ylogy = xp.where(positive, y * xp.log(xp.where(positive, y, 1.0)), 0.0)  # (m, n_out)
    terms = ylogy - y * z - y + a  # (m, n_out)
    return xp.sum(terms if w is None else terms * w) / _rows(y, m)


def _poisson_value_and_delta(z: Array, a: Array, y: Array, xp: Namespace, m: int | None = None,
                             w: Array | None = None) -> tuple[Array, Array]:
    # d/dz (exp(z) - y z) = a - y: dZ itself
    return _poisson_value(z, a, y, xp, m, w), _weighted_delta(a, y, w, _rows(y, m))


def _mae_value(z: Array, a: Array, y: Array, xp: Namespace, m: int | None = None,
               w: Array | None = None) -> Array:
    err = xp.abs(a - y)  # (m, n_out)
    return xp.sum(err if w is None else err * w) / _rows(y, m)


def _mae_value_and_delta(z: Array, a: Array, y: Array, xp: Namespace, m: int | None = None,
                         w: Array | None = None) -> tuple[Array, Array]:
    diff, rows = a - y, _rows(y, m)  # (m, n_out)
    err, dA = xp.abs(diff), xp.sign(diff)  # the subgradient 0 where a == y
    if w is not None:
        err, dA = err * w, dA * w
    return xp.sum(err) / rows, dA / rows


def _huber_value(z: Array, a: Array, y: Array, xp: Namespace, m: int | None = None, w: Array | None = None,
                 *, delta: float = 1.0) -> Array:
    err = xp.abs(a - y)  # (m, n_out)
    # Keras' Huber: 0.5 err^2 inside delta (the mse's terms), delta err - 0.5 delta^2 outside (mae's, scaled)
    terms = xp.where(err <= delta, 0.5 * err * err, delta * err - 0.5 * delta * delta)
    return xp.sum(terms if w is None else terms * w) / _rows(y, m)


def _huber_value_and_delta(z: Array, a: Array, y: Array, xp: Namespace, m: int | None = None,
                           w: Array | None = None, *, delta: float = 1.0) -> tuple[Array, Array]:
    dA = xp.clip(a - y, -delta, delta)  # (m, n_out): the error inside delta, delta * its sign outside
    if w is not None:
        dA = dA * w
    return _huber_value(z, a, y, xp, m, w, delta=delta), dA / _rows(y, m)


def _argmax_correct(a: Array, y: Array, xp: Namespace, w: Array | None = None) -> Array:
    right = xp.astype(xp.argmax(a, axis=1) == xp.argmax(y, axis=1), a.dtype)  # (m,)
    return xp.sum(right if w is None else right * w[:, 0])


def _threshold_correct(a: Array, y: Array, xp: Namespace, w: Array | None = None) -> Array:
    # each output is its own yes/no question; a sample counts by the share it gets right
    right = xp.astype((a > 0.5) == (y > 0.5), a.dtype)  # (m, n_out)
    return xp.sum(right if w is None else right * w) / y.shape[1]


def huber(delta: float = 1.0) -> Loss:
    """Keras' Huber loss: ``0.5 e^2`` where the error ``|e| <= delta``, ``delta |e| - 0.5 delta^2`` beyond,
    summed over the outputs and averaged over the samples (Keras averages over the outputs too).

    Inside ``delta`` it is ``mse``, outside ``delta`` times ``mae`` less a constant: a regression loss that
    large errors (outliers) pull on linearly. ``Network(loss="huber")`` is ``huber(1.0)``.

    Parameters
    ----------
    delta : float
        Where the loss turns from quadratic to linear: a positive, finite number.

    Returns
    -------
    Loss
        The same object for the same ``delta`` (a compiled program is kept for it), saved in model files.

    Examples
    --------
    >>> net = nn_xp.Network([3, 16, 1], loss=nn_xp.losses.huber(delta=2.0))  # doctest: +SKIP
    """
    if isinstance(delta, bool) or not isinstance(delta, Real) or not 0 < delta < math.inf:
        raise ValueError(f"huber's delta must be a positive, finite number, got {delta!r}")
    return _huber(float(delta))


@functools.cache  # one Loss per delta: equal configurations are the same object, as the built-ins are
def _huber(delta: float) -> Loss:
    return Loss("huber", functools.partial(_huber_value_and_delta, delta=delta),
                functools.partial(_huber_value, delta=delta), None, config=(("delta", delta),))


LOSSES: dict[str, Loss] = {
    loss.name: loss
    for loss in (
        Loss("mse", _mse_value_and_delta, _mse_value, None),
        Loss("binary_cross_entropy", _bce_value_and_delta, _bce_value, "sigmoid", _threshold_correct),
        Loss("cross_entropy", _ce_value_and_delta, _ce_value, "softmax", _argmax_correct),
        Loss("poisson", _poisson_value_and_delta, _poisson_value, "exp"),
        Loss("mae", _mae_value_and_delta, _mae_value, None),
        huber(),
    )
}
#: the built-in losses made with parameters (their ``config``)
_FACTORIES: dict[str, Callable[..., Loss]] = {"huber": huber}


def get_loss(name: str | Loss, config: dict[str, Any] | None = None) -> Loss:
    """Look up a loss by name, made with ``config`` (``{"delta": 2.0}`` for ``huber``), or pass a
    :class:`Loss` through."""
    if isinstance(name, Loss):
        return name
    if not isinstance(name, str) or name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; valid names: {', '.join(LOSSES)}")
    if not config:
        return LOSSES[name]
    factory = _FACTORIES.get(name)
    if factory is None:
        raise ValueError(f"loss {name!r} takes no parameters, got {config!r}")
    try:
        return factory(**config)
    except TypeError:
        raise ValueError(f"loss {name!r} takes the parameters {dict(LOSSES[name].config)}, "
                         f"got {config!r}") from None


def is_builtin(loss: Loss) -> bool:
    """Whether ``loss`` is one of nn_xp's own, as :func:`get_loss` rebuilds it from its name and config
    (what a model file can name)."""
    try:
        return get_loss(loss.name, dict(loss.config)) is loss
    except ValueError:
        return False
