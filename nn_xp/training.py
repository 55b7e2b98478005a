"""The training loop: full-batch or shuffled mini-batch descent, validation, callbacks, checkpoints.

One code path for every backend. The data go to the device once per ``fit``;
each epoch's shuffle is drawn on the host from the network's seeded generator
and only the index permutation is copied to the device. The loss (and the
other metrics) are read back to the host once per epoch, never per batch.
"""
from __future__ import annotations

import math
import warnings
from typing import Any, Callable, Sequence

from array_api_compat import is_writeable_array

from . import backends
from ._host import permutation, rng_state, set_rng_state
from ._progress import Progress
from ._typing import Array
from ._validation import check_positive, check_same_samples
from .callbacks import Callback, LambdaCallback, StopTraining
from .network import Workspace
from .optimizers import Optimizer, Schedule, get_optimizer

__all__ = ["History", "fit"]


class History:
    """Per-epoch metrics, as Keras users expect: ``history.history["loss"]``, ``history.epoch``.

    ``history["loss"][k]`` is the mean training loss seen during epoch ``k``;
    in full-batch mode that is the loss of the weights at the start of the epoch,
    the value the blog's hook prints at step ``k``.
    """

    def __init__(self, history: dict[str, list[float]] | None = None, epoch: list[int] | None = None) -> None:
        self.history: dict[str, list[float]] = {k: list(v) for k, v in (history or {}).items()}
        self.epoch: list[int] = list(epoch or [])

    def __getitem__(self, key: str) -> list[float]:
        return self.history[key]

    def __len__(self) -> int:
        return len(self.epoch)

    def __repr__(self) -> str:
        last = {k: v[-1] for k, v in self.history.items() if v}
        return f"History(epochs={len(self)}, last={last})"


def _split(net: Any, X: Array, Y: Array, validation_data: Any, validation_split: float):
    if validation_data is not None:
        try:
            Xv, Yv = validation_data
        except (TypeError, ValueError):
            raise ValueError("validation_data must be a pair (X_val, Y_val)") from None
        Xv, _ = net._input(Xv, "validation X")
        Yv = net._target(Yv, "validation Y")
        check_same_samples(Xv, Yv, "validation X", "validation Y")
        return X, Y, Xv, Yv
    if not validation_split:
        return X, Y, None, None
    m = X.shape[0]
    n_train = int(m * (1.0 - validation_split))  # Keras: the last samples are held out, before shuffling
    if n_train < 1 or n_train >= m:
        raise ValueError(f"validation_split={validation_split} leaves {n_train} of {m} samples for training; "
                         "both parts need at least one sample")
    return X[:n_train, ...], Y[:n_train, ...], X[n_train:, ...], Y[n_train:, ...]


def _callbacks(callbacks: Any) -> list[Callback]:
    if callbacks is None:
        return []
    if isinstance(callbacks, Callback) or callable(callbacks):
        callbacks = [callbacks]
    return [c if isinstance(c, Callback) else LambdaCallback(c) for c in callbacks]


