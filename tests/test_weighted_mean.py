"""fit(weighted_mean=True) (issue 15): each batch's loss and gradient divided by its sum of sample weights,
scikit-learn's convention, on every backend and engine, full batch and mini-batch, and data-parallel.

scikit-learn itself is the reference in tests/test_sklearn_weights.py (NumPy); here the other backends and
engines follow NumPy's fit, integer weights train as repeated rows in full batch whatever the rows given,
a data-parallel fit equals one process's, and a fit without the option never runs its code.
"""
from __future__ import annotations

import numpy as np
import pytest
from test_weights_metrics import (
    ENGINES,
    HEADS,
    _data,
    _net,
    _rel,
    _same,
    _weights,
    assert_ranks_train_as_one_process,
)

from nn_xp.backends import resolve_backend, to_numpy


def _uneven(n, seed=2):
    return np.random.default_rng(seed).uniform(0.1, 4.0, size=n)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("loss", list(HEADS))
def test_integer_weights_train_as_repeated_rows_in_full_batch_with_the_penalty(backend, engine, loss):
    """The weights sum to more rows than given (Keras' mean by the rows would differ), l2 included: it is
    divided by the weights' sum as scikit-learn divides alpha."""
    X, Y = _data(loss, m=12)
    w = np.array([2, 0, 1, 3, 0, 4, 0, 1, 2, 0, 1, 5])
    assert w.sum() != len(X)
    weighted, repeated = _net(backend, engine, loss), _net(backend, engine, loss)
    weighted.l2 = repeated.l2 = 0.3
    metrics = ["mae", "mse"] + (["accuracy"] if weighted.loss_fn.correct is not None else [])
    options = dict(epochs=5, learning_rate=0.1, metrics=metrics)
    weighted.fit(X, Y, sample_weight=w, weighted_mean=True, validation_data=(X, Y, w), **options)
    Xr, Yr = np.repeat(X, w, axis=0), np.repeat(Y, w, axis=0)
    repeated.fit(Xr, Yr, validation_data=(Xr, Yr), **options)
    assert _rel(_weights(weighted), _weights(repeated)) < 1e-12
    assert weighted.history.history.keys() == repeated.history.history.keys()
    for key, values in repeated.history.history.items():
        assert _rel(weighted.history[key], values) < 1e-12, key  # val_loss: the weighted mean too


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("loss", ["mse", "cross_entropy"])
def test_mini_batches_with_uneven_weights_follow_numpys_fit(backend, engine, loss):
    """The same steps as NumPy's (which scikit-learn's are: test_sklearn_weights.py), the last partial batch
    and the penalty included; and not the steps of the rows' mean."""
    X, Y = _data(loss, m=23)
    w = _uneven(len(X))
    reference = _net(resolve_backend("numpy"), "auto", loss)
    nets = [_net(backend, engine, loss) for _ in range(2)]
    options = dict(epochs=4, learning_rate=0.1, batch_size=5, shuffle=False, sample_weight=w,
                   validation_split=0.2)
    for net in (reference, *nets):
        net.l2 = 0.05
    reference.fit(X, Y, weighted_mean=True, **options)
    nets[0].fit(X, Y, weighted_mean=True, **options)
    nets[1].fit(X, Y, **options)
    assert _rel(_weights(nets[0]), _weights(reference)) < 1e-12
    for key, values in reference.history.history.items():
        assert _rel(nets[0].history[key], values) < 1e-12, key
    assert _rel(_weights(nets[1]), _weights(reference)) > 1e-6  # the option changed the training


def _mse_by_hand(net, X, Y, w, l2):
    """scikit-learn's weighted objective for the ``mse`` loss (summed over the outputs, as nn_xp's):
    ``(sum_i w_i 0.5 ||a_i - y_i||^2 + 0.5 l2 ||W||^2) / sum_i w_i``."""
    p = to_numpy(net.predict(X))
    data = 0.5 * np.sum(w[:, None] * (p - Y) ** 2)
    return (data + 0.5 * l2 * sum(np.sum(W * W) for W, _ in net.get_weights())) / np.sum(w)


@pytest.mark.parametrize("engine", ENGINES)
def test_the_full_batch_loss_is_the_weighted_mean_and_val_loss_too(backend, engine):
    X, Y = _data("mse")
    w, wv = _uneven(len(X)), _uneven(6, seed=4)
    Xv, Yv = X[:6] + 0.5, Y[:6]
    net = _net(backend, engine)
    net.l2 = 0.2
    start = net.get_weights()
    net.fit(X, Y, epochs=3, learning_rate=0.05, sample_weight=w, weighted_mean=True,
            validation_data=(Xv, Yv, wv))
    first = _net(backend, engine)  # the start, to measure the first epoch's loss (taken before its step)
    first.set_weights(start)
    first.l2 = 0.2
    assert net.history["loss"][0] == pytest.approx(_mse_by_hand(first, X, Y, w, 0.2), rel=1e-12)
    assert net.history["val_loss"][-1] == pytest.approx(_mse_by_hand(net, Xv, Yv, wv, 0.0), rel=1e-12)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("batch_size", [None, 5])
