"""nn_xp.sklearn as a drop-in for scikit-learn's MLPs (issue 15): each behaviour next to scikit-learn's own.

Where the two can start from the same weights (assigned to ``coefs_`` and
``intercepts_``, then ``warm_start``), their fits are compared number for number;
elsewhere errors, warnings and printed lines are compared with scikit-learn's.
"""
from __future__ import annotations

import re
import warnings

import numpy as np
import pytest

pytest.importorskip("sklearn")

import scipy.sparse as sp  # noqa: E402
from conftest import SPECS  # noqa: E402
from sklearn import neural_network as sk  # noqa: E402
from sklearn.datasets import load_iris  # noqa: E402
from sklearn.exceptions import ConvergenceWarning, NotFittedError  # noqa: E402
from sklearn.model_selection import GridSearchCV, train_test_split  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

import nn_xp  # noqa: E402
from nn_xp import _lbfgs  # noqa: E402
from nn_xp import _sklearn_base as base  # noqa: E402
from nn_xp.backends import to_numpy  # noqa: E402
from nn_xp.sklearn import MLPClassifier, MLPRegressor  # noqa: E402


def _iris():
    X, y = load_iris(return_X_y=True)
    return StandardScaler().fit_transform(X), y


def _poisson_data(n=150):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((n, 3))
    return X, rng.poisson(np.exp(0.5 * X[:, 0] - 0.3 * X[:, 1])).astype(float)


def _quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.simplefilter("ignore", RuntimeWarning)  # scikit-learn's overflow on diverging fits
        return fn(*args, **kwargs)


def _same_start(ours, theirs, X, y, max_iter, **params):
    """Fit both from nn_xp's initial weights: one iteration each makes the layers, the weights are assigned
    to both, and a warm start continues for ``max_iter``."""
    for est in (ours, theirs):
        _quiet(est.set_params(max_iter=1, **params).fit, X, y)
    coefs, intercepts = ours.coefs_, ours.intercepts_  # read-only host copies: assigned as they are
    ours.coefs_, ours.intercepts_ = coefs, intercepts
    theirs.coefs_, theirs.intercepts_ = [c.copy() for c in coefs], [b.copy() for b in intercepts]
    for est in (ours, theirs):
        _quiet(est.set_params(warm_start=True, max_iter=max_iter).fit, X, y)
    return coefs


def _assert_same_fit(ours, theirs, rtol):
    assert ours.n_iter_ == theirs.n_iter_
    np.testing.assert_allclose(ours.loss_, theirs.loss_, rtol=rtol)
    for mine, their in zip(ours.coefs_ + ours.intercepts_, theirs.coefs_ + theirs.intercepts_):
        np.testing.assert_allclose(mine, their, rtol=rtol, atol=rtol)


# ------------------------------------------------------------- item 1: lbfgs
LBFGS_CASES = {
    "multiclass": lambda: (MLPClassifier, sk.MLPClassifier, *_iris()),
    "binary": lambda: (MLPClassifier, sk.MLPClassifier, _iris()[0], _iris()[1] > 0),
    "multilabel": lambda: (MLPClassifier, sk.MLPClassifier, _iris()[0],
                           np.column_stack([_iris()[1] > 0, _iris()[1] > 1])),
    "regression": lambda: (MLPRegressor, sk.MLPRegressor, _iris()[0], _iris()[0] @ [2.0, -1.0, 0.5, 0.0]),
    "poisson": lambda: (MLPRegressor, sk.MLPRegressor, *_poisson_data()),
}


@pytest.mark.parametrize("case", list(LBFGS_CASES))
def test_lbfgs_follows_scikit_learns_path_from_the_same_start(case):
    """SciPy's L-BFGS-B on nn_xp's loss, gradient and L2 term takes scikit-learn's steps: the same iterations,
    loss and weights (float64), for every loss and output (several regression outputs: the next test)."""
    ours_cls, their_cls, X, y = LBFGS_CASES[case]()
    params = {"hidden_layer_sizes": (6,), "activation": "tanh", "solver": "lbfgs", "alpha": 0.01,
              "random_state": 0}
    if case == "poisson":
        params["loss"] = "poisson"
    ours, theirs = ours_cls(backend="numpy", **params), their_cls(**params)
    _same_start(ours, theirs, X, y, max_iter=12)
    _assert_same_fit(ours, theirs, rtol=1e-8)
    assert len(ours.loss_curve_) == 1 + ours.n_iter_  # the first fit's iteration, then this fit's
    assert ours.loss_curve_[-1] == pytest.approx(ours.loss_, rel=1e-12)
    assert ours.loss_curve_[-1] < ours.loss_curve_[1] and ours.t_ == theirs.t_ == 0