def fit(net: Any, X: Any, Y: Any, *, epochs: int = 1000, learning_rate: float | Schedule | None = None,
        optimizer: str | Optimizer | None = None, batch_size: int | None = None, shuffle: bool = True,
        validation_data: Any = None, validation_split: float = 0.0,
        callbacks: Sequence[Callback | Callable] | Callback | Callable | None = None, verbose: int = 0,
        checkpoint: Any = None, checkpoint_every: int = 1, resume_from: Any = None,
        on_nonfinite: str = "raise") -> History:
    """Train ``net`` on ``(X, Y)``.

    Parameters
    ----------
    X, Y : array-like
        ``(n_samples, n_features)`` and ``(n_samples, n_outputs)``; host data are
        moved to the network's device once. A 1-D ``Y`` is accepted for one
        output, and class ids ``(n,)`` for ``cross_entropy``.
    epochs : int
        Total number of epochs (with ``resume_from``, counting those already done).
    learning_rate : float or callable, optional
        For an optimizer given by name (default 0.1 for SGD, 0.001 for Adam).
        Without ``optimizer``, it sets the rate of the network's optimizer from
        a previous ``fit`` (state kept), or of a new plain SGD.
    optimizer : {"sgd", "adam", "adamw"} or Optimizer, optional
        Default: the network's optimizer from a previous ``fit`` or from the
        checkpoint in ``resume_from`` (state kept), else plain SGD, the blog's
        ``W -= lr * dW``.
    batch_size : int, optional
        None: full batch (the blog's). An integer: mini-batches, reshuffled every
        epoch (when ``shuffle``), the last partial batch included.
    validation_data, validation_split
        A held-out ``(X_val, Y_val)``, or the fraction of the last samples to hold out.
    callbacks
        :class:`~nn_xp.Callback` objects or plain ``f(epoch, logs)`` callables;
        raise :class:`~nn_xp.StopTraining` to end training after the epoch.
    verbose : {0, 1, 2}
        0 silent; 1 a tqdm bar on a terminal, else one line per epoch; 2 one line per epoch.
    checkpoint, checkpoint_every, resume_from
        Write a checkpoint file every ``checkpoint_every`` epochs; continue from one.
    on_nonfinite : {"raise", "warn"}
        When the loss becomes NaN or infinite, the network (weights, optimizer
        state, shuffle generator) is rolled back to the start of the last epoch
        whose loss was finite, a checkpoint written since is rewritten from
        that state, and a ``FloatingPointError`` is raised (or a
        ``RuntimeWarning`` issued and training stopped).

    Returns
    -------
    History
    """
    check_positive(epochs, "epochs", integer=True)
    if batch_size is not None:
        check_positive(batch_size, "batch_size", integer=True)
    check_positive(checkpoint_every, "checkpoint_every", integer=True)
    if isinstance(validation_split, bool) or not isinstance(validation_split, (int, float)) \
            or not 0.0 <= validation_split < 1.0:
        raise ValueError(f"validation_split must be a fraction in [0, 1), got {validation_split!r}")
    if on_nonfinite not in ("raise", "warn"):
        raise ValueError(f"on_nonfinite must be 'raise' or 'warn', got {on_nonfinite!r}")
    if verbose not in (0, 1, 2):
        raise ValueError(f"verbose must be 0, 1 or 2, got {verbose!r}")

    with net.backend.context():
        X, _ = net._input(X)
        Y = net._target(Y)
        check_same_samples(X, Y)
        X, Y, Xv, Yv = _split(net, X, Y, validation_data, validation_split)
        opt, start, history = _optimizer_and_history(net, optimizer, learning_rate, resume_from)
        net.optimizer, net.history = opt, history
        return _train(net, opt, X, Y, Xv, Yv, history, start, epochs, batch_size, shuffle,
                      _callbacks(callbacks), verbose, checkpoint, checkpoint_every, on_nonfinite)


def _optimizer_and_history(net: Any, optimizer: Any, learning_rate: Any, resume_from: Any):
    """The optimizer that trains (given, resumed, kept from the last fit, or a new SGD), the start epoch, the history."""
    opt = get_optimizer(optimizer, learning_rate) if optimizer is not None else None
    start, history = 0, History()
    if resume_from is not None:
        from .io import load_checkpoint

        start, history = load_checkpoint(resume_from, net, opt)  # opt None: the checkpoint's own continues
    opt = opt or net.optimizer
    if opt is None:
        return get_optimizer(None, learning_rate), start, history
    if optimizer is None and learning_rate is not None:
        opt.set_learning_rate(learning_rate)
    return opt, start, history


