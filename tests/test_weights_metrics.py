"""fit(sample_weight=, class_weight=, metrics=) (issue 16, items 1 and 6), on every backend and engine.

Weights of 1 train bit for bit as no weights; integer weights train as repeated rows (full batch, the same
number of rows on both sides, so the mean's denominator is the same); rows of weight 0 change nothing;
``class_weight="balanced"`` is scikit-learn's formula; the metrics equal NumPy formulas on the host from
the predictions (``r2`` exactly over mini-batches too); data-parallel fits equal one process's; bad
input is refused naming the argument.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
from helpers import in_threads, make_net
from hypothesis import given
from hypothesis import strategies as st
from test_properties import SETTINGS, problems

import nn_xp
from nn_xp.backends import to_numpy

ENGINES = ["auto", "portable", "workspace"]
HEADS = {  # loss -> (output activation, outputs)
    "mse": ("identity", 2), "cross_entropy": ("softmax", 3), "binary_cross_entropy": ("sigmoid", 1),
    "poisson": ("exp", 2),
}


def _net(backend, engine, loss="mse", sizes=None, seed=0):
    """A float64 network on the backend under test and the engine asked for ("workspace": the buffered
    engine with its per-layer buffers even for this small network)."""
    out, n_out = HEADS[loss]
    sizes = sizes or [3, 6, n_out]
    pinned = None if engine in ("auto", "workspace") else engine
    if engine == "portable" and backend.name not in ("numpy", "jax"):
        pytest.skip("the auto engine is the portable one here")
    net = make_net(backend, sizes, ["tanh", out], loss=loss, seed=seed, engine=pinned)
    if engine == "workspace":
        if net.engine.name != "buffered":
            pytest.skip("no buffered engine on this backend")
        net.engine.workspace_min_elements = 0
    return net


def _data(loss, m=24, n_in=3, seed=1):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(m, n_in))
    n_out = HEADS[loss][1]
    if loss == "cross_entropy":
        return X, (np.arange(m) * 7 + (X[:, 0] > 0)) % n_out  # class ids, every class present
    if loss == "binary_cross_entropy":
        return X, (X[:, 0] + 0.3 * X[:, 1] > 0).astype(float)
    if loss == "poisson":
        return X, rng.poisson(1.5, size=(m, n_out)).astype(float)
    return X, np.sin(X @ rng.normal(size=(n_in, n_out)))


def _weights(net):
    return np.concatenate([a.ravel() for pair in net.get_weights() for a in pair])


def _same(a, b, ulps=0):
    """Two fits, bit for bit: weights and every history column (these within ``ulps``)."""
    assert _weights(a).tobytes() == _weights(b).tobytes()
    assert a.history.history.keys() == b.history.history.keys()
    for key, values in a.history.history.items():
        if ulps:
            np.testing.assert_array_max_ulp(np.array(values), np.array(b.history.history[key]), ulps)
        else:
            assert np.array(values).tobytes() == np.array(b.history.history[key]).tobytes(), key


def _rel(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


# ------------------------------------------------------------------ weights
@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("batch_size", [None, 5])
@pytest.mark.parametrize("loss", list(HEADS))
def test_weights_of_one_train_bit_for_bit_as_no_weights(backend, engine, batch_size, loss):
    X, Y = _data(loss)
    plain, weighted = _net(backend, engine, loss), _net(backend, engine, loss)
    options = dict(epochs=4, learning_rate=0.05, batch_size=batch_size, validation_split=0.25)
    plain.fit(X, Y, **options)
    weighted.fit(X, Y, sample_weight=np.ones(len(X)), **options)
    # compiled, XLA divides a count by the constant row count as a product with its reciprocal (off by an
    # ulp), and by the weights' sum as a division: the weights are the same bits, an accuracy may differ by 1
    _same(plain, weighted, ulps=1 if plain.engine.name == "compiled" else 0)
    assert set(plain.history.history) == {f"{p}{k}" for p in ("", "val_") for k in plain.metric_names}


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("loss", list(HEADS))
def test_integer_weights_train_as_repeated_rows_in_full_batch(backend, engine, loss):
    X, Y = _data(loss, m=12)
    w = np.array([2, 0, 1, 3, 0, 1, 0, 1, 2, 0, 1, 1])  # sums to 12 rows: the same denominator
    assert w.sum() == len(X)
    weighted, repeated = _net(backend, engine, loss), _net(backend, engine, loss)
    metrics = ["mae", "mse", "rmse", "r2"] + (["accuracy"] if weighted.loss_fn.correct is not None else [])
    weighted.fit(X, Y, epochs=5, learning_rate=0.1, sample_weight=w, metrics=metrics)
    repeated.fit(np.repeat(X, w, axis=0), np.repeat(Y, w, axis=0), epochs=5, learning_rate=0.1,
                 metrics=metrics)
    assert _rel(_weights(weighted), _weights(repeated)) < 1e-12
    for key, values in repeated.history.history.items():
        assert _rel(weighted.history[key], values) < 1e-12, key


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("batch_size", [None, 4])
def test_rows_of_weight_zero_change_nothing(backend, engine, batch_size):
    X, Y = _data("cross_entropy")
    w = np.where(np.arange(len(X)) % 3 == 0, 0.0, np.linspace(0.5, 2.0, len(X)))
    X2, Y2 = X.copy(), Y.copy()
    X2[w == 0] = 40.0 * np.random.default_rng(5).normal(size=X2[w == 0].shape)  # other rows there
    Y2[w == 0] = (Y2[w == 0] + 1) % 3
    a, b = _net(backend, engine, "cross_entropy"), _net(backend, engine, "cross_entropy")
    options = dict(epochs=4, learning_rate=0.2, batch_size=batch_size, sample_weight=w,
                   metrics=["accuracy", "mae", "mse", "r2"])
    a.fit(X, Y, **options)
    b.fit(X2, Y2, **options)
    _same(a, b)


def test_sample_weight_may_be_an_array_of_the_models_backend(backend):
    X, y = _data("cross_entropy")
    w = np.linspace(0.5, 2.0, len(X))
    a, b = _net(backend, "auto", "cross_entropy"), _net(backend, "auto", "cross_entropy")
    a.fit(X, y, epochs=2, batch_size=5, sample_weight=w)
    b.fit(X, y, epochs=2, batch_size=5, sample_weight=backend.asarray(w))
    _same(a, b)


def test_a_resumed_fit_continues_the_metrics_columns(backend, tmp_path):
    X, Y = _data("mse")
    path = tmp_path / "run.ckpt"
    options = dict(learning_rate=0.05, batch_size=6, sample_weight=np.linspace(1, 2, len(X)), metrics=["r2"])
    whole = _net(backend, "auto", "mse")
    whole.fit(X, Y, epochs=4, **options)
    first = _net(backend, "auto", "mse")
    first.fit(X, Y, epochs=2, checkpoint=path, **options)
    resumed = _net(backend, "auto", "mse")
    resumed.fit(X, Y, epochs=4, resume_from=path, **options)
    assert resumed.history.history.keys() == whole.history.history.keys()
    for key, values in whole.history.history.items():
        assert _rel(resumed.history[key], values) < 1e-12, key


def test_a_zero_weight_rows_gradient_is_zero_through_value_and_gradient(backend):
    X, Y = _data("mse", m=6)
    net = _net(backend, "auto", "mse")
    Xd, Yd = backend.asarray(X, dtype=net.dtype), backend.asarray(Y, dtype=net.dtype)
    w = backend.asarray(np.array([[1.0], [0.0], [2.0], [0.0], [1.0], [0.5]]), dtype=net.dtype)
    keep = np.array([0, 2, 4, 5])
    loss, grads = net.value_and_gradient(net.evaluate(Xd), Yd, w=w)
    sub_w = backend.asarray(np.array([[1.0], [2.0], [1.0], [0.5]]), dtype=net.dtype)
    Xs, Ys = backend.asarray(X[keep], dtype=net.dtype), backend.asarray(Y[keep], dtype=net.dtype)
    sub_loss, sub_grads = net.value_and_gradient(net.evaluate(Xs), Ys, w=sub_w, m=6)  # the same denominator
    assert float(loss) == pytest.approx(float(sub_loss), rel=1e-13)
    for g, h in zip(grads, sub_grads):
        np.testing.assert_allclose(to_numpy(g), to_numpy(h), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("targets", ["ids", "one-hot"])
def test_class_weight_balanced_is_scikit_learns_formula(backend, engine, targets):
    compute_class_weight = pytest.importorskip("sklearn.utils.class_weight").compute_class_weight

    X, y = _data("cross_entropy", m=23)
    y = np.where(np.arange(23) < 14, 0, y)  # unbalanced: class 0 dominates
    expected = compute_class_weight("balanced", classes=np.unique(y), y=y)[y]
    Y = y if targets == "ids" else np.eye(3)[y]
    a, b = _net(backend, engine, "cross_entropy"), _net(backend, engine, "cross_entropy")
    a.fit(X, Y, epochs=3, batch_size=6, class_weight="balanced")
    b.fit(X, Y, epochs=3, batch_size=6, sample_weight=expected)
    _same(a, b)


@pytest.mark.parametrize("engine", ENGINES)
def test_class_weight_dict_multiplies_sample_weight_and_binary_classes_are_the_targets(backend, engine):
    X, y = _data("binary_cross_entropy")
    s = np.linspace(0.5, 1.5, len(X))
    cw = {1: 3.0}  # class 0 missing: weight 1
    a, b = _net(backend, engine, "binary_cross_entropy"), _net(backend, engine, "binary_cross_entropy")
    a.fit(X, y, epochs=3, class_weight=cw, sample_weight=s, validation_split=0.25)
    n_train = int(len(X) * 0.75)
    expected = s[:n_train] * np.where(y[:n_train] == 1, 3.0, 1.0)
    b.fit(X[:n_train], y[:n_train], epochs=3, sample_weight=expected,
          validation_data=(X[n_train:], y[n_train:], s[n_train:]))  # validation rows: sample_weight alone
    _same(a, b)


def test_balanced_counts_only_the_training_rows_and_the_classes_present(backend):
    X, y = _data("cross_entropy", m=20)
    y = np.where(np.arange(20) < 16, np.arange(20) % 2, 2)  # class 2 only in the held-out rows
    n_train = 16
    counts = np.bincount(y[:n_train], minlength=3)
    expected = (n_train / (2 * counts[y[:n_train]]))  # two classes present in training
    a, b = _net(backend, "auto", "cross_entropy"), _net(backend, "auto", "cross_entropy")
    a.fit(X, y, epochs=2, class_weight="balanced", validation_split=0.2)
    b.fit(X[:n_train], y[:n_train], epochs=2, sample_weight=expected,
          validation_data=(X[n_train:], y[n_train:]))
    _same(a, b)


# ------------------------------------------------------------------ metrics
def _host_metrics(p, Y, w):
    """NumPy formulas: weighted means over the rows of the mean over the outputs; scikit-learn's r2."""
    w = np.ones(len(Y)) if w is None else w
    err = p - Y
    mse = np.sum(w[:, None] * err ** 2) / Y.shape[1] / w.sum()
    ss_res = np.sum(w[:, None] * err ** 2, axis=0)
    mean = np.sum(w[:, None] * Y, axis=0) / w.sum()
    ss_tot = np.sum(w[:, None] * (Y - mean) ** 2, axis=0)
    mae = np.sum(w[:, None] * np.abs(err)) / Y.shape[1] / w.sum()
    return {"mae": mae, "mse": mse, "rmse": math.sqrt(mse), "r2": float(np.mean(1 - ss_res / ss_tot))}


