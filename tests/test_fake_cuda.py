"""nn_xp on torch's ``cuda:0`` without a GPU: ``FakeTensorMode`` as a CPU stand-in (issue 17, item 10).

Under torch's ``FakeTensorMode`` every tensor carries a device, a shape and a dtype but no data, and an
operation that mixes devices raises ``FakeTensorDeviceMismatchError`` as CUDA would. With
``torch.cuda.is_available`` patched, nn_xp resolves ``backend="torch", device="cuda:0"`` and runs
``evaluate``, the gradients, ``predict``, ``to()`` and ``fit`` on fake CUDA tensors, so an array created
without ``device=`` fails here, on a CPU-only torch, the way it would on a GPU (as
``array_api_strict:device1`` does for the array-API backends).

What a CPU-only torch cannot fake, and how this module deals with it:

- Python's tensor indexing (``t[a:b]``, ``t[...] = v``), ``float(t)``, ``bool(t)``, ``t.item()`` and
  ``t.copy_(s)`` enter a CUDA device guard in torch's C++ bindings *before* ``FakeTensorMode`` sees
  them, and fail with "PyTorch is not linked with support for cuda devices". So raw mini-batch slicing
  (and nn_xp's flat parameter views, and every host read) cannot run there: ``test_raw_limits``
  shows it, and fails the day torch lifts it. The ``fake_cuda`` fixture routes those calls through
  torch's dispatcher instead (basic slices as ``narrow``/``select``, the rest as ``torch.ops.aten``
  ops), where ``FakeTensorMode`` handles them like any other op; with that, mini-batch ``fit`` runs too.
- A fake tensor has no values: every read back to the host answers a fixed number (0.25, or True for a
  boolean), so losses are meaningless and only devices, shapes and dtypes are checked. A check that
  needs the answer False (class ids in range, in ``as_target``) cannot pass: targets here are one-hot.
- ``FakeTensorMode`` would run small constant computations for real, on the patched-in CUDA;
  ``avoid_device_init`` (what it does when CUDA is absent) keeps it from trying.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

torch = pytest.importorskip("torch")
fake_tensor = pytest.importorskip("torch._subclasses.fake_tensor")
fake_impls = pytest.importorskip("torch._subclasses.fake_impls")

import nn_xp  # noqa: E402
from nn_xp import activations  # noqa: E402

FakeTensor, FakeTensorMode = fake_tensor.FakeTensor, fake_tensor.FakeTensorMode
DeviceMismatch = fake_tensor.FakeTensorDeviceMismatchError
aten = torch.ops.aten

pytestmark = [
    pytest.mark.skipif(torch.cuda.is_available(), reason="a real CUDA device is here: the suite tests it"),
    pytest.mark.skipif(not hasattr(FakeTensorMode, "avoid_device_init")
                       or not hasattr(fake_impls, "op_implementations_dict"),
                       reason="this torch's FakeTensorMode has other internals than torch 2.13's"),
]


def _fixed(dtype) -> bool | float | int:
    """What a host read of a fake tensor answers: it has no data."""
    return True if dtype == torch.bool else 0.25 if dtype.is_floating_point else 0


def _basic_index(t, index):
    """``t[index]`` for ints and step-1 slices (a trailing ``...`` too) as ``narrow``/``select`` views, else
    None."""
    parts = index if isinstance(index, tuple) else (index,)
    out, dim = t, 0
    for i, part in enumerate(parts):
        if part is Ellipsis and i == len(parts) - 1:
            break
        if isinstance(part, slice) and part.step in (None, 1):
            start, stop, _ = part.indices(out.shape[dim])
            out, dim = out.narrow(dim, start, max(stop - start, 0)), dim + 1
        elif isinstance(part, int) and not isinstance(part, bool):
            out = out.select(dim, part)
        else:
            return None
    return out


def _through_the_dispatcher() -> dict:
    """Replacements for the Tensor methods whose C++ bindings need CUDA before dispatch (fakes only)."""
    original = {name: getattr(torch.Tensor, name)
                for name in ("__getitem__", "__setitem__", "__float__", "__bool__", "__int__", "item",
                             "copy_", "numpy")}

    def on_fakes(name, fake):
        def method(self, *args, **kwargs):
            return fake(self, *args, **kwargs) if isinstance(self, FakeTensor) else \
                original[name](self, *args, **kwargs)
        return method

    def getitem(t, index):
        view = _basic_index(t, index)
        return original["__getitem__"](t, index) if view is None else view

    def setitem(t, index, value):
        view = _basic_index(t, index)
        if view is None:
            return original["__setitem__"](t, index, value)
        (aten.copy_.default if isinstance(value, torch.Tensor) else aten.fill_.Scalar)(view, value)

    def host(t, *_, **__):
        return np.full(tuple(t.shape), _fixed(t.dtype), dtype=str(t.dtype).removeprefix("torch."))

    scalar = aten._local_scalar_dense.default
    return {
        "__getitem__": on_fakes("__getitem__", getitem),
        "__setitem__": on_fakes("__setitem__", setitem),
        "__float__": on_fakes("__float__", lambda t: float(scalar(t))),
        "__bool__": on_fakes("__bool__", lambda t: bool(scalar(t))),
        "__int__": on_fakes("__int__", lambda t: int(scalar(t))),
        "item": on_fakes("item", lambda t: scalar(t)),
        "copy_": on_fakes("copy_", lambda t, src, non_blocking=False: aten.copy_.default(t, src,
                                                                                            non_blocking)),
        "numpy": on_fakes("numpy", host),
    }


@pytest.fixture
def fake_cuda(monkeypatch):
    """Inside: torch says CUDA is there, and every tensor made is a FakeTensor."""
    monkeypatch.delenv("NN_XP_BACKEND", raising=False)
    monkeypatch.delenv("NN_XP_DEVICE", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(FakeTensorMode, "avoid_device_init", property(lambda self: True))
    monkeypatch.setitem(fake_impls.op_implementations_dict, aten._local_scalar_dense.default,
                        lambda mode, func, t: _fixed(t.dtype))
    for name, method in _through_the_dispatcher().items():
        monkeypatch.setattr(torch.Tensor, name, method)
    with FakeTensorMode(allow_non_fake_inputs=False) as mode:
        yield mode


CUDA0 = "cuda:0"


def on_cuda(*arrays) -> bool:
    return all(isinstance(a, FakeTensor) and str(a.device) == CUDA0 for a in arrays)


def data(m=6, n_in=2, n_out=1):
    return torch.ones((m, n_in), device=CUDA0), torch.ones((m, n_out), device=CUDA0) / n_out


def test_raw_limits(monkeypatch):
    """Why ``fake_cuda`` routes indexing and host reads: without it, a CPU-only torch refuses them."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(FakeTensorMode, "avoid_device_init", property(lambda self: True))
    with FakeTensorMode():
        t = torch.ones(8, device=CUDA0)
        for what in (lambda: t[2:5], lambda: float(t.sum())):
            with pytest.raises(RuntimeError, match="not linked with support for cuda"):
                what()
        assert str(t.narrow(0, 2, 3).device) == CUDA0  # an op that dispatches is fine


