"""Bad input gets a clear error naming the argument; numerical faults never leave the user with NaN
weights."""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from helpers import SINE_X, SINE_Y, make_net

import nn_xp


@pytest.fixture
def net():
    return nn_xp.Network([2, 4, 1], backend="numpy", dtype="float64")


X2 = np.ones((5, 2))
Y1 = np.ones((5, 1))


# ------------------------------------------------------------ construction
@pytest.mark.parametrize("sizes", [[3], [], [2, 0, 1], [2, -1], [2.5, 1], "21", [True, 1]])
def test_bad_layer_sizes(sizes):
    with pytest.raises(ValueError, match="layer_sizes must list at least two positive integers"):
        nn_xp.Network(sizes, backend="numpy")


def test_unknown_activation_lists_the_valid_ones():
    with pytest.raises(ValueError,
                       match="unknown activation 'swish'; valid names: .*leaky_relu.*sigmoid.*tanh"):
        nn_xp.Network([2, 3, 1], ["swish", "identity"], backend="numpy")


def test_wrong_number_of_activations():
    with pytest.raises(ValueError, match="one activation per layer \\(2\\), got 3"):
        nn_xp.Network([2, 3, 1], ["relu", "relu", "identity"], backend="numpy")


def test_unknown_loss_lists_the_valid_ones():
    with pytest.raises(ValueError,
                       match="unknown loss 'hinge'; valid names: mse, binary_cross_entropy, cross_entropy"):
        nn_xp.Network([2, 3, 1], loss="hinge", backend="numpy")


def test_bad_dtype_and_seed():
    with pytest.raises(ValueError, match="dtype must be 'float32' or 'float64', got 'int8'"):
        nn_xp.Network([2, 3, 1], backend="numpy", dtype="int8")
    with pytest.raises(ValueError, match="seed must be a non-negative integer"):
        nn_xp.Network([2, 3, 1], backend="numpy", seed=-3)


# ------------------------------------------------------------------ data
def test_wrong_number_of_features(net):
    with pytest.raises(ValueError, match="X has 3 columns, the network expects 2"):
        net.fit(np.ones((5, 3)), Y1, epochs=1)
    with pytest.raises(ValueError, match="X has 3 columns"):
        net.predict(np.ones((5, 3)))


def test_wrong_number_of_outputs(net):
    with pytest.raises(ValueError, match="Y has 2 columns, the network expects 1"):
        net.fit(X2, np.ones((5, 2)), epochs=1)


def test_mismatched_sample_counts(net):
    with pytest.raises(ValueError, match="X and Y have different numbers of samples: 5 and 4"):
        net.fit(X2, np.ones((4, 1)), epochs=1)


def test_empty_arrays(net):
    with pytest.raises(ValueError, match="X is empty"):
        net.fit(np.ones((0, 2)), np.ones((0, 1)), epochs=1)


def test_one_d_input_when_ambiguous(net):
    with pytest.raises(ValueError, match="X must be 2-D .*got shape \\(5,\\).*reshape"):
        net.predict(np.ones(5))


def test_one_d_accepted_where_unambiguous():
    """A 1-D y for one output, and a 1-D X for one feature, as scikit-learn accepts."""
    net = nn_xp.Network([1, 4, 1], backend="numpy", dtype="float64")
    x = SINE_X[:, 0]
    history = net.fit(x, np.sin(x), epochs=2)
    assert len(history) == 2 and net.predict(x).shape == (100, 1)
    assert net.loss(x, np.sin(x)) == net.loss(SINE_X, SINE_Y)


def test_three_d_input(net):
    with pytest.raises(ValueError, match="X must be 2-D"):
        net.predict(np.ones((2, 2, 2)))


@pytest.mark.parametrize("bad, kind", [(np.array([["a", "b"]]), TypeError), (np.ones((2, 2)) * 1j, TypeError),
                                       (np.array([[object(), 1]], dtype=object), TypeError)])
def test_non_numeric_or_complex_data(net, bad, kind):
    with pytest.raises(kind, match="X must hold real numbers"):
        net.predict(bad)


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_nan_or_infinity_in_the_data(net, value):
    X = X2.copy()
    X[2, 1] = value
    with pytest.raises(ValueError, match="X contains NaN or infinity"):
        net.fit(X, Y1, epochs=1)
    Y = Y1.copy()
    Y[0, 0] = value
    with pytest.raises(ValueError, match="Y contains NaN or infinity"):
        net.fit(X2, Y, epochs=1)


