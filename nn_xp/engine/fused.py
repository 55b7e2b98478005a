"""The fused engine: fit's step in the library's fused operations, where it has them (PyTorch).

On a tiny network every operation costs a few microseconds of dispatch, more
than its arithmetic, so the step costs what its calls and the Python between
them cost. This engine runs the model's forward pass and back-propagation in
the library's own calls, looked up once per fit (:func:`nn_xp._kernels.fused_ops`:
``addmm`` for ``A @ W.T + b`` with each ``W.T`` kept, ``mm``, ``sum``, the
activations' one-pass backward kernels), outside autograd's recording; and where
the optimizer's step is plain gradient descent
(:attr:`~nn_xp.optimizers.Optimizer.plain_descent`) with no gradient hook and
no penalty, the step is taken inside back-propagation, each layer's
``W -= lr * dW`` and ``b -= lr * db`` as soon as they are made (the optimizer
counts the step), with no list of gradients and no optimizer call. Otherwise
the gradients are made and the penalty, the hook and the optimizer get them as
on the portable engine. Either way the operations are the portable engine's,
so the two train bit for bit alike.

torch's ``addmm_`` and ``addmv_`` would fold a gradient product into its update
in one call, but they round about ten times worse than the product alone where
the result is a vector (the input layer of the blog's network, every bias:
they accumulate into the parameter), so they are not used.
"""
from __future__ import annotations

from typing import Any

from .. import _kernels as K
from .._typing import Array
from ..activations import IDENTITY
from .portable import PortableEngine, Trainer
from .storage import Parameters

__all__ = ["FusedEngine", "FusedTrainer"]


class FusedEngine(PortableEngine):
    """The portable engine's layout and inference, with :class:`FusedTrainer` for ``fit``."""

    name = "fused"

    def trainer(self, net: Any, optimizer: Any, X: Array, Y: Array,
                validation: tuple[Array, Array] | None = None, *, batch_size: int | None = None,
                shuffle: bool = True, gradient_hook: Any = None,
                shard: tuple[int, int] | None = None, scoring: Any = None) -> Trainer:
        """A :class:`FusedTrainer`; with dropout, the portable engine's :class:`Trainer`."""
        kind = Trainer if any(net.dropout) else FusedTrainer
        return kind(net, optimizer, X, Y, validation, batch_size, shuffle, gradient_hook, shard, scoring)


class FusedTrainer(Trainer):
    """The model's step in the library's fused operations, looked up once per fit; plain gradient descent
    applied inside back-propagation."""

    def __init__(self, net: Any, optimizer: Any, X: Array, Y: Array, validation: Any, batch_size: int | None,
                 shuffle: bool, gradient_hook: Any, shard: tuple[int, int] | None = None,
                 scoring: Any = None) -> None:
        super().__init__(net, optimizer, X, Y, validation, batch_size, shuffle, gradient_hook, shard, scoring)
        self.layers, self.loss_fn, self.ops = net.layers, net.loss_fn, K.fused_ops(self.xp)
        # decided once per fit: the step applied here (the optimizer counts it), or gradients for it
        self.descend = optimizer.plain_descent and gradient_hook is None and self.penalty is None
        self.no_graph = K.autograd_off(self.xp)  # one context object, entered by every run
        self._plan: tuple[Any, list] = (None, [])  # see _layer_params

    def run(self, epochs: int = 1) -> list[list[Array]]:
        with self.no_graph:  # no autograd graph is recorded: every operation dispatches faster
            return super().run(epochs)

    def _layer_params(self) -> list:
        """Per layer ``(forward, backward, W, b, W.T)``, ``backward`` None where ``dZ`` is ``dA`` (the
        identity, or the output layer of a fused loss); made again only when the parameters are new arrays."""
        p = self.net.parameters
        if self._plan[0] is not p:
            last, fused = len(self.layers) - 1, self.loss_fn.fused_with is not None
            self._plan = (p, [(layer.activation.forward,
                               None if layer.activation is IDENTITY or (fused and i == last)
                               else layer.activation.backward, W, b, W.T)
                              for i, (layer, W, b) in enumerate(zip(self.layers, p[0::2], p[1::2]))])
        return self._plan[1]

    def batch(self, X: Array, Y: Array, m: int | None = None, w: Array | None = None,
              total: Array | None = None, *, masks: list[Array | None] | None = None) -> tuple[Array, Any]:
        plan, xp, linear = self._layer_params(), self.xp, self.ops.linear
        values = [(None, X)]
        A = X
        for forward, _, _, b, WT in plan:
            Z = linear(b, A, WT)  # A @ W.T + b: (m, n_out)
            A = forward(Z, xp)  # (m, n_out)
            values.append((Z, A))
        if self.scoring is not None:
            correct = self.scoring.update(A, Y, w, xp)
        else:
            correct = self.loss_fn.correct(A, Y, xp) if self.classification else None
        rows = (None if m == Y.shape[0] else m) if total is None else total
        loss, dA = self.loss_fn.value_and_delta_of(Z, A, Y, xp, rows, w)  # dA = (A_L - Y) / m; fused: dZ
        if self.descend:
            self.backward_descending(plan, values, dA, self.optimizer.count_step())
        else:
            loss = self.backward_and_step(plan, values, dA, loss, Y.shape[0] if rows is None else rows)
        return loss, correct

    def backward_descending(self, plan: list, values: list, dA: Array, lr: float) -> None:
        """Back-propagation with gradient descent at rate ``lr`` inside it: each layer's ``dA`` for the layer
        below from its ``W`` before ``W`` is updated, then ``W`` and ``b`` updated in place. The same
        operations as the gradients and the optimizer's step on the portable engine, in another order."""
        xp, ops = self.xp, self.ops
        product, descend, column_sum = ops.product, ops.descend, ops.column_sum
        for i in range(len(plan) - 1, -1, -1):
            _, backward, W, b, _ = plan[i]
            Z, A = values[i + 1]
            dZ = dA if backward is None else backward(dA, Z, A, xp)  # dA * g'(Z): (m, n_out)
            if i:
                dA = product(dZ, W)  # dA_prev = dZ W, with the W of this step: (m, n_in)
            descend(W, product(dZ.T, values[i][1]), lr)  # W -= lr * dZ.T @ A_prev
            descend(b, column_sum(dZ), lr)  # b -= lr * (sum of dZ over the samples)

    def backward_and_step(self, plan: list, values: list, dA: Array, loss: Array, rows: int) -> Array:
        """Back-propagation into new gradient arrays, then the penalty, the gradient hook and the optimizer's
        step, as the portable engine takes them; returns the loss (with the penalty's term)."""
        xp, net, product, column_sum = self.xp, self.net, self.ops.product, self.ops.column_sum
        grads: list[Array] = [None] * (2 * len(plan))
        for i in range(len(plan) - 1, -1, -1):
            _, backward, W, _, _ = plan[i]
            Z, A = values[i + 1]
            dZ = dA if backward is None else backward(dA, Z, A, xp)  # (m, n_out)
            grads[2 * i] = product(dZ.T, values[i][1])  # dW = dZ.T @ A_prev: (n_out, n_in)
            grads[2 * i + 1] = column_sum(dZ)  # db: (n_out,)
            if i:
                dA = product(dZ, W)  # (m, n_in)
        if self.penalty is not None:
            loss = self.penalty.add(loss, grads, net.parameters, rows, xp)
        if self.gradient_hook is not None:
            grads = Parameters(grads, xp)
            self.gradient_hook(grads)
        self.optimizer.step(net.parameters, grads, self.names, xp=xp)
        return loss
