"""``fit``'s sample and class weights: checked, combined, on the device once per fit as an ``(m, 1)`` column.

As in Keras, a weight multiplies its row's loss and gradient, and a batch's loss is
``sum_i w_i l_i / batch_rows`` (Keras' ``"sum_over_batch_size"``: the rows, not the
weights' sum, so integer weights in full batch train as repeated rows when the rows
given number the weights' sum); the metrics are weighted means ``sum_i w_i v_i / sum_i
w_i`` (:mod:`nn_xp.metrics`), so EarlyStopping sees weighted values. Weights are
``(n_samples,)``, finite, non-negative and not all zero (nor all zero on the training or
the held-out rows). Each batch gathers its rows' weights with ``X`` and ``Y`` (the
shuffle takes them along); a data-parallel rank uses its shard's.

``weighted_mean=True`` makes the loss scikit-learn's instead: each batch's ``sum_i w_i l_i``
(and its gradient, and an ``l1``/``l2`` penalty) divided by the batch's sum of weights, a
device scalar (data-parallel: the whole global batch's, which every rank sums from the
weights it holds); integer weights then train as repeated rows in full batch whatever
the rows given, and each batch's loss is a weighted mean (``val_loss`` too). The epoch's
loss in mini-batches is, as scikit-learn's ``loss_curve_``, the batches' losses averaged
by their rows (not by their weights' sums): the full-batch value only when every batch
weighs alike.

``class_weight`` (a dict ``{class: weight}``, classes missing from it weighing 1, or
``"balanced"``: scikit-learn's ``n_samples / (n_classes * bincount(y))`` over the classes
present in the training rows) becomes each training row's weight by its class: the
argmax of a ``cross_entropy`` row, the 0/1 target of a one-output
``binary_cross_entropy``. With ``sample_weight`` too, the two multiply (as tf.keras 2
and scikit-learn do; Keras 3 refuses the pair). Held-out rows are weighted by
``sample_weight`` alone (a ``validation_split`` takes its share of it, or the third
item of ``validation_data``), never by class.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from numbers import Integral, Real
from typing import Any

from . import backends
from ._host import to_host_array
from ._typing import Array
from ._validation import as_model_array
from .metrics import Scoring, resolve_metrics, takes_weights

__all__ = ["check_weights", "class_weights", "make_scoring", "sample_weights"]


def sample_weights(net: Any, sample_weight: Any, n: int, name: str = "sample_weight") -> Array | None:
    """``sample_weight`` (``(n,)``, host or the model's backend) as an ``(n, 1)`` model array, finite; None
    stays None. Signs and zeros are checked by :func:`check_weights`, once the data are split."""
    if sample_weight is None:
        return None
    w = to_host_array(sample_weight, name) if backends.is_host_array(sample_weight) else sample_weight
    shape = tuple(getattr(w, "shape", ()))
    if len(shape) not in (1, 2) or (len(shape) == 2 and shape[1] != 1):
        raise ValueError(f"{name} must have shape (n_samples,), one weight per sample, got shape {shape}")
    if shape[0] != n:
        raise ValueError(f"{name} has {shape[0]} weights for {n} samples")
    W, _ = as_model_array(w, name, net.backend, net.dtype_name, 1, allow_1d=True)  # NaN, inf rejected
    return W


def check_weights(xp: Any, *named: tuple[Array | None, str]) -> None:
    """Each ``(W, name)`` non-negative and not all zero (one host read for them all)."""
    named = tuple((W, name) for W, name in named if W is not None)
    if not named:
        return
    flags = backends.to_numpy(xp.stack([f for W, _ in named for f in (xp.any(W < 0), xp.all(W == 0))]))
    for i, (_, name) in enumerate(named):
        if flags[2 * i]:
            raise ValueError(f"{name} must be non-negative, got a negative weight")
        if flags[2 * i + 1]:
            raise ValueError(f"{name} is all zero: no sample would count")


def _class_ids(net: Any, Y: Array) -> tuple[Array, int]:
    """Each row's class and the number of classes, for ``class_weight``."""
    loss, n_out, xp = net.loss_fn.name, Y.shape[1], net.xp
    if loss == "cross_entropy":
        return xp.argmax(Y, axis=1), n_out  # (m,): one-hot rows (class ids became one-hot rows)
    if loss == "binary_cross_entropy" and n_out == 1:
        if bool(xp.any((Y != 0) & (Y != 1))):
            raise ValueError("class_weight with binary_cross_entropy needs targets 0 or 1 (the two classes)")
        index = xp.__array_namespace_info__().default_dtypes(device=net.device)["indexing"]
        return xp.astype(Y[:, 0], index), 2
    if loss == "binary_cross_entropy":
        raise ValueError(f"class_weight with binary_cross_entropy needs one output (classes 0 and 1); the "
                         f"network has {n_out} outputs, each its own yes/no question: pass sample_weight")
    raise ValueError(f"class_weight needs a classification loss (cross_entropy, or binary_cross_entropy with "
                     f"one output); loss {loss!r} is not one: pass sample_weight")


def _table(class_weight: Any, ids: Array, n_classes: int, net: Any) -> list[float]:
    """Each class's weight, as host floats."""
    if isinstance(class_weight, str) and class_weight == "balanced":
        xp = net.xp
        classes = xp.reshape(xp.arange(n_classes, device=net.device), (1, n_classes))
        hits = xp.astype(xp.reshape(ids, (-1, 1)) == xp.astype(classes, ids.dtype), ids.dtype)  # (m, k)
        counts = backends.to_numpy(xp.sum(hits, axis=0)).tolist()  # (n_classes,): bincount
        present = sum(1 for c in counts if c)
        n = ids.shape[0]
        return [n / (present * c) if c else 0.0 for c in counts]  # scikit-learn's compute_class_weight
    if not isinstance(class_weight, Mapping):
        raise TypeError(f"class_weight must be a dict {{class: weight}} or 'balanced', got {class_weight!r}")
    table = [1.0] * n_classes
    for key, value in class_weight.items():
        if isinstance(key, bool) or not isinstance(key, Integral) or not 0 <= key < n_classes:
            raise ValueError(f"class_weight has a key {key!r}, and the classes are 0..{n_classes - 1}")
        if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value) or value < 0:
            raise ValueError(f"class_weight[{key!r}] must be a finite non-negative number, got {value!r}")
        table[int(key)] = float(value)
    return table


