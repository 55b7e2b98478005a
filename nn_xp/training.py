"""The training loop: epochs, validation, callbacks, checkpoints, progress and undo points.

One loop for every backend and engine. The data go to the device once per
``fit``; the network's engine makes a trainer that runs the epochs (see
:mod:`nn_xp.engine`), and the loop reads each epoch's metrics back to the host
once, never per batch. Everything here talks to the network, its engine and
the optimizer through their public methods.
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from itertools import chain
from typing import Any

from ._host import rng_state, set_rng_state
from ._progress import Progress
from ._typing import Array
from ._validation import check_positive, check_same_samples
from ._weighting import make_scoring, sample_weights
from .backends import to_numpy
from .callbacks import Callback, LambdaCallback, StopTraining
from .checkpoint import check_checkpoint_path, load_checkpoint, save_checkpoint
from .distributed.parallel import ONE_PROCESS, data_parallel
from .engine import Snapshot, Trainer
from .history import History
from .optimizers import Optimizer, Schedule, get_optimizer

__all__ = ["Run", "fit"]


def fit(net: Any, X: Any, Y: Any, *, epochs: int = 1000, learning_rate: float | Schedule | None = None,
        optimizer: str | Optimizer | None = None, batch_size: int | None = None, shuffle: bool = True,
        validation_data: Any = None, validation_split: float = 0.0,
        callbacks: Sequence[Callback | Callable] | Callback | Callable | None = None, verbose: int = 0,
        checkpoint: Any = None, checkpoint_every: int = 1, resume_from: Any = None,
        on_nonfinite: str = "raise", comm: Any = None, sample_weight: Any = None, class_weight: Any = None,
        metrics: Any = None, weighted_mean: bool = False) -> History:
    """Train ``net`` on ``(X, Y)``: see :meth:`nn_xp.Network.fit` for every option (``sample_weight``,
    ``class_weight`` and ``weighted_mean``: :mod:`nn_xp._weighting`; ``metrics``: :mod:`nn_xp.metrics`).

    ``weighted_mean=True`` (with ``sample_weight`` or ``class_weight``) divides each batch's loss and
    gradient by the batch's sum of sample weights instead of its rows: scikit-learn's convention."""
    with net.backend.context():
        together = data_parallel(comm, net)  # one process (comm=None): every hook below is plain fit's
        with together.guard():  # data-parallel: an exception on one rank alone ends the job on every rank
            checks = (epochs, batch_size, checkpoint_every, validation_split, on_nonfinite, verbose)
            # agree: data-parallel, a start that fails on any rank fails on every rank, with a clear error
            weighting = (sample_weight, class_weight, metrics, together is not ONE_PROCESS, weighted_mean)
            X, Y, validation, callbacks, scoring = together.agree(
                _prepare, net, X, Y, validation_data, validation_split, callbacks, checks,
                checkpoint if together.writes_files else None, weighting)
            scored = {} if scoring is None else {"scoring": scoring}  # None: plain fit's trainer
            opt, start, history = together.agree(_optimizer_and_history, net, optimizer, learning_rate,
                                                 together.resume(resume_from))
            together.check_same(net, X, Y, validation, {
                "epochs": epochs, "batch_size": batch_size, "shuffle": shuffle, "optimizer": optimizer,
                "learning_rate": learning_rate, "callbacks": len(callbacks), "on_nonfinite": on_nonfinite,
                "checkpoint": checkpoint is not None, "checkpoint_every": checkpoint_every,
                **({} if scoring is None else {"metrics": scoring.names, "sample_weight": scoring.weight,
                                               "validation sample_weight": scoring.validation_weight,
                                               "weighted_mean": scoring.weighted_mean})})
            opt, start, history = together.synchronize(net, opt, start, history)  # rank 0's, everywhere
            previous, kept = net.optimizer, len(history)
            # the trainer first: an engine that refuses this fit leaves the network as it was
            trainer = together.agree(net.engine.trainer, net, opt, X, Y, validation, batch_size=batch_size,
                                     shuffle=shuffle, **together.engine_options(), **scored)
            net.optimizer, net.history = opt, history
            progress = Progress(epochs, verbose, start, show=together.writes_files)
            if not progress.silent and getattr(trainer, "compiles", False):
                trainer.report = progress.note  # verbose: say when (and how long) a program is compiled
            progress.follow(trainer)  # verbose=3 on a terminal: a per-batch bar, counted on the host
            run = Run(net, together.shared(trainer), history, start, epochs, together.callbacks(callbacks),
                      progress, checkpoint, checkpoint_every, on_nonfinite, together)
            try:
                return run.train()
            finally:
                if len(history) == kept:  # no epoch of this fit remains: the network keeps its optimizer
                    net.optimizer = previous


def _prepare(net: Any, X: Any, Y: Any, validation_data: Any, validation_split: float, callbacks: Any,
             checks: tuple, checkpoint: Any, weighting: tuple = (None, None, None, False, False)):
    """fit's options checked, its data on the device (training data, held-out pair or None), its callbacks,
    and what it measures (:class:`~nn_xp.metrics.Scoring`; None without weights or ``metrics``)."""
    _check_options(*checks)
    if checkpoint is not None:
        check_checkpoint_path(checkpoint)  # now, naming it, not after the first epoch
    X, _ = net.as_input(X)
    Y = net.as_target(Y)
    check_same_samples(X, Y)
    sample_weight, class_weight, metrics, shared, weighted_mean = weighting
    W = sample_weights(net, sample_weight, X.shape[0])
    X, Y, validation, W, Wv = _split(net, X, Y, W, validation_data, validation_split)
    scoring = make_scoring(net, Y, W, Wv, class_weight, metrics, shared, weighted_mean)
    return X, Y, validation, _callbacks(callbacks), scoring


def _check_options(epochs: Any, batch_size: Any, checkpoint_every: Any, validation_split: Any,
                   on_nonfinite: Any, verbose: Any) -> None:
    check_positive(epochs, "epochs", integer=True)
    if batch_size is not None:
        check_positive(batch_size, "batch_size", integer=True)
    check_positive(checkpoint_every, "checkpoint_every", integer=True)
    if isinstance(validation_split, bool) or not isinstance(validation_split, (int, float)) \
            or not 0.0 <= validation_split < 1.0:
        raise ValueError(f"validation_split must be a fraction in [0, 1), got {validation_split!r}")
    if on_nonfinite not in ("raise", "warn"):
        raise ValueError(f"on_nonfinite must be 'raise' or 'warn', got {on_nonfinite!r}")
    if verbose not in (0, 1, 2, 3):
        raise ValueError(f"verbose must be 0, 1, 2 or 3 (1 with a per-batch bar), got {verbose!r}")


def _split(net: Any, X: Array, Y: Array, W: Array | None, validation_data: Any, validation_split: float):
    """Training data, held-out pair (or None), and their sample weights (or None): ``validation_data``,
    else the last ``validation_split`` (of the weights too)."""
    if validation_data is not None:
        try:
            Xv, Yv, *rest = validation_data
        except (TypeError, ValueError):
            rest = [None, None]
        if len(rest) > 1:
            raise ValueError("validation_data must be a pair (X_val, Y_val) or a triple (X_val, Y_val, "
                             "sample_weight_val)")
        Xv, _ = net.as_input(Xv, "validation X")
        Yv = net.as_target(Yv, "validation Y")
        check_same_samples(Xv, Yv, "validation X", "validation Y")
        Wv = sample_weights(net, rest[0] if rest else None, Xv.shape[0], "validation sample_weight")
        return X, Y, (Xv, Yv), W, Wv
    if not validation_split:
        return X, Y, None, W, None
    m = X.shape[0]
    n_train = int(m * (1.0 - validation_split))  # Keras: the last samples are held out, before shuffling
    if n_train < 1 or n_train >= m:
        raise ValueError(f"validation_split={validation_split} leaves {n_train} of {m} samples for training; "
                         "both parts need at least one sample")
    held = (X[n_train:, ...], Y[n_train:, ...])
    if W is None:
        return X[:n_train, ...], Y[:n_train, ...], held, None, None
    return X[:n_train, ...], Y[:n_train, ...], held, W[:n_train, ...], W[n_train:, ...]


def _callbacks(callbacks: Any) -> list[Callback]:
    if callbacks is None:
        return []
    if isinstance(callbacks, Callback) or callable(callbacks):
        callbacks = [callbacks]
    try:
        callbacks = list(callbacks)
    except TypeError:
        raise TypeError("callbacks must be an nn_xp.Callback, a callable f(epoch, logs) or a list of them, "
                        f"got {callbacks!r}") from None
    return [c if isinstance(c, Callback) else LambdaCallback(c) for c in callbacks]


def _optimizer_and_history(net: Any, optimizer: Any, learning_rate: Any, resume_from: Any):
    """The optimizer (given, resumed, kept from the last fit, or a new SGD), the start epoch, the history."""
    opt = get_optimizer(optimizer, learning_rate) if optimizer is not None else None
    start, history = 0, History()
    if resume_from is not None:
        start, history = load_checkpoint(resume_from, net, opt)  # opt None: the checkpoint's own continues
    opt = opt or net.optimizer
    if opt is None:
        return get_optimizer(None, learning_rate), start, history
    if optimizer is None and learning_rate is not None:
        opt.set_learning_rate(learning_rate)
    return opt, start, history


class _UndoPoints:
    """The state at the start of the trainer's last two calls: weights, optimizer state, shuffle generator.

    Rolling back to one of them undoes a half-done epoch (Ctrl-C) or a divergence.
    The older point's device buffers are reused for the next one where the arrays take writes.
    """

    def __init__(self, net: Any, opt: Optimizer, with_rng: bool) -> None:
        self.net, self.opt, self.with_rng = net, opt, with_rng
        # [epoch, weights, optimizer state, rng state]; the last fit's buffers, where the engine kept them
        self.points: list[list[Any]] = [[None, *kept, None] for kept in net.engine.undo_buffers]
        self.points += [[None] * 4 for _ in range(2 - len(self.points))]
        self.newest = 1

    def keep(self) -> None:
        """Hand the points' device buffers to the engine for the next fit (arrays that take writes only:
        an immutable library's points are the parameters themselves, and keeping them would only hold
        memory). Nothing of this fit's epochs is kept: a point's epoch is the next fit's to set."""
        kept = [(p[1], p[2]) for p in self.points if p[1] is not None and p[1].writeable]
        self.net.engine.undo_buffers = kept

    def save(self, epoch: int) -> None:
        self.newest = i = 1 - self.newest
        point = self.points[i]  # the older one: its buffers are reused
        point[0] = epoch
        point[1] = self.net.snapshot(point[1])
        point[2] = self.opt.snapshot(point[2])
        if self.with_rng:
            point[3] = rng_state(self.net.rng)

    def _point(self, epoch: int) -> list[Any] | None:
        for point in self.points:
            if point[0] == epoch:
                return point
        return None

    def at_or_before(self, epoch: int) -> int:
        """The latest undo point at or before ``epoch`` (the earliest kept, when both are after it)."""
        kept = [p[0] for p in self.points if p[0] is not None]
        return max((e for e in kept if e <= epoch), default=min(kept))

    def weights(self, epoch: int) -> Snapshot | None:
        point = self._point(epoch)
        return None if point is None else point[1]

    def restore(self, epoch: int) -> None:
        _, weights, opt_state, rng = self._point(epoch)
        self.net.restore(weights)
        self.opt.restore(opt_state)
        if rng is not None:
            set_rng_state(self.net.rng, rng)


