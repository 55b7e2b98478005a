"""Callbacks run once per epoch: plain callables, early stopping, and a way to stop training."""
from __future__ import annotations

import math
import sys
from collections.abc import Callable
from typing import Any

from ._validation import check_positive
from .metrics import higher_is_better

__all__ = ["Callback", "EarlyStopping", "LambdaCallback", "ReduceLROnPlateau", "StopTraining"]


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
        if isinstance(fn, type) and issubclass(fn, Callback):
            raise TypeError(f"callbacks got the class {fn.__name__}, not an instance of it: write "
                            f"{fn.__name__}(...), e.g. callbacks=[{fn.__name__}()]")
        if not callable(fn):
            raise TypeError(f"a callback must be callable or an nn_xp.Callback, got {fn!r}")
        self.fn = fn

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        self.fn(epoch, logs)


class _Monitoring(Callback):
    """What EarlyStopping and ReduceLROnPlateau share: a monitored key of the logs, compared with the best
    value so far (``monitor``, ``maximize``, ``min_delta`` and ``best`` are the subclass's)."""

    monitor: str
    maximize: bool
    min_delta: float
    best: float

    def monitored(self, logs: dict[str, float]) -> float:
        """The epoch's value of ``monitor``, or a ValueError naming the keys there are."""
        if self.monitor not in logs:
            raise ValueError(f"{type(self).__name__} monitors {self.monitor!r}, but the history has only "
                             f"{sorted(logs)}; pass validation_data or validation_split for val_* keys")
        return logs[self.monitor]

    def _improved(self, value: float) -> bool:
        if self.maximize:
            return value > self.best + self.min_delta
        return value < self.best - self.min_delta


class EarlyStopping(_Monitoring):
    """Stop when ``monitor`` has not improved by ``min_delta`` for ``patience`` epochs.

    With ``restore_best_weights`` the network ends with the weights of the best
    epoch (kept as device copies, never read back to the host).

    Parameters
    ----------
    monitor : str
        A key of the history, e.g. ``"val_loss"``, ``"loss"``, ``"val_accuracy"``.
    mode : {"auto", "min", "max"}
        ``"auto"``: maximise accuracies and ``r2``, minimise everything else.
    """

    def __init__(self, monitor: str = "val_loss", patience: int = 10, min_delta: float = 0.0,
                 restore_best_weights: bool = True, mode: str = "auto") -> None:
        check_positive(patience, "patience", integer=True, allow_zero=True)
        check_positive(min_delta, "min_delta", allow_zero=True)
        if mode not in ("auto", "min", "max"):
            raise ValueError(f"mode must be 'auto', 'min' or 'max', got {mode!r}")
        self.monitor, self.patience, self.min_delta = monitor, patience, float(min_delta)
        self.restore_best_weights = restore_best_weights
        self.maximize = mode == "max" or (mode == "auto" and higher_is_better(monitor))

    def on_train_begin(self, net: Any) -> None:
        self.net = net
        self.best = -math.inf if self.maximize else math.inf
        self.best_epoch = None
        self.best_weights = None
        self.wait = 0
        self.stopped_epoch = None

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        value = self.monitored(logs)
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
        restored = self.restore_best_weights and self.best_weights is not None
        if restored:
            net.restore(self.best_weights)
        if self.run is not None and not self.run.progress.silent:  # fit's verbose: say what happened
            message = self.describe(restored)
            if message:
                self.run.progress.note(message)

    def describe(self, restored: bool) -> str:
        """What this fit's early stopping did, in the progress lines' epoch numbers (from 1), or "" where it
        did nothing: ``"EarlyStopping: stopped at epoch 47 (val_loss did not improve for 6 epochs); restored
        the weights of epoch 41 (val_loss=0.0123)"``."""
        parts = []
        if self.stopped_epoch is not None:
            parts.append(f"stopped at epoch {self.stopped_epoch + 1} ({self.monitor} did not improve for "
                         f"{self.patience} epochs)")
        if restored:
            parts.append(f"restored the weights of epoch {self.best_epoch + 1} "
                         f"({self.monitor}={self.best:.6g})")
        return "EarlyStopping: " + "; ".join(parts) if parts else ""