class _UndoPoints:
    """The state at the start of this epoch and of the previous one: weights, optimizer state, shuffle RNG.

    Rolling back to one of them undoes a half-done epoch (Ctrl-C) or a divergence.
    Device buffers are reused, copied into in place, where the namespace allows.
    """

    def __init__(self, net: Any, opt: Optimizer, with_rng: bool) -> None:
        self.net, self.opt, self.with_rng = net, opt, with_rng
        self.writeable = is_writeable_array(net._params[0])
        self.params = [net._snapshot(), net._snapshot()]  # one flat copy each where the parameters share a buffer
        self.opt_state: list[Any] = [None, None]
        self.rng: list[Any] = [None, None]

    def save(self, epoch: int) -> None:
        i = epoch % 2
        if self.writeable:
            self.net._save_into(self.params[i])
        else:
            self.params[i] = self.net._snapshot()
        opt = self.opt
        self.opt_state[i] = opt._save_state(self.opt_state[i]) if opt.state else (opt.iterations, {})
        if self.with_rng:
            self.rng[i] = rng_state(self.net.rng)

    def restore(self, epoch: int) -> None:
        i = epoch % 2
        self.net._restore(self.params[i])
        self.opt._load_state(self.opt_state[i])
        if self.rng[i] is not None:
            set_rng_state(self.net.rng, self.rng[i])


def _train(net, opt, X, Y, Xv, Yv, history, start, epochs, batch_size, shuffle, cbs, verbose,
           checkpoint, checkpoint_every, on_nonfinite) -> History:
    loss_fn = net.loss_fn
    keys = ["loss"] + (["accuracy"] if loss_fn.classification else [])
    if Xv is not None:
        keys += ["val_loss"] + (["val_accuracy"] if loss_fn.classification else [])
    columns = [history.history.setdefault(k, []) for k in keys]
    xp, device, names = net.xp, net.device, net.param_names
    m = X.shape[0]
    full_batch = batch_size is None or batch_size >= m
    undo = _UndoPoints(net, opt, with_rng=shuffle and not full_batch)
    ws = Workspace.for_training(net, m if full_batch else batch_size)  # buffers reused every epoch
    gbuf = net._gradient_buffers()  # None without out=; else the gradients, one flat buffer like the parameters'
    Xa = net._augmented(X)  # [X, 1] for a network with few inputs (see network.AUGMENT_MAX_INPUTS), else None
    if checkpoint is not None:
        from .io import save_checkpoint
    progress = Progress(epochs, verbose, initial=start)
    for cb in cbs:
        cb.on_train_begin(net)
    epoch = done = saved_at = start  # done: epochs completed; saved_at: what the checkpoint file holds
    failure = None  # (the epoch whose start to roll back to, the offending logs, a description)
    dirty = False  # True while the network is between the start and the end of an epoch
    with warnings.catch_warnings():
        # fit detects non-finite losses itself (FloatingPointError below); the backend's own
        # "overflow encountered in ..." warnings on the way there would only repeat it
        warnings.filterwarnings("ignore", message=".*encountered in", category=RuntimeWarning)
        try:
            for epoch in range(start, epochs):
                undo.save(epoch)
                dirty = True
                if full_batch:
                    values = net._forward(X, ws, Xa)
                    correct = None if loss_fn.correct is None else loss_fn.correct(values[-1][1], Y, xp) / m
                    total, grads = net._gradient(values, Y, ws, gbuf, Xa)  # consumes values
                    opt._step_network(net, grads, gbuf, names, xp)
                    metrics = [total] if correct is None else [total, correct]
                else:
                    order = (xp.asarray(permutation(net.rng, m), device=device) if shuffle
                             else xp.arange(m, device=device))
                    total = correct = 0.0
                    for lo in range(0, m, batch_size):
                        idx = order[lo:min(lo + batch_size, m)]  # in bounds: the array API leaves overshoot unspecified
                        xb, yb = xp.take(X if Xa is None else Xa, idx, axis=0), xp.take(Y, idx, axis=0)
                        xba, xb = (None, xb) if Xa is None else (xb, xb[:, :-1])
                        bws = None if ws is None else ws.rows(xb.shape[0])
                        values = net._forward(xb, bws, xba)
                        if loss_fn.correct is not None:
                            correct = correct + loss_fn.correct(values[-1][1], yb, xp)
                        loss, grads = net._gradient(values, yb, bws, gbuf, xba)
                        opt._step_network(net, grads, gbuf, names, xp)
                        total = total + loss * (yb.shape[0] / m)
                    metrics = [total] + ([correct / m] if loss_fn.correct is not None else [])
                if Xv is not None:
                    zv, av = net._forward(Xv)[-1]
                    metrics.append(loss_fn.value(zv, av, Yv, xp))
                    if loss_fn.correct is not None:
                        metrics.append(loss_fn.correct(av, Yv, xp) / Xv.shape[0])
                # the one host read of the epoch
                host = [float(total)] if len(metrics) == 1 else backends.to_numpy(xp.stack(metrics)).tolist()
                if not all(map(math.isfinite, host)):
                    failure = (max(epoch - 1, start), dict(zip(keys, host)), f"in epoch {epoch}")
                    break
                for column, value in zip(columns, host):
                    column.append(value)
                history.epoch.append(epoch)
                done, dirty = epoch + 1, False
                if checkpoint is not None and done % checkpoint_every == 0:
                    save_checkpoint(checkpoint, net, opt, done, history)  # before a callback can stop us
                    saved_at = done
                if not cbs and progress.silent:
                    continue  # nothing reads the logs: keep the tiny-network epoch lean
                # full batch: the training metrics describe the weights at the start of the epoch
                net._metric_weights = undo.params[epoch % 2] if full_batch else None
                logs = dict(zip(keys, host))
                progress.update(epoch, logs)
                try:
                    for cb in cbs:
                        cb.on_epoch_end(epoch, logs)
                except StopTraining:
                    break
            if failure is None and done > start and not _finite(net):
                # the last update overflowed: its loss was never measured, its epoch's start had a finite one
                failure = (done - 1, {"loss": math.nan}, f"in the last update (epoch {done - 1})")
        except KeyboardInterrupt:
            if dirty:  # leave the network at the last completed epoch, never half-updated
                undo.restore(epoch)
            raise
        finally:
            progress.close()
            net._metric_weights = None
    if failure is not None:
        _diverged(net, opt, undo, history, failure, on_nonfinite,
                  checkpoint if checkpoint is not None and saved_at > failure[0] else None)
    elif checkpoint is not None and saved_at != done:
        save_checkpoint(checkpoint, net, opt, done, history)  # stopped early, or epochs % checkpoint_every
    for cb in cbs:
        cb.on_train_end(net)
    return history


