"""The feed-forward network of the blog post, written once over the array API."""
from __future__ import annotations

import functools
from itertools import repeat
from dataclasses import dataclass
from numbers import Integral
from typing import Any, Callable, Sequence

from . import _kernels as K, backends
from ._host import concatenate_flat, host_weight, initial_weights, make_rng, to_host_array
from ._typing import Array
from ._validation import as_model_array, check_model_array, check_same_samples
from .activations import ACTIVATIONS, IDENTITY, Activation, get_activation
from .losses import Loss, get_loss

__all__ = ["Layer", "Network", "Workspace"]

_DEFAULT_OUTPUT = {"mse": "identity", "binary_cross_entropy": "sigmoid", "cross_entropy": "softmax"}


def on_device(method: Callable) -> Callable:
    """Run a Network method inside its backend's device context (CuPy works on the current GPU)."""

    @functools.wraps(method)
    def wrapper(self: "Network", *args: Any, **kwargs: Any) -> Any:
        with self.backend.context():
            return method(self, *args, **kwargs)

    return wrapper


@dataclass(frozen=True)
class Layer:
    """Shape and activation of one dense layer: ``Z = A_prev @ W.T + b``, ``A = g(Z)``."""

    n_in: int
    n_out: int
    activation: Activation


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
                 dtype: str = "float32", seed: Any = 0) -> None:
        sizes = list(layer_sizes) if not isinstance(layer_sizes, (str, bytes)) else []
        if len(sizes) < 2 or any(isinstance(n, bool) or not isinstance(n, Integral) or n < 1 for n in sizes):
            raise ValueError(f"layer_sizes must list at least two positive integers (input and output units), "
                             f"got {layer_sizes!r}")
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
        self._params: list[Array] = []
        self._flat: Array | None = None  # with out= (NumPy, CuPy): the one buffer every parameter is a view of
        self._grad_buffers: _Flat | None = None  # see _gradient_buffers
        self._ones_vector: Array | None = None  # see _ones
        self._workspace: Workspace | None = None  # fit's reusable buffers, see Workspace
        self._metric_weights: list[Array] | None = None  # during fit: the weights the training metrics describe
        self.optimizer = None
        self.history = None
        self.set_weights(initial_weights(self.rng, sizes, acts))

    # ------------------------------------------------------------------ setup
    def _activation_names(self, activations: Any, n_layers: int) -> list[str]:
        output = _DEFAULT_OUTPUT.get(self.loss_fn.name) or self.loss_fn.fused_with or "identity"
        if activations is None:
            activations = "sigmoid"
        if isinstance(activations, (str, Activation)):
            return [activations] * (n_layers - 1) + [output]
        acts = list(activations)
        if len(acts) != n_layers:
            raise ValueError(f"activations must name one activation per layer ({n_layers}), got {len(acts)}: {acts!r}")
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
        """The live parameters on the device, keyed ``W0, b0, W1, b1, ...`` (gradients and optimizer state use the same names)."""
        return dict(zip(self.param_names, self._params))

    @property
    def param_names(self) -> list[str]:
        return [f"{k}{i}" for i in range(len(self.layers)) for k in ("W", "b")]

    def __repr__(self) -> str:
        sizes = "-".join(map(str, self.layer_sizes))
        return (f"Network({sizes}, activations={self.activations}, loss={self.loss_fn.name!r}, "
                f"backend={self.backend.name!r}, device={self.device!r}, dtype={self.dtype_name!r})")

    # ---------------------------------------------------------------- weights
    def get_weights(self) -> list[tuple[Any, Any]]:
        """A host NumPy copy of every layer's ``(W, b)`` (Keras' convention)."""
        p = [backends.to_numpy(a).copy() for a in self._params]
        return list(zip(p[0::2], p[1::2]))

    @on_device
    def set_weights(self, weights: Sequence[tuple[Any, Any]]) -> None:
        """Replace every layer's ``(W, b)`` from host (or any) arrays; all are checked before any is replaced."""
        weights = list(weights)
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
        xp = self.backend.xp
        if K.supports_out(xp):
            # one buffer, the parameters views of it: an undo point or a plain SGD step is one call, not one per array
            augment = self.layers[0].n_in <= AUGMENT_MAX_INPUTS
            flat = xp.asarray(concatenate_flat(new, bias_column=augment), dtype=self.dtype, device=self.device)
            self._flat, self._params = flat, _Flat.of(flat, self.layers, augment, xp)
        else:
            # always copies: training updates in place and must never write into the caller's arrays
            self._flat = None
            self._params = [xp.asarray(h, dtype=self.dtype, device=self.device, copy=True) for h in new]
        self._ones_vector = self._workspace = self._grad_buffers = None  # they follow the parameters' device and dtype

    def _ones(self, m: int) -> Array:
        """A cached ``(m,)`` vector of ones on the device: ``db = ones @ dZ`` beats ``xp.sum`` on small layers."""
        ones = self._ones_vector  # dropped by set_weights, so it follows the parameters' device and dtype
        if ones is not None and ones.shape[0] == m:
            return ones
        if ones is None or ones.shape[0] < m:
            ones = self._ones_vector = self.xp.ones(m, dtype=self.dtype, device=self.device)
        return ones if ones.shape[0] == m else ones[:m]  # one vector, the largest batch seen

    def release_buffers(self) -> None:
        """Free the buffers ``fit`` keeps between calls (per-layer ``Z``/``A`` for the largest batch, gradients)."""
        self._workspace = self._ones_vector = self._grad_buffers = None

    def _gradient_buffers(self) -> "_Flat | None":
        """fit's gradient buffers, one flat array shaped like the parameters' (None without ``out=``)."""
        if self._flat is None:
            return None
        if self._grad_buffers is None:
            self._grad_buffers = self._params.like(self.xp.empty_like(self._flat))
        return self._grad_buffers

    def _snapshot(self, params: list[Array] | None = None) -> list[Array]:
        """Device copies of the parameters, or of ``params`` (no host round trip).

        A snapshot of the live parameters is a :class:`_Flat` where they are
        one buffer, so ``_save_into`` and ``_restore`` copy it in one call.
        """
        if params is None and self._flat is not None:
            return self._params.like(self.xp.asarray(self._flat, copy=True))
        return [self.xp.asarray(p, copy=True) for p in (self._params if params is None else params)]

    def _save_into(self, snapshot: list[Array]) -> None:
        """Copy the live parameters into an earlier ``_snapshot()`` (writeable arrays only)."""
        if isinstance(snapshot, _Flat) and self._flat is not None:
            snapshot.flat[...] = self._flat
        else:
            for s, p in zip(snapshot, self._params):
                s[...] = p

    def _restore(self, snapshot: list[Array]) -> None:
        """Set the parameters to a snapshot's values (in place where they share one buffer)."""
        if self._flat is None:
            self._params = [self.xp.asarray(p, copy=True) for p in snapshot]
        elif isinstance(snapshot, _Flat):
            self._flat[...] = snapshot.flat
        else:
            for p, s in zip(self._params, snapshot):
                p[...] = s

    # -------------------------------------------------------------- the math
    @on_device
    def evaluate(self, X: Array) -> list[tuple[Array | None, Array]]:
        """Forward pass keeping every layer's ``(Z, A)``; ``values[0]`` is ``(None, X)``.

        ``X`` must already be an array of the model's namespace, device and
        dtype, shape ``(n_samples, n_features)`` (``predict`` converts host data).
        """
        X = check_model_array(X, "X", self.backend, self.dtype, self.layers[0].n_in)
        return self._forward(X)

    def _forward(self, A: Array, ws: "Workspace | None" = None,
                 a_aug: Array | None = None) -> list[tuple[Array | None, Array]]:
        """``[(None, X), (Z, A), ...]``; with a workspace, into its buffers (valid until the next call).

        ``a_aug``: ``[X, 1]`` (see ``_augmented``), for parameters laid out with an input block.
        """
        values = [(None, A)]
        xp, p, matmul = self.backend.xp, self._params, K.matmul_function(self.backend.xp)
        Zs, As = (ws.Z, ws.A) if ws is not None else (repeat(None), repeat(None))
        for layer, W, b, Z, A_out in zip(self.layers, p[0::2], p[1::2], Zs, As):
            if a_aug is not None:  # the input layer, bias included: [X, 1] @ [W0 | b0].T
                Z = matmul(a_aug, p.block.T, out=Z)  # (m, n_out)
                a_aug = None
            else:
                Z = _dot(A, W.T) if Z is None else matmul(A, W.T, out=Z)  # (m, n_out)
                Z += b
            activation = layer.activation
            if activation is IDENTITY:
                A = Z
            else:  # a user's activation may take no out= (then it never gets a buffer: see Workspace.for_training)
                A = activation.forward(Z, xp) if A_out is None else activation.forward(Z, xp, A_out)
            values.append((Z, A))
        return values

    @on_device
    def compute_gradient(self, values: list[tuple[Array | None, Array]], Y: Array) -> tuple[list[Array], list[Array]]:
        """Back-propagation: ``(dWs, dbs)`` per layer, ``dW`` shaped like ``W`` and ``db`` like ``b``."""
        if len(values) != len(self.layers) + 1:
            raise ValueError(f"values must hold {len(self.layers) + 1} (Z, A) pairs from evaluate, got {len(values)}")
        Y = check_model_array(Y, "Y", self.backend, self.dtype, self.layers[-1].n_out)
        check_same_samples(values[0][1], Y, "values[0] (X)", "Y")
        _, grads = self._gradient(values, Y)
        return grads[0::2], grads[1::2]

    def _gradient(self, values: list[tuple[Array | None, Array]], Y: Array, ws: "Workspace | None" = None,
                  out: "_Flat | None" = None, a_aug: Array | None = None) -> tuple[Array, list[Array]]:
        """Loss (a device scalar) and flat gradients ``[dW0, db0, dW1, db1, ...]``.

        With a workspace (fit's), ``values`` are consumed: each layer's spent
        ``A`` takes its derivative and its spent ``Z`` the next ``dA``. With
        ``out`` (fit's gradient buffers, NumPy and CuPy), the gradients land
        there; with ``a_aug`` too (``[X, 1]``), the input layer's ``[dW0 | db0]``
        is one product. Without either, nothing given is written.
        """
        xp, p, layers, last = self.backend.xp, self._params, self.layers, len(self.layers) - 1
        matmul = K.matmul_function(xp)
        loss, dA = self.loss_fn.value_and_delta(*values[-1], Y, xp)
        fused = self.loss_fn.fused_with is not None
        ones = self._ones(Y.shape[0])
        grads: list[Array] = [None] * (2 * len(layers)) if out is None else out
        for i in range(last, -1, -1):
            Z, A = values[i + 1]
            if (fused and i == last) or layers[i].activation is IDENTITY:
                dZ = dA
            elif ws is None:
                dZ = layers[i].activation.backward(dA, Z, A, xp)
            else:  # Z and A are spent: the backward may overwrite them
                dZ = layers[i].activation.backward(dA, Z, A, xp, True)
            A_prev = values[i][1]
            if out is None:
                grads[2 * i] = dZ.T @ A_prev  # (n_out, n_in)
                grads[2 * i + 1] = ones @ dZ  # (n_out,) column sums
            elif i == 0 and a_aug is not None:
                matmul(dZ.T, a_aug, out=out.block)  # (n_out, n_in + 1): [dW0 | db0]
            else:
                matmul(dZ.T, A_prev, out=out[2 * i])
                matmul(ones, dZ, out=out[2 * i + 1])
            if i:  # dA of the layer below, into its spent Z (its backward reads only A)
                dA = _dot(dZ, p[2 * i]) if ws is None else matmul(dZ, p[2 * i], out=values[i][0])  # (m, n_in)
        return loss, grads

    def _augmented(self, X: Array) -> Array | None:
        """``[X, 1]`` where the parameters have an input block (see AUGMENT_MAX_INPUTS), else None."""
        if self._flat is None or self._params.block is None:
            return None
        xp = self.backend.xp
        return xp.concat([X, xp.ones((X.shape[0], 1), dtype=X.dtype, device=self.device)], axis=1)

    # ------------------------------------------------------------ user-facing
    def _input(self, X: Any, name: str = "X") -> tuple[Array, bool]:
        return as_model_array(X, name, self.backend, self.dtype_name, self.layers[0].n_in,
                              allow_1d=self.layers[0].n_in == 1)

    def _target(self, Y: Any, name: str = "Y") -> Array:
        """Targets on the device; class ids ``(n,)`` become one-hot for cross_entropy."""
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
        return xp.astype(xp.astype(ids, xp.int64) == classes, self.dtype)  # (m, n_out)

    @on_device
    def predict(self, X: Any) -> Any:
        """The output layer's activations for ``X`` (probabilities for sigmoid/softmax outputs).

        Host input (NumPy, lists) gives a NumPy result; an array of the model's
        backend gives an array of that backend.
        """
        X, host = self._input(X)
        out = self._forward(X)[-1][1]
        return backends.to_numpy(out) if host else out

    @on_device
    def predict_classes(self, X: Any) -> Any:
        """Class labels: argmax of a softmax output, ``p > 0.5`` for a sigmoid one."""
        X, host = self._input(X)
        a = self._forward(X)[-1][1]
        xp = self.xp
        if self.layers[-1].activation.name == "sigmoid":
            labels = xp.astype(a > 0.5, xp.int64)
            labels = labels[:, 0] if a.shape[1] == 1 else labels
        else:
            labels = xp.argmax(a, axis=1)
        return backends.to_numpy(labels) if host else labels

    @on_device
    def loss(self, X: Any, Y: Any) -> float:
        """The loss of the current weights on ``(X, Y)`` as a Python float."""
        X, _ = self._input(X)
        Y = self._target(Y)
        check_same_samples(X, Y)
        z, a = self._forward(X)[-1]
        return float(self.loss_fn.value(z, a, Y, self.xp))

    @on_device
    def score(self, X: Any, Y: Any) -> float:
        """Accuracy for classification losses; the coefficient of determination R² for mse."""
        X, _ = self._input(X)
        Y = self._target(Y)
        check_same_samples(X, Y)
        a = self._forward(X)[-1][1]
        xp = self.xp
        if self.loss_fn.correct is not None:
            return float(self.loss_fn.correct(a, Y, xp)) / a.shape[0]
        resid, total = backends.to_numpy(xp.stack([xp.sum((Y - a) ** 2), xp.sum((Y - xp.mean(Y, axis=0)) ** 2)]))
        if total == 0:  # constant targets: scikit-learn's convention, never a division by zero
            return 1.0 if resid == 0 else 0.0
        return float(1.0 - resid / total)

    def fit(self, X: Any, Y: Any, epochs: int = 1000, learning_rate: float | None = None, **kwargs: Any):
        """Train by gradient descent; see :func:`nn_xp.training.fit` for every option.

        The defaults are the blog's: full-batch gradient descent (SGD without
        momentum), learning rate 0.1. Returns a :class:`~nn_xp.training.History`.
        """
        from .training import fit

        return fit(self, X, Y, epochs=epochs, learning_rate=learning_rate, **kwargs)

    def to(self, backend: str | None = None, device: Any = None) -> "Network":
        """Move parameters and optimizer state to another backend/device, in place; returns the network."""
        target = backends.resolve_backend(backend, device)
        weights = self.get_weights()
        state = self.optimizer.state_dict() if self.optimizer is not None else None
        before = (self.backend, self.dtype, self._params, self._flat, self._ones_vector, self._workspace,
                  self._grad_buffers)
        try:
            self.backend, self.dtype = target, target.dtype(self.dtype_name)
            self.set_weights(weights)
            if state is not None:
                with target.context():
                    self.optimizer.load_state_dict(state, self.params)
        except BaseException:
            (self.backend, self.dtype, self._params, self._flat, self._ones_vector, self._workspace,
             self._grad_buffers) = before  # all or nothing
            raise
        return self


