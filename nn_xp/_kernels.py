"""Fast paths that write into a buffer the caller owns, each beside its portable form.

The array API has no ``out=``: every product and every ``tanh`` makes a new
array. NumPy and CuPy take ``out=``, and on large layers a fresh temporary costs
as much as the arithmetic (on Linux, every NumPy array over 32 MiB is mapped
anew and page-faulted in). Each function here takes ``out``: with None, or on a
namespace without ``out=``, it is the portable array-API expression; otherwise
it writes into ``out``. This is the one module that asks which library it has.
"""
from __future__ import annotations

import contextlib
import functools
import importlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from array_api_compat import is_cupy_namespace, is_jax_namespace, is_numpy_namespace, is_torch_namespace

from ._typing import Array, Namespace

__all__ = ["FusedOps", "all_finite", "autograd_off", "blocks_elementwise_passes", "clip_scale", "column_sum",
           "copy_into", "descend", "dot", "flat_portable_parameters", "flat_view", "fused_ops",
           "fuses_products", "linear", "matmul_function", "maximum", "multiply", "relu_backward", "rsub",
           "sigmoid", "sigmoid_backward", "slices_are_views", "sum_of_squares", "supports_out", "tanh",
           "tanh_backward", "weight_gradient"]

_NATIVE: dict[str, Any] = {}


def supports_out(xp: Namespace) -> bool:
    """Whether the engine should write into ``out=`` buffers of ``xp``'s library (NumPy, CuPy). torch takes
    ``out=`` too, but into a view of a larger buffer its products are twenty times slower (measured: 50 µs
    for a 20 x 2 result, against 2.5 µs into a tensor of its own), and the flat gradients are such views."""
    return is_numpy_namespace(xp) or is_cupy_namespace(xp)


def blocks_elementwise_passes(xp: Namespace) -> bool:
    """Whether fit runs a layer's chain of elementwise passes on cache-sized blocks of rows (NumPy, on the
    CPU: each block stays in L2 from its first pass to its last); on a GPU (CuPy) one kernel over the whole
    array is best."""
    return is_numpy_namespace(xp)


def slices_are_views(xp: Namespace) -> bool:
    """Whether a contiguous slice of an array, reshaped, is a view that in-place updates write through
    (NumPy, CuPy, torch; not a library that may copy, nor an immutable one)."""
    return supports_out(xp) or is_torch_namespace(xp)


def flat_portable_parameters(xp: Namespace) -> bool:
    """Whether the portable engine keeps the parameters as views of one flat buffer (torch: an undo point
    is then one copy, not one per array; NumPy and CuPy have the buffered engine for that, and the portable
    one stays the array API's plain arrays there, the reference it is tested against)."""
    return is_torch_namespace(xp)


def fuses_products(xp: Namespace) -> bool:
    """Whether the library fuses a product with what surrounds it in one call (torch's ``addmm``) and has
    one-pass backward kernels: the fused engine's step then needs fewer calls, which on a tiny network is what
    it costs."""
    return is_torch_namespace(xp)


def autograd_off(xp: Namespace) -> contextlib.AbstractContextManager:
    """A context in which the library records no autograd graph (torch's ``no_grad``: nn_xp differentiates
    by hand, and each operation's dispatch costs less there), or a null context."""
    if is_torch_namespace(xp):
        return _native(xp).no_grad()
    return contextlib.nullcontext()


@dataclass(frozen=True)
class FusedOps:
    """The library's own calls for the fused engine's step, looked up once per fit (a tiny network's step
    makes about twenty, and a lookup per call would cost as much again)."""

    #: ``linear(b, a, WT) -> a @ WT + b`` (torch's ``addmm``)
    linear: Callable[[Array, Array, Array], Array]
    #: ``product(a, b) -> a @ b`` for 2-D arrays (``mm``)
    product: Callable[[Array, Array], Array]
    #: ``descend(p, g, lr)``: ``p -= lr * g`` in place (one ``add_``, as :func:`descend`)
    descend: Callable[[Array, Array, float], None]
    #: ``column_sum(x) -> sum(x, axis=0)``
    column_sum: Callable[[Array], Array]


def fused_ops(xp: Namespace) -> FusedOps:
    """:class:`FusedOps` of a library that :func:`fuses_products` (torch)."""
    if not fuses_products(xp):
        raise ValueError(f"{xp.__name__} has no fused operations for the fused engine (torch has)")
    torch = _native(xp)
    return FusedOps(torch.addmm, torch.mm, _torch_descend, functools.partial(torch.sum, dim=0))


def _torch_descend(p: Array, g: Array, lr: float) -> None:
    p.add_(g, alpha=-lr)


def _native(xp: Namespace) -> Any:
    """numpy, cupy or torch itself, behind the array-api-compat wrapper (whose functions take no ``out=``)."""
    module = _NATIVE.get(xp.__name__)
    if module is None:
        name = "cupy" if is_cupy_namespace(xp) else "torch" if is_torch_namespace(xp) else "numpy"
        module = _NATIVE[xp.__name__] = importlib.import_module(name)
    return module


