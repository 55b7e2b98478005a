"""Optimizers: SGD, Adam, AdamW, RMSprop, each optionally clipping the gradients' global norm.

An optimizer updates parameters in place from gradients with the same names
and shapes. Its state (momentum, Adam's moments) is keyed by parameter name
and allocated lazily on the parameter's device with ``xp.zeros_like``. The
learning rate is a Python float or a schedule ``lr(step) -> float`` evaluated
on the host (:mod:`nn_xp.schedules`, re-exported here), so no step ever reads
the device. ``clip_norm`` scales the gradients down to that global norm with a
scale computed on the device.

Immutable arrays (JAX) inside a compiled function get :meth:`Optimizer.apply`,
the same rule as a pure function of the parameters, the state, the step count
and the rate (traced values all), instead of :meth:`Optimizer.step`, which
counts steps on the host.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from numbers import Real
from typing import Any

from array_api_compat import array_namespace, is_numpy_array, is_writeable_array
from array_api_compat import device as array_device

from . import _kernels as K
from ._typing import Array
from ._validation import check_fraction, check_positive, short
from .backends import device_context, to_numpy
from .schedules import CosineDecay, ExponentialDecay, Schedule, StepDecay, Warmup

__all__ = ["SGD", "Adam", "AdamW", "CosineDecay", "ExponentialDecay", "Optimizer", "OptimizerSnapshot",
           "RMSprop", "Schedule", "StepDecay", "Warmup", "get_optimizer"]

_EMPTY: dict = {}


class Optimizer:
    """Base class: a learning rate (float or schedule), a step count and per-parameter state.

    A subclass writes its rule once, in :meth:`update`; the base class applies it
    to a list of parameters one by one, or, where parameters and gradients are
    views of one flat buffer each (:class:`~nn_xp.engine.FlatParameters`), to all
    of them at once in one call per operation. A rule that is not elementwise
    (one that looks at a whole parameter, such as a per-layer norm) sets
    ``elementwise = False`` and is always applied parameter by parameter.

    ``clip_norm`` (None: no clipping) scales every gradient by
    ``min(1, clip_norm / norm)``, ``norm`` being the global L2 norm of all the
    gradients together, before the rule sees them: Keras' ``global_clipnorm``
    (Keras' ``clipnorm`` clips each array by its own norm; PyTorch's
    ``clip_grad_norm_`` is the global one). See :meth:`clip_gradients`.
    """

    #: names of the per-parameter state slots, e.g. ("m", "v")
    slots: tuple[str, ...] = ()
    #: whether ``update`` acts element by element, so one call may cover every parameter at once
    elementwise = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "_update" in vars(cls):  # the rule of nn_xp 0.1; ignoring it silently would train with another
            raise TypeError(f"{cls.__name__} defines _update(name, p, g, lr, xp), which nn_xp no longer "
                            "calls: write the rule as update(self, p, g, state, lr, xp) (Optimizer.update)")

    def __init__(self, learning_rate: float | Schedule, clip_norm: float | None = None) -> None:
        self.set_learning_rate(learning_rate)
        if clip_norm is not None:
            check_positive(clip_norm, "clip_norm")
        self.clip_norm = None if clip_norm is None else float(clip_norm)
        self.iterations = 0
        self.state: dict[str, dict[str, Array]] = {}
        self._flat: tuple[list[Array], Any] | None = None  # the slots as flat buffers, see _flat_state

    def set_learning_rate(self, learning_rate: float | Schedule) -> None:
        """A new rate (or schedule) from the next step on; the state is kept."""
        if not callable(learning_rate):
            check_positive(learning_rate, "learning_rate")
        self.learning_rate = learning_rate if callable(learning_rate) else float(learning_rate)

    def current_learning_rate(self) -> float:
        """The rate of the next step: a schedule's value is checked on the host before any step uses it."""
        return self.learning_rate_at(self.iterations)

    @property
    def plain_descent(self) -> bool:
        """Whether a step is ``p -= lr * g`` and nothing else (:class:`SGD` without momentum, weight decay or
        ``clip_norm``): an engine may then apply it itself, fused into back-propagation, calling
        :meth:`count_step` for each step in place of :meth:`step`."""
        return False

    def count_step(self) -> float:
        """Count the next step and return its rate: what :meth:`step` does besides applying the rule, for an
        engine that applies a :attr:`plain_descent` step itself."""
        lr = self.current_learning_rate()
        self.iterations += 1
        return lr

    def learning_rates(self, n: int) -> list[float]:
        """The rates of the next ``n`` steps (from step ``iterations`` on), each checked on the host as
        :meth:`current_learning_rate` checks it: what a compiled engine sends along with ``n`` steps."""
        lr = self.learning_rate
        if not callable(lr):
            return [lr] * n
        return [self.learning_rate_at(step) for step in range(self.iterations, self.iterations + n)]

    def learning_rate_at(self, step: int) -> float:
        """The rate of the step taken at ``iterations == step``: a schedule's value, checked on the host."""
        lr = self.learning_rate
        if not callable(lr):
            return lr
        value = lr(step)
        if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value) or value < 0:
            raise ValueError(f"the learning-rate schedule {lr!r} gave {value!r} for step {step}; "
                             "it must give a finite number >= 0")
        return float(value)

    def update(self, p: Array, g: Array, state: dict[str, Array], lr: float, xp: Any) -> Array:
        """The rule: one step on ``p`` from ``g`` at rate ``lr``; returns the new ``p``.

        ``p`` and ``state[slot]`` are updated in place where the library allows
        (then ``p`` itself is returned), else new arrays are returned and put in
        ``state``. ``g`` may be overwritten. ``self.iterations`` already counts
        this step (inside :meth:`apply` it is the step being applied, maybe a
        traced value: compute with it as with ``lr``, not through ``math``). The
        arrays are one parameter's, or every parameter's at once.
        """
        raise NotImplementedError

    def apply(self, params: dict[str, Array], grads: dict[str, Array], state: dict[str, dict[str, Array]],
              step: Any, lr: Any, xp: Any) -> tuple[dict[str, Array], dict[str, dict[str, Array]]]:
        """The rule as a pure function: ``(new params, new state)``, nothing given written, nothing counted.

        For immutable arrays inside a compiled function (JAX's ``jit``): ``step``
        (this step's count, 1 for the first) and ``lr`` (its rate) may be traced
        values, so no host state is frozen into the trace. ``params`` and
        ``grads`` are keyed by name; ``state`` is :meth:`state_for`'s (``{}``
        for a stateless rule). The caller keeps ``state`` and ``iterations``.
        With ``clip_norm``, the gradients are first scaled to it as in
        :meth:`clip_gradients`, the scale a traced value too.

        Examples
        --------
        >>> import array_api_compat.numpy as xp
        >>> new, _ = SGD(0.5).apply({"W0": xp.ones(2)}, {"W0": xp.ones(2)}, {}, 1, 0.5, xp)
        >>> new["W0"].tolist()
        [0.5, 0.5]
        """
        if self.clip_norm is not None:
            scale = K.clip_scale(_total([K.sum_of_squares(grads[n], xp) for n in params]), self.clip_norm, xp)
            if scale is not None:
                grads = {name: grads[name] * scale for name in params}  # new arrays: nothing given is written
        counted, self.iterations = self.iterations, step  # the rule reads the step it applies
        try:
            new_params, new_state = {}, {}
            for name, p in params.items():
                g, slots = grads[name], dict(state.get(name, _EMPTY))
                if is_writeable_array(p):  # a library that writes in place: work on copies, stay pure
                    p, g, slots = _copy(p), _copy(g), {s: _copy(a) for s, a in slots.items()}
                new_params[name] = self.update(p, g, slots, lr, xp)
                if self.slots:
                    new_state[name] = slots
        finally:
            self.iterations = counted
        return new_params, new_state

    def state_for(self, params: dict[str, Array]) -> dict[str, dict[str, Array]]:
        """The state of the parameters ``params`` (keyed by name) for :meth:`apply`, allocated on their
        devices where it is missing, as :meth:`step` does lazily (``{}`` for a stateless rule)."""
        if not self.slots:
            return {}
        for name, p in params.items():
            if name not in self.state:
                self.state[name] = {s: array_namespace(p).zeros_like(p) for s in self.slots}
        return {name: dict(self.state[name]) for name in params}

    def step(self, params: list[Array], grads: Sequence[Array], names: Sequence[str] | None = None, *,
             xp: Any = None) -> None:
        """One step on ``params`` (a list; items are replaced where arrays are immutable) from ``grads``.

        ``names`` key the state (default ``W0, b0, W1, ...``). Where both lists
        are views of one flat buffer each, the rule runs once over all of them.
        The state is allocated, and the rule runs, on the parameters' device.
        """
        context = device_context(params[0]) if len(params) else None
        if context is not None:  # CuPy: the parameters' GPU, whichever is current
            with context:
                return self._step(params, grads, names, xp)
        return self._step(params, grads, names, xp)

    def _step(self, params: list[Array], grads: Sequence[Array], names: Sequence[str] | None,
              xp: Any) -> None:
        names = _default_names(len(params)) if names is None else names
        lr = self.current_learning_rate()
        self.iterations += 1
        if self.clip_norm is not None:
            grads = self.clip_gradients(grads, xp)
        flat_p, flat_g = getattr(params, "flat", None), getattr(grads, "flat", None)
        if flat_p is not None and flat_g is not None and self.elementwise:
            state = self._flat_state(params, names) if self.slots else {}
            new = self.update(flat_p, flat_g, state, lr, params.xp)
            if new is not flat_p:  # a rule that made new arrays: back into the buffers the views share
                flat_p[...] = new
            for slot, buffer in zip(self.slots, self._flat[0] if self.slots else ()):
                if state[slot] is not buffer:
                    buffer[...] = state[slot]
                    state[slot] = buffer
            return
        xp = array_namespace(params[0]) if xp is None else xp
        for i, (name, g) in enumerate(zip(names, grads)):
            p = params[i]
            state = self.state.get(name) if self.slots else {}  # a stateless rule keeps no entries
            if state is None:
                state = self.state[name] = {s: xp.zeros_like(p) for s in self.slots}
            new = self.update(p, g, state, lr, xp)
            if new is not p:
                if is_writeable_array(p):
                    p[...] = new  # into the parameter's own buffer, which may be a view the network relies on
                else:
                    params[i] = new

    def clip_gradients(self, grads: Sequence[Array], xp: Any = None) -> Sequence[Array]:
        """``grads`` scaled by ``min(1, clip_norm / norm)``, ``norm`` the global L2 norm of all of them, in
        place where the arrays take writes (else new arrays); returns them (``grads`` itself for a flat
        buffer). Nothing is read back: the scale is a device scalar (a host one on NumPy, where it is skipped
        when it is 1), so the step stays asynchronous and a CUDA graph can capture it. Without ``clip_norm``,
        ``grads`` as given.

        Where ``grads`` are views of one flat buffer the norm is one pass over it and the scaling one more;
        otherwise one pass per array. A data-parallel fit calls the step after the gradient hook (the
        allreduce), so the norm is the whole batch's gradient's, the same on every rank.
        """
        if self.clip_norm is None:
            return grads
        xp = xp or getattr(grads, "xp", None) or array_namespace(*grads)
        flat = getattr(grads, "flat", None)
        if flat is not None:
            scale = K.clip_scale(K.sum_of_squares(flat, xp), self.clip_norm, xp)
            if scale is not None:
                flat *= scale
            return grads
        scale = K.clip_scale(_total([K.sum_of_squares(g, xp) for g in grads]), self.clip_norm, xp)
        if scale is None:
            return grads
        scaled = []
        for g in grads:
            g *= scale  # in place, or a new array where arrays are immutable
            scaled.append(g)
        return scaled

    def _flat_state(self, params: Any, names: Sequence[str]) -> dict[str, Array]:
        """The slots as flat buffers laid out like ``params.flat``, ``self.state`` holding views of them.

        Built on first use, and again (copying the values in) whenever ``self.state``
        no longer holds those views, as after ``load_state_dict`` or ``reset``."""
        flat = self._flat
        if flat is None or flat[2] != tuple(names) or flat[0][0].shape != params.flat.shape \
                or not self._holds_flat_views():
            flats = [params.xp.zeros_like(params.flat) for _ in self.slots]
            views = [params.like(f) for f in flats]
            for i, name in enumerate(names):
                old = self.state.get(name, {})
                for slot, v in zip(self.slots, views):
                    if slot in old:
                        v[i][...] = old[slot]
                self.state[name] = {slot: v[i] for slot, v in zip(self.slots, views)}
            flat = self._flat = (flats, views, tuple(names))
        return dict(zip(self.slots, flat[0]))

    def _holds_flat_views(self) -> bool:
        """Whether ``self.state`` is exactly the views of the flat slot buffers (nothing replaced since)."""
        if self._flat is None or not self.slots:
            return False
        _, views, names = self._flat
        state = self.state
        return len(state) == len(names) and all(
            state.get(n, _EMPTY).get(s) is v[i] for s, v in zip(self.slots, views)
            for i, n in enumerate(names))

    # ------------------------------------------------------------ undo points
    def snapshot(self, into: OptimizerSnapshot | None = None) -> OptimizerSnapshot:
        """Device copies of the step count and state (an undo point), in ``into``'s buffers where they fit."""
        if not self.state:  # stateless (plain SGD) or not started: the step count alone
            if into is not None and not into.state and into.flats is None:
                into.iterations = self.iterations
                return into
            return OptimizerSnapshot(self.iterations, {})
        if self._holds_flat_views():  # one copy per slot, whatever the number of parameters
            flats, views, names = self._flat
            if into is not None and into.names == names and _same_shapes(into.flats, flats):
                for saved, f in zip(into.flats, flats):
                    saved[...] = f
                into.iterations = self.iterations
                return into
            return OptimizerSnapshot(self.iterations, {}, [_copy(f) for f in flats], names, views[0])
        saved = [] if into is None or into.flats is not None else _leaves(into.state)
        if saved and into.state.keys() == self.state.keys() and _same_shapes(saved, _leaves(self.state)) \
                and all(map(is_writeable_array, saved)):
            for kept, a in zip(saved, _leaves(self.state)):
                kept[...] = a
            into.iterations = self.iterations
            return into
        return OptimizerSnapshot(self.iterations, {n: {s: _copy(a) for s, a in slots.items()}
                                                   for n, slots in self.state.items()})

    def restore(self, snapshot: OptimizerSnapshot) -> None:
        """Return to a :meth:`snapshot` undo point."""
        self.iterations = snapshot.iterations
        if snapshot.flats is None:
            self.state = {n: {s: _copy(a) for s, a in slots.items()} for n, slots in snapshot.state.items()}
        elif self._holds_flat_views() and self._flat[2] == snapshot.names:
            for f, saved in zip(self._flat[0], snapshot.flats):
                f[...] = saved  # in place: the views in self.state stay valid
        else:  # the state was replaced since: rebuild it (the next flat step links it again)
            views = [snapshot.layout.like(f) for f in snapshot.flats]
            self.state = {n: {s: _copy(v[i]) for s, v in zip(self.slots, views)}
                          for i, n in enumerate(snapshot.names)}

    def reset(self) -> None:
        """Forget the state (moments, step count) and start afresh (a new ``state`` dict: whatever held the
        old one's buffers, a captured CUDA graph, sees the change)."""
        self.state = {}
        self.iterations = 0

    def config(self) -> dict[str, Any]:
        """Constructor arguments (JSON-serialisable unless the learning rate is a schedule)."""
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        """Host copies of the state: ``{"iterations", "state": {name: {slot: numpy array}}}``."""
        return {"iterations": self.iterations,
                "state": {n: {s: to_numpy(a).copy() for s, a in slots.items()}
                          for n, slots in self.state.items()}}

    def load_state_dict(self, state: dict[str, Any], params: dict[str, Array]) -> None:
        """Restore :meth:`state_dict` output onto the devices of ``params``; all checked before any is set.

        A state that covers some parameters but not all (or none after steps were taken) is refused:
        the missing moments would silently restart at zero.
        """
        if not isinstance(state, dict) or not isinstance(state.get("state"), dict) \
                or type(state.get("iterations")) is not int or state["iterations"] < 0:
            raise ValueError("state must be a dict like state_dict() gives: {'iterations': int >= 0, "
                             f"'state': {{name: {{slot: array}}}}}}, got {short(state)}")
        missing = [n for n in params if n not in state["state"]]
        if self.slots and missing and (state["state"] or state["iterations"] > 0):
            raise ValueError(f"optimizer state lacks {', '.join(missing)} (after {state['iterations']} steps "
                             f"{type(self).__name__} keeps {list(self.slots)} for every parameter)")
        new = {}
        for name, slots in state["state"].items():
            if name not in params:
                raise ValueError(f"optimizer state names parameter {name!r}, which the network does not have")
            if not isinstance(slots, dict):
                raise ValueError(f"optimizer state for {name} must map slot names to arrays, "
                                 f"got {short(slots)}")
            if set(slots) != set(self.slots):
                raise ValueError(f"optimizer state for {name} holds {sorted(slots)}, "
                                 f"{type(self).__name__} keeps {sorted(self.slots)}")
            p = params[name]
            xp = array_namespace(p)
            new[name] = {}
            for s, host in slots.items():
                if tuple(getattr(host, "shape", ())) != tuple(p.shape):
                    raise ValueError(f"optimizer state {name}.{s} has shape {tuple(host.shape)}, "
                                     f"parameter {name} has {tuple(p.shape)}")
                new[name][s] = xp.asarray(host, dtype=p.dtype, device=array_device(p), copy=True)  # ours
        self.state = new
        self.iterations = int(state["iterations"])

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({args})"