def test_lbfgs_with_several_outputs_minimises_a_consistent_objective_and_reports_scikit_learns_loss():
    """scikit-learn 1.9 line-searches on squared error averaged over the outputs while following the gradient
    of their sum (scikit-learn issue #8349); nn_xp's objective is the sum, its gradient checked here by finite
    differences, and loss_ is reported as scikit-learn's: the mean over outputs plus the L2 term."""
    X, _ = _iris()
    Y = X[:, :2] @ np.array([[2.0, -1.0], [-1.0, 0.5]])
    alpha, n = 0.01, X.shape[0]
    reg = _quiet(MLPRegressor(hidden_layer_sizes=(6,), activation="tanh", solver="lbfgs", alpha=alpha,
                              max_iter=15, random_state=0, backend="numpy").fit, X, Y)
    l2 = 0.5 * alpha * sum(float(np.sum(W * W)) for W in reg.coefs_) / n
    assert reg.loss_ == pytest.approx(0.5 * np.mean((reg.predict(X) - Y) ** 2) + l2, rel=1e-10)
    net = reg.network_
    objective = _lbfgs.Objective(net, net.as_input(X)[0], net.as_target(Y))  # alpha: the network's l2
    x = objective.start()
    _, grad = objective(x)
    for i in (0, 5, x.size - 1):
        step = np.zeros_like(x)
        step[i] = 1e-6
        numeric = (objective(x + step)[0] - objective(x - step)[0]) / 2e-6
        assert grad[i] == pytest.approx(numeric, rel=1e-5, abs=1e-9)


def test_lbfgs_warns_as_scikit_learn_word_for_word():
    X, y = _iris()
    params = {"hidden_layer_sizes": (5,), "solver": "lbfgs", "random_state": 0}
    for limit in ({"max_iter": 4}, {"max_fun": 6}):
        caught = []
        for est in (MLPClassifier(backend="numpy", **params, **limit), sk.MLPClassifier(**params, **limit)):
            with pytest.warns(ConvergenceWarning) as record:
                est.fit(X, y)
            caught.append([str(w.message) for w in record])
        ours, theirs = caught
        if "max_iter" in limit:  # both stop at 4: the whole text is the same
            assert ours == theirs and "Increase the number of iterations" in ours[0]
        else:  # the iteration count at the 6th evaluation may differ: the rest is the same
            def unnumbered(texts):
                return [re.sub(r"after \d+", "", t) for t in texts]

            assert unnumbered(ours) == unnumbered(theirs)
            assert "EVALUATIONS EXCEEDS LIMIT" in ours[0]
    clf = MLPClassifier(backend="numpy", **params).fit(X, y)  # converges: no warning (filterwarnings=error)
    assert clf.n_iter_ < 200 and clf.score(X, y) > 0.95


def test_lbfgs_has_no_partial_fit_as_in_scikit_learn():
    with pytest.raises(AttributeError) as theirs:
        sk.MLPClassifier(solver="lbfgs").partial_fit  # noqa: B018
    for est in (MLPClassifier(solver="lbfgs"), MLPRegressor(solver="lbfgs")):
        assert not hasattr(est, "partial_fit")
        with pytest.raises(AttributeError) as ours:
            est.partial_fit  # noqa: B018
        assert str(ours.value) == str(theirs.value).replace("MLPClassifier", type(est).__name__)
        assert "only available for stochastic optimizers" in str(ours.value.__cause__)
    assert hasattr(MLPClassifier(solver="sgd"), "partial_fit") and hasattr(MLPRegressor(), "partial_fit")


