"""What ``fit`` measures besides the loss (``metrics=``, sample weights): on the device, read once per epoch.

A metric is a sum over the rows, accumulated batch by batch on the device and
finished once per epoch (:class:`Metric`): ``update`` gives a batch's sum
``sum_i w_i v_i`` (``w_i = 1`` without sample weights), ``finish`` turns the
epoch's total into its value. So every metric is exact over mini-batches: the
weighted mean of what the rows scored while the epoch trained on them (as the
loss is), whatever the batches.

- ``"accuracy"``: the loss's own rule (argmax for ``cross_entropy``, ``p > 0.5``
  per output for ``binary_cross_entropy``), ``sum_i w_i right_i / sum_i w_i``.
- ``"mae"``, ``"mse"``: the weighted mean over the rows of the mean over the
  outputs of ``|a - y|`` and ``(a - y)^2`` (scikit-learn's
  ``mean_absolute_error`` / ``mean_squared_error`` with ``sample_weight``).
- ``"rmse"``: the square root of the epoch's ``mse`` (Keras' ``RootMeanSquaredError``).
- ``"r2"``: scikit-learn's ``r2_score`` (with ``sample_weight``, outputs averaged):
  per output ``1 - SS_res / SS_tot``, ``SS_tot`` the spread of the targets about
  their weighted mean, computed once per fit (it does not depend on the
  weights), ``SS_res`` summed over the epoch's batches; an output whose targets
  are constant scores 1 when fit exactly, else 0.
- a callable ``f(a, y, xp) -> 0-d device array``: the batch's value (a mean over
  its rows, unweighted), averaged over the epoch's batches weighted by their
  rows (their total sample weight where there are weights). It is traced into
  the compiled engine's program: array operations only, no host reads.

The loss stays Keras' ``"sum_over_batch_size"``: ``sum_i w_i l_i / m``, ``m`` the
rows, not the weights' sum (see :mod:`nn_xp.losses`); the metrics divide by the
weights' sum, as Keras' weighted metrics do. ``fit(weighted_mean=True)`` divides the
loss by the weights' sum too, each batch's by its own (scikit-learn's MLPs).
"""
from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ._typing import Array, Namespace

__all__ = ["METRICS", "Metric", "Scoring", "higher_is_better", "resolve_metrics"]


@dataclass(frozen=True)
class Metric:
    """One metric as device sums: ``update(a, y, w, xp)`` a batch's, ``finish(total, weight, spread, xp)``
    the epoch's value from their total, the weights' sum and (``r2``) the targets' spread per output.

    ``source`` identifies it in a compiled program's key (a name, or the user's callable); ``summable``:
    its value is linear in the sums, so data-parallel ranks' parts add up to it; ``per_output``: its
    sums have one entry per output (``(n_out,)``) rather than being 0-d.
    """

    name: str
    update: Callable[[Array, Array, Array | None, Namespace], Array]
    finish: Callable[[Array, Any, Array | None, Namespace], Array]
    source: Any
    summable: bool = True
    per_output: bool = False


def _mean(total: Array, weight: Any, spread: Array | None, xp: Namespace) -> Array:
    return total / weight


def _root_mean(total: Array, weight: Any, spread: Array | None, xp: Namespace) -> Array:
    return xp.sqrt(total / weight)


def _r2(total: Array, weight: Any, spread: Array, xp: Namespace) -> Array:
    constant = spread == 0  # (n_out,): scikit-learn's force_finite convention, never 0 / 0
    exact = xp.where(total == 0, xp.ones_like(total), xp.zeros_like(total))
    score = xp.where(constant, exact, 1.0 - total / xp.where(constant, xp.ones_like(spread), spread))
    return xp.mean(score)


def _absolute_errors(a: Array, y: Array, w: Array | None, xp: Namespace) -> Array:
    err = xp.abs(a - y)  # (m, n_out)
    return xp.sum(err if w is None else err * w) / y.shape[1]


def _squared_errors(a: Array, y: Array, w: Array | None, xp: Namespace) -> Array:
    diff = a - y  # (m, n_out)
    sq = diff * diff
    return xp.sum(sq if w is None else sq * w) / y.shape[1]


def _residuals(a: Array, y: Array, w: Array | None, xp: Namespace) -> Array:
    diff = a - y  # (m, n_out)
    sq = diff * diff
    return xp.sum(sq if w is None else sq * w, axis=0)  # (n_out,)


