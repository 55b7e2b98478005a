"""Callbacks run once per epoch: plain callables, early stopping, and a way to stop training."""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from ._validation import check_positive

__all__ = ["Callback", "EarlyStopping", "LambdaCallback", "StopTraining"]


class StopTraining(Exception):
    """Raise from a callback (or a plain per-epoch callable) to end ``fit`` after this epoch."""


class Callback:
    """Hooks called by ``fit``; ``logs`` holds the epoch's host floats (``loss``, ``val_loss``, ...).

    ``self.run`` is the fit in progress (:class:`nn_xp.training.Run`), set before
    ``on_train_begin``: ``run.weights_for(key)`` gives device copies of the
    weights an epoch's ``logs[key]`` describes, and ``run.net`` the network.
    """

    run: Any = None

    def set_run(self, run: Any) -> None:
        self.run = run

    def on_train_begin(self, net: Any) -> None:
        pass

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        pass

    def on_train_end(self, net: Any) -> None:
        pass


class LambdaCallback(Callback):
    """Wrap a plain ``f(epoch, logs)`` (the blog's per-epoch hook)."""

    def __init__(self, fn: Callable[[int, dict[str, float]], Any]) -> None:
        if not callable(fn):
            raise TypeError(f"a callback must be callable or an nn_xp.Callback, got {fn!r}")
        self.fn = fn

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        self.fn(epoch, logs)


class EarlyStopping(Callback):
    """Stop when ``monitor`` has not improved by ``min_delta`` for ``patience`` epochs.

    With ``restore_best_weights`` the network ends with the weights of the best
    epoch (kept as device copies, never read back to the host).

    Parameters
    ----------
    monitor : str
        A key of the history, e.g. ``"val_loss"``, ``"loss"``, ``"val_accuracy"``.
    mode : {"auto", "min", "max"}
        ``"auto"``: maximise accuracies, minimise everything else.
    """

    def __init__(self, monitor: str = "val_loss", patience: int = 10, min_delta: float = 0.0,
                 restore_best_weights: bool = True, mode: str = "auto") -> None:
        check_positive(patience, "patience", integer=True, allow_zero=True)
        check_positive(min_delta, "min_delta", allow_zero=True)
        if mode not in ("auto", "min", "max"):
            raise ValueError(f"mode must be 'auto', 'min' or 'max', got {mode!r}")
        self.monitor, self.patience, self.min_delta = monitor, patience, float(min_delta)
        self.restore_best_weights = restore_best_weights
        self.maximize = mode == "max" or (mode == "auto" and "acc" in monitor)

    def on_train_begin(self, net: Any) -> None:
        self.net = net
        self.best = -math.inf if self.maximize else math.inf
        self.best_epoch = None
        self.best_weights = None
        self.wait = 0
        self.stopped_epoch = None

    def _improved(self, value: float) -> bool:
        if self.maximize:
            return value > self.best + self.min_delta
        return value < self.best - self.min_delta

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        if self.monitor not in logs:
            raise ValueError(f"EarlyStopping monitors {self.monitor!r}, but the history has only "
                             f"{sorted(logs)}; pass validation_data or validation_split for val_* keys")
        value = logs[self.monitor]
        if self._improved(value):
            self.best, self.best_epoch, self.wait = value, epoch, 0
            if self.restore_best_weights:
                self.keep_best_weights()
            return
        self.wait += 1
        if self.wait >= self.patience:
            self.stopped_epoch = epoch
            raise StopTraining(f"{self.monitor} did not improve for {self.patience} epochs")

    def keep_best_weights(self) -> None:
        """Keep device copies of the weights the monitored value describes (see ``Run.weights_for``), unless
        the last update overflowed them: a rolled-back divergence must not come back at the end."""
        weights = self.run.weights_for(self.monitor) if self.run is not None else self.net.snapshot()
        if bool(weights.all_finite()):
            self.best_weights = weights

    def on_train_end(self, net: Any) -> None:
        if self.restore_best_weights and self.best_weights is not None:
            net.restore(self.best_weights)
