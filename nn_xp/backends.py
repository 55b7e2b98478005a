"""Backend resolution: the one module that knows backend names and reads the environment.

Everything else in nn_xp receives arrays and asks them for their namespace.
A backend is chosen by argument, else ``NN_XP_BACKEND``, else ``"auto"``
(CuPy when a CUDA device answers, NumPy otherwise). A device is chosen by
argument, else ``NN_XP_DEVICE``, else the backend's default. Asking for a
backend that is not usable is an error, never a silent fallback.
"""
from __future__ import annotations

import contextlib
import functools
import importlib
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
from array_api_compat import array_namespace, is_array_api_obj, is_cupy_array, to_device
from array_api_compat import device as array_device

from ._typing import Array

__all__ = [
    "BACKENDS",
    "Backend",
    "BackendUnavailableError",
    "available_backends",
    "backend_of",
    "device_context",
    "format_backends",
    "is_host_array",
    "resolve_backend",
    "to_numpy",
]

#: Names accepted by ``backend=`` and ``NN_XP_BACKEND``.
BACKENDS = ("auto", "numpy", "cupy", "torch", "array_api_strict")

_INSTALL_HINT = {
    "numpy": "pip install numpy",
    "cupy": "pip install 'nn_xp[cuda12]' or 'nn_xp[cuda13]' (the CuPy build matching your CUDA driver)",
    "torch": "pip install torch",
    "array_api_strict": "pip install array-api-strict",
}


class BackendUnavailableError(RuntimeError):
    """A backend was asked for but cannot be used here (not installed, or no device)."""


@dataclass(frozen=True)
class Backend:
    """A resolved backend: its name, array namespace and device.

    ``xp`` is the array-API namespace (from ``array_api_compat``); ``device`` is
    the namespace's own device object, which every array nn_xp creates is put on.
    """

    name: str
    xp: Any
    device: Any

    def __hash__(self) -> int:
        # by the device's text: a CuPy Device is unhashable, and the generated hash would raise
        return hash((self.name, id(self.xp), str(self.device)))

    def asarray(self, host: Any, dtype: Any = None) -> Array:
        """Copy host data (NumPy, lists, scalars) onto this backend's device."""
        return self.xp.asarray(host, dtype=dtype, device=self.device)

    def context(self) -> Any:
        """Enter around work on this backend: CuPy works on the *current* GPU, so make it ours."""
        return self.device if self.needs_context else contextlib.nullcontext()

    @functools.cached_property
    def needs_context(self) -> bool:
        """Whether work must run inside :meth:`context` (CuPy); elsewhere it is a no-op, skipped."""
        return self.name == "cupy"

    @functools.cached_property
    def array_type(self) -> type:
        """The type of this backend's arrays, for cheap checks of arrays that are already the model's."""
        return type(self.xp.asarray(0.0, device=self.device))

    def dtype(self, name: str) -> Any:
        """The namespace's dtype object for ``"float32"`` or ``"float64"``."""
        if name not in ("float32", "float64"):
            raise ValueError(f"dtype must be 'float32' or 'float64', got {name!r}")
        return getattr(self.xp, name)

    def __str__(self) -> str:
        return f"{self.name} on {self.device}"


