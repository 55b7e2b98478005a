"""Checks at the public entry points: clear errors naming the argument, what was expected and what was given.

Entry points convert the user's data to the model's device once (``as_model_array``);
the low-level calls (``evaluate``, ``compute_gradient``) only accept arrays that
already live in the model's namespace, device and dtype (``check_model_array``).
"""
from __future__ import annotations

import math
from numbers import Integral, Real
from typing import Any

from array_api_compat import array_namespace, is_array_api_obj
from array_api_compat import device as array_device

from . import _kernels as K
from . import backends
from ._host import to_host_array
from ._typing import Array

__all__ = ["as_model_array", "check_model_array", "check_positive", "check_same_samples", "short"]


def short(value: Any) -> str:
    """A repr cut short, for messages about values that may be huge (a hostile header, a state dict)."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _describe(x: Any) -> str:
    shape, dtype = tuple(getattr(x, "shape", ())), getattr(x, "dtype", None)
    return f"{type(x).__name__} of shape {shape} and dtype {dtype}"


def _check_kind(x: Array, name: str, xp: Any) -> None:
    """Reject complex and non-numeric dtypes by name (bool, integers and real floats are data)."""
    if not xp.isdtype(x.dtype, ("real floating", "integral", "bool")):
        raise TypeError(f"{name} must hold real numbers, got dtype {x.dtype}")


def _check_shape(x: Array, name: str, n_cols: int | None, allow_1d: bool, xp: Any) -> Array:
    """Accept ``(m, n_cols)``; a 1-D ``(m,)`` only where it is unambiguous (``allow_1d``)."""
    if x.ndim == 1 and allow_1d:
        x = xp.reshape(x, (-1, 1))
    if x.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n_samples, n_features), got shape {tuple(x.shape)}"
                         + ("; reshape a single feature with x.reshape(-1, 1)" if x.ndim == 1 else ""))
    if x.shape[0] == 0:
        raise ValueError(f"{name} is empty: shape {tuple(x.shape)} has no samples")
    if n_cols is not None and x.shape[1] != n_cols:
        raise ValueError(f"{name} has {x.shape[1]} columns, the network expects {n_cols} "
                         f"(got shape {tuple(x.shape)})")
    return x


def as_model_array(x: Any, name: str, backend: backends.Backend, dtype: str | None, n_cols: int | None,
                   *, allow_1d: bool = False, check_finite: bool = True) -> tuple[Array, bool]:
    """Move user data to the model's namespace, device and dtype (once, at fit/predict entry).

    Host data (NumPy, lists) are cast on the host, then copied to the device
    once; an array of another library goes through the host explicitly here.
    ``dtype`` is ``"float32"``/``"float64"``, or None to keep the data's own.
    Returns the array and whether the input came from the host, so results
    can be handed back in the same kind.
    """
    xp = backend.xp
    if dtype is not None and type(x) is backend.array_type and x.dtype == backend.dtype(dtype) \
            and getattr(x, "device", None) == backend.device:
        return _checked(x, name, n_cols, allow_1d, check_finite, xp), False  # the model's already: no copy
    if is_array_api_obj(x) and array_namespace(x) is xp:
        host = False
        if array_device(x) != backend.device:
            x = xp.asarray(x, device=backend.device, copy=True)  # the model's device, explicitly
    else:
        host = backends.is_host_array(x)
        arr = to_host_array(x if host else backends.to_numpy(x), name)
        if arr.dtype.kind not in "fiub":
            raise TypeError(f"{name} must hold real numbers, got dtype {arr.dtype}")
        if dtype is not None:
            arr = arr.astype(dtype, copy=False)  # cast before the transfer: fewer bytes, no device temporary
        x = backend.asarray(arr)
    _check_kind(x, name, xp)
    if dtype is not None and x.dtype != backend.dtype(dtype):
        x = xp.astype(x, backend.dtype(dtype))
    return _checked(x, name, n_cols, allow_1d, check_finite, xp), host


def _checked(x: Array, name: str, n_cols: int | None, allow_1d: bool, check_finite: bool, xp: Any) -> Array:
    x = _check_shape(x, name, n_cols, allow_1d, xp)
    if check_finite and not K.all_finite(x, xp):
        raise ValueError(f"{name} contains NaN or infinity; clean or impute the data first")
    return x


def check_model_array(x: Any, name: str, backend: backends.Backend, dtype: Any,
                      n_cols: int | None) -> Array:
    """Low-level calls take arrays of the model's own namespace, device and dtype; else an error."""
    if type(x) is backend.array_type and x.dtype == dtype and getattr(x, "device", None) == backend.device \
            and x.ndim == 2 and x.shape[0] and (n_cols is None or x.shape[1] == n_cols):
        return x  # already the model's, as fit's own calls give: no namespace lookup
    if not is_array_api_obj(x):
        raise TypeError(f"{name} must be an array of the model's backend ({backend}), "
                        f"got {type(x).__name__}; "
                        "use predict/fit for host data, or move it with the backend's asarray")
    if array_namespace(x) is not backend.xp:
        raise TypeError(f"{name} is a {_describe(x)} but the model lives on {backend}; "
                        "move the data to the model's backend first (fit/predict do it for you)")
    if array_device(x) != backend.device:
        raise ValueError(f"{name} is on device {array_device(x)} but the model is on {backend.device}")
    if x.dtype != dtype:
        raise TypeError(f"{name} has dtype {x.dtype}, the model uses {dtype}")
    return _check_shape(x, name, n_cols, False, backend.xp)


def check_same_samples(x: Array, y: Array, xname: str = "X", yname: str = "Y") -> None:
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"{xname} and {yname} have different numbers of samples: "
                         f"{x.shape[0]} and {y.shape[0]}")


def check_fraction(value: Any, name: str) -> None:
    """A number in [0, 1) (a momentum, a decay rate), else ValueError/TypeError naming it."""
    check_positive(value, name, allow_zero=True)
    if value >= 1:
        raise ValueError(f"{name} must be in [0, 1), got {value!r}")


def check_positive(value: Any, name: str, *, integer: bool = False, allow_zero: bool = False) -> None:
    """A positive (or non-negative) finite number, or integer, else ValueError/TypeError naming it."""
    kind = "integer" if integer else "number"
    if isinstance(value, bool) or not isinstance(value, Integral if integer else Real):
        raise TypeError(f"{name} must be {'an' if integer else 'a'} {kind}, got {value!r}")
    v = float(value)
    if not math.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        sign = "non-negative" if allow_zero else "positive"
        raise ValueError(f"{name} must be a {sign} {kind}, got {value!r}")
