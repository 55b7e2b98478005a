"""The machinery behind nn_xp.sklearn's estimators: parameters, fitting, stopping rules, pickling.

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
    from sklearn.base import BaseEstimator
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.model_selection import train_test_split
    from sklearn.utils import check_random_state, column_or_1d
    from sklearn.utils.validation import check_is_fitted, validate_data
except ImportError as exc:  # validate_data is new in scikit-learn 1.6
    raise ImportError("nn_xp.sklearn needs scikit-learn >= 1.6: pip install 'nn_xp[sklearn]'") from exc

from .backends import BackendUnavailableError
from .callbacks import Callback, EarlyStopping, StopTraining
from .network import Network
from .optimizers import SGD, Adam

#: scikit-learn's activation names -> nn_xp's
_ACTIVATIONS = {"identity": "identity", "logistic": "sigmoid", "tanh": "tanh", "relu": "relu"}
_FLOATS = (np.float64, np.float32)


class _InvScaling(Callback):
    """scikit-learn's ``learning_rate='invscaling'``: after each epoch ``lr = lr_init / (t + 1) ** power_t``,
    ``t`` the number of samples seen."""

    def __init__(self, initial: float, power_t: float, t: int, n_samples: int) -> None:
        self.initial, self.power_t, self.t, self.n_samples = initial, power_t, t, n_samples

    def on_train_begin(self, net: Any) -> None:
        self.optimizer = net.optimizer

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        self.t += self.n_samples
        self.optimizer.learning_rate = self.initial / (self.t + 1) ** self.power_t


class _ScikitStopping(EarlyStopping):
    """scikit-learn's stopping rule on an :class:`nn_xp.EarlyStopping`.

    An epoch counts as no improvement unless it beats the best value so far by
    ``min_delta`` (tol); the best value (and, with ``restore_best_weights``, its
    weights) follows every gain, however small. So a loss still falling, but by
    less than tol an epoch, stops training as in scikit-learn (Keras' rule would
    keep going). With ``adaptive`` (``learning_rate='adaptive'``) the learning rate
    is divided by 5 where training would stop, until it is at most 1e-6.
    """

    def __init__(self, monitor: str, patience: int, min_delta: float, restore_best_weights: bool,
                 adaptive: bool = False) -> None:
        super().__init__(monitor, patience, min_delta, restore_best_weights)
        self.adaptive = adaptive

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        value = logs[self.monitor]
        self.wait = 0 if self._improved(value) else self.wait + 1
        if (value > self.best) if self.maximize else (value < self.best):
            self.best, self.best_epoch = value, epoch
            if self.restore_best_weights:
                self.keep_best_weights()
        if self.wait < self.patience:
            return
        opt = self.net.optimizer
        if self.adaptive and opt.learning_rate > 1e-6:
            opt.learning_rate /= 5.0
            self.wait = 0
            return
        self.stopped_epoch = epoch
        raise StopTraining(f"{self.monitor} did not improve by more than {self.min_delta} "
                           f"for {self.patience} epochs")


class _BaseMLP(BaseEstimator):
    """Shared by both estimators; the parameters are scikit-learn's (see ``MLPClassifier``)."""

    def __init__(self, hidden_layer_sizes=(100,), activation="relu", *, solver="adam", alpha=0.0001,
                 batch_size="auto", learning_rate="constant", learning_rate_init=0.001, power_t=0.5,
                 max_iter=200, shuffle=True, random_state=None, tol=1e-4, verbose=False, warm_start=False,
                 momentum=0.9, nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1,
                 beta_1=0.9, beta_2=0.999, epsilon=1e-8, n_iter_no_change=10, backend=None, device=None,
                 dtype=None):
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
        for name, valid in (("activation", tuple(_ACTIVATIONS)), ("solver", ("adam", "sgd")),
                            ("learning_rate", ("constant", "invscaling", "adaptive")),
                            ("dtype", (None, "float32", "float64"))):
            if not any(getattr(self, name) == v for v in valid):
                hint = " ('lbfgs' is not available in nn_xp)" if name == "solver" else ""
                raise ValueError(f"{name} must be one of {valid}, got {getattr(self, name)!r}{hint}")
        if not (self.batch_size == "auto" or _is_int(self.batch_size, 1)):
            raise ValueError(f"batch_size must be 'auto' or a positive integer, got {self.batch_size!r}")
        if not _is_int(self.max_iter, 1):
            raise ValueError(f"max_iter must be a positive integer, got {self.max_iter!r}")
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

    # -------------------------------------------------------------- fitting
    def _fit(self, X: Any, y: Any, *, incremental: bool, classes: Any = None):
        hidden = self._check_params()
        if incremental and self.early_stopping:
            raise ValueError("partial_fit does not support early_stopping=True")
        reset = not hasattr(self, "network_") or not (self.warm_start or incremental)
        X, y = validate_data(self, X, y, multi_output=True, dtype=_FLOATS, reset=reset, **self._y_options)
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        Y, stratify = self._encode(y, reset, classes)
        rs = check_random_state(self.random_state)
        if reset:
            self._initialize(X, Y, hidden, rs)
        net = self.network_
        X = X.astype(net.dtype_name, copy=False)  # convert on the host: the device gets the final bytes, once

        X, Y, validation = self._hold_out(X, Y, rs, stratify)
        n = X.shape[0]
        batch_size = self._batch_size(n)

        callbacks: list[Callback] = []
        if self.solver == "sgd" and self.learning_rate == "invscaling":
            callbacks.append(_InvScaling(self.learning_rate_init, self.power_t, self.t_, n))
        stop = None
        if not incremental:
            monitor, min_delta = (("loss", self.tol) if validation is None
                                  else self._val_monitor(validation[1]))
            # scikit-learn stops once n_iter_no_change epochs in a row failed to improve, on the next one
            rounds = self.max_iter if self.n_iter_no_change == math.inf else int(self.n_iter_no_change)
            patience = rounds + 1
            stop = _ScikitStopping(monitor, patience, min_delta, restore_best_weights=validation is not None,
                                   adaptive=self.solver == "sgd" and self.learning_rate == "adaptive")
            callbacks.append(stop)
        keep = incremental and net.optimizer is not None  # partial_fit continues the optimizer's state
        history = net.fit(X, Y, epochs=1 if incremental else self.max_iter,
                          optimizer=None if keep else self._optimizer(batch_size), batch_size=batch_size,
                          shuffle=self.shuffle, validation_data=validation, callbacks=callbacks,
                          verbose=2 if self.verbose else 0)

        self.n_iter_ = len(history)
        self.t_ += self.n_iter_ * n
        self.loss_curve_ = self.loss_curve_ + history["loss"]
        self.loss_ = self.loss_curve_[-1]
        if validation is not None:
            scores = self._val_scores(history, validation[1])
            self.validation_scores_ = list(self.validation_scores_ or []) + scores
            self.best_validation_score_ = max(scores)
            self.best_loss_ = None
        else:
            self.validation_scores_ = self.best_validation_score_ = None
            self.best_loss_ = min(self.loss_curve_)
        if not incremental and self.n_iter_ == self.max_iter and stop.stopped_epoch is None:
            warnings.warn(f"Stochastic Optimizer: Maximum iterations ({self.max_iter}) reached and the "
                          "optimization hasn't converged yet.", ConvergenceWarning, stacklevel=3)
        return self

    def _hold_out(self, X: np.ndarray, Y: np.ndarray, rs: np.random.RandomState, stratify: Any):
        """The training part and, with early stopping, scikit-learn's validation split (else None)."""
        if not self.early_stopping:
            return X, Y, None
        X, Xv, Y, Yv = train_test_split(X, Y, test_size=self.validation_fraction, random_state=rs,
                                        stratify=stratify)
        if Xv.shape[0] < 2:
            raise ValueError("The validation set is too small. Increase 'validation_fraction' or the size "
                             "of your dataset.")
        return X, Y, (Xv, Yv)

    def _batch_size(self, n: int) -> int:
        batch_size = min(200, n) if self.batch_size == "auto" else self.batch_size
        if batch_size > n:
            warnings.warn("Got `batch_size` larger than sample size. It is going to be clipped", UserWarning,
                          stacklevel=4)
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
                                seed=seed)
        self.n_layers_, self.n_outputs_ = len(sizes), n_out
        self.t_, self.loss_curve_, self.validation_scores_ = 0, [], None

    def _optimizer(self, batch_size: int):
        # scikit-learn adds alpha * W / batch to each batch's gradient: L2 decay of alpha / batch_size
        decay = self.alpha / batch_size
        if self.solver == "adam":
            return Adam(self.learning_rate_init, self.beta_1, self.beta_2, self.epsilon, weight_decay=decay)
        return SGD(self.learning_rate_init, momentum=self.momentum,
                   nesterov=bool(self.nesterovs_momentum and self.momentum), weight_decay=decay)

    def fit(self, X: Any, y: Any):
        """Train on ``(X, y)`` for up to ``max_iter`` epochs (from the current weights when ``warm_start``).

        Returns
        -------
        self
        """
        self._fit(X, y, incremental=False)
        self.network_.release_buffers()  # a fitted estimator holds weights, not training buffers
        return self

    # ----------------------------------------------------------- predicting
    def _forward(self, X: Any) -> np.ndarray:
        """The output layer's activations, as host NumPy."""
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=_FLOATS)
        return self.network_.predict(X.astype(self.network_.dtype_name, copy=False))

    @property
    def coefs_(self) -> list[np.ndarray]:
        """Host copies of the weight matrices in scikit-learn's layout ``(n_in, n_out)``."""
        check_is_fitted(self)
        return [W.T for W, _ in self.network_.get_weights()]

    @property
    def intercepts_(self) -> list[np.ndarray]:
        """Host copies of the bias vectors."""
        check_is_fitted(self)
        return [b for _, b in self.network_.get_weights()]

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
                "weights": net.get_weights(), "rng": net.rng, "optimizer": saved_opt}
        return state

    def __setstate__(self, state: dict) -> None:
        """Rebuild the network on the backend and device it was trained on; where that is not usable
        here (a CuPy model opened on a laptop), on NumPy with a ``UserWarning``."""
        state = dict(state)
        saved = state.pop("_saved_network", None)
        super().__setstate__(state)
        if saved is not None:
            self.network_ = _rebuild(saved)


def _is_int(value: Any, low: int) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool) and value >= low


def _device_spec(device: Any) -> Any:
    """A device as plain data (``"cpu"``, ``"cuda:1"``, an index): a pickle never imports a GPU library."""
    index = getattr(device, "id", None)  # cupy.cuda.Device
    return index if isinstance(index, int) else str(device)


def _rebuild(saved: dict) -> Network:
    def build(backend: str, device: Any) -> Network:
        return Network(saved["layer_sizes"], saved["activations"], loss=saved["loss"], backend=backend,
                       device=device, dtype=saved["dtype"], seed=0)

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
