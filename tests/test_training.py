"""Training that users expect: losses, optimizers, schedules, mini-batches, validation, callbacks,
progress."""
from __future__ import annotations

import math

import numpy as np
import pytest
from helpers import SINE_X, SINE_Y, assert_close, assert_on_backend, make_net

import nn_xp
from nn_xp.backends import to_numpy


def blobs(n=90, k=3, seed=0):
    """Three well-separated Gaussian blobs in 2-D with integer labels."""
    rng = np.random.default_rng(seed)
    centers = np.array([[0.0, 3.0], [3.0, -2.0], [-3.0, -2.0]])[:k]
    y = np.arange(n) % k
    X = centers[y] + rng.standard_normal((n, 2)) * 0.6
    return X, y


# ---------------------------------------------------------------- losses
def test_cross_entropy_accepts_ids_and_one_hot(backend):
    X, y = blobs()
    net = make_net(backend, [2, 8, 3], ["tanh", "softmax"], loss="cross_entropy")
    assert net.loss(X, y) == pytest.approx(net.loss(X, np.eye(3)[y]), rel=1e-12)
    p = net.predict(X)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-12)
    expected = -np.mean(np.log(p[np.arange(len(y)), y]))
    assert net.loss(X, y) == pytest.approx(expected, rel=1e-10)


def test_binary_cross_entropy_value(backend):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((20, 3))
    y = (X[:, 0] > 0).astype(float)
    net = make_net(backend, [3, 4, 1], ["relu", "sigmoid"], loss="binary_cross_entropy")
    p = net.predict(X)[:, 0]
    expected = -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))
    assert net.loss(X, y) == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize("loss, act", [("mse", "softmax"), ("binary_cross_entropy", "identity"),
                                       ("cross_entropy", "sigmoid")])
def test_nonsense_loss_and_output_pairs_are_rejected(loss, act):
    with pytest.raises(ValueError, match="needs a|softmax output needs"):
        nn_xp.Network([2, 3, 2], ["relu", act], loss=loss, backend="numpy")


def test_softmax_is_output_only():
    with pytest.raises(ValueError, match="only be the output layer"):
        nn_xp.Network([2, 3, 2], ["softmax", "softmax"], loss="cross_entropy", backend="numpy")


def test_default_output_follows_the_loss():
    assert (nn_xp.Network([2, 3, 2], loss="cross_entropy", backend="numpy").activations
            == ["sigmoid", "softmax"])
    assert (nn_xp.Network([2, 3, 1], "relu", loss="binary_cross_entropy", backend="numpy").activations
            == ["relu", "sigmoid"])


# ------------------------------------------------------------ optimizers
def _one_param_problem(backend):
    """A single linear layer: gradient of mse is easy to state on the host."""
    net = make_net(backend, [2, 1], ["identity"])
    net.set_weights([(np.array([[0.5, -0.25]]), np.array([0.1]))])
    X = np.array([[1.0, 2.0], [3.0, -1.0], [0.5, 0.5]])
    Y = np.array([[1.0], [0.0], [2.0]])
    return net, X, Y


def _host_grad(W, b, X, Y):
    A = X @ W.T + b
    dZ = (A - Y) / len(X)
    return dZ.T @ X, dZ.sum(axis=0)


