"""CuPy's paths that a CPU can check (issue 17, items 5 and 6): which matmul the kernels take, the default
GPU, and the device context around a public optimizer step. Fakes stand in for CuPy where it is missing;
with CuPy installed (it imports without a GPU) the real module is checked too."""
from __future__ import annotations

import sys
import types

import numpy as np
import pytest

import nn_xp
from nn_xp import _kernels as K
from nn_xp import backends, optimizers


def _fake_cupy(version: str) -> types.ModuleType:
    cupy = types.ModuleType("cupy")
    cupy.__version__ = version
    cupy.matmul = lambda a, b, out=None: ("matmul", a, b)
    cupy.dot = lambda a, b, out=None: ("dot", a, b)
    return cupy


@pytest.mark.parametrize("version, expected",
                         [("13.6.0", "dot"), ("14.2.0", "matmul"), ("15.0.0a1", "matmul")])
def test_cupy_before_14_multiplies_with_dot_and_later_with_matmul(monkeypatch, version, expected):
    xp = types.ModuleType("array_api_compat.cupy")  # what array-api-compat's CuPy namespace is called
    monkeypatch.setitem(sys.modules, "cupy", _fake_cupy(version))
    monkeypatch.setattr(K, "_NATIVE", {})
    assert K.matmul_function(xp) is getattr(sys.modules["cupy"], expected)


def test_the_installed_cupy_resolves_to_its_fast_entry_point():
    cupy = pytest.importorskip("cupy")  # imports on a CPU machine too; no kernel runs here
    from array_api_compat import cupy as xp

    fast = cupy.matmul if int(cupy.__version__.split(".")[0]) >= 14 else cupy.dot
    assert K.matmul_function(xp) is fast


def test_numpy_keeps_its_own_matmul():
    assert K.matmul_function(nn_xp.resolve_backend("numpy").xp) is np.matmul


class _FakeRuntime:
    def __init__(self, count: int, current: int) -> None:
        self.count, self.current = count, current

    def getDeviceCount(self) -> int:  # noqa: N802 (CUDA's name)
        return self.count

    def getDevice(self) -> int:  # noqa: N802
        return self.current


def test_cupy_without_a_device_takes_the_current_gpu_as_torch_does():
    cupy = types.ModuleType("cupy")
    cupy.cuda = types.SimpleNamespace(runtime=_FakeRuntime(3, 2), Device=lambda i=None: ("Device", i))
    assert backends._native_device("cupy", cupy, None) == ("Device", 2)
    assert backends._native_device("cupy", cupy, "cuda:1") == ("Device", 1)
    with pytest.raises(nn_xp.BackendUnavailableError, match="asked for GPU 5, but only 3"):
        backends._native_device("cupy", cupy, 5)


@pytest.mark.parametrize("make", [lambda: nn_xp.Adam(0.01), lambda: nn_xp.SGD(0.1, momentum=0.9)])
def test_a_public_step_allocates_and_updates_inside_the_parameters_device_context(monkeypatch, make):
    depth = []

    class Context:
        def __enter__(self):
            depth.append(1)

        def __exit__(self, *exc):
            depth.pop()

    seen = []
    monkeypatch.setattr(optimizers, "device_context", lambda x: Context())
    opt = make()
    real_update = opt.update
    monkeypatch.setattr(opt, "update", lambda *a: seen.append(len(depth)) or real_update(*a))
    xp = nn_xp.resolve_backend("numpy").xp
    params, grads = [np.ones((2, 3)), np.ones(2)], [np.full((2, 3), 0.5), np.full(2, 0.5)]
    opt.step(params, grads, xp=xp)
    assert seen == [1, 1]  # every rule call ran inside the context
    snapshot_depths = []
    real_copy = xp.asarray
    monkeypatch.setattr(xp, "asarray",
                        lambda *a, **k: snapshot_depths.append(len(depth)) or real_copy(*a, **k))
    opt.snapshot()
    assert snapshot_depths and set(snapshot_depths) == {1}  # the undo point's copies too


def test_device_context_is_none_off_cupy(backend):
    x = backend.asarray(np.zeros(3))
    assert backends.device_context(x) is None
