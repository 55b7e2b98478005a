"""The implementations that ``bench.py`` times against each other, one class per peer.

Every peer trains the same network the same way, from the same starting weights:
sigmoid hidden layers, an identity output, the blog's loss ``0.5 ||A - Y||^2 / m``
computed every epoch and read back as a Python float once per epoch, then
back-propagation and

* full batch (``batch_size=None``): plain gradient descent ``W -= lr * dW``;
* mini-batches: Adam (PyTorch's formula), the batches reshuffled every epoch by
  ``numpy.random.default_rng(shuffle_seed).permutation(m)``, the last partial
  batch included. A batch as large as the data means full-batch Adam, no shuffle
  (nn_xp's rule).

Data rows: ``X (m, n_in)``, ``Y (m, n_out)``; ``W (n_out, n_in)``, ``b (n_out,)``.
Heavy imports (torch, scikit-learn, nn_xp, cupy) happen inside the peers, so the
module imports anywhere.
"""
from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

#: Adam's constants, the same for every peer (PyTorch's and nn_xp's defaults)
BETA_1, BETA_2, EPSILON = 0.9, 0.999, 1e-8


@dataclass
class Problem:
    """One benchmark case: the network, the data, the starting weights and how to descend."""

    sizes: tuple[int, ...]
    X: np.ndarray  # (m, n_in), host, already in `dtype`
    Y: np.ndarray  # (m, n_out)
    weights: list[tuple[np.ndarray, np.ndarray]]  # float64 host (W, b) per layer
    lr: float
    dtype: str  # "float32" or "float64"
    batch_size: int | None = None  # None: full-batch SGD; an int: Adam on mini-batches
    shuffle_seed: int = 1
    backend: str = "numpy"  # nn_xp's backend
    device: Any = None  # nn_xp's device, and torch's

    @property
    def m(self) -> int:
        return self.X.shape[0]

    @property
    def adam(self) -> bool:
        return self.batch_size is not None

    @property
    def full_batch(self) -> bool:
        return self.batch_size is None or self.batch_size >= self.m