def test_lbfgs_on_every_backend_moves_the_vector_once_each_way_per_step(backend, backend_id, monkeypatch):
    name, device = SPECS[backend_id]
    X, y = _iris()
    ref = MLPClassifier((6,), solver="lbfgs", max_iter=8, random_state=0, backend="numpy", dtype="float64")
    _quiet(ref.fit, X, y)
    reads, calls = [], []
    to_numpy, call = _lbfgs.to_numpy, _lbfgs.Objective.__call__
    monkeypatch.setattr(_lbfgs, "to_numpy", lambda a: reads.append(a.shape) or to_numpy(a))
    monkeypatch.setattr(_lbfgs.Objective, "__call__", lambda self, x: calls.append(1) or call(self, x))
    clf = MLPClassifier((6,), solver="lbfgs", max_iter=8, random_state=0, backend=name, device=device,
                        dtype="float64")
    _quiet(clf.fit, X, y)
    n_params = sum(W.size + b.size for W, b in clf.network_.get_weights())
    assert len(reads) == len(calls) + 1 and reads[0] == (n_params,)  # the start, then one per evaluation
    assert set(reads[1:]) == {(n_params + 1,)}  # the gradient with the loss at its end
    assert clf.network_.xp is backend.xp and clf.network_.device == backend.device
    assert clf.n_iter_ == ref.n_iter_
    np.testing.assert_allclose(clf.loss_curve_, ref.loss_curve_, rtol=1e-7)
    np.testing.assert_allclose(clf.predict_proba(X), ref.predict_proba(X), rtol=1e-6, atol=1e-9)


def test_lbfgs_never_leaves_non_finite_weights(monkeypatch):
    X, y = _iris()
    clf = _quiet(MLPClassifier((5,), solver="lbfgs", max_iter=3, random_state=0, backend="numpy").fit, X, y)
    before = clf.coefs_

    def diverged(fun, x0, **kwargs):
        fun(x0)
        return _lbfgs.scipy.optimize.OptimizeResult(x=np.full_like(x0, np.nan), fun=np.nan, nit=1, status=0,
                                                    message="")

    monkeypatch.setattr(_lbfgs.scipy.optimize, "minimize", diverged)
    with pytest.raises(ValueError, match="Solver produced non-finite parameter weights"):
        clf.set_params(warm_start=True).fit(X, y)
    for W, W0 in zip(clf.coefs_, before):  # back where the fit started
        np.testing.assert_array_equal(W, W0)


def test_an_interrupted_lbfgs_leaves_the_latest_iterate(monkeypatch):
    """Ctrl-C inside L-BFGS-B: the network holds the last accepted iterate, never a line search's trial."""
    X, y = _iris()
    calls, call = [], _lbfgs.Objective.__call__
    limit = [None]

    def counted(self, x):
        calls.append(1)
        out = call(self, x)  # the network now holds x
        if limit[0] is not None and len(calls) > limit[0]:
            raise KeyboardInterrupt
        return out

    monkeypatch.setattr(_lbfgs.Objective, "__call__", counted)
    params = {"hidden_layer_sizes": (5,), "solver": "lbfgs", "random_state": 0, "backend": "numpy"}
    three = _quiet(MLPClassifier(max_iter=3, **params).fit, X, y)
    limit[0], calls[:] = len(calls), []  # interrupted at the 4th iteration's first trial point
    clf = MLPClassifier(max_iter=50, **params)
    with pytest.raises(KeyboardInterrupt):
        clf.fit(X, y)
    for W, W3 in zip(clf.coefs_ + clf.intercepts_, three.coefs_ + three.intercepts_):
        np.testing.assert_array_equal(W, W3)


# ---------------------------------------------------------- item 3: poisson
def test_poisson_loss_is_scikit_learns_half_deviance_and_its_gradient():
    """Adam without shuffling or L2 from the same start: scikit-learn's loss_curve_, value for value, so the
    loss is its half Poisson deviance; the exp output keeps predictions positive."""
    X, y = _poisson_data()
    params = {"loss": "poisson", "hidden_layer_sizes": (8,), "activation": "tanh", "learning_rate_init": 0.01,
              "alpha": 0.0, "shuffle": False, "random_state": 0}
    ours, theirs = MLPRegressor(backend="numpy", **params), sk.MLPRegressor(**params)
    _same_start(ours, theirs, X, y, max_iter=25)
    assert ours.out_activation_ == theirs.out_activation_ == "exp"
    assert ours.network_.activations[-1] == "exp" and ours.network_.loss_fn.name == "poisson"
    # Adam's epsilon sits in another place (nn_xp's Kingma & Ba, scikit-learn's scaled): the last digits
    np.testing.assert_allclose(ours.loss_curve_[1:], theirs.loss_curve_[1:], rtol=1e-6)  # [0]: own starts
    assert np.all(ours.predict(X) > 0)
    np.testing.assert_allclose(ours.predict(X), theirs.predict(X), rtol=1e-5)


