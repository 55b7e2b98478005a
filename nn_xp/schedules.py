"""Learning-rate schedules: ``lr(step) -> float`` of the step count, evaluated on the host before each step.

An optimizer calls its schedule with the count of steps already taken (0 for
the first) and checks the value there, so no step reads the device and a
compiled engine is sent the rates with each call. Each decay may start with a
linear warm-up (``warmup_steps``, from ``warmup_start`` up to ``initial``), and
:class:`Warmup` puts one before any rate or schedule.

Warm-up follows Keras' ``CosineDecay(initial_learning_rate, decay_steps,
warmup_target=..., warmup_steps=...)``: the rate at step ``s < warmup_steps``
is ``start + (peak - start) * s / warmup_steps``, and the decay then runs as if
it began at step 0, ``warmup_steps`` later. Here ``initial`` is always the
peak, the rate the decay starts from; Keras' ``initial_learning_rate`` is
``warmup_start``, its ``warmup_target`` our ``initial``.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from ._validation import check_positive

__all__ = ["CosineDecay", "ExponentialDecay", "Schedule", "StepDecay", "Warmup"]

Schedule = Callable[[int], float]


def _linear(start: float, peak: float, step: int, steps: int) -> float:
    """Step ``step`` of ``steps`` on the line from ``start`` (step 0) to ``peak`` (step ``steps``)."""
    return start + (peak - start) * (step / steps)


class _Decay:
    """A decay from ``initial`` after an optional warm-up; a subclass writes ``decay(step)`` and names the
    arguments its ``repr`` shows in ``_fields``."""

    _fields: tuple[str, ...] = ()

    def __init__(self, initial: float, warmup_steps: int, warmup_start: float) -> None:
        check_positive(initial, "initial")
        check_positive(warmup_steps, "warmup_steps", integer=True, allow_zero=True)
        check_positive(warmup_start, "warmup_start", allow_zero=True)
        self.initial, self.warmup_steps, self.warmup_start = initial, int(warmup_steps), float(warmup_start)

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return _linear(self.warmup_start, self.initial, step, self.warmup_steps)
        return self.decay(step - self.warmup_steps)

    def decay(self, step: int) -> float:
        raise NotImplementedError

    def __repr__(self) -> str:
        args = [f"{k}={getattr(self, k)!r}" for k in ("initial", *self._fields)]
        if self.warmup_steps:
            args += [f"warmup_steps={self.warmup_steps!r}", f"warmup_start={self.warmup_start!r}"]
        return f"{type(self).__name__}({', '.join(args)})"


class StepDecay(_Decay):
    """``lr = initial * drop ** (step // every)``, after an optional linear warm-up.

    Parameters
    ----------
    initial : float
        The rate of the first step (of the first step after the warm-up).
    drop : float
        The factor applied every ``every`` steps.
    warmup_steps : int
        Steps of linear warm-up from ``warmup_start`` to ``initial`` before the decay (0: none).

    Examples
    --------
    >>> lr = StepDecay(1.0, drop=0.5, every=10, warmup_steps=4)
    >>> [lr(0), lr(2), lr(4), lr(14)]
    [0.0, 0.5, 1.0, 0.5]
    """

    _fields = ("drop", "every")

    def __init__(self, initial: float, drop: float = 0.5, every: int = 1000, *, warmup_steps: int = 0,
                 warmup_start: float = 0.0) -> None:
        super().__init__(initial, warmup_steps, warmup_start)
        check_positive(drop, "drop")
        check_positive(every, "every", integer=True)
        self.drop, self.every = drop, every

    def decay(self, step: int) -> float:
        return self.initial * self.drop ** (step // self.every)


class ExponentialDecay(_Decay):
    """``lr = initial * rate ** (step / decay_steps)`` (Keras' ExponentialDecay), after an optional warm-up.

    Examples
    --------
    >>> ExponentialDecay(1.0, rate=0.5, decay_steps=2)(4)
    0.25
    """

    _fields = ("rate", "decay_steps")

    def __init__(self, initial: float, rate: float = 0.96, decay_steps: int = 1000, *, warmup_steps: int = 0,
                 warmup_start: float = 0.0) -> None:
        super().__init__(initial, warmup_steps, warmup_start)
        check_positive(rate, "rate")
        check_positive(decay_steps, "decay_steps", integer=True)
        self.rate, self.decay_steps = rate, decay_steps

    def decay(self, step: int) -> float:
        return self.initial * self.rate ** (step / self.decay_steps)


class CosineDecay(_Decay):
    """Cosine annealing from ``initial`` to ``alpha * initial`` over ``decay_steps``, then flat; after an
    optional linear warm-up (Keras' CosineDecay with ``warmup_target=initial``, its
    ``initial_learning_rate`` being ``warmup_start``).

    Examples
    --------
    >>> lr = CosineDecay(0.1, decay_steps=100, warmup_steps=10)
    >>> [lr(0), lr(5), lr(10), lr(110)]
    [0.0, 0.05, 0.1, 0.0]
    """

    _fields = ("decay_steps", "alpha")

    def __init__(self, initial: float, decay_steps: int, alpha: float = 0.0, *, warmup_steps: int = 0,
                 warmup_start: float = 0.0) -> None:
        super().__init__(initial, warmup_steps, warmup_start)
        check_positive(decay_steps, "decay_steps", integer=True)
        check_positive(alpha, "alpha", allow_zero=True)
        self.decay_steps, self.alpha = decay_steps, alpha

    def decay(self, step: int) -> float:
        frac = min(step, self.decay_steps) / self.decay_steps
        return self.initial * (self.alpha + (1 - self.alpha) * 0.5 * (1 + math.cos(math.pi * frac)))


class Warmup:
    """A linear warm-up over ``steps`` steps from ``start`` to ``learning_rate``, then ``learning_rate``.

    ``learning_rate`` is a constant rate or a schedule; a schedule's warm-up
    climbs to its first rate, ``learning_rate(0)``, and the schedule then runs
    from its own step 0, ``steps`` steps later.

    Parameters
    ----------
    learning_rate : float or callable
        The rate (or schedule) that training continues with.
    steps : int
        Steps of warm-up (optimizer steps: batches, not epochs).
    start : float
        The rate of the first step.

    Examples
    --------
    >>> lr = Warmup(0.1, steps=4)
    >>> [lr(0), lr(2), lr(4), lr(100)]
    [0.0, 0.05, 0.1, 0.1]
    """

    def __init__(self, learning_rate: float | Schedule, steps: int, start: float = 0.0) -> None:
        if not callable(learning_rate):
            check_positive(learning_rate, "learning_rate")
        check_positive(steps, "steps", integer=True)
        check_positive(start, "start", allow_zero=True)
        self.learning_rate, self.steps, self.start = learning_rate, int(steps), float(start)

    def __call__(self, step: int) -> float:
        after: Any = self.learning_rate
        if step < self.steps:
            return _linear(self.start, after(0) if callable(after) else after, step, self.steps)
        return after(step - self.steps) if callable(after) else after

    def __repr__(self) -> str:
        return f"Warmup({self.learning_rate!r}, steps={self.steps!r}, start={self.start!r})"