def linear(a: Array, W: Array, b: Array, xp: Namespace) -> Array:
    """``a @ W.T + b``: on torch one fused ``addmm`` (no separate pass for the bias), elsewhere the two
    array-API operations."""
    if is_torch_namespace(xp):
        return _native(xp).addmm(b, a, W.T)
    return a @ W.T + b


def descend(p: Array, g: Array, lr: Any, xp: Namespace) -> Array:
    """``p -= lr * g``, in place where the library allows, overwriting ``g``; returns ``p`` (a new array
    where arrays are immutable). torch does it in one fused ``add_``; NumPy and CuPy in two passes."""
    if is_torch_namespace(xp):
        return p.add_(g, alpha=-lr)
    g *= lr
    p -= g
    return p


def copy_into(dst: Array, src: Array, xp: Namespace) -> None:
    """``dst[...] = src`` (torch's own ``copy_``: its indexed assignment costs several times more)."""
    if is_torch_namespace(xp):
        dst.copy_(src)
    else:
        dst[...] = src


def column_sum(x: Array, xp: Namespace) -> Array:
    """``sum(x, axis=0)``, by the array's own method where it has one (the wrapper's costs a microsecond)."""
    return x.sum(0) if slices_are_views(xp) else xp.sum(x, axis=0)


def flat_view(x: Array, xp: Namespace) -> Array:
    """A contiguous ``x`` as 1-D, a view (the array's own ``reshape`` where it has one: the wrapper's costs
    a microsecond, which the tiny network pays every epoch)."""
    if supports_out(xp) or is_torch_namespace(xp):
        return x.reshape(-1)
    return xp.reshape(x, (-1,))


def dot(a: Array, b: Array, xp: Namespace) -> Array:
    """``a @ b`` for two vectors, a scalar: torch's own ``dot`` (its ``@`` passes through a Python wrapper
    first, a microsecond a call)."""
    if is_torch_namespace(xp):
        return _native(xp).dot(a, b)
    return a @ b


def weight_gradient(dZ: Array, a: Array, xp: Namespace) -> Array:
    """``dZ.T @ a``, a layer's weight gradient (a sum over the samples). On JAX it is one contraction over
    the first axes: XLA compiles the transposed product as a copy and a loop where ``a`` has one column
    (measured on the CPU: a fifth of an epoch of the blog's 1-20-1 network on 1000 samples)."""
    if is_jax_namespace(xp):
        return xp.tensordot(dZ, a, axes=([0], [0]))
    return dZ.T @ a


def all_finite(x: Array, xp: Namespace) -> bool:
    """Whether no value of ``x`` is NaN or infinite, read back to the host.

    On NumPy and CuPy a contiguous float array is first summed as ``x . x`` (one
    BLAS pass, no temporary): that sum is finite only if every value is. It can
    overflow on huge finite values, which the exact check after it then clears."""
    if not supports_out(xp):
        return bool(xp.all(xp.isfinite(x)))
    np = _native(xp)
    if x.dtype.kind not in "fc":
        return True  # integers and booleans are always finite
    if x.flags.c_contiguous and math.isfinite(float(np.vdot(x, x))):
        return True
    return bool(np.isfinite(x).all())


def sum_of_squares(x: Array, xp: Namespace) -> Any:
    """``sum(x * x)`` over every element of ``x``, never read back: NumPy's ``vdot`` (one BLAS pass, no
    temporary; a host scalar, as every NumPy value is), torch's ``dot`` (a device scalar); elsewhere the
    array-API expression, which XLA fuses and a CUDA graph captures (CuPy: no BLAS call whose result
    might come back through the host)."""
    if is_numpy_namespace(xp):
        return _native(xp).vdot(x, x)
    if is_torch_namespace(xp):
        v = x.reshape(-1)
        return _native(xp).dot(v, v)
    return xp.sum(x * x)


def clip_scale(sum_sq: Any, clip_norm: float, xp: Namespace) -> Any:
    """The factor ``min(1, clip_norm / norm)`` (``norm = sqrt(sum_sq)``) that brings a norm down to at most
    ``clip_norm``, NaN where the norm is not finite (as Keras' ``clip_by_global_norm``: a gradient that
    overflowed must show as a divergence, not as a silent zero step).

    A device scalar, computed without reading the device; on NumPy (whose values are on the host) a
    Python float, or None where it is 1 and there is nothing to do."""
    if is_numpy_namespace(xp):
        norm = math.sqrt(float(sum_sq))
        if norm <= clip_norm:
            return None
        return clip_norm / norm if math.isfinite(norm) else math.nan
    norm = xp.sqrt(sum_sq)
    scale = clip_norm / xp.maximum(norm, clip_norm)  # 1 exactly where norm <= clip_norm
    return xp.where(xp.isfinite(norm), scale, xp.full_like(scale, math.nan))