def test_poisson_gradient_matches_finite_differences(backend):
    net = nn_xp.Network([3, 2, 1], ["tanh", "exp"], loss="poisson", backend=backend.name,
                        device=backend.device, dtype="float64", seed=1)
    X, y = _poisson_data(20)
    Xd, Yd = net.as_input(X)[0], net.as_target(y)
    _, grads = net.value_and_gradient(net.evaluate(Xd), Yd)
    weights, eps = net.get_weights(), 1e-6
    W = weights[0][0]
    numeric = np.empty_like(W)
    for idx in np.ndindex(W.shape):
        values = []
        for step in (eps, -eps):
            W_step = W.copy()
            W_step[idx] += step
            net.set_weights([(W_step, weights[0][1]), weights[1]])
            values.append(net.loss(X, y))
        numeric[idx] = (values[0] - values[1]) / (2 * eps)
    np.testing.assert_allclose(to_numpy(grads[0]), numeric, rtol=1e-6, atol=1e-9)


def test_poisson_refuses_negative_targets():
    X, y = _poisson_data(20)
    with pytest.raises(ValueError, match="Some value.s. of y are negative which is not allowed for Poisson"):
        MLPRegressor("poisson", backend="numpy").fit(X, y - 1.0)
    assert MLPRegressor("poisson").__sklearn_tags__().target_tags.positive_only
    assert not MLPRegressor().__sklearn_tags__().target_tags.positive_only


# ------------------------------------------------------------ item 4: sparse
@pytest.mark.parametrize("fmt", ["csr", "csc", "coo"])
def test_sparse_input_is_densified_as_documented(fmt, monkeypatch):
    """Sparse X trains exactly as its dense copy; prediction densifies a few rows at a time."""
    X, y = _iris()
    X = np.where(np.abs(X) < 0.5, 0.0, X)
    Xs = {"csr": sp.csr_matrix, "csc": sp.csc_matrix, "coo": sp.coo_matrix}[fmt](X)
    dense = _quiet(MLPClassifier((8,), max_iter=20, random_state=0, backend="numpy").fit, X, y)
    sparse = _quiet(MLPClassifier((8,), max_iter=20, random_state=0, backend="numpy").fit, Xs, y)
    assert sparse.loss_curve_ == dense.loss_curve_
    monkeypatch.setattr(base, "_SPARSE_CHUNK", 4 * 7)  # 7 rows of 4 features: 22 chunks
    np.testing.assert_array_equal(sparse.predict_proba(Xs), dense.predict_proba(X))
    assert MLPClassifier().__sklearn_tags__().input_tags.sparse


# --------------------------------------------------- items 5 and 6: classes
def _error(est, method, *args, **kwargs):
    with pytest.raises(ValueError) as info:
        _quiet(getattr(est, method), *args, **kwargs)
    return str(info.value)


def test_first_partial_fit_refuses_labels_outside_classes_as_scikit_learn():
    X, y = _iris()
    ours, theirs = MLPClassifier(backend="numpy"), sk.MLPClassifier()
    message = _error(ours, "partial_fit", X, y, classes=[0, 1])
    assert message == _error(theirs, "partial_fit", X, y, classes=[0, 1])
    assert "`y` has classes not in `self.classes_`" in message
    assert not hasattr(ours, "network_") and not hasattr(ours, "classes_")  # nothing half-made is left
    ours.partial_fit(X[:100], y[:100], classes=[0, 1, 2])  # some of the classes: fine
    assert ours.n_outputs_ == 3


@pytest.mark.parametrize("labels", ["fewer", "other"])
def test_warm_start_needs_the_same_classes_as_scikit_learn(labels):
    X, y = _iris()
    Xn, yn = (X[:100], y[:100]) if labels == "fewer" else (X, y + 1)
    messages = []
    for est in (MLPClassifier((5,), max_iter=2, warm_start=True, backend="numpy"),
                sk.MLPClassifier((5,), max_iter=2, warm_start=True)):
        _quiet(est.fit, X, y)
        messages.append(_error(est, "fit", Xn, yn))
    assert messages[0] == messages[1] and messages[0].startswith("warm_start can only be used where `y` has")