def class_weights(net: Any, class_weight: Any, Y: Array) -> Array:
    """Each row's weight by its class, ``(m, 1)`` in the model's dtype (see the module's text)."""
    ids, n_classes = _class_ids(net, Y)
    table = net.backend.asarray(_table(class_weight, ids, n_classes, net), dtype=net.dtype)  # (n_classes,)
    return net.xp.reshape(net.xp.take(table, ids, axis=0), (-1, 1))


def make_scoring(net: Any, Y: Array, W: Array | None, Wv: Array | None, class_weight: Any, metrics: Any,
            shared: bool, weighted_mean: Any = False) -> Scoring | None:
    """What this fit measures (see :mod:`nn_xp.metrics`), or None when it is plain ``fit``'s (no weights,
    ``metrics=None``): the training rows' weights (``W`` times the class weights), checked;
    ``weighted_mean``: each batch's loss a mean by its weights' sum (see :mod:`nn_xp.metrics`)."""
    if not isinstance(weighted_mean, bool):
        raise TypeError(f"weighted_mean must be True or False, got {weighted_mean!r}")
    if weighted_mean and W is None and class_weight is None:
        raise ValueError("weighted_mean=True divides each batch's loss by its sum of sample weights, and "
                         "this fit has none: pass sample_weight (or class_weight), or leave weighted_mean "
                         "False")
    name = "sample_weight"
    if class_weight is not None:
        by_class = class_weights(net, class_weight, Y)
        name = "class_weight" if W is None else "sample_weight times class_weight"
        W = by_class if W is None else W * by_class
    check_weights(net.xp, (W, f"{name} (of the training rows)"), (Wv, "sample_weight of the validation rows"))
    if W is None and Wv is None and metrics is None:
        return None
    loss = net.loss_fn
    resolved = resolve_metrics(metrics, loss)
    if W is not None or Wv is not None:
        needs = [("value_and_delta", loss.value_and_delta), ("value", loss.value)]
        needs += [("correct", loss.correct)] if any(m.name == "accuracy" for m in resolved) else []
        lacking = [what for what, fn in needs if not takes_weights(fn)]
        if lacking:
            raise TypeError(f"sample_weight needs the {' and '.join(lacking)} of loss {loss.name!r} to take "
                            "the weights w (see nn_xp.losses.Loss)")
    result = Scoring(resolved, W, Wv, weighted_mean)
    if shared and result.unsummable():
        raise ValueError(f"fit(comm=...) sums the ranks' parts of each metric, and {result.unsummable()} do "
                         "not add up that way (rmse, r2 and callables are not means over the rows); use "
                         "'mse' (rmse is its square root), or net.score (r2) after the fit")
    return result
