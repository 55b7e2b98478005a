"""The compiled engine (JAX): epochs as one XLA program, several epochs per call.

The training step is a pure function of (parameters, optimizer state, step
count, learning rate, batch): the model's own ``evaluate`` and
``value_and_gradient``, traced with the network bound to the traced parameters
(:func:`bound`), then the optimizer's one rule through ``Optimizer.apply``.
An epoch is one ``lax.scan`` over its batches, the shuffle drawn on the host
from ``net.rng`` as on every engine; a call runs up to ``chunk`` epochs in one
``lax.fori_loop`` and returns their metrics as one ``(epochs, keys)`` array,
which the loop reads back once. Nothing on the host is frozen into a trace:
each step's count and rate (a schedule is evaluated on the host, step by
step, and checked there) are sent with the call that runs it; with dropout,
so are the network's dropout seed and each step's count as integers, which the
program draws the step's masks from (``Network.dropout_masks``, as eagerly).

Programs are compiled ahead of time, once per shape: the network's layers,
loss, dtype and device, the data's shapes, the batch size, the epochs per
call, the optimizer's type and hyperparameters, the ``l1``/``l2`` penalty, the
dropout rates. The last :data:`MAX_PROGRAMS` are kept for later fits, of this
network or of any other of the same shape (a scikit-learn search fits many).

Nothing is donated. What goes into a call (parameters, optimizer state) is
what the loop's undo point holds, by reference since arrays are immutable, so
it must outlive the call; the two undo points keep the last two calls' inputs
alive whether or not they are donated, so donation would save no memory, only
cost a copy per call for the undo point. Inside a call, XLA updates the loop's
carry in place.
"""
from __future__ import annotations

import contextlib
import dataclasses
import importlib
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np  # the host side: shuffles and per-step rates are built there and sent once per call

from .. import _random
from .._host import permutation
from .._typing import Array
from .portable import FAST_FLOP_SECONDS, GradientHook, PortableEngine, Trainer
from .storage import Parameters, Snapshot

__all__ = ["CompiledEngine", "CompiledTrainer", "ImmutableParameters", "bound"]

#: the most epochs one call runs (``CompiledTrainer.chunk``)
MAX_CHUNK = 16384
#: about how long one call should last at least (by the cautious estimate below), so that the host's work per
#: call is small beside it
CALL_SECONDS = 0.25
#: the longest a call may last by that estimate: how long Ctrl-C may wait
MAX_CALL_SECONDS = 2.0
#: a guess on the slow side of what one epoch costs: per step, and per floating-point operation
STEP_SECONDS, FLOP_SECONDS = 5e-6, 1e-11
#: a call's fixed cost per byte of the values it works through: XLA's CPU runtime allocates a call's temporary
#: buffers afresh, and touching new memory costs about 0.5 microseconds per 4 KiB page (measured: 57,500
#: page faults, 30 ms, in each call on 784-1024-1024-10 with 8192 rows, an eighth of its epoch)
TOUCH_SECONDS_PER_BYTE = 1.25e-10
#: the most of a call that its fixed cost may take (by the fast estimate of the epochs)
FIXED_SHARE = 0.05
#: the most compiled programs kept, the least recently used dropped first
MAX_PROGRAMS = 32

_programs: OrderedDict[tuple, Any] = OrderedDict()  # what each was compiled for -> the compiled program


class ImmutableParameters(Parameters):
    """Parameters of immutable arrays (JAX): a snapshot holds references, a restore rebinds the items."""

    def snapshot(self, into: Snapshot | None = None) -> Snapshot:
        return Snapshot(list(self), self.xp)  # no one can write into these arrays: references are copies

    def restore(self, snapshot: Snapshot) -> None:
        self._check(snapshot)
        for i, (p, saved) in enumerate(zip(self, snapshot.arrays)):
            if not (type(saved) is type(p) and saved.device == p.device and saved.dtype == p.dtype):
                saved = self.xp.asarray(saved, dtype=p.dtype, device=p.device, copy=True)  # another backend's
            self[i] = saved


@contextlib.contextmanager
def bound(net: Any, params: Sequence[Array]) -> Iterator[None]:
    """The network at a traced point, for the length of a trace: its parameters are ``params`` and its
    device the compiled code's (None, as array-api-compat reports a traced array's device). Nothing else
    may use the network meanwhile (``fit`` holds it)."""
    kept = net.parameters, net.backend
    net.parameters = Parameters(list(params), net.xp)
    net.backend = dataclasses.replace(net.backend, device=None)
    try:
        yield
    finally:
        net.parameters, net.backend = kept


