"""The blog's network on every backend: gradients, the sine reproduction, parity across backends."""
from __future__ import annotations

import numpy as np
import pytest
from helpers import SINE_X, SINE_Y, assert_close, make_net

import nn_xp
from nn_xp.activations import ACTIVATIONS

HIDDEN = ["identity", "sigmoid", "tanh", "relu", "leaky_relu"]
# (output activation, loss, kind of targets)
HEADS = [("identity", "mse", "real"), ("sigmoid", "mse", "unit"), ("tanh", "mse", "unit"),
         ("sigmoid", "binary_cross_entropy", "binary"), ("softmax", "cross_entropy", "onehot")]


def blog_weights():
    """The blog program's own start: numpy.random.seed(0), W = 0.2 randn(out, in), then
    b = 0.2 randn(out, 1)."""
    rs = np.random.RandomState(0)
    weights = []
    for n_in, n_out in [(1, 20), (20, 1)]:
        W = 0.2 * rs.randn(n_out, n_in)
        b = 0.2 * rs.randn(n_out, 1)
        weights.append((W, b[:, 0]))
    return weights


def _targets(kind, m, k, rng):
    if kind == "real":
        return rng.standard_normal((m, k))
    if kind == "unit":
        return rng.uniform(0.05, 0.95, (m, k))
    if kind == "binary":
        return (rng.uniform(size=(m, k)) > 0.5).astype(float)
    return np.eye(k)[rng.integers(0, k, m)]


def numerical_gradient(net, X, Y, eps=1e-6):
    """Central differences of net.loss over every parameter, on the host."""
    weights = net.get_weights()
    grads = []
    for W, b in weights:
        for arr in (W, b):
            g = np.zeros_like(arr)
            for idx in np.ndindex(arr.shape):
                old = arr[idx]
                arr[idx] = old + eps
                net.set_weights(weights)
                plus = net.loss(X, Y)
                arr[idx] = old - eps
                net.set_weights(weights)
                minus = net.loss(X, Y)
                arr[idx] = old
                g[idx] = (plus - minus) / (2 * eps)
            grads.append(g)
    net.set_weights(weights)
    return grads


@pytest.mark.parametrize("hidden", HIDDEN)
@pytest.mark.parametrize("head", HEADS, ids=[f"{a}-{loss}" for a, loss, _ in HEADS])
def test_gradient_matches_finite_differences(backend, hidden, head):
    out_act, loss, kind = head
    rng = np.random.default_rng(1)
    X = rng.standard_normal((6, 3))
    Y = _targets(kind, 6, 3, rng)
    net = make_net(backend, [3, 4, 3], [hidden, out_act], loss=loss, seed=2)
    values = net.evaluate(backend.asarray(X, dtype=net.dtype))
    dWs, dbs = net.compute_gradient(values, backend.asarray(Y, dtype=net.dtype))
    expected = numerical_gradient(net, X, Y)
    for got, want in zip([g for pair in zip(dWs, dbs) for g in pair], expected):
        assert_close(got, want, backend=backend, dtype="float64", rtol=1e-5, atol=1e-8)


def test_gradient_shapes_and_names(backend):
    net = make_net(backend, [3, 5, 4, 2], ["tanh", "relu", "identity"])
    X = backend.asarray(np.ones((7, 3)), dtype=net.dtype)
    values = net.evaluate(X)
    assert len(values) == 4 and values[0][0] is None and values[0][1] is X
    assert [tuple(a.shape) for _, a in values] == [(7, 3), (7, 5), (7, 4), (7, 2)]
    dWs, dbs = net.compute_gradient(values, backend.asarray(np.zeros((7, 2)), dtype=net.dtype))
    assert [tuple(d.shape) for d in dWs] == [(5, 3), (4, 5), (2, 4)]
    assert [tuple(d.shape) for d in dbs] == [(5,), (4,), (2,)]
    assert net.param_names == ["W0", "b0", "W1", "b1", "W2", "b2"]


