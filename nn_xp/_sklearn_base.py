"""The machinery behind nn_xp.sklearn's estimators: parameters, fitting, weights, pickling.

The stochastic solvers run nn_xp's ``Network.fit`` with scikit-learn's epochs as
callbacks (:mod:`._sklearn_epochs`); lbfgs is SciPy's (:mod:`._lbfgs`).
scikit-learn is imported here and in nn_xp.sklearn only. NumPy appears because the
host is the point: scikit-learn's data and results.
"""
from __future__ import annotations

import math
import warnings
from numbers import Integral, Real
from typing import Any

import numpy as np

try:
    import scipy.sparse as sp  # comes with scikit-learn
    from sklearn.base import BaseEstimator
    from sklearn.exceptions import ConvergenceWarning, NotFittedError
    from sklearn.model_selection import train_test_split
    from sklearn.utils import check_random_state, column_or_1d
    from sklearn.utils.validation import _check_sample_weight, check_is_fitted, validate_data
except ImportError as exc:  # validate_data is new in scikit-learn 1.6
    raise ImportError("nn_xp.sklearn needs scikit-learn >= 1.6: pip install 'nn_xp[sklearn]'") from exc

from . import _lbfgs
from ._sklearn_epochs import InvScaling, ScikitEpochs
from ._validation import as_model_array
from .backends import BackendUnavailableError, to_numpy
from .network import Network
from .optimizers import SGD, Adam

#: scikit-learn's activation names -> nn_xp's
_ACTIVATIONS = {"identity": "identity", "logistic": "sigmoid", "tanh": "tanh", "relu": "relu"}
_FLOATS = (np.float64, np.float32)
_SPARSE = ["csr", "csc"]  # what scikit-learn's MLP takes; other formats are converted to CSR
#: values per dense chunk when predicting from a sparse matrix
_SPARSE_CHUNK = 1 << 20
_STOCHASTIC = ("sgd", "adam")


def _stochastic_solver(estimator: Any) -> bool:
    """``partial_fit`` exists for the stochastic solvers only (scikit-learn's ``available_if`` rule)."""
    if estimator.solver not in _STOCHASTIC:
        raise AttributeError("partial_fit is only available for stochastic optimizers. "
                             f"{estimator.solver} is not stochastic.")
    return True


