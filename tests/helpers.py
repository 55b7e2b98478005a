"""Helpers shared by the tests: networks on the backend under test, and a namespace-aware assert_close."""
from __future__ import annotations

import threading

import numpy as np
from array_api_compat import array_namespace
from array_api_compat import device as array_device

import nn_xp
from nn_xp.backends import to_numpy
from nn_xp.distributed import LocalCommunicator

SINE_X = np.arange(-5.0, 5.0, 0.1).reshape(-1, 1)  # the blog's 100 samples
SINE_Y = np.sin(SINE_X)


def make_net(backend, sizes, activations=None, **kwargs) -> nn_xp.Network:
    """A network on the backend under test (float64 unless asked otherwise)."""
    kwargs.setdefault("dtype", "float64")
    return nn_xp.Network(sizes, activations, backend=backend.name, device=backend.device, **kwargs)


def assert_on_backend(x, backend, dtype):
    """``x`` is an array of ``backend``'s namespace, on its device, in ``dtype``."""
    assert array_namespace(x) is backend.xp, (f"namespace {array_namespace(x).__name__} != "
                                              f"{backend.xp.__name__}")
    assert array_device(x) == backend.device, f"device {array_device(x)} != {backend.device}"
    assert x.dtype == backend.dtype(dtype), f"dtype {x.dtype} != {dtype}"


def assert_close(actual, desired, *, backend=None, rtol=1e-7, atol=0.0, dtype=None):
    """Compare values, and (with ``backend``) that ``actual`` lives in that namespace, on its device, in
    ``dtype``.

    So "both sides silently became NumPy" cannot pass.
    """
    if backend is not None:
        assert array_namespace(actual) is backend.xp, (f"namespace {array_namespace(actual).__name__} != "
                                                       f"{backend.xp.__name__}")
        assert array_device(actual) == backend.device, f"device {array_device(actual)} != {backend.device}"
        if dtype is not None:
            assert_on_backend(actual, backend, dtype)
    np.testing.assert_allclose(to_numpy(actual),
                               to_numpy(desired) if not isinstance(desired, (float, int)) else desired,
                               rtol=rtol, atol=atol)


def in_threads(size: int, work, timeout: float = 30.0) -> tuple[list, list]:
    """``work(comm)`` on ``size`` threads of one :class:`LocalCommunicator` group: (results, errors)."""
    comms = LocalCommunicator.group(size, timeout=timeout)
    results, errors = [None] * size, [None] * size

    def go(rank: int) -> None:
        try:
            results[rank] = work(comms[rank])
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            errors[rank] = exc

    threads = [threading.Thread(target=go, args=(r,)) for r in range(size)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout + 30)
    assert not any(t.is_alive() for t in threads), "a rank hung"
    return results, errors