def mean_abs(a, y, xp):
    """A user's metric: the batch's mean absolute error, unweighted."""
    return xp.mean(xp.abs(a - y))


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("weighted", [False, True])
def test_full_batch_metrics_are_numpy_formulas_of_the_predictions(backend, engine, weighted):
    X, Y = _data("mse", m=30)
    Xv, Yv = X[20:], Y[20:]
    X, Y = X[:20], Y[:20]
    w = np.linspace(0.2, 3.0, 20) if weighted else None
    wv = np.linspace(1.0, 0.1, 10) if weighted else None
    net = _net(backend, engine, "mse")
    before = net.predict(X)
    metrics = ["mae", "mse", "rmse", "r2", mean_abs]
    history = net.fit(X, Y, epochs=1, learning_rate=0.1, sample_weight=w, metrics=metrics,
                      validation_data=(Xv, Yv) if wv is None else (Xv, Yv, wv))
    assert list(history.history) == ["loss", "mae", "mse", "rmse", "r2", "mean_abs", "val_loss", "val_mae",
                                      "val_mse", "val_rmse", "val_r2", "val_mean_abs"]
    for (key, want), (vkey, vwant) in zip(_host_metrics(before, Y, w).items(),
                                          _host_metrics(net.predict(Xv), Yv, wv).items()):
        assert history[key][0] == pytest.approx(want, rel=1e-12), key  # full batch: the epoch's start
        assert history[f"val_{vkey}"][0] == pytest.approx(vwant, rel=1e-12), vkey  # after the epoch
    assert history["mean_abs"][0] == pytest.approx(np.mean(np.abs(before - Y)), rel=1e-12)  # unweighted
    ww = np.ones(20) if w is None else w
    loss = np.sum(ww * 0.5 * np.sum((before - Y) ** 2, axis=1)) / 20  # sum_i w_i l_i / rows
    assert history["loss"][0] == pytest.approx(loss, rel=1e-12)


