"""Issue 16, item 3: the losses ``mae`` and ``huber(delta)``, and the L1/L2 penalties on the weights.

Gradients against finite differences in float64 on every backend; huber against mse and mae on either side
of ``delta``; the penalties against a NumPy reference on every engine, full batch and mini-batch, and
data-parallel against one process; l1 = l2 = 0 running the code it ran before; model files.
"""
from __future__ import annotations

import copy
import json
import pickle
import threading

import numpy as np
import pytest
from helpers import in_threads, make_net

import nn_xp
from nn_xp import penalties
from nn_xp._modelfile import read
from nn_xp._payload import payload, write
from nn_xp.backends import to_numpy
from nn_xp.distributed import LocalCommunicator
from nn_xp.losses import LOSSES, get_loss, huber

LOSS_CASES = {"mae": "mae", "huber": "huber", "huber(0.3)": huber(0.3)}


def _data(m=23, n_in=3, n_out=2, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((m, n_in))
    return X, np.sin(X @ rng.standard_normal((n_in, n_out))) * 2.0


def _engines(backend) -> list[str]:
    return ["portable"] + {"numpy": ["buffered"], "jax": ["compiled"]}.get(backend.name, [])


def _flat(net) -> np.ndarray:
    return np.concatenate([a.ravel() for pair in net.get_weights() for a in pair])


def _loss_and_gradient(net, X, Y, w=None):
    """value_and_gradient at the current weights (``w``: host sample weights ``(m, 1)``, or None)."""
    Xd, Yd = net.as_input(X)[0], net.as_target(Y)
    kwargs = {} if w is None else {"w": net.backend.asarray(np.asarray(w, dtype=net.dtype_name))}
    return net.value_and_gradient(net.evaluate(Xd), Yd, **kwargs)


def _objective(net, X, Y, w=None) -> float:
    """The training objective at the current weights: what value_and_gradient returns as its loss."""
    return float(_loss_and_gradient(net, X, Y, w)[0])


def _numeric_gradient(net, X, Y, w=None, eps=1e-6) -> np.ndarray:
    """Central differences of :func:`_objective` in every parameter (float64)."""
    weights = net.get_weights()
    flat = np.concatenate([a.ravel() for pair in weights for a in pair])
    shapes = [a.shape for pair in weights for a in pair]

    def at(x):
        parts, start = [], 0
        for shape in shapes:
            n = int(np.prod(shape))
            parts.append(x[start:start + n].reshape(shape))
            start += n
        net.set_weights(list(zip(parts[0::2], parts[1::2])))
        return _objective(net, X, Y, w)

    grad = np.empty_like(flat)
    for i in range(flat.size):
        step = np.zeros_like(flat)
        step[i] = eps
        grad[i] = (at(flat + step) - at(flat - step)) / (2 * eps)
    at(flat)
    return grad


def _gradient(net, X, Y, w=None) -> np.ndarray:
    return np.concatenate([to_numpy(g).ravel() for g in _loss_and_gradient(net, X, Y, w)[1]])


# ------------------------------------------------------------------ the losses
@pytest.mark.parametrize("case", list(LOSS_CASES))
@pytest.mark.parametrize("penalty", [(0.0, 0.0), (0.03, 0.2)])
def test_gradients_match_finite_differences(backend, case, penalty):
    """value_and_gradient's gradient is the derivative of its loss (float64), for the new losses alone and
    with both penalties; the error straddles huber's delta, and no output meets its target exactly."""
    l1, l2 = penalty
    net = make_net(backend, [3, 4, 2], "tanh", loss=LOSS_CASES[case], seed=3, l1=l1, l2=l2)
    X, Y = _data(9)
    np.testing.assert_allclose(_gradient(net, X, Y), _numeric_gradient(net, X, Y), rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("case", list(LOSS_CASES))
def test_sample_weights_scale_each_rows_loss_and_gradient(backend, case):
    """With per-sample weights ``w`` the loss is ``sum_i w_i l_i / m`` and the gradient its derivative;
    weights of 1 give the unweighted bits."""
    net = make_net(backend, [3, 4, 2], "tanh", loss=LOSS_CASES[case], seed=4)
    X, Y = _data(9)
    w = np.random.default_rng(1).uniform(0.1, 3.0, size=(9, 1))
    np.testing.assert_allclose(_gradient(net, X, Y, w), _numeric_gradient(net, X, Y, w), rtol=1e-5,
                               atol=1e-8)
    loss_fn, xp = net.loss_fn, backend.xp
    a = xp.asarray(np.asarray(net.predict(X)), device=backend.device)
    y = xp.asarray(Y, device=backend.device)
    per_row = [float(loss_fn.value(a[i:i + 1, ...], a[i:i + 1, ...], y[i:i + 1, ...], xp)) for i in range(9)]
    weighted = loss_fn.value(a, a, y, xp, None, xp.asarray(w, device=backend.device))
    assert float(weighted) == pytest.approx(float(np.dot(w[:, 0], per_row)) / 9, rel=1e-12)
    ones = xp.ones((9, 1), dtype=a.dtype, device=backend.device)
    unweighted = loss_fn.value_and_delta(a, a, y, xp)
    for got, want in zip(loss_fn.value_and_delta(a, a, y, xp, None, ones), unweighted):
        np.testing.assert_array_equal(to_numpy(got), to_numpy(want))


def _arrays(backend, diff):
    xp = backend.xp
    y = xp.asarray(np.linspace(-1.0, 1.0, diff.size).reshape(diff.shape), device=backend.device)
    return y + xp.asarray(diff, device=backend.device), y, xp


@pytest.mark.parametrize("delta", [0.5, 1.0, 3.0])
def test_huber_is_mse_inside_delta_and_delta_times_mae_outside(backend, delta):
    rng = np.random.default_rng(2)
    signs = np.where(rng.uniform(size=(12, 3)) < 0.5, -1.0, 1.0)
    mse, mae, hub = LOSSES["mse"], LOSSES["mae"], huber(delta)
    a, y, xp = _arrays(backend, signs * rng.uniform(0.0, 0.99 * delta, size=(12, 3)))  # every error inside
    for got, want in zip(hub.value_and_delta(a, a, y, xp), mse.value_and_delta(a, a, y, xp)):
        np.testing.assert_allclose(to_numpy(got), to_numpy(want), rtol=1e-13)
    a, y, xp = _arrays(backend, signs * rng.uniform(1.01 * delta, 5 * delta, size=(12, 3)))  # every one out
    loss, dA = hub.value_and_delta(a, a, y, xp)
    mae_loss, mae_dA = mae.value_and_delta(a, a, y, xp)
    # per element delta |e| - delta^2 / 2, summed over the 3 outputs and averaged over the rows
    assert float(loss) == pytest.approx(delta * float(mae_loss) - 0.5 * delta * delta * 3, rel=1e-12)
    np.testing.assert_allclose(to_numpy(dA), delta * to_numpy(mae_dA), rtol=1e-15)
    np.testing.assert_array_equal(to_numpy(mae_dA), signs / 12)


def test_mae_and_huber_conventions_against_scikit_learn_and_keras():
    """mae sums over the outputs (like nn_xp's mse), where scikit-learn's mean_absolute_error and Keras'
    MeanAbsoluteError and Huber average over them: ``n_outputs`` times theirs."""
    metrics = pytest.importorskip("sklearn.metrics")
    import array_api_compat.numpy as xp

    rng = np.random.default_rng(5)
    y, a = rng.standard_normal((30, 4)), rng.standard_normal((30, 4)) * 2
    assert float(LOSSES["mae"].value(a, a, y, xp)) == pytest.approx(4 * metrics.mean_absolute_error(y, a),
                                                                     rel=1e-13)
    err = np.abs(a - y)  # keras.losses.Huber(delta): mean over the last axis of this, then over the batch
    keras = np.mean(np.mean(np.where(err <= 1.5, 0.5 * err**2, 1.5 * err - 0.5 * 1.5**2), axis=-1))
    assert float(huber(1.5).value(a, a, y, xp)) == pytest.approx(4 * keras, rel=1e-13)


def test_mae_subgradient_is_zero_where_the_output_meets_the_target(backend):
    a, y, xp = _arrays(backend, np.array([[0.0, 1.0], [-2.0, 0.0]]))
    for loss in (LOSSES["mae"], huber(0.5)):
        _, dA = loss.value_and_delta(a, a, y, xp)
        np.testing.assert_array_equal(to_numpy(dA)[[0, 1], [0, 1]], [0.0, 0.0])
        assert np.all(to_numpy(dA)[[0, 1], [1, 0]] != 0.0)


def test_new_losses_default_to_an_identity_output_and_fit_on_every_engine(backend):
    X, Y = _data()
    Y[0] += 50.0  # an outlier: huber and mae pull on it linearly
    for engine in _engines(backend):
        for loss in ("mae", "huber", huber(0.2)):
            net = make_net(backend, [3, 8, 2], "tanh", loss=loss, engine=engine, seed=0)
            assert net.activations[-1] == "identity"
            history = net.fit(X, Y, epochs=30, batch_size=8, optimizer="adam", learning_rate=0.01)
            assert history.history["loss"][-1] < history.history["loss"][0]


def test_huber_is_one_object_per_delta_and_refuses_a_bad_one():
    assert huber(2) is huber(2.0) is get_loss("huber", {"delta": 2.0}) and huber() is LOSSES["huber"]
    assert huber(2.0) != huber(2.5) and dict(huber(2.5).config) == {"delta": 2.5}
    for loss in (huber(2.0), LOSSES["mae"]):  # pickled and copied as name and config: the same object
        assert pickle.loads(pickle.dumps(loss)) is loss and copy.deepcopy(loss) is loss
    for bad in (0, -1.0, float("inf"), float("nan"), True, "1"):
        with pytest.raises(ValueError, match="huber's delta must be a positive, finite number"):
            huber(bad)
    with pytest.raises(ValueError, match="loss 'mse' takes no parameters"):
        get_loss("mse", {"delta": 1.0})
    with pytest.raises(ValueError, match=r"loss 'huber' takes the parameters \{'delta': 1.0\}"):
        get_loss("huber", {"width": 1.0})
    with pytest.raises(ValueError, match="unknown loss 'mad'"):
        nn_xp.Network([1, 2, 1], loss="mad", backend="numpy")


# ------------------------------------------------------------------ the penalties
def _reference_penalty(weights, l1, l2, m):
    """NumPy: scikit-learn's alpha term on the weights, and l1's; the gradient of each ``W``."""
    value = sum(0.5 * l2 * np.sum(W * W) + l1 * np.sum(np.abs(W)) for W, _ in weights) / m
    return value, [(l2 * W + l1 * np.sign(W)) / m for W, _ in weights]


def _reference_fit(sizes, loss, X, Y, l1, l2, lr, epochs, batch_size):
    """Plain SGD in NumPy from the unpenalised network's gradients plus :func:`_reference_penalty`, batches in
    order: the weights after ``epochs`` and each epoch's mean loss."""
    net = nn_xp.Network(sizes, "tanh", loss=loss, backend="numpy", dtype="float64", seed=7, engine="portable")
    m, losses = X.shape[0], []
    batch_size = batch_size or m
    for _ in range(epochs):
        total = 0.0
        for lo in range(0, m, batch_size):
            Xb, Yb = X[lo:lo + batch_size], Y[lo:lo + batch_size]
            n = Xb.shape[0]
            value, grads = net.value_and_gradient(net.evaluate(Xb), Yb)
            weights = net.get_weights()
            pen, dWs = _reference_penalty(weights, l1, l2, n)
            total += (float(value) + pen) * n / m
            new = [(W - lr * (dW + dW_pen), b - lr * db)
                   for (W, b), dW, db, dW_pen in zip(weights, grads[0::2], grads[1::2], dWs)]
            net.set_weights(new)
        losses.append(total)
    return _flat(net), losses


@pytest.mark.parametrize("batch_size", [None, 6])
@pytest.mark.parametrize("loss", ["mse", "huber"])
def test_penalties_match_a_numpy_reference_on_every_engine(backend, batch_size, loss):
    """Weights only (never the biases): ``(l1 * sign(W) + l2 * W) / m`` in the gradient and the penalty in the
    reported loss, on every engine (the buffered one's [W0 | b0] input block included), full batch and
    mini-batches (the last one shorter, divided by its own rows). On JAX, the same shape without a penalty
    is compiled first: the penalty is part of what a program is kept for."""
    sizes, (X, Y) = [3, 5, 2], _data(23)
    l1, l2, lr, epochs = 0.02, 0.3, 0.1, 4
    ref_w, ref_losses = _reference_fit(sizes, loss, X, Y, l1, l2, lr, epochs, batch_size)
    for engine in _engines(backend):
        plain = make_net(backend, sizes, "tanh", loss=loss, seed=7, engine=engine)
        plain.fit(X, Y, epochs=epochs, batch_size=batch_size, shuffle=False, optimizer=nn_xp.SGD(lr))
        net = make_net(backend, sizes, "tanh", loss=loss, seed=7, engine=engine, l1=l1, l2=l2)
        history = net.fit(X, Y, epochs=epochs, batch_size=batch_size, shuffle=False, optimizer=nn_xp.SGD(lr))
        np.testing.assert_allclose(_flat(net), ref_w, rtol=1e-12, atol=1e-14, err_msg=engine)
        # each batch's loss with its penalty, before its step, weighted by its rows
        np.testing.assert_allclose(history.history["loss"], ref_losses, rtol=1e-12, err_msg=engine)
        assert not np.allclose(_flat(plain), ref_w)  # the penalty changed the training


def test_the_penalty_never_touches_the_biases(backend):
    X, Y = _data(8)
    plain = make_net(backend, [3, 4, 2], "tanh", seed=1)
    net = make_net(backend, [3, 4, 2], "tanh", seed=1, l1=5.0, l2=50.0)
    g0, g1 = _gradient(plain, X, Y), _gradient(net, X, Y)
    sizes = [(4, 3), (4,), (2, 4), (2,)]
    starts = np.cumsum([0] + [int(np.prod(s)) for s in sizes])
    for i, shape in enumerate(sizes):
        part = slice(starts[i], starts[i + 1])
        if len(shape) == 1:
            np.testing.assert_array_equal(g1[part], g0[part])  # db: bit for bit
        else:
            assert np.all(g1[part] != g0[part])


def test_without_a_penalty_fit_runs_the_code_it_ran_before(backend, monkeypatch):
    """l1 = l2 = 0 holds no penalty, and no penalty code runs in fit on any engine: the same bits as a network
    made before there were penalties."""
    def never(*args, **kwargs):
        raise AssertionError("the penalty code ran without a penalty")

    X, Y = _data()
    for engine in _engines(backend):
        before = make_net(backend, [3, 5, 2], "tanh", seed=2, engine=engine)
        before.fit(X, Y, epochs=3, batch_size=5, optimizer="adam", learning_rate=0.01)
        monkeypatch.setattr(penalties.Penalty, "add", never)
        monkeypatch.setattr(penalties.Penalty, "value", never)
        net = make_net(backend, [3, 5, 2], "tanh", seed=2, engine=engine, l1=0.0, l2=0)
        assert net.penalty is None and net.l1 == net.l2 == 0.0
        history = net.fit(X, Y, epochs=3, batch_size=5, optimizer="adam", learning_rate=0.01)
        monkeypatch.undo()
        assert _flat(net).tobytes() == _flat(before).tobytes()
        assert history.history == before.history.history


def test_the_training_loss_includes_the_penalty_and_validation_losses_do_not(backend):
    """scikit-learn's loss_curve_ (and Keras' loss) include the penalty; nn_xp's val_loss, Network.loss and
    the EarlyStopping monitor on it are the data loss alone, comparable between penalties."""
    X, Y = _data(20)
    net = make_net(backend, [3, 5, 2], "tanh", seed=3, l1=0.1, l2=0.5)
    pen, _ = _reference_penalty(net.get_weights(), 0.1, 0.5, 20)
    data_loss = net.loss(X, Y)
    history = net.fit(X, Y, epochs=1, validation_data=(X, Y), learning_rate=0.05)
    assert history.history["loss"][0] == pytest.approx(data_loss + pen, rel=1e-12)  # full batch: before
    assert history.history["val_loss"][0] == pytest.approx(net.loss(X, Y), rel=1e-12)  # after the step
    assert net.loss(X, Y) < history.history["loss"][0] - pen * 0.5


def test_penalties_are_checked_and_can_be_changed_between_fits():
    for name in ("l1", "l2"):
        for bad in (-0.1, float("inf"), float("nan"), True, "0.1", None):
            with pytest.raises(ValueError, match=f"{name} must be a non-negative, finite number"):
                nn_xp.Network([2, 3, 1], backend="numpy", **{name: bad})
    net = nn_xp.Network([2, 3, 1], backend="numpy", l2=0.5)
    net.l1, net.l2 = 0.25, 0.0
    assert net.penalty == penalties.Penalty(0.25, 0.0) and (net.l1, net.l2) == (0.25, 0.0)
    net.l1 = 0
    assert net.penalty is None
    with pytest.raises(ValueError, match="l2 must be"):
        net.l2 = -1.0


# ------------------------------------------------------------------ data-parallel
def _in_threads(size, work):
    results, errors = in_threads(size, work)
    assert errors == [None] * size
    return results


@pytest.mark.parametrize("batch_size", [None, 4])
@pytest.mark.parametrize("size", [2, 3])
def test_data_parallel_penalties_equal_one_process(backend, batch_size, size):
    """Each rank's gradients are summed: the penalty is added on rank 0 alone, to the gradient and the loss,
    so the result is one process's (an empty shard on rank 0 included: batches of 4 on 3 ranks end in 1)."""
    if backend.name == "jax":
        pytest.skip("no data-parallel JAX: fit(comm=) refuses it (tests/test_distributed.py)")
    X, Y = _data(13)

    def train(comm):
        net = make_net(backend, [3, 4, 2], "tanh", loss="huber", seed=5, l1=0.05, l2=0.2)
        history = net.fit(X, Y, epochs=4, batch_size=batch_size, optimizer="adam", learning_rate=0.02,
                          validation_split=0.25, comm=comm)
        return _flat(net), history.history

    ref_w, ref_h = train(None)
    for w, h in _in_threads(size, train):
        np.testing.assert_allclose(w, ref_w, rtol=1e-12, atol=1e-15)
        assert h.keys() == ref_h.keys()
        for key in h:
            np.testing.assert_allclose(h[key], ref_h[key], rtol=1e-12, err_msg=key)


def test_data_parallel_ranks_must_agree_on_the_penalty_and_the_loss():
    X, Y = _data(12)

    def work(comm):
        net = nn_xp.Network([3, 4, 2], backend="numpy", dtype="float64", loss=huber(1.0 + comm.rank),
                            l2=0.1 * comm.rank)
        net.fit(X, Y, epochs=2, comm=comm)

    comms = LocalCommunicator.group(2, timeout=30.0)
    errors = [None, None]

    def go(rank):
        try:
            work(comms[rank])
        except ValueError as exc:
            errors[rank] = exc

    threads = [threading.Thread(target=go, args=(r,)) for r in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert all(isinstance(e, ValueError) and "loss parameters and penalty" in str(e) for e in errors)
    assert "l2=0.1" in str(errors[0]) and "'delta': 2.0" in str(errors[0])


# ------------------------------------------------------------------ model files
def test_model_files_keep_the_loss_parameters_and_the_penalties(backend, tmp_path):
    path = tmp_path / "m.safetensors"
    net = make_net(backend, [3, 4, 2], "tanh", loss=huber(2.5), l1=0.01, l2=0.2)
    nn_xp.save(net, path)
    meta, _ = read(path)
    assert (meta["loss"], meta["loss_config"], meta["l1"], meta["l2"]) == ("huber", {"delta": 2.5}, 0.01, 0.2)
    back = nn_xp.load(path, backend=backend.name, device=backend.device)
    assert back.loss_fn is huber(2.5) and back.penalty == net.penalty
    X, Y = _data()
    assert back.loss(X, Y) == pytest.approx(net.loss(X, Y), rel=1e-12)
    plain = make_net(backend, [3, 4, 2], "tanh", loss="mae")
    nn_xp.save(plain, path)
    meta, _ = read(path)
    assert not {"loss_config", "l1", "l2"} & set(meta)  # the optional keys: files as before
    back = nn_xp.load(path, backend=backend.name, device=backend.device)
    assert back.loss_fn is LOSSES["mae"] and back.penalty is None


@pytest.mark.parametrize("key, value, message", [
    ("loss_config", {"delta": -1.0}, "has invalid loss_config .* delta must be a positive"),
    ("loss_config", {"delta": "2"}, "has invalid loss_config"),
    ("loss_config", [2.0], "has invalid loss_config"),
    ("l2", -0.5, "has l2 -0.5; a penalty is a non-negative, finite number"),
    ("l1", "0.1", "has l1 '0.1'"),
])
def test_bad_loss_parameters_or_penalties_in_a_file_are_named(tmp_path, key, value, message):
    net = nn_xp.Network([2, 3, 1], loss="huber", backend="numpy")
    tensors, meta = payload(net)
    meta[key] = value
    path = tmp_path / "bad.safetensors"
    write(path, tensors, meta)
    with pytest.raises(nn_xp.ModelFileError, match=message):
        nn_xp.load(path)
    meta["loss"] = "mse"
    meta["loss_config"] = {"delta": 1.0}
    write(path, tensors, meta)
    with pytest.raises(nn_xp.ModelFileError, match="loss 'mse' takes no parameters"):
        nn_xp.load(path)


def test_a_checkpoint_resumes_only_into_the_same_huber_delta(tmp_path):
    X, Y = _data()
    path = tmp_path / "c.ckpt"
    net = nn_xp.Network([3, 4, 2], loss=huber(2.0), backend="numpy", dtype="float64")
    net.fit(X, Y, epochs=2, checkpoint=path)
    other = nn_xp.Network([3, 4, 2], loss="huber", backend="numpy", dtype="float64")
    with pytest.raises(nn_xp.ModelFileError, match=r"loss huber, delta=2.0; float64\) network; this network "
                                                   r"is 3-4-2 \(sigmoid, identity; loss huber, delta=1.0"):
        other.fit(X, Y, epochs=3, resume_from=path)
    same = nn_xp.Network([3, 4, 2], loss=huber(2.0), backend="numpy", dtype="float64")
    assert len(same.fit(X, Y, epochs=3, resume_from=path).history["loss"]) == 3


def test_onnx_metadata_names_the_loss_parameters(tmp_path):
    pytest.importorskip("onnx")
    import onnx

    from nn_xp.export import export_onnx

    net = nn_xp.Network([2, 3, 1], loss=huber(0.75), backend="numpy", l2=0.1)
    export_onnx(net, tmp_path / "m.onnx")
    props = {p.key: p.value for p in onnx.load(tmp_path / "m.onnx").metadata_props}
    assert props["loss"] == "huber" and json.loads(props["loss_config"]) == {"delta": 0.75}
    assert "l2" not in props  # a training setting: the exported graph is the forward pass