@pytest.mark.parametrize("name", HIDDEN + ["softmax"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_activation_keeps_dtype_and_device(backend, name, dtype):
    act = ACTIVATIONS[name]
    xp, npx = backend.xp, nn_xp.resolve_backend("numpy").xp
    host = np.linspace(-3, 3, 12).reshape(3, 4).astype(dtype)
    z = backend.asarray(host)
    a = act.forward(z, xp)
    rtol = 1e-5 if dtype == "float32" else 1e-12  # libraries differ by an ulp in float32 tanh
    assert_close(a, act.forward(host, npx), backend=backend, dtype=dtype, rtol=rtol)
    if act.derivative is not None:
        d = act.derivative(z, a, xp)
        assert_close(d, act.derivative(host, act.forward(host, npx), npx), backend=backend, dtype=dtype,
                     rtol=rtol, atol=1e-6 if dtype == "float32" else 0.0)  # 1 - a*a loses digits near |a| = 1
        dz = act.backward(xp.ones_like(z), z, a, xp)  # torch: its own one-pass kernels (an ulp or two)
        assert_close(dz, d, backend=backend, dtype=dtype, rtol=1e-7 if dtype == "float64" else 1e-5,
                     atol=1e-6 if dtype == "float32" else 0.0)


@pytest.mark.parametrize("name", ["sigmoid", "tanh", "relu", "leaky_relu"])
def test_derivative_matches_finite_differences(name):
    act = ACTIVATIONS[name]
    xp = nn_xp.resolve_backend("numpy").xp
    z = np.linspace(-4, 4, 41) + 0.013  # away from relu's kink
    eps = 1e-6
    numeric = (act.forward(z + eps, xp) - act.forward(z - eps, xp)) / (2 * eps)
    np.testing.assert_allclose(act.derivative(z, act.forward(z, xp), xp), numeric, rtol=1e-6, atol=1e-9)


def test_relu_derivative_at_zero_is_defined(backend):
    z = backend.asarray(np.zeros((1, 3)))
    act = ACTIVATIONS["relu"]
    assert_close(act.derivative(z, act.forward(z, backend.xp), backend.xp), np.zeros((1, 3)), backend=backend)


def test_blog_sine_2000_epochs(backend):
    """The blog's program with its own initial weights: loss 0.0130985534 after 2000 epochs (float64)."""
    net = make_net(backend, [1, 20, 1], ["sigmoid", "identity"])
    net.set_weights(blog_weights())
    history = net.fit(SINE_X, SINE_Y, epochs=2000, learning_rate=0.1)
    assert net.loss(SINE_X, SINE_Y) == pytest.approx(0.0130985534, rel=1e-8)
    # history[k] is the loss at the start of epoch k: the blog's hook value at step k
    assert len(history.history["loss"]) == 2000
    assert history["loss"][-1] > net.loss(SINE_X, SINE_Y)  # still descending at epoch 2000


def test_blog_sine_initial_loss_matches_plain_numpy(backend):
    net = make_net(backend, [1, 20, 1], ["sigmoid", "identity"])
    net.set_weights(blog_weights())
    (W1, b1), (W2, b2) = blog_weights()
    A = 1 / (1 + np.exp(-(SINE_X @ W1.T + b1)))
    out = A @ W2.T + b2
    expected = 0.5 * np.sum((out - SINE_Y) ** 2) / len(SINE_X)
    assert net.loss(SINE_X, SINE_Y) == pytest.approx(expected, rel=1e-12)
    history = net.fit(SINE_X, SINE_Y, epochs=1)
    assert history["loss"][0] == pytest.approx(expected, rel=1e-12)


@pytest.mark.slow
def test_blog_sine_20000_epochs(backend):
    net = make_net(backend, [1, 20, 1], ["sigmoid", "identity"])
    net.set_weights(blog_weights())
    net.fit(SINE_X, SINE_Y, epochs=20000, learning_rate=0.1)
    assert net.loss(SINE_X, SINE_Y) == pytest.approx(0.0048015388, rel=1e-8)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_same_seed_same_start_and_curve_on_every_backend(backend, dtype):
    ref = nn_xp.Network([1, 16, 16, 1], ["tanh", "relu", "identity"], backend="numpy", dtype=dtype, seed=7)
    net = make_net(backend, [1, 16, 16, 1], ["tanh", "relu", "identity"], dtype=dtype, seed=7)
    for (W, b), (Wr, br) in zip(net.get_weights(), ref.get_weights()):
        np.testing.assert_array_equal(W, Wr)
        np.testing.assert_array_equal(b, br)
    rtol = 1e-4 if dtype == "float32" else 1e-10
    curve = net.fit(SINE_X, SINE_Y, epochs=100, learning_rate=0.05)["loss"]
    ref_curve = ref.fit(SINE_X, SINE_Y, epochs=100, learning_rate=0.05)["loss"]
    np.testing.assert_allclose(curve, ref_curve, rtol=rtol)
    for (W, _), (Wr, _) in zip(net.get_weights(), ref.get_weights()):
        np.testing.assert_allclose(W, Wr, rtol=rtol, atol=rtol * 1e-2)


def test_parameters_live_on_the_backend(backend):
    net = make_net(backend, [2, 3, 1], dtype="float32")
    host = net.get_weights()
    for (W, b), (Wh, bh) in zip(zip(*[iter(net.params.values())] * 2), host):
        assert_close(W, Wh, backend=backend, dtype="float32")
        assert_close(b, bh, backend=backend, dtype="float32")
    out = net.predict(backend.asarray(np.ones((4, 2)), dtype=net.dtype))
    assert_close(out, net.predict(np.ones((4, 2))), backend=backend, dtype="float32")


def test_predict_returns_the_kind_it_was_given(backend):
    net = make_net(backend, [2, 3, 1])
    host = net.predict(np.ones((4, 2)))
    assert isinstance(host, np.ndarray) and host.shape == (4, 1)
    device = net.predict(backend.asarray(np.ones((4, 2)), dtype=net.dtype))
    assert_close(device, host, backend=backend)


def test_initialisation_is_seeded_and_scaled():
    a = nn_xp.Network([50, 100, 10], "relu", backend="numpy", seed=3).get_weights()
    b = nn_xp.Network([50, 100, 10], "relu", backend="numpy", seed=3).get_weights()
    c = nn_xp.Network([50, 100, 10], "relu", backend="numpy", seed=4).get_weights()
    np.testing.assert_array_equal(a[0][0], b[0][0])
    assert not np.array_equal(a[0][0], c[0][0])
    assert abs(a[0][0].std() - np.sqrt(2 / 50)) < 0.02  # He for relu layers
    limit = np.sqrt(6 / (100 + 10))  # Glorot for the identity output
    assert np.abs(a[1][0]).max() <= limit and np.all(a[0][1] == 0)


def test_get_weights_are_copies_and_set_weights_copies(backend):
    net = make_net(backend, [1, 4, 1])
    weights = net.get_weights()
    kept = [(W.copy(), b.copy()) for W, b in weights]
    net.set_weights(weights)
    net.fit(SINE_X, SINE_Y, epochs=3)
    for (W, b), (Wk, bk) in zip(weights, kept):  # training never writes into the caller's arrays
        np.testing.assert_array_equal(W, Wk)
        np.testing.assert_array_equal(b, bk)
    assert not np.array_equal(net.get_weights()[0][0], kept[0][0])


def test_fit_accepts_float32_model_and_float64_data(backend):
    net = make_net(backend, [1, 8, 1], dtype="float32")
    history = net.fit(SINE_X, SINE_Y, epochs=5)
    assert all(isinstance(v, float) for v in history["loss"])
    assert_close(net.params["W0"], net.params["W0"], backend=backend, dtype="float32")


def test_loss_is_a_python_float(backend):
    net = make_net(backend, [1, 4, 1])
    assert type(net.loss(SINE_X, SINE_Y)) is float


def test_per_epoch_callback_sees_every_epoch(backend):
    seen = []
    net = make_net(backend, [1, 4, 1])
    net.fit(SINE_X, SINE_Y, epochs=7, callbacks=lambda epoch, logs: seen.append((epoch, logs["loss"])))
    assert [e for e, _ in seen] == list(range(7))
    assert all(isinstance(v, float) for _, v in seen)


def test_evaluate_rejects_foreign_arrays(backend):
    net = make_net(backend, [2, 3, 1])
    if backend.name != "numpy":
        with pytest.raises(TypeError, match="move the data to the model's backend"):
            net.evaluate(np.ones((4, 2)))
    with pytest.raises(TypeError, match="dtype"):
        net.evaluate(backend.asarray(np.ones((4, 2)), dtype=backend.xp.float32))
    with pytest.raises(ValueError, match="3 columns, the network expects 2"):
        net.evaluate(backend.asarray(np.ones((4, 3)), dtype=net.dtype))
    with pytest.raises(TypeError, match="must be an array"):
        net.evaluate([[1.0, 2.0]])


def test_evaluate_rejects_another_device():
    strict = pytest.importorskip("array_api_strict")
    net = nn_xp.Network([2, 3, 1], backend="array_api_strict", device="device1", dtype="float64")
    x = strict.asarray(np.ones((4, 2)))  # default device
    with pytest.raises(ValueError, match="on device .*CPU_DEVICE.* but the model is on .*device1"):
        net.evaluate(x)
    # predict moves it explicitly
    assert net.predict(x).device == net.device


def test_compute_gradient_checks_its_inputs(backend):
    net = make_net(backend, [2, 3, 1])
    values = net.evaluate(backend.asarray(np.ones((4, 2)), dtype=net.dtype))
    with pytest.raises(ValueError, match="different numbers of samples: 4 and 5"):
        net.compute_gradient(values, backend.asarray(np.ones((5, 1)), dtype=net.dtype))
    with pytest.raises(ValueError, match="must hold 3"):
        net.compute_gradient(values[:2], backend.asarray(np.ones((4, 1)), dtype=net.dtype))


def test_repr_and_properties():
    net = nn_xp.Network([1, 20, 1], ["sigmoid", "identity"], backend="numpy")
    assert net.layer_sizes == [1, 20, 1] and net.activations == ["sigmoid", "identity"]
    assert "1-20-1" in repr(net) and "numpy" in repr(net)


@pytest.mark.parametrize("hidden", HIDDEN)
@pytest.mark.parametrize("batch_size", [None, 7])
@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
@pytest.mark.parametrize("workspace", [True, False])
@pytest.mark.parametrize("n_in", [2, 9])
def test_buffered_engine_equals_the_portable_engine(hidden, batch_size, optimizer, workspace, n_in):
    """The buffered engine on NumPy writes into reused buffers (out=): per-layer values (large layers), the
    gradients and the parameters as views of one flat buffer each, plain SGD as one update, and with few
    inputs the input layer's bias inside the products ([X, 1] @ [W0 | b0].T). The portable engine runs the
    model's own math and allocates. Same numbers."""
    from nn_xp.engine.buffered import AUGMENT_MAX_INPUTS

    X = np.linspace(-2, 2, 20 * n_in).reshape(20, n_in)
    Y = np.sin(X[:, :1]) + X[:, 1:2] ** 2
    kwargs = dict(epochs=6, batch_size=batch_size, optimizer=optimizer, learning_rate=0.01)
    fast = nn_xp.Network([n_in, 5, 4, 1], [hidden, "sigmoid", "identity"], backend="numpy", dtype="float64",
                         engine="buffered")
    if workspace:
        fast.engine.workspace_min_elements = 0  # buffers even for this small network
    history = fast.fit(X, Y, **kwargs)
    assert (fast.engine.workspace_rows is not None) == workspace
    assert all(np.shares_memory(p, fast.parameters.flat) for p in fast.parameters)
    assert (fast.parameters.block is not None) == (n_in <= AUGMENT_MAX_INPUTS)
    portable = nn_xp.Network([n_in, 5, 4, 1], [hidden, "sigmoid", "identity"], backend="numpy",
                             dtype="float64", engine="portable")
    portable_history = portable.fit(X, Y, **kwargs)
    assert portable.engine.name == "portable" and portable.parameters.flat is None
    np.testing.assert_allclose(history["loss"], portable_history["loss"], rtol=1e-13)
    for (W, b), (Wp, bp) in zip(fast.get_weights(), portable.get_weights()):
        np.testing.assert_allclose(W, Wp, rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(b, bp, rtol=1e-12, atol=1e-15)


def test_evaluate_results_survive_later_training():
    """Public evaluate/compute_gradient never hand out fit's reused buffers, nor write into the caller's
    values."""
    net = nn_xp.Network([1, 6, 1], backend="numpy", dtype="float64")
    values = net.evaluate(SINE_X)
    kept = [(None if z is None else z.copy(), a.copy()) for z, a in values]
    dWs, dbs = net.compute_gradient(values, SINE_Y)
    dW0 = dWs[0].copy()
    net.fit(SINE_X, SINE_Y, epochs=3)
    for (z, a), (zk, ak) in zip(values, kept):
        np.testing.assert_array_equal(a, ak)
        if z is not None:
            np.testing.assert_array_equal(z, zk)
    np.testing.assert_array_equal(dWs[0], dW0)


def test_a_custom_activation_trains_without_the_workspace():
    """A user's Activation (old four-argument backward reading z) is never given fit's buffers."""
    softsign = nn_xp.Activation(
        "softsign", lambda z, xp: z / (1.0 + xp.abs(z)), lambda z, a, xp: 1.0 / (1.0 + xp.abs(z)) ** 2,
        lambda dA, z, a, xp: dA / (1.0 + xp.abs(z)) ** 2)
    net = nn_xp.Network([1, 6, 1], [softsign, "identity"], backend="numpy", dtype="float64", seed=2)
    net.engine.workspace_min_elements = 0
    values = net.evaluate(SINE_X)
    dWs, _ = net.compute_gradient(values, SINE_Y)
    weights = net.get_weights()
    net.fit(SINE_X, SINE_Y, epochs=1, learning_rate=0.1)  # one step: W0 - 0.1 dW0
    assert net.engine.workspace_rows is None
    np.testing.assert_allclose(net.get_weights()[0][0], weights[0][0] - 0.1 * dWs[0], rtol=1e-12)


def test_release_buffers():
    net = nn_xp.Network([20, 4096, 1], backend="numpy", dtype="float32")
    net.fit(np.ones((32, 20)), np.ones((32, 1)), epochs=1)
    assert net.engine.workspace_rows == 32
    net.release_buffers()
    assert net.engine.workspace_rows is None
    net.fit(np.ones((32, 20)), np.ones((32, 1)), epochs=1)  # and fit builds them again


def test_parameters_stay_views_of_one_buffer_through_fit_and_rollback():
    """On NumPy the parameters are views of one flat buffer (an undo point or an SGD step is one call).
    What a user holds from ``net.params`` stays the live parameter through training and through a rollback
    after divergence."""
    net = nn_xp.Network([1, 8, 1], backend="numpy", dtype="float64", seed=1)
    held = net.params["W0"]
    net.fit(SINE_X, SINE_Y, epochs=5, learning_rate=0.1)
    assert net.params["W0"] is held and np.shares_memory(held, net.parameters.flat)
    np.testing.assert_array_equal(held, net.get_weights()[0][0])
    before = net.get_weights()
    with pytest.raises(FloatingPointError):
        net.fit(SINE_X, SINE_Y * 1e200, epochs=50, learning_rate=10.0)
    assert net.params["W0"] is held and all(np.shares_memory(p, net.parameters.flat) for p in net.parameters)
    for (W, b), (_W0, _b0) in zip(net.get_weights(), before):
        assert np.all(np.isfinite(W)) and np.all(np.isfinite(b))


def test_an_optimizer_that_returns_new_arrays_keeps_the_flat_buffer_in_step():
    """Optimizer.update may return a new array; on NumPy it is copied into the parameters' flat buffer, so the
    network's views (which undo points copy) never go stale."""

    class CopyingSGD(nn_xp.Optimizer):
        def update(self, p, g, state, lr, xp):
            return p - lr * g  # a new array, not p

        def config(self):
            return {"learning_rate": self.learning_rate}

    nets = [nn_xp.Network([1, 6, 1], backend="numpy", dtype="float64", seed=3) for _ in range(2)]
    nets[0].fit(SINE_X, SINE_Y, epochs=20, optimizer=CopyingSGD(0.1))
    nets[1].fit(SINE_X, SINE_Y, epochs=20, optimizer="sgd", learning_rate=0.1)
    assert all(np.shares_memory(p, nets[0].parameters.flat) for p in nets[0].parameters)
    for (W, b), (Ws, bs) in zip(nets[0].get_weights(), nets[1].get_weights()):
        np.testing.assert_allclose(W, Ws, rtol=1e-12)
        np.testing.assert_allclose(b, bs, rtol=1e-12)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_sigmoid_into_a_buffer_equals_the_portable_form(dtype):
    """The out= sigmoid (through exp in float64 NumPy) equals the portable tanh form, with no overflow warning
    at the extremes (warnings are errors in this suite)."""
    import array_api_compat.numpy as xp

    from nn_xp import _kernels

    z = np.concatenate([np.linspace(-40, 40, 801),
                        [-1e4, -800.0, -710.0, 710.0, 800.0, 1e4, 0.0]]).astype(dtype)
    z = z.reshape(-1, 1)
    out = np.empty_like(z)
    fast = _kernels.sigmoid(z, xp, out)
    assert fast is out
    eps = np.finfo(dtype).eps
    # the tanh form is exact to a few eps absolute (it rounds sigmoid(z) < eps/4 to 0), the exp form
    # relative too
    np.testing.assert_allclose(fast, _kernels.sigmoid(z, xp), rtol=4 * eps, atol=eps)
    with np.errstate(over="ignore"):
        exact = 1.0 / (1.0 + np.exp(-z.astype(np.float64)))
    np.testing.assert_allclose(fast, exact, rtol=4 * eps, atol=eps if dtype == "float32" else 0.0)
    assert fast[-7, 0] == 0.0 and fast[-2, 0] == 1.0 and fast[-1, 0] == 0.5


def test_outer_product_dot_is_the_matrix_product():
    from nn_xp.engine.buffered import _dot

    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((50, 1)), rng.standard_normal((1, 7))
    np.testing.assert_array_equal(_dot(a, b), a * b)
    np.testing.assert_allclose(_dot(a, b), a @ b, rtol=1e-15)
    assert _dot(a, b).shape == (50, 7)


def _one_buffer(a, b) -> bool:
    """Whether two NumPy arrays are views of one buffer (not whether their bytes overlap)."""
    return a.base is not None and a.base is b.base


def test_flat_adam_relinks_its_state_after_it_is_replaced():
    """Adam on NumPy keeps its moments as one flat buffer per slot, ``state`` holding views of them.
    Replacing the state (load_state_dict, an undo point's restore) must not lose it: the next step copies it
    back in."""
    kwargs = dict(epochs=3, batch_size=8)
    net = nn_xp.Network([1, 6, 1], backend="numpy", dtype="float64", seed=4)
    opt = nn_xp.Adam(0.01)
    net.fit(SINE_X, SINE_Y, optimizer=opt, **kwargs)
    assert _one_buffer(opt.state["W1"]["m"], opt.state["W0"]["m"])  # views of one buffer
    opt.load_state_dict(opt.state_dict(), net.params)  # new arrays, no longer views
    assert not _one_buffer(opt.state["W1"]["m"], opt.state["W0"]["m"])
    net.fit(SINE_X, SINE_Y, **kwargs)  # continues with net.optimizer
    reference = nn_xp.Network([1, 6, 1], backend="numpy", dtype="float64", seed=4)
    reference.fit(SINE_X, SINE_Y, optimizer=nn_xp.Adam(0.01), epochs=6, batch_size=8)
    for (W, b), (Wr, br) in zip(net.get_weights(), reference.get_weights()):
        np.testing.assert_array_equal(W, Wr)
        np.testing.assert_array_equal(b, br)
    assert _one_buffer(opt.state["W1"]["m"], opt.state["W0"]["m"])


@pytest.mark.parametrize("kwargs", [dict(momentum=0.9), dict(momentum=0.9, nesterov=True),
                                    dict(weight_decay=0.01), dict(momentum=0.5, weight_decay=0.01)])
def test_sgd_variants_step_all_parameters_at_once_with_the_same_numbers(kwargs):
    """On NumPy's buffered engine, SGD with momentum or weight decay steps the flat buffers at once; the
    portable engine steps parameter by parameter. Same arithmetic, same numbers."""

    def train(engine):
        net = nn_xp.Network([1, 6, 1], backend="numpy", dtype="float64", seed=5, engine=engine)
        net.fit(SINE_X, SINE_Y, epochs=8, batch_size=10, optimizer=nn_xp.SGD(0.05, **kwargs))
        return net

    flat = train("buffered")
    assert flat.parameters.flat is not None
    if kwargs.get("momentum"):
        state = flat.optimizer.state
        assert _one_buffer(state["W0"]["velocity"], state["b1"]["velocity"])
    portable = train("portable")
    assert portable.parameters.flat is None
    for (W, b), (Wp, bp) in zip(flat.get_weights(), portable.get_weights()):
        np.testing.assert_allclose(W, Wp, rtol=1e-13, atol=1e-15)
        np.testing.assert_allclose(b, bp, rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("base", [nn_xp.SGD, nn_xp.Adam])
@pytest.mark.parametrize("elementwise", [True, False])
def test_a_subclass_with_its_own_update_rule_is_followed_on_numpy(base, elementwise):
    """The all-at-once step on NumPy runs a subclass's own ``update`` over the flat buffer; one that is not
    elementwise runs per parameter. Either way the rule is followed."""
    shapes = []

    class Clipped(base):
        def update(self, p, g, state, lr, xp):
            shapes.append(tuple(p.shape))
            g = xp.clip(g, -1e-3, 1e-3)
            p -= lr * g
            return p

    Clipped.elementwise = elementwise
    net = nn_xp.Network([1, 6, 1], backend="numpy", dtype="float64", seed=6)
    before = net.get_weights()
    net.fit(SINE_X, SINE_Y, epochs=2, optimizer=Clipped(0.5))
    per_step = [(6,)] if elementwise else [(6, 1), (6,), (1, 6), (1,)]
    flat_size = 6 * 2 + 6 + 1
    assert shapes == ([(flat_size,)] if elementwise else per_step) * 2
    for (W, _b), (W0, _b0) in zip(net.get_weights(), before):
        assert np.max(np.abs(W - W0)) <= 2 * 0.5 * 1e-3 + 1e-15
