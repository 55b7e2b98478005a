"""L1 and L2 penalties on a network's weights (never its biases), with scikit-learn's ``alpha`` semantics.

``Network(l2=alpha)`` adds what scikit-learn's MLP adds for ``alpha``: ``0.5 * l2 * sum(W**2) / m`` to each
batch's loss and ``l2 * W / m`` to each ``dW``, where ``m`` is the denominator of the batch's mean loss (its
rows; with ``fit(weighted_mean=True)``, its sum of sample weights, as scikit-learn divides ``alpha``).
``l1`` adds ``l1 * sum(|W|) / m`` and ``l1 * sign(W) / m`` (the subgradient 0 at ``W == 0``). The
reported training loss includes the penalty (scikit-learn's ``loss_curve_`` does); validation losses and
:meth:`nn_xp.Network.loss` are the data loss alone. Unlike an optimizer's decoupled ``weight_decay``, the
penalty is part of the gradient, so Adam scales it like the rest.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Real
from typing import Any

from ._typing import Array, Namespace

__all__ = ["Penalty", "penalty"]


@dataclass(frozen=True)
class Penalty:
    """The coefficients ``l1`` and ``l2`` (not both 0: a network without a penalty holds None)."""

    l1: float
    l2: float

    def value(self, params: list[Array], m: Any, xp: Namespace) -> Array:
        """The penalty at the parameters ``[W0, b0, W1, b1, ...]`` (a device scalar): its weights alone."""
        terms = []
        for W in params[0::2]:  # (n_out, n_in) each
            if self.l2:
                terms.append(xp.sum(W * W) * (0.5 * self.l2))
            if self.l1:
                terms.append(xp.sum(xp.abs(W)) * self.l1)
        total = terms[0]
        for term in terms[1:]:
            total = total + term
        return total / m

    def add(self, loss: Array, grads: list[Array], params: list[Array], m: Any, xp: Namespace, *,
            inplace: bool = False) -> Array:
        """``loss`` plus the penalty, and its gradient added to every ``dW`` in ``grads`` (``db`` untouched):
        into the gradient arrays with ``inplace`` (views of a flat buffer), else replacing the list's
        items."""
        for i in range(0, len(grads), 2):
            W = params[i]
            dW = W * (self.l2 / m) if self.l2 else None  # (n_out, n_in)
            if self.l1:
                sign = xp.sign(W) * (self.l1 / m)
                dW = sign if dW is None else dW + sign
            if inplace:
                grads[i] += dW
            else:
                grads[i] = grads[i] + dW
        return loss + self.value(params, m, xp)


def penalty(l1: Any = 0.0, l2: Any = 0.0) -> Penalty | None:
    """The checked :class:`Penalty` for ``Network(l1=, l2=)``, or None when both are 0 (fit then runs the
    code it runs without one)."""
    for name, value in (("l1", l1), ("l2", l2)):
        if isinstance(value, bool) or not isinstance(value, Real) or not 0 <= value < math.inf:
            raise ValueError(f"{name} must be a non-negative, finite number, got {value!r}")
    return Penalty(float(l1), float(l2)) if l1 or l2 else None
