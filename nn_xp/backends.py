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
import importlib.metadata
import os
import re
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
    "DEFAULT_COMM_TIMEOUT",
    "Launch",
    "available_backends",
    "backend_of",
    "device_context",
    "format_backends",
    "comm_timeout",
    "dtype_name",
    "environment",
    "format_environment",
    "is_host_array",
    "launch",
    "resolve_backend",
    "resolve_saved",
    "to_numpy",
]

#: Names accepted by ``backend=`` and ``NN_XP_BACKEND``.
BACKENDS = ("auto", "numpy", "cupy", "torch", "array_api_strict", "jax")

_INSTALL_HINT = {
    "numpy": "pip install numpy",
    "cupy": "pip install 'nn_xp[cuda12]' or 'nn_xp[cuda13]' (the CuPy build matching your CUDA driver)",
    "torch": "pip install torch",
    "array_api_strict": "pip install array-api-strict",
    "jax": "pip install 'nn_xp[jax]' (CPU) or 'nn_xp[jax-cuda12]' / 'nn_xp[jax-cuda13]' (NVIDIA GPU)",
}

#: JAX computes in float32 unless its 64-bit mode is on (a float64 request would silently give float32)
_JAX_X64_HINT = ("dtype='float64' on the jax backend needs JAX's 64-bit mode, which is off: set "
                 "JAX_ENABLE_X64=1 in the environment before Python starts (or call "
                 "jax.config.update('jax_enable_x64', True) before creating the network), or use "
                 "dtype='float32'")


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

    def dtype(self, name: Any) -> Any:
        """The namespace's dtype object for ``"float32"`` or ``"float64"`` (or a dtype object naming one of
        them: see :func:`dtype_name`)."""
        if not isinstance(name, str) or name not in ("float32", "float64"):
            name = dtype_name(name)
        if name == "float64" and self.name == "jax" and not _jax_x64():
            raise ValueError(_JAX_X64_HINT)
        return getattr(self.xp, name)

    @property
    def device_spec(self) -> Any:
        """The device as plain data (``"cpu"``, ``"cuda:1"``, a GPU index, ``"device1"``) that
        :func:`resolve_backend` takes back: what a pickle records, so that unpickling imports no GPU
        library before the backend is resolved again."""
        if self.name == "cupy":
            return int(self.device.id)
        if self.name == "jax":  # "cpu:0", "cuda:1": the platform and the index among its devices
            platform = self.device.platform
            return f"{platform}:{importlib.import_module('jax').devices(platform).index(self.device)}"
        return str(self.device)  # torch's "cuda:1"; array_api_strict's devices are found by their text

    def __str__(self) -> str:
        return f"{self.name} on {self.device}"


#: the libraries whose own dtype objects name a precision in their text (``torch.float32``); NumPy's, CuPy's
#: and JAX's convert through ``numpy.dtype``
_DTYPE_LIBRARIES = ("torch", "array_api_strict")


def dtype_name(dtype: Any) -> str:
    """``"float32"`` or ``"float64"`` from a name or a dtype object of any backend.

    Accepts the strings, ``numpy.float32`` / ``numpy.dtype("float64")`` (CuPy's and
    JAX's dtypes are NumPy's, or convert to them), ``torch.float32``, array_api_strict's
    dtypes, and Python's ``float`` (float64, as NumPy reads it). The backend of the
    object does not matter: it names the precision.

    Examples
    --------
    >>> import numpy as np
    >>> dtype_name(np.float32), dtype_name("float64")
    ('float32', 'float64')
    """
    if isinstance(dtype, str):
        if dtype in ("float32", "float64"):
            return dtype
        raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
    name = None
    if type(dtype).__module__.split(".")[0] in _DTYPE_LIBRARIES:
        name = str(dtype).rpartition(".")[2]
    elif dtype is not None:
        try:
            name = np.dtype(dtype).name
        except TypeError:
            pass
    if name not in ("float32", "float64"):
        got = f"{dtype!r}" + (f" ({name})" if name else "")
        raise ValueError(f"dtype must be 'float32' or 'float64', or a dtype object of either (np.float32, "
                         f"torch.float64, jnp.float32, ...), got {got}")
    return name