@pytest.mark.parametrize("engine", ENGINES)
def test_mini_batch_metrics_are_the_whole_datas_exactly_r2_included(backend, engine):
    X, Y = _data("mse", m=29)
    w = np.linspace(0.2, 3.0, 29)
    net = _net(backend, engine, "mse")
    p = net.predict(X)
    # a rate so small that no weight moves: every batch sees the same network, so the epoch's metrics are
    # the whole data's, from sums over 6 shuffled batches (an average of per-batch r2 would not be)
    history = net.fit(X, Y, epochs=2, batch_size=5, learning_rate=1e-300, sample_weight=w,
                      metrics=["mae", "mse", "rmse", "r2"])
    np.testing.assert_array_equal(net.predict(X), p)
    for key, want in _host_metrics(p, Y, w).items():
        assert history[key] == pytest.approx([want] * 2, rel=1e-12), key
    # a callable's batch values, weighted by the batches' rows: the mean over every row
    history = net.fit(X, Y, epochs=2, batch_size=5, learning_rate=1e-300, metrics=[mean_abs])
    assert history["mean_abs"] == pytest.approx([np.mean(np.abs(p - Y))] * 2, rel=1e-12)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("loss", ["cross_entropy", "binary_cross_entropy"])
def test_weighted_accuracy_is_the_weighted_share_of_right_answers(backend, engine, loss):
    X, y = _data(loss)
    w = np.linspace(0.1, 2.0, len(X))
    net = _net(backend, engine, loss)
    labels = net.predict_classes(X)
    history = net.fit(X, y, epochs=1, sample_weight=w)
    assert list(history.history) == ["loss", "accuracy"]  # metrics=None: today's keys, weighted
    assert history["accuracy"][0] == pytest.approx(np.sum(w * (labels == y)) / w.sum(), rel=1e-12)