@pytest.mark.parametrize("ids", [[0, 1, 2, 3, 1], [0, -1, 2, 2, 1], [0.9, 1.5, 2.0, 0.0, 1.0]])
def test_class_ids_must_be_whole_and_in_range(ids):
    net = nn_xp.Network([2, 4, 3], loss="cross_entropy", backend="numpy")
    with pytest.raises(ValueError, match=r"Y must hold whole class ids in 0..2"):
        net.fit(X2, np.array(ids), epochs=1)


def test_nan_class_ids():
    net = nn_xp.Network([2, 4, 3], loss="cross_entropy", backend="numpy")
    with pytest.raises(ValueError, match="Y contains NaN"):
        net.loss(X2, [0.0, np.nan, 1.0, 2.0, 0.0])


def test_whole_float_class_ids_and_rows_of_one_hot_arrays_are_targets():
    net = nn_xp.Network([2, 4, 3], loss="cross_entropy", backend="numpy", dtype="float64")
    X = np.arange(10.0).reshape(5, 2)
    ids = [0, 2, 1, 1, 0]
    reference = net.loss(X, np.eye(3)[ids])
    assert net.loss(X, np.array(ids, dtype=float)) == reference
    assert net.loss(X, ids) == reference
    assert net.loss(X, [np.eye(3)[i] for i in ids]) == reference  # a list of one-hot rows is 2-D


# -------------------------------------------------------------- arguments
@pytest.mark.parametrize("kwargs, match", [
    (dict(epochs=0), "epochs must be a positive integer, got 0"),
    (dict(epochs=-1), "epochs must be a positive integer"),
    (dict(epochs=2.5), "epochs must be an integer, got 2.5"),
    (dict(epochs=True), "epochs must be an integer, got True"),
    (dict(batch_size=True), "batch_size must be an integer, got True"),
    (dict(learning_rate=0.0), "learning_rate must be a positive number, got 0.0"),
    (dict(learning_rate=-0.1), "learning_rate must be a positive number"),
    (dict(learning_rate=float("nan")), "learning_rate must be a positive number"),
    (dict(batch_size=0), "batch_size must be a positive integer, got 0"),
    (dict(validation_split=-0.1), "validation_split must be a fraction"),
    (dict(on_nonfinite="ignore"), "on_nonfinite must be 'raise' or 'warn'"),
    (dict(verbose=4), "verbose must be 0, 1, 2 or 3"),
    (dict(checkpoint_every=0), "checkpoint_every must be a positive integer"),
])
def test_bad_fit_arguments(net, kwargs, match):
    kwargs.setdefault("epochs", 1)
    with pytest.raises((ValueError, TypeError), match=match):
        net.fit(X2, Y1, **kwargs)


def test_non_number_learning_rate(net):
    with pytest.raises(TypeError, match="learning_rate must be a number, got 'fast'"):
        net.fit(X2, Y1, epochs=1, learning_rate="fast")


