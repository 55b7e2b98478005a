"""scikit-learn estimators trained by nn_xp: ``MLPClassifier`` and ``MLPRegressor``.

scikit-learn is an optional extra (``pip install 'nn_xp[sklearn]'``), imported
only here and in the private modules behind it. The estimators take
scikit-learn's host data (NumPy, pandas, lists, SciPy sparse matrices), check it
with scikit-learn's own validation, move it to the backend's device once per
``fit`` and hand predictions back as NumPy. docs/sklearn.md lists what is
identical to scikit-learn 1.9 and what differs. A fitted estimator pickles its
weights (and optimizer state) as host NumPy arrays, so a model trained on a GPU
loads anywhere; see ``__getstate__``.

NumPy appears here because the host is the point: scikit-learn's data and results.
"""
from __future__ import annotations  # noqa: I001 (nn_xp's import first: it says how to install scikit-learn)

from typing import Any

import numpy as np

from ._sklearn_base import _BaseMLP, _stochastic_solver  # first: imports scikit-learn, or says how to

from sklearn.base import ClassifierMixin, RegressorMixin  # noqa: E402
from sklearn.metrics import accuracy_score, r2_score  # noqa: E402
from sklearn.preprocessing import LabelBinarizer  # noqa: E402
from sklearn.utils.metaestimators import available_if  # noqa: E402
from sklearn.utils.multiclass import check_classification_targets, type_of_target, unique_labels  # noqa: E402

__all__ = ["MLPClassifier", "MLPRegressor"]