def _import(module: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError:
        return None


def _jax_x64() -> bool:
    """Whether JAX's 64-bit mode is on now (``JAX_ENABLE_X64`` at import, or ``jax.config`` since)."""
    return bool(importlib.import_module("jax").config.read("jax_enable_x64"))


def _jax_devices(jax: Any) -> list[Any]:
    """JAX's devices: the default platform's, then the host's CPU where that is another platform."""
    devices = list(jax.devices())
    if devices[0].platform != "cpu":
        try:
            devices += jax.devices("cpu")
        except RuntimeError:  # a JAX built without the CPU platform
            pass
    return devices


# ------------------------------------------------- why CuPy is not usable: one sentence, with its fix
#: CuPy's own distributions: they share the ``cupy`` package and overwrite each other's files
_CUPY_DISTRIBUTION = re.compile(r"cupy|cupy-cuda[0-9]+x?|cupy-rocm-[0-9-]+|amd-cupy")
_NO_GPU_FIX = ("fix: run on a machine with an NVIDIA GPU and its driver (nvidia-smi lists the GPU), "
               "or pick another backend")
#: the Linux driver each CUDA major version needs at least (NVIDIA's CUDA compatibility table)
_MIN_DRIVER = {12: "525.60.13", 13: "580.65.06"}


#: CUDA errors at the first device query that are neither "no GPU" nor "driver too old": (what, fix)
_CUDA_ERRORS = {
    "cudaErrorSystemDriverMismatch": (
        "the NVIDIA driver's library and kernel module are different versions (a driver updated without a "
        "reboot)", "reboot, or reinstall the NVIDIA driver"),
    "cudaErrorDevicesUnavailable": (
        "a GPU is there but none is available (each busy in exclusive-process mode, or prohibited)",
        "wait for the other process, or let GPUs be shared (nvidia-smi -c DEFAULT), or pick another backend"),
}


@functools.cache
def _cupy_distributions() -> tuple[str, ...]:
    """The CuPy packages installed, by normalised name (CuPy warns at import when there are several)."""
    names = {re.sub(r"[-_.]+", "-", d.metadata.get("Name") or "").lower()
             for d in importlib.metadata.distributions()}
    return tuple(sorted(n for n in names if _CUPY_DISTRIBUTION.fullmatch(n)))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def _cuda_version(cupy: Any, which: str) -> int | None:
    """``driverGetVersion`` (0 without a driver) or ``runtimeGetVersion`` as 1000 * major + 10 * minor."""
    try:
        return int(getattr(cupy.cuda.runtime, which)())
    except Exception:
        return None


def _cuda_text(version: int | None) -> str:
    return "?" if version is None else f"{version // 1000}.{version % 1000 // 10}"


def _cupy_build(cupy: Any) -> tuple[str, int | None]:
    """The installed CuPy package's name and the CUDA major version its runtime is for."""
    dists = _cupy_distributions()
    runtime = _cuda_version(cupy, "runtimeGetVersion")
    major = runtime // 1000 if runtime else None
    named = re.fullmatch(r"cupy-cuda([0-9]{2})x", dists[0]) if dists else None
    major = major or (int(named.group(1)) if named else None)
    return (dists[0] if named else f"cupy-cuda{major}x" if major else "cupy"), major


def _cuda_device_count(cupy: Any) -> tuple[int, str]:
    """How many CUDA devices CuPy sees, and why none; CuPy imports without a GPU and fails only here."""
    try:
        n = int(cupy.cuda.runtime.getDeviceCount())
    except Exception as exc:  # CUDARuntimeError: no device, no driver, an old driver
        seen = _first_line(exc)
        known = next((why for code, why in _CUDA_ERRORS.items() if code in seen), None)
        if known is not None:
            return 0, f"{known[0]} ({seen}); fix: {known[1]}"
        if "cudaErrorInsufficientDriver" not in seen:
            return 0, f"no GPU (no CUDA device answered: {seen}); {_NO_GPU_FIX}"
        driver = _cuda_version(cupy, "driverGetVersion")
        if not driver:  # no driver at all reads as an insufficient one, whose CUDA version is 0
            return 0, f"no GPU (no NVIDIA driver answered, so no CUDA device did: {seen}); {_NO_GPU_FIX}"
        return 0, _old_driver_reason(cupy, driver)
    return n, "" if n else f"no GPU (no CUDA device answered: CuPy sees 0 devices); {_NO_GPU_FIX}"


def _old_driver_reason(cupy: Any, driver: int) -> str:
    runtime = _cuda_version(cupy, "runtimeGetVersion")
    package, major = _cupy_build(cupy)
    needs = f"a driver for CUDA {major} (on Linux {_MIN_DRIVER[major]} or newer)" if major in _MIN_DRIVER \
        else "a newer driver"
    has = driver // 1000
    if has in _MIN_DRIVER and (major is None or has < major):
        fix = (f"install the CuPy build for CUDA {has} instead (pip uninstall -y {package}; then pip install "
               f"'nn_xp[cuda{has}]', which is cupy-cuda{has}x), or update the NVIDIA driver")
    else:
        fix = "update the NVIDIA driver (nn_xp's CuPy extras are nn_xp[cuda12] and nn_xp[cuda13])"
    version = getattr(cupy, "__version__", "?")
    return (f"the NVIDIA driver is too old for this CuPy build ({package} {version} runs the CUDA "
            f"{_cuda_text(runtime)} runtime, which needs {needs}; this driver supports CUDA "
            f"{_cuda_text(driver)}, the 'CUDA Version' nvidia-smi shows); fix: {fix}")


def _cuda_libraries_reason(cupy: Any) -> str:
    """Why CuPy cannot load NVRTC (which compiles every kernel) or cuBLAS (matmul), else "".

    CuPy 14 looks for them only when a kernel first needs them: a device count alone does not tell.
    """
    missing = []
    for name, module in (("NVRTC", "nvrtc"), ("cuBLAS", "cublas")):
        try:  # importing the cuBLAS wrapper loads the library; NVRTC is loaded by its first call
            lib = importlib.import_module(f"cupy_backends.cuda.libs.{module}")
            if module == "nvrtc":
                lib.getVersion()
        except Exception as exc:
            missing.append(f"{name}: {_first_line(exc)}")
    if not missing:
        return ""
    package, major = _cupy_build(cupy)
    toolkit = f"the CUDA {major} toolkit" if major else "the CUDA toolkit"
    major_version = re.match(r"[0-9]+", str(getattr(cupy, "__version__", "")))
    wheels = package.startswith("cupy-cuda") and major_version is not None and int(major_version[0]) >= 14
    fix = (f"pip install '{package}[ctk]' (the CUDA libraries as wheels), or install {toolkit} and set "
           f"CUDA_PATH to it" if wheels else f"install {toolkit} (NVRTC and cuBLAS come with it) and set "
           f"CUDA_PATH to it, or upgrade to CuPy 14 and pip install '{package}[ctk]'")
    return f"CUDA libraries not found ({'; '.join(missing)}), so no CuPy kernel could run; fix: {fix}"


def _probe_cupy(info: dict[str, Any]) -> dict[str, Any]:
    """:func:`_probe` for CuPy: which package, does it import, does a GPU answer, are its libraries there."""
    dists = _cupy_distributions()
    if len(dists) > 1:  # told before importing cupy, whose own warning filterwarnings=error makes a crash
        info.update(installed=True, reason=(
            f"several CuPy packages are installed ({', '.join(dists)}), which overwrite each other's files; "
            f"fix: uninstall them all (pip uninstall -y {' '.join(dists)}), then install only the one "
            f"matching nvidia-smi's CUDA version ({_INSTALL_HINT['cupy']})"))
        return info
    try:
        cupy = importlib.import_module("cupy")
    except ImportError as exc:
        if isinstance(exc, ModuleNotFoundError) and exc.name == "cupy":
            info["reason"] = f"cupy is not installed (fix: {_INSTALL_HINT['cupy']})"
        else:  # installed, but a library or package it loads at import is missing
            info.update(installed=True, reason=(
                f"{dists[0] if dists else 'cupy'} is installed but does not import ({_first_line(exc)}); "
                f"fix: install what it names, or reinstall the CuPy build matching nvidia-smi's CUDA "
                f"version ({_INSTALL_HINT['cupy']})"))
        return info
    info.update(installed=True, version=getattr(cupy, "__version__", None))
    n, reason = _cuda_device_count(cupy)
    reason = reason or _cuda_libraries_reason(cupy)
    if reason:
        info["reason"] = reason
    else:
        info.update(usable=True, devices=[f"cuda:{i}" for i in range(n)])
    return info


def _probe(name: str) -> dict[str, Any]:
    """Report on one backend: installed, usable, devices, and why not usable."""
    info: dict[str, Any] = {"name": name, "installed": False, "usable": False,
                            "devices": [], "version": None, "reason": ""}
    if name == "cupy":
        return _probe_cupy(info)
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
    elif name == "jax":
        try:
            info.update(usable=True, devices=[str(d) for d in _jax_devices(module)])
        except Exception as exc:  # a broken plugin or runtime: jax imports, its backends do not start
            info["reason"] = f"jax is installed but no device started ({type(exc).__name__}: {exc})"
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


def format_backends(report: dict[str, dict[str, Any]] | None = None, above_auto: str = "") -> str:
    """The :func:`available_backends` report as a text table (``python -m nn_xp``), its last line what
    ``auto`` picks; ``above_auto``: lines to put between the table and that line."""
    report = available_backends() if report is None else report
    rows = [("backend", "installed", "usable", "version", "devices / reason")]
    for name in BACKENDS[1:]:
        r = report[name]
        rows.append((name, "yes" if r["installed"] else "no", "yes" if r["usable"] else "no",
                     r["version"] or "-", ", ".join(r["devices"]) if r["usable"] else r["reason"]))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row[:4], widths)) + "  " + row[4]
             for row in rows]
    if above_auto:
        lines += ["", above_auto]
    env = os.environ.get("NN_XP_BACKEND")
    lines.append(f"auto picks: {report['auto']['picks']}"
                 + (f"   (NN_XP_BACKEND={env!r} is set)" if env else ""))
    return "\n".join(lines)