def _finite(net: Any) -> bool:
    xp = net.xp
    return bool(xp.all(xp.stack([xp.all(xp.isfinite(p)) for p in net._params])))


def _diverged(net: Any, opt: Optimizer, undo: _UndoPoints, history: History, failure: tuple,
              on_nonfinite: str, stale_checkpoint: Any) -> None:
    """Roll back to the start of the last epoch with a finite loss, mend the checkpoint, then raise or warn."""
    epoch, logs, where = failure
    undo.restore(epoch)
    kept = sum(1 for e in history.epoch if e < epoch)  # the history, too, stops where the weights do
    for column in history.history.values():
        del column[kept:]
    del history.epoch[kept:]
    if stale_checkpoint is not None:  # it holds weights whose loss was never finite: replace it
        from .io import save_checkpoint

        save_checkpoint(stale_checkpoint, net, opt, epoch, history)
    to = (f"the start of epoch {epoch}, the last with a finite loss" if f"epoch {epoch}" not in where
          else "the weights this fit started from")
    message = (f"the loss became non-finite {where} ({logs}); the network (weights, optimizer state, shuffle "
               f"generator) was rolled back to {to}. Try a smaller learning rate, or scale the inputs")
    if on_nonfinite == "raise":
        raise FloatingPointError(message)
    warnings.warn(message, RuntimeWarning, stacklevel=4)