def matmul_function(xp: Namespace) -> Any:
    """``f(a, b, out=None) -> a @ b`` for 1-D and 2-D arrays (into ``out`` where given): the library's own
    ``matmul`` where it takes ``out=`` (one C call, no Python frame: the tiny-network loop calls it several
    times an epoch). CuPy before 14 has ``matmul`` as a Python-level gufunc, tens of microseconds a call:
    there ``dot``, a compiled function that is the same product for these shapes."""
    if not supports_out(xp):
        return _portable_matmul
    native = _native(xp)
    if is_cupy_namespace(xp) and _major(native.__version__) < 14:
        return native.dot
    return native.matmul


def _major(version: str) -> int:
    head = version.split(".", 1)[0]
    return int(head) if head.isdigit() else 0


def _portable_matmul(a: Array, b: Array, out: None = None) -> Array:
    return a @ b


def multiply(a: Array, b: Any, xp: Namespace, out: Array | None = None) -> Array:
    """``a * b``, into ``out`` where the library can."""
    if out is None:
        return a * b
    return _native(xp).multiply(a, b, out=out)


def tanh(x: Array, xp: Namespace, out: Array | None = None) -> Array:
    """``tanh(x)``, into ``out`` (which may be ``x``) where the library can."""
    if out is None:
        return xp.tanh(x)
    return _native(xp).tanh(x, out=out)


def sigmoid(z: Array, xp: Namespace, out: Array | None = None) -> Array:
    """``1 / (1 + exp(-z))``, into ``out`` where the library can.

    The portable form goes through ``tanh`` (no ``exp`` overflow, so no warning,
    for any ``z``); torch has its own one-pass ``sigmoid``, which never warns. ``out`` may
    be ``z`` itself (in place). Into a float64 NumPy buffer it goes through ``exp``, twice as
    fast as NumPy's float64 ``tanh`` (measured, AVX-512): ``exp(-z)`` overflows
    to inf below z = -709, where ``1 / (1 + inf) = 0`` is the right value, so
    the overflow is silenced, not hidden.
    """
    if out is not None and is_numpy_namespace(xp) and z.dtype == xp.float64:
        np = _native(xp)
        with np.errstate(over="ignore"):
            np.negative(z, out=out)
            np.exp(out, out=out)
        out += 1.0
        return np.reciprocal(out, out=out)
    if out is None and is_torch_namespace(xp):
        return _native(xp).sigmoid(z)
    if out is None:
        a = xp.tanh(z * 0.5)
    else:
        np = _native(xp)
        a = np.multiply(z, 0.5, out=out)
        np.tanh(a, out=a)
    a *= 0.5
    a += 0.5
    return a


def sigmoid_backward(dA: Array, a: Array, xp: Namespace, consume: bool = False) -> Array:
    """``dA * a * (1 - a)``, sigmoid's ``dZ`` from its output ``a``, overwriting ``dA`` (and with ``consume``
    the spent ``a``) where it runs in passes; torch has the one pass its autograd uses
    (``aten.sigmoid_backward``: one call for three, a new array)."""
    if is_torch_namespace(xp):
        return _native(xp).ops.aten.sigmoid_backward(dA, a)
    dA *= a
    dA *= rsub(1.0, a, xp, inplace=consume)
    return dA


def tanh_backward(dA: Array, a: Array, xp: Namespace, consume: bool = False) -> Array:
    """``dA * (1 - a**2)``, tanh's ``dZ`` from its output ``a``, as ``dA - dA * a**2`` overwriting ``dA`` (and
    with ``consume`` the spent ``a``) where it runs in passes; torch: ``aten.tanh_backward``, one pass."""
    if is_torch_namespace(xp):
        return _native(xp).ops.aten.tanh_backward(dA, a)
    if consume:
        a *= a  # a^2 written over the spent a
        t = a
    else:
        t = a * a
    t *= dA
    dA -= t
    return dA


def relu_backward(dA: Array, a: Array, xp: Namespace) -> Array:
    """``dA`` where ``a > 0``, else 0 (a new array); torch: ``aten.threshold_backward``, one pass for two."""
    if is_torch_namespace(xp):
        return _native(xp).ops.aten.threshold_backward(dA, a, 0)
    return xp.where(a > 0, dA, 0.0)


def maximum(a: Array, b: Any, xp: Namespace, out: Array | None = None) -> Array:
    """``maximum(a, b)``, into ``out`` where the library can."""
    if out is None:
        return xp.maximum(a, b)
    return _native(xp).maximum(a, b, out=out)


def rsub(c: float, x: Array, xp: Namespace, inplace: bool) -> Array:
    """``c - x``; with ``inplace`` it overwrites ``x`` (a spent buffer), in one pass where the library can."""
    if not inplace:
        return c - x
    if supports_out(xp):
        return _native(xp).subtract(c, x, out=x)
    x *= -1.0  # portable: in-place operators are in the standard
    x += c
    return x
