"""The portable engine: fit's step through the model's own math, on any array-API library.

Each batch runs ``net.evaluate`` and ``net.value_and_gradient`` (the blog's
forward pass and back-propagation), then the gradient hook, then the
optimizer's step. Nothing is reused between batches: every array is new, which
is all the array API offers and all an immutable library (JAX) allows.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from .. import _kernels as K
from .. import _random
from .._host import concatenate_flat, permutation
from .._typing import Array
from ..activations import IDENTITY
from .storage import FlatParameters, Parameters

__all__ = ["GradientHook", "INFERENCE_CHUNK_ELEMENTS", "PortableEngine", "Trainer", "chunk_rows",
           "eager_epochs_per_call"]

#: inference goes through the network this many values of its widest layer at a time (by default): 8 MiB in
#: float32, rows enough for the matrix products to run at full speed (smaller chunks lose to thread start-up
#: in the BLAS on a busy machine), and predicting on a million rows needs no more than on a few thousand
INFERENCE_CHUNK_ELEMENTS = 1 << 21

#: what one call of fit's loop costs beside its epochs (the undo point, reading the metrics back, the
#: history), about 7 microseconds measured on torch and NumPy, plus copying the parameters into the undo point
LOOP_CALL_SECONDS, COPY_SECONDS_PER_BYTE = 8e-6, 1.25e-10
#: a guess on the fast side of an epoch: per layer and step (an eager engine's dispatch), per floating-point
#: operation (a 2-core CPU's float32 products; the compiled engine sizes its calls' fixed cost by it too)
LAYER_STEP_SECONDS, FAST_FLOP_SECONDS = 4e-6, 2.5e-12
#: an eager call runs epochs enough for the loop's own cost to be at most this share of it, and at most
#: MAX_EAGER_CHUNK of them (epochs that short: a call lasts a few milliseconds)
LOOP_SHARE, MAX_EAGER_CHUNK = 0.02, 64

#: called with the gradients (a :class:`Parameters`, flat where the engine keeps them so) after
#: back-propagation and before the optimizer's step; it may change them in place (an allreduce)
GradientHook = Callable[[Parameters], None]


class PortableEngine:
    """How ``fit`` runs on a backend without ``out=``: parameters as separate arrays, the model's math as is.

    One engine object belongs to one network (``net.engine``); it lays out the
    network's parameters and makes a :class:`Trainer` for each ``fit``.
    """

    name = "portable"

    def __init__(self, backend: Any, dtype: Any) -> None:
        self.backend, self.dtype = backend, dtype
        #: the loop's two undo points of the last fit, ``(weights, optimizer state)`` snapshots whose device
        #: buffers the next fit writes into instead of allocating its own (see ``nn_xp.training``)
        self.undo_buffers: list[tuple[Any, Any]] = []

    def lay_out(self, weights: Sequence[Any], layers: Sequence[Any]) -> Parameters:
        """The parameters ``[W0, b0, ...]`` on the device from checked host arrays (always copies: training
        updates in place and must never write into the caller's arrays). Where the library's reshaped
        slices are views (torch), they are views of one flat buffer: an undo point is then one copy.

        The buffers kept between fits stay: an engine serves one network (its layers, dtype and device
        fixed), so new weights have the layout they were made for (``set_weights`` between fits, as a
        search or a benchmark resets a network, then allocates nothing anew)."""
        xp, device = self.backend.xp, self.backend.device
        if K.flat_portable_parameters(xp):
            flat = xp.asarray(concatenate_flat(list(weights)), dtype=self.dtype, device=device)
            return FlatParameters(flat, [(layer.n_out, layer.n_in) for layer in layers], False, xp)
        return Parameters([xp.asarray(h, dtype=self.dtype, device=device, copy=True) for h in weights], xp)

    def trainer(self, net: Any, optimizer: Any, X: Array, Y: Array,
                validation: tuple[Array, Array] | None = None, *, batch_size: int | None = None,
                shuffle: bool = True,
                gradient_hook: GradientHook | None = None, shard: tuple[int, int] | None = None,
                scoring: Any = None) -> Trainer:
        """A :class:`Trainer` for one ``fit`` of ``net`` on model arrays ``(X, Y)``; ``shard=(rank, size)``
        trains on this rank's share of each batch (see :meth:`Trainer.rows`); ``scoring``: the sample weights
        and metrics (a :class:`~nn_xp.metrics.Scoring`), None for plain fit's."""
        return Trainer(net, optimizer, X, Y, validation, batch_size, shuffle, gradient_hook, shard, scoring)

    def release(self) -> None:
        """Free buffers kept between fits (here the loop's undo points)."""
        self.undo_buffers = []

    def fit_memory(self, layers: Sequence[Any], batch_rows: int) -> dict[str, int]:
        """Bytes of what one step of ``fit`` on ``batch_rows`` rows allocates, besides the data:
        ``"activations"``, every layer's ``Z`` and ``A`` (an identity's ``A`` is its ``Z``), kept for
        back-propagation, and ``"gradients"``, ``dW`` and ``db``. Here both are new arrays every step
        (the library's allocator recycles them; a compiled engine's XLA plans its own). The optimizer's
        state and the loop's undo points are not the engine's: see ``Network.summary``."""
        size = self.backend.xp.finfo(self.dtype).bits // 8
        values = sum(layer.n_out * (1 if layer.activation is IDENTITY else 2) for layer in layers)
        weights = sum(layer.n_out * (layer.n_in + 1) for layer in layers)
        return {"activations": batch_rows * values * size, "gradients": weights * size}

    def outputs(self, net: Any, X: Array, batch_size: int | None = None) -> Iterator[tuple[int, int, Array,
                                                                                            Array]]:
        """The output layer's values for model array ``X``, chunk by chunk: ``(lo, hi, Z, A)`` for rows
        ``lo:hi`` (``batch_size`` rows at a time; None: :func:`chunk_rows`'s choice).

        A chunk's arrays may be buffers that the next chunk overwrites: use them before asking for it."""
        m = X.shape[0]
        rows = chunk_rows(net.layers, m, batch_size)
        for lo in range(0, m, rows):
            hi = min(lo + rows, m)
            yield (lo, hi, *net.output(X if hi - lo == m else X[lo:hi, ...]))

    def predict(self, net: Any, X: Array, batch_size: int | None = None) -> Array:
        """The output layer's activations for model array ``X`` (a new array), chunked as :meth:`outputs`."""
        parts = [a for *_, a in self.outputs(net, X, batch_size)]
        return parts[0] if len(parts) == 1 else self.backend.xp.concat(parts, axis=0)


class Trainer:
    """One ``fit``'s epochs: ``run(n)`` trains ``n`` epochs and returns each one's metrics as device scalars.

    ``keys`` names the metrics of a row: the network's (``loss``, ``accuracy``), then
    the same on the validation data (``val_loss``, ...). In full batch the
    training metrics describe the weights at the start of the epoch (the blog's
    print); with mini-batches they are the mean over the epoch's batches.
    ``chunk`` is how many epochs one ``run`` call is best given: one where an
    epoch is long beside the loop's own cost per call, several for short epochs
    (:func:`eager_epochs_per_call`; a compiled engine sizes its own).

    With ``shard=(rank, size)`` (data-parallel ``fit``) every rank holds all of ``X``,
    ``Y``, and each batch of the shared shuffle is cut into ``size`` contiguous shards:
    this trainer steps on its own, dividing the loss by the whole batch's rows, and
    its metrics are its rows' part of the batch's (summed over the ranks, they are the
    batch's). The gradient hook (an allreduce) makes the step the whole batch's.

    With ``scoring`` (sample weights or ``fit(metrics=...)``: :class:`~nn_xp.metrics.Scoring`)
    the epochs run :meth:`scored_epoch` instead: each batch gathers its rows' weights with
    ``X`` and ``Y``, weights the loss and its gradient, and adds the metrics' sums, which the
    epoch finishes once. Without it, nothing of that runs (decided here, once per fit).

    With dropout (``net.dropout``), ``batch`` is wrapped here, once per fit, to draw each
    step's masks (:meth:`masks`) and hand them to the forward pass and back-propagation;
    without it, the trainer's own ``batch`` runs, as before there was dropout.
    """

    def __init__(self, net: Any, optimizer: Any, X: Array, Y: Array, validation: tuple[Array, Array] | None,
                 batch_size: int | None, shuffle: bool, gradient_hook: GradientHook | None,
                 shard: tuple[int, int] | None = None, scoring: Any = None) -> None:
        self.net, self.optimizer, self.X, self.Y, self.validation = net, optimizer, X, Y, validation
        self.m = X.shape[0]
        self.full_batch = batch_size is None or batch_size >= self.m
        self.batch_size, self.shuffle, self.gradient_hook = batch_size, shuffle, gradient_hook
        self.shard = shard
        self.steps = 1 if self.full_batch else -(-self.m // batch_size)  # batches per epoch
        self.chunk = eager_epochs_per_call(net.layers, self.batch_rows, self.steps, net.dtype, net.xp)
        self.completed: list[list[Array]] = []  # the rows of the epochs the current call has done (run)
        # the l1/l2 penalty: added once to a batch's gradient, so by one rank of a data-parallel fit (rank 0)
        self.penalty = net.penalty if shard is None or shard[0] == 0 else None
        self.names, self.xp = net.param_names, net.xp
        names = net.metric_names
        self.keys = names + ([f"val_{k}" for k in names] if validation is not None else [])
        self.classification = net.loss_fn.correct is not None
        self.scoring = scoring
        if scoring is not None:  # the whole data's weight sums (and r2's spread): once per fit, on the device
            self.keys = scoring.keys(validation is not None)
            self.W = scoring.weight
            self.context = scoring.prepare(Y, self.W, self.xp)
            self.validation_context = (None if validation is None else
                                       scoring.prepare(validation[1], scoring.validation_weight, self.xp))
        if any(net.dropout):  # dropout: each step draws its masks (decided here, once per fit)
            self.draw = _random.uniform_source(self.xp, net.device)
            self.batch = self.with_dropout(self.batch)

    @property
    def draws_from_rng(self) -> bool:
        """Whether an epoch draws from ``net.rng`` (its shuffle), which an undo point must then keep."""
        return self.shuffle and not self.full_batch

    def run(self, epochs: int = 1) -> list[list[Array]]:
        """Train ``epochs`` epochs; one row of device metrics (in ``keys`` order) per epoch.

        ``completed`` is the list of rows being built: where an error or Ctrl-C stops the call part-way,
        it holds the epochs done before it (the loop keeps them)."""
        self.completed = rows = []
        for _ in range(epochs):
            rows.append(self.epoch())
        return rows

    def rows(self, n: int) -> tuple[int, int]:
        """This trainer's rows ``lo:hi`` of a batch of ``n``: all of them, or with a ``shard`` the rank's
        contiguous share (sizes differ by one at most; a batch smaller than the ranks leaves some none)."""
        if self.shard is None:
            return 0, n
        rank, size = self.shard
        return n * rank // size, n * (rank + 1) // size

    @property
    def batch_rows(self) -> int:
        """The most rows one step takes here: the batch's, or the largest shard of it."""
        n = self.m if self.full_batch else self.batch_size
        return n if self.shard is None else -(-n // self.shard[1])

    def epoch(self) -> list[Array]:
        """One epoch: the full batch, or the shuffled mini-batches, the last partial one included."""
        if self.scoring is not None:
            return self.scored_epoch()
        if self.full_batch:
            if self.shard is None:
                loss, correct = self.batch(self.X, self.Y)
            else:
                lo, hi = self.rows(self.m)
                loss, correct = self.batch(self.X[lo:hi, ...], self.Y[lo:hi, ...], self.m)
            metrics = [loss] if correct is None else [loss, correct / self.m]
        else:
            m = self.m
            order = self.order()
            loss = correct = 0.0
            for start in range(0, m, self.batch_size):
                n = min(self.batch_size, m - start)  # in bounds: the array API leaves overshoot unspecified
                lo, hi = self.rows(n)
                xb, yb = self.gather(order[start + lo:start + hi])
                batch_loss, batch_correct = self.batch(xb, yb, n)
                loss = loss + batch_loss * (n / m)
                if batch_correct is not None:
                    correct = correct + batch_correct
            metrics = [loss] + ([correct / m] if self.classification else [])
        if self.validation is not None:
            metrics += self.validation_metrics()
        return metrics

    def order(self) -> Array:
        """The epoch's order of the rows on the device: a shuffle drawn from ``net.rng``, or as they are."""
        xp, m = self.xp, self.m
        if self.shuffle:
            return xp.asarray(permutation(self.net.rng, m), device=self.net.device)
        return xp.arange(m, device=self.net.device)

    def scored_epoch(self) -> list[Array]:
        """:meth:`epoch` with sample weights or ``metrics=``: each batch's rows' weights gathered with them,
        the metrics' sums added over the batches and finished once (see :mod:`nn_xp.metrics`)."""
        scoring, W, m = self.scoring, self.W, self.m
        mean = scoring.weighted_mean  # each batch's mean by its weights' sum (the whole batch's, every rank)
        if self.full_batch:
            lo, hi = self.rows(m)
            total = (scoring.denominator(W, self.xp),) if mean else ()
            if self.shard is None:
                loss, sums = self.batch(self.X, self.Y, None, W, *total)
            else:
                loss, sums = self.batch(self.X[lo:hi, ...], self.Y[lo:hi, ...], m,
                                        None if W is None else W[lo:hi, ...], *total)
        else:
            order, loss, sums, total = self.order(), 0.0, None, ()
            for start in range(0, m, self.batch_size):
                n = min(self.batch_size, m - start)  # in bounds: the array API leaves overshoot unspecified
                lo, hi = self.rows(n)
                idx = order[start + lo:start + hi]
                xb, yb = self.gather(idx)
                wb = None if W is None else self.xp.take(W, idx, axis=0)  # the weights ride with the rows
                if mean:  # a shard sums the whole batch's weights, which it holds: no communication
                    whole = wb if self.shard is None else self.xp.take(W, order[start:start + n], axis=0)
                    total = (scoring.denominator(whole, self.xp),)
                batch_loss, batch_sums = self.batch(xb, yb, n, wb, *total)
                loss = loss + batch_loss * (n / m)
                sums = batch_sums if sums is None else scoring.add(sums, batch_sums)
        metrics = [loss, *scoring.finish(sums, self.context, self.xp)]
        if self.validation is not None:
            metrics += self.validation_metrics()
        return metrics

    def scored_validation(self) -> list[Array]:
        """:meth:`validation_metrics` with sample weights or ``metrics=``; a shard's metrics are finished with
        the whole validation data's weight sums, so that the ranks' parts add up."""
        scoring, net, (Xv, Yv) = self.scoring, self.net, self.validation
        Wv = scoring.validation_weight
        if self.shard is None:
            return scoring.measure(net, Xv, Yv, Wv, self.validation_context)
        m = Xv.shape[0]
        lo, hi = self.rows(m)
        if lo == hi:  # fewer validation rows than ranks
            return [self.xp.zeros((), dtype=net.dtype, device=net.device) for _ in scoring.names]
        Wv = None if Wv is None else Wv[lo:hi, ...]
        loss, *rest = scoring.measure(net, Xv[lo:hi, ...], Yv[lo:hi, ...], Wv, self.validation_context)
        return [loss if scoring.weighted_mean else loss * ((hi - lo) / m), *rest]  # measure: a part already

    def validation_metrics(self) -> list[Array]:
        """The metrics on the validation data; with a ``shard``, this rank's rows' part of them."""
        if self.scoring is not None:
            return self.scored_validation()
        if self.shard is None:
            return self.net.measure(*self.validation)
        Xv, Yv = self.validation
        m = Xv.shape[0]
        lo, hi = self.rows(m)
        if lo == hi:  # fewer validation rows than ranks
            net = self.net
            return [self.xp.zeros((), dtype=net.dtype, device=net.device) for _ in net.metric_names]
        return [v * ((hi - lo) / m) for v in self.net.measure(Xv[lo:hi, ...], Yv[lo:hi, ...])]

    def gather(self, idx: Array) -> tuple[Array, Array]:
        """The batch's rows of the training data."""
        return self.xp.take(self.X, idx, axis=0), self.xp.take(self.Y, idx, axis=0)

    def batch(self, X: Array, Y: Array, m: int | None = None, w: Array | None = None,
              total: Array | None = None, *, masks: list[Array | None] | None = None) -> tuple[Array, Any]:
        """One step on a batch: forward, back-propagation, the gradient hook, the optimizer.

        Returns the batch's loss and (for classification) how many it got right, as device scalars.
        ``m``: the rows the loss is a mean over (None: ``Y``'s; a shard's batch has more). With
        ``scoring``: ``w`` the rows' sample weights (or None), and the metrics' sums instead of the count;
        ``total`` (``weighted_mean``): the whole batch's sum of weights, the mean's denominator instead.
        ``masks``: the step's dropout masks for these rows (:meth:`masks`), or None."""
        net = self.net
        values = net.evaluate(X, check_input=False, masks=masks)  # fit made X and Y the model's arrays, once
        if self.scoring is not None:
            correct = self.scoring.update(values[-1][1], Y, w, self.xp)
        else:
            correct = net.loss_fn.correct(values[-1][1], Y, self.xp) if self.classification else None
        loss, grads = net.value_and_gradient(values, Y, check_input=False,
                                             m=(None if m == Y.shape[0] else m) if total is None else total,
                                             penalize=self.penalty is not None, w=w, masks=masks)
        if self.gradient_hook is not None:
            grads = Parameters(grads, self.xp)
            self.gradient_hook(grads)
        self.optimizer.step(net.parameters, grads, self.names, xp=self.xp)
        return loss, correct

    def with_dropout(self, batch: Callable[..., tuple[Array, Any]]) -> Callable[..., tuple[Array, Any]]:
        """``batch`` given each step's dropout masks (:meth:`masks`): what a fit of a network with dropout
        calls in its place."""
        def dropout_batch(X: Array, Y: Array, m: int | None = None, *args: Any,
                          **kwargs: Any) -> tuple[Array, Any]:
            return batch(X, Y, m, *args, masks=self.masks(Y.shape[0] if m is None else m), **kwargs)

        return dropout_batch

    def masks(self, n: int) -> list[Array | None]:
        """The dropout masks of the optimizer's next step for a batch of ``n`` rows, this trainer's rows of
        them: with a ``shard``, every rank draws the whole batch's masks and takes its own rows, so that the
        step is one process's."""
        masks = self.net.dropout_masks(n, self.optimizer.iterations + 1, draw=self.draw)
        lo, hi = self.rows(n)
        if hi - lo == n:
            return masks
        return [None if k is None else k[lo:hi, ...] for k in masks]


def chunk_rows(layers: Sequence[Any], m: int, batch_size: int | None) -> int:
    """The rows per chunk of inference on ``m`` rows: ``batch_size``, or enough for about
    :data:`INFERENCE_CHUNK_ELEMENTS` values of the widest layer."""
    if batch_size is None:
        batch_size = max(1, INFERENCE_CHUNK_ELEMENTS // max(layer.n_out for layer in layers))
    return max(1, min(m, batch_size))


def eager_epochs_per_call(layers: Sequence[Any], rows: int, steps: int, dtype: Any, xp: Any) -> int:
    """The epochs one call of an eager trainer runs: enough for the loop's own cost per call
    (:data:`LOOP_CALL_SECONDS`, and the undo point's copy) to be at most :data:`LOOP_SHARE` of the call by a
    fast estimate of the epochs (``steps`` steps of ``rows`` rows), at most :data:`MAX_EAGER_CHUNK`.

    One for any epoch of more than about half a millisecond; tens for the blog's network, whose epoch
    costs a few times the loop's per-call work."""
    size = sum(layer.n_out * (layer.n_in + 1) for layer in layers)  # parameters
    epoch = steps * (len(layers) * LAYER_STEP_SECONDS + 6.0 * rows * size * FAST_FLOP_SECONDS)
    loop = LOOP_CALL_SECONDS + 2 * size * xp.finfo(dtype).bits // 8 * COPY_SECONDS_PER_BYTE
    return max(1, min(MAX_EAGER_CHUNK, math.ceil(loop / (LOOP_SHARE * epoch))))
