"""The fused engine (torch): the model's step in torch's own calls, plain gradient descent inside
back-propagation, bit for bit the portable engine's (the model's own math)."""
from __future__ import annotations

import numpy as np
import pytest

import nn_xp
from nn_xp import _kernels as K

torch = pytest.importorskip("torch")
xp_torch = pytest.importorskip("array_api_compat.torch")
import array_api_compat.numpy as xp_numpy  # noqa: E402

HEADS = {"mse": ("identity", 2), "binary_cross_entropy": ("sigmoid", 2), "cross_entropy": ("softmax", 3),
         "huber": ("identity", 2)}


def _data(loss, m=30, seed=3):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((m, 3))
    n_out = HEADS[loss][1]
    if loss == "cross_entropy":
        return X, np.argmax(X, axis=1)
    if loss == "binary_cross_entropy":
        return X, (X[:, :n_out] > 0).astype(float)
    return X, np.sin(X[:, :n_out])


def _fit(engine, loss, optimizer, activations=("tanh", "sigmoid"), **options):
    out, n_out = HEADS[loss]
    net = nn_xp.Network([3, 6, 5, n_out], [*activations, out], loss=loss, backend="torch", dtype="float64",
                        seed=2, engine=engine, **options.pop("network", {}))
    opt = type(optimizer)(**optimizer.config())
    history = net.fit(*_data(loss), epochs=6, optimizer=opt, validation_split=0.2, **options)
    return net, history, opt


def _assert_agree(a, b, rtol=1e-13):
    (net_a, h_a, opt_a), (net_b, h_b, opt_b) = a, b
    assert h_a.history.keys() == h_b.history.keys()
    for key in h_a.history:
        np.testing.assert_allclose(h_a[key], h_b[key], rtol=rtol, atol=1e-15 if rtol else 0, err_msg=key)
    for (W, bias), (Wp, bp) in zip(net_a.get_weights(), net_b.get_weights()):
        np.testing.assert_allclose(W, Wp, rtol=rtol, atol=1e-15 if rtol else 0)
        np.testing.assert_allclose(bias, bp, rtol=rtol, atol=1e-15 if rtol else 0)
    assert opt_a.iterations == opt_b.iterations > 0


# ------------------------------------------------------------------ choosing it
def test_auto_is_fused_on_torch_and_elsewhere_asking_for_it_is_a_clear_error():
    assert nn_xp.Network([1, 4, 1], backend="torch").engine.name == "fused"
    assert nn_xp.Network([1, 4, 1], backend="torch", engine="portable").engine.name == "portable"
    with pytest.raises(ValueError, match="engine='fused' runs the step in torch's own fused calls.*numpy"):
        nn_xp.Network([1, 4, 1], backend="numpy", engine="fused")


def test_plain_descent_is_sgd_with_nothing_else():
    assert nn_xp.SGD(0.1).plain_descent
    assert nn_xp.SGD(lambda step: 0.1).plain_descent  # a schedule only changes the rate
    for opt in (nn_xp.SGD(0.1, momentum=0.5), nn_xp.SGD(0.1, weight_decay=0.01),
                nn_xp.SGD(0.1, clip_norm=1.0), nn_xp.Adam(0.01), nn_xp.RMSprop(0.01)):
        assert not opt.plain_descent, opt

    class Halved(nn_xp.SGD):
        def update(self, p, g, state, lr, xp):
            return super().update(p, g, state, lr / 2, xp)

    assert not Halved(0.1).plain_descent  # a rule of its own is not the plain step


def test_count_step_counts_and_gives_the_rate_of_that_step():
    opt = nn_xp.SGD(lambda step: 1.0 / (step + 1))
    assert [opt.count_step() for _ in range(3)] == [1.0, 0.5, 1.0 / 3]
    assert opt.iterations == 3