def environment() -> dict[str, Any]:
    """What ``Network()`` resolves to here, read as it would be: ``{"NN_XP_BACKEND": value or None,
    "NN_XP_DEVICE": value or None, "backend": Backend or None, "error": the exception or None}``."""
    env = {key: os.environ.get(key) for key in ("NN_XP_BACKEND", "NN_XP_DEVICE")}
    try:
        return {**env, "backend": resolve_backend(), "error": None}
    except (BackendUnavailableError, ValueError) as exc:
        return {**env, "backend": None, "error": exc}


def format_environment(found: dict[str, Any] | None = None) -> str:
    """:func:`environment` as text: the variables in force, and what ``Network()`` uses or why it fails."""
    found = environment() if found is None else found
    backend, device = found["NN_XP_BACKEND"], found["NN_XP_DEVICE"]
    lines = [f"NN_XP_BACKEND={backend!r}" if backend is not None else "NN_XP_BACKEND is not set (auto)",
             f"NN_XP_DEVICE={device!r}" if device is not None else "NN_XP_DEVICE is not set"]
    if device and not backend:
        lines[-1] += " (read with auto)"
    if found["error"] is not None:
        lines.append(f"Network() here fails: {type(found['error']).__name__}: {found['error']}")
    else:
        chosen = found["backend"]
        lines.append(f"Network() here uses: backend {chosen.name!r} on device {chosen.device}")
    return "\n".join(lines)