def test_default_keys_are_todays_and_an_empty_list_records_the_loss_alone(backend):
    X, Y = _data("mse")
    net = _net(backend, "auto", "mse")
    assert list(net.fit(X, Y, epochs=1).history) == ["loss"]
    assert list(net.fit(X, Y, epochs=1, sample_weight=np.ones(len(X))).history) == ["loss"]
    Xc, y = _data("cross_entropy")
    clf = _net(backend, "auto", "cross_entropy")
    assert list(clf.fit(Xc, y, epochs=1, validation_split=0.2).history) == ["loss", "accuracy", "val_loss",
                                                                            "val_accuracy"]
    assert list(clf.fit(Xc, y, epochs=1, metrics=[]).history) == ["loss"]
    assert list(clf.fit(Xc, y, epochs=1, metrics="mse").history) == ["loss", "mse"]


def test_metrics_reach_progress_callbacks_and_early_stopping(backend, capsys):
    X, Y = _data("mse")
    seen = []
    stop = nn_xp.EarlyStopping(monitor="val_r2", patience=2)
    assert stop.maximize  # auto: r2 is better higher
    net = _net(backend, "auto", "mse")
    history = net.fit(X, Y, epochs=3, learning_rate=0.05, metrics=["r2"], validation_split=0.25, verbose=2,
                      callbacks=[stop, lambda epoch, logs: seen.append(dict(logs))])
    assert [s["val_r2"] for s in seen] == history["val_r2"]
    assert "val_r2=" in capsys.readouterr().err