#: networks with at most this many inputs keep the input layer as one ``[W0 | b0]`` block and fit multiplies
#: ``[X, 1]`` by it: the bias add and the bias gradient's column sum ride in the matrix products. With few inputs
#: those passes are a large share of the input layer's work (about 1/n_in of it) and the copy of X with a column
#: of ones costs little; with many, the reverse
AUGMENT_MAX_INPUTS = 8


class _Flat(list):
    """``[W0, b0, W1, b1, ...]`` as views of one flat buffer, ``flat``: copied or updated as a whole in one call.

    ``block`` is the input layer's ``(n_out, n_in + 1)`` block ``[W0 | b0]`` when the layout has one
    (W0 and b0 are then its strided views), else None.
    """

    def __init__(self, flat: Array, views: list[Array], block: Array | None, layers: Sequence[Layer],
                 xp: Any) -> None:
        super().__init__(views)
        self.flat, self.block, self.layers, self.xp = flat, block, layers, xp

    @classmethod
    def of(cls, flat: Array, layers: Sequence[Layer], augment: bool, xp: Any) -> "_Flat":
        """Views of the 1-D ``flat``, layer after layer (NumPy and CuPy reshape a contiguous slice as a view)."""
        views, start, block = [], 0, None
        for i, layer in enumerate(layers):
            if i == 0 and augment:
                size = layer.n_out * (layer.n_in + 1)
                block = xp.reshape(flat[:size], (layer.n_out, layer.n_in + 1))
                views += [block[:, :layer.n_in], block[:, layer.n_in]]
            else:
                size = layer.n_out * layer.n_in
                views += [xp.reshape(flat[start:start + size], (layer.n_out, layer.n_in)),
                          flat[start + size:start + size + layer.n_out]]
                size += layer.n_out
            start += size
        return cls(flat, views, block, layers, xp)

    def like(self, flat: Array) -> "_Flat":
        """The same layout over another flat buffer of the same size."""
        return _Flat.of(flat, self.layers, self.block is not None, self.xp)