# ------------------------------------------------------------------ the same numbers as the portable engine
@pytest.mark.parametrize("loss", list(HEADS))
@pytest.mark.parametrize("batch_size", [None, 7])
@pytest.mark.parametrize("optimizer", [nn_xp.SGD(0.05), nn_xp.SGD(0.05, momentum=0.9, nesterov=True),
                                       nn_xp.AdamW(0.01, weight_decay=0.1)],
                         ids=["plain", "nesterov", "adamw"])
def test_fused_and_portable_engines_train_bit_for_bit_alike(loss, batch_size, optimizer):
    """Every history column and the weights, float64: the plain step inside back-propagation, and the
    gradients handed to another optimizer, are the portable engine's operations."""
    runs = [_fit(engine, loss, optimizer, batch_size=batch_size) for engine in ("fused", "portable")]
    _assert_agree(*runs, rtol=0)


@pytest.mark.parametrize("activations", [("relu", "tanh"), ("leaky_relu", "sigmoid")])
@pytest.mark.parametrize("options", [
    {"sample_weight": np.linspace(0.5, 2.0, 30)},
    {"sample_weight": np.linspace(0.5, 2.0, 30), "weighted_mean": True},
    {"network": {"l1": 0.01, "l2": 0.02}},
    {"metrics": ["mae", "r2"]},
    {"learning_rate": None},
], ids=["weights", "weighted-mean", "penalty", "metrics", "schedule"])
def test_fused_and_portable_engines_agree_with_fits_options(activations, options):
    optimizer = nn_xp.SGD(0.05)
    if "learning_rate" in options:  # a schedule: the fused step takes each step's own rate
        options = {}
        optimizer = nn_xp.SGD(nn_xp.ExponentialDecay(0.1, rate=0.5, decay_steps=3))
    runs = [_fit(engine, "mse", optimizer, activations, batch_size=7, **dict(options))
            for engine in ("fused", "portable")]
    _assert_agree(*runs, rtol=0)


def test_with_dropout_the_fused_engine_trains_as_the_portable_one_bit_for_bit():
    runs = [_fit(engine, "mse", nn_xp.SGD(0.05), batch_size=7, network={"dropout": 0.3})
            for engine in ("fused", "portable")]
    _assert_agree(*runs, rtol=0)


def test_a_gradient_hook_gets_the_gradients_and_the_plain_step_stays_the_optimizers():
    """Data-parallel fit's hook (an allreduce): the fused engine then makes the gradients, the hook sees
    them before the step, and a hook that doubles them is plain SGD at twice the rate."""
    X, Y = _data("mse")
    nets = [nn_xp.Network([3, 6, 2], backend="torch", dtype="float64", seed=1) for _ in range(2)]
    seen = []

    def double(grads):
        seen.append(len(grads))
        for g in grads:
            g *= 2.0

    engine = nets[0].engine
    trainer = engine.trainer(nets[0], nn_xp.SGD(0.05), *_model_arrays(nets[0], X, Y), gradient_hook=double)
    trainer.run(3)
    nets[1].fit(X, Y, epochs=3, learning_rate=0.1)
    assert seen == [4, 4, 4]
    for (W, b), (Wd, bd) in zip(nets[0].get_weights(), nets[1].get_weights()):
        np.testing.assert_array_equal(W, Wd)  # 2 * g * 0.05 is g * 0.1 exactly
        np.testing.assert_array_equal(b, bd)


def _model_arrays(net, X, Y):
    return net.backend.asarray(X, dtype=net.dtype), net.backend.asarray(Y, dtype=net.dtype)