def test_the_weighted_validation_metric_drives_early_stopping(backend):
    X, Y = _data("mse", m=30)
    stop = nn_xp.EarlyStopping(monitor="val_mae", patience=1)
    net = _net(backend, "auto", "mse")
    wv = np.zeros(10)
    wv[0] = 1.0  # one held-out row counts
    history = net.fit(X[:20], Y[:20], epochs=30, learning_rate=0.5, metrics=["mae"], callbacks=[stop],
                      validation_data=(X[20:], Y[20:], wv))
    p = net.predict(X[20:21])
    assert stop.best == pytest.approx(np.mean(np.abs(p - Y[20:21])), rel=1e-12)  # restored: the best epoch's
    assert min(history["val_mae"]) == stop.best


def test_a_fit_without_the_options_never_runs_their_code(backend, monkeypatch):
    from nn_xp.metrics import Scoring

    def refuse(*args, **kwargs):
        raise AssertionError("a plain fit ran the weighted or metrics code")

    monkeypatch.setattr(Scoring, "update", refuse)
    monkeypatch.setattr(Scoring, "__init__", refuse)
    X, y = _data("cross_entropy")
    for batch_size in (None, 5):
        net = _net(backend, "auto", "cross_entropy")
        net.fit(X, y, epochs=2, batch_size=batch_size, validation_split=0.2)


# ------------------------------------------------------------------ data-parallel
@pytest.mark.parametrize("engine", ["auto", "portable"])
@pytest.mark.parametrize("size", [2, 3])
def test_data_parallel_weighted_metrics_equal_one_processs(engine, size):

    from nn_xp.backends import resolve_backend

    backend = resolve_backend("numpy")
    X, y = _data("cross_entropy", m=31)
    w = np.linspace(0.1, 2.0, 31)
    wv = np.linspace(1.0, 3.0, 8)
    rng = np.random.default_rng(3)
    Xv, yv = rng.normal(size=(8, 3)), np.arange(8) % 3

    def train(comm):
        net = _net(backend, engine, "cross_entropy")
        net.fit(X, y, epochs=4, batch_size=7, learning_rate=0.3, sample_weight=w, class_weight={2: 2.0},
                metrics=["accuracy", "mae", "mse"], validation_data=(Xv, yv, wv), comm=comm)
        return _weights(net), net.history.history

    assert_ranks_train_as_one_process(train, size)


@pytest.mark.parametrize("metric", ["rmse", "r2", mean_abs])
def test_data_parallel_refuses_metrics_whose_parts_do_not_add_up(metric):
    from test_distributed import in_threads

    X, Y = _data("mse")

    def train(comm):
        nn_xp.Network([3, 4, 2], backend="numpy", dtype="float64").fit(X, Y, epochs=1, metrics=[metric],
                                                                       comm=comm)

    _, errors = in_threads(2, train)
    assert all(isinstance(e, ValueError) and "do not add up" in str(e) for e in errors), errors


