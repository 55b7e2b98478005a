"""Optimizers and learning-rate schedules.

An optimizer updates parameters in place from gradients with the same names
and shapes. Its state (momentum, Adam's moments) is keyed by parameter name
and allocated lazily on the parameter's device with ``xp.zeros_like``. The
learning rate is a Python float or a schedule ``lr(step) -> float`` evaluated
on the host, so no step ever reads the device.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Sequence

from array_api_compat import array_namespace, device as array_device, is_writeable_array

from ._typing import Array
from ._validation import check_positive

__all__ = ["SGD", "Adam", "AdamW", "CosineDecay", "ExponentialDecay", "Optimizer", "StepDecay",
           "get_optimizer"]

Schedule = Callable[[int], float]

_EMPTY: dict = {}


class Optimizer:
    """Base class: a learning rate (float or schedule) and per-parameter state.

    Subclasses implement ``_update(name, p, g, lr, xp)`` returning the new
    parameter (the same object when updated in place). ``step`` consumes the
    gradients: they may be overwritten.
    """

    #: names of the per-parameter state slots, e.g. ("m", "v")
    slots: tuple[str, ...] = ()

    def __init__(self, learning_rate: float | Schedule) -> None:
        self.set_learning_rate(learning_rate)
        self.iterations = 0
        self.state: dict[str, dict[str, Array]] = {}

    def set_learning_rate(self, learning_rate: float | Schedule) -> None:
        """A new rate (or schedule) from the next step on; the state is kept."""
        if not callable(learning_rate):
            check_positive(learning_rate, "learning_rate")
        self.learning_rate = learning_rate if callable(learning_rate) else float(learning_rate)

    def current_learning_rate(self) -> float:
        lr = self.learning_rate
        return float(lr(self.iterations)) if callable(lr) else lr

    def step(self, params: list[Array], grads: Sequence[Array], names: Sequence[str], *, xp: Any = None) -> None:
        """Update ``params`` (a list, updated item by item in place) from ``grads``."""
        lr = self.current_learning_rate()
        self.iterations += 1
        xp = array_namespace(params[0]) if xp is None else xp
        for i, (name, g) in enumerate(zip(names, grads)):
            p = params[i]
            new = self._update(name, p, g, lr, xp)
            if new is not p:  # an _update that made a new array
                if is_writeable_array(p):
                    p[...] = new  # into the parameter's own buffer, which may be a view the network relies on
                else:
                    params[i] = new

    def _step_network(self, net: Any, grads: list[Array], flat_grads: Any, names: Sequence[str], xp: Any) -> None:
        """fit's step: all at once where the network's parameters and ``flat_grads`` are flat buffers and this
        optimizer can (``_step_flat``), else parameter by parameter (``step``)."""
        if flat_grads is None or not self._step_flat(net._params, flat_grads, names):
            self.step(net._params, grads, names, xp=xp)

    def _step_flat(self, params: Any, grads: Any, names: Sequence[str]) -> bool:
        """One step on all parameters at once: ``params`` and ``grads`` are views of one flat buffer each
        (``.flat``; network._Flat), so each operation is one call over every parameter. False where the
        optimizer cannot, and then nothing was done (see SGD and Adam)."""
        return False

    def _flat_slots(self, params: Any, names: Sequence[str]) -> list[Array]:
        """The state slots as flat buffers shaped like ``params.flat``, ``self.state`` holding views of them.

        Built on first use, and again (copying the values in) whenever ``self.state`` was replaced, as
        ``load_state_dict`` and an undo point's restore do; otherwise a check of identities."""
        cache = getattr(self, "_flat_cache", None)
        if cache is not None and cache[0][0].shape == params.flat.shape:
            flats, views = cache
            state = self.state
            if all(state.get(n, _EMPTY).get(s) is v[i] for s, v in zip(self.slots, views) for i, n in enumerate(names)):
                return flats
        xp = params.xp
        flats = [xp.zeros_like(params.flat) for _ in self.slots]
        views = [params.like(f) for f in flats]
        for i, name in enumerate(names):
            old = self.state.get(name, {})
            for slot, v in zip(self.slots, views):
                if slot in old:
                    v[i][...] = old[slot]
            self.state[name] = {slot: v[i] for slot, v in zip(self.slots, views)}
        self._flat_cache = (flats, views)
        return flats

    def _slot(self, name: str, p: Array, xp: Any) -> dict[str, Array]:
        state = self.state.get(name)
        if state is None:
            state = self.state[name] = {s: xp.zeros_like(p) for s in self.slots}
        return state

    def _update(self, name: str, p: Array, g: Array, lr: float, xp: Any) -> Array:
        raise NotImplementedError

    def _save_state(self, saved: tuple[int, dict] | None) -> tuple[int, dict]:
        """Copy the step count and state into ``saved``'s device buffers (reused when they fit): an undo point."""
        if not self.state:  # stateless (plain SGD) or not started: only the step count
            return self.iterations, {}
        buffers = saved[1] if saved is not None else {}
        if buffers.keys() != self.state.keys():
            buffers = {n: {s: array_namespace(a).asarray(a, copy=True) for s, a in slots.items()}
                       for n, slots in self.state.items()}
        else:
            for name, slots in self.state.items():
                for slot, a in slots.items():
                    if is_writeable_array(buffers[name][slot]):
                        buffers[name][slot][...] = a
                    else:
                        buffers[name][slot] = array_namespace(a).asarray(a, copy=True)
        return self.iterations, buffers

    def _load_state(self, saved: tuple[int, dict] | None) -> None:
        """Return to a :meth:`_save_state` undo point."""
        if saved is None:
            return
        self.iterations = saved[0]
        self.state = {n: {s: array_namespace(a).asarray(a, copy=True) for s, a in slots.items()}
                      for n, slots in saved[1].items()}

    def reset(self) -> None:
        """Forget the state (moments, step count) and start afresh."""
        self.state.clear()
        self.iterations = 0

    def config(self) -> dict[str, Any]:
        """Constructor arguments (JSON-serialisable unless the learning rate is a schedule)."""
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        """Host copies of the state: ``{"iterations", "state": {name: {slot: numpy array}}}``."""
        from .backends import to_numpy

        return {"iterations": self.iterations,
                "state": {n: {s: to_numpy(a).copy() for s, a in slots.items()} for n, slots in self.state.items()}}

    def load_state_dict(self, state: dict[str, Any], params: dict[str, Array]) -> None:
        """Restore :meth:`state_dict` output onto the devices of ``params``."""
        new = {}
        for name, slots in state["state"].items():
            if name not in params:
                raise ValueError(f"optimizer state names parameter {name!r}, which the network does not have")
            if set(slots) != set(self.slots):
                raise ValueError(f"optimizer state for {name} holds {sorted(slots)}, "
                                 f"{type(self).__name__} keeps {sorted(self.slots)}")
            p = params[name]
            xp = array_namespace(p)
            new[name] = {}
            for s, host in slots.items():
                if tuple(host.shape) != tuple(p.shape):
                    raise ValueError(f"optimizer state {name}.{s} has shape {tuple(host.shape)}, "
                                     f"parameter {name} has {tuple(p.shape)}")
                new[name][s] = xp.asarray(host, dtype=p.dtype, device=array_device(p), copy=True)  # ours
        self.state = new
        self.iterations = int(state["iterations"])

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({args})"