@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_constant_weights_of_two_train_bit_for_bit_as_no_weights(backend, engine, batch_size, dropout):
    """``sum_i 2 l_i / sum_i 2`` is the rows' mean in every bit (doubling is exact), with dropout's masks
    too (each step's masks reach the step); without a penalty, which scikit-learn divides by the weights'
    sum."""
    X, y = _data("cross_entropy")
    plain, weighted = _net(backend, engine, "cross_entropy"), _net(backend, engine, "cross_entropy")
    for net in (plain, weighted):
        net.dropout = dropout
    options = dict(epochs=3, learning_rate=0.1, batch_size=batch_size, validation_split=0.25)
    plain.fit(X, y, sample_weight=np.ones(len(X)), **options)
    weighted.fit(X, y, sample_weight=np.full(len(X), 2.0), weighted_mean=True, **options)
    if plain.engine.name != "compiled":
        _same(plain, weighted)
        return
    # XLA divides by the constant row count as a product with its reciprocal, and by the traced weights' sum
    # as a division: an ulp apart per step
    assert _rel(_weights(plain), _weights(weighted)) < 1e-13
    for key, values in plain.history.history.items():
        assert _rel(weighted.history[key], values) < 1e-13, key


@pytest.mark.parametrize("engine", ENGINES)
def test_a_batch_whose_weights_are_all_zero_adds_nothing(backend, engine):
    """Its loss and gradient are 0 (scikit-learn's would divide by zero): plain SGD's weights are those of
    the other batch alone, and the epoch's loss (the batches' losses weighted by their rows, as scikit-learn's
    loss_curve_) half that batch's."""
    X, Y = _data("mse", m=10)
    w = np.r_[np.zeros(5), _uneven(5)]
    both, alone = _net(backend, engine), _net(backend, engine)
    both.fit(X, Y, epochs=1, learning_rate=0.1, batch_size=5, shuffle=False, sample_weight=w,
             weighted_mean=True)
    alone.fit(X[5:], Y[5:], epochs=1, learning_rate=0.1, sample_weight=w[5:], weighted_mean=True)
    assert _rel(_weights(both), _weights(alone)) < 1e-15
    assert both.history["loss"][0] == pytest.approx(alone.history["loss"][0] * 0.5, rel=1e-15)


def test_class_weight_alone_is_a_weighted_mean_too(backend):
    X, y = _data("cross_entropy", m=12)
    weighted, repeated = _net(backend, "auto", "cross_entropy"), _net(backend, "auto", "cross_entropy")
    weighted.fit(X, y, epochs=3, learning_rate=0.1, class_weight={0: 3}, weighted_mean=True)
    k = np.where(y == 0, 3, 1)
    repeated.fit(np.repeat(X, k, axis=0), np.repeat(y, k), epochs=3, learning_rate=0.1)
    assert _rel(_weights(weighted), _weights(repeated)) < 1e-12


# ------------------------------------------------------------------ data-parallel
@pytest.mark.parametrize("engine", ["auto", "portable"])
@pytest.mark.parametrize("size", [2, 3])
@pytest.mark.parametrize("batch_size", [None, 7])
def test_data_parallel_divides_by_the_global_batchs_weights(engine, size, batch_size):
    """Every rank divides by the whole batch's sum of weights (not its shard's): one process's fit."""

    backend = resolve_backend("numpy")
    X, y = _data("cross_entropy", m=31)
    w = _uneven(31)
    rng = np.random.default_rng(3)
    Xv, yv, wv = rng.normal(size=(8, 3)), np.arange(8) % 3, _uneven(8, seed=5)

    def train(comm):
        net = _net(backend, engine, "cross_entropy")
        net.l2 = 0.1
        net.fit(X, y, epochs=4, batch_size=batch_size, learning_rate=0.3, sample_weight=w, weighted_mean=True,
                metrics=["accuracy", "mae"], validation_data=(Xv, yv, wv), comm=comm)
        return _weights(net), net.history.history

    assert_ranks_train_as_one_process(train, size)


# ------------------------------------------------------------------ without it, and errors
def test_a_fit_without_the_option_never_runs_its_code(backend, monkeypatch):
    from nn_xp.metrics import Scoring

    def refuse(*args, **kwargs):
        raise AssertionError("a fit without weighted_mean ran its code")

    monkeypatch.setattr(Scoring, "denominator", refuse)
    X, y = _data("cross_entropy")
    for batch_size in (None, 5):
        net = _net(backend, "auto", "cross_entropy")
        net.fit(X, y, epochs=2, batch_size=batch_size, sample_weight=_uneven(len(X)), validation_split=0.2)
        net.fit(X, y, epochs=2, batch_size=batch_size, weighted_mean=False)


@pytest.mark.parametrize("kwargs, error, match", [
    ({"weighted_mean": True}, ValueError, "weighted_mean=True divides each batch's loss by its sum of sample "
                                          "weights, and this fit has none: pass sample_weight"),
    ({"weighted_mean": True, "validation_data": (np.ones((3, 3)), np.ones((3, 2)), np.ones(3))}, ValueError,
     "this fit has none"),
    ({"weighted_mean": 1, "sample_weight": np.ones(24)}, TypeError, "weighted_mean must be True or False"),
    ({"weighted_mean": "yes"}, TypeError, "weighted_mean must be True or False, got 'yes'"),
])
def test_bad_weighted_mean_is_refused_naming_it(backend, kwargs, error, match):
    X, Y = _data("mse")
    net = _net(backend, "auto")
    before = _weights(net)
    with pytest.raises(error, match=match):
        net.fit(X, Y, epochs=1, **kwargs)
    assert _weights(net).tobytes() == before.tobytes()