#: the metrics named in ``fit(metrics=...)`` besides ``"accuracy"`` (which follows the loss)
METRICS: dict[str, Metric] = {
    metric.name: metric
    for metric in (
        Metric("mae", _absolute_errors, _mean, "mae"),
        Metric("mse", _squared_errors, _mean, "mse"),
        Metric("rmse", _squared_errors, _root_mean, "rmse", summable=False),
        Metric("r2", _residuals, _r2, "r2", summable=False, per_output=True),
    )
}

#: the metrics that are better higher (EarlyStopping's ``mode="auto"`` maximises them)
_HIGHER = ("accuracy", "acc", "r2")


def higher_is_better(key: str) -> bool:
    """Whether a history key (``"val_accuracy"``, ``"r2"``, ...) names a metric to maximise."""
    name = key[4:] if key.startswith("val_") else key
    return name in _HIGHER or "acc" in name


def _accuracy(loss: Any) -> Metric:
    correct = loss.correct

    def update(a: Array, y: Array, w: Array | None, xp: Namespace) -> Array:
        return correct(a, y, xp) if w is None else correct(a, y, xp, w)

    return Metric("accuracy", update, _mean, "accuracy")


def _user_metric(fn: Callable) -> Metric:
    name = getattr(fn, "__name__", None) or type(fn).__name__

    def update(a: Array, y: Array, w: Array | None, xp: Namespace) -> Array:
        value = fn(a, y, xp)
        if getattr(value, "shape", None) != ():
            raise TypeError(f"metric {name!r} must return a 0-d array of the model's backend (the batch's "
                            f"value), got {type(value).__name__} of shape {getattr(value, 'shape', None)}")
        return value * (y.shape[0] if w is None else xp.sum(w))  # the batch's value times its weight

    return Metric(name, update, _mean, fn, summable=False)


def resolve_metrics(metrics: Any, loss: Any) -> list[Metric]:
    """``fit``'s ``metrics``: None (``accuracy`` for a classification loss, else nothing), a name, a
    callable, or a sequence of them; checked, with errors naming the argument."""
    if metrics is None:
        return [_accuracy(loss)] if loss.correct is not None else []
    if isinstance(metrics, str) or callable(metrics):
        metrics = [metrics]
    try:
        items = list(metrics)
    except TypeError:
        raise TypeError(f"metrics must be a name, a callable f(a, y, xp) or a list of them, got "
                        f"{metrics!r}") from None
    resolved = [_metric(item, loss) for item in items]
    names = [m.name for m in resolved]
    repeated = sorted({n for n in names if names.count(n) > 1 or n == "loss"})
    if repeated:
        raise ValueError(f"metrics must have distinct names other than 'loss' (a callable is named by its "
                         f"__name__), got {names}")
    return resolved


def _metric(item: Any, loss: Any) -> Metric:
    if isinstance(item, str):
        if item == "accuracy":
            if loss.correct is None:
                raise ValueError(f"metrics: 'accuracy' needs a classification loss (cross_entropy, "
                                 f"binary_cross_entropy), and loss {loss.name!r} is a regression loss; use "
                                 "'mae', 'mse', 'rmse' or 'r2'")
            return _accuracy(loss)
        if item in METRICS:
            return METRICS[item]
        raise ValueError(f"unknown metric {item!r} in metrics; valid names: accuracy, {', '.join(METRICS)}, "
                         "or a callable f(a, y, xp) returning a 0-d device array")
    if callable(item):
        return _user_metric(item)
    raise TypeError(f"metrics must hold names or callables f(a, y, xp), got {item!r}")