# ------------------------------------------------------- item 7: divergence
def _diverging(cls, **params):
    X, _ = _iris()
    return cls(hidden_layer_sizes=(8,), solver="sgd", learning_rate_init=1e3, momentum=0.0, max_iter=30,
               random_state=0, **params), X, X[:, 0] * 1e3


def test_divergence_without_early_stopping_raises_scikit_learns_error():
    ours, X, y = _diverging(MLPRegressor, backend="numpy")
    theirs = sk.MLPRegressor(**{k: v for k, v in ours.get_params().items()
                                if k not in ("backend", "device", "dtype")})
    message = _error(ours, "fit", X, y)
    assert message == _error(theirs, "fit", X, y)
    assert message.startswith("Solver produced non-finite parameter weights")
    assert all(np.isfinite(W).all() for W in ours.coefs_ + ours.intercepts_)  # rolled back
    assert np.isnan(ours.loss_curve_[-1]) and ours.n_iter_ == len(ours.loss_curve_) < 30


def test_divergence_with_early_stopping_keeps_the_best_weights_and_a_nan_score():
    ours, X, y = _diverging(MLPRegressor, backend="numpy", early_stopping=True)
    with pytest.warns(ConvergenceWarning, match="non-finite .* best validation score"):
        ours.fit(X, y)
    assert np.isnan(ours.validation_scores_[-1]) and len(ours.validation_scores_) == ours.n_iter_
    assert ours.best_validation_score_ == np.nanmax(ours.validation_scores_)
    assert all(np.isfinite(W).all() for W in ours.coefs_ + ours.intercepts_)
    assert np.isfinite(ours.predict(X)).all()
    # a grid over learning rates scores the diverging candidate instead of failing the search
    grid = GridSearchCV(ours.set_params(max_iter=15), {"learning_rate_init": [1e-3, 1e3]}, cv=2,
                        error_score="raise")
    _quiet(grid.fit, X, y / 1e3)
    assert grid.best_params_ == {"learning_rate_init": 1e-3}
    assert np.isfinite(grid.cv_results_["mean_test_score"]).all()


# --------------------------------------------------------- item 8: verbose
def _printed(est, X, y, capsys):
    _quiet(est.fit, X, y)
    out = capsys.readouterr()
    return out.out, out.err


def _shape(text):
    """The printed lines with their numbers blanked out."""
    return [re.sub(r"-?\d+(\.\d+)?", "#", line) for line in text.splitlines()]


@pytest.mark.parametrize("params", [{"early_stopping": True, "n_iter_no_change": 2, "tol": 10.0},
                                    {"solver": "sgd", "learning_rate": "adaptive", "n_iter_no_change": 1,
                                     "tol": 10.0, "max_iter": 8},
                                    {"n_iter_no_change": 1, "tol": 10.0}])
def test_verbose_prints_scikit_learns_lines_to_stdout(params, capsys):
    X, y = _iris()
    params = {"hidden_layer_sizes": (5,), "max_iter": 30, "random_state": 0, "verbose": True, **params}
    out, err = _printed(MLPClassifier(backend="numpy", **params), X, y, capsys)
    theirs, _ = _printed(sk.MLPClassifier(**params), X, y, capsys)
    assert err == ""
    assert sorted(set(_shape(out))) == sorted(set(_shape(theirs)))
    assert re.fullmatch(r"Iteration 1, loss = \d+\.\d{8}", out.splitlines()[0])


# -------------------------------------------- items 9 and 10: early stopping
def test_early_stopping_with_a_one_member_class_raises_as_scikit_learn():
    X, y = _iris()
    binary = np.r_[np.zeros(99, int), 1]
    assert _error(MLPClassifier(early_stopping=True, backend="numpy"), "fit", X[:100], binary) == \
        _error(sk.MLPClassifier(early_stopping=True), "fit", X[:100], binary)
    y3 = y.copy()
    y3[0] = 3  # multiclass: scikit-learn does not stratify, so no error
    _quiet(MLPClassifier((5,), early_stopping=True, max_iter=3, backend="numpy").fit, X, y3)