def test_the_network_lives_on_fake_cuda(fake_cuda):
    net = nn_xp.Network([2, 5, 1], backend="torch", device=CUDA0, dtype="float32")
    assert str(net.device) == CUDA0
    assert on_cuda(*net.params.values())


def test_evaluate_and_gradients(fake_cuda):
    net = nn_xp.Network([2, 5, 3, 1], ["tanh", "relu", "identity"], backend="torch", device=CUDA0)
    X, Y = data()
    values = net.evaluate(X)
    assert on_cuda(*[a for z, a in values], *[z for z, _ in values[1:]])
    dWs, dbs = net.compute_gradient(values, Y)
    assert on_cuda(*dWs, *dbs)
    assert [tuple(d.shape) for d in dWs] == [(5, 2), (3, 5), (1, 3)]
    loss, grads = net.value_and_gradient(values, Y)
    assert on_cuda(loss, *grads)


def test_predict(fake_cuda):
    net = nn_xp.Network([2, 4, 3], ["relu", "softmax"], loss="cross_entropy", backend="torch", device=CUDA0)
    X, _ = data()
    out = net.predict(X)
    assert on_cuda(out) and tuple(out.shape) == (6, 3)
    assert on_cuda(net.predict_classes(X))
    host = net.predict(np.ones((6, 2)))  # host in, host out: the one copy back is the last step
    assert isinstance(host, np.ndarray) and host.shape == (6, 3)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("loss", ["mse", "cross_entropy"])