def takes_weights(fn: Callable) -> bool:
    """Whether a loss's function (or a ``correct``) takes the sample weights ``w``."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return True  # a builtin we cannot inspect: let the call say
    return "w" in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


class Scoring:
    """One fit's sample weights and metrics (what ``fit`` measures when either is asked for).

    ``weight`` and ``validation_weight`` are ``(rows, 1)`` model arrays or None
    (weights of 1). ``names`` is ``["loss", *metric names]``. The trainers call
    :meth:`prepare` once per fit (or per compiled call) for each data set, then
    :meth:`update` per batch and :meth:`finish` per epoch; :meth:`measure` does
    all three for held-out data.

    ``weighted_mean`` (``fit(weighted_mean=True)``): each batch's loss and gradient are divided by the
    batch's sum of weights (:meth:`denominator`) instead of its rows, scikit-learn's convention, and
    :meth:`measure`'s loss by the held-out weights' sum.
    """

    def __init__(self, metrics: Sequence[Metric], weight: Array | None = None,
                 validation_weight: Array | None = None, weighted_mean: bool = False) -> None:
        self.metrics = list(metrics)
        self.weight, self.validation_weight = weight, validation_weight
        self.weighted_mean = weighted_mean
        self.names = ["loss"] + [m.name for m in self.metrics]
        self.spread = any(m.per_output for m in self.metrics)
        #: what a compiled program is compiled for: the metrics, which data sets carry weights, the mean
        self.key = (tuple(m.source for m in self.metrics), weight is not None, validation_weight is not None,
                    weighted_mean)

    @staticmethod
    def denominator(w: Array, xp: Namespace) -> Array:
        """A batch's weighted-mean denominator, the sum of its weights ``w`` ``(rows, 1)`` (a device
        scalar); infinite where they are all zero, so that such a batch's loss and gradient are 0 (where
        scikit-learn's would divide by zero)."""
        total = xp.sum(w)
        return xp.where(total > 0, total, xp.full_like(total, math.inf))

    def keys(self, validation: bool) -> list[str]:
        """The history's keys: ``names``, then the same with ``val_`` on validation data."""
        return self.names + ([f"val_{k}" for k in self.names] if validation else [])

    def unsummable(self) -> list[str]:
        """The metrics whose ranks' parts would not add up (data-parallel ``fit`` refuses them)."""
        return [m.name for m in self.metrics if not m.summable]

    def prepare(self, Y: Array, W: Array | None, xp: Namespace) -> tuple[Any, Array | None]:
        """What finishing needs of a data set: the weights' sum (its rows without weights) and, for ``r2``,
        the targets' weighted spread about their weighted mean per output ``(n_out,)``."""
        weight = Y.shape[0] if W is None else xp.sum(W)
        if not self.spread:
            return weight, None
        mean = xp.sum(Y if W is None else Y * W, axis=0) / weight  # (n_out,)
        dev = Y - mean  # (m, n_out)
        sq = dev * dev
        return weight, xp.sum(sq if W is None else sq * W, axis=0)  # (n_out,)

    def zeros(self, n_out: int, dtype: Any, device: Any, xp: Namespace) -> list[Array]:
        """Sums of nothing, shaped as :meth:`update` gives them (the compiled engine's loop carry)."""
        return [xp.zeros((n_out,) if m.per_output else (), dtype=dtype, device=device) for m in self.metrics]

    def update(self, a: Array, y: Array, w: Array | None, xp: Namespace) -> list[Array]:
        """A batch's sums, from its outputs ``a`` (read before back-propagation may overwrite them)."""
        return [m.update(a, y, w, xp) for m in self.metrics]

    @staticmethod
    def add(sums: list[Array], more: list[Array]) -> list[Array]:
        return [s + t for s, t in zip(sums, more)]

    def finish(self, sums: list[Array], context: tuple[Any, Array | None], xp: Namespace) -> list[Array]:
        """The metrics' values from an epoch's sums and :meth:`prepare`'s context (device scalars)."""
        weight, spread = context
        return [m.finish(s, weight, spread, xp) for m, s in zip(self.metrics, sums)]

    def measure(self, net: Any, X: Array, Y: Array, W: Array | None, context: tuple[Any, Array | None],
                batch_size: int | None = None) -> list[Array]:
        """``[loss, *metrics]`` of the current weights on model arrays ``(X, Y)`` with weights ``W``, in the
        engine's chunks; the loss is a mean over ``X``'s rows (as :meth:`nn_xp.Network.measure`'s), the
        metrics are finished with ``context`` (a data-parallel rank gives the whole data's)."""
        xp, m, loss_fn = net.xp, X.shape[0], net.loss_fn
        loss = sums = None
        for lo, hi, z, a in net.engine.outputs(net, X, batch_size):
            whole = hi - lo == m
            y = Y if whole else Y[lo:hi, ...]
            w = None if W is None else W if whole else W[lo:hi, ...]
            part = loss_fn.value(z, a, y, xp) if w is None else loss_fn.value(z, a, y, xp, None, w)
            part = part if whole else part * ((hi - lo) / m)  # a mean over the chunk's rows
            loss = part if loss is None else loss + part
            more = self.update(a, y, w, xp)
            sums = more if sums is None else self.add(sums, more)
        if self.weighted_mean:  # sum_i w_i l_i / sum_i w_i, the whole data's sum (a rank's shard: its part)
            loss = loss * (m / context[0])
        return [loss, *self.finish(sums, context, xp)]