@pytest.mark.parametrize("opt_name", ["sgd", "momentum", "nesterov", "sgd_wd", "adam", "adamw", "adam_l2"])
def test_optimizer_matches_hand_computed_steps(backend, opt_name):
    net, X, Y = _one_param_problem(backend)
    lr, mom, wd = 0.1, 0.9, 0.05
    opt = {"sgd": nn_xp.SGD(lr), "momentum": nn_xp.SGD(lr, momentum=mom),
           "nesterov": nn_xp.SGD(lr, momentum=mom, nesterov=True), "sgd_wd": nn_xp.SGD(lr, weight_decay=wd),
           "adam": nn_xp.Adam(lr), "adamw": nn_xp.AdamW(lr, weight_decay=wd),
           "adam_l2": nn_xp.Adam(lr, weight_decay=wd)}[opt_name]
    (W, b), = net.get_weights()
    params = {"W": W, "b": b}
    vel = {k: np.zeros_like(v) for k, v in params.items()}
    m1 = {k: np.zeros_like(v) for k, v in params.items()}
    m2 = {k: np.zeros_like(v) for k, v in params.items()}
    for t in range(1, 4):
        dW, db = _host_grad(params["W"], params["b"], X, Y)
        for k, g in (("W", dW), ("b", db)):
            p = params[k]
            if opt_name in ("sgd_wd", "adam_l2"):
                g = g + wd * p
            if opt_name == "sgd" or opt_name == "sgd_wd":
                params[k] = p - lr * g
            elif opt_name in ("momentum", "nesterov"):
                vel[k] = mom * vel[k] + g
                step = g + mom * vel[k] if opt_name == "nesterov" else vel[k]
                params[k] = p - lr * step
            else:
                if opt_name == "adamw":
                    p = p * (1 - lr * wd)
                m1[k] = 0.9 * m1[k] + 0.1 * g
                m2[k] = 0.999 * m2[k] + 0.001 * g * g
                mhat, vhat = m1[k] / (1 - 0.9 ** t), m2[k] / (1 - 0.999 ** t)
                params[k] = p - lr * mhat / (np.sqrt(vhat) + 1e-8)
    net.fit(X, Y, epochs=3, optimizer=opt)
    (W, b), = net.get_weights()
    np.testing.assert_allclose(W, params["W"], rtol=1e-12)
    np.testing.assert_allclose(b, params["b"], rtol=1e-12)
    assert opt.iterations == 3
    for slots in opt.state.values():  # state lives on the parameters' device, keyed by parameter name
        for arr in slots.values():
            assert_on_backend(arr, backend, "float64")
    assert set(opt.state) <= {"W0", "b0"}


def test_optimizer_by_name_and_learning_rate():
    net = nn_xp.Network([1, 4, 1], backend="numpy")
    net.fit(SINE_X, SINE_Y, epochs=2, optimizer="adam", learning_rate=0.01)
    assert isinstance(net.optimizer, nn_xp.Adam) and net.optimizer.learning_rate == 0.01
    net.fit(SINE_X, SINE_Y, epochs=2)  # no optimizer given: keeps the Adam and its state
    assert isinstance(net.optimizer, nn_xp.Adam) and net.optimizer.iterations == 4
    with pytest.raises(ValueError, match="unknown optimizer 'adagrad'; valid names: sgd, adam, adamw, "
                                         "rmsprop "):
        net.fit(SINE_X, SINE_Y, epochs=1, optimizer="adagrad")


def test_schedules():
    step = nn_xp.StepDecay(1.0, drop=0.5, every=10)
    assert [step(0), step(9), step(10), step(25)] == [1.0, 1.0, 0.5, 0.25]
    exp = nn_xp.ExponentialDecay(1.0, rate=0.5, decay_steps=2)
    assert exp(2) == pytest.approx(0.5) and exp(1) == pytest.approx(math.sqrt(0.5))
    cos = nn_xp.CosineDecay(1.0, decay_steps=10, alpha=0.1)
    assert cos(0) == pytest.approx(1.0) and cos(10) == pytest.approx(0.1) and cos(20) == pytest.approx(0.1)
    assert cos(5) == pytest.approx(0.55)


def test_schedule_drives_the_step(backend):
    """A schedule is a callable of the step: SGD with lr(step) equals SGD with that constant per step."""
    net, X, Y = _one_param_problem(backend)
    rates = []
    net.fit(X, Y, epochs=3, optimizer=nn_xp.SGD(lambda s: rates.append(s) or 0.1 / (1 + s)))
    assert rates == [0, 1, 2]
    ref, _, _ = _one_param_problem(backend)
    for s in range(3):
        ref.fit(X, Y, epochs=1, optimizer=nn_xp.SGD(0.1 / (1 + s)))
    np.testing.assert_allclose(net.get_weights()[0][0], ref.get_weights()[0][0], rtol=1e-12)


# ----------------------------------------------------------- mini-batches
def test_minibatches_include_the_last_partial_batch(backend):
    net = make_net(backend, [1, 4, 1])
    net.fit(SINE_X[:10], SINE_Y[:10], epochs=5, batch_size=4, optimizer="sgd")
    assert net.optimizer.iterations == 5 * 3


def test_shuffled_training_is_deterministic(backend):
    def train(seed):
        net = make_net(backend, [1, 8, 1], ["tanh", "identity"], seed=seed)
        history = net.fit(SINE_X, SINE_Y, epochs=5, batch_size=16, optimizer="adam", learning_rate=0.01)
        return net.get_weights(), history["loss"]

    (w1, c1), (w2, c2), (w3, _) = train(3), train(3), train(4)
    for (a, _), (b, _) in zip(w1, w2):
        np.testing.assert_array_equal(a, b)
    assert c1 == c2
    assert not np.array_equal(w1[0][0], w3[0][0])