def resolve_saved(name: str, device: Any, what: str) -> tuple[Backend, str | None]:
    """The backend that ``what`` (a pickled network) was on, resolved again: ``(backend, None)``.

    ``NN_XP_BACKEND`` does not move it: the recorded backend and device are used.
    Where they are not usable here and ``NN_XP_BACKEND`` is set, it opens on the
    backend that names instead: ``(that backend, why the recorded one is not usable)``,
    for the caller to warn. Else a :class:`BackendUnavailableError` with the fix.
    """
    try:
        return resolve_backend(name, device), None
    except (BackendUnavailableError, ValueError) as exc:
        reason = str(exc)
    if os.environ.get("NN_XP_BACKEND"):
        return resolve_backend(), reason
    raise BackendUnavailableError(
        f"{what} was pickled on backend {name!r}, device {device!r}, which is not usable here ({reason}); "
        "fix: unpickle it where that backend and device are usable, or set NN_XP_BACKEND (and NN_XP_DEVICE) "
        "to a backend to open it on here, e.g. NN_XP_BACKEND=numpy")


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
    if name == "jax":
        return _jax_device(module, device)
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
                    "device(s); fix: pick another device (device='cpu', or a GPU torch sees)")
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
        fix = "pick another backend" if not count else f"pick another device (GPU 0 to {count - 1})"
        raise BackendUnavailableError(
            f"backend 'cupy' was asked for GPU {index}, but only {count} CUDA device(s) answered; fix: {fix}")
    return module.cuda.Device(index)