class ReduceLROnPlateau(_Monitoring):
    """Multiply the learning rate by ``factor`` when ``monitor`` has not improved for ``patience`` epochs
    (Keras' ReduceLROnPlateau, same arguments and rules).

    An improvement is a change beyond ``min_delta`` in the right direction. After
    a reduction, epochs without improvement are not counted during ``cooldown``
    (as in Keras, the epoch that ends the cooldown counts: ``cooldown=n`` leaves
    ``n - 1`` epochs out); the rate never goes below ``min_lr``.

    The rate is the optimizer's (``run.optimizer``), set through
    :meth:`~nn_xp.Optimizer.set_learning_rate`, and reaches the next epoch on
    every engine (a compiled engine is sent it with each call, a CUDA graph is
    captured again). A learning-rate schedule is refused at the start of ``fit``,
    as Keras refuses it: the schedule would fight the reductions. Data-parallel,
    every rank sees the same logs and takes the same decisions.

    Each epoch's ``logs`` gain ``"learning_rate"``, the rate that epoch trained with
    (seen by the callbacks after this one; the history is not changed).
    ``reductions`` lists this fit's ``(epoch, new rate)``.

    The counters (``wait``, ``cooldown_counter``, ``best``) start afresh with
    each ``fit``, a resumed one included. The reduced rate itself is the
    optimizer's: the network keeps it for the next fit, and a checkpoint holds
    it in the optimizer's config, so resuming without passing ``optimizer=``
    continues at it (a checkpoint is written before the epoch's callbacks run:
    a reduction at that epoch reaches the next checkpoint).

    Parameters
    ----------
    monitor : str
        A key of the history, e.g. ``"val_loss"``, ``"loss"``, ``"val_accuracy"``.
    factor : float
        In (0, 1): ``new_lr = lr * factor``.
    patience : int
        Epochs without improvement before a reduction.
    verbose : {0, 1}
        1: say when the rate is reduced.
    mode : {"auto", "min", "max"}
        ``"auto"``: maximise accuracies, minimise everything else.

    Examples
    --------
    >>> plateau = ReduceLROnPlateau("loss", factor=0.5, patience=5, min_lr=1e-4)
    """

    def __init__(self, monitor: str = "val_loss", factor: float = 0.1, patience: int = 10, verbose: int = 0,
                 mode: str = "auto", min_delta: float = 1e-4, cooldown: int = 0, min_lr: float = 0.0) -> None:
        if not isinstance(monitor, str):
            raise TypeError(f"monitor must be a history key such as 'val_loss', got {monitor!r}")
        check_positive(factor, "factor")
        if factor >= 1:
            raise ValueError(f"factor must be in (0, 1): new_lr = lr * factor, got {factor!r}")
        check_positive(patience, "patience", integer=True, allow_zero=True)
        check_positive(cooldown, "cooldown", integer=True, allow_zero=True)
        check_positive(min_delta, "min_delta", allow_zero=True)
        check_positive(min_lr, "min_lr", allow_zero=True)
        if mode not in ("auto", "min", "max"):
            raise ValueError(f"mode must be 'auto', 'min' or 'max', got {mode!r}")
        if verbose not in (0, 1):
            raise ValueError(f"verbose must be 0 or 1, got {verbose!r}")
        self.monitor, self.factor, self.patience, self.verbose = monitor, float(factor), patience, verbose
        self.mode, self.min_delta, self.cooldown = mode, float(min_delta), cooldown
        self.min_lr = float(min_lr)
        self.maximize = mode == "max" or (mode == "auto" and higher_is_better(monitor))
        self.optimizer: Any = None
        self.reset()

    def reset(self) -> None:
        """Forget the plateau: no best value yet, no epochs waited, no cooldown."""
        self.best = -math.inf if self.maximize else math.inf
        self.wait = self.cooldown_counter = 0
        self.reductions: list[tuple[int, float]] = []

    def on_train_begin(self, net: Any) -> None:
        self.reset()
        opt = self.run.optimizer if self.run is not None else net.optimizer
        if opt is None:
            raise ValueError("ReduceLROnPlateau needs the optimizer of the fit it runs in")
        if callable(opt.learning_rate):
            raise ValueError(f"ReduceLROnPlateau sets the learning rate, and this fit's "
                             f"{type(opt).__name__} follows the schedule {opt.learning_rate!r}; give the "
                             "optimizer a constant rate, or leave the callback out")
        self.optimizer = opt

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        opt, value = self.optimizer, self.monitored(logs)
        rate = opt.current_learning_rate()
        logs["learning_rate"] = rate
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.wait = 0
        if self._improved(value):
            self.best, self.wait = value, 0
            return
        if self.cooldown_counter > 0:
            return
        self.wait += 1
        new = max(rate * self.factor, self.min_lr)
        if self.wait >= self.patience and rate > self.min_lr and new > 0:
            opt.set_learning_rate(new)
            self.reductions.append((epoch, new))
            self.cooldown_counter, self.wait = self.cooldown, 0
            if self.verbose:
                self._say(f"Epoch {epoch + 1}: ReduceLROnPlateau reducing learning rate to {new:.6g}.")

    def _say(self, message: str) -> None:
        """A line on stderr (above fit's progress bar if there is one; rank 0 alone where data-parallel)."""
        run = self.run
        if run is None:
            print(message, file=sys.stderr, flush=True)
        elif run.together.writes_files:
            if run.progress.silent:
                print(message, file=sys.stderr, flush=True)
            else:
                run.progress.note(message)

    def on_train_end(self, net: Any) -> None:
        self.optimizer = None  # the fit is over: keep no reference to its optimizer