class SGD(Optimizer):
    """Stochastic gradient descent, optionally with (Nesterov) momentum and L2 weight decay.

    With ``momentum=0`` it is exactly the blog's step ``W -= lr * dW``.
    Momentum follows PyTorch: ``v = momentum * v + g``; ``p -= lr * v``.

    Examples
    --------
    >>> opt = SGD(0.1, momentum=0.9)
    """

    def __init__(self, learning_rate: float | Schedule = 0.1, momentum: float = 0.0, nesterov: bool = False,
                 weight_decay: float = 0.0) -> None:
        super().__init__(learning_rate)
        check_positive(momentum, "momentum", allow_zero=True)
        check_positive(weight_decay, "weight_decay", allow_zero=True)
        if momentum >= 1:
            raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")
        if nesterov and momentum == 0:
            raise ValueError("nesterov=True needs a momentum > 0")
        self.momentum, self.nesterov, self.weight_decay = float(momentum), bool(nesterov), float(weight_decay)
        self.slots = ("velocity",) if momentum else ()

    def step(self, params: list[Array], grads: Sequence[Array], names: Sequence[str], *, xp: Any = None) -> None:
        if self.momentum or self.weight_decay or type(self)._update is not SGD._update:
            return super().step(params, grads, names, xp=xp)
        lr = self.current_learning_rate()  # the blog's step, W -= lr * dW, without per-parameter dispatch
        self.iterations += 1
        for i, g in enumerate(grads):
            g *= lr
            params[i] -= g

    def _step_flat(self, params: Any, grads: Any, names: Sequence[str]) -> bool:
        if type(self)._update is not SGD._update:
            return False  # a subclass with its own rule: it goes parameter by parameter
        if not (self.momentum or self.weight_decay):
            lr, g = self.learning_rate, grads.flat
            g *= lr(self.iterations) if callable(lr) else lr  # the blog's step on every parameter in two calls
            self.iterations += 1
            params.flat -= g
            return True
        v = self._flat_slots(params, names)[0] if self.momentum else None
        lr = self.current_learning_rate()
        self.iterations += 1
        self._sgd(params.flat, grads.flat, v, lr)  # every parameter at once, the same arithmetic
        return True

    def _update(self, name: str, p: Array, g: Array, lr: float, xp: Any) -> Array:
        s = self._slot(name, p, xp) if self.momentum else None
        p, v = self._sgd(p, g, None if s is None else s["velocity"], lr)
        if s is not None:
            s["velocity"] = v
        return p

    def _sgd(self, p: Array, g: Array, v: Array | None, lr: float) -> tuple[Array, Array | None]:
        """One step on ``p`` in place (and on the velocity ``v``, with momentum); ``g`` is overwritten.
        Returns both (new arrays only from a library whose in-place operators rebind)."""
        if self.weight_decay:
            g += self.weight_decay * p
        if self.momentum:
            v *= self.momentum
            v += g
            if self.nesterov:
                g += self.momentum * v
            else:
                g = v * lr
                p -= g
                return p, v
        g *= lr
        p -= g
        return p, v

    def config(self) -> dict[str, Any]:
        return {"learning_rate": self.learning_rate, "momentum": self.momentum, "nesterov": self.nesterov,
                "weight_decay": self.weight_decay}