def test_constant_targets_score_zero_and_stop_as_scikit_learn():
    X, _ = _poisson_data(200)
    y = np.full(200, 3.0)
    ours = MLPRegressor(early_stopping=True, random_state=0, backend="numpy").fit(X, y)
    theirs = sk.MLPRegressor(early_stopping=True, random_state=0).fit(X, y)
    assert ours.validation_scores_ == theirs.validation_scores_ == [0.0] * theirs.n_iter_
    assert ours.n_iter_ == theirs.n_iter_ == ours.n_iter_no_change + 2


# ----------------------------------------------- item 11: coefs_/intercepts_
def test_assigned_weights_are_used_and_continued_as_in_scikit_learn():
    """Assigned weights predict, and partial_fit / warm_start continue from them (SGD without momentum,
    shuffling or L2 takes scikit-learn's steps exactly); a cold fit draws new ones."""
    X, y = _iris()
    params = {"hidden_layer_sizes": (5,), "solver": "sgd", "momentum": 0.0, "alpha": 0.0, "shuffle": False,
              "learning_rate_init": 0.1, "random_state": 0}
    ours, theirs = MLPClassifier(backend="numpy", **params), sk.MLPClassifier(**params)
    start = _same_start(ours, theirs, X, y, max_iter=10)
    _assert_same_fit(ours, theirs, rtol=1e-12)
    for est in (ours, theirs):
        est.coefs_, est.intercepts_ = [c.copy() for c in start], [np.zeros_like(b) for b in est.intercepts_]
    np.testing.assert_allclose(ours.predict_proba(X), theirs.predict_proba(X), rtol=1e-12)
    for est in (ours, theirs):
        est.partial_fit(X, y)
    _assert_same_fit(ours, theirs, rtol=1e-12)
    _quiet(ours.set_params(warm_start=False).fit, X, y)
    assert not np.allclose(ours.coefs_[0], start[0])


def test_coefs_assignment_is_checked_and_the_arrays_are_read_only():
    X, y = _iris()
    clf = _quiet(MLPClassifier((5,), max_iter=2, backend="numpy").fit, X, y)
    with pytest.raises(ValueError, match="assignment destination is read-only"):
        clf.coefs_[0][0, 0] = 1.0  # an edit in place cannot reach the device: it fails loudly
    with pytest.raises(ValueError, match=r"coefs_\[1\] must have shape \(5, 3\)"):
        clf.coefs_ = [np.zeros((4, 5)), np.zeros((3, 5))]
    with pytest.raises(ValueError, match="intercepts_ must hold 2 arrays"):
        clf.intercepts_ = [np.zeros(5)]
    with pytest.raises(ValueError, match="NaN or infinity"):
        clf.intercepts_ = [np.full(5, np.nan), np.zeros(3)]
    with pytest.raises(NotFittedError, match="coefs_ can be assigned once"):
        MLPClassifier().coefs_ = [np.zeros((4, 5))]


def test_ctrl_c_keeps_the_finished_epochs_as_scikit_learn(monkeypatch):
    """scikit-learn catches KeyboardInterrupt, warns and keeps what was trained (the best epoch's weights with
    early stopping)."""
    from nn_xp import _sklearn_epochs

    finish = _sklearn_epochs.ScikitEpochs.on_epoch_end

    def interrupted(self, epoch, logs):
        finish(self, epoch, logs)
        if epoch == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(_sklearn_epochs.ScikitEpochs, "on_epoch_end", interrupted)
    X, y = _iris()
    with pytest.warns(UserWarning, match="Training interrupted by user."):
        clf = MLPClassifier((5,), max_iter=50, early_stopping=True, random_state=0, backend="numpy").fit(X, y)
    assert clf.n_iter_ == len(clf.loss_curve_) == len(clf.validation_scores_) == 4
    assert clf.best_validation_score_ == max(clf.validation_scores_)
    # the kept weights are the best epoch's: their score on the held-out part (multiclass: not stratified)
    _, X_val, _, y_val = train_test_split(X, y, test_size=0.1, random_state=np.random.RandomState(0))
    assert clf.score(X_val, y_val) == clf.best_validation_score_
