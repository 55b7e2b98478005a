"""scikit-learn's per-epoch behaviour as nn_xp callbacks: its stopping rule, its verbose lines, invscaling.

Everything here goes through :class:`nn_xp.Callback`'s public hooks, so the loop
that runs nn_xp's own ``fit`` runs scikit-learn's epochs unchanged.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from .callbacks import Callback, EarlyStopping, StopTraining

__all__ = ["InvScaling", "ScikitEpochs"]


class InvScaling(Callback):
    """scikit-learn's ``learning_rate='invscaling'``: after each epoch ``lr = lr_init / (t + 1) ** power_t``,
    ``t`` the number of samples seen."""

    def __init__(self, initial: float, power_t: float, t: int, n_samples: int) -> None:
        self.initial, self.power_t, self.t, self.n_samples = initial, power_t, t, n_samples

    def on_train_begin(self, net: Any) -> None:
        self.optimizer = net.optimizer

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        self.t += self.n_samples
        self.optimizer.learning_rate = self.initial / (self.t + 1) ** self.power_t


class ScikitEpochs(EarlyStopping):
    """scikit-learn's end of an epoch on an :class:`nn_xp.EarlyStopping`: record, print, stop.

    Each epoch records the training loss (``logs["loss"] / scale``) and, with a
    ``score`` (early stopping), the validation score of the current weights;
    ``verbose`` prints scikit-learn's ``Iteration i, loss = ...`` and
    ``Validation score: ...`` lines to stdout. An epoch counts as no improvement
    when its value is worse than the best so far less ``min_delta`` (tol), as in
    scikit-learn (a NaN counts as an improvement there, and here), and the best
    value (and, with ``restore_best_weights``, its weights) follows every gain,
    however small. After ``patience`` epochs without improvement in a row
    training stops, or, with ``adaptive`` (``learning_rate='adaptive'``), the
    learning rate is divided by 5 instead, until it is at most 1e-6. ``best`` and
    ``wait`` continue a previous call (warm start, ``partial_fit``).
    """

    def __init__(self, monitor: str, patience: int, min_delta: float, restore_best_weights: bool,
                 adaptive: bool = False, *, score: Callable[[], float] | None = None, scale: float = 1.0,
                 verbose: bool = False, best: float | None = None, wait: int = 0) -> None:
        super().__init__(monitor, patience, min_delta, restore_best_weights,
                         mode="max" if score is not None else "min")
        self.adaptive, self.score, self.scale, self.verbose = adaptive, score, scale, verbose
        self.start = best, wait
        self.losses: list[float] = []
        self.scores: list[float] = []

    def on_train_begin(self, net: Any) -> None:
        super().on_train_begin(net)
        best, self.wait = self.start
        if best is not None and math.isfinite(best):
            self.best = best  # a warm start's best so far, whose weights the network starts from
            if self.restore_best_weights:
                self.best_weights = net.snapshot()

    def _improved(self, value: float) -> bool:
        if self.maximize:
            return not value < self.best + self.min_delta
        return not value > self.best - self.min_delta

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        loss = logs["loss"] / self.scale
        self.losses.append(loss)
        if self.verbose:
            print(f"Iteration {len(self.losses)}, loss = {loss:.8f}", flush=True)
        if self.score is None:
            value = loss if self.monitor == "loss" else logs[self.monitor]
        else:
            value = self.score()
            self.scores.append(value)
            if self.verbose:
                print(f"Validation score: {value:f}", flush=True)
        self.wait = 0 if self._improved(value) else self.wait + 1
        if (value > self.best) if self.maximize else (value < self.best):
            self.best, self.best_epoch = value, epoch
            if self.restore_best_weights:
                self.keep_best_weights()
        if self.wait >= self.patience:
            self._no_improvement(epoch)

    def _no_improvement(self, epoch: int) -> None:
        what = "Validation score" if self.score is not None else "Training loss"
        message = (f"{what} did not improve more than tol={self.min_delta:f} for {self.patience - 1} "
                   "consecutive epochs.")
        opt = self.net.optimizer
        if self.adaptive and opt.learning_rate > 1e-6:
            opt.learning_rate /= 5.0
            self.wait = 0
            if self.verbose:
                print(f"{message} Setting learning rate to {opt.learning_rate:f}", flush=True)
            return
        if self.verbose:
            print(message + (" Learning rate too small. Stopping." if self.adaptive else " Stopping."),
                  flush=True)
        self.stopped_epoch = epoch
        raise StopTraining(message)