def _device_of(name: str, module: Any, device: Any, from_env: bool) -> Any:
    """:func:`_native_device`, its error naming ``NN_XP_DEVICE`` where the device came from there."""
    try:
        return _native_device(name, module, device)
    except (BackendUnavailableError, ValueError) as exc:
        if not from_env:
            raise
        raise type(exc)(f"{exc}; that device came from NN_XP_DEVICE={device!r}: change or unset it") from None


def _jax_device(jax: Any, device: Any) -> Any:
    """A ``jax.Device`` from None (JAX's default), an index into ``jax.devices()``, ``"cpu"``, ``"cuda:1"``,
    ``"gpu:0"``, ``"tpu:0"`` (a platform and an index among its devices), or a device itself."""
    if device is None:
        return jax.devices()[0]
    if isinstance(device, jax.Device):
        return device
    devices = jax.devices()
    if isinstance(device, int) or (isinstance(device, str) and device.isdigit()):
        platform, index = devices[0].platform, int(device)
    elif isinstance(device, str):
        platform, _, number = device.lower().partition(":")
        if not number.isdigit() and number:
            raise ValueError(f"jax device must be 'PLATFORM' or 'PLATFORM:N' (cpu, cuda:0, tpu:1), an index "
                             f"or a jax.Device, got {device!r}")
        index = int(number or 0)
    else:
        raise ValueError(f"jax device must be a platform name ('cpu', 'cuda:0'), an index or a jax.Device, "
                         f"got {device!r}")
    try:
        devices = jax.devices(platform)
    except RuntimeError:
        devices = []
    if index >= len(devices):
        seen = ", ".join(str(d) for d in _jax_devices(jax))
        raise BackendUnavailableError(
            f"backend 'jax' was asked for device {device!r}, but jax sees {seen}; fix: pick one of those, "
            f"or install JAX for that platform ({_INSTALL_HINT['jax']})")
    return devices[index]


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
    from_env = False
    if device is None and source != "backend argument":
        # NN_XP_DEVICE goes with NN_XP_BACKEND / auto: an explicit backend uses its own default device
        device = os.environ.get("NN_XP_DEVICE") or None
        from_env = device is not None
    if name == "auto":
        name = _auto_choice()
        if name == "numpy" and device is not None and str(device) != "cpu":
            raise BackendUnavailableError(
                f"backend 'auto' found no CUDA device but device {device!r} was asked for; fix: install CuPy "
                f"for your CUDA ({_INSTALL_HINT['cupy']}), or "
                + ("unset NN_XP_DEVICE, which asked for it" if from_env else "leave device unset"))
    info = _probe(name)
    if not info["usable"]:
        also = (f"; or unset NN_XP_BACKEND, and auto picks {_auto_choice()!r} here"
                if source == "NN_XP_BACKEND" else "")
        raise BackendUnavailableError(f"backend {name!r} (from {source}) is not usable: {info['reason']}"
                                      + also)
    module = importlib.import_module(name)
    native = _device_of(name, module, device, from_env)
    # array_api_strict and jax.numpy are array-API namespaces themselves; the others are wrapped by
    # array-api-compat
    if name == "jax":
        xp = importlib.import_module("jax.numpy")
    else:
        xp = module if name == "array_api_strict" else importlib.import_module(f"array_api_compat.{name}")
    return Backend(name=name, xp=xp, device=native)