class _BaseMLP(BaseEstimator):
    """Shared by both estimators; the parameters are scikit-learn's (see ``MLPClassifier``)."""

    def __init__(self, hidden_layer_sizes=(100,), activation="relu", *, solver="adam", alpha=0.0001,
                 batch_size="auto", learning_rate="constant", learning_rate_init=0.001, power_t=0.5,
                 max_iter=200, shuffle=True, random_state=None, tol=1e-4, verbose=False, warm_start=False,
                 momentum=0.9, nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1,
                 beta_1=0.9, beta_2=0.999, epsilon=1e-8, n_iter_no_change=10, max_fun=15000, backend=None,
                 device=None, dtype=None):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.power_t = power_t
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.max_fun = max_fun
        self.backend = backend
        self.device = device
        self.dtype = dtype

    # ------------------------------------------------------------- checks
    def _check_params(self) -> list[int]:
        h = self.hidden_layer_sizes
        hidden = [h] if isinstance(h, Integral) else list(h) if hasattr(h, "__iter__") else None
        if hidden is None or any(isinstance(n, bool) or not isinstance(n, Integral) or n < 1 for n in hidden):
            raise ValueError(f"hidden_layer_sizes must be a positive integer or a sequence of them, "
                             f"got {h!r}")
        for name, valid in (("activation", tuple(_ACTIVATIONS)), ("solver", ("lbfgs", "sgd", "adam")),
                            ("learning_rate", ("constant", "invscaling", "adaptive")),
                            ("dtype", (None, "float32", "float64"))):
            if not any(getattr(self, name) == v for v in valid):
                raise ValueError(f"{name} must be one of {valid}, got {getattr(self, name)!r}")
        if not (self.batch_size == "auto" or _is_int(self.batch_size, 1)):
            raise ValueError(f"batch_size must be 'auto' or a positive integer, got {self.batch_size!r}")
        for name in ("max_iter", "max_fun"):
            if not _is_int(getattr(self, name), 1):
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        if not (_is_int(self.n_iter_no_change, 1) or self.n_iter_no_change == math.inf):
            raise ValueError("n_iter_no_change must be a positive integer or numpy.inf, "
                             f"got {self.n_iter_no_change!r}")
        rate = self.learning_rate_init
        if isinstance(rate, bool) or not isinstance(rate, Real) or not 0 < rate < math.inf:
            raise ValueError(f"learning_rate_init must be a positive number, got {rate!r}")
        for name in ("alpha", "tol", "power_t"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, Real) or not 0 <= value < math.inf:
                raise ValueError(f"{name} must be a non-negative number, got {value!r}")
        fraction = self.validation_fraction
        if self.early_stopping and not (isinstance(fraction, Real) and 0 < fraction < 1):
            raise ValueError(f"validation_fraction must be in (0, 1), got {self.validation_fraction!r}")
        return hidden

    def _validate(self, X: Any, y: Any, reset: bool) -> tuple[np.ndarray, np.ndarray]:
        """scikit-learn's checks of ``(X, y)``; sparse matrices come back dense (nn_xp trains on dense
        arrays, and the device holds the whole ``X`` either way)."""
        X, y = validate_data(self, X, y, accept_sparse=_SPARSE, multi_output=True, dtype=_FLOATS, reset=reset,
                             **self._y_options)
        if sp.issparse(y):
            y = y.toarray()
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        return _dense(X), y

    # -------------------------------------------------------------- fitting
    def _fit(self, X: Any, y: Any, *, incremental: bool, sample_weight: Any = None):
        hidden = self._check_params()
        if incremental and self.early_stopping:
            raise ValueError("partial_fit does not support early_stopping=True")
        # as scikit-learn: weights of an earlier fit (or assigned to coefs_) are kept by warm_start and
        # partial_fit, and drawn afresh otherwise
        reset = not hasattr(self, "network_") or not (self.warm_start or incremental)
        X, y = self._validate(X, y, reset)
        sample_weight = _sample_weight(sample_weight, X)
        Y, stratify = self._encode(y, incremental)
        rs = check_random_state(self.random_state)
        if reset:
            self._initialize(X, Y, hidden, rs)
        X = X.astype(self.network_.dtype_name, copy=False)  # on the host: the device gets the final bytes
        if self.solver == "lbfgs":
            self._fit_lbfgs(X, Y, sample_weight)
        else:
            self._fit_stochastic(X, Y, rs, stratify, incremental, sample_weight)
        return self

    def _fit_lbfgs(self, X: np.ndarray, Y: np.ndarray, sample_weight: np.ndarray | None) -> None:
        net = self.network_
        net.l2 = self.alpha  # scikit-learn's L2 term, on the weights alone
        w = total = None
        with net.backend.context():
            X, _ = net.as_input(X)  # to the device once
            Y = net.as_target(Y)
            if sample_weight is not None:  # scikit-learn divides the loss and the L2 term by their sum
                w, _ = as_model_array(sample_weight, "sample_weight", net.backend, net.dtype_name, 1,
                                      allow_1d=True)
                total = float(np.sum(sample_weight))
        self.n_iter_, self.loss_, losses = _lbfgs.minimize(
            net, X, Y, max_iter=self.max_iter, max_fun=self.max_fun, tol=self.tol, scale=self._loss_scale(),
            w=w, total=total)
        self.loss_curve_ = self.loss_curve_ + losses

    def _fit_stochastic(self, X: np.ndarray, Y: np.ndarray, rs: np.random.RandomState, stratify: Any,
                        incremental: bool, sample_weight: np.ndarray | None) -> None:
        net = self.network_
        X, Y, sample_weight, validation = self._hold_out(X, Y, sample_weight, rs, stratify)
        n = X.shape[0]
        net.l2, weighted = self.alpha, {}  # scikit-learn's L2 term: alpha * W / batch rows, weights alone
        if sample_weight is not None:  # scikit-learn divides each batch's loss, delta and L2 term by the
            weighted = {"sample_weight": sample_weight, "weighted_mean": True}  # batch's sum of weights
        batch_size = self._batch_size(n)
        epochs = self._epochs(validation)
        callbacks = [epochs]
        if self.solver == "sgd" and self.learning_rate == "invscaling":
            callbacks.append(InvScaling(self.learning_rate_init, self.power_t, self.t_, n))
        keep = incremental and net.optimizer is not None  # partial_fit continues the optimizer's state
        diverged = interrupted = None
        try:
            net.fit(X, Y, epochs=1 if incremental else self.max_iter,
                    optimizer=None if keep else self._optimizer(), batch_size=batch_size,
                    shuffle=self.shuffle, callbacks=callbacks, verbose=0, **weighted)
        except FloatingPointError as exc:  # nn_xp rolled the network back to finite weights
            diverged = exc
        except KeyboardInterrupt:  # scikit-learn keeps what was trained (nn_xp undid the half-done epoch)
            warnings.warn("Training interrupted by user.", UserWarning, stacklevel=4)
            interrupted = True
        self._record(epochs, n, validation is not None, diverged is not None)
        if (diverged or interrupted) and validation is not None and epochs.best_weights is not None:
            net.restore(epochs.best_weights)  # what EarlyStopping does at the end of a fit that ends well
        if diverged is not None:
            if validation is None:  # scikit-learn's error
                raise ValueError(_lbfgs.NONFINITE) from diverged
            warnings.warn(f"the loss became non-finite in iteration {self.n_iter_}; training stopped there "
                          "and kept the weights of the best validation score "
                          f"({self.best_validation_score_:f}). Try a smaller learning_rate_init, or scale "
                          "the data.", ConvergenceWarning, stacklevel=4)
        elif (not (incremental or interrupted) and self.n_iter_ == self.max_iter
              and epochs.stopped_epoch is None):
            warnings.warn(f"Stochastic Optimizer: Maximum iterations ({self.max_iter}) reached and the "
                          "optimization hasn't converged yet.", ConvergenceWarning, stacklevel=4)

    def _epochs(self, validation: tuple | None) -> ScikitEpochs:
        """scikit-learn's stopping rule, continuing where the last fit or partial_fit left it."""
        rounds = self.max_iter if self.n_iter_no_change == math.inf else int(self.n_iter_no_change)
        score = None
        if validation is not None:
            net, (Xv, Yv, wv) = self.network_, validation
            with net.backend.context():
                Xv_device, _ = net.as_input(Xv)  # to the device once; predicted there after every epoch

            def score() -> float:
                return self._score_outputs(to_numpy(net.predict(Xv_device)), Yv, wv)

        # a solver or early_stopping changed between warm starts: the rule starts afresh
        best = getattr(self, "best_loss_" if score is None else "best_validation_score_", None)
        # scikit-learn stops once n_iter_no_change epochs in a row failed to improve, on the next one
        return ScikitEpochs("val_score" if score else "loss", rounds + 1, self.tol,
                            restore_best_weights=validation is not None,
                            adaptive=self.solver == "sgd" and self.learning_rate == "adaptive", score=score,
                            scale=self._loss_scale(), verbose=bool(self.verbose), best=best,
                            wait=getattr(self, "_no_improvement_count", 0))

    def _record(self, epochs: ScikitEpochs, n: int, validated: bool, diverged: bool) -> None:
        """The fitted attributes after the epochs of a fit; one more, NaN, for an epoch that diverged."""
        nan = [math.nan] if diverged else []
        self.n_iter_ = len(epochs.losses) + len(nan)
        self.t_ += self.n_iter_ * n
        self.loss_curve_ = self.loss_curve_ + epochs.losses + nan
        self.loss_ = self.loss_curve_[-1]
        self._no_improvement_count = epochs.wait
        if validated:
            before = list(getattr(self, "validation_scores_", None) or [])
            self.validation_scores_ = before + epochs.scores + nan
            self.best_validation_score_, self.best_loss_ = epochs.best, None
        else:
            self.validation_scores_ = self.best_validation_score_ = None
            self.best_loss_ = epochs.best

    def _hold_out(self, X: np.ndarray, Y: np.ndarray, w: np.ndarray | None, rs: np.random.RandomState,
                  stratify: Any):
        """The training part (``X, Y`` and sample weights ``w``, or None) and, with early stopping,
        scikit-learn's validation split ``(X, Y, w)`` (else None)."""
        if not self.early_stopping:
            return X, Y, w, None
        parts = train_test_split(X, Y, *([] if w is None else [w]), test_size=self.validation_fraction,
                                 random_state=rs, stratify=stratify)  # the same split with or without w
        X, Xv, Y, Yv = parts[:4]
        w, wv = parts[4:] if w is not None else (None, None)
        if Xv.shape[0] < 2:
            raise ValueError("The validation set is too small. Increase 'validation_fraction' or the size "
                             "of your dataset.")
        return X, Y, w, (Xv, Yv, wv)

    def _batch_size(self, n: int) -> int:
        batch_size = min(200, n) if self.batch_size == "auto" else self.batch_size
        if batch_size > n:
            warnings.warn("Got `batch_size` larger than sample size. It is going to be clipped", UserWarning,
                          stacklevel=5)
            batch_size = n
        return batch_size

    def _initialize(self, X: np.ndarray, Y: np.ndarray, hidden: list[int], rs: np.random.RandomState) -> None:
        loss, out, self.out_activation_ = self._output()
        n_out = len(self.classes_) if loss == "cross_entropy" else (Y.shape[1] if Y.ndim == 2 else 1)
        sizes = [X.shape[1], *hidden, n_out]
        # an int random_state seeds nn_xp directly: the same start as nn_xp.Network(seed=random_state)
        seed = int(self.random_state) if _is_int(self.random_state, 0) else int(rs.randint(2**31 - 1))
        self.network_ = Network(sizes, [_ACTIVATIONS[self.activation]] * len(hidden) + [out], loss=loss,
                                backend=self.backend, device=self.device, dtype=self.dtype or X.dtype.name,
                                seed=seed, l2=self.alpha)
        self.n_layers_, self.n_outputs_ = len(sizes), n_out
        self.n_iter_, self.t_, self.loss_curve_ = 0, 0, []
        if self.solver in _STOCHASTIC:  # scikit-learn's bookkeeping of the stopping rule
            self._no_improvement_count = 0
            if self.early_stopping:
                self.validation_scores_, self.best_validation_score_, self.best_loss_ = [], -math.inf, None
            else:
                self.validation_scores_, self.best_validation_score_, self.best_loss_ = None, None, math.inf

    def _loss_scale(self) -> float:
        """What the data loss is divided by in what is reported: scikit-learn's squared error is a mean over
        the outputs (its gradient, nn_xp's loss, the sum)."""
        return float(self.n_outputs_) if self.network_.loss_fn.name == "mse" else 1.0

    def _optimizer(self):
        # alpha is the network's l2 penalty (in the gradient, on the weights alone), not a weight decay
        if self.solver == "adam":
            return Adam(self.learning_rate_init, self.beta_1, self.beta_2, self.epsilon)
        return SGD(self.learning_rate_init, momentum=self.momentum,
                   nesterov=bool(self.nesterovs_momentum and self.momentum))

    def fit(self, X: Any, y: Any, sample_weight: Any = None):
        """Train on ``(X, y)``: up to ``max_iter`` epochs (iterations for lbfgs), from the current weights
        when ``warm_start``.

        Parameters
        ----------
        X, y : array-like
        sample_weight : array-like of shape (n_samples,), optional
            Weights of the samples in the loss, its gradient and the early-stopping score; as in
            scikit-learn the loss and the L2 term are divided by the sum of the weights (see
            docs/sklearn.md for mini-batches).

        Returns
        -------
        self
        """
        self._fit(X, y, incremental=False, sample_weight=sample_weight)
        self.network_.release_buffers()  # a fitted estimator holds weights, not training buffers
        return self

    # ----------------------------------------------------------- predicting
    def _forward(self, X: Any) -> np.ndarray:
        """The output layer's activations, as host NumPy (a sparse ``X`` densified a few rows at a time)."""
        check_is_fitted(self)
        X = validate_data(self, X, accept_sparse=_SPARSE, reset=False, dtype=_FLOATS)
        net = self.network_
        if not sp.issparse(X):
            return net.predict(X.astype(net.dtype_name, copy=False))
        X, rows = X.tocsr(), max(1, _SPARSE_CHUNK // max(1, X.shape[1]))
        return np.concatenate([net.predict(X[lo:lo + rows].toarray().astype(net.dtype_name, copy=False))
                               for lo in range(0, X.shape[0], rows)])

    # -------------------------------------------------------------- weights
    @property
    def coefs_(self) -> list[np.ndarray]:
        """The weight matrices in scikit-learn's layout ``(n_in, n_out)``: read-only host copies.

        Assign a list to change them (``est.coefs_ = new``); the arrays are
        read-only because an edit in place could not reach the network's device.
        """
        check_is_fitted(self)
        return [_read_only(W.T) for W, _ in self.network_.get_weights()]

    @coefs_.setter
    def coefs_(self, coefs: Any) -> None:
        self._assign("coefs_", coefs)

    @property
    def intercepts_(self) -> list[np.ndarray]:
        """The bias vectors: read-only host copies (assign a list to change them, as for ``coefs_``)."""
        check_is_fitted(self)
        return [_read_only(b) for _, b in self.network_.get_weights()]

    @intercepts_.setter
    def intercepts_(self, intercepts: Any) -> None:
        self._assign("intercepts_", intercepts)

    def _assign(self, name: str, arrays: Any) -> None:
        """Replace every layer's weights (``coefs_``) or biases (``intercepts_``), all checked first;
        warm_start and partial_fit then continue from them, as in scikit-learn."""
        if not hasattr(self, "network_"):
            raise NotFittedError(f"{name} can be assigned once this {type(self).__name__} is fitted (fit, or "
                                 "one partial_fit, makes its layers); assignment replaces the fitted values")
        pairs = self.network_.get_weights()
        coefs = name == "coefs_"
        expected = [W.T.shape if coefs else b.shape for W, b in pairs]
        try:
            arrays = [np.asarray(a) for a in arrays]
        except TypeError:
            raise TypeError(f"{name} must be a list of arrays, one per layer, "
                            f"got {type(arrays).__name__}") from None
        if len(arrays) != len(expected):
            raise ValueError(f"{name} must hold {len(expected)} arrays (one per layer), got {len(arrays)}")
        for i, (a, shape) in enumerate(zip(arrays, expected)):
            if a.shape != shape:
                raise ValueError(f"{name}[{i}] must have shape {shape} (the fitted network's), got {a.shape}")
        self.network_.set_weights([(a.T, b) if coefs else (W, a) for a, (W, b) in zip(arrays, pairs)])

    # -------------------------------------------------------------- pickling
    def __getstate__(self) -> dict:
        """The estimator's state with the network as host NumPy weights, optimizer state and generator.

        Device arrays and array namespaces never enter the pickle, so a model
        trained on a GPU unpickles on a machine without one (see ``__setstate__``).
        """
        state = dict(super().__getstate__())  # a copy: the default state is the instance __dict__ itself
        net = state.pop("network_", None)
        if net is not None:
            opt = net.optimizer  # rebuilt from its class and constructor arguments; moments as host copies
            saved_opt = None if opt is None else (type(opt), opt.config(), opt.state_dict())
            state["_saved_network"] = {
                "layer_sizes": net.layer_sizes, "activations": net.activations, "loss": net.loss_fn.name,
                "backend": net.backend.name, "device": _device_spec(net.device), "dtype": net.dtype_name,
                "weights": net.get_weights(), "rng": net.rng, "optimizer": saved_opt, "l2": net.l2}
        return state

    def __setstate__(self, state: dict) -> None:
        """Rebuild the network on the backend and device it was trained on; where that is not usable
        here (a CuPy model opened on a laptop), on NumPy with a ``UserWarning``."""
        state = dict(state)
        saved = state.pop("_saved_network", None)
        super().__setstate__(state)
        if saved is not None:
            self.network_ = _rebuild(saved)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True  # taken, and densified (see _validate)
        return tags


def _sample_weight(sample_weight: Any, X: np.ndarray) -> np.ndarray | None:
    """scikit-learn's check of ``sample_weight`` (None stays None: the unweighted fit runs as before)."""
    if sample_weight is None:
        return None
    # non-negative, as nn_xp's fit asks (scikit-learn's MLP takes negative weights, and with them a loss
    # unbounded below), and not all zero: the loss is divided by their sum
    sample_weight = _check_sample_weight(sample_weight, X, dtype=np.float64, ensure_non_negative=True)
    if not np.any(sample_weight):  # scikit-learn < 1.8 lets all-zero weights through
        raise ValueError("Sample weights must contain at least one non-zero number.")
    return sample_weight


def _is_int(value: Any, low: int) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool) and value >= low