class MLPClassifier(ClassifierMixin, _BaseMLP):
    """Multi-layer perceptron classifier with scikit-learn's interface, trained by nn_xp on any backend.

    Softmax output and cross-entropy for multiclass targets; sigmoid outputs and
    binary cross-entropy for binary and multilabel (indicator) targets.

    Parameters
    ----------
    hidden_layer_sizes, activation, solver, alpha, batch_size, learning_rate, learning_rate_init, power_t,
    max_iter, shuffle, random_state, tol, verbose, warm_start, momentum, nesterovs_momentum, early_stopping,
    validation_fraction, beta_1, beta_2, epsilon, n_iter_no_change, max_fun
        As in :class:`sklearn.neural_network.MLPClassifier`, with the same
        defaults and the same stopping rules, messages, warnings and verbose
        lines. ``solver="lbfgs"`` is SciPy's L-BFGS-B on nn_xp's loss and gradient
        (see :mod:`nn_xp._lbfgs`). ``alpha`` is the network's ``l2`` penalty, on
        the weights alone as in scikit-learn, and ``loss_curve_`` includes it.
        ``fit`` and ``partial_fit`` take ``sample_weight``. A fit that diverges
        raises scikit-learn's ``ValueError`` (the network back at its last finite
        weights) or, with ``early_stopping``, ends with the best epoch's weights
        and a NaN score for the diverged one.
        Sparse ``X`` is taken and densified (see docs/sklearn.md).
    backend, device : optional
        Where to train: see :func:`nn_xp.resolve_backend` (default ``NN_XP_BACKEND``,
        else CuPy when a CUDA GPU answers, else NumPy).
    dtype : {None, "float32", "float64"}
        None follows scikit-learn: float32 input trains in float32, anything
        else in float64. Pass ``"float32"`` for speed on a GPU.

    Attributes
    ----------
    classes_, n_features_in_, feature_names_in_, loss_, loss_curve_, best_loss_, validation_scores_,
    best_validation_score_, n_iter_, t_, n_layers_, n_outputs_, out_activation_, coefs_, intercepts_
        As in scikit-learn. ``coefs_`` and ``intercepts_`` are read-only host
        copies; assigning a list replaces the network's weights (warm_start and
        partial_fit then continue from them). lbfgs also records ``loss_curve_``.
    network_ : nn_xp.Network
        The trained network, on its backend's device.

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from nn_xp.sklearn import MLPClassifier
    >>> X, y = load_iris(return_X_y=True)
    >>> clf = MLPClassifier((16,), learning_rate_init=0.01, max_iter=1000, random_state=0, backend="numpy")
    >>> clf.fit(X, y).score(X, y) > 0.9
    True
    """

    _y_options: dict = {}

    def _encode(self, y: np.ndarray, incremental: bool) -> tuple[np.ndarray, Any]:
        """Targets for nn_xp (class ids for multiclass, else 0/1 columns) and what early stopping stratifies
        on (binary targets only, as in scikit-learn)."""
        check_classification_targets(y)
        # scikit-learn's rule: classes are learnt afresh unless warm_start or partial_fit continues a fit;
        # then warm_start needs the same classes, and partial_fit no class outside them
        if not hasattr(self, "classes_") or (not self.warm_start and not incremental):
            self._label_binarizer = LabelBinarizer().fit(y)
            self.classes_ = self._label_binarizer.classes_
        else:
            classes = unique_labels(y)
            if self.warm_start:
                if set(classes) != set(self.classes_):
                    raise ValueError("warm_start can only be used where `y` has the same classes as in the "
                                     f"previous call to fit. Previously got {self.classes_}, "
                                     f"`y` has {classes}")
            elif len(np.setdiff1d(classes, self.classes_, assume_unique=True)):
                raise ValueError("`y` has classes not in `self.classes_`. "
                                 f"`self.classes_` has {self.classes_}. 'y' has {classes}.")
        Y = self._label_binarizer.transform(y)
        kind = self._label_binarizer.y_type_
        if kind == "multiclass":
            return np.argmax(Y, axis=1), None  # class ids: the device one-hot encodes them
        return Y, (Y.astype(bool) if kind == "binary" else None)  # scikit-learn's (n, 1) bool column

    def _output(self) -> tuple[str, str, str]:
        if self._label_binarizer.y_type_ == "multiclass":
            return "cross_entropy", "softmax", "softmax"
        return "binary_cross_entropy", "sigmoid", "logistic"

    def _score_outputs(self, A: np.ndarray, Y: np.ndarray, sample_weight: np.ndarray | None = None) -> float:
        """scikit-learn's validation score, the accuracy (of whole rows, for multilabel; weighted with
        ``sample_weight``), from the outputs."""
        if A.shape[1] > 1 and Y.ndim == 1:  # softmax against class ids
            return float(accuracy_score(Y, np.argmax(A, axis=1), sample_weight=sample_weight))
        predicted = (A > 0.5).astype(Y.dtype)  # LabelBinarizer's threshold
        return float(accuracy_score(Y.ravel(), predicted.ravel(), sample_weight=sample_weight)
                     if A.shape[1] == 1 else accuracy_score(Y, predicted, sample_weight=sample_weight))

    @available_if(_stochastic_solver)
    def partial_fit(self, X: Any, y: Any, sample_weight: Any = None, classes: Any = None):
        """One epoch over ``(X, y)``, continuing the weights and the optimizer state.

        ``classes`` (every label that will ever appear) is required on the first
        call; ``y`` may hold only some of them, never others. ``sample_weight`` as for ``fit``
        (scikit-learn's order of the arguments).
        """
        first = getattr(self, "classes_", None) is None
        if first:
            if classes is None:
                raise ValueError("classes must be passed on the first call to partial_fit.")
            self.classes_ = unique_labels(classes)  # the first call: y is checked against them in _fit
            multilabel = type_of_target(y).startswith("multilabel")
            self._label_binarizer = LabelBinarizer().fit(y if multilabel else classes)
        elif classes is not None and not np.array_equal(self.classes_, unique_labels(classes)):
            raise ValueError(f"`classes={classes!r}` is not the same as on last call to partial_fit, "
                             f"was: {self.classes_!r}")
        try:
            return self._fit(X, y, incremental=True, sample_weight=sample_weight)
        except BaseException:
            if first and not hasattr(self, "network_"):  # a failed first call leaves no classes behind
                del self.classes_, self._label_binarizer
            raise

    def predict(self, X: Any) -> np.ndarray:
        """Class labels (an indicator matrix for multilabel targets), as NumPy."""
        proba = self._forward(X)  # first: it raises NotFittedError before fit
        return self._label_binarizer.inverse_transform(proba)

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities ``(n_samples, n_classes)``, columns in the order of ``classes_``."""
        proba = self._forward(X)
        if proba.shape[1] == 1:
            return np.hstack([1.0 - proba, proba])
        return proba

    def predict_log_proba(self, X: Any) -> np.ndarray:
        """``log(predict_proba(X))``."""
        with np.errstate(divide="ignore"):
            return np.log(self.predict_proba(X))

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True
        return tags


class MLPRegressor(RegressorMixin, _BaseMLP):
    """Multi-layer perceptron regressor with scikit-learn's interface, trained by nn_xp on any backend.

    Parameters and attributes are those of :class:`MLPClassifier` (less
    ``classes_``), with scikit-learn's ``loss`` first: ``"squared_error"``
    (identity output) or ``"poisson"`` (scikit-learn's half Poisson deviance, with
    an ``exp`` output; ``y`` must be non-negative). With ``early_stopping`` the
    validation score is scikit-learn's R² (averaged over the outputs, 0.0 for a
    constant target that is not predicted exactly).

    Examples
    --------
    >>> import numpy as np
    >>> from nn_xp.sklearn import MLPRegressor
    >>> X = np.linspace(-3, 3, 200).reshape(-1, 1)
    >>> reg = MLPRegressor(hidden_layer_sizes=(32,), activation="tanh", batch_size=32,
    ...                    learning_rate_init=0.01, random_state=0, backend="numpy").fit(X, np.sin(X).ravel())
    >>> reg.score(X, np.sin(X).ravel()) > 0.95
    True
    """

    _y_options: dict = {"y_numeric": True}

    # scikit-learn's signature, ``loss`` first
    def __init__(self, loss="squared_error", hidden_layer_sizes=(100,), activation="relu", *, solver="adam",
                 alpha=0.0001, batch_size="auto", learning_rate="constant", learning_rate_init=0.001,
                 power_t=0.5, max_iter=200, shuffle=True, random_state=None, tol=1e-4, verbose=False,
                 warm_start=False,
                 momentum=0.9, nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1,
                 beta_1=0.9, beta_2=0.999, epsilon=1e-8, n_iter_no_change=10, max_fun=15000, backend=None,
                 device=None, dtype=None):
        super().__init__(
            hidden_layer_sizes, activation, solver=solver, alpha=alpha, batch_size=batch_size,
            learning_rate=learning_rate, learning_rate_init=learning_rate_init, power_t=power_t,
            max_iter=max_iter, shuffle=shuffle, random_state=random_state, tol=tol, verbose=verbose,
            warm_start=warm_start,
            momentum=momentum, nesterovs_momentum=nesterovs_momentum, early_stopping=early_stopping,
            validation_fraction=validation_fraction, beta_1=beta_1, beta_2=beta_2, epsilon=epsilon,
            n_iter_no_change=n_iter_no_change, max_fun=max_fun, backend=backend, device=device, dtype=dtype)
        self.loss = loss

    def _encode(self, y: np.ndarray, incremental: bool) -> tuple[np.ndarray, None]:
        if not any(self.loss == name for name in _LOSSES):
            raise ValueError(f"loss must be one of {tuple(_LOSSES)}, got {self.loss!r}")
        if self.loss == "poisson" and np.any(y < 0):
            raise ValueError("Some value(s) of y are negative which is not allowed for Poisson regression.")
        return y, None

    def _output(self) -> tuple[str, str, str]:
        return _LOSSES[self.loss]

    def _score_outputs(self, A: np.ndarray, Y: np.ndarray, sample_weight: np.ndarray | None = None) -> float:
        """scikit-learn's validation score: R² (averaged over the outputs; weighted with ``sample_weight``),
        NaN where a prediction is not finite."""
        if not np.all(np.isfinite(A)):
            return float("nan")
        return float(r2_score(Y, A.ravel() if A.shape[1] == 1 else A, sample_weight=sample_weight))

    @available_if(_stochastic_solver)
    def partial_fit(self, X: Any, y: Any, sample_weight: Any = None):
        """One epoch over ``(X, y)``, continuing the weights and the optimizer state (``sample_weight`` as
        for ``fit``)."""
        return self._fit(X, y, incremental=True, sample_weight=sample_weight)

    def predict(self, X: Any) -> np.ndarray:
        """Predictions as NumPy: ``(n_samples,)`` for one output, else ``(n_samples, n_outputs)``."""
        out = self._forward(X)
        return out.ravel() if out.shape[1] == 1 else out

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        tags.target_tags.positive_only = self.loss == "poisson"
        return tags


#: scikit-learn's regression losses -> nn_xp's loss, its output activation, and scikit-learn's name for it
_LOSSES = {"squared_error": ("mse", "identity", "identity"), "poisson": ("poisson", "exp", "exp")}
