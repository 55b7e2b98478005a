"""What ``fit(comm=...)`` does beyond one process's fit, as hooks the loop calls on every rank.

Every rank runs the same ``fit`` on all of ``X, Y``; ``batch_size`` is the global batch. Each batch of the
one seeded shuffle (the whole data in full batch) is cut into contiguous per-rank shards (the engine's
``shard``), whose losses divide by the whole batch's rows, so the ranks' gradients sum, in one in-place
allreduce of the flat gradient buffer per step, to the single process's: the same training, step for
step. An epoch's metrics are summed the same way (each rank's is its rows' part), once per epoch, so
every rank records the same history and takes the same decisions (a rollback, a checkpoint, a stop).

The start is collective and checked: the options and data are prepared on every rank, then every rank
learns whether any failed and whether the network, data and options agree (the same error on every rank,
never a hang); then rank 0's weights, optimizer state and shuffle generator are copied to the others.
From then on an exception on one rank aborts the job (:meth:`DataParallel.guard`), and a collective
that waits too long aborts it too (:meth:`~nn_xp.distributed.Communicator.watchdog`).

:data:`ONE_PROCESS` has the same hooks, each doing what ``fit`` did before there was a ``comm``.
"""
from __future__ import annotations

import contextlib
import inspect
import math
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
from array_api_compat import is_jax_namespace

from ..backends import to_numpy
from ..callbacks import Callback, StopTraining
from ..losses import LOSSES
from .communicator import Communicator
from .resolve import communicator
from .start import adopt, describe, differences, root_state

__all__ = ["ONE_PROCESS", "DataParallel", "OneProcess", "RankFailedError", "SharedCallbacks", "SharedTrainer",
           "data_parallel"]

#: the engines whose trainers take a shard and a gradient hook that may write the gradients in place
ENGINES = ("portable", "buffered", "fused")


class RankFailedError(RuntimeError):
    """Raised on every rank where another rank could not start a data-parallel ``fit`` (its error named)."""


class OneProcess:
    """``fit`` without a communicator: every hook of :class:`DataParallel`, doing nothing."""

    rank, size, writes_files = 0, 1, True

    def guard(self) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()

    def agree(self, fn: Callable, *args: Any, **kwargs: Any) -> Any:
        return fn(*args, **kwargs)

    def agreed(self, exc: BaseException) -> BaseException:
        return exc

    def check_same(self, net: Any, X: Any, Y: Any, validation: Any, settings: dict) -> None:
        pass

    def resume(self, path: Any) -> Any:
        return path

    def synchronize(self, net: Any, optimizer: Any, start: int, history: Any) -> tuple:
        return optimizer, start, history

    def engine_options(self) -> dict[str, Any]:
        return {}

    def shared(self, trainer: Any) -> Any:
        return trainer

    def callbacks(self, callbacks: list[Callback]) -> list[Callback]:
        return callbacks


ONE_PROCESS = OneProcess()


def data_parallel(comm: Any, net: Any) -> DataParallel | OneProcess:
    """The hooks for ``fit(comm=comm)`` of ``net``: :data:`ONE_PROCESS` for None (or ``"auto"`` outside a
    launcher), else a :class:`DataParallel` over its communicator (:func:`.resolve.communicator`)."""
    if comm is None:
        return ONE_PROCESS
    if is_jax_namespace(net.xp) or net.engine.name not in ENGINES:
        raise NotImplementedError(f"fit(comm=...) trains on the portable, buffered and fused engines (NumPy, "
                                  f"CuPy, torch, array-API libraries); this network runs the "
                                  f"{net.engine.name!r} engine on {net.backend.name}, which has no "
                                  "data-parallel step yet")
    loss = net.loss_fn
    if LOSSES.get(loss.name) is not loss and "m" not in inspect.signature(loss.value_and_delta).parameters:
        raise TypeError(f"fit(comm=...) needs loss {loss.name!r}'s value_and_delta(z, a, y, xp, m) to take "
                        "the denominator m, the whole batch's rows (each rank holds a shard of it)")
    resolved = communicator(comm, net.xp, net.device)
    return ONE_PROCESS if resolved is None else DataParallel(resolved)


