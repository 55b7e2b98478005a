"""The feed-forward network of the blog post, written once over the array API."""
from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from numbers import Integral
from typing import Any

from . import _advice, _picklable, _random, _summary, backends
from . import _kernels as K
from . import dropout as _dropout
from ._host import host_weight, initial_weights, make_rng, to_host_array
from ._typing import Array
from ._validation import as_model_array, check_model_array, check_positive, check_same_samples
from .activations import Activation, get_activation
from .callbacks import Callback
from .engine import Parameters, Snapshot, select_engine
from .losses import Loss, get_loss
from .metrics import Scoring, resolve_metrics
from .optimizers import Optimizer, Schedule, get_optimizer
from .penalties import Penalty, penalty
from .training import History
from .training import fit as _fit

__all__ = ["Layer", "Network"]

_DEFAULT_OUTPUT = {"mse": "identity", "binary_cross_entropy": "sigmoid", "cross_entropy": "softmax"}


class _Default(str):
    """A default argument, told apart from the same value given (``help()`` shows it as the plain string)."""


_DEFAULT_LOSS = _Default("mse")


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
    loss : {"mse", "binary_cross_entropy", "cross_entropy", "poisson", "mae", "huber"} or Loss
        ``nn_xp.losses.huber(delta)`` for a Huber threshold other than 1.
    backend, device : optional
        See :func:`nn_xp.resolve_backend`: argument, else ``NN_XP_BACKEND`` /
        ``NN_XP_DEVICE``, else auto (CuPy when a CUDA GPU answers, else NumPy).
    dtype : {"float32", "float64"} or a dtype object
        Or a dtype of any backend naming one of them (``np.float32``, ``torch.float64``,
        ``jnp.float32``, ...); ``net.dtype_name`` is then the string, ``net.dtype`` the
        backend's own dtype object.
    seed : int or numpy.random.Generator, optional
        Seeds the host generator that draws the initial weights and the shuffles.
    engine : {"auto", "portable", "buffered", "fused", "compiled", "cuda_graph"}, optional
        How ``fit`` runs a step (see :mod:`nn_xp.engine`): ``"auto"`` writes into
        reused buffers where the library can (NumPy, CuPy), runs torch's own fused
        calls on torch, compiles whole epochs on JAX, else runs the portable math.
        They give the same numbers (the fused engine the portable one's, bit for bit).
    l1, l2 : float
        Penalties on the weights, never the biases, with scikit-learn's ``alpha``
        semantics: each batch's loss gains ``(l1 * sum|W| + 0.5 * l2 * sum W**2) / m``
        (``m`` its rows) and each ``dW`` that term's gradient (see :mod:`nn_xp.penalties`).
    dropout : float or sequence of float
        The fraction of each hidden layer's outputs dropped at every training step
        (one rate for all, or one per hidden layer; 0: none), kept units scaled by
        ``1 / (1 - rate)``; ``fit`` alone drops (see :mod:`nn_xp.dropout`).

    Attributes
    ----------
    history : History or None
        The latest ``fit``'s record (what it returned): ``net.history["loss"]``,
        ``net.history.epoch``, ``net.history.plot()``; None before the first fit. A fit
        that failed or was rolled back leaves its own record, cut where the weights are.
    optimizer : Optimizer or None
        The latest ``fit``'s optimizer, its state kept: the next ``fit`` without
        ``optimizer=`` continues with it.
    layers : tuple of Layer
        Units in and out and the activation of each layer (:meth:`summary` shows them).
    backend, engine, dtype_name, rng
        Where the parameters live (:class:`~nn_xp.Backend`), how ``fit`` runs a step,
        ``"float32"`` or ``"float64"``, and the host generator of the shuffles.
    dropout, dropout_seed
        The rate of each hidden layer (a tuple; assignable), and what every step's
        masks are drawn from with the step's count (None until there is dropout).

    A network pickles and deep-copies (joblib and multiprocessing too): the pickle
    holds host copies of the weights and the optimizer's state and the backend's
    name and device; unpickling resolves that backend and device again (see
    :meth:`__setstate__`) and training continues as it would have.

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
                 loss: str | Loss = _DEFAULT_LOSS, backend: str | None = None, device: Any = None,
                 dtype: Any = "float32", seed: Any = 0, engine: str | None = None, l1: float = 0.0,
                 l2: float = 0.0, dropout: float | Sequence[float] = 0.0) -> None:
        if isinstance(layer_sizes, Integral) and not isinstance(layer_sizes, bool):
            raise ValueError(f"layer_sizes must list the units per layer, input first: [n_in, ..., n_out] "
                             f"(Network([{layer_sizes}, 16, 1]): {layer_sizes} inputs, 16 hidden units, 1 "
                             f"output), got the integer {layer_sizes}")
        try:
            sizes = list(layer_sizes) if not isinstance(layer_sizes, (str, bytes)) else []
        except TypeError:
            sizes = []
        if len(sizes) < 2 or any(isinstance(n, bool) or not isinstance(n, Integral) or not 1 <= n <= MAX_UNITS
                                 for n in sizes):
            raise ValueError("layer_sizes must list at least two positive integers, [n_in, ..., n_out] "
                             f"(input and output units, at most {MAX_UNITS} each), got {layer_sizes!r}")
        sizes = [int(n) for n in sizes]  # NumPy integers too, as scikit-learn grids produce
        self.loss_fn: Loss = get_loss(loss)
        self._default_loss = loss is _DEFAULT_LOSS  # not chosen: classes trained with mse get a warning
        self.penalty: Penalty | None = penalty(l1, l2)  # None: fit runs the code it runs without one
        acts = self._activation_names(activations, len(sizes) - 1)
        self.layers = tuple(Layer(n_in, n_out, get_activation(a))
                            for n_in, n_out, a in zip(sizes[:-1], sizes[1:], acts))
        self._check_pairing()
        self._dropout_rates: tuple[float, ...] = _dropout.rates(dropout, len(self.layers) - 1)
        self.dtype_name = backends.dtype_name(dtype)  # "float32" or "float64", from a name or a dtype object
        self.backend = backends.resolve_backend(backend, device)
        self.dtype = self.backend.dtype(self.dtype_name)
        self.rng = make_rng(seed)
        self.engine_name = "auto" if engine is None else engine  # as asked: to() chooses again from it
        self.engine = select_engine(self.backend, self.dtype, self.engine_name)
        # [W0, b0, W1, b1, ...], laid out by the engine
        self.parameters: Parameters = Parameters([], self.backend.xp)
        self.optimizer = None
        self.history: History | None = None
        self.set_weights(initial_weights(self.rng, sizes, acts))
        #: what every step's dropout masks are drawn from, with the step's count (drawn after the weights,
        #: so that they are a network's without dropout); None until the network has dropout
        self.dropout_seed: int | None = None
        self._draw_dropout_seed()

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
        if self.loss_fn.name == "cross_entropy" and self.layers[-1].n_out == 1:
            raise ValueError("loss='cross_entropy' needs one output unit per class (2 or more): a softmax "
                             "over one unit is always 1, so nothing would be learnt; for two classes use "
                             "loss='binary_cross_entropy' with this one output unit (a sigmoid)")

    # ------------------------------------------------------------- properties
    @property
    def xp(self) -> Any:
        """The array namespace the parameters live in."""
        return self.backend.xp

    @property
    def device(self) -> Any:
        return self.backend.device

    @property
    def l1(self) -> float:
        """The L1 penalty on the weights (see :mod:`nn_xp.penalties`); assign to change it before a fit."""
        return 0.0 if self.penalty is None else self.penalty.l1

    @l1.setter
    def l1(self, value: float) -> None:
        self.penalty = penalty(value, self.l2)

    @property
    def l2(self) -> float:
        """The L2 penalty on the weights, scikit-learn's ``alpha`` (see :mod:`nn_xp.penalties`)."""
        return 0.0 if self.penalty is None else self.penalty.l2

    @l2.setter
    def l2(self, value: float) -> None:
        self.penalty = penalty(self.l1, value)

    @property
    def dropout(self) -> tuple[float, ...]:
        """The dropout rate of each hidden layer's output (all 0: none; see :mod:`nn_xp.dropout`). Assign one
        rate, or one per hidden layer, to change it before a fit."""
        return self._dropout_rates

    @dropout.setter
    def dropout(self, value: float | Sequence[float]) -> None:
        self._dropout_rates = _dropout.rates(value, len(self.layers) - 1)
        self._draw_dropout_seed()

    def _draw_dropout_seed(self) -> None:
        if any(self._dropout_rates) and self.dropout_seed is None:  # once, from the host generator
            self.dropout_seed = int(self.rng.integers(2**63))

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
        """What :meth:`measure` returns and ``fit`` records without ``metrics=``: ``loss``, and ``accuracy``
        for classification (``fit(metrics=...)`` records its own list after the loss)."""
        return ["loss"] + (["accuracy"] if self.loss_fn.correct is not None else [])

    def __repr__(self) -> str:
        sizes = "-".join(map(str, self.layer_sizes))
        dropout = _dropout.describe(self.dropout)
        return (f"Network({sizes}, activations={self.activations}, loss={self.loss_fn.name!r}, "
                f"backend={self.backend.name!r}, device={self.device!r}, dtype={self.dtype_name!r}"
                f"{'' if dropout is None else f', dropout={dropout}'})")

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
    def evaluate(self, X: Array, *, check_input: bool = True,
                 masks: Sequence[Array | None] | None = None) -> list[tuple[Array | None, Array]]:
        """Forward pass keeping every layer's ``(Z, A)``; ``values[0]`` is ``(None, X)``.

        ``X`` must already be an array of the model's namespace, device and
        dtype, shape ``(n_samples, n_features)`` (``predict`` converts host data).
        ``check_input=False`` skips that check, for callers that made ``X`` so
        themselves (an engine, every batch: scikit-learn's ``check_input``).
        ``masks``: dropout masks (:meth:`dropout_masks`), one per hidden layer or None:
        layer ``i + 1`` then sees hidden layer ``i``'s ``A * masks[i]``; the values keep
        the undropped ``A`` (give :meth:`value_and_gradient` the same masks).
        """
        if check_input:
            X = check_model_array(X, "X", self.backend, self.dtype, self.layers[0].n_in)
            if masks is not None:
                self._check_masks(masks, X.shape[0])
        return self._forward(X, masks)

    def _forward(self, A: Array,
                 masks: Sequence[Array | None] | None = None) -> list[tuple[Array | None, Array]]:
        values, xp = [(None, A)], self.xp
        for i, (layer, W, b) in enumerate(zip(self.layers, self.parameters[0::2], self.parameters[1::2])):
            if masks is not None and i and masks[i - 1] is not None:  # dropout: the kept units, rescaled
                A = A * masks[i - 1]  # what this layer sees: (m, n_in)
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
    def dropout_masks(self, rows: int, step: Any, *, draw: _random.Uniforms | None = None,
                      seed: Any = None) -> list[Array | None]:
        """The dropout masks of one training step on a batch of ``rows`` rows, one per hidden layer: None
        where its rate is 0, else ``(rows, n_out)`` holding 0 for a dropped unit and ``1 / (1 - rate)`` for
        a kept one (each kept with probability ``1 - rate``), for :meth:`evaluate`'s ``masks``.

        A function of :attr:`dropout_seed` and ``step`` alone (``fit`` gives the optimizer's count of the
        step, 1 for the first), drawn on the device by the backend's own generator (see
        :mod:`nn_xp.dropout`): the same step gives the same masks. ``draw``: a kept
        ``nn_xp._random.uniform_source`` (None: a new one); ``seed``: the seed in its place (a compiled
        program's traced argument). A network without dropout has no masks to draw.

        Examples
        --------
        >>> import nn_xp
        >>> net = nn_xp.Network([2, 4, 1], dropout=0.5, backend="numpy")
        >>> [m.shape for m in net.dropout_masks(3, step=1)]
        [(3, 4)]
        """
        if not any(self._dropout_rates):
            raise ValueError("this network has no dropout (Network(..., dropout=rate) gives it some)")
        draw = _random.uniform_source(self.xp, self.device) if draw is None else draw
        shapes = [(rows, layer.n_out) for layer, rate in zip(self.layers, self.dropout) if rate]
        uniforms = draw(self.dropout_seed if seed is None else seed, step, shapes)
        return _dropout.masks(self.dropout, uniforms, self.xp, self.dtype)

    @on_device
    def compute_gradient(self, values: list[tuple[Array | None, Array]],
                         Y: Array) -> tuple[list[Array], list[Array]]:
        """Back-propagation: ``(dWs, dbs)`` per layer, ``dW`` shaped like ``W`` and ``db`` like ``b``."""
        _, grads = self.value_and_gradient(values, Y)
        return grads[0::2], grads[1::2]

    @on_device
    def value_and_gradient(self, values: list[tuple[Array | None, Array]], Y: Array, *,
                           check_input: bool = True, m: int | None = None,
                           penalize: bool = True, w: Array | None = None,
                           masks: Sequence[Array | None] | None = None) -> tuple[Array, list[Array]]:
        """The loss of :meth:`evaluate`'s ``values`` (a device scalar) and its gradients ``[dW0, db0, ...]``.

        Nothing given is written. ``check_input`` as for :meth:`evaluate`. ``m``: the mean's denominator
        (None: ``Y``'s rows; data-parallel ``fit`` gives a rank's shard and the global batch's rows).
        The loss and gradients include the ``l1``/``l2`` penalty unless ``penalize`` is False
        (data-parallel ``fit`` adds it on one rank: the ranks' gradients are summed).
        ``w``: None, or per-sample weights ``(m, 1)`` (a model array): the loss is
        ``sum_i w_i l_i / m`` (see :mod:`nn_xp.losses`).
        ``masks``: the dropout masks ``values`` were evaluated with (None: none): each ``dA`` of what a
        layer saw is masked before ``dZ``, and each ``dW`` uses what its layer saw.
        """
        if check_input:
            self._check_values(values)
            if masks is not None:
                self._check_masks(masks, values[0][1].shape[0])
            Y = check_model_array(Y, "Y", self.backend, self.dtype, self.layers[-1].n_out)
            check_same_samples(values[0][1], Y, "values[0] (X)", "Y")
            if w is not None:
                check_same_samples(Y, check_model_array(w, "w", self.backend, self.dtype, 1), "Y", "w")
        loss, grads = self._backward(values, Y, m, w, masks)
        if penalize and self.penalty is not None:
            loss = self.penalty.add(loss, grads, self.parameters, Y.shape[0] if m is None else m, self.xp)
        return loss, grads

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

    def _check_masks(self, masks: Any, rows: int) -> None:
        """``masks`` as :meth:`dropout_masks` gives them for ``rows`` rows: one per hidden layer, each None or
        a model array of that layer's shape."""
        hidden = self.layers[:-1]
        if not isinstance(masks, (list, tuple)) or len(masks) != len(hidden):
            got = f"{len(masks)} items" if isinstance(masks, (list, tuple)) else type(masks).__name__
            raise ValueError(f"masks must hold one dropout mask (or None) per hidden layer ({len(hidden)}), "
                             f"as dropout_masks gives them; got {got}")
        for i, (layer, mask) in enumerate(zip(hidden, masks)):
            if mask is not None:
                rows_of_mask = check_model_array(mask, f"masks[{i}]", self.backend, self.dtype,
                                                 layer.n_out).shape[0]
                if rows_of_mask != rows:
                    raise ValueError(f"masks[{i}] has {rows_of_mask} rows and X has {rows}: masks drawn for "
                                     "another batch?")

    def _backward(self, values: list[tuple[Array | None, Array]], Y: Array, m: int | None = None,
                  w: Array | None = None,
                  masks: Sequence[Array | None] | None = None) -> tuple[Array, list[Array]]:
        xp, layers, fused = self.xp, self.layers, self.loss_fn.fused_with is not None
        loss, dA = self.loss_fn.value_and_delta_of(*values[-1], Y, xp, m, w)  # dA = (A_L - Y) / m; fused: dZ
        grads: list[Array] = [None] * (2 * len(layers))
        for i in range(len(layers) - 1, -1, -1):
            Z, A = values[i + 1]
            last = i == len(layers) - 1
            if masks is not None and not last and masks[i] is not None:  # dropout: the next layer saw
                dA = dA * masks[i]  # A * mask, so dA of A itself is the masked dA: (m, n_out)
            # dA * g'(Z), (m, n_out)
            dZ = dA if fused and last else layers[i].activation.backward(dA, Z, A, xp)
            A_prev = values[i][1]
            if masks is not None and i and masks[i - 1] is not None:
                A_prev = A_prev * masks[i - 1]  # what this layer saw, as in the forward pass: (m, n_in)
            grads[2 * i] = K.weight_gradient(dZ, A_prev, xp)  # dW = dZ.T @ A_prev: (n_out, n_in)
            grads[2 * i + 1] = K.column_sum(dZ, xp)  # db = sum of dZ over the samples: (n_out,)
            if i:
                dA = dZ @ self.parameters[2 * i]  # dA_prev = dZ W: (m, n_in)
        return loss, grads

    @on_device
    def measure(self, X: Array, Y: Array, batch_size: int | None = None, *,
                sample_weight: Array | None = None, metrics: Any = None) -> list[Array]:
        """The :attr:`metric_names` of the current weights on model arrays ``(X, Y)``, as device scalars.

        Computed in chunks of ``batch_size`` rows (None: the engine's choice), each
        keeping one layer's values at a time; the loss is the mean over all rows.
        ``sample_weight`` (a model array ``(n, 1)``) and ``metrics`` (as for ``fit``)
        give ``[loss, *metrics]`` as ``fit`` records them (see :mod:`nn_xp.metrics`)."""
        X = check_model_array(X, "X", self.backend, self.dtype, self.layers[0].n_in)
        Y = check_model_array(Y, "Y", self.backend, self.dtype, self.layers[-1].n_out)
        check_same_samples(X, Y)
        if sample_weight is not None or metrics is not None:
            W = None
            if sample_weight is not None:
                W = check_model_array(sample_weight, "sample_weight", self.backend, self.dtype, 1)
                check_same_samples(X, W, "X", "sample_weight")
            scoring = Scoring(resolve_metrics(metrics, self.loss_fn), W)
            return scoring.measure(self, X, Y, W, scoring.prepare(Y, W, self.xp), batch_size)
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
        """Targets as a model array; class ids ``(n,)`` or ``(n, 1)`` become one-hot for cross_entropy.

        Targets that do not suit the loss get an error or a warning naming the fix
        (see :mod:`nn_xp._advice`): binary_cross_entropy takes values in [0, 1] only."""
        n_out, loss = self.layers[-1].n_out, self.loss_fn.name
        if backends.is_host_array(Y):
            Y = to_host_array(Y, name)  # a list of rows is 2-D, a list of labels 1-D
        if loss == "cross_entropy" and (Y.ndim == 1 or (Y.ndim == 2 and Y.shape[1] == 1 < n_out)):
            return self._one_hot(Y, name, n_out)  # sparse labels, as Keras' sparse cross-entropy takes them
        if Y.ndim == 1 and n_out > 1 and not self.loss_fn.classification:
            raise _advice.one_column_for_several_outputs(name, loss, n_out)
        Y, _ = as_model_array(Y, name, self.backend, self.dtype_name, n_out, allow_1d=n_out == 1)
        _advice.check_targets(Y, name, loss, self._default_loss, self.xp)
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

    def fit(self, X: Any, Y: Any, epochs: int = 1000, learning_rate: float | Schedule | None = None, *,
            optimizer: str | Optimizer | None = None, batch_size: int | None = None, shuffle: bool = True,
            validation_data: Any = None, validation_split: float = 0.0,
            callbacks: Sequence[Callback | Callable] | Callback | Callable | None = None, verbose: int = 0,
            checkpoint: Any = None, checkpoint_every: int = 1, resume_from: Any = None,
            on_nonfinite: str = "raise", comm: Any = None, sample_weight: Any = None,
            class_weight: Any = None, metrics: Sequence[str | Callable] | None = None,
            weighted_mean: bool = False) -> History:
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
        optimizer : {"sgd", "adam", "adamw", "rmsprop"} or Optimizer, optional
            Default: the network's optimizer from a previous ``fit`` or from the
            checkpoint in ``resume_from`` (state kept), else plain SGD, the blog's
            ``W -= lr * dW``.
        batch_size : int, optional
            None: full batch (the blog's). An integer: mini-batches, reshuffled every
            epoch (when ``shuffle``), the last partial batch included.
        validation_data, validation_split
            A held-out ``(X_val, Y_val)`` or ``(X_val, Y_val, sample_weight_val)``, or the
            fraction of the last samples (and of their ``sample_weight``) to hold out.
        callbacks
            :class:`~nn_xp.Callback` objects or plain ``f(epoch, logs)`` callables;
            raise :class:`~nn_xp.StopTraining` to end training after the epoch.
            :class:`~nn_xp.EarlyStopping` and :class:`~nn_xp.ReduceLROnPlateau` are built in.
        verbose : {0, 1, 2, 3}
            0 silent; 1 a tqdm bar on a terminal, else one line per epoch; 2 one line per epoch;
            3 as 1 with a per-batch bar inside each epoch (counted on the host: no device read).
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
        sample_weight, class_weight : optional
            Per-sample weights ``(n_samples,)``; ``{class: weight}`` or ``"balanced"``. They weight the
            loss as Keras does (``sum_i w_i l_i / batch_rows``), its gradient, and the metrics
            (``sum_i w_i v_i / sum_i w_i``): see :func:`nn_xp.training.fit`.
        weighted_mean : bool
            With ``sample_weight`` (or ``class_weight``), True divides each batch's loss and gradient
            (and an ``l1``/``l2`` penalty) by the batch's sum of sample weights instead of its rows:
            ``sum_i w_i l_i / sum_i w_i``, scikit-learn's convention (integer weights then train as
            repeated rows in full batch). Default False (Keras'); True without weights is refused.
        metrics : list of {"accuracy", "mae", "mse", "rmse", "r2"} or callables ``f(a, y, xp)``
            Recorded after the loss, ``val_`` ones too (see :mod:`nn_xp.metrics`); None: ``accuracy``
            for classification losses.

        Returns
        -------
        History
        """
        return _fit(self, X, Y, epochs=epochs, learning_rate=learning_rate, optimizer=optimizer,
                    batch_size=batch_size, shuffle=shuffle, validation_data=validation_data,
                    validation_split=validation_split, callbacks=callbacks, verbose=verbose,
                    checkpoint=checkpoint, checkpoint_every=checkpoint_every, resume_from=resume_from,
                    on_nonfinite=on_nonfinite, comm=comm, sample_weight=sample_weight,
                    class_weight=class_weight, metrics=metrics, weighted_mean=weighted_mean)

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

    # ---------------------------------------------------------- summary, pickling
    def summary(self, batch_size: int | None = None, optimizer: Any = None) -> _summary.Summary:
        """The layers (units, activation, parameters), dtype, backend, device, engine and memory: a table.

        Parameters
        ----------
        batch_size : int, optional
            Also count what ``fit`` holds at this many rows per step (for full batch, the
            number of samples), as the engine reports it: every layer's ``Z`` and ``A``, the
            gradients, the optimizer's state and the loop's two undo points. Not counted:
            the data (``fit`` holds ``X`` and ``Y`` on the device; mini-batches gather their rows).
        optimizer : str or Optimizer, optional
            Whose state to count: default the network's (from its last ``fit``), else SGD, fit's.

        Returns
        -------
        Summary
            ``print(net.summary())`` shows the table; its attributes hold the numbers.

        Examples
        --------
        >>> nn_xp.Network([1, 20, 1], backend="numpy").summary().parameters
        61
        """
        if batch_size is not None:
            check_positive(batch_size, "batch_size", integer=True)
        if optimizer is None:
            optimizer = self.optimizer
        return _summary.summarize(self, None if batch_size is None else int(batch_size),
                                  get_optimizer(optimizer, None))

    def __getstate__(self) -> dict[str, Any]:
        """What pickle, ``copy.deepcopy``, joblib and multiprocessing keep: every attribute, device arrays as
        host copies, and in place of the device objects the backend's name, the device and the weights
        (see :mod:`nn_xp._picklable`)."""
        rebuilt = ("backend", "dtype", "engine", "parameters", "optimizer", "layers", "loss_fn")
        state = {k: _picklable.to_host(v) for k, v in vars(self).items() if k not in rebuilt}
        state["_pickled"] = {"backend": self.backend.name, "device": self.backend.device_spec,
                             "layers": _picklable.pack_layers(self.layers),
                             "loss": _picklable.pack_loss(self.loss_fn), "weights": self.get_weights(),
                             "optimizer": _picklable.pack_optimizer(self.optimizer)}
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Rebuild on the backend and device recorded (``NN_XP_BACKEND`` does not move it); where those are
        not usable here, on ``NN_XP_BACKEND``'s with a warning when it is set, else a BackendUnavailableError
        (see :func:`nn_xp.backends.resolve_saved`). Training then continues as it would have."""
        state = dict(state)
        saved = state.pop("_pickled")
        backend, reason = backends.resolve_saved(saved["backend"], saved["device"], "this Network")
        if reason is not None:
            warnings.warn(f"this Network was pickled on backend {saved['backend']!r}, device "
                          f"{saved['device']!r}, which is not usable here ({reason}); it was opened on "
                          f"{backend} instead, as NN_XP_BACKEND says", UserWarning, stacklevel=2)
        vars(self).update({k: _picklable.to_device(v, backend) for k, v in state.items()})
        self.layers = tuple(Layer(*layer) for layer in _picklable.unpack_layers(saved["layers"]))
        self.loss_fn = _picklable.unpack_loss(saved["loss"])
        self.backend, self.dtype = backend, backend.dtype(self.dtype_name)
        engine = self.engine_name if reason is None or self.engine_name in ("auto", "portable") else "auto"
        self.engine = select_engine(backend, self.dtype, engine)
        self.parameters = Parameters([], backend.xp)
        self.set_weights(saved["weights"])
        self.optimizer = _picklable.unpack_optimizer(saved["optimizer"], self.params, backend)


def _batch_size(batch_size: Any) -> int | None:
    """``batch_size`` of the inference methods: None or a positive integer."""
    if batch_size is not None:
        check_positive(batch_size, "batch_size", integer=True)
        batch_size = int(batch_size)
    return batch_size