class OptimizerSnapshot:
    """An optimizer's step count and device copies of its state: per parameter (``state``), or as the flat
    slot buffers (``flats``, for the parameters ``names`` laid out as ``layout``) when the state was their
    views."""

    def __init__(self, iterations: int, state: dict[str, dict[str, Array]], flats: list[Array] | None = None,
                 names: tuple[str, ...] = (), layout: Any = None) -> None:
        self.iterations, self.state, self.flats = iterations, state, flats
        self.names, self.layout = names, layout


def _leaves(state: dict[str, dict[str, Array]]) -> list[Array]:
    return [a for slots in state.values() for a in slots.values()]


def _same_shapes(a: list[Array], b: list[Array]) -> bool:
    return len(a) == len(b) and all(x.shape == y.shape for x, y in zip(a, b))


def _copy(a: Array) -> Array:
    """A copy no one can change: the array itself where arrays are immutable (JAX), else a device copy."""
    if not is_writeable_array(a) and not is_numpy_array(a):
        return a
    context = device_context(a)
    if context is None:
        return array_namespace(a).asarray(a, copy=True)
    with context:  # CuPy copies onto the current GPU: make it a's
        return array_namespace(a).asarray(a, copy=True)


def _total(parts: list[Any]) -> Any:
    """The sum of device scalars, without a host number to start from."""
    total = parts[0]
    for part in parts[1:]:
        total = total + part
    return total