def test_shuffle_changes_the_order_each_epoch():
    """Two epochs with shuffling differ from two epochs without (the permutation is drawn every epoch)."""
    a = nn_xp.Network([1, 8, 1], backend="numpy", dtype="float64", seed=1)
    b = nn_xp.Network([1, 8, 1], backend="numpy", dtype="float64", seed=1)
    a.fit(SINE_X, SINE_Y, epochs=2, batch_size=10)
    b.fit(SINE_X, SINE_Y, epochs=2, batch_size=10, shuffle=False)
    assert not np.allclose(a.get_weights()[0][0], b.get_weights()[0][0])


def test_minibatch_epoch_loss_is_the_mean_of_batch_losses():
    net = nn_xp.Network([1, 4, 1], backend="numpy", dtype="float64", seed=0)
    ref = nn_xp.Network([1, 4, 1], backend="numpy", dtype="float64", seed=0)
    history = net.fit(SINE_X, SINE_Y, epochs=1, batch_size=30, shuffle=False, learning_rate=0.1)
    losses = []
    for lo in range(0, 100, 30):
        xb, yb = SINE_X[lo:lo + 30], SINE_Y[lo:lo + 30]
        losses.append(ref.loss(xb, yb) * len(xb))
        ref.fit(xb, yb, epochs=1, learning_rate=0.1)
    assert history["loss"][0] == pytest.approx(sum(losses) / 100, rel=1e-12)


def test_training_reads_the_device_once_per_call_of_the_loop(monkeypatch):
    """No per-batch host synchronisation: count conversions of device arrays to host values. The loop reads
    a call's metrics once: every epoch where a callback reads them, once per few epochs where they are short
    and nothing does."""
    strict = pytest.importorskip("array_api_strict")
    net = nn_xp.Network([1, 8, 1], backend="array_api_strict", device="device1", dtype="float64")
    X = strict.asarray(SINE_X, device=net.device)
    Y = strict.asarray(SINE_Y, device=net.device)
    calls = []
    array_type = type(X)
    for name in ("__float__", "__bool__", "__int__", "__index__", "__dlpack__"):
        original = getattr(array_type, name)

        def counted(self, *args, _original=original, _name=name, **kwargs):
            calls.append(_name)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(array_type, name, counted)
    net.fit(X, Y, epochs=4, batch_size=5, callbacks=lambda epoch, logs: None)  # 20 batches per epoch
    # two entry checks (finiteness of X and Y) + one read per epoch + the final finiteness check
    assert calls.count("__bool__") == 3 and calls.count("__float__") == 4, calls
    assert len(calls) == 7, calls
    del calls[:]
    chunk = nn_xp.engine.eager_epochs_per_call(net.layers, 5, 20, net.dtype, net.xp)
    assert 1 < chunk < 4
    net.fit(X, Y, epochs=4, batch_size=5)  # calls of `chunk` epochs, then the rest: one read each
    assert calls.count("__bool__") == 3 and calls.count("__float__") + calls.count("__dlpack__") == 2, calls
    assert len(calls) == 5, calls