def _import(module: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError:
        return None


def _cuda_device_count(cupy: Any) -> tuple[int, str]:
    """How many CUDA devices CuPy sees; CuPy imports without a GPU and fails only here."""
    try:
        n = int(cupy.cuda.runtime.getDeviceCount())
    except Exception as exc:  # CUDARuntimeError, missing driver or libraries
        return 0, f"no CUDA device answered ({type(exc).__name__}: {exc})"
    return n, "" if n else "no CUDA device answered (device count is 0)"


def _probe(name: str) -> dict[str, Any]:
    """Report on one backend: installed, usable, devices, and why not usable."""
    info: dict[str, Any] = {"name": name, "installed": False, "usable": False,
                            "devices": [], "version": None, "reason": ""}
    module = _import(name)
    if module is None:
        info["reason"] = f"{name} is not installed (fix: {_INSTALL_HINT[name]})"
        return info
    info["installed"] = True
    info["version"] = getattr(module, "__version__", None)
    if name == "numpy":
        info.update(usable=True, devices=["cpu"])
    elif name == "array_api_strict":
        info.update(usable=True, devices=[str(d) for d in module.__array_namespace_info__().devices()])
    elif name == "torch":
        devices = ["cpu"]
        if module.cuda.is_available():
            devices += [f"cuda:{i}" for i in range(module.cuda.device_count())]
        info.update(usable=True, devices=devices)
    elif name == "cupy":
        n, reason = _cuda_device_count(module)
        if n:
            info.update(usable=True, devices=[f"cuda:{i}" for i in range(n)])
        else:
            info["reason"] = f"cupy is installed but {reason}"
    return info


def _auto_choice() -> str:
    return "cupy" if _probe("cupy")["usable"] else "numpy"


def available_backends() -> dict[str, dict[str, Any]]:
    """Report each backend: installed, usable, devices, version, and what ``auto`` picks.

    Returns
    -------
    dict
        ``{name: {"installed", "usable", "devices", "version", "reason"}}`` for
        every concrete backend, plus ``"auto": {"picks": name}``.

    Examples
    --------
    >>> import nn_xp
    >>> nn_xp.available_backends()["numpy"]["usable"]
    True
    """
    report: dict[str, dict[str, Any]] = {name: _probe(name) for name in BACKENDS[1:]}
    report["auto"] = {"picks": "cupy" if report["cupy"]["usable"] else "numpy"}
    return report


def format_backends(report: dict[str, dict[str, Any]] | None = None) -> str:
    """The :func:`available_backends` report as a text table (``python -m nn_xp``)."""
    report = available_backends() if report is None else report
    rows = [("backend", "installed", "usable", "version", "devices / reason")]
    for name in BACKENDS[1:]:
        r = report[name]
        rows.append((name, "yes" if r["installed"] else "no", "yes" if r["usable"] else "no",
                     r["version"] or "-", ", ".join(r["devices"]) if r["usable"] else r["reason"]))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row[:4], widths)) + "  " + row[4]
             for row in rows]
    env = os.environ.get("NN_XP_BACKEND")
    lines.append(f"auto picks: {report['auto']['picks']}"
                 + (f"   (NN_XP_BACKEND={env!r} is set)" if env else ""))
    return "\n".join(lines)


def _native_device(name: str, module: Any, device: Any) -> Any:
    """Turn a user's device spec (None, int, 'cuda:1', 'device1', native object) into the native one."""
    if name == "numpy":
        if device not in (None, "cpu"):
            raise ValueError(f"the numpy backend has only the 'cpu' device, got device={device!r}")
        return "cpu"
    if name == "array_api_strict":
        info = module.__array_namespace_info__()
        if device is None:
            return info.default_device()
        if isinstance(device, module.Device):
            return device
        for d in info.devices():
            if str(device) == str(d):
                return d
        try:  # by name, as the test matrix says "device1": Device(name) equals the listed device of that name
            named = module.Device(str(device))
        except (TypeError, ValueError):
            named = None
        if named is not None and named in info.devices():
            return named
        raise ValueError(f"array_api_strict has no device {device!r}; "
                         f"valid: {[str(d) for d in info.devices()]}")
    if name == "torch":
        if device is None:
            device = "cuda" if module.cuda.is_available() else "cpu"
        if isinstance(device, int) or (isinstance(device, str) and device.isdigit()):
            device = f"cuda:{int(device)}"
        dev = module.device(device)
        if dev.type == "cuda":
            count = module.cuda.device_count() if module.cuda.is_available() else 0
            index = module.cuda.current_device() if dev.index is None and count else (dev.index or 0)
            if index >= count:
                raise BackendUnavailableError(
                    f"backend 'torch' was asked for device {device!r}, but torch sees {count} CUDA "
                    "device(s); fix: pick another device or unset NN_XP_DEVICE")
            return module.device("cuda", index)  # canonical: tensors report cuda:N, never bare cuda
        if dev.type == "cpu":
            return module.device("cpu")  # tensors report 'cpu', never 'cpu:0'
        return module.device(dev.type, dev.index or 0)  # mps:0, xpu:0: as their tensors report
    # cupy
    if device is None:  # the current GPU (0 unless the program chose another), as torch's "cuda" means
        index = module.cuda.runtime.getDevice() if _cuda_device_count(module)[0] else 0
    elif isinstance(device, int) or (isinstance(device, str) and device.isdigit()):
        index = int(device)
    elif isinstance(device, str) and device.startswith("cuda"):
        index = int(device.partition(":")[2] or 0)
    elif isinstance(device, module.cuda.Device):
        return device
    else:
        raise ValueError(f"cupy device must be a GPU index, 'cuda:N' or a cupy.cuda.Device, got {device!r}")
    count, _ = _cuda_device_count(module)
    if index >= count:
        raise BackendUnavailableError(
            f"backend 'cupy' was asked for GPU {index}, but only {count} CUDA device(s) answered; "
            "fix: pick another device or unset NN_XP_DEVICE")
    return module.cuda.Device(index)