@pytest.mark.parametrize("make, match", [
    (lambda: nn_xp.SGD(-1.0), "learning_rate must be a positive number"),
    (lambda: nn_xp.SGD(0.1, momentum=1.0), "momentum must be in \\[0, 1\\)"),
    (lambda: nn_xp.SGD(0.1, momentum=-0.5), "momentum must be a non-negative number"),
    (lambda: nn_xp.SGD(0.1, nesterov=True), "nesterov=True needs a momentum > 0"),
    (lambda: nn_xp.Adam(beta_1=1.0), "beta_1 must be in \\[0, 1\\)"),
    (lambda: nn_xp.Adam(epsilon=0.0), "epsilon must be a positive number"),
    (lambda: nn_xp.AdamW(weight_decay=-1.0), "weight_decay must be a non-negative number"),
    (lambda: nn_xp.EarlyStopping(patience=-1), "patience must be a non-negative integer"),
    (lambda: nn_xp.EarlyStopping(mode="up"), "mode must be 'auto', 'min' or 'max'"),
    (lambda: nn_xp.StepDecay(0.1, every=0), "every must be a positive integer"),
])
def test_bad_optimizer_and_callback_arguments(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_learning_rate_with_an_optimizer_object(net):
    with pytest.raises(ValueError, match="give learning_rate to the optimizer object"):
        net.fit(X2, Y1, epochs=1, optimizer=nn_xp.SGD(0.1), learning_rate=0.2)


def test_a_callback_must_be_callable(net):
    with pytest.raises(TypeError, match="a callback must be callable"):
        net.fit(X2, Y1, epochs=1, callbacks=[42])


def test_validation_data_must_be_a_pair(net):
    with pytest.raises(ValueError, match="validation_data must be a pair"):
        net.fit(X2, Y1, epochs=1, validation_data=X2)
    with pytest.raises(ValueError, match="validation X has 3 columns"):
        net.fit(X2, Y1, epochs=1, validation_data=(np.ones((2, 3)), np.ones((2, 1))))


# ---------------------------------------------------------------- weights
def test_set_weights_is_all_or_nothing(net):
    before = net.get_weights()
    bad = [(np.zeros((4, 2)), np.zeros(4)), (np.zeros((1, 5)), np.zeros(1))]  # second W is wrong
    with pytest.raises(ValueError, match=r"weights for W1 must have shape \(1, 4\), got \(1, 5\)"):
        net.set_weights(bad)
    for (W, b), (Wb, bb) in zip(net.get_weights(), before):  # nothing was replaced
        np.testing.assert_array_equal(W, Wb)
        np.testing.assert_array_equal(b, bb)


@pytest.mark.parametrize("weights, kind, match", [
    ([(np.zeros((4, 2)), np.zeros(4))], ValueError, "expects 2 \\(W, b\\) pairs, got 1"),
    ([(np.zeros((4, 2)), np.zeros(4)), np.zeros(3)], ValueError, "weights\\[1\\] must be a \\(W, b\\) pair"),
    ([(np.zeros((4, 2)), np.zeros(3)), (np.zeros((1, 4)), np.zeros(1))], ValueError,
     "b0 must have shape \\(4,\\)"),
    ([(np.zeros((4, 2)) * 1j, np.zeros(4)), (np.zeros((1, 4)), np.zeros(1))], TypeError, "W0 must be real"),
    ([(np.full((4, 2), np.nan), np.zeros(4)), (np.zeros((1, 4)), np.zeros(1))], ValueError, "W0 contain NaN"),
])
def test_bad_weights(net, weights, kind, match):
    with pytest.raises(kind, match=match):
        net.set_weights(weights)


# -------------------------------------------------------- numerical safety
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("head", [("sigmoid", "binary_cross_entropy"), ("softmax", "cross_entropy"),
                                  ("sigmoid", "mse"), ("tanh", "mse")])
def test_extreme_logits_stay_finite_and_silent(backend, dtype, head):
    """Pre-activations of +-1e4 in every unit: outputs, losses and gradients finite, no warnings."""
    act, loss = head
    net = make_net(backend, [1, 3], [act], loss=loss, dtype=dtype)
    net.set_weights([(np.array([[1.0], [-1.0], [0.5]]), np.zeros(3))])
    X = np.array([[1e4], [-1e4], [0.0], [2e4]])
    Y = np.eye(3)[[1, 0, 2, 2]] if loss == "cross_entropy" else np.array([[1, 0, 1]] * 4, dtype=float)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = net.predict(X)
        value = net.loss(X, Y)
        values = net.evaluate(backend.asarray(X, dtype=net.dtype))
        dWs, dbs = net.compute_gradient(values, backend.asarray(Y, dtype=net.dtype))
    assert np.all(np.isfinite(out)) and math.isfinite(value)
    assert all(np.all(np.isfinite(nn_xp.to_numpy(g))) for g in dWs + dbs)
    if loss != "mse":
        assert value > 1e3  # confidently wrong on some samples: a large, finite loss


# -------------------------------------------------------------- divergence
def test_divergence_raises_and_restores_finite_weights(backend):
    net = make_net(backend, [1, 16, 1], ["relu", "identity"], seed=1)
    seen = []
    with pytest.raises(FloatingPointError, match="non-finite.*smaller learning rate"):
        net.fit(SINE_X * 100, SINE_Y * 100, epochs=200, learning_rate=5.0,
                callbacks=lambda e, logs: seen.append((e, logs["loss"], net.get_weights())))
    weights = net.get_weights()
    assert all(np.all(np.isfinite(W)) and np.all(np.isfinite(b)) for W, b in weights)
    last_epoch, last_loss, _ = seen[-1]
    assert math.isfinite(last_loss)
    # restored to the weights at the start of the last epoch with a finite loss; the history stops there too
    assert net.loss(SINE_X * 100, SINE_Y * 100) == pytest.approx(last_loss, rel=1e-9)
    assert net.history.epoch == list(range(last_epoch))


def test_divergence_can_warn_instead(backend):
    net = make_net(backend, [1, 16, 1], ["relu", "identity"], seed=1)
    with pytest.warns(RuntimeWarning, match="non-finite"):
        history = net.fit(SINE_X * 100, SINE_Y * 100, epochs=200, learning_rate=5.0, on_nonfinite="warn")
    assert len(history) < 200
    assert all(np.all(np.isfinite(W)) for W, _ in net.get_weights())
    assert math.isfinite(net.loss(SINE_X * 100, SINE_Y * 100))


def test_divergence_in_the_very_last_update_is_caught():
    """The last update's loss is never measured by the loop: fit checks the weights at the end."""
    net = nn_xp.Network([1, 1], ["identity"], backend="numpy", dtype="float64")
    net.set_weights([(np.array([[1e150]]), np.array([0.0]))])  # a finite start loss, 5e299
    X, Y = np.array([[1.0]]), np.array([[0.0]])
    with pytest.raises(FloatingPointError,
                       match="in the last update.*rolled back to the weights this fit started"):
        net.fit(X, Y, epochs=1, learning_rate=1e200)  # the one update overflows to -inf
    np.testing.assert_array_equal(net.get_weights()[0][0], [[1e150]])
    assert net.history["loss"] == [] and net.history.epoch == []  # epoch 0 was undone


def test_a_callback_stopping_after_an_overflowing_update_still_restores(tmp_path):
    net = nn_xp.Network([1, 1], ["identity"], backend="numpy", dtype="float64")
    net.set_weights([(np.array([[1e150]]), np.array([0.0]))])
    path = tmp_path / "ck.safetensors"

    def stop(epoch, logs):
        raise nn_xp.StopTraining

    with pytest.raises(FloatingPointError):
        net.fit([[1.0]], [[0.0]], epochs=5, learning_rate=1e200, callbacks=stop, checkpoint=path)
    np.testing.assert_array_equal(net.get_weights()[0][0], [[1e150]])
    # the overflowed weights were never checkpointed (issue 14): no epoch had finite weights, so no file
    assert not path.exists()


def test_divergence_mends_a_checkpoint_it_had_written(tmp_path):
    path = tmp_path / "ck.safetensors"
    net = nn_xp.Network([1, 16, 1], ["relu", "identity"], backend="numpy", dtype="float64", seed=1)
    with pytest.raises(FloatingPointError):
        net.fit(SINE_X * 100, SINE_Y * 100, epochs=200, learning_rate=5.0, checkpoint=path)
    saved = nn_xp.load(path)
    assert math.isfinite(saved.loss(SINE_X * 100, SINE_Y * 100))
    for (W, b), (Ws, bs) in zip(net.get_weights(), saved.get_weights()):
        np.testing.assert_array_equal(W, Ws)
        np.testing.assert_array_equal(b, bs)
    epoch, history = nn_xp.load_checkpoint(path, nn_xp.Network([1, 16, 1], ["relu", "identity"],
                                                                  backend="numpy", dtype="float64"), None)
    assert len(history) == epoch  # the history in the file stops where its weights do


def test_early_stopping_on_the_training_loss_restores_the_weights_it_measured():
    """Full batch: loss[k] is the loss at the start of epoch k, so those are the weights to restore."""
    net = nn_xp.Network([1, 8, 1], "tanh", backend="numpy", dtype="float64", seed=0)
    stopper = nn_xp.EarlyStopping(monitor="loss", patience=2)
    history = net.fit(SINE_X, SINE_Y, epochs=300, learning_rate=3.0, callbacks=stopper, on_nonfinite="warn")
    best = min(history["loss"])
    assert stopper.best == best
    assert net.loss(SINE_X, SINE_Y) == pytest.approx(best, rel=1e-12)


def test_a_learning_rate_alone_keeps_the_optimizer():
    net = nn_xp.Network([1, 4, 1], backend="numpy")
    net.fit(SINE_X, SINE_Y, epochs=2, optimizer="adam")
    adam = net.optimizer
    net.fit(SINE_X, SINE_Y, epochs=2, learning_rate=1e-4)
    assert net.optimizer is adam and adam.learning_rate == 1e-4 and adam.iterations == 4


def test_numpy_integers_are_layer_sizes():
    net = nn_xp.Network(np.array([2, 8, 1]), backend="numpy")
    assert net.layer_sizes == [2, 8, 1] and all(type(n) is int for n in net.layer_sizes)


def test_mini_batch_divergence(backend):
    net = make_net(backend, [1, 16, 1], ["relu", "identity"], seed=1)
    with pytest.raises(FloatingPointError):
        net.fit(SINE_X * 100, SINE_Y * 100, epochs=100, batch_size=10, learning_rate=5.0)
    assert all(np.all(np.isfinite(W)) for W, _ in net.get_weights())