def _dot(a: Array, b: Array) -> Array:
    """``a @ b``; an outer product (inner size 1, as in the blog's 1-20-1 network) as a broadcast multiply,
    bit-identical and faster than the BLAS call. (Formed transposed, ``(b.T * a.T).T``, the broadcast alone
    is a fifth faster on NumPy, but its column-major result then meets row-major arrays in the elementwise
    passes, which costs more than that.)"""
    return a * b if a.shape[-1] == 1 else a @ b


#: below this many elements in the widest layer's ``Z``, fit allocates as the portable path does
WORKSPACE_MIN_ELEMENTS = 1 << 16


class Workspace:
    """fit's buffers, reused every epoch where the library takes ``out=`` (NumPy, CuPy).

    Per layer: ``Z`` (which back-propagation reuses for that layer's ``dA``),
    ``A`` (none for the identity, whose ``A`` is its ``Z``): one set of per-layer
    values, nothing allocated per epoch (the gradients have their own buffers,
    ``Network._gradient_buffers``).
    ``rows(m)`` gives views for a shorter (the last) mini-batch.
    """

    def __init__(self, net: Network, m: int) -> None:
        xp, kw = net.xp, {"dtype": net.dtype, "device": net.device}
        self.m = m
        self.Z = [xp.empty((m, layer.n_out), **kw) for layer in net.layers]
        self.A = [None if layer.activation.name == "identity" else xp.empty((m, layer.n_out), **kw)
                  for layer in net.layers]
        self._views: dict[int, Workspace] = {m: self}

    @classmethod
    def for_training(cls, net: Network, m: int) -> "Workspace | None":
        """The network's workspace for batches of ``m`` rows, or None where the library has no ``out=``.

        It is kept on the network between ``fit`` calls (as PyTorch's caching
        allocator keeps memory), and dropped when the weights are replaced.
        """
        widest = max(layer.n_out for layer in net.layers)
        if not K.supports_out(net.xp) or m * widest < WORKSPACE_MIN_ELEMENTS:
            return None  # small arrays come from the allocator's cache: out= would only add call overhead
        if any(ACTIVATIONS.get(layer.activation.name) is not layer.activation for layer in net.layers):
            return None  # a user's Activation may read z in backward, or take no out=: keep it portable
        ws = net._workspace
        if ws is None or ws.m != m:
            net._workspace = None  # free the old buffers before allocating the new ones
            ws = net._workspace = cls(net, m)
        return ws

    def rows(self, m: int) -> "Workspace":
        view = self._views.get(m)
        if view is None:
            view = self._views[m] = object.__new__(Workspace)
            view.m, view._views = m, self._views
            view.Z = [z[:m, ...] for z in self.Z]
            view.A = [None if a is None else a[:m, ...] for a in self.A]
        return view

