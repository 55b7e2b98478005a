"""Targets that look like a classification mistake: an error or a warning that names the fix.

Checked once where targets enter (``fit``, ``loss``, ``score``), never per batch:

- ``binary_cross_entropy`` takes targets in [0, 1]: 0/1 labels, or soft labels
  (probabilities, as Keras takes them). Anything outside is an error: class ids
  0..K-1 want ``cross_entropy`` with K outputs, and -1/+1 labels want 0/1.
- A regression loss with 1-D targets for a network of several outputs is an error
  (it would not know which output each value is for); class labels want ``cross_entropy``.
- One-hot rows trained with ``mse`` *left at its default* get a warning suggesting
  ``cross_entropy``. Choosing ``loss="mse"`` explicitly silences it: regression on 0/1
  targets is legitimate, so one output, or integer targets, never warn.
"""
from __future__ import annotations

import warnings
from typing import Any

from ._typing import Array
from .backends import to_numpy

__all__ = ["check_targets", "one_column_for_several_outputs"]


def one_column_for_several_outputs(name: str, loss: str, n_out: int) -> ValueError:
    """The error for 1-D targets with a regression loss and ``n_out > 1`` outputs."""
    return ValueError(f"{name} is 1-D (one value per sample), but the network has {n_out} outputs and "
                      f"loss={loss!r}: for class labels use loss='cross_entropy' (class ids 0..{n_out - 1} "
                      f"are taken as they are); for regression give {name} one column per output, shape "
                      f"(n_samples, {n_out})")


def check_targets(Y: Array, name: str, loss: str, default_loss: bool, xp: Any) -> None:
    """Raise or warn for targets ``Y`` (a model array) that do not suit ``loss`` (see the module)."""
    if loss == "binary_cross_entropy":
        low, high = to_numpy(xp.stack([xp.min(Y), xp.max(Y)])).tolist()  # one read, at fit's entry
        if low < 0 or high > 1:
            fix = "; for class ids 0..K-1 use loss='cross_entropy' with K output units" if high > 1 else ""
            fix += "; map -1/+1 labels to 0/1" if low == -1 else ""
            raise ValueError(f"{name} must hold values in [0, 1] for loss='binary_cross_entropy' (0/1 "
                             f"labels, or probabilities), got values from {low:g} to {high:g}{fix}")
    elif loss == "mse" and default_loss and Y.shape[1] > 1:
        one_hot = xp.all((Y == 0) | (Y == 1)) & xp.all(xp.sum(Y, axis=1) == 1)
        if bool(one_hot):
            warnings.warn(f"{name} holds one-hot rows (classes), which the network fits with loss='mse', "
                          "the default: for classification Network(..., loss='cross_entropy') (a softmax "
                          "output, accuracy in the history) usually learns better; pass loss='mse' to "
                          "keep it without this warning", UserWarning, stacklevel=4)