def test_full_batch_fit(fake_cuda, optimizer, loss):
    n_out = 3 if loss == "cross_entropy" else 1
    net = nn_xp.Network([2, 4, n_out], "tanh", loss=loss, backend="torch", device=CUDA0)
    X, Y = data(n_out=n_out)
    history = net.fit(X, Y, epochs=3, optimizer=optimizer, validation_data=(X, Y))
    assert len(history) == 3 and set(history.history) >= {"loss", "val_loss"}
    assert on_cuda(*net.params.values())
    history = net.fit(np.ones((6, 2)), np.ones((6, n_out)) / n_out, epochs=5)  # host data, moved once
    assert len(history) == 5
    # a callback's device snapshots and restores: every loss reads 0.25, so it stops and restores
    stop = nn_xp.EarlyStopping("loss", patience=1, restore_best_weights=True)
    assert len(net.fit(X, Y, epochs=10, callbacks=[stop])) < 10
    assert on_cuda(*net.params.values())
    assert isinstance(net.loss(X, Y), float) and isinstance(net.score(X, Y), float)


def test_mini_batch_fit_through_narrow(fake_cuda):
    """Raw mini-batch slicing cannot run on fake CUDA (``test_raw_limits``); through ``narrow`` it does."""
    net = nn_xp.Network([2, 4, 1], backend="torch", device=CUDA0)
    X, Y = data(m=10)
    history = net.fit(X, Y, epochs=2, batch_size=4, optimizer="adam")
    assert len(history) == 2 and on_cuda(*net.params.values())


def test_to_moves_parameters_and_optimizer_state(fake_cuda):
    with fake_tensor.unset_fake_temporarily():  # a real NumPy network, trained with Adam state
        net = nn_xp.Network([2, 4, 1], backend="numpy", dtype="float32")
        net.fit(np.ones((6, 2)), np.ones((6, 1)), epochs=2, optimizer="adam")
    assert net.to("torch", CUDA0) is net
    assert str(net.device) == CUDA0 and on_cuda(*net.params.values())
    X, Y = data()
    net.fit(X, Y, epochs=4)  # Adam's moved state meets the parameters in every step: same device, or raise
    assert on_cuda(*net.params.values())
    back = net.to("torch", "cpu")
    assert all(str(p.device) == "cpu" for p in back.params.values())


def _without_device(forward_or_backward):
    """A relu whose forward or backward creates an array the way a bug would: ``xp.zeros(shape)``,
    no ``device=``, so on torch it lands on the CPU."""
    relu = activations.ACTIVATIONS["relu"]
    if forward_or_backward == "forward":
        return dataclasses.replace(
            relu, forward=lambda z, xp, out=None: xp.maximum(z, xp.zeros(z.shape, dtype=z.dtype)))
    return dataclasses.replace(
        relu, backward=lambda dA, z, a, xp, consume=False: xp.where(
            a > 0, dA, xp.zeros(dA.shape, dtype=dA.dtype)))


@pytest.mark.parametrize("where", ["forward", "backward"])
def test_an_array_created_without_device_is_caught(monkeypatch, fake_cuda, where):
    monkeypatch.setitem(activations.ACTIVATIONS, "relu", _without_device(where))
    net = nn_xp.Network([2, 4, 1], ["relu", "identity"], backend="torch", device=CUDA0)
    X, Y = data()
    with pytest.raises(DeviceMismatch, match="cuda:0 and cpu"):
        net.compute_gradient(net.evaluate(X), Y)
    with pytest.raises(DeviceMismatch):
        net.fit(X, Y, epochs=1)


@pytest.mark.parametrize("where", ["forward", "backward"])
def test_the_planted_bug_passes_on_one_device(monkeypatch, where):
    """Without a second device the same bug is invisible: only the fake CUDA device tells."""
    monkeypatch.setitem(activations.ACTIVATIONS, "relu", _without_device(where))
    net = nn_xp.Network([2, 4, 1], ["relu", "identity"], backend="torch", device="cpu", dtype="float64")
    X, Y = torch.ones((6, 2), dtype=torch.float64), torch.ones((6, 1), dtype=torch.float64)
    dWs, _ = net.compute_gradient(net.evaluate(X), Y)
    assert dWs[0].shape == (4, 2)
