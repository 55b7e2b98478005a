"""Random numbers drawn on the device (dropout's masks): the one place that asks which library draws them.

The array API has no random numbers, so each library's own generator draws here. Every draw is
counter-based: a function of a seed and a step alone, never of what was drawn before. The same
``(seed, step)`` gives the same numbers on a given backend, so training rolled back to an earlier step
(an undo point, a checkpoint, a divergence) draws the same again with no generator state to keep, and
every rank of a data-parallel fit draws what the others draw.

- NumPy: Philox keyed by the seed, its counter starting at ``step * 2**128`` (a state set, no new
  generator: about 2 µs). Array-API libraries without a generator (array-api-strict) draw the same on the
  host, then move it to the device.
- CuPy: cuRAND's Philox, seeded per step with :func:`splitmix64` of the seed and the step.
- torch: one ``torch.Generator`` on the tensors' device, ``manual_seed(splitmix64(seed, step))`` per step.
- JAX: threefry keys, ``fold_in(key(seed), step)`` then ``fold_in(., i)`` for the ``i``-th array; the seed
  and the step may be traced values (a compiled program takes them as arguments: :func:`seed_words`).

Draws are float32 whatever the model's dtype: a keep-or-drop decision needs no more than 24 bits, and
float32 draws are the cheaper on every library.
"""
from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np  # the host is the point for NumPy and the array-API libraries: draws happen there
from array_api_compat import is_cupy_namespace, is_jax_namespace, is_numpy_namespace, is_torch_namespace

from ._typing import Array, Namespace

__all__ = ["Uniforms", "seed_words", "splitmix64", "uniform_source"]

#: ``draw(seed, step, shapes) -> [array, ...]``: float32 uniforms in [0, 1) on the device, one per shape
Uniforms = Callable[[Any, Any, Sequence[tuple[int, ...]]], list[Array]]

_MASK64 = (1 << 64) - 1


def uniform_source(xp: Namespace, device: Any) -> Uniforms:
    """A draw function for arrays of ``xp`` on ``device`` (see the module's text). It may hold a generator
    object (torch's, CuPy's): one per user (a trainer), never shared between threads."""
    if is_jax_namespace(xp):
        return _JaxUniforms(device)
    if is_torch_namespace(xp):
        return _TorchUniforms(device)
    if is_cupy_namespace(xp):
        return _CupyUniforms(device)
    return _HostUniforms(None if is_numpy_namespace(xp) else xp, device)


def splitmix64(seed: int, step: int) -> int:
    """The ``step``-th output of SplitMix64 seeded with ``seed`` (Steele, Lea and Flood's mixer): a 64-bit
    seed per step for the libraries whose generators are seeded, not keyed by a counter."""
    z = (seed + step * 0x9E3779B97F4A7C15) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def seed_words(seed: int) -> np.ndarray:
    """A 64-bit ``seed`` as the two uint32 words of a threefry key: what a compiled JAX program takes as an
    argument (a seed baked into a program would make it one network's)."""
    return np.array([(seed >> 32) & 0xFFFFFFFF, seed & 0xFFFFFFFF], dtype=np.uint32)


class _HostUniforms:
    """NumPy's Philox (counter-based by design), set to ``(key=seed, counter=step * 2**128)`` per step, so
    each step's stream has 2**128 blocks to itself; with ``xp``, the draws are moved to its ``device``."""

    def __init__(self, xp: Namespace | None, device: Any) -> None:
        self.xp, self.device = xp, device
        self.bits = np.random.Philox(0)
        self.generator = np.random.Generator(self.bits)
        # the state set every step (its arrays filled in place: the setter copies them)
        self.counter, self.key = np.zeros(4, dtype=np.uint64), np.zeros(2, dtype=np.uint64)
        self.state = {"bit_generator": "Philox", "state": {"counter": self.counter, "key": self.key},
                      "buffer": np.zeros(4, dtype=np.uint64), "buffer_pos": 4, "has_uint32": 0, "uinteger": 0}

    def __call__(self, seed: int, step: int, shapes: Sequence[tuple[int, ...]]) -> list[Array]:
        self.counter[2], self.counter[3] = step & _MASK64, step >> 64
        self.key[0], self.key[1] = seed & _MASK64, seed >> 64
        self.bits.state = self.state  # nothing drawn before matters: buffers emptied too
        draws = [self.generator.random(shape, dtype=np.float32) for shape in shapes]
        if self.xp is None:
            return draws
        return [self.xp.asarray(u, device=self.device) for u in draws]


class _TorchUniforms:
    """A ``torch.Generator`` on the device, seeded per step (CUDA's is Philox: seeding costs nothing)."""

    def __init__(self, device: Any) -> None:
        self.torch = importlib.import_module("torch")
        self.device = device
        self.generator = self.torch.Generator(device=device)

    def __call__(self, seed: int, step: int, shapes: Sequence[tuple[int, ...]]) -> list[Array]:
        torch, g = self.torch, self.generator.manual_seed(splitmix64(seed, step))
        return [torch.rand(shape, generator=g, dtype=torch.float32, device=self.device) for shape in shapes]


class _CupyUniforms:
    """cuRAND's Philox through ``cupy.random.RandomState``, seeded per step (its offset back to 0 on every
    seed, no state to initialise), on the GPU that was current when it was made (fit's)."""

    def __init__(self, device: Any) -> None:
        cupy = self.cupy = importlib.import_module("cupy")
        with device if device is not None else cupy.cuda.Device():
            self.state = cupy.random.RandomState(method=cupy.cuda.curand.CURAND_RNG_PSEUDO_PHILOX4_32_10)

    def __call__(self, seed: int, step: int, shapes: Sequence[tuple[int, ...]]) -> list[Array]:
        self.state.seed(np.uint64(splitmix64(seed, step)))  # a uint64: CuPy casts the seed 'safe'ly
        return [self.state.random_sample(shape, dtype=self.cupy.float32) for shape in shapes]


class _JaxUniforms:
    """Stateless threefry keys: ``seed`` an int or :func:`seed_words` (maybe traced), ``step`` an int or a
    traced integer (taken modulo 2**32, as ``fold_in`` takes it)."""

    def __init__(self, device: Any) -> None:
        self.jax, self.device = importlib.import_module("jax"), device

    def __call__(self, seed: Any, step: Any, shapes: Sequence[tuple[int, ...]]) -> list[Array]:
        random = self.jax.random
        words = seed_words(seed) if isinstance(seed, int) else seed
        key = random.fold_in(random.wrap_key_data(words, impl="threefry2x32"),
                             step % 2**32 if isinstance(step, int) else step)
        float32 = self.jax.numpy.float32
        draws = [random.uniform(random.fold_in(key, i), shape, dtype=float32)
                 for i, shape in enumerate(shapes)]
        if self.device is None:  # inside a compiled program: its device
            return draws
        return [self.jax.device_put(u, self.device) for u in draws]