def backend_of(x: Array) -> Backend:
    """The :class:`Backend` an existing array lives on."""
    xp = array_namespace(x)
    module = "jax" if xp.__name__ == "jax.numpy" else xp.__name__.split(".")[-1]
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
    if module in ("jax", "jaxlib"):
        return np.asarray(x)  # from any of JAX's devices (DLPack reaches only the host's)
    try:
        return np.from_dlpack(x)
    except Exception:  # libraries whose DLPack export needs the host first
        return np.asarray(to_device(x, "cpu"))


# ------------------------------------------------------------ the launcher of a data-parallel job
#: seconds a collective of ``fit(comm=...)`` may wait for the other ranks before the job is aborted, unless
#: ``NN_XP_COMM_TIMEOUT`` says otherwise (long enough for a rank writing a large checkpoint meanwhile)
DEFAULT_COMM_TIMEOUT = 300.0

#: (launcher, rank, size, local rank) variables, in the order they are tried: MPICH's and Intel MPI's
#: process manager (PMI), Open MPI's, torchrun's
_LAUNCHERS = (("mpi", "PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID"),
              ("mpi", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK"),
              ("torchrun", "RANK", "WORLD_SIZE", "LOCAL_RANK"))


@dataclass(frozen=True)
class Launch:
    """How this process was started: by ``launcher`` (``"mpi"`` or ``"torchrun"``), as ``rank`` of ``size``,
    ``local_rank`` of those on its machine (the GPU to pick)."""

    launcher: str
    rank: int
    size: int
    local_rank: int


def launch() -> Launch | None:
    """The launcher that started this process, read from its environment (None: a plain ``python``).

    Examples
    --------
    >>> launch() is None or launch().size >= 1
    True
    """
    env = os.environ
    for launcher, *names in _LAUNCHERS:
        if names[0] in env and names[1] in env:
            values = []
            for name in names:
                raw = env.get(name, "0")
                if not raw.strip().isdigit():
                    raise ValueError(f"{name}={raw!r} in the environment is not a rank or size ({launcher} "
                                     "sets it): unset it, or start the job with the launcher")
                values.append(int(raw))
            return Launch(launcher, *values)
    return None


def comm_timeout() -> float:
    """Seconds a collective may wait: ``NN_XP_COMM_TIMEOUT``, else :data:`DEFAULT_COMM_TIMEOUT`."""
    raw = os.environ.get("NN_XP_COMM_TIMEOUT", "").strip()
    if not raw:
        return DEFAULT_COMM_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise ValueError(f"NN_XP_COMM_TIMEOUT={raw!r} must be a positive number of seconds")
    return value
