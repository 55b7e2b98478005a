"""scikit-learn's ``solver="lbfgs"``: SciPy's L-BFGS-B over a network's parameters as one host vector.

SciPy's optimizer runs on the host; the loss and its gradient are nn_xp's, on the
network's backend and device. Each evaluation moves the parameter vector to the
device once and brings the gradient (with the loss at its end) back once, so a
GPU model costs two transfers of its parameters per evaluation, never one per
layer. The objective is scikit-learn's: the network's loss with its ``l2`` penalty
(``alpha``) on the weights, not the biases (:mod:`nn_xp.penalties`), divided by the
number of samples, or with sample weights ``w`` by their sum:
``(sum_i w_i l_i + 0.5 * alpha * ||W||^2) / sum_i w_i``.

NumPy appears because the host is the point: SciPy's vectors.
"""
from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import scipy.optimize

from ._typing import Array
from .backends import to_numpy
from .engine import Snapshot

__all__ = ["NONFINITE", "minimize"]

#: scikit-learn's error when a solver ends on non-finite weights
NONFINITE = ("Solver produced non-finite parameter weights. The input data may contain large values and need "
             "to be preprocessed.")


class Objective:
    """``f(x) -> (loss, gradient)`` for SciPy, ``x`` the parameters ``[W0, b0, W1, b1, ...]`` raveled end to
    end; ``last`` is the loss of the latest evaluation (the iterate, when SciPy's callback runs)."""

    def __init__(self, net: Any, X: Array, Y: Array, w: Array | None = None,
                 total: float | None = None) -> None:
        self.net, self.X, self.Y, self.w = net, X, Y, w
        # scikit-learn's denominator: the samples, or the sum of their weights (None: the rows, as without)
        self.m = None if w is None else total
        self.shapes = [tuple(p.shape) for p in net.parameters]
        self.ends = np.cumsum([math.prod(s) for s in self.shapes]).tolist()
        self.last = math.nan

    def start(self) -> np.ndarray:
        """The current parameters as one float64 host vector (one transfer)."""
        xp = self.net.xp
        with self.net.backend.context():
            flat = xp.concat([xp.reshape(p, (-1,)) for p in self.net.parameters])
        return to_numpy(flat).astype(np.float64)

    def set(self, x: np.ndarray) -> None:
        """Write the host vector ``x`` into the network's parameters (one transfer, then device copies)."""
        net, xp = self.net, self.net.xp
        with net.backend.context():
            flat = xp.asarray(x.astype(net.dtype_name), device=net.device)  # (n_params,)
            pieces = [xp.reshape(flat[lo:hi], shape)
                      for lo, hi, shape in zip([0, *self.ends[:-1]], self.ends, self.shapes)]
            net.restore(Snapshot(pieces, xp))

    def __call__(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        self.set(x)
        net, xp = self.net, self.net.xp
        with net.backend.context():
            values = net.evaluate(self.X, check_input=False)  # fit made X and Y the model's arrays
            if self.w is None:
                loss, grads = net.value_and_gradient(values, self.Y, check_input=False)  # with the penalty
            else:
                loss, grads = net.value_and_gradient(values, self.Y, check_input=False, m=self.m, w=self.w)
            out = to_numpy(xp.concat([xp.reshape(g, (-1,)) for g in grads] + [xp.reshape(loss, (1,))]))
        self.last = float(out[-1])
        return self.last, out[:-1].astype(np.float64)

    def penalty(self, x: np.ndarray) -> float:
        """The network's penalty at the host vector ``x`` (the weights' pieces of it)."""
        p = self.net.penalty
        if p is None:
            return 0.0
        starts = [0, *self.ends[:-1]]
        weights = [x[starts[i]:self.ends[i]] for i in range(0, len(self.ends), 2)]
        total = sum(0.5 * p.l2 * float(W @ W) + p.l1 * float(np.sum(np.abs(W))) for W in weights)
        return total / (self.X.shape[0] if self.m is None else self.m)


def minimize(net: Any, X: Array, Y: Array, *, max_iter: int, max_fun: int, tol: float, scale: float = 1.0,
             w: Array | None = None, total: float | None = None) -> tuple[int, float, list[float]]:
    """Fit ``net`` to model arrays ``(X, Y)`` by L-BFGS-B, as scikit-learn's ``_fit_lbfgs`` does.

    The objective is the network's loss and penalty (``alpha`` is ``net.l2``); with sample weights ``w``
    (a model array ``(n, 1)``), the weighted loss and the penalty divided by ``total``, their sum.

    ``max_iter``, ``max_fun`` and ``tol`` are SciPy's ``maxiter``, ``maxfun`` and
    ``gtol``. The network ends at the solution; where that is not finite, it is
    set back to where it started and scikit-learn's ``ValueError`` is raised
    (an interrupted run leaves it at the latest iterate).
    An unconverged run warns as scikit-learn does (``ConvergenceWarning``).
    ``scale`` divides the data loss in what is reported (scikit-learn averages
    squared error over the outputs while following the gradient of the sum).

    Returns
    -------
    n_iter, loss, losses : int, float, list of float
        Iterations (at most ``max_iter``), the final loss and the loss after each iteration.
    """
    objective = Objective(net, X, Y, w, total)
    x0 = objective.start()

    def report(f: float, x: np.ndarray) -> float:
        if scale == 1.0:
            return f
        penalty = objective.penalty(x)
        return (f - penalty) / scale + penalty

    losses: list[float] = []
    accepted = [x0]  # the latest iterate: where an interrupted run leaves the network

    def iteration(xk: np.ndarray) -> None:
        losses.append(report(objective.last, xk))
        accepted[0] = xk.copy()

    with warnings.catch_warnings():  # overflow on the way to a non-finite loss: the end checks
        warnings.filterwarnings("ignore", message=".*encountered in", category=RuntimeWarning)
        try:
            result = scipy.optimize.minimize(objective, x0, method="L-BFGS-B", jac=True, callback=iteration,
                                             options={"maxiter": max_iter, "maxfun": max_fun, "gtol": tol})
        except BaseException:  # Ctrl-C, or an error in an evaluation: never a line search's trial point
            objective.set(accepted[0])
            raise
    if not np.all(np.isfinite(result.x)):
        objective.set(x0)
        raise ValueError(NONFINITE)
    objective.set(result.x)
    n_iter = min(int(result.nit), max_iter)
    if result.status != 0:
        _warn_unconverged(n_iter, result.status, result.message, max_iter)
    return n_iter, report(float(result.fun), result.x), losses


def _warn_unconverged(n_iter: int, status: int, message: str, max_iter: int) -> None:
    """scikit-learn's ConvergenceWarning for lbfgs, word for word."""
    from sklearn.exceptions import ConvergenceWarning

    text = f"lbfgs failed to converge after {n_iter} iteration(s) (status={status}):\n{message}\n"
    if n_iter == max_iter:
        text += f"\nIncrease the number of iterations to improve the convergence (max_iter={max_iter})."
    text += ("\nYou might also want to scale the data as shown in:\n"
             "    https://scikit-learn.org/stable/modules/preprocessing.html")
    # at the user's call: estimator.fit > _fit > _fit_lbfgs > minimize > here
    warnings.warn(text, ConvergenceWarning, stacklevel=6)