def _inverse_sqrt(x: Any, xp: Any) -> Any:
    """``1 / sqrt(x)`` of a host number, or of a traced one (the step count in :meth:`Optimizer.apply`)."""
    return 1.0 / math.sqrt(x) if isinstance(x, Real) else 1.0 / xp.sqrt(x)


def _default_names(n: int) -> list[str]:
    return [f"{k}{i}" for i in range(n // 2) for k in ("W", "b")]


class SGD(Optimizer):
    """Stochastic gradient descent, optionally with (Nesterov) momentum and L2 weight decay.

    With ``momentum=0`` it is exactly the blog's step ``W -= lr * dW``.
    Momentum follows PyTorch: ``v = momentum * v + g``; ``p -= lr * v``.
    ``clip_norm``: see :class:`Optimizer` (the global norm, Keras' ``global_clipnorm``).

    Examples
    --------
    >>> opt = SGD(0.1, momentum=0.9, clip_norm=1.0)
    """

    def __init__(self, learning_rate: float | Schedule = 0.1, momentum: float = 0.0, nesterov: bool = False,
                 weight_decay: float = 0.0, *, clip_norm: float | None = None) -> None:
        super().__init__(learning_rate, clip_norm)
        check_fraction(momentum, "momentum")
        check_positive(weight_decay, "weight_decay", allow_zero=True)
        if nesterov and momentum == 0:
            raise ValueError("nesterov=True needs a momentum > 0")
        self.momentum, self.nesterov, self.weight_decay = float(momentum), bool(nesterov), float(weight_decay)
        self.slots = ("velocity",) if momentum else ()

    @property
    def plain_descent(self) -> bool:
        # a subclass with a rule of its own is not the plain step, whatever its settings
        return (type(self).update is SGD.update and not self.momentum and not self.weight_decay
                and self.clip_norm is None)

    def update(self, p: Array, g: Array, state: dict[str, Array], lr: float, xp: Any) -> Array:
        if self.weight_decay:
            g += self.weight_decay * p
        if self.momentum:
            v = state["velocity"]
            v *= self.momentum
            v += g
            state["velocity"] = v  # the same array, unless the library's in-place operators rebind
            if self.nesterov:
                g += self.momentum * v
            else:
                g = v * lr
                p -= g
                return p
        return K.descend(p, g, lr, xp)  # with neither momentum nor decay: the blog's W -= lr * dW

    def config(self) -> dict[str, Any]:
        return {"learning_rate": self.learning_rate, "momentum": self.momentum, "nesterov": self.nesterov,
                "weight_decay": self.weight_decay, "clip_norm": self.clip_norm}


class Adam(Optimizer):
    """Adam (Kingma & Ba), with optional L2 ``weight_decay`` added to the gradient.

    Defaults are the usual ones (PyTorch's and scikit-learn's). ``clip_norm``: see :class:`Optimizer`.
    """

    slots = ("m", "v")
    decoupled = False

    def __init__(self, learning_rate: float | Schedule = 0.001, beta_1: float = 0.9, beta_2: float = 0.999,
                 epsilon: float = 1e-8, weight_decay: float = 0.0, *, clip_norm: float | None = None) -> None:
        super().__init__(learning_rate, clip_norm)
        check_fraction(beta_1, "beta_1")
        check_fraction(beta_2, "beta_2")
        check_positive(epsilon, "epsilon")
        check_positive(weight_decay, "weight_decay", allow_zero=True)
        self.beta_1, self.beta_2 = float(beta_1), float(beta_2)
        self.epsilon, self.weight_decay = float(epsilon), float(weight_decay)

    def update(self, p: Array, g: Array, state: dict[str, Array], lr: float, xp: Any) -> Array:
        if self.weight_decay:
            if self.decoupled:
                p *= 1.0 - lr * self.weight_decay
            else:
                g += self.weight_decay * p
        t = self.iterations
        m, v = state["m"], state["v"]
        m *= self.beta_1
        m += (1.0 - self.beta_1) * g
        g *= g
        g *= 1.0 - self.beta_2
        v *= self.beta_2
        v += g
        state["m"], state["v"] = m, v  # the same arrays, unless the library's in-place operators rebind
        denom = xp.sqrt(v)  # sqrt(v_hat) + eps, with v_hat = v / (1 - beta_2^t)
        denom *= _inverse_sqrt(1.0 - self.beta_2 ** t, xp)
        denom += self.epsilon
        step = m / denom
        step *= lr / (1.0 - self.beta_1 ** t)
        p -= step
        return p

    def config(self) -> dict[str, Any]:
        return {"learning_rate": self.learning_rate, "beta_1": self.beta_1, "beta_2": self.beta_2,
                "epsilon": self.epsilon, "weight_decay": self.weight_decay, "clip_norm": self.clip_norm}


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter): ``p *= 1 - lr * weight_decay``."""

    decoupled = True

    def __init__(self, learning_rate: float | Schedule = 0.001, beta_1: float = 0.9, beta_2: float = 0.999,
                 epsilon: float = 1e-8, weight_decay: float = 0.01, *,
                 clip_norm: float | None = None) -> None:
        super().__init__(learning_rate, beta_1, beta_2, epsilon, weight_decay, clip_norm=clip_norm)


class RMSprop(Optimizer):
    """RMSprop (Hinton, 2012) as Keras writes it, plain momentum and the centered variant included.

    ``velocity = rho * velocity + (1 - rho) * g**2``; ``increment = lr * g / sqrt(velocity + epsilon)``;
    ``p -= increment``. ``centered`` also keeps ``mean = rho * mean + (1 - rho) * g`` and divides by
    ``sqrt(velocity - mean**2 + epsilon)`` (the gradient's variance). With ``momentum``,
    ``buffer = momentum * buffer + increment``; ``p -= buffer``.

    ``epsilon`` is inside the square root, as in Keras and TensorFlow; ``torch.optim.RMSprop`` adds its
    ``eps`` to the root instead, and keeps its momentum buffer without the rate: the two agree where
    ``epsilon`` is negligible against the velocity and the rate is constant. ``weight_decay`` is L2 added
    to the gradient, as for nn_xp's SGD and Adam and torch's RMSprop (Keras' ``weight_decay`` is
    decoupled, as :class:`AdamW`'s). ``clip_norm``: see :class:`Optimizer`.

    Examples
    --------
    >>> opt = RMSprop(0.001, momentum=0.9, centered=True, clip_norm=1.0)
    >>> opt.slots
    ('velocity', 'momentum', 'average_gradient')
    """

    def __init__(self, learning_rate: float | Schedule = 0.001, rho: float = 0.9, momentum: float = 0.0,
                 epsilon: float = 1e-7, centered: bool = False, weight_decay: float = 0.0, *,
                 clip_norm: float | None = None) -> None:
        super().__init__(learning_rate, clip_norm)
        check_fraction(rho, "rho")
        check_fraction(momentum, "momentum")
        check_positive(epsilon, "epsilon")
        check_positive(weight_decay, "weight_decay", allow_zero=True)
        if not isinstance(centered, bool):
            raise TypeError(f"centered must be True or False, got {centered!r}")
        self.rho, self.momentum, self.epsilon = float(rho), float(momentum), float(epsilon)
        self.centered, self.weight_decay = centered, float(weight_decay)
        self.slots = ("velocity",) + (("momentum",) if momentum else ()) + (("average_gradient",) if centered
                                                                              else ())

    def update(self, p: Array, g: Array, state: dict[str, Array], lr: float, xp: Any) -> Array:
        if self.weight_decay:
            g += self.weight_decay * p
        rho = self.rho
        v = state["velocity"]
        v *= rho
        square = g * g
        square *= 1.0 - rho
        v += square
        state["velocity"] = v  # the same array, unless the library's in-place operators rebind
        if self.centered:
            mean = state["average_gradient"]
            mean *= rho
            mean += (1.0 - rho) * g
            state["average_gradient"] = mean
            denom = v - mean * mean  # the gradient's variance
            denom += self.epsilon
        else:
            denom = v + self.epsilon
        step = g * lr
        step /= xp.sqrt(denom)  # lr * g / sqrt(v + eps)
        if self.momentum:
            buffer = state["momentum"]
            buffer *= self.momentum
            buffer += step
            state["momentum"] = buffer
            step = buffer
        p -= step
        return p

    def config(self) -> dict[str, Any]:
        return {"learning_rate": self.learning_rate, "rho": self.rho, "momentum": self.momentum,
                "epsilon": self.epsilon, "centered": self.centered, "weight_decay": self.weight_decay,
                "clip_norm": self.clip_norm}


OPTIMIZERS = {"sgd": SGD, "adam": Adam, "adamw": AdamW, "rmsprop": RMSprop}


def get_optimizer(optimizer: str | Optimizer | None, learning_rate: float | Schedule | None) -> Optimizer:
    """An optimizer from a name (``"sgd"``, ``"adam"``, ``"adamw"``, ``"rmsprop"``; with ``learning_rate``
    if given) or an object passed through."""
    if isinstance(optimizer, Optimizer):
        if learning_rate is not None:
            raise ValueError("give learning_rate to the optimizer object, not to fit, when passing "
                             "an optimizer")
        return optimizer
    if optimizer is None:
        optimizer = "sgd"
    if not isinstance(optimizer, str) or optimizer.lower() not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optimizer!r}; valid names: {', '.join(OPTIMIZERS)} "
                         "(or pass an nn_xp.Optimizer)")
    cls = OPTIMIZERS[optimizer.lower()]
    return cls() if learning_rate is None else cls(learning_rate)