def resolve_backend(backend: str | None = None, device: Any = None) -> Backend:
    """Resolve a backend name and device into a :class:`Backend`.

    Parameters
    ----------
    backend : str, optional
        One of :data:`BACKENDS`. When None, ``NN_XP_BACKEND`` is read; when
        that is unset too, ``"auto"``.
    device : optional
        A device for the backend (``"cpu"``, a GPU index, ``"cuda:1"``,
        ``"device1"`` for array_api_strict, or a native device object). When
        None and the backend came from ``NN_XP_BACKEND`` or auto, ``NN_XP_DEVICE``
        is read; otherwise (and when it is unset) the backend's default.

    Raises
    ------
    ValueError
        For an unknown backend name (the message lists the valid ones).
    BackendUnavailableError
        For a backend that was asked for but is not installed or has no device.

    Examples
    --------
    >>> resolve_backend("numpy").name
    'numpy'
    """
    source = "backend argument"
    if backend is None:
        backend = os.environ.get("NN_XP_BACKEND") or "auto"
        source = "NN_XP_BACKEND" if "NN_XP_BACKEND" in os.environ else "default"
    if not isinstance(backend, str) or backend.lower() not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r} (from {source}); valid names: {', '.join(BACKENDS)}")
    name = backend.lower()
    if device is None and source != "backend argument":
        # NN_XP_DEVICE goes with NN_XP_BACKEND / auto: an explicit backend uses its own default device
        device = os.environ.get("NN_XP_DEVICE") or None
    if name == "auto":
        name = _auto_choice()
        if name == "numpy" and device is not None and str(device) != "cpu":
            raise BackendUnavailableError(
                f"backend 'auto' found no CUDA device but device {device!r} was asked for; "
                f"fix: install CuPy for your CUDA ({_INSTALL_HINT['cupy']}) or unset NN_XP_DEVICE")
    info = _probe(name)
    if not info["usable"]:
        fix_env = " or unset NN_XP_BACKEND" if source == "NN_XP_BACKEND" else ""
        raise BackendUnavailableError(
            f"backend {name!r} (from {source}) is not usable: {info['reason']}{fix_env}")
    module = importlib.import_module(name)
    native = _native_device(name, module, device)
    # array_api_strict is a namespace itself; the others are wrapped by array-api-compat
    xp = module if name == "array_api_strict" else importlib.import_module(f"array_api_compat.{name}")
    return Backend(name=name, xp=xp, device=native)


def backend_of(x: Array) -> Backend:
    """The :class:`Backend` an existing array lives on."""
    xp = array_namespace(x)
    module = xp.__name__.split(".")[-1]
    name = module if module in BACKENDS else xp.__name__
    return Backend(name=name, xp=xp, device=array_device(x))


def is_host_array(x: Any) -> bool:
    """NumPy arrays, NumPy scalars and plain Python data (lists, numbers): data that lives on the host."""
    return isinstance(x, (np.ndarray, np.generic)) or not is_array_api_obj(x)


def device_context(x: Array) -> Any:
    """A context in which new arrays land on ``x``'s device, or None where nothing is needed: CuPy
    allocates on the *current* GPU, and its kernels refuse arrays of another, so work on ``x`` from
    outside ``fit`` (a public ``Optimizer.step``, say) must make ``x``'s GPU the current one."""
    return x.device if is_cupy_array(x) else None


def to_numpy(x: Array) -> np.ndarray:
    """Copy any supported array to a host NumPy array (for the user, files, plots)."""
    if isinstance(x, np.ndarray):
        return x
    module = type(x).__module__.split(".")[0]
    if module == "cupy":
        return x.get()
    if module == "torch":
        return x.detach().cpu().numpy()
    try:
        return np.from_dlpack(x)
    except Exception:  # libraries whose DLPack export needs the host first
        return np.asarray(to_device(x, "cpu"))