def _read_only(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)
    return a


def _dense(X: Any) -> np.ndarray:
    if not sp.issparse(X):
        return X
    try:
        return X.toarray()
    except MemoryError as exc:
        gib = X.shape[0] * X.shape[1] * X.dtype.itemsize / 2**30
        raise MemoryError(f"nn_xp trains on dense arrays, and the sparse X of shape {X.shape} needs "
                          f"{gib:.1f} GiB dense; reduce it first (sklearn.decomposition.TruncatedSVD, say)"
                          ) from exc


def _device_spec(device: Any) -> Any:
    """A device as plain data (``"cpu"``, ``"cuda:1"``, an index): a pickle never imports a GPU library."""
    index = getattr(device, "id", None)  # cupy.cuda.Device
    return index if isinstance(index, int) else str(device)


def _rebuild(saved: dict) -> Network:
    def build(backend: str, device: Any) -> Network:
        return Network(saved["layer_sizes"], saved["activations"], loss=saved["loss"], backend=backend,
                       device=device, dtype=saved["dtype"], seed=0, l2=saved.get("l2", 0.0))

    try:
        net = build(saved["backend"], saved["device"])
    except (BackendUnavailableError, ValueError) as exc:
        warnings.warn(f"this model was trained on {saved['backend']} (device {saved['device']!r}), "
                      f"which is not usable here ({exc}); it was loaded on numpy. Move it with "
                      "estimator.network_.to(backend, device).", UserWarning, stacklevel=3)
        net = build("numpy", None)
    net.set_weights(saved["weights"])
    net.rng = saved["rng"]  # the shuffles continue where they were
    if saved["optimizer"] is not None:
        cls, config, state = saved["optimizer"]
        net.optimizer = cls(**config)
        net.optimizer.load_state_dict(state, net.params)
    return net
