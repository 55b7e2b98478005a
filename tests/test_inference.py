"""Inference: predict, predict_classes, loss and score in chunks, one layer's values at a time (issue 20)."""
from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from helpers import assert_close, make_net

import nn_xp
from nn_xp import _kernels as K
from nn_xp.activations import ACTIVATIONS, Activation
from nn_xp.backends import to_numpy

HEADS = [  # (activations, loss, n_out)
    (["sigmoid", "identity"], "mse", 3),
    (["tanh", "relu", "identity"], "mse", 2),
    (["leaky_relu", "sigmoid"], "binary_cross_entropy", 2),
    (["relu", "leaky_relu", "softmax"], "cross_entropy", 4),
]


def _data(n_in, n_out, m=53, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((m, n_in))
    Y = rng.random((m, n_out))
    return X, Y


@pytest.mark.parametrize("engine", ["auto", "portable"])
@pytest.mark.parametrize("head", HEADS, ids=lambda h: h[0][-1] + "-" + h[1])
@pytest.mark.parametrize("batch_size", [None, 1, 7, 53, 1000])
def test_chunked_inference_equals_the_forward_pass(backend, engine, head, batch_size):
    acts, loss, n_out = head
    net = make_net(backend, [3] + [9] * (len(acts) - 1) + [n_out], acts, loss=loss, engine=engine)
    X, Y = _data(3, n_out)
    if loss == "cross_entropy":
        Y = np.eye(n_out)[np.arange(53) % n_out]
    if loss == "binary_cross_entropy":
        Y = (Y > 0.5).astype(float)
    Xd = net.backend.asarray(X, dtype=net.dtype)
    z, a = net.evaluate(Xd)[-1]
    assert_close(net.predict(Xd, batch_size=batch_size), a, backend=net.backend, rtol=1e-12)
    assert_close(net.predict(X, batch_size=batch_size), to_numpy(a), rtol=1e-12)
    whole = float(net.loss_fn.value(z, a, net.as_target(Y), net.xp))
    assert net.loss(X, Y, batch_size=batch_size) == pytest.approx(whole, rel=1e-12)
    assert net.score(X, Y, batch_size=batch_size) == pytest.approx(net.score(X, Y), rel=1e-12, abs=1e-12)
    np.testing.assert_array_equal(net.predict_classes(X, batch_size=batch_size), net.predict_classes(X))


def test_output_keeps_only_the_output_layers_values_and_matches_evaluate(backend):
    net = make_net(backend, [2, 5, 4, 3], ["tanh", "sigmoid", "identity"])
    X = net.backend.asarray(np.random.default_rng(1).standard_normal((11, 2)), dtype=net.dtype)
    z, a = net.output(X)
    values = net.evaluate(X)
    assert_close(z, values[-1][0], backend=net.backend, rtol=1e-13)
    assert_close(a, values[-1][1], backend=net.backend, rtol=1e-13)
    with pytest.raises(TypeError, match="X must be an array of the model's backend"):
        net.output(np.zeros((3, 2)).tolist())


@pytest.mark.parametrize("bad, error", [(0, ValueError), (-3, ValueError), (2.5, TypeError),
                                        (True, TypeError), ("8", TypeError)])
def test_a_bad_batch_size_is_named(bad, error):
    net = nn_xp.Network([2, 3, 1], backend="numpy")
    X = np.zeros((4, 2))
    for call in (lambda: net.predict(X, batch_size=bad), lambda: net.predict_classes(X, batch_size=bad),
                 lambda: net.loss(X, X[:, :1], batch_size=bad),
                 lambda: net.score(X, X[:, :1], batch_size=bad)):
        with pytest.raises(error, match="batch_size"):
            call()


def test_every_builtin_activation_may_run_in_place_on_its_input(backend):
    xp = backend.xp
    z = np.linspace(-800.0, 800.0, 41).reshape(-1, 1) * np.ones((1, 3))
    for name, act in ACTIVATIONS.items():
        if not K.supports_out(xp):
            break  # in place is the buffered engine's, on libraries with out=
        for dtype in ("float32", "float64"):
            src = backend.asarray(z, dtype=backend.dtype(dtype))
            ref = to_numpy(act.forward(src, xp, xp.empty_like(src)))  # into another buffer
            np.testing.assert_array_equal(to_numpy(src), z.astype(dtype))  # which never writes z
            got = act.forward(src, xp, src)  # into z itself
            np.testing.assert_array_equal(to_numpy(got), ref, err_msg=f"{name} {dtype}")


def test_a_users_activation_without_out_still_predicts_in_chunks(backend):
    def softsign(z, xp, out=None):  # takes out= but ignores it, as the contract allows for new arrays
        return z / (1.0 + xp.abs(z))

    def backward(dA, z, a, xp, consume=False):
        return dA * (1.0 - xp.abs(a)) ** 2

    act = Activation("softsign", softsign, None, backward)
    net = make_net(backend, [2, 6, 1], [act, "identity"])
    X = np.random.default_rng(2).standard_normal((40, 2))
    ref = to_numpy(net.evaluate(net.backend.asarray(X, dtype=net.dtype))[-1][1])
    np.testing.assert_allclose(net.predict(X, batch_size=9), ref, rtol=1e-13)


def test_input_already_in_the_models_namespace_dtype_and_device_is_not_copied(backend):
    net = make_net(backend, [2, 3, 1])
    X = net.backend.asarray(np.ones((5, 2)), dtype=net.dtype)
    assert net.as_input(X)[0] is X
    with pytest.raises(ValueError, match="NaN or infinity"):
        net.predict(net.backend.asarray(np.array([[1.0, np.nan]]), dtype=net.dtype))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_the_finiteness_check_is_exact_on_huge_finite_values_and_any_layout(dtype):
    xp = nn_xp.resolve_backend("numpy").xp
    big = np.finfo(dtype).max / 2
    x = np.full((6, 4), big, dtype=dtype)  # x . x overflows: the exact check must clear it
    assert K.all_finite(x, xp)
    assert K.all_finite(x[:, ::2], xp)  # not contiguous
    assert K.all_finite(np.arange(6).reshape(3, 2), xp)
    for bad in (np.nan, np.inf, -np.inf):
        y = x.copy()
        y[3, 1] = bad
        assert not K.all_finite(y, xp)
        assert not K.all_finite(y[:, 1:], xp)
        z = np.ones((3, 3), dtype=dtype)
        z[2, 2] = bad
        assert not K.all_finite(z, xp)


def _peak(fn) -> int:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("engine", ["buffered", "portable"])
def test_predict_holds_one_layers_values_at_a_time_not_every_layers(engine):
    """NumPy reports its allocations to tracemalloc: the peak of a predict on 20,000 rows of a 32-256-256-4
    network must stay near the output, far below what evaluate holds (every layer's Z and A)."""
    net = nn_xp.Network([32, 256, 256, 4], ["sigmoid", "sigmoid", "identity"], backend="numpy",
                        dtype="float32", engine=engine)
    X = np.random.default_rng(0).standard_normal((40000, 32)).astype(np.float32)
    net.predict(X)  # first-call costs (the kept buffers, a chunk's worth) out of the measurement
    full = _peak(lambda: net.evaluate(X[:20000]))
    assert full > 4 * 20000 * 256 * 4  # the forward pass keeps Z and A of both hidden layers
    chunk = K_CHUNK * 4  # one chunk of the widest layer, in float32
    # beyond the output: nothing on the buffered engine (its two buffers are kept), a few chunks' temporaries
    # on the portable one (Z, z * 0.5, tanh, the layer below's A; and the chunks' outputs, concatenated)
    extra = (1 << 16) if engine == "buffered" else 5 * chunk
    for m in (20000, 40000):  # twice the rows: twice the output, nothing more
        output = m * 4 * 4
        peak = _peak(lambda rows=X[:m]: net.predict(rows))
        assert peak <= 2 * output + extra, (m, peak, 2 * output + extra, full)


K_CHUNK = nn_xp.engine.INFERENCE_CHUNK_ELEMENTS


def test_the_buffered_engine_keeps_its_inference_buffers_and_frees_them_on_release():
    net = nn_xp.Network([16, 512, 1], backend="numpy", dtype="float64")
    engine = net.engine
    X = np.zeros((3000, 16))
    net.predict(X)
    rows = nn_xp.engine.chunk_rows(net.layers, 3000, None)
    kept = engine.inference_buffers(net.layers, rows)
    assert kept is not None and engine.inference_buffers(net.layers, rows) is kept
    assert engine.inference_buffers(net.layers, 10) is None  # small: allocating costs less
    net.release_buffers()
    assert engine.inference_buffers(net.layers, rows) is not kept


def test_torch_takes_its_own_fused_operations_and_they_agree_with_the_portable_forms(monkeypatch):
    torch = pytest.importorskip("torch")
    xp = nn_xp.resolve_backend("torch", "cpu").xp
    rng = np.random.default_rng(3)
    a, W, b = (torch.from_numpy(rng.standard_normal(s)) for s in ((7, 4), (5, 4), (5,)))
    z = torch.from_numpy(np.linspace(-50, 50, 35).reshape(7, 5))
    torch.testing.assert_close(K.linear(a, W, b, xp), a @ W.T + b, rtol=1e-14, atol=1e-14)
    torch.testing.assert_close(K.sigmoid(z, xp), torch.tanh(z * 0.5) * 0.5 + 0.5, rtol=1e-14, atol=1e-15)
    calls = []
    for name in ("addmm", "sigmoid"):
        real = getattr(torch, name)
        monkeypatch.setattr(torch, name, lambda *args, _real=real, _name=name, **kw: calls.append(_name)
                            or _real(*args, **kw))
    net = nn_xp.Network([4, 5, 1], backend="torch", dtype="float64")
    net.evaluate(torch.from_numpy(rng.standard_normal((7, 4))))  # the model's own math
    assert calls == ["addmm", "sigmoid", "addmm"]
    calls.clear()
    net.predict(rng.standard_normal((7, 4)))  # the portable engine's inference: the same calls
    assert calls == ["addmm", "sigmoid", "addmm"]


def test_torch_parameters_are_views_of_one_buffer_an_undo_point_is_one_copy_and_rolls_back(monkeypatch):
    torch = pytest.importorskip("torch")
    net = nn_xp.Network([2, 6, 3, 1], backend="torch", dtype="float64", engine="portable")
    flat = net.parameters.flat
    assert flat is not None and all(p.untyped_storage().data_ptr() == flat.untyped_storage().data_ptr()
                                    for p in net.parameters)
    copies = []
    real = torch.Tensor.copy_
    monkeypatch.setattr(torch.Tensor, "copy_",
                        lambda self, src, *a: copies.append(self.shape) or real(self, src))
    snap = net.snapshot()
    before = [p.clone() for p in net.parameters]
    X, Y = np.random.default_rng(0).standard_normal((20, 2)), np.zeros((20, 1))
    net.fit(X, Y, epochs=3)
    copies.clear()
    net.snapshot(snap)  # into a kept snapshot: one copy of the flat buffer
    assert copies == [flat.shape]
    net.restore(snap)
    net.fit(X, Y, epochs=1)
    net.restore(snap)
    for p, q in zip(net.parameters, snap.arrays):
        torch.testing.assert_close(p, q, rtol=0, atol=0)
    assert any(not torch.equal(p, q) for p, q in zip(net.parameters, before))  # training did move them


def test_descend_is_one_fused_step_on_torch_and_the_same_numbers_elsewhere(backend):
    rng = np.random.default_rng(4)
    p0, g0 = rng.standard_normal(7), rng.standard_normal(7)
    f64 = backend.dtype("float64")
    p, g = backend.asarray(p0.copy(), dtype=f64), backend.asarray(g0.copy(), dtype=f64)
    out = K.descend(p, g, 0.25, backend.xp)
    np.testing.assert_allclose(to_numpy(out), p0 - 0.25 * g0, rtol=1e-15)
    ones = backend.asarray(np.ones((3, 2)), dtype=f64)
    np.testing.assert_allclose(to_numpy(K.column_sum(ones, backend.xp)), [3.0, 3.0])
