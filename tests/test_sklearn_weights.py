"""nn_xp.sklearn's ``alpha`` on the weights alone and ``sample_weight`` (issue 15, items 2 and 12), next to
scikit-learn's own MLPs: from the same start (assigned to both), the same iterations, losses and weights in
float64 wherever the two algorithms coincide.
"""
from __future__ import annotations

import pickle
import warnings

import numpy as np
import pytest

pytest.importorskip("sklearn")

from sklearn import neural_network as sk  # noqa: E402
from sklearn.base import clone  # noqa: E402
from sklearn.datasets import load_iris  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.metrics import accuracy_score  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

from nn_xp.sklearn import MLPClassifier, MLPRegressor  # noqa: E402


def _iris():
    X, y = load_iris(return_X_y=True)
    return StandardScaler().fit_transform(X), y


def _weights(n, seed=0):
    return np.random.default_rng(seed).uniform(0.2, 3.0, size=n)


CASES = {  # name -> (ours, theirs, X, y, extra parameters)
    "multiclass": lambda: (MLPClassifier, sk.MLPClassifier, *_iris(), {}),
    "binary": lambda: (MLPClassifier, sk.MLPClassifier, _iris()[0], _iris()[1] > 0, {}),
    "regression": lambda: (MLPRegressor, sk.MLPRegressor, _iris()[0], _iris()[0] @ [2.0, -1.0, 0.5, 0.0], {}),
    "poisson": lambda: (MLPRegressor, sk.MLPRegressor, _iris()[0], np.exp(_iris()[0][:, 0] * 0.5).round(),
                        {"loss": "poisson"}),
}


def _quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return fn(*args, **kwargs)


def _same_start(ours, theirs, X, y, max_iter, sample_weight=None, **params):
    """Both from nn_xp's initial weights (one iteration makes the layers, the weights are assigned to both),
    then a warm start of ``max_iter`` with ``sample_weight``; no stopping by ``tol`` (the best loss so far
    is carried over from the first iteration, which started from different weights)."""
    for est in (ours, theirs):
        _quiet(est.set_params(max_iter=1, n_iter_no_change=max_iter + 1, **params).fit, X, y)
    coefs, intercepts = ours.coefs_, ours.intercepts_
    theirs.coefs_, theirs.intercepts_ = [c.copy() for c in coefs], [b.copy() for b in intercepts]
    for est in (ours, theirs):
        _quiet(est.set_params(warm_start=True, max_iter=max_iter).fit, X, y, sample_weight=sample_weight)


def _assert_same_fit(ours, theirs, rtol):
    assert ours.n_iter_ == theirs.n_iter_
    np.testing.assert_allclose(ours.loss_curve_[1:], theirs.loss_curve_[1:], rtol=rtol)  # [0]: own starts
    for mine, their in zip(ours.coefs_ + ours.intercepts_, theirs.coefs_ + theirs.intercepts_):
        np.testing.assert_allclose(mine, their, rtol=rtol, atol=rtol)


# ------------------------------------------------------------------ item 12: alpha on the weights alone
@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("batch_size", [40, 150])
def test_alpha_penalises_the_weights_alone_as_scikit_learn(case, batch_size):
    """SGD without momentum or shuffling takes scikit-learn's steps with alpha > 0: the L2 term on the
    weights, not the biases, divided by each batch's rows (the last, of 30, by its own), and loss_curve_
    includes it."""
    ours_cls, their_cls, X, y, extra = CASES[case]()
    params = {"hidden_layer_sizes": (6,), "activation": "tanh", "solver": "sgd", "momentum": 0.0,
              "shuffle": False, "learning_rate_init": 0.05, "alpha": 0.3, "batch_size": batch_size,
              "random_state": 0, **extra}
    ours, theirs = ours_cls(backend="numpy", **params), their_cls(**params)
    _same_start(ours, theirs, X, y, max_iter=15)
    _assert_same_fit(ours, theirs, rtol=1e-11)
    assert ours.network_.l2 == 0.3 and ours.network_.optimizer.weight_decay == 0.0


def test_adam_with_alpha_follows_scikit_learn_to_its_epsilon():
    X, y = _iris()
    params = {"hidden_layer_sizes": (6,), "activation": "tanh", "shuffle": False, "learning_rate_init": 0.01,
              "alpha": 0.5, "batch_size": 50, "random_state": 0}
    ours, theirs = MLPClassifier(backend="numpy", **params), sk.MLPClassifier(**params)
    _same_start(ours, theirs, X, y, max_iter=20)
    _assert_same_fit(ours, theirs, rtol=1e-4)  # Adam's epsilon sits in another place: docs/sklearn.md