def test_fit_records_no_autograd_graph_and_leaves_grad_mode_as_it_was():
    net = nn_xp.Network([1, 4, 1], backend="torch", dtype="float64")
    X, Y = np.linspace(-1, 1, 20)[:, None], np.linspace(-1, 1, 20)[:, None]
    grad_mode = []

    class Watch(nn_xp.Callback):
        def on_epoch_end(self, epoch, logs):
            grad_mode.append(torch.is_grad_enabled())
            if epoch == 2:
                raise KeyboardInterrupt

    assert torch.is_grad_enabled()
    with pytest.raises(KeyboardInterrupt):
        net.fit(X, Y, epochs=5, callbacks=[Watch()])
    assert torch.is_grad_enabled()  # restored after an interrupted fit too
    assert grad_mode == [True, True, True]  # a callback runs in the caller's mode
    assert all(p.grad_fn is None and not p.requires_grad for p in net.parameters)


# ------------------------------------------------------------------ the kernels, both forms
def _pair(shape, seed=0, positive=False):
    rng = np.random.default_rng(seed)
    a = rng.uniform(0.05, 0.95, shape) if positive else rng.standard_normal(shape)
    return a, torch.from_numpy(a.copy())


@pytest.mark.parametrize("kernel", ["sigmoid_backward", "tanh_backward", "relu_backward"])
def test_each_activation_backward_on_torch_equals_the_portable_form(kernel):
    (dA, dA_t), (a, a_t) = _pair((7, 5)), _pair((7, 5), seed=1, positive=kernel != "relu_backward")
    if kernel == "relu_backward":
        a[0, 0] = a_t[0, 0] = 0.0  # the subgradient at 0 is 0 in both
    f = getattr(K, kernel)
    fused = f(dA_t.clone(), a_t, xp_torch).numpy()
    portable = f(dA.copy(), a.copy(), xp_numpy)
    np.testing.assert_allclose(fused, portable, rtol=1e-15, atol=1e-16)
    expected = {"sigmoid_backward": dA * a * (1 - a), "tanh_backward": dA * (1 - a * a),
                "relu_backward": np.where(a > 0, dA, 0.0)}[kernel]
    np.testing.assert_allclose(fused, expected, rtol=1e-15, atol=1e-16)


def test_the_fused_operations_are_the_portable_ones():
    (W, W_t), (dZ, dZ_t), (A, A_t), (b, b_t) = (_pair((4, 3)), _pair((6, 4), 1), _pair((6, 3), 2),
                                                 _pair((4,), 3))
    ops = K.fused_ops(xp_torch)
    np.testing.assert_allclose(ops.linear(b_t, A_t, W_t.T).numpy(), A @ W.T + b, rtol=1e-14)
    np.testing.assert_allclose(ops.product(dZ_t.T, A_t).numpy(), dZ.T @ A, rtol=1e-14)
    np.testing.assert_allclose(ops.column_sum(dZ_t).numpy(), dZ.sum(axis=0), rtol=1e-14)
    ops.descend(b_t, ops.column_sum(dZ_t), 0.1)
    np.testing.assert_allclose(b_t.numpy(), b - 0.1 * dZ.sum(axis=0), rtol=1e-14)
    assert float(K.dot(A_t[0], A_t[1], xp_torch)) == pytest.approx(float(A[0] @ A[1]), rel=1e-15)
    with pytest.raises(ValueError, match="no fused operations"):
        K.fused_ops(xp_numpy)


def test_float32_training_on_the_fused_engine_stays_as_accurate_as_numpys():
    """The loss curve of a float32 fit against float64's: the fused engine's within the other engines'
    rounding (torch's addmm_/addmv_ would fold the update into the product, 1.4e-4 off here)."""
    X = np.arange(-5.0, 5.0, 0.1).reshape(-1, 1)
    Y = np.sin(X)

    def curve(backend, dtype, engine=None):
        net = nn_xp.Network([1, 16, 16, 1], ["tanh", "relu", "identity"], backend=backend, dtype=dtype,
                            seed=7, engine=engine)
        return np.array(net.fit(X, Y, epochs=100, learning_rate=0.05)["loss"])

    exact = curve("numpy", "float64")
    assert np.max(np.abs(curve("torch", "float32", "fused") - exact) / exact) < 2e-6