class CompiledEngine(PortableEngine):
    """Fit as compiled JAX programs (see the module's docstring); parameters as separate immutable arrays."""

    name = "compiled"

    def lay_out(self, weights: Sequence[Any], layers: Sequence[Any]) -> ImmutableParameters:
        return ImmutableParameters(list(super().lay_out(weights, layers)), self.backend.xp)

    def trainer(self, net: Any, optimizer: Any, X: Array, Y: Array,
                validation: tuple[Array, Array] | None = None, *, batch_size: int | None = None,
                shuffle: bool = True, gradient_hook: GradientHook | None = None,
                scoring: Any = None) -> CompiledTrainer:
        """A :class:`CompiledTrainer`; ``gradient_hook`` is traced into the program (it must be pure: it may
        replace the items of the list it is given, never read the host), as are ``scoring``'s metrics (sample
        weights ride with ``X`` and ``Y`` into the program's loop)."""
        return CompiledTrainer(self, net, optimizer, X, Y, validation, batch_size, shuffle, gradient_hook,
                               scoring)

    def program(self, key: tuple, build: Callable[[], Callable], args: tuple,
                report: Callable[[str], None] | None, what: str) -> Any:
        """The program compiled for ``key``: kept, or ``build()`` compiled ahead of time for ``args``."""
        program = _programs.get(key)
        if program is not None:
            _programs.move_to_end(key)
            return program
        start = time.perf_counter()
        program = importlib.import_module("jax").jit(build()).lower(*args).compile()
        if report is not None:
            report(f"nn_xp: compiled {what} for {self.backend} in {time.perf_counter() - start:.2f} s "
                   "(kept for later fits of this shape)")
        while len(_programs) >= MAX_PROGRAMS:
            _programs.popitem(last=False)
        _programs[key] = program
        return program

    @staticmethod
    def compiled_programs() -> int:
        """How many compiled programs are kept (for every network)."""
        return len(_programs)