class DataParallel:
    """One rank's hooks for a data-parallel ``fit`` over ``comm`` (:mod:`nn_xp.distributed.parallel`)."""

    def __init__(self, comm: Communicator) -> None:
        self.comm, self.rank, self.size = comm, comm.rank, comm.size
        self.writes_files = comm.rank == 0  # checkpoints, progress
        self.errors: list[BaseException] = []  # raised alike on every rank: no abort needed

    @contextlib.contextmanager
    def guard(self) -> Iterator[None]:
        """The fit, under the watchdog; an exception on this rank alone aborts the job (the others wait)."""
        with self.comm.watchdog():
            try:
                yield
            except BaseException as exc:
                if self.size > 1 and not any(exc is e for e in self.errors):
                    self.comm.fail(exc)  # MPI and torch end the processes here
                raise
            finally:
                self.errors.clear()

    def agreed(self, exc: BaseException) -> BaseException:
        """``exc``, marked as raised on every rank alike (from values every rank shares)."""
        self.errors.append(exc)
        return exc

    def agree(self, fn: Callable, *args: Any, **kwargs: Any) -> Any:
        """``fn(*args, **kwargs)`` here; where it raised on any rank, every rank raises: its own error, or a
        :class:`RankFailedError` naming the ranks that failed and why."""
        try:
            result, error = fn(*args, **kwargs), None
        except Exception as exc:
            result, error = None, exc
        reports = self.comm.allgather_obj(None if error is None else f"{type(error).__name__}: {error}")
        failed = [f"rank {r}: {text}" for r, text in enumerate(reports) if text is not None]
        if failed:
            error = error or RankFailedError(f"fit could not start on every rank ({'; '.join(failed)})")
            raise self.agreed(error)
        return result

    def check_same(self, net: Any, X: Any, Y: Any, validation: Any, settings: dict) -> None:
        """The same ``ValueError`` on every rank where the ranks' networks, data or options differ."""
        message = differences(self.comm.allgather_obj(self.agree(describe, net, X, Y, validation, settings)))
        if message is not None:
            raise self.agreed(ValueError(message))

    def resume(self, path: Any) -> Any:
        """``resume_from`` is read on rank 0 only (and its state then copied to the others)."""
        return path if self.rank == 0 else None

    def synchronize(self, net: Any, optimizer: Any, start: int, history: Any) -> tuple:
        """Rank 0's weights, optimizer (and state), shuffle generator, start epoch and history everywhere."""
        params = net.parameters
        for buf in [params.flat] if params.flat is not None else list(params):
            self.comm.bcast(buf)
        root = self.comm.bcast_obj(root_state(net, optimizer, start, history) if self.rank == 0 else None)
        if self.rank == 0:
            return self.agree(lambda: (optimizer, start, history))
        return self.agree(adopt, net, optimizer, root)

    def engine_options(self) -> dict[str, Any]:
        """The trainer's share of each batch, and the allreduce between back-propagation and the step."""
        return {"shard": (self.rank, self.size), "gradient_hook": self.sum_gradients}

    def sum_gradients(self, grads: Any) -> None:
        """The gradient hook: sum the ranks' gradients in place, in one allreduce (of the engine's flat
        buffer, or of the gradients packed into one and unpacked back)."""
        if grads.flat is not None:
            self.comm.allreduce(grads.flat)
            return
        xp = grads.xp
        flat = xp.concat([xp.reshape(g, (-1,)) for g in grads])
        self.comm.allreduce(flat)
        start = 0
        for i, g in enumerate(grads):
            n = math.prod(g.shape)
            grads[i] = xp.reshape(flat[start:start + n], tuple(g.shape))
            start += n

    def shared(self, trainer: Any) -> SharedTrainer:
        return SharedTrainer(trainer, self.comm)

    def callbacks(self, callbacks: list[Callback]) -> list[Callback]:
        return [SharedCallbacks(callbacks, self.comm)] if callbacks else []


class SharedTrainer:
    """An engine's trainer whose metrics are summed over the ranks: every rank gets the whole batch's."""

    def __init__(self, trainer: Any, comm: Communicator) -> None:
        self.trainer, self.comm = trainer, comm
        self.keys, self.chunk, self.full_batch = trainer.keys, trainer.chunk, trainer.full_batch
        self.optimizer, self.draws_from_rng = trainer.optimizer, trainer.draws_from_rng
        # a call stopped part-way by an error keeps none of its epochs: their metrics would need the ranks'
        self.completed: list = []

    def run(self, epochs: int = 1) -> np.ndarray:
        """As the trainer's ``run``, summed over the ranks: an ``(epochs, keys)`` host array."""
        rows = self.trainer.run(epochs)
        xp = self.trainer.xp
        with self.comm.watch("reading the epoch's metrics"):  # a device queue may wait on a collective
            values = to_numpy(xp.stack([xp.asarray(v) for row in rows for v in row]))
        host = np.array(values, dtype=np.float64).reshape(len(rows), len(self.keys))
        self.comm.allreduce(host)
        return host


class SharedCallbacks(Callback):
    """The fit's callbacks, run on every rank (they see the same logs); a :class:`StopTraining` on any rank
    stops every rank after the same epoch."""

    def __init__(self, callbacks: list[Callback], comm: Communicator) -> None:
        self.callbacks, self.comm = callbacks, comm

    def set_run(self, run: Any) -> None:
        super().set_run(run)
        for cb in self.callbacks:
            cb.set_run(run)

    def on_train_begin(self, net: Any) -> None:
        for cb in self.callbacks:
            cb.on_train_begin(net)

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        stop = None
        try:
            for cb in self.callbacks:
                cb.on_epoch_end(epoch, logs)
        except StopTraining as exc:
            stop = exc
        flag = np.array([0.0 if stop is None else 1.0])
        self.comm.allreduce(flag)
        if flag[0]:
            raise stop or StopTraining(f"a callback on another rank stopped training after epoch {epoch}")

    def on_train_end(self, net: Any) -> None:
        for cb in self.callbacks:
            cb.on_train_end(net)