# --------------------------------------------------------- validation, metrics
def test_validation_data_and_accuracy(backend):
    X, y = blobs()
    Xv, yv = blobs(30, seed=1)
    net = make_net(backend, [2, 16, 3], ["relu", "softmax"], loss="cross_entropy")
    history = net.fit(X, y, epochs=40, batch_size=16, optimizer="adam", learning_rate=0.02,
                      validation_data=(Xv, yv))
    assert set(history.history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert all(len(v) == 40 for v in history.history.values())
    assert history["val_accuracy"][-1] >= 0.9
    assert history["val_loss"][-1] == pytest.approx(net.loss(Xv, yv), rel=1e-9)
    assert history["val_accuracy"][-1] == pytest.approx(net.score(Xv, yv))
    labels = net.predict_classes(Xv)
    assert isinstance(labels, np.ndarray) and labels.shape == (30,)
    assert np.mean(labels == yv) == pytest.approx(net.score(Xv, yv))


def test_validation_split_holds_out_the_last_samples():
    net = nn_xp.Network([1, 4, 1], backend="numpy", dtype="float64")
    ref = nn_xp.Network([1, 4, 1], backend="numpy", dtype="float64")
    history = net.fit(SINE_X, SINE_Y, epochs=3, validation_split=0.2)
    ref_history = ref.fit(SINE_X[:80], SINE_Y[:80], epochs=3, validation_data=(SINE_X[80:], SINE_Y[80:]))
    assert history.history == ref_history.history
    with pytest.raises(ValueError, match="validation_split"):
        net.fit(SINE_X, SINE_Y, epochs=1, validation_split=1.5)


def test_binary_classification_accuracy(backend):
    X, y = blobs(60, k=2)
    net = make_net(backend, [2, 8, 1], ["tanh", "sigmoid"], loss="binary_cross_entropy")
    history = net.fit(X, y, epochs=60, optimizer="adam", learning_rate=0.05)
    assert history["accuracy"][-1] == 1.0
    assert set(np.unique(net.predict_classes(X))) == {0, 1}
    assert net.score(X, y) == 1.0


def test_regression_score_is_r2():
    net = nn_xp.Network([1, 16, 1], backend="numpy", dtype="float64")
    net.fit(SINE_X, SINE_Y, epochs=500, optimizer="adam", learning_rate=0.01)
    pred = net.predict(SINE_X)
    r2 = 1 - np.sum((SINE_Y - pred) ** 2) / np.sum((SINE_Y - SINE_Y.mean()) ** 2)
    assert net.score(SINE_X, SINE_Y) == pytest.approx(r2, rel=1e-9)


def test_r2_of_constant_targets_is_defined():
    net = nn_xp.Network([1, 4, 1], backend="numpy", dtype="float64")
    net.set_weights([(np.zeros((4, 1)), np.zeros(4)), (np.zeros((1, 4)), np.array([2.0]))])
    assert net.score(SINE_X, np.full((100, 1), 2.0)) == 1.0  # perfect
    assert net.score(SINE_X, np.full((100, 1), 3.0)) == 0.0  # scikit-learn's convention


# ---------------------------------------------------------------- callbacks
def test_early_stopping_restores_the_best_weights(backend):
    """Validate on -Y: the better the fit to Y, the worse val_loss, so the best epoch is early."""
    net = make_net(backend, [1, 8, 1], ["tanh", "identity"])
    snapshots = []
    stopper = nn_xp.EarlyStopping(monitor="val_loss", patience=3, restore_best_weights=True)
    history = net.fit(SINE_X, SINE_Y, epochs=200, optimizer="adam", learning_rate=0.05,
                      validation_data=(SINE_X, -SINE_Y),
                      callbacks=[lambda epoch, logs: snapshots.append(net.get_weights()), stopper])
    val = history["val_loss"]
    best = int(np.argmin(val))
    assert len(val) == best + 3 + 1 < 200  # stopped after `patience` epochs without improvement
    assert stopper.best_epoch == best
    for (W, b), (Wb, bb) in zip(net.get_weights(), snapshots[best]):
        np.testing.assert_array_equal(W, Wb)
        np.testing.assert_array_equal(b, bb)
    assert net.loss(SINE_X, -SINE_Y) == pytest.approx(val[best], rel=1e-6)


def test_early_stopping_without_validation_names_the_keys():
    net = nn_xp.Network([1, 4, 1], backend="numpy")
    with pytest.raises(ValueError, match=r"monitors 'val_loss'.*\['loss'\]"):
        net.fit(SINE_X, SINE_Y, epochs=3, callbacks=[nn_xp.EarlyStopping()])


def test_stop_training_from_a_plain_callable(backend):
    def stop_at_4(epoch, logs):
        if epoch == 4:
            raise nn_xp.StopTraining

    net = make_net(backend, [1, 4, 1])
    history = net.fit(SINE_X, SINE_Y, epochs=50, callbacks=stop_at_4)
    assert history.epoch == [0, 1, 2, 3, 4]


def test_callback_objects_get_every_hook():
    events = []

    class Recorder(nn_xp.Callback):
        def on_train_begin(self, net):
            events.append("begin")

        def on_epoch_end(self, epoch, logs):
            events.append(epoch)

        def on_train_end(self, net):
            events.append("end")

    nn_xp.Network([1, 4, 1], backend="numpy").fit(SINE_X, SINE_Y, epochs=3, callbacks=Recorder())
    assert events == ["begin", 0, 1, 2, "end"]


# ---------------------------------------------------------------- progress
def test_verbose_0_prints_nothing(capsys):
    nn_xp.Network([1, 4, 1], backend="numpy").fit(SINE_X, SINE_Y, epochs=3, verbose=0)
    assert capsys.readouterr() == ("", "")


@pytest.mark.parametrize("verbose", [1, 2])
def test_verbose_without_a_terminal_prints_a_line_per_epoch(capsys, verbose):
    nn_xp.Network([1, 4, 1], backend="numpy").fit(SINE_X, SINE_Y, epochs=3, verbose=verbose,
                                                  validation_split=0.1)
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 3 and err[0].startswith("epoch 1/3 loss=") and "val_loss=" in err[0]


def test_verbose_on_a_terminal_shows_a_tqdm_bar(monkeypatch, capsys):
    pytest.importorskip("tqdm")
    import sys

    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    nn_xp.Network([1, 4, 1], backend="numpy").fit(SINE_X, SINE_Y, epochs=3, verbose=1)
    err = capsys.readouterr().err
    assert "3/3" in err and "epoch" in err and "loss=" in err


# ---------------------------------------------------------------- parity
def test_adam_minibatch_parity_with_numpy(backend):
    X, y = blobs()
    kwargs = dict(epochs=8, batch_size=32, optimizer="adam", learning_rate=0.01)
    net = make_net(backend, [2, 12, 3], ["tanh", "softmax"], loss="cross_entropy", seed=5)
    ref = nn_xp.Network([2, 12, 3], ["tanh", "softmax"], loss="cross_entropy", backend="numpy",
                        dtype="float64", seed=5)
    curve, ref_curve = net.fit(X, y, **kwargs)["loss"], ref.fit(X, y, **kwargs)["loss"]
    np.testing.assert_allclose(curve, ref_curve, rtol=1e-9)
    for (W, b), (Wr, br) in zip(net.get_weights(), ref.get_weights()):
        np.testing.assert_allclose(W, Wr, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(b, br, rtol=1e-9, atol=1e-12)
    out = net.predict(backend.asarray(X, dtype=net.dtype))
    assert_close(out, to_numpy(ref.predict(X)), backend=backend, rtol=1e-9)


def test_network_fit_spells_out_every_option_of_the_loop():
    """Issue 16 item 14: help(Network.fit) and editors show fit's options, and none is lost on the way."""
    import inspect

    from nn_xp import training

    ours = list(inspect.signature(nn_xp.Network.fit).parameters.values())[1:]  # without self
    loop = list(inspect.signature(training.fit).parameters.values())[1:]  # without net
    assert [(p.name, p.default) for p in ours] == [(p.name, p.default) for p in loop]
    assert not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in ours)
    doc = nn_xp.Network.fit.__doc__
    missing = [p.name for p in ours[2:] if p.name not in doc]
    assert missing == []


def test_a_resume_that_adds_metrics_keeps_every_column_as_long_as_the_epochs(tmp_path):
    """Review: a key new to a resumed history started empty, so a rollback's truncate left it too long and
    History.plot drew mismatched lengths; it now holds NaN for the epochs before the fit that added it."""
    rng = np.random.default_rng(0)
    X, Y = rng.standard_normal((40, 3)), rng.standard_normal((40, 1))
    ck = tmp_path / "ck.safetensors"
    net = nn_xp.Network([3, 4, 1], backend="numpy", dtype="float64")
    net.fit(X, Y, epochs=3, checkpoint=ck)
    history = net.fit(X, Y, epochs=5, resume_from=ck, metrics=["mae"])
    assert history.epoch == [0, 1, 2, 3, 4]
    assert len(history.history["mae"]) == 5 and all(math.isnan(v) for v in history.history["mae"][:3])
    assert all(math.isfinite(v) for v in history.history["mae"][3:])
    history.truncate(4)
    assert {k: len(v) for k, v in history.history.items()} == {"loss": 4, "mae": 4}


def test_resume_refuses_a_network_with_other_penalties(tmp_path):
    ck = tmp_path / "ck.safetensors"
    net = nn_xp.Network([1, 4, 1], backend="numpy", dtype="float64", l2=0.1)
    net.fit(SINE_X, SINE_Y, epochs=2, checkpoint=ck)
    other = nn_xp.Network([1, 4, 1], backend="numpy", dtype="float64", l2=0.5)
    before = other.get_weights()
    with pytest.raises(nn_xp.io.ModelFileError, match=r"l2=0\.1.*this network has l2=0\.5"):
        other.fit(SINE_X, SINE_Y, epochs=4, resume_from=ck)
    assert all(np.array_equal(a, b) for pa, pb in zip(before, other.get_weights()) for a, b in zip(pa, pb))
    same = nn_xp.Network([1, 4, 1], backend="numpy", dtype="float64", l2=0.1)
    assert len(same.fit(SINE_X, SINE_Y, epochs=4, resume_from=ck)) == 4