class CompiledTrainer(Trainer):
    """One fit's epochs as compiled calls: ``run(n)`` returns an ``(n, len(keys))`` device array of metrics.

    ``chunk`` (a power of two) is the most epochs one call runs: enough for a
    call to last about :data:`CALL_SECONDS` by a cautious estimate of an
    epoch's cost. ``report``, where set, is told of each compilation.
    """

    compiles = True
    report: Callable[[str], None] | None = None

    def __init__(self, engine: CompiledEngine, net: Any, optimizer: Any, X: Array, Y: Array,
                 validation: tuple[Array, Array] | None, batch_size: int | None, shuffle: bool,
                 gradient_hook: GradientHook | None, scoring: Any = None) -> None:
        super().__init__(net, optimizer, X, Y, validation, batch_size, shuffle, gradient_hook,
                         scoring=scoring)
        self.engine = engine
        self.chunk = epochs_per_call(net.layers, self.m, self.steps, self.batch_rows,
                                     self.xp.finfo(net.dtype).bits // 8)
        self.step = _Step(net, optimizer, gradient_hook, self.m, None if self.full_batch else batch_size,
                          self.steps, self.classification, len(self.keys), self.draws_from_rng, scoring,
                          dropout=any(net.dropout))
        self.keys_by_size: dict[int, tuple] = {}  # the optimizer's settings are read once per fit

    def run(self, epochs: int = 1) -> Array:
        """Train ``epochs`` epochs (in calls of at most ``chunk``); one row of device metrics per epoch.

        Fewer rows come back when a learning-rate schedule refuses a step of a
        later epoch: the epochs before it are trained, the next call raises."""
        parts = []
        while epochs > 0:
            asked = min(epochs, self.chunk)
            parts.append(self.call(asked))
            epochs -= asked
            if parts[-1].shape[0] < asked:
                break
        return parts[0] if len(parts) == 1 else self.xp.concat(parts, axis=0)

    def call(self, epochs: int) -> Array:
        """One compiled call of ``epochs`` (at most ``chunk``) epochs."""
        net, opt, steps = self.net, self.optimizer, self.steps
        epochs, rates = self.rates(epochs)
        size = self.program_epochs(epochs)
        names = self.names
        state = opt.state_for(dict(zip(names, net.parameters)))
        schedule, orders = self.host_inputs(epochs, size, rates)
        args = (list(net.parameters), state, schedule, orders, self.X, self.Y, self.validation,
                np.int32(epochs))
        if self.scoring is not None:  # the sample weights (or None) of the training and validation rows
            args += ((self.W, self.scoring.validation_weight),)
        if self.step.dropout:  # the masks are drawn in the program, from the seed and each step's count
            args += (() if self.scoring is not None else ((None, None),)) + (self.dropout_inputs(size),)
        key = self.keys_by_size.get(size) or self.keys_by_size.setdefault(size, self.key(size, state))
        program = self.engine.program(key, lambda: self.step.epochs(size), args, self.report,
                                      self.describe(size))
        params, state, rows = program(*args)
        net.parameters[:] = params
        opt.state = state
        opt.iterations += epochs * steps
        return rows if epochs == size else rows[:epochs]

    def program_epochs(self, epochs: int) -> int:
        """The epochs of the program that runs ``epochs``: ``chunk``, so that one program serves a fit's
        calls, unless the call is much shorter (then the next power of two: one epoch at a time where
        callbacks read the host, without sending a chunk's padding every epoch)."""
        if 8 * epochs > self.chunk:
            return self.chunk
        return 1 << (epochs - 1).bit_length()

    def rates(self, epochs: int) -> tuple[int, list[float]]:
        """The per-step rates of ``epochs`` epochs, checked on the host; fewer whole epochs where the
        schedule refuses a later step (the first epoch's refusal raises now, as an eager step would)."""
        opt, steps = self.optimizer, self.steps
        try:
            return epochs, opt.learning_rates(epochs * steps)
        except ValueError:
            rates = []
            for step in range(opt.iterations, opt.iterations + epochs * steps):
                try:
                    rates.append(opt.learning_rate_at(step))
                except ValueError:
                    if len(rates) < steps:
                        raise
                    break
            done = len(rates) // steps
            return done, rates[:done * steps]

    def host_inputs(self, epochs: int, size: int, rates: list[float]) -> tuple[np.ndarray, np.ndarray | None]:
        """Each step's ``(count, rate)`` and each epoch's shuffle, padded to the program's ``size`` epochs,
        as host arrays (the compiled call moves them to the parameters' device, faster than ``device_put``).
        The shuffles come from ``net.rng`` in order, as epoch by epoch."""
        steps = self.steps
        schedule = np.zeros((size * steps, 2), dtype=self.net.dtype_name)
        first = self.optimizer.iterations + 1  # the rule sees the count of the step it applies
        schedule[:, 0] = np.arange(first, first + size * steps)
        schedule[:epochs * steps, 1] = rates
        orders = None
        if self.draws_from_rng:
            orders = np.zeros((size, self.m), dtype=np.int32)
            for e in range(epochs):
                orders[e] = permutation(self.net.rng, self.m)
        return schedule, orders

    def dropout_inputs(self, size: int) -> tuple[np.ndarray, np.ndarray]:
        """The dropout seed (as a key's words) and each step's count (uint32), the program's ``size`` epochs
        of them: what :meth:`nn_xp.Network.dropout_masks` draws a step's masks from, as eagerly."""
        first = self.optimizer.iterations + 1  # the count of the step the masks are for, as the schedule's
        counts = (np.arange(first, first + size * self.steps) % 2**32).astype(np.uint32)
        return _random.seed_words(self.net.dropout_seed), counts

    def key(self, size: int, state: dict) -> tuple:
        """What a program is compiled for: everything that is not an argument's value."""
        net = self.net
        shapes = [tuple(a.shape) for a in (self.X, self.Y, *(self.validation or ()))]
        slots = tuple((n, tuple(s)) for n, s in state.items())
        batch = None if self.full_batch else self.batch_size
        scored = None if self.scoring is None else self.scoring.key  # the metrics; which rows are weighted
        return (type(net), type(self.engine), net.layers, net.loss_fn, net.dtype_name, str(net.device), size,
                self.steps, batch, self.draws_from_rng, tuple(shapes), self.validation is not None, slots,
                scored,
                hyperparameters(self.optimizer), self.gradient_hook, net.penalty, net.dropout)

    def describe(self, size: int) -> str:
        batches = "full batch" if self.full_batch else f"{self.steps} batches of {self.batch_size}"
        return (f"{size} epoch(s) per call of {self.m} samples ({batches}, {type(self.optimizer).__name__}"
                f"{', validation' if self.validation is not None else ''})")


def hyperparameters(optimizer: Any) -> tuple:
    """The optimizer's type and plain settings (numbers, flags, names), which a trace reads as constants."""
    plain = (bool, int, float, str, tuple, type(None))
    settings = tuple(sorted((k, v) for k, v in vars(optimizer).items()
                            if not k.startswith("_") and k not in ("iterations", "learning_rate", "state")
                            and isinstance(v, plain)))
    return (type(optimizer), settings)


def epochs_per_call(layers: Sequence[Any], m: int, steps: int, rows: int | None = None,
                    itemsize: int = 4) -> int:
    """The epochs one call runs, a power of two: about :data:`CALL_SECONDS` of them by a cautious estimate,
    or more where the call's fixed cost (its temporary buffers touched afresh, :data:`TOUCH_SECONDS_PER_BYTE`:
    about three values per unit of each layer for a step's ``rows``) would be more than :data:`FIXED_SHARE` of
    it by a fast estimate; never more than :data:`MAX_CALL_SECONDS` by the cautious one, nor
    :data:`MAX_CHUNK`."""
    weights = sum(layer.n_in * layer.n_out for layer in layers)
    flops = 6.0 * m * weights  # forward 2, backward 4 per weight
    slow = steps * STEP_SECONDS + flops * FLOP_SECONDS
    fast = steps * STEP_SECONDS + flops * FAST_FLOP_SECONDS
    fixed = 3.0 * (m if rows is None else rows) * sum(layer.n_out for layer in layers) * itemsize \
        * TOUCH_SECONDS_PER_BYTE
    wanted = max(CALL_SECONDS / slow, fixed / (FIXED_SHARE * fast))
    up = 1 << max(0, math.ceil(math.log2(wanted)))  # the power of two at or above what is wanted
    n = int(max(1.0, min(up, MAX_CALL_SECONDS / slow, MAX_CHUNK)))
    return 1 << (n.bit_length() - 1)


@dataclasses.dataclass(frozen=True, eq=False)
class _Step:
    """The pure functions a program is traced from; it holds the network and optimizer, never the data."""

    net: Any
    optimizer: Any
    hook: GradientHook | None
    m: int
    batch_size: int | None
    steps: int
    classification: bool
    n_keys: int
    shuffled: bool
    scoring: Any = None  # sample weights or metrics= (nn_xp.metrics.Scoring): traced into the program
    dropout: bool = False  # each step draws dropout masks from the program's noise argument

    def epochs(self, size: int) -> Callable:
        """``program(params, state, schedule, orders, X, Y, validation, n, weights, noise)``: ``n <= size``
        epochs (``noise``: dropout's seed words and every step's count, or None)."""
        lax, xp, net = importlib.import_module("jax.lax"), self.net.xp, self.net
        steps, dtype = self.steps, self.net.dtype

        def program(params, state, schedule, orders, X, Y, validation, n, weights=(None, None), noise=None):
            scoring, (W, Wv) = self.scoring, weights
            if scoring is not None:  # the data's weight sums (r2: spreads), once per call
                context = scoring.prepare(Y, W, xp)
                held = None if validation is None else scoring.prepare(validation[1], Wv, xp)

            def epoch(e, carry):
                params, state, rows = carry
                rates = lax.dynamic_slice_in_dim(schedule, e * steps, steps)  # (steps, 2)
                scored = () if scoring is None else (W, context)
                seeded = None  # dropout: the seed, and this epoch's step counts
                if noise is not None:
                    seeded = (noise[0], lax.dynamic_slice_in_dim(noise[1], e * steps, steps))  # (steps,)
                if self.batch_size is None:
                    params, state, metrics = self.full_epoch(params, state, rates, X, Y, *scored,
                                                             noise=seeded)
                else:
                    order = orders[e] if self.shuffled else None
                    params, state, metrics = self.batched_epoch(params, state, rates, order, X, Y, *scored,
                                                                noise=seeded)
                if validation is not None:
                    with bound(net, params):
                        metrics = metrics + (net.measure(*validation) if scoring is None
                                             else scoring.measure(net, *validation, Wv, held))
                return params, state, lax.dynamic_update_index_in_dim(rows, xp.stack(metrics), e, 0)

            rows = xp.zeros((size, self.n_keys), dtype=dtype)  # (epochs, keys)
            return lax.fori_loop(0, n, epoch, (params, state, rows))

        return program

    def full_epoch(self, params: list, state: dict, rates: Array, X: Array, Y: Array, W: Array | None = None,
                   context: Any = None, *, noise: tuple | None = None) -> tuple:
        """The full batch's step (``noise``: dropout's seed and the epoch's step counts, or None)."""
        step_noise = None if noise is None else (noise[0], noise[1][0])
        params, state, loss, correct = self.batch(params, state, rates[0], X, Y, W, noise=step_noise)
        if self.scoring is not None:
            return params, state, [loss, *self.scoring.finish(correct, context, self.net.xp)]
        return params, state, [loss] + ([correct / self.m] if self.classification else [])

    def batched_epoch(self, params: list, state: dict, rates: Array, order: Array | None, X: Array,
                      Y: Array, W: Array | None = None, context: Any = None, *,
                      noise: tuple | None = None) -> tuple:
        """The shuffled mini-batches (``order``; None: in order), the last partial one included; with
        ``scoring``, each batch's rows' weights ``W`` ride along and the metrics' sums are the carry."""
        lax, xp = importlib.import_module("jax.lax"), self.net.xp
        m, size, scoring = self.m, self.batch_size, self.scoring
        if order is not None:
            X, Y = xp.take(X, order, axis=0), xp.take(Y, order, axis=0)
            W = None if W is None else xp.take(W, order, axis=0)
        full, rest = divmod(m, size)

        def body(carry, batch):
            params, state, loss, correct = carry
            xb, yb, rate, count, *wb = batch  # count: dropout's step count, or None; wb: [the rows' weights]
            step_noise = None if count is None else (noise[0], count)
            params, state, batch_loss, batch_correct = self.batch(params, state, rate, xb, yb, *wb,
                                                                  noise=step_noise)
            loss = loss + batch_loss * (xb.shape[0] / m)  # the mean over the epoch's samples
            if scoring is not None:
                correct = scoring.add(correct, batch_correct)
            elif self.classification:
                correct = correct + batch_correct
            return (params, state, loss, correct), None

        zero = xp.zeros((), dtype=self.net.dtype)
        weights = () if W is None else (xp.reshape(W[:full * size, ...], (full, size, 1)),)
        batches = (xp.reshape(X[:full * size, ...], (full, size, X.shape[1])),
                   xp.reshape(Y[:full * size, ...], (full, size, Y.shape[1])), rates[:full],
                   None if noise is None else noise[1][:full], *weights)  # (batches, ...)
        sums = zero if scoring is None else scoring.zeros(Y.shape[1], self.net.dtype, None, xp)
        carry, _ = lax.scan(body, (params, state, zero, sums), batches)
        if rest:
            carry, _ = body(carry, (X[full * size:, ...], Y[full * size:, ...], rates[full],
                                    None if noise is None else noise[1][full],
                                    *(() if W is None else (W[full * size:, ...],))))
        params, state, loss, correct = carry
        if scoring is not None:
            return params, state, [loss, *scoring.finish(correct, context, xp)]
        return params, state, [loss] + ([correct / m] if self.classification else [])

    def batch(self, params: list, state: dict, rate: Array, X: Array, Y: Array, W: Array | None = None, *,
              noise: tuple | None = None) -> tuple:
        """One step: the model's forward pass and back-propagation, the hook, the optimizer's rule (``W``:
        the rows' sample weights; with ``scoring``, the metrics' sums come back where the count does;
        ``noise``: dropout's seed and this step's count, which its masks are drawn from)."""
        net, xp = self.net, self.net.xp
        with bound(net, params):
            masks = None if noise is None else net.dropout_masks(X.shape[0], noise[1], seed=noise[0])
            values = net.evaluate(X, masks=masks)
            if self.scoring is not None:
                correct = self.scoring.update(values[-1][1], Y, W, xp)
            else:
                correct = net.loss_fn.correct(values[-1][1], Y, xp) if self.classification else None
            total = None  # weighted_mean: the mean's denominator is the batch's sum of weights (traced)
            if self.scoring is not None and self.scoring.weighted_mean:
                total = self.scoring.denominator(W, xp)
            loss, grads = net.value_and_gradient(values, Y, m=total, w=W, masks=masks)
        if self.hook is not None:
            grads = Parameters(grads, xp)
            self.hook(grads)
        names = net.param_names
        new, state = self.optimizer.apply(dict(zip(names, params)), dict(zip(names, grads)), state,
                                          rate[0], rate[1], xp)  # rate: (step count, learning rate)
        return [new[name] for name in names], state, loss, correct