class Peer:
    """``run(epochs)`` trains on from the current weights and returns the last epoch's loss;
    ``reset()`` goes back to the starting weights, a fresh optimizer and the first shuffle."""

    name = ""
    label = ""
    #: whether ``run`` calls ``on_epoch(epoch)`` after every epoch (the memory probe needs it)
    per_epoch_hook = True

    def run(self, epochs: int, on_epoch: Callable[[int], None] | None = None) -> float:
        raise NotImplementedError

    def weights(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """Host float64 copies of ``(W, b)`` per layer."""
        raise NotImplementedError

    def reset(self) -> None:
        raise NotImplementedError

    def sync(self) -> None:
        """Wait for queued device work (a no-op on the CPU)."""


# ------------------------------------------------------------------ NumPy
class _NumpyPeer(Peer):
    """The epoch loop shared by the two NumPy peers; subclasses write ``_step``."""

    def __init__(self, prob: Problem) -> None:
        dt = np.dtype(prob.dtype)
        self.prob = prob
        self.W = [np.array(W, dtype=dt) for W, _ in prob.weights]
        self.b = [np.array(b, dtype=dt) for _, b in prob.weights]
        self.X, self.Y, self.lr = prob.X, prob.Y, prob.lr
        self.adam, self.full, self.batch_size = prob.adam, prob.full_batch, prob.batch_size
        self.rng = np.random.default_rng(prob.shuffle_seed)
        self.t = 0  # Adam's step count

    def reset(self):
        for W, b, (W0, b0) in zip(self.W, self.b, self.prob.weights):
            W[...] = W0  # in place: views of W stay valid
            b[...] = b0
        self.rng = np.random.default_rng(self.prob.shuffle_seed)
        self.t = 0

    def run(self, epochs, on_epoch=None):
        X, Y, m = self.X, self.Y, self.X.shape[0]
        with np.errstate(over="ignore"):  # exp(-z) overflows to inf for very negative z: 1/(1+inf) = 0, right
            for epoch in range(epochs):
                if self.full:
                    loss = float(self._step(X, Y))
                else:
                    order = self.rng.permutation(m)
                    total = 0.0
                    for lo in range(0, m, self.batch_size):
                        idx = order[lo:lo + self.batch_size]
                        total += self._batch(X, Y, idx) * (idx.shape[0] / m)
                    loss = float(total)
                if on_epoch is not None:
                    on_epoch(epoch)
        return loss

    def weights(self):
        return [(W.astype(np.float64), b.astype(np.float64)) for W, b in zip(self.W, self.b)]


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


class PlainNumpy(_NumpyPeer):
    """The blog's equations written straight down in NumPy: new arrays everywhere, sigmoid recomputed for
    its derivative."""

    name, label = "plain", "plain NumPy (blog's equations)"

    def _batch(self, X, Y, idx):
        return self._step(X[idx], Y[idx])

    def _step(self, X, Y):
        m, L = X.shape[0], len(self.W)
        cache = [(None, X)]
        A = X
        for i in range(L):
            Z = A @ self.W[i].T + self.b[i]  # (m, n_out)
            A = _sigmoid(Z) if i < L - 1 else Z
            cache.append((Z, A))
        loss = 0.5 * np.sum((A - Y) ** 2) / m
        dA = (A - Y) / m
        dWs, dbs = [None] * L, [None] * L
        for i in reversed(range(L)):
            Z = cache[i + 1][0]
            if i < L - 1:
                s = _sigmoid(Z)  # the blog's sigmoid_prime(Z) = sigmoid(Z) * (1 - sigmoid(Z))
                dZ = dA * (s * (1 - s))
            else:
                dZ = dA
            dWs[i] = dZ.T @ cache[i][1]  # (n_out, n_in)
            dbs[i] = np.sum(dZ, axis=0)
            if i:
                dA = dZ @ self.W[i]  # (m, n_in)
        if not self.adam:
            for i in range(L):
                self.W[i] = self.W[i] - self.lr * dWs[i]
                self.b[i] = self.b[i] - self.lr * dbs[i]
            return loss
        self.t += 1
        if self.t == 1:
            self.mom = [np.zeros_like(p) for p in self.W + self.b]
            self.vel = [np.zeros_like(p) for p in self.W + self.b]
        params = self.W + self.b
        for i, g in enumerate(dWs + dbs):
            self.mom[i] = BETA_1 * self.mom[i] + (1 - BETA_1) * g
            self.vel[i] = BETA_2 * self.vel[i] + (1 - BETA_2) * g * g
            m_hat = self.mom[i] / (1 - BETA_1 ** self.t)
            v_hat = self.vel[i] / (1 - BETA_2 ** self.t)
            params[i] = params[i] - self.lr * m_hat / (np.sqrt(v_hat) + EPSILON)
        self.W, self.b = params[:L], params[L:]
        return loss

    def reset(self):
        dt = self.W[0].dtype
        self.W = [np.array(W, dtype=dt) for W, _ in self.prob.weights]
        self.b = [np.array(b, dtype=dt) for _, b in self.prob.weights]
        self.rng = np.random.default_rng(self.prob.shuffle_seed)
        self.t = 0


class TunedNumpy(_NumpyPeer):
    """NumPy as an expert writes it: preallocated buffers reused every epoch, ``out=``, in-place ufuncs,
    transposed views handed to BLAS, the bias gradient as ``ones @ dZ``, the sigmoid derivative from the
    stored output, no avoidable temporary.

    The working set is exactly data + parameters + gradients + one ``Z`` and one
    ``A`` per layer: back-propagation writes ``dA`` into the spent ``Z`` buffer and
    ``1 - a`` into the spent ``A`` buffer.
    """

    name, label = "tuned", "tuned NumPy"

    def __init__(self, prob: Problem) -> None:
        super().__init__(prob)
        dt = np.dtype(prob.dtype)
        # the faster of two overflow-free in-place sigmoids on AVX-512 (measured): tanh in float32,
        # exp in float64
        self._sigmoid = _sigmoid_tanh if dt == np.float32 else _sigmoid_exp
        self.WT = [W.T for W in self.W]  # views: W is only ever updated in place
        self.dW = [np.empty_like(W) for W in self.W]
        self.db = [np.empty_like(b) for b in self.b]
        self.buffers: dict[int, tuple] = {}  # batch length -> (Z, A, dZ.T views, x, y)
        if self.adam:
            params = self.W + self.b
            self.mom = [np.zeros_like(p) for p in params]
            self.vel = [np.zeros_like(p) for p in params]
            self.scratch = [np.empty_like(p) for p in params]

    def reset(self):
        super().reset()
        if self.adam:
            for a in self.mom + self.vel:
                a[...] = 0

    def _buffers(self, n: int) -> tuple:
        buf = self.buffers.get(n)
        if buf is None:
            dt = self.W[0].dtype
            Z = [np.empty((n, W.shape[0]), dtype=dt) for W in self.W]  # (n, n_out) per layer
            A = [np.empty_like(z) for z in Z[:-1]]  # the identity output's A is its Z
            x = y = None
            if not self.full:  # the gathered batch
                x = np.empty((n, self.X.shape[1]), dtype=dt)
                y = np.empty((n, self.Y.shape[1]), dtype=dt)
            # db = ones @ dZ: the column sums as one BLAS call, faster than sum(axis=0)
            ones = np.ones(n, dtype=dt)
            buf = self.buffers[n] = (Z, A, [z.T for z in Z], x, y, ones)
        return buf

    def _batch(self, X, Y, idx):
        buf = self._buffers(idx.shape[0])
        np.take(X, idx, axis=0, out=buf[3])
        np.take(Y, idx, axis=0, out=buf[4])
        return self._step(buf[3], buf[4], buf)

    def _step(self, X, Y, buf=None):
        Z, A, ZT, _, _, ones = buf if buf is not None else self._buffers(X.shape[0])
        W, b, WT, dW, db = self.W, self.b, self.WT, self.dW, self.db
        L = len(W)
        a = X
        for i in range(L - 1):
            _dot(a, WT[i], Z[i])  # (m, n_out)
            Z[i] += b[i]
            self._sigmoid(Z[i], A[i])
            a = A[i]
        D = Z[-1]
        _dot(a, WT[-1], D)
        D += b[-1]
        D -= Y  # identity output: A - Y, in place
        m = X.shape[0]
        loss = 0.5 * np.vdot(D, D) / m
        D *= 1.0 / m  # dZ of the output layer
        for i in reversed(range(L)):
            np.matmul(ZT[i], X if i == 0 else A[i - 1], out=dW[i])  # (n_out, n_in)
            np.matmul(ones, Z[i], out=db[i])  # (n_out,)
            if i:
                dA = Z[i - 1]  # spent since the forward pass
                _dot(Z[i], W[i], dA)  # (m, n_in), with W[i] before its update
                a = A[i - 1]
                dA *= a
                np.subtract(1.0, a, out=a)  # a is spent too (dW[i] is done)
                dA *= a  # dZ = dA * a * (1 - a)
            if not self.adam:
                dW[i] *= self.lr
                W[i] -= dW[i]
                db[i] *= self.lr
                b[i] -= db[i]
        if self.adam:
            self._adam()
        return loss

    def _adam(self):
        self.t += 1
        step = self.lr / (1 - BETA_1 ** self.t)
        root = 1.0 / np.sqrt(1 - BETA_2 ** self.t)
        for p, g, mo, ve, s in zip(self.W + self.b, self.dW + self.db, self.mom, self.vel, self.scratch):
            mo *= BETA_1
            np.multiply(g, 1 - BETA_1, out=s)
            mo += s
            ve *= BETA_2
            np.multiply(g, g, out=s)
            s *= 1 - BETA_2
            ve += s
            np.sqrt(ve, out=s)
            s *= root
            s += EPSILON
            np.divide(mo, s, out=s)
            s *= step
            p -= s


def _dot(a, b, out):
    """a @ b into out; an outer product (inner size 1) as a broadcast multiply, as nn_xp does."""
    if a.shape[-1] == 1:
        np.multiply(a, b, out=out)
    else:
        np.matmul(a, b, out=out)


def _sigmoid_tanh(z, out):
    np.multiply(z, 0.5, out=out)
    np.tanh(out, out=out)
    out *= 0.5
    out += 0.5


def _sigmoid_exp(z, out):
    np.negative(z, out=out)
    np.exp(out, out=out)
    out += 1.0
    np.reciprocal(out, out=out)


# ------------------------------------------------------------------ nn_xp
class NnXp(Peer):
    """nn_xp's public API: ``Network(...).set_weights(...)``, then ``fit`` for the given epochs."""

    name, label = "nn_xp", "nn_xp"

    def __init__(self, prob: Problem) -> None:
        import nn_xp

        L = len(prob.sizes) - 1
        net = nn_xp.Network(list(prob.sizes), ["sigmoid"] * (L - 1) + ["identity"], loss="mse",
                            backend=prob.backend, device=prob.device, dtype=prob.dtype)
        self.net, self.prob, self._nn_xp = net, prob, nn_xp
        self.reset()
        self.batch_size = prob.batch_size
        # the data on the model's device once (a no-op for NumPy), as every peer holds its data
        self.X, self.Y = net.backend.asarray(prob.X), net.backend.asarray(prob.Y)
        self._sync = _device_sync(net.backend.name, net.device)

    def reset(self):
        prob, nn_xp = self.prob, self._nn_xp
        self.net.set_weights(prob.weights)
        self.net.rng = np.random.default_rng(prob.shuffle_seed)  # the shuffles the other peers draw
        # one optimizer object across runs, so Adam's state carries on as in the other peers
        self.opt = (nn_xp.Adam(prob.lr, beta_1=BETA_1, beta_2=BETA_2, epsilon=EPSILON) if prob.adam
                    else nn_xp.SGD(prob.lr))

    def run(self, epochs, on_epoch=None):
        callbacks = None if on_epoch is None else (lambda epoch, logs: on_epoch(epoch))
        history = self.net.fit(self.X, self.Y, epochs=epochs, optimizer=self.opt, batch_size=self.batch_size,
                               callbacks=callbacks)
        return history.history["loss"][-1]

    def weights(self):
        return [(W.astype(np.float64), b.astype(np.float64)) for W, b in self.net.get_weights()]

    def sync(self):
        self._sync()


def _device_sync(backend: str, device: Any) -> Callable[[], None]:
    if backend == "cupy":
        import cupy

        return lambda: cupy.cuda.Device().synchronize()
    if backend == "torch" and getattr(device, "type", str(device)).startswith("cuda"):
        import torch

        return torch.cuda.synchronize
    return lambda: None


# ------------------------------------------------------------------ PyTorch
class TorchManual(Peer):
    """PyTorch with the same hand-written back-propagation (no autograd) under ``torch.no_grad()``.

    Idiomatic torch: ``addmm`` for ``A @ W.T + b``, ``torch.sigmoid``, in-place
    ``mul_``/``add_``, ``torch.optim.Adam`` for the mini-batch case (its default,
    single-tensor implementation on the CPU).
    """

    name, label = "torch", "PyTorch (manual backprop)"

    def __init__(self, prob: Problem) -> None:
        import torch

        self.torch = torch
        dev = torch.device(prob.device if prob.device is not None and prob.backend != "numpy" else "cpu")
        if dev.type == "cuda" and prob.backend == "cupy":
            dev = torch.device("cuda", _cupy_device_index(prob.device))
        self.dev = dev
        dt = getattr(torch, prob.dtype)
        self.W = [torch.tensor(W, dtype=dt, device=dev) for W, _ in prob.weights]
        self.b = [torch.tensor(b, dtype=dt, device=dev) for _, b in prob.weights]
        self.X = torch.as_tensor(prob.X, device=dev)
        self.Y = torch.as_tensor(prob.Y, device=dev)
        self.lr, self.batch_size, self.full, self.prob = prob.lr, prob.batch_size, prob.full_batch, prob
        self.reset()

    def reset(self):
        torch, prob = self.torch, self.prob
        with torch.no_grad():
            for W, b, (W0, b0) in zip(self.W, self.b, prob.weights):
                W.copy_(torch.from_numpy(W0))
                b.copy_(torch.from_numpy(b0))
        self.rng = np.random.default_rng(prob.shuffle_seed)
        self.opt = (torch.optim.Adam(self.W + self.b, lr=prob.lr, betas=(BETA_1, BETA_2), eps=EPSILON)
                    if prob.adam else None)

    def _step(self, X, Y):
        torch, W, b = self.torch, self.W, self.b
        L, m = len(W), X.shape[0]
        acts = [X]
        a = X
        for i in range(L):
            z = torch.addmm(b[i], a, W[i].T)  # (m, n_out)
            a = torch.sigmoid(z) if i < L - 1 else z
            acts.append(a)
        d = a - Y
        flat = d.reshape(-1)
        loss = torch.dot(flat, flat) * (0.5 / m)
        dz = d.mul_(1.0 / m)
        for i in reversed(range(L)):
            dW = dz.T @ acts[i]  # (n_out, n_in)
            db = dz.sum(0)
            if i:
                a = acts[i]
                dz = (dz @ W[i]).mul_(a).mul_(1.0 - a)  # dA * a * (1 - a)
            if self.opt is None:
                W[i].add_(dW, alpha=-self.lr)
                b[i].add_(db, alpha=-self.lr)
            else:
                W[i].grad, b[i].grad = dW, db
        if self.opt is not None:
            self.opt.step()
        return loss

    def run(self, epochs, on_epoch=None):
        torch, X, Y, m = self.torch, self.X, self.Y, self.X.shape[0]
        with torch.no_grad():
            for epoch in range(epochs):
                if self.full:
                    loss = self._step(X, Y).item()
                else:
                    order = torch.from_numpy(self.rng.permutation(m)).to(self.dev)
                    total = 0.0
                    for lo in range(0, m, self.batch_size):
                        idx = order[lo:lo + self.batch_size]
                        total = total + (self._step(X.index_select(0, idx), Y.index_select(0, idx))
                                         * (idx.shape[0] / m))
                    loss = total.item()
                if on_epoch is not None:
                    on_epoch(epoch)
        return loss

    def weights(self):
        return [(W.detach().cpu().double().numpy(), b.detach().cpu().double().numpy())
                for W, b in zip(self.W, self.b)]

    def sync(self):
        if self.dev.type == "cuda":
            self.torch.cuda.synchronize()


def _cupy_device_index(device: Any) -> int:
    if device is None:
        return 0
    if isinstance(device, int) or (isinstance(device, str) and device.isdigit()):
        return int(device)
    return int(str(device).partition(":")[2] or 0)


# ------------------------------------------------------------------ scikit-learn
class Sklearn(Peer):
    """scikit-learn's ``MLPRegressor`` started from the same weights (``coefs_`` holds ``W.T``).

    ``fit`` with ``warm_start=True`` and ``max_iter=epochs`` continues from the
    current weights. scikit-learn's reported loss is divided by the number of
    outputs too, but its gradient is the blog's ``(A - Y) / m``, so the weights
    match. Its Adam puts epsilon outside the bias correction and it shuffles with
    its own generator, so in the mini-batch case its weights differ: timed, not checked.
    """

    name, label = "sklearn", "scikit-learn MLPRegressor"
    per_epoch_hook = False

    def __init__(self, prob: Problem) -> None:
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.neural_network import MLPRegressor

        self._warning = ConvergenceWarning
        m = prob.m
        kw = dict(hidden_layer_sizes=tuple(prob.sizes[1:-1]), activation="logistic", alpha=0.0,
                  batch_size=m if prob.full_batch else prob.batch_size, learning_rate_init=prob.lr,
                  max_iter=1, shuffle=not prob.full_batch, tol=0.0, n_iter_no_change=10 ** 9,
                  warm_start=True, early_stopping=False, random_state=prob.shuffle_seed)
        if prob.adam:
            kw.update(solver="adam", beta_1=BETA_1, beta_2=BETA_2, epsilon=EPSILON)
        else:
            kw.update(solver="sgd", learning_rate="constant", momentum=0.0, nesterovs_momentum=False)
        self.X = prob.X
        self.y = prob.Y[:, 0] if prob.Y.shape[1] == 1 else prob.Y  # a column would warn
        self.reg = MLPRegressor(**kw)
        self.prob = prob
        self._fit()  # one epoch to create the model's attributes, then the common starting weights
        self.reset()

    def reset(self):
        dt = np.dtype(self.prob.dtype)
        # copies, always: for a one-input or one-output layer W.T is already contiguous, and
        # ascontiguousarray would hand scikit-learn a view of the shared starting weights to train in place
        self.reg.coefs_ = [np.array(W.T, dtype=dt, order="C", copy=True) for W, _ in self.prob.weights]
        self.reg.intercepts_ = [np.array(b, dtype=dt) for _, b in self.prob.weights]

    def _fit(self):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", self._warning)  # "max_iter reached": asked for
            self.reg.fit(self.X, self.y)

    def run(self, epochs, on_epoch=None):
        self.reg.max_iter = epochs
        self._fit()
        return float(self.reg.loss_)

    def weights(self):
        return [(W.T.astype(np.float64), b.astype(np.float64))
                for W, b in zip(self.reg.coefs_, self.reg.intercepts_)]


PEERS = {p.name: p for p in (NnXp, TunedNumpy, PlainNumpy, TorchManual, Sklearn)}