class Run:
    """One ``fit`` in progress: the epoch loop, and what a callback may ask of it (``callback.run``).

    The trainer runs ``trainer.chunk`` epochs per call (one, unless epochs are
    short beside the loop's own cost per call, or the engine is compiled); an
    undo point is taken at the start of each call, and the metrics of the call
    are read back to the host at once. A roll-back to an epoch inside a call
    (a divergence's, an error's) returns to the latest call start at or before
    it and runs the epochs from there again: they repeat bit for bit (the same
    weights, optimizer state, shuffles, dropout draws).
    """

    def __init__(self, net: Any, trainer: Trainer, history: History, start: int, epochs: int,
                 callbacks: list[Callback], progress: Progress, checkpoint: Any, checkpoint_every: int,
                 on_nonfinite: str, together: Any = ONE_PROCESS) -> None:
        self.net, self.trainer, self.history = net, trainer, history
        self.together = together  # data-parallel: rank 0 alone writes; a divergence is every rank's
        self.callbacks, self.progress = callbacks, progress
        self.start, self.epochs, self.on_nonfinite = start, epochs, on_nonfinite
        self.checkpoint, self.checkpoint_every = checkpoint, checkpoint_every
        self.optimizer = trainer.optimizer
        self.undo = _UndoPoints(net, trainer.optimizer, trainer.draws_from_rng)
        # a key new to a resumed history (metrics= added) starts with NaN for the epochs before this fit
        self.columns = [history.history.setdefault(k, [math.nan] * len(history.epoch)) for k in trainer.keys]
        self.done = self.saved_at = start  # epochs completed; what the checkpoint file holds
        self._measured: Snapshot | None = None  # the weights the last epoch's training metrics describe

    def weights_for(self, key: str) -> Snapshot:
        """Device copies of the weights that the last epoch's ``logs[key]`` describes.

        In full batch a training metric is measured at the start of the epoch
        (the blog's print), so those are the weights; otherwise the current ones.
        """
        if self._measured is not None and not key.startswith("val_"):
            return self._measured.copy()
        return self.net.snapshot()

    def train(self) -> History:
        for cb in self.callbacks:
            cb.set_run(self)
            cb.on_train_begin(self.net)
        with warnings.catch_warnings():
            # fit detects non-finite losses itself (FloatingPointError below); the backend's own
            # "overflow encountered in ..." warnings on the way there would only repeat it
            warnings.filterwarnings("ignore", message=".*encountered in", category=RuntimeWarning)
            try:
                failure = self._loop()
                if failure is not None:
                    failure = (self._roll_back(failure[0]), *failure[1:])
            finally:
                self.progress.close()
                self._measured = None
                self.undo.keep()
        if failure is not None:
            self._diverged(*failure)
        elif self.checkpoint is not None and self.saved_at != self.done:
            self._save_checkpoint()  # stopped early, or epochs % checkpoint_every
        for cb in self.callbacks:
            cb.on_train_end(self.net)
            cb.set_run(None)  # the fit is over: a kept callback must not keep its data and buffers alive
        return self.history

    def _loop(self) -> tuple[int, dict, str] | None:
        """Epochs until the last, a StopTraining or a non-finite loss: None, or (back to, logs, where)."""
        epoch, dirty = self.done, False  # dirty: between the start of a call and its recorded end
        try:
            while epoch < self.epochs:
                count = self._count(epoch)
                self.undo.save(epoch)
                earlier = self.trainer.completed  # the last call's: each call starts a list of its own
                dirty = True
                rows = self._read(self.trainer.run(count))  # the one host read of the call
                if not math.isfinite(sum(chain.from_iterable(rows))):  # one pass at C speed, then row by row
                    for j, values in enumerate(rows):
                        if not all(map(math.isfinite, values)):
                            self._record(epoch, rows[:j])
                            # back to the start of the epoch before, the last whose loss was finite
                            return max(epoch + j - 1, self.start), dict(zip(self.trainer.keys, values)), \
                                f"in epoch {epoch + j}"
                self._record(epoch, rows)
                dirty = False
                every = self.checkpoint_every
                if self.checkpoint is not None and self.done // every > epoch // every:
                    if not bool(self.net.parameters.all_finite()):  # never checkpoint an overflowed update
                        return self._overflowed()
                    self._save_checkpoint()  # before a callback can stop us
                first, epoch = epoch, self.done
                if (self.callbacks or not self.progress.silent) and self._notify(first, rows):
                    break
        except BaseException:  # Ctrl-C, or an error inside an epoch (a schedule's, a callback's, ...)
            if dirty:  # leave the network and its history at the last completed epoch, never half-updated
                self._keep_completed(epoch, count, earlier)
            elif self.done > self.start and not bool(self.net.parameters.all_finite()):
                self._roll_back(self.done - 1)  # a callback stopped us after an update that overflowed
            raise
        if self.done > self.start and not bool(self.net.parameters.all_finite()):
            return self._overflowed()
        return None

    def _overflowed(self) -> tuple[int, dict, str]:
        """The last update overflowed: its loss was never measured, its call's start had a finite one."""
        last = self.done - 1
        return max(last, self.start), {"loss": math.nan}, f"in the last update (epoch {last})"

    def _count(self, epoch: int) -> int:
        """How many epochs the next call runs: the trainer's chunk, one where callbacks or progress read the
        host after each epoch, never past the next checkpoint."""
        count = min(self.trainer.chunk, self.epochs - epoch)
        if count > 1 and (self.callbacks or not self.progress.silent):
            return 1
        if count > 1 and self.checkpoint is not None:
            count = min(count, self.checkpoint_every - epoch % self.checkpoint_every)
        return count

    def _read(self, rows: list[list[Array]] | Array) -> list[list[float]]:
        if hasattr(rows, "shape"):  # one (epochs, keys) device array: one transfer
            return to_numpy(rows).tolist()
        if len(rows) == 1 and len(rows[0]) == 1:
            return [[float(rows[0][0])]]
        xp, k = self.net.xp, len(rows[0])
        flat = to_numpy(xp.stack([v for row in rows for v in row])).tolist()
        return [flat[i:i + k] for i in range(0, len(flat), k)]

    def _record(self, first: int, rows: list[list[float]]) -> None:
        """The epochs from ``first`` into the history."""
        for column, values in zip(self.columns, zip(*rows)):
            column.extend(values)
        self.history.epoch.extend(range(first, first + len(rows)))
        self.done = first + len(rows)

    def _notify(self, first: int, rows: list[list[float]]) -> bool:
        """Progress and callbacks for the epochs from ``first``; True when a callback stops training."""
        for j, values in enumerate(rows):
            self._measured = self.undo.weights(first + j) if self.trainer.full_batch else None
            logs = dict(zip(self.trainer.keys, values))
            self.progress.update(first + j, logs)
            try:
                for cb in self.callbacks:
                    cb.on_epoch_end(first + j, logs)
            except StopTraining:
                return True
        return False

    def _save_checkpoint(self, epoch: int | None = None) -> None:
        epoch = self.done if epoch is None else epoch
        if self.together.writes_files:
            save_checkpoint(self.net, self.checkpoint, self.optimizer, epoch, self.history)
        self.saved_at = epoch

    def _keep_completed(self, epoch: int, count: int, earlier: list) -> None:
        """After an error or Ctrl-C in the call of ``count`` epochs from ``epoch``: the network and the
        history at the end of the call's epochs that completed with finite losses (``trainer.completed``,
        unless it is still the ``earlier`` call's; none where the trainer keeps no such rows, a compiled
        call), never part-way through one."""
        self.history.truncate(epoch)  # the call's rows, where the error came after they were recorded
        completed = self.trainer.completed
        try:
            rows = self._read(completed) if completed and completed is not earlier else []
        except BaseException:  # reading them back failed too: the call's start
            rows = []
        finite = next((j for j, values in enumerate(rows) if not all(map(math.isfinite, values))), len(rows))
        self._record(epoch, rows[:finite])
        if finite < count:  # stopped inside the call (or its last rows diverged): back, then forward again
            self._roll_back(epoch + finite if finite == len(rows) else max(epoch + finite - 1, self.start))

    def _roll_back(self, epoch: int) -> int:
        """The network at the start of ``epoch``, the history before it, and a checkpoint written since
        rewritten from there: the latest undo point at or before ``epoch``, then the epochs from there to
        ``epoch`` run again. They repeat bit for bit, which their metrics are checked to do against the
        history's; where they do not (a non-deterministic operation), or the replay is interrupted (Ctrl-C),
        the network stays at the undo point (with a warning for the first). Returns the epoch it is at."""
        point = self.undo.at_or_before(epoch)
        self.undo.restore(point)
        reached = point
        try:
            if point < epoch:
                if self._read(self.trainer.run(epoch - point)) == self._recorded(point, epoch):
                    reached = epoch
                else:
                    warnings.warn(f"epochs {point} to {epoch - 1}, run again from their undo point to roll "
                                  f"back to the start of epoch {epoch}, gave other metrics than the first "
                                  "time (a non-deterministic operation?): the network is at the start of "
                                  f"epoch {point} instead", RuntimeWarning, stacklevel=2)
        finally:
            if reached < epoch:  # a replay ran part-way, or differed: back to the undo point, never between
                self.undo.restore(point)
            self.history.truncate(reached)  # the history, too, stops where the weights do
            if self.checkpoint is not None and self.saved_at > reached:
                self._save_checkpoint(reached)  # it holds weights whose loss was never finite: replace it
        return reached

    def _recorded(self, first: int, stop: int) -> list[list[float]]:
        """The history's rows of epochs ``first`` to ``stop - 1`` (this fit's keys, in order)."""
        at = sum(1 for e in self.history.epoch if e < first)
        return [list(values) for values in zip(*(column[at:at + stop - first] for column in self.columns))]

    def _diverged(self, epoch: int, logs: dict, where: str) -> None:
        """After the roll-back to the start of ``epoch`` (its loss was finite): raise or warn."""
        to = ("the weights this fit started from" if epoch == self.start
              else f"the start of epoch {epoch}, the last with a finite loss")
        message = (f"the loss became non-finite {where} ({logs}); the network (weights, optimizer state, "
                   f"shuffle generator) was rolled back to {to}. Try a smaller learning rate, or scale "
                   "the inputs")
        if self.on_nonfinite == "raise":
            raise self.together.agreed(FloatingPointError(message))  # every rank saw the same losses
        warnings.warn(message, RuntimeWarning, stacklevel=5)  # at the caller of Network.fit