# ------------------------------------------------------------------ item 2: sample_weight
@pytest.mark.parametrize("case", list(CASES))
def test_lbfgs_with_sample_weight_and_alpha_follows_scikit_learns_path(case):
    """scikit-learn's weighted objective: (sum_i w_i l_i + 0.5 alpha ||W||^2) / sum_i w_i."""
    ours_cls, their_cls, X, y, extra = CASES[case]()
    params = {"hidden_layer_sizes": (6,), "activation": "tanh", "solver": "lbfgs", "alpha": 0.05,
              "random_state": 0, **extra}
    ours, theirs = ours_cls(backend="numpy", **params), their_cls(**params)
    _same_start(ours, theirs, X, y, max_iter=12, sample_weight=_weights(len(y)))
    assert ours.n_iter_ == theirs.n_iter_ == 12
    np.testing.assert_allclose(ours.loss_, theirs.loss_, rtol=1e-10)
    for mine, their in zip(ours.coefs_ + ours.intercepts_, theirs.coefs_ + theirs.intercepts_):
        np.testing.assert_allclose(mine, their, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("batch_size", [150, 40, 30])
def test_sgd_with_sample_weight_takes_scikit_learns_steps(case, batch_size):
    """scikit-learn divides each batch's loss, delta and L2 term by the batch's sum of weights, as
    fit(weighted_mean=True) does: the same steps to float64 rounding, with uneven weights in mini-batches
    (of 40: the last, of 30, its own sum) as in full batch."""
    ours_cls, their_cls, X, y, extra = CASES[case]()
    w = _weights(len(y))  # uneven: every batch has its own sum, unlike the whole set's mean
    params = {"hidden_layer_sizes": (6,), "activation": "tanh", "solver": "sgd", "momentum": 0.9,
              "shuffle": False, "learning_rate_init": 0.02, "alpha": 0.1, "batch_size": batch_size,
              "random_state": 0, **extra}
    ours, theirs = ours_cls(backend="numpy", **params), their_cls(**params)
    _same_start(ours, theirs, X, y, max_iter=15, sample_weight=w)
    _assert_same_fit(ours, theirs, rtol=1e-11)
    unweighted = ours_cls(backend="numpy", **params)
    _same_start(unweighted, their_cls(**params), X, y, max_iter=15)
    assert not np.allclose(unweighted.coefs_[0], ours.coefs_[0])  # the weights changed the training


@pytest.mark.parametrize("case", list(CASES))
def test_adam_with_uneven_sample_weights_follows_scikit_learn_to_its_epsilon(case):
    ours_cls, their_cls, X, y, extra = CASES[case]()
    params = {"hidden_layer_sizes": (6,), "activation": "tanh", "shuffle": False, "learning_rate_init": 0.01,
              "alpha": 0.5, "batch_size": 40, "random_state": 0, **extra}
    ours, theirs = ours_cls(backend="numpy", **params), their_cls(**params)
    _same_start(ours, theirs, X, y, max_iter=20, sample_weight=_weights(len(y), seed=4))
    _assert_same_fit(ours, theirs, rtol=1e-4)  # Adam's epsilon sits in another place: docs/sklearn.md


def test_partial_fit_takes_sample_weight_in_scikit_learns_order():
    X, y = _iris()
    w = _weights(len(y), seed=3)
    params = {"hidden_layer_sizes": (5,), "solver": "sgd", "momentum": 0.0, "shuffle": False,
              "learning_rate_init": 0.1, "alpha": 0.01, "batch_size": 150, "random_state": 0}
    ours, theirs = MLPClassifier(backend="numpy", **params), sk.MLPClassifier(**params)
    for est in (ours, theirs):
        est.partial_fit(X, y, None, np.unique(y))  # positionally: sample_weight, then classes
    theirs.coefs_ = [c.copy() for c in ours.coefs_]
    theirs.intercepts_ = [b.copy() for b in ours.intercepts_]
    for est in (ours, theirs):
        for _ in range(3):
            est.partial_fit(X, y, sample_weight=w)
    for mine, their in zip(ours.coefs_ + ours.intercepts_, theirs.coefs_ + theirs.intercepts_):
        np.testing.assert_allclose(mine, their, rtol=1e-12, atol=1e-14)
    reg = MLPRegressor(hidden_layer_sizes=(5,), solver="sgd", max_iter=3, random_state=0, backend="numpy")
    reg.partial_fit(X, X[:, 0], w)
    assert reg.n_iter_ == 1


def test_weights_of_one_give_the_unweighted_fit_bit_for_bit():
    X, y = _iris()
    for solver in ("adam", "lbfgs"):
        params = {"hidden_layer_sizes": (6,), "solver": solver, "max_iter": 8, "alpha": 0.1,
                  "random_state": 0, "backend": "numpy"}
        plain = _quiet(MLPClassifier(**params).fit, X, y)
        ones = _quiet(MLPClassifier(**params).fit, X, y, sample_weight=np.ones(len(y)))
        assert plain.loss_curve_ == ones.loss_curve_
        for a, b in zip(plain.coefs_ + plain.intercepts_, ones.coefs_ + ones.intercepts_):
            np.testing.assert_array_equal(a, b)


def test_early_stopping_scores_the_held_out_part_with_its_weights():
    """scikit-learn splits the weights with the data and weights the validation score."""
    X, y = _iris()
    w = np.where(np.arange(len(y)) % 3 == 0, 5.0, 0.5)
    params = {"hidden_layer_sizes": (3,), "max_iter": 1, "early_stopping": True, "random_state": 0,
              "learning_rate_init": 0.01, "backend": "numpy"}
    clf = _quiet(MLPClassifier(**params).fit, X, y, sample_weight=w)
    _, X_val, _, y_val, _, w_val = train_test_split(X, y, w, test_size=0.1,
                                                    random_state=np.random.RandomState(0))
    assert clf.validation_scores_ == [accuracy_score(y_val, clf.predict(X_val), sample_weight=w_val)]
    assert clf.validation_scores_[0] != clf.score(X_val, y_val)  # the weights counted


def test_bad_sample_weights_get_scikit_learns_errors():
    X, y = _iris()
    for bad, message in ((np.ones(10), r"sample_weight.shape == \(10,\), expected \(150,\)"),
                         (-np.ones(150), "Negative values in data passed to `sample_weight`"),
                         (np.zeros(150), "Sample weights must contain at least one non-zero number")):
        for solver in ("adam", "lbfgs"):
            with pytest.raises(ValueError, match=message):
                MLPClassifier(solver=solver, backend="numpy").fit(X, y, sample_weight=bad)


def test_alpha_survives_pickling_and_follows_set_params():
    X, y = _iris()
    clf = MLPClassifier((5,), solver="sgd", alpha=0.2, max_iter=3, random_state=0, backend="numpy")
    _quiet(clf.fit, X, y)
    again = pickle.loads(pickle.dumps(clf))
    assert again.network_.l2 == clf.network_.l2 == 0.2
    for est in (clf, again):
        est.partial_fit(X, y)
    for a, b in zip(clf.coefs_, again.coefs_):
        np.testing.assert_array_equal(a, b)
    _quiet(clf.set_params(alpha=0.0, warm_start=True).fit, X, y)
    assert clf.network_.penalty is None


@pytest.mark.parametrize("estimator, rtol", [
    (MLPClassifier((8, 8), activation="tanh", solver="sgd", learning_rate="adaptive", learning_rate_init=0.05,
                   max_iter=60), 1e-4),
    (MLPRegressor(hidden_layer_sizes=(16,), activation="tanh", learning_rate_init=0.02, max_iter=60), 1e-4),
    (MLPRegressor(hidden_layer_sizes=(16,), solver="lbfgs", max_iter=30), 1e-2),
])
def test_float32_weights_and_repeated_rows_part_by_rounding_alone(estimator, rtol):
    """scikit-learn's check_sample_weight_equivalence, which float32 fails (tests/test_sklearn.py): its data,
    integer weights against repeated rows. In float64 the predictions agree to the check's rtol=1e-7 and
    far beyond; in float32 to float32's rounding, amplified by training (lbfgs' line search most), which
    that rtol (below float32's epsilon) cannot allow: an error in the weighting would part them further."""
    rng = np.random.RandomState(42)  # the check's data
    X, y, sw = rng.rand(15, 30), rng.randint(0, 3, size=15), rng.randint(0, 5, size=15)
    if isinstance(estimator, MLPRegressor):
        y = y.astype(float)
    parted = {}
    for dtype in ("float64", "float32"):
        fits = [clone(estimator).set_params(backend="numpy", dtype=dtype, random_state=0) for _ in range(2)]
        _quiet(fits[0].fit, X.repeat(sw, axis=0), y.repeat(sw))
        _quiet(fits[1].fit, X, y, sample_weight=sw)
        method = "predict_proba" if hasattr(fits[0], "predict_proba") else "predict"
        p, q = (getattr(f, method)(X).astype(np.float64) for f in fits)
        parted[dtype] = np.max(np.abs(p - q)) / np.max(np.abs(p))
    assert parted["float64"] < 1e-11
    assert 0 < parted["float32"] < rtol


@pytest.mark.parametrize("solver", ["sgd", "adam", "lbfgs"])
def test_sample_weight_on_every_backend_follows_numpys_fit(backend, backend_id, solver):
    """Mini-batches of uneven weights (each divided by its own sum: a device scalar there) and lbfgs train on
    the backend's device as on NumPy (which is scikit-learn's fit: the tests above)."""
    from conftest import SPECS

    name, device = SPECS[backend_id]
    X, y = _iris()
    params = {"hidden_layer_sizes": (6,), "activation": "tanh", "solver": solver, "alpha": 0.1,
              "batch_size": 40, "max_iter": 6, "random_state": 0, "dtype": "float64"}
    w = _weights(len(y), seed=6)
    ref = _quiet(MLPClassifier(backend="numpy", **params).fit, X, y, sample_weight=w)
    clf = _quiet(MLPClassifier(backend=name, device=device, **params).fit, X, y, sample_weight=w)
    assert clf.network_.xp is backend.xp and clf.network_.device == backend.device
    np.testing.assert_allclose(clf.loss_curve_, ref.loss_curve_, rtol=1e-10)
    for mine, theirs in zip(clf.coefs_ + clf.intercepts_, ref.coefs_ + ref.intercepts_):
        np.testing.assert_allclose(mine, theirs, rtol=1e-9, atol=1e-12)