# ------------------------------------------------------------------ errors
@pytest.mark.parametrize("kwargs, error, match", [
    ({"sample_weight": np.ones((24, 2))}, ValueError, r"sample_weight must have shape \(n_samples,\)"),
    ({"sample_weight": np.ones(23)}, ValueError, "sample_weight has 23 weights for 24 samples"),
    ({"sample_weight": np.r_[np.ones(23), -1.0]}, ValueError, "sample_weight .* must be non-negative"),
    ({"sample_weight": np.r_[np.ones(23), np.nan]}, ValueError, "sample_weight contains NaN"),
    ({"sample_weight": np.zeros(24)}, ValueError, "sample_weight .* is all zero"),
    ({"sample_weight": np.r_[np.ones(18), np.zeros(6)], "validation_split": 0.25}, ValueError,
     "sample_weight of the validation rows is all zero"),
    ({"sample_weight": ["heavy"] * 24}, TypeError, "sample_weight must hold real numbers"),
    ({"validation_data": (np.ones((3, 3)), np.ones((3, 2)), np.ones(2))}, ValueError,
     "validation sample_weight has 2 weights for 3 samples"),
    ({"validation_data": (np.ones((3, 3)), np.ones((3, 2)), None, None)}, ValueError,
     r"validation_data must be a pair .* or a triple"),
    ({"class_weight": {0: 1.0}}, ValueError, "class_weight needs a classification loss"),
    ({"metrics": ["accuracy"]}, ValueError, "'accuracy' needs a classification loss"),
    ({"metrics": ["auc"]}, ValueError, "unknown metric 'auc' in metrics; valid names: accuracy, mae"),
    ({"metrics": ["mae", "mae"]}, ValueError, "metrics must have distinct names"),
    ({"metrics": [3]}, TypeError, "metrics must hold names or callables"),
    ({"metrics": 3}, TypeError, "metrics must be a name, a callable"),
    ({"metrics": [lambda a, y, xp: 1.0]}, TypeError, "metric '<lambda>' must return a 0-d array"),
])
def test_bad_weights_and_metrics_are_refused_naming_them(backend, kwargs, error, match):
    X, Y = _data("mse")
    net = _net(backend, "auto", "mse")
    before = _weights(net)
    with pytest.raises(error, match=match):
        net.fit(X, Y, epochs=1, **kwargs)
    assert _weights(net).tobytes() == before.tobytes()


@pytest.mark.parametrize("loss, Y, class_weight, match", [
    ("cross_entropy", None, {3: 1.0}, r"class_weight has a key 3, and the classes are 0..2"),
    ("cross_entropy", None, {True: 1.0}, "class_weight has a key True"),
    ("cross_entropy", None, {0: -1.0}, r"class_weight\[0\] must be a finite non-negative number"),
    ("cross_entropy", None, {0: math.inf}, r"class_weight\[0\] must be a finite non-negative"),
    ("cross_entropy", None, {0: 0.0, 1: 0.0, 2: 0.0}, r"class_weight \(of the training rows\) is all zero"),
    ("cross_entropy", None, "uniform", "class_weight must be a dict"),
    ("binary_cross_entropy", np.linspace(0, 1, 24), "balanced", "needs targets 0 or 1"),
])
def test_bad_class_weights_are_refused_naming_them(backend, loss, Y, class_weight, match):
    X, y = _data(loss)
    net = _net(backend, "auto", loss)
    with pytest.raises((ValueError, TypeError), match=match):
        net.fit(X, y if Y is None else Y, epochs=1, class_weight=class_weight)


def test_class_weight_with_several_binary_outputs_is_refused():
    X, _ = _data("mse")
    net = nn_xp.Network([3, 4, 2], loss="binary_cross_entropy", backend="numpy")
    with pytest.raises(ValueError, match="needs one output .* the network has 2 outputs"):
        net.fit(X, np.ones((24, 2)), epochs=1, class_weight="balanced")


def test_a_custom_loss_without_weights_is_refused_for_weighted_fits():
    plain = nn_xp.losses.LOSSES["mse"]
    loss = nn_xp.losses.Loss("mine", lambda z, a, y, xp, m=None: plain.value_and_delta(z, a, y, xp, m),
                             lambda z, a, y, xp: plain.value(z, a, y, xp), None)
    net = nn_xp.Network([3, 4, 2], "tanh", loss=loss, backend="numpy")
    X, Y = _data("mse")
    net.fit(X, Y, epochs=1, metrics=["mae"])  # metrics alone need nothing of the loss
    with pytest.raises(TypeError, match="the value_and_delta and value of loss 'mine' to take the weights"):
        net.fit(X, Y, epochs=1, sample_weight=np.ones(24))


