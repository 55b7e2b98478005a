"""scikit-learn estimators trained by nn_xp: ``MLPClassifier`` and ``MLPRegressor``.

scikit-learn is an optional extra (``pip install 'nn_xp[sklearn]'``), imported
only here. The estimators take scikit-learn's host data (NumPy, pandas, lists),
check it with scikit-learn's own validation, move it to the backend's device once
per ``fit`` and hand predictions back as NumPy. A fitted estimator pickles its
weights (and optimizer state) as host NumPy arrays, so a model trained on a GPU
loads anywhere; see ``__getstate__``.

NumPy appears here because the host is the point: scikit-learn's data and results.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
from sklearn.base import ClassifierMixin, RegressorMixin  # noqa: E402
from sklearn.preprocessing import LabelBinarizer  # noqa: E402
from sklearn.utils.multiclass import check_classification_targets, type_of_target, unique_labels  # noqa: E402

from ._sklearn_base import _BaseMLP, _ScikitStopping  # noqa: F401 (imports scikit-learn, or says how to)

__all__ = ["MLPClassifier", "MLPRegressor"]


class MLPClassifier(ClassifierMixin, _BaseMLP):
    """Multi-layer perceptron classifier with scikit-learn's interface, trained by nn_xp on any backend.

    Softmax output and cross-entropy for multiclass targets; sigmoid outputs and
    binary cross-entropy for binary and multilabel (indicator) targets.

    Parameters
    ----------
    hidden_layer_sizes, activation, solver, alpha, batch_size, learning_rate, learning_rate_init, power_t,
    max_iter, shuffle, random_state, tol, verbose, warm_start, momentum, nesterovs_momentum, early_stopping,
    validation_fraction, beta_1, beta_2, epsilon, n_iter_no_change
        As in :class:`sklearn.neural_network.MLPClassifier`, with the same
        defaults; ``solver`` is ``"adam"`` or ``"sgd"`` (no ``"lbfgs"``). ``alpha``
        becomes the optimizer's L2 ``weight_decay = alpha / batch_size`` (the
        gradient scikit-learn adds), and ``loss_curve_`` holds the data loss
        without the penalty. Training stops by scikit-learn's rule, on the
        training loss or, with ``early_stopping``, on the validation accuracy
        (the best epoch's weights are then kept).
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
        As in scikit-learn (``coefs_`` and ``intercepts_`` are host copies).
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

    def _encode(self, y: np.ndarray, reset: bool, classes: Any) -> tuple[np.ndarray, Any]:
        """Targets for nn_xp (class ids for multiclass, else 0/1 columns) and the labels to stratify on."""
        check_classification_targets(y)
        if reset:
            multilabel = type_of_target(y).startswith("multilabel")
            self._label_binarizer = LabelBinarizer().fit(y if classes is None or multilabel else classes)
            self.classes_ = self._label_binarizer.classes_
        else:
            unseen = np.setdiff1d(unique_labels(y), self.classes_)
            if len(unseen):
                raise ValueError("`y` has classes not in `self.classes_`. "
                                 f"`self.classes_` has {self.classes_}. "
                                 f"'y' has {unique_labels(y)}.")
        Y = self._label_binarizer.transform(y)
        if self._label_binarizer.y_type_ == "multiclass":
            Y = np.argmax(Y, axis=1)  # class ids: the device one-hot encodes them
        if self._label_binarizer.y_type_.startswith("multilabel"):
            return Y, None
        labels = Y if Y.ndim == 1 else Y[:, 0]
        return Y, (labels if np.unique(labels, return_counts=True)[1].min() >= 2 else None)

    def _output(self) -> tuple[str, str, str]:
        if self._label_binarizer.y_type_ == "multiclass":
            return "cross_entropy", "softmax", "softmax"
        return "binary_cross_entropy", "sigmoid", "logistic"

    def _val_monitor(self, Yv: np.ndarray) -> tuple[str, float]:
        return "val_accuracy", self.tol

    def _val_scores(self, history: Any, Yv: np.ndarray) -> list[float]:
        return list(history["val_accuracy"])

    def partial_fit(self, X: Any, y: Any, classes: Any = None):
        """One epoch over ``(X, y)``, continuing the weights and the optimizer state.

        ``classes`` (every label that will ever appear) is required on the first call.
        """
        if not hasattr(self, "classes_"):
            if classes is None and not type_of_target(y).startswith("multilabel"):
                raise ValueError("classes must be passed on the first call to partial_fit.")
        elif classes is not None and not np.array_equal(self.classes_, unique_labels(classes)):
            raise ValueError(f"`classes={classes!r}` is not the same as on last call to partial_fit, "
                             f"was: {self.classes_!r}")
        return self._fit(X, y, incremental=True, classes=classes)

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
    """Multi-layer perceptron regressor (squared error, identity output) with scikit-learn's interface.

    Parameters and attributes are those of :class:`MLPClassifier` (less
    ``classes_``), with scikit-learn's ``loss`` first; only ``"squared_error"``
    is available. With ``early_stopping`` the validation score is R² (the
    variance-weighted one for several outputs), monitored through the validation
    loss with ``min_delta`` scaled so that ``tol`` applies to R².

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
                 beta_1=0.9, beta_2=0.999, epsilon=1e-8, n_iter_no_change=10, backend=None, device=None,
                 dtype=None):
        super().__init__(
            hidden_layer_sizes, activation, solver=solver, alpha=alpha, batch_size=batch_size,
            learning_rate=learning_rate, learning_rate_init=learning_rate_init, power_t=power_t,
            max_iter=max_iter, shuffle=shuffle, random_state=random_state, tol=tol, verbose=verbose,
            warm_start=warm_start,
            momentum=momentum, nesterovs_momentum=nesterovs_momentum, early_stopping=early_stopping,
            validation_fraction=validation_fraction, beta_1=beta_1, beta_2=beta_2, epsilon=epsilon,
            n_iter_no_change=n_iter_no_change, backend=backend, device=device, dtype=dtype)
        self.loss = loss

    def _encode(self, y: np.ndarray, reset: bool, classes: Any) -> tuple[np.ndarray, None]:
        if self.loss != "squared_error":
            raise ValueError(f"loss must be 'squared_error', got {self.loss!r} "
                             "('poisson' is not available in nn_xp)")
        return y, None

    def _output(self) -> tuple[str, str, str]:
        return "mse", "identity", "identity"

    @staticmethod
    def _sst(Yv: np.ndarray) -> float:
        """Half the total sum of squares per validation sample: val_loss = sst * (1 - R²)."""
        Yv = Yv.reshape(Yv.shape[0], -1)
        return 0.5 * float(np.sum((Yv - Yv.mean(axis=0)) ** 2)) / Yv.shape[0]

    def _val_monitor(self, Yv: np.ndarray) -> tuple[str, float]:
        sst = self._sst(Yv)
        return "val_loss", self.tol * sst if sst > 0 else self.tol

    def _val_scores(self, history: Any, Yv: np.ndarray) -> list[float]:
        sst = self._sst(Yv)
        return [1.0 - v / sst if sst > 0 else math.nan for v in history["val_loss"]]

    def partial_fit(self, X: Any, y: Any):
        """One epoch over ``(X, y)``, continuing the weights and the optimizer state."""
        return self._fit(X, y, incremental=True)

    def predict(self, X: Any) -> np.ndarray:
        """Predictions as NumPy: ``(n_samples,)`` for one output, else ``(n_samples, n_outputs)``."""
        out = self._forward(X)
        return out.ravel() if out.shape[1] == 1 else out

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags
