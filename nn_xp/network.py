"""The feed-forward network of the blog post, written once over the array API."""
from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from numbers import Integral
from typing import Any

from . import _kernels as K
from . import backends
from ._host import host_weight, initial_weights, make_rng, to_host_array
from ._typing import Array
from ._validation import as_model_array, check_model_array, check_positive, check_same_samples
from .activations import Activation, get_activation
from .engine import Parameters, Snapshot, select_engine
from .losses import Loss, get_loss
from .training import History
from .training import fit as _fit

__all__ = ["Layer", "Network"]

_DEFAULT_OUTPUT = {"mse": "identity", "binary_cross_entropy": "sigmoid", "cross_entropy": "softmax"}


def on_device(method: Callable) -> Callable:
    """Run a Network method inside its backend's device context (CuPy works on the current GPU)."""

    @functools.wraps(method)
    def wrapper(self: Network, *args: Any, **kwargs: Any) -> Any:
        if not self.backend.needs_context:
            return method(self, *args, **kwargs)
        with self.backend.context():
            return method(self, *args, **kwargs)

    return wrapper


@dataclass(frozen=True)
class Layer:
    """Shape and activation of one dense layer: ``Z = A_prev @ W.T + b``, ``A = g(Z)``."""

    n_in: int
    n_out: int
    activation: Activation


#: the most units a layer may have (weights are drawn on the host: larger layers could never be allocated)
MAX_UNITS = 2**31 - 1


class Network:
    """A feed-forward network trained by back-propagation, on any array-API backend.

    Parameters
    ----------
    layer_sizes : sequence of int
        Units per layer, input first: ``[1, 20, 1]`` is the blog's 1-20-1 network.
    activations : sequence of str, or str, optional
        One per layer after the input. A single name applies to every hidden
        layer, the output then following ``loss``. Default: sigmoid hidden
        layers (the blog's) and the loss's output (identity for ``mse``,
        sigmoid for ``binary_cross_entropy``, softmax for ``cross_entropy``).
    loss : {"mse", "binary_cross_entropy", "cross_entropy"}
    backend, device : optional
        See :func:`nn_xp.resolve_backend`: argument, else ``NN_XP_BACKEND`` /
        ``NN_XP_DEVICE``, else auto (CuPy when a CUDA GPU answers, else NumPy).
    dtype : {"float32", "float64"}
    seed : int or numpy.random.Generator, optional
        Seeds the host generator that draws the initial weights and the shuffles.
    engine : {"auto", "portable", "buffered"}, optional
        How ``fit`` runs a step (see :mod:`nn_xp.engine`): ``"auto"`` writes into
        reused buffers where the library can (NumPy, CuPy), else runs the
        portable math. Both give the same numbers.

    Examples
    --------
    >>> import numpy as np, nn_xp
    >>> net = nn_xp.Network([1, 20, 1], ["sigmoid", "identity"], backend="numpy", dtype="float64")
    >>> X = np.arange(-5, 5, 0.1).reshape(-1, 1)
    >>> history = net.fit(X, np.sin(X), epochs=100, learning_rate=0.1)
    >>> len(history.history["loss"])
    100
    """

    def __init__(self, layer_sizes: Sequence[int], activations: Sequence[str] | str | None = None,
                 loss: str = "mse", backend: str | None = None, device: Any = None,
                 dtype: str = "float32", seed: Any = 0, engine: str | None = None) -> None:
        try:
            sizes = list(layer_sizes) if not isinstance(layer_sizes, (str, bytes)) else []
        except TypeError:
            sizes = []
        if len(sizes) < 2 or any(isinstance(n, bool) or not isinstance(n, Integral) or not 1 <= n <= MAX_UNITS
                                 for n in sizes):
            raise ValueError("layer_sizes must list at least two positive integers (input and output units, "
                             f"at most {MAX_UNITS} each), got {layer_sizes!r}")
        sizes = [int(n) for n in sizes]  # NumPy integers too, as scikit-learn grids produce
        self.loss_fn: Loss = get_loss(loss)
        acts = self._activation_names(activations, len(sizes) - 1)
        self.layers = tuple(Layer(n_in, n_out, get_activation(a))
                            for n_in, n_out, a in zip(sizes[:-1], sizes[1:], acts))
        self._check_pairing()
        self.backend = backends.resolve_backend(backend, device)
        self.dtype = self.backend.dtype(dtype)
        self.dtype_name = dtype
        self.rng = make_rng(seed)
        self.engine_name = "auto" if engine is None else engine  # as asked: to() chooses again from it
        self.engine = select_engine(self.backend, self.dtype, self.engine_name)
        # [W0, b0, W1, b1, ...], laid out by the engine
        self.parameters: Parameters = Parameters([], self.backend.xp)
        self.optimizer = None
        self.history: History | None = None
        self.set_weights(initial_weights(self.rng, sizes, acts))

    # ------------------------------------------------------------------ setup
    def _activation_names(self, activations: Any, n_layers: int) -> list[str]:
        output = _DEFAULT_OUTPUT.get(self.loss_fn.name) or self.loss_fn.fused_with or "identity"
        if activations is None:
            activations = "sigmoid"
        if isinstance(activations, (str, Activation)):
            return [activations] * (n_layers - 1) + [output]
        try:
            acts = list(activations)
        except TypeError:
            raise TypeError(f"activations must be a name or a sequence of names (one per layer), "
                            f"got {activations!r}") from None
        if len(acts) != n_layers:
            raise ValueError(f"activations must name one activation per layer ({n_layers}), "
                             f"got {len(acts)}: {acts!r}")
        return acts

    def _check_pairing(self) -> None:
        out = self.layers[-1].activation.name
        for i, layer in enumerate(self.layers[:-1]):
            if layer.activation.backward is None:
                raise ValueError(f"activation {layer.activation.name!r} may only be the output layer's "
                                 f"(fused with cross_entropy), not hidden layer {i}'s")
        fused = self.loss_fn.fused_with
        if fused is not None and out != fused:
            raise ValueError(f"loss {self.loss_fn.name!r} needs a {fused!r} output layer, got {out!r}")
        if out == "softmax" and self.loss_fn.name != "cross_entropy":
            raise ValueError(f"a softmax output needs loss='cross_entropy', got loss={self.loss_fn.name!r}")

    # ------------------------------------------------------------- properties
    @property
    def xp(self) -> Any:
        """The array namespace the parameters live in."""
        return self.backend.xp

    @property
    def device(self) -> Any:
        return self.backend.device

    @property
    def layer_sizes(self) -> list[int]:
        return [self.layers[0].n_in] + [layer.n_out for layer in self.layers]

    @property
    def activations(self) -> list[str]:
        return [layer.activation.name for layer in self.layers]

    @property
    def params(self) -> dict[str, Array]:
        """The live parameters on the device, keyed ``W0, b0, W1, b1, ...`` (gradients and optimizer state use
        the same names)."""
        return dict(zip(self.param_names, self.parameters))

    @property
    def param_names(self) -> list[str]:
        return [f"{k}{i}" for i in range(len(self.layers)) for k in ("W", "b")]

    @property
    def metric_names(self) -> list[str]:
        """What :meth:`measure` returns and ``fit`` records: ``loss``, and ``accuracy`` for classification."""
        return ["loss"] + (["accuracy"] if self.loss_fn.correct is not None else [])

    def __repr__(self) -> str:
        sizes = "-".join(map(str, self.layer_sizes))
        return (f"Network({sizes}, activations={self.activations}, loss={self.loss_fn.name!r}, "
                f"backend={self.backend.name!r}, device={self.device!r}, dtype={self.dtype_name!r})")

    # ---------------------------------------------------------------- weights
    def get_weights(self) -> list[tuple[Any, Any]]:
        """A host NumPy copy of every layer's ``(W, b)`` (Keras' convention)."""
        p = [backends.to_numpy(a).copy() for a in self.parameters]
        return list(zip(p[0::2], p[1::2]))

    @on_device
    def set_weights(self, weights: Sequence[tuple[Any, Any]]) -> None:
        """Replace every layer's ``(W, b)`` from host (or any) arrays, all checked before any is replaced."""
        try:
            weights = list(weights)
        except TypeError:
            raise TypeError("set_weights expects a sequence of (W, b) pairs, "
                            f"got {type(weights).__name__}") from None
        if len(weights) != len(self.layers):
            raise ValueError(f"set_weights expects {len(self.layers)} (W, b) pairs, got {len(weights)}")
        new = []
        for i, (pair, layer) in enumerate(zip(weights, self.layers)):
            try:
                W, b = pair
            except (TypeError, ValueError):
                raise ValueError(f"weights[{i}] must be a (W, b) pair") from None
            for name, arr, shape in ((f"W{i}", W, (layer.n_out, layer.n_in)), (f"b{i}", b, (layer.n_out,))):
                new.append(host_weight(arr, name, shape))
        self.parameters = self.engine.lay_out(new, self.layers)  # copies: never the caller's arrays

    def snapshot(self, into: Snapshot | None = None) -> Snapshot:
        """Device copies of the parameters (no host round trip), for :meth:`restore`.

        ``into``: an earlier snapshot whose buffers are reused where they fit (one
        copy in all where the engine keeps the parameters in one flat buffer).
        """
        return self.parameters.snapshot(into)

    def restore(self, snapshot: Snapshot) -> None:
        """Set the parameters to a :meth:`snapshot`'s values (in place, so ``params`` stays live)."""
        self.parameters.restore(snapshot)

    def release_buffers(self) -> None:
        """Free the buffers ``fit`` keeps between calls (per-layer ``Z``/``A``, gradients)."""
        self.engine.release()

    # -------------------------------------------------------------- the math
    @on_device
    def evaluate(self, X: Array, *, check_input: bool = True) -> list[tuple[Array | None, Array]]:
        """Forward pass keeping every layer's ``(Z, A)``; ``values[0]`` is ``(None, X)``.

        ``X`` must already be an array of the model's namespace, device and
        dtype, shape ``(n_samples, n_features)`` (``predict`` converts host data).
        ``check_input=False`` skips that check, for callers that made ``X`` so
        themselves (an engine, every batch: scikit-learn's ``check_input``).
        """
        if check_input:
            X = check_model_array(X, "X", self.backend, self.dtype, self.layers[0].n_in)
        return self._forward(X)

    def _forward(self, A: Array) -> list[tuple[Array | None, Array]]:
        values, xp = [(None, A)], self.xp
        for layer, W, b in zip(self.layers, self.parameters[0::2], self.parameters[1::2]):
            Z = K.linear(A, W, b, xp)  # A @ W.T + b: (m, n_out)
            A = layer.activation.forward(Z, xp)  # (m, n_out)
            values.append((Z, A))
        return values

    @on_device
    def output(self, X: Array) -> tuple[Array, Array]:
        """The output layer's ``(Z, A)`` for ``X`` (a model array, as for :meth:`evaluate`), keeping one
        layer's values at a time: inference, where ``evaluate`` keeps every layer's for back-propagation."""
        A = check_model_array(X, "X", self.backend, self.dtype, self.layers[0].n_in)
        Z, xp = A, self.xp
        for layer, W, b in zip(self.layers, self.parameters[0::2], self.parameters[1::2]):
            Z = K.linear(A, W, b, xp)  # A @ W.T + b: (m, n_out)
            A = layer.activation.forward(Z, xp)  # (m, n_out)
        return Z, A

    @on_device
    def compute_gradient(self, values: list[tuple[Array | None, Array]],
                         Y: Array) -> tuple[list[Array], list[Array]]:
        """Back-propagation: ``(dWs, dbs)`` per layer, ``dW`` shaped like ``W`` and ``db`` like ``b``."""
        _, grads = self.value_and_gradient(values, Y)
        return grads[0::2], grads[1::2]

    @on_device
    def value_and_gradient(self, values: list[tuple[Array | None, Array]], Y: Array, *,
                           check_input: bool = True, m: int | None = None) -> tuple[Array, list[Array]]:
        """The loss of :meth:`evaluate`'s ``values`` (a device scalar) and its gradients ``[dW0, db0, ...]``.

        Nothing given is written. ``check_input`` as for :meth:`evaluate`. ``m``: the mean's denominator
        (None: ``Y``'s rows; data-parallel ``fit`` gives a rank's shard and the global batch's rows).
        """
        if check_input:
            self._check_values(values)
            Y = check_model_array(Y, "Y", self.backend, self.dtype, self.layers[-1].n_out)
            check_same_samples(values[0][1], Y, "values[0] (X)", "Y")
        return self._backward(values, Y, m)

    def _check_values(self, values: Any) -> None:
        """``values`` as :meth:`evaluate` gives them for this network: pairs of model arrays of its shapes."""
        n = len(self.layers) + 1
        if not isinstance(values, (list, tuple)) or len(values) != n \
                or not all(isinstance(v, (list, tuple)) and len(v) == 2 for v in values):
            got = f"{len(values)} items" if isinstance(values, (list, tuple)) else type(values).__name__
            raise ValueError(f"values must hold {n} (Z, A) pairs from this network's evaluate, got {got}")
        X = check_model_array(values[0][1], "values[0] (X)", self.backend, self.dtype, self.layers[0].n_in)
        for i, (layer, (Z, A)) in enumerate(zip(self.layers, values[1:]), start=1):
            for name, a in (("Z", Z), ("A", A)):
                shape = getattr(a, "shape", None)
                if shape != (X.shape[0], layer.n_out):
                    raise ValueError(f"values[{i}] {name} has shape {shape}, this network's layer {i - 1} "
                                     f"makes ({X.shape[0]}, {layer.n_out}): values from another network?")

    def _backward(self, values: list[tuple[Array | None, Array]], Y: Array,
                  m: int | None = None) -> tuple[Array, list[Array]]:
        xp, layers, fused = self.xp, self.layers, self.loss_fn.fused_with is not None
        args = (*values[-1], Y, xp) if m is None else (*values[-1], Y, xp, m)
        loss, dA = self.loss_fn.value_and_delta(*args)  # dA = (A_L - Y) / m; fused: dZ itself
        grads: list[Array] = [None] * (2 * len(layers))
        for i in range(len(layers) - 1, -1, -1):
            Z, A = values[i + 1]
            last = i == len(layers) - 1
            # dA * g'(Z), (m, n_out)
            dZ = dA if fused and last else layers[i].activation.backward(dA, Z, A, xp)
            A_prev = values[i][1]
            grads[2 * i] = K.weight_gradient(dZ, A_prev, xp)  # dW = dZ.T @ A_prev: (n_out, n_in)
            grads[2 * i + 1] = K.column_sum(dZ, xp)  # db = sum of dZ over the samples: (n_out,)
            if i:
                dA = dZ @ self.parameters[2 * i]  # dA_prev = dZ W: (m, n_in)
        return loss, grads

    @on_device
    def measure(self, X: Array, Y: Array, batch_size: int | None = None) -> list[Array]:
        """The :attr:`metric_names` of the current weights on model arrays ``(X, Y)``, as device scalars.

        Computed in chunks of ``batch_size`` rows (None: the engine's choice), each
        keeping one layer's values at a time; the loss is the mean over all rows."""
        X = check_model_array(X, "X", self.backend, self.dtype, self.layers[0].n_in)
        Y = check_model_array(Y, "Y", self.backend, self.dtype, self.layers[-1].n_out)
        check_same_samples(X, Y)
        xp, m, loss_fn = self.xp, X.shape[0], self.loss_fn
        loss = correct = None
        for lo, hi, z, a in self.engine.outputs(self, X, batch_size):
            y = Y if hi - lo == m else Y[lo:hi, ...]
            part = loss_fn.value(z, a, y, xp)
            part = part if hi - lo == m else part * ((hi - lo) / m)  # a mean over the chunk's rows
            loss = part if loss is None else loss + part
            if loss_fn.correct is not None:
                right = loss_fn.correct(a, y, xp)
                correct = right if correct is None else correct + right
        return [loss] if correct is None else [loss, correct / m]

    # ------------------------------------------------------------ user-facing
    def as_input(self, X: Any, name: str = "X") -> tuple[Array, bool]:
        """User data as a model array (checked, on the device, in the model's dtype), and whether it came from
        the host (so results go back as NumPy)."""
        return as_model_array(X, name, self.backend, self.dtype_name, self.layers[0].n_in,
                              allow_1d=self.layers[0].n_in == 1)

    def as_target(self, Y: Any, name: str = "Y") -> Array:
        """Targets as a model array; class ids ``(n,)`` become one-hot for cross_entropy."""
        n_out = self.layers[-1].n_out
        if backends.is_host_array(Y):
            Y = to_host_array(Y, name)  # a list of rows is 2-D, a list of labels 1-D
        if self.loss_fn.name == "cross_entropy" and Y.ndim == 1:
            return self._one_hot(Y, name, n_out)
        Y, _ = as_model_array(Y, name, self.backend, self.dtype_name, n_out, allow_1d=n_out == 1)
        return Y

    def _one_hot(self, ids: Any, name: str, n_out: int) -> Array:
        xp = self.xp
        ids, _ = as_model_array(ids, name, self.backend, None, None, allow_1d=True)  # (m, 1), NaN rejected
        bad = (ids < 0) | (ids >= n_out)
        if xp.isdtype(ids.dtype, "real floating"):
            bad = bad | (ids != xp.floor(ids))
        if bool(xp.any(bad)):
            raise ValueError(f"{name} must hold whole class ids in 0..{n_out - 1} (the output layer has "
                             f"{n_out} units), or one-hot rows")
        classes = xp.reshape(xp.arange(n_out, device=self.device), (1, n_out))
        return xp.astype(xp.astype(ids, classes.dtype) == classes, self.dtype)  # (m, n_out)

    @on_device
    def predict(self, X: Any, batch_size: int | None = None) -> Any:
        """The output layer's activations for ``X`` (probabilities for sigmoid/softmax outputs).

        Host input (NumPy, lists) gives a NumPy result; an array of the model's
        backend gives an array of that backend. Rows go through the network in
        chunks of ``batch_size`` (None: the engine's choice, a few MiB of
        activations), each keeping one layer's values at a time, so the memory
        needed beyond ``X`` and the result does not grow with the number of rows.
        """
        X, host = self.as_input(X)
        out = self.engine.predict(self, X, _batch_size(batch_size))
        return backends.to_numpy(out) if host else out

    @on_device
    def predict_classes(self, X: Any, batch_size: int | None = None) -> Any:
        """Class labels: argmax of a softmax output, ``p > 0.5`` for a sigmoid one (``batch_size`` as for
        :meth:`predict`)."""
        X, host = self.as_input(X)
        a = self.engine.predict(self, X, _batch_size(batch_size))
        xp = self.xp
        if self.layers[-1].activation.name == "sigmoid":
            index = xp.__array_namespace_info__().default_dtypes(device=self.device)["indexing"]
            labels = xp.astype(a > 0.5, index)  # as argmax gives: int64, JAX's int32 unless in x64 mode
            labels = labels[:, 0] if a.shape[1] == 1 else labels
        else:
            labels = xp.argmax(a, axis=1)
        return backends.to_numpy(labels) if host else labels

    @on_device
    def loss(self, X: Any, Y: Any, batch_size: int | None = None) -> float:
        """The loss of the current weights on ``(X, Y)`` as a Python float (``batch_size`` as for
        :meth:`predict`)."""
        X, _ = self.as_input(X)
        return float(self.measure(X, self.as_target(Y), _batch_size(batch_size))[0])

    @on_device
    def score(self, X: Any, Y: Any, batch_size: int | None = None) -> float:
        """Accuracy for classification losses; the coefficient of determination R² for mse (``batch_size``
        as for :meth:`predict`)."""
        X, _ = self.as_input(X)
        Y = self.as_target(Y)
        check_same_samples(X, Y)
        batch_size = _batch_size(batch_size)
        if self.loss_fn.correct is not None:
            return float(self.measure(X, Y, batch_size)[1])
        xp, resid = self.xp, None
        for lo, hi, _, a in self.engine.outputs(self, X, batch_size):
            part = xp.sum((Y[lo:hi, ...] - a) ** 2)
            resid = part if resid is None else resid + part
        sums = xp.stack([resid, xp.sum((Y - xp.mean(Y, axis=0)) ** 2)])
        resid, total = backends.to_numpy(sums)
        if total == 0:  # constant targets: scikit-learn's convention, never a division by zero
            return 1.0 if resid == 0 else 0.0
        return float(1.0 - resid / total)

    def fit(self, X: Any, Y: Any, epochs: int = 1000, learning_rate: float | None = None, **kwargs: Any):
        """Train by gradient descent on ``(X, Y)``; the defaults are the blog's full-batch gradient descent
        (SGD without momentum, learning rate 0.1).

        Parameters
        ----------
        X, Y : array-like
            ``(n_samples, n_features)`` and ``(n_samples, n_outputs)``; host data are
            moved to the network's device once. A 1-D ``Y`` is accepted for one
            output, and class ids ``(n,)`` for ``cross_entropy``.
        epochs : int
            Total number of epochs (with ``resume_from``, counting those already done).
        learning_rate : float or callable, optional
            For an optimizer given by name (default 0.1 for SGD, 0.001 for Adam).
            Without ``optimizer``, it sets the rate of the network's optimizer from
            a previous ``fit`` (state kept), or of a new plain SGD.
        optimizer : {"sgd", "adam", "adamw"} or Optimizer, optional
            Default: the network's optimizer from a previous ``fit`` or from the
            checkpoint in ``resume_from`` (state kept), else plain SGD, the blog's
            ``W -= lr * dW``.
        batch_size : int, optional
            None: full batch (the blog's). An integer: mini-batches, reshuffled every
            epoch (when ``shuffle``), the last partial batch included.
        validation_data, validation_split
            A held-out ``(X_val, Y_val)``, or the fraction of the last samples to hold out.
        callbacks
            :class:`~nn_xp.Callback` objects or plain ``f(epoch, logs)`` callables;
            raise :class:`~nn_xp.StopTraining` to end training after the epoch.
        verbose : {0, 1, 2}
            0 silent; 1 a tqdm bar on a terminal, else one line per epoch; 2 one line per epoch.
        checkpoint, checkpoint_every, resume_from
            Write a checkpoint file every ``checkpoint_every`` epochs; continue from one.
        on_nonfinite : {"raise", "warn"}
            When the loss becomes NaN or infinite, the network (weights, optimizer
            state, shuffle generator) is rolled back to the start of the last epoch
            whose loss was finite, a checkpoint written since is rewritten from
            that state, and a ``FloatingPointError`` is raised (or a
            ``RuntimeWarning`` issued and training stopped).
        comm : None, "auto", mpi4py communicator or nn_xp.distributed.Communicator
            Data-parallel training over several processes (see :mod:`nn_xp.distributed`
            and the README's "Scaling out"): every rank passes the same ``X``, ``Y``
            and options, ``batch_size`` is the global batch, cut into per-rank shards,
            and the result is one process's. ``"auto"``: the launcher's (``mpiexec``,
            ``torchrun``), or one process without one. Rank 0 alone writes
            checkpoints and prints; ``resume_from`` is read on rank 0.

        Returns
        -------
        History
        """
        return _fit(self, X, Y, epochs=epochs, learning_rate=learning_rate, **kwargs)

    def to(self, backend: str | None = None, device: Any = None) -> Network:
        """Move parameters and optimizer state to another backend/device, in place; returns the network."""
        target = backends.resolve_backend(backend, device)
        weights = self.get_weights()
        state = self.optimizer.state_dict() if self.optimizer is not None else None
        before = (self.backend, self.dtype, self.engine, self.parameters)
        try:
            self.backend, self.dtype = target, target.dtype(self.dtype_name)
            self.engine = select_engine(target, self.dtype, self.engine_name)
            self.set_weights(weights)
            if state is not None:
                with target.context():
                    self.optimizer.load_state_dict(state, self.params)
        except BaseException:
            self.backend, self.dtype, self.engine, self.parameters = before  # all or nothing
            raise
        return self


def _batch_size(batch_size: Any) -> int | None:
    """``batch_size`` of the inference methods: None or a positive integer."""
    if batch_size is not None:
        check_positive(batch_size, "batch_size", integer=True)
        batch_size = int(batch_size)
    return batch_size