def test_the_cuda_graph_engine_refuses_weights_and_metrics():
    from test_cuda_graph import _data as graph_data
    from test_cuda_graph import _pair

    _, net, capture = _pair()
    X, Y = graph_data()
    for kwargs in ({"sample_weight": np.ones(40)}, {"metrics": ["mae"]}):
        with pytest.raises(ValueError, match="engine='cuda_graph' replays one captured epoch"):
            net.fit(X, Y, epochs=2, **kwargs)
    assert capture.captures == 0


def test_measure_takes_weights_and_metrics(backend):
    X, Y = _data("mse")
    net = _net(backend, "auto", "mse")
    Xd, Yd = backend.asarray(X, dtype=net.dtype), backend.asarray(Y, dtype=net.dtype)
    w = np.linspace(0.5, 1.5, len(X))
    loss, r2 = net.measure(Xd, Yd, 7, sample_weight=backend.asarray(w[:, None], dtype=net.dtype),
                           metrics=["r2"])
    p = net.predict(X)
    assert float(loss) == pytest.approx(np.sum(w * 0.5 * np.sum((p - Y) ** 2, axis=1)) / len(X), rel=1e-12)
    assert float(r2) == pytest.approx(_host_metrics(p, Y, w)["r2"], rel=1e-12)
    r2_score = pytest.importorskip("sklearn.metrics").r2_score
    assert float(r2) == pytest.approx(r2_score(Y, p, sample_weight=w), rel=1e-12)


def test_r2_of_a_constant_output_follows_scikit_learn():
    r2_score = pytest.importorskip("sklearn.metrics").r2_score

    X, Y = _data("mse")
    Y[:, 1] = 0.5  # constant targets in one output
    net = nn_xp.Network([3, 4, 2], "tanh", backend="numpy", dtype="float64")
    p = net.predict(X)
    history = net.fit(X, Y, epochs=1, metrics=["r2"])
    assert history["r2"][0] == pytest.approx(r2_score(Y, p), rel=1e-12)


# ------------------------------------------------------------------ a property
@SETTINGS
@given(problem=problems(), data=st.data())
def test_integer_weighted_gradients_are_those_of_repeated_rows(backend, problem, data):
    sizes, acts, loss, X, Y, seed = problem
    counts = np.array(data.draw(st.lists(st.integers(0, 3), min_size=len(X), max_size=len(X))))
    if counts.sum() == 0:
        counts[0] = 1
    net = make_net(backend, sizes, acts, loss=loss, seed=seed)
    asarray = lambda a: backend.asarray(a, dtype=net.dtype)  # noqa: E731
    loss_w, grads_w = net.value_and_gradient(net.evaluate(asarray(X)), asarray(Y),
                                             w=asarray(counts[:, None].astype(float)), m=int(counts.sum()))
    Xr, Yr = np.repeat(X, counts, axis=0), np.repeat(Y, counts, axis=0)
    loss_r, grads_r = net.value_and_gradient(net.evaluate(asarray(Xr)), asarray(Yr))
    assert float(loss_w) == pytest.approx(float(loss_r), rel=1e-10, abs=1e-12)
    for g, h in zip(grads_w, grads_r):
        np.testing.assert_allclose(to_numpy(g), to_numpy(h), rtol=1e-9, atol=1e-12)


def assert_ranks_train_as_one_process(train, size):
    """``train(comm)`` -> (weights, history) on ``size`` thread ranks equals ``train(None)``, to 1e-12."""
    ref_w, ref_h = train(None)
    results, errors = in_threads(size, train)
    assert errors == [None] * size
    for got_w, got_h in results:
        assert _rel(got_w, ref_w) < 1e-12 and got_h.keys() == ref_h.keys()
        for key in ref_h:
            assert _rel(got_h[key], ref_h[key]) < 1e-12, key