class Adam(Optimizer):
    """Adam (Kingma & Ba), with optional L2 ``weight_decay`` added to the gradient.

    Defaults are the usual ones (PyTorch's and scikit-learn's).
    """

    slots = ("m", "v")
    decoupled = False

    def __init__(self, learning_rate: float | Schedule = 0.001, beta_1: float = 0.9, beta_2: float = 0.999,
                 epsilon: float = 1e-8, weight_decay: float = 0.0) -> None:
        super().__init__(learning_rate)
        for name, value in (("beta_1", beta_1), ("beta_2", beta_2)):
            check_positive(value, name, allow_zero=True)
            if value >= 1:
                raise ValueError(f"{name} must be in [0, 1), got {value!r}")
        check_positive(epsilon, "epsilon")
        check_positive(weight_decay, "weight_decay", allow_zero=True)
        self.beta_1, self.beta_2 = float(beta_1), float(beta_2)
        self.epsilon, self.weight_decay = float(epsilon), float(weight_decay)

    def _step_flat(self, params: Any, grads: Any, names: Sequence[str]) -> bool:
        if type(self)._update is not Adam._update:
            return False  # a subclass with its own rule: it goes parameter by parameter
        m, v = self._flat_slots(params, names)
        lr = self.current_learning_rate()
        self.iterations += 1
        self._adam(params.flat, grads.flat, m, v, lr, params.xp)  # every parameter at once, the same arithmetic
        return True

    def _update(self, name: str, p: Array, g: Array, lr: float, xp: Any) -> Array:
        s = self._slot(name, p, xp)
        p, s["m"], s["v"] = self._adam(p, g, s["m"], s["v"], lr, xp)
        return p

    def _adam(self, p: Array, g: Array, m: Array, v: Array, lr: float, xp: Any) -> tuple[Array, Array, Array]:
        """One Adam step on ``p`` in place, its moments ``m`` and ``v`` too; ``g`` is overwritten.
        Returns the three (new arrays only from a library whose in-place operators rebind)."""
        if self.weight_decay:
            if self.decoupled:
                p *= 1.0 - lr * self.weight_decay
            else:
                g += self.weight_decay * p
        t = self.iterations
        m *= self.beta_1
        m += (1.0 - self.beta_1) * g
        g *= g
        g *= 1.0 - self.beta_2
        v *= self.beta_2
        v += g
        denom = xp.sqrt(v)  # sqrt(v_hat) + eps, with v_hat = v / (1 - beta_2^t)
        denom *= 1.0 / math.sqrt(1.0 - self.beta_2 ** t)
        denom += self.epsilon
        update = m / denom
        update *= lr / (1.0 - self.beta_1 ** t)
        p -= update
        return p, m, v

    def config(self) -> dict[str, Any]:
        return {"learning_rate": self.learning_rate, "beta_1": self.beta_1, "beta_2": self.beta_2,
                "epsilon": self.epsilon, "weight_decay": self.weight_decay}


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter): ``p *= 1 - lr * weight_decay``."""

    decoupled = True

    def __init__(self, learning_rate: float | Schedule = 0.001, beta_1: float = 0.9, beta_2: float = 0.999,
                 epsilon: float = 1e-8, weight_decay: float = 0.01) -> None:
        super().__init__(learning_rate, beta_1, beta_2, epsilon, weight_decay)


OPTIMIZERS = {"sgd": SGD, "adam": Adam, "adamw": AdamW}


def get_optimizer(optimizer: str | Optimizer | None, learning_rate: float | Schedule | None) -> Optimizer:
    """An optimizer from a name (with ``learning_rate`` if given) or an object passed through."""
    if isinstance(optimizer, Optimizer):
        if learning_rate is not None:
            raise ValueError("give learning_rate to the optimizer object, not to fit, when passing an optimizer")
        return optimizer
    if optimizer is None:
        optimizer = "sgd"
    if not isinstance(optimizer, str) or optimizer.lower() not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optimizer!r}; valid names: {', '.join(OPTIMIZERS)} "
                         "(or pass an nn_xp.Optimizer)")
    cls = OPTIMIZERS[optimizer.lower()]
    return cls() if learning_rate is None else cls(learning_rate)


# ----------------------------------------------------------------- schedules
class StepDecay:
    """``lr = initial * drop ** (step // every)``."""

    def __init__(self, initial: float, drop: float = 0.5, every: int = 1000) -> None:
        check_positive(initial, "initial")
        check_positive(drop, "drop")
        check_positive(every, "every", integer=True)
        self.initial, self.drop, self.every = initial, drop, every

    def __call__(self, step: int) -> float:
        return self.initial * self.drop ** (step // self.every)


class ExponentialDecay:
    """``lr = initial * rate ** (step / decay_steps)`` (Keras' ExponentialDecay)."""

    def __init__(self, initial: float, rate: float = 0.96, decay_steps: int = 1000) -> None:
        check_positive(initial, "initial")
        check_positive(rate, "rate")
        check_positive(decay_steps, "decay_steps", integer=True)
        self.initial, self.rate, self.decay_steps = initial, rate, decay_steps

    def __call__(self, step: int) -> float:
        return self.initial * self.rate ** (step / self.decay_steps)


class CosineDecay:
    """Cosine annealing from ``initial`` to ``alpha * initial`` over ``decay_steps``, then flat."""

    def __init__(self, initial: float, decay_steps: int, alpha: float = 0.0) -> None:
        check_positive(initial, "initial")
        check_positive(decay_steps, "decay_steps", integer=True)
        check_positive(alpha, "alpha", allow_zero=True)
        self.initial, self.decay_steps, self.alpha = initial, decay_steps, alpha

    def __call__(self, step: int) -> float:
        frac = min(step, self.decay_steps) / self.decay_steps
        return self.initial * (self.alpha + (1 - self.alpha) * 0.5 * (1 + math.cos(math.pi * frac)))
