"""The buffered engine: fit's step written into reused buffers, where the library takes ``out=`` (NumPy,
CuPy).

It stores the parameters as views of one flat buffer (so an undo point or an
optimizer step over all of them is one call), and with few inputs keeps the
input layer as one ``[W0 | b0]`` block that ``[X, 1]`` is multiplied by (the
bias add and its gradient's column sum ride in the matrix products). Its
forward pass and back-propagation are the model's, written into buffers:
the gradients into one flat buffer shaped like the parameters', and on large
layers every ``Z`` and ``A`` into a :class:`Workspace` reused every epoch.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from itertools import repeat
from typing import Any

from .. import _kernels as K
from .._host import concatenate_flat
from .._typing import Array
from ..activations import ACTIVATIONS, IDENTITY
from .portable import PortableEngine, Trainer, chunk_rows
from .storage import FlatParameters

__all__ = ["AUGMENT_MAX_INPUTS", "BufferedEngine", "BufferedTrainer", "ELEMENTWISE_BLOCK_BYTES",
           "InferenceBuffers", "WORKSPACE_MIN_ELEMENTS", "Workspace", "activate_rows", "derive_rows"]

#: networks with at most this many inputs keep the input layer as one ``[W0 | b0]`` block and fit multiplies
#: ``[X, 1]`` by it. With few inputs the bias passes are a large share of the input layer's work (about 1/n_in
#: of it) and the copy of X with a column of ones costs little; with many, the reverse
AUGMENT_MAX_INPUTS = 8
#: below this many elements in the widest layer's ``Z``, fit allocates as the portable path does: small arrays
#: come from the allocator's cache, and ``out=`` would only add call overhead
WORKSPACE_MIN_ELEMENTS = 1 << 16
#: on the CPU (NumPy), fit runs a workspace layer's elementwise passes (the bias add and the activation's four
#: passes forward, its derivative's three backward) on blocks of rows of about this many bytes, which stay in
#: the core's L2 cache from the first pass to the last: one trip through memory instead of five, or three.
#: ``benchmarks/row_blocks.py`` on 8192 x 1024 (Intel Xeon, 2 MiB L2 a core): a sigmoid layer's passes 37.6 ->
#: 24.7 ms in float32, 70.4 -> 50.4 ms in float64, flat from 128 KiB to 512 KiB; 256 KiB fits in every
#: x86 and ARM core's L2. On a GPU (CuPy) one kernel over the whole array is best: no blocks
ELEMENTWISE_BLOCK_BYTES = 256 << 10


class BufferedEngine(PortableEngine):
    """The portable engine's arithmetic, into buffers the engine owns and keeps between fits.

    ``workspace_min_elements`` (default :data:`WORKSPACE_MIN_ELEMENTS`) is the
    size from which the per-layer values get reused buffers; 0 gives them to every network.
    ``elementwise_block_bytes`` (:data:`ELEMENTWISE_BLOCK_BYTES` on NumPy, None on CuPy) is the size of the
    row blocks a workspace layer's elementwise passes take at a time; None runs each over the whole array.
    """

    name = "buffered"

    def __init__(self, backend: Any, dtype: Any) -> None:
        super().__init__(backend, dtype)
        self.workspace_min_elements = WORKSPACE_MIN_ELEMENTS
        blocks = K.blocks_elementwise_passes(backend.xp)
        self.elementwise_block_bytes = ELEMENTWISE_BLOCK_BYTES if blocks else None
        self._workspace: Workspace | None = None
        self._grads: FlatParameters | None = None
        self._ones: Array | None = None
        self._inference: InferenceBuffers | None = None
        self._small_plan: tuple | None = None

    def lay_out(self, weights: Sequence[Any], layers: Sequence[Any]) -> FlatParameters:
        """One flat device buffer, the parameters views of it (a new buffer: never the caller's arrays); the
        buffers kept between fits stay, as the portable engine's."""
        block = layers[0].n_in <= AUGMENT_MAX_INPUTS
        flat = self.backend.xp.asarray(concatenate_flat(list(weights), bias_column=block), dtype=self.dtype,
                                       device=self.backend.device)
        return FlatParameters(flat, [(layer.n_out, layer.n_in) for layer in layers], block, self.backend.xp)

    def trainer(self, net: Any, optimizer: Any, X: Array, Y: Array,
                validation: tuple[Array, Array] | None = None, *, batch_size: int | None = None,
                shuffle: bool = True, gradient_hook: Any = None,
                shard: tuple[int, int] | None = None, scoring: Any = None) -> Trainer:
        return BufferedTrainer(net, optimizer, X, Y, validation, batch_size, shuffle, gradient_hook, shard,
                               scoring)

    def release(self) -> None:
        super().release()
        self._workspace = self._grads = self._ones = self._inference = self._small_plan = None

    def fit_memory(self, layers: Sequence[Any], batch_rows: int) -> dict[str, int]:
        """As the portable engine's, plus ``"ones"`` (the vector the bias gradients sum with). The gradients
        are one flat buffer kept between fits (:meth:`gradients`); the activations are kept too, in a
        :class:`Workspace` (:meth:`workspace`), where the widest layer has :attr:`workspace_min_elements`
        values or more and every activation is nn_xp's own, else new arrays every step."""
        memory = super().fit_memory(layers, batch_rows)
        memory["ones"] = batch_rows * (self.backend.xp.finfo(self.dtype).bits // 8)
        return memory

    @property
    def workspace_rows(self) -> int | None:
        """The rows of the per-layer buffers kept for the next fit, or None when none are kept."""
        return None if self._workspace is None else self._workspace.m

    def gradients(self, params: FlatParameters) -> FlatParameters:
        """fit's gradient buffers: one flat array laid out like the parameters'."""
        grads = self._grads
        if grads is None or grads.flat.shape != params.flat.shape:
            grads = self._grads = params.like(self.backend.xp.empty_like(params.flat))
        return grads

    def ones(self, m: int) -> Array:
        """A kept ``(m,)`` vector of ones: ``db = ones @ dZ`` beats ``xp.sum`` on small layers."""
        ones = self._ones
        if ones is None or ones.shape[0] < m:
            ones = self._ones = self.backend.xp.ones(m, dtype=self.dtype, device=self.backend.device)
        return ones if ones.shape[0] == m else ones[:m]  # one vector, the largest batch seen

    def workspace(self, layers: Sequence[Any], m: int) -> Workspace | None:
        """The per-layer buffers for batches of ``m`` rows, or None where the network is too small to gain."""
        if m * max(layer.n_out for layer in layers) < self.workspace_min_elements:
            return None
        if not _builtin(layers):
            return None  # a user's Activation may read z in backward, or take no out=: it allocates
        ws = self._workspace
        if ws is None or ws.m != m:
            self._workspace = None  # free the old buffers before allocating the new ones
            xp, device = self.backend.xp, self.backend.device
            ws = self._workspace = Workspace.allocate(layers, m, xp, self.dtype, device)
        return ws

    def elementwise_rows(self, layers: Sequence[Any]) -> list[int] | None:
        """Per layer, the rows of a workspace's ``Z`` and ``A`` that fit's elementwise passes take at a time
        (:attr:`elementwise_block_bytes` of them), or None where each pass takes the whole array."""
        if self.elementwise_block_bytes is None:
            return None
        size = self.backend.xp.finfo(self.dtype).bits // 8
        return [max(1, self.elementwise_block_bytes // (layer.n_out * size)) for layer in layers]


    # ------------------------------------------------------------ inference
    def inference_buffers(self, layers: Sequence[Any], rows: int) -> InferenceBuffers | None:
        """Two kept buffers of ``rows`` rows of the widest layer, or None where allocating costs less."""
        widths = tuple(layer.n_out for layer in layers)
        if rows * max(widths) < self.workspace_min_elements:
            return None
        buffers = self._inference
        if buffers is None or buffers.m < rows or buffers.widths != widths:
            self._inference = None  # free the old ones first
            xp, device = self.backend.xp, self.backend.device
            flats = [xp.empty(rows * max(widths), dtype=self.dtype, device=device) for _ in range(2)]
            buffers = self._inference = InferenceBuffers(flats, widths, rows, xp)
        return buffers

    def outputs(self, net: Any, X: Array, batch_size: int | None = None,
                out: Array | None = None) -> Iterator[tuple[int, int, Array, Array]]:
        """As the portable engine's, each layer's ``Z`` into a kept buffer and activated in place; with
        ``out``, every chunk's ``A`` lands in its rows of ``out``."""
        layers, m = net.layers, X.shape[0]
        if not _builtin(layers):
            for lo, hi, z, a in super().outputs(net, X, batch_size):  # a user's activation: no out=
                if out is not None:
                    out[lo:hi, ...] = a
                yield lo, hi, z, a
            return
        rows = chunk_rows(layers, m, batch_size)
        buffers, params = self.inference_buffers(layers, rows), net.parameters
        for lo in range(0, m, rows):
            hi = min(lo + rows, m)
            views = None if buffers is None else buffers.rows(hi - lo)
            dest = None if out is None else out[lo:hi, ...]
            yield (lo, hi, *self._output_rows(layers, params, X if hi - lo == m else X[lo:hi, ...], views,
                                              dest))

    def predict(self, net: Any, X: Array, batch_size: int | None = None) -> Array:
        m, small = X.shape[0], self._small(net)
        if small is not None and (batch_size is None or batch_size >= m) and m * small[0] < small[1]:
            return self._small_output(small[2], X)  # one chunk, too small for kept buffers to pay
        xp = self.backend.xp
        out = xp.empty((X.shape[0], net.layers[-1].n_out), dtype=self.dtype, device=self.backend.device)
        for _ in self.outputs(net, X, batch_size, out):
            pass
        return out

    def _small(self, net: Any) -> tuple[int, int, list] | None:
        """For networks of nn_xp's own activations, ``(widest layer, workspace_min_elements, [(activation,
        W.T, b), ...])``, kept while the parameters are the same objects: what a tiny ``predict`` needs,
        without the per-call work of looking it up (a 1-20-1 call on 100 rows takes a few microseconds)."""
        small = self._small_plan
        if small is None or small[0] is not net.parameters or small[1] is not net.layers:
            layers, p = net.layers, net.parameters
            pairs = [(layer.activation, W.T, b) for layer, W, b in zip(layers, p[0::2], p[1::2])]
            small = self._small_plan = (p, layers, (max(layer.n_out for layer in layers), pairs)
                                        if _builtin(layers) else None)
        return None if small[2] is None else (small[2][0], self.workspace_min_elements, small[2][1])

    def _small_output(self, pairs: list, A: Array) -> Array:
        """The output layer's ``A`` for rows ``A``, every array new and activated in place."""
        xp, matmul = self.backend.xp, K.matmul_function(self.backend.xp)
        for activation, WT, b in pairs:
            Z = A * WT if A.shape[-1] == 1 else matmul(A, WT)  # (m, n_out); an outer product as a broadcast
            Z += b
            A = activation.forward(Z, xp, Z)
        return A

    def _output_rows(self, layers: Sequence[Any], p: FlatParameters, A: Array, views: list[Array] | None,
                     dest: Array | None, keep_z: bool = True) -> tuple[Array, Array]:
        """The output layer's ``(Z, A)`` for the rows ``A``: the model's :meth:`output`, each layer's ``Z``
        into ``views[i]`` (alternating buffers; new arrays where None) and hidden layers activated in place;
        the output layer's ``A`` into ``dest`` where given, else in place unless ``keep_z``."""
        xp, last = self.backend.xp, len(layers) - 1
        matmul = K.matmul_function(xp)
        Z = A
        for i, (layer, W, b) in enumerate(zip(layers, p[0::2], p[1::2])):
            activation = layer.activation
            into = dest if i == last and activation is IDENTITY else None if views is None else views[i]
            if into is None:
                Z = _dot(A, W.T)  # (m, n_out)
            elif A.shape[-1] == 1:
                Z = K.multiply(A, W.T, xp, into)
            else:
                Z = matmul(A, W.T, out=into)
            Z += b
            if i < last:
                A = activation.forward(Z, xp, Z)  # in place: the next layer needs only A
            else:
                A = activation.forward(Z, xp, Z if dest is None and not keep_z else dest)
        if dest is not None and A is not dest:
            dest[...] = A  # softmax makes a new array
            A = dest
        return Z, A


class InferenceBuffers:
    """Two flat buffers of ``m`` rows of the widest layer: layer ``i``'s ``Z`` (then its ``A``, in place) goes
    into buffer ``i % 2``, so its input, the layer below's ``A``, is never overwritten."""

    def __init__(self, flats: list[Array], widths: tuple[int, ...], m: int, xp: Any) -> None:
        self.flats, self.widths, self.m, self.xp = flats, widths, m, xp
        self.views: dict[int, list[Array]] = {}

    def rows(self, m: int) -> list[Array]:
        """Per layer, an ``(m, n_out)`` view of its buffer."""
        views = self.views.get(m)
        if views is None:
            views = self.views[m] = [self.xp.reshape(self.flats[i % 2][:m * n], (m, n))
                                     for i, n in enumerate(self.widths)]
        return views


class BufferedTrainer(Trainer):
    """The twins of the model's forward pass and back-propagation, writing into the engine's buffers."""

    def __init__(self, net: Any, optimizer: Any, X: Array, Y: Array, validation: Any, batch_size: int | None,
                 shuffle: bool, gradient_hook: Any, shard: tuple[int, int] | None = None,
                 scoring: Any = None) -> None:
        super().__init__(net, optimizer, X, Y, validation, batch_size, shuffle, gradient_hook, shard, scoring)
        engine, xp, params = net.engine, self.xp, net.parameters
        self.engine, self.layers, self.loss_fn = engine, net.layers, net.loss_fn
        self.grads = engine.gradients(params)
        self.ws = engine.workspace(net.layers, self.batch_rows)
        # with a workspace, the rows each elementwise pass takes at a time, per layer (None: all of them)
        self.block_rows = None if self.ws is None else engine.elementwise_rows(net.layers)
        self.block = params.block is not None
        if self.block:  # [X, 1], once per fit: the input layer's bias rides in its products
            self.X = xp.concat([X, xp.ones((self.m, 1), dtype=X.dtype, device=net.device)], axis=1)
        self.matmul = K.matmul_function(xp)
        self.fused = net.loss_fn.fused_with is not None
        self._pairs: tuple[Any, list] = (None, [])  # (parameters, [(layer, W, b)]): see _layer_params

    def _layer_params(self, p: FlatParameters) -> list:
        """``[(layer, W, b), ...]`` of the parameters ``p``, made again only when the network's are new."""
        if self._pairs[0] is not p:
            self._pairs = (p, list(zip(self.layers, p[0::2], p[1::2])))
        return self._pairs[1]

    def batch(self, X: Array, Y: Array, m: int | None = None, w: Array | None = None,
              total: Array | None = None, *, masks: list[Array | None] | None = None) -> tuple[Array, Any]:
        params = self.net.parameters
        ws = None if self.ws is None else self.ws.rows(X.shape[0])
        values = self.forward(params, X, ws, masks)
        if self.scoring is not None:  # weights or metrics=: the metrics' sums, before backward spends A
            correct = self.scoring.update(values[-1][1], Y, w, self.xp)
        else:
            correct = self.loss_fn.correct(values[-1][1], Y, self.xp) if self.classification else None
        rows = None if m == Y.shape[0] else m
        if total is not None:  # weighted_mean: the batch's sum of weights is the mean's denominator
            m = rows = total
        loss = self.backward(params, values, Y, ws, rows, w, masks)
        if self.penalty is not None:  # into the gradient buffers' W views (with a block, [dW0 | db0]'s dW0)
            loss = self.penalty.add(loss, self.grads, params, Y.shape[0] if m is None else m, self.xp,
                                    inplace=True)
        if self.gradient_hook is not None:
            self.gradient_hook(self.grads)
        self.optimizer.step(params, self.grads, self.names, xp=self.xp)
        return loss, correct

    def forward(self, p: FlatParameters, A: Array, ws: Workspace | None,
                masks: list[Array | None] | None = None) -> list[tuple[Array | None, Array]]:
        """``[(None, X), (Z, A), ...]``, into the workspace's buffers where there is one.

        With an input block, ``A`` is ``[X, 1]`` and the input layer is one product with ``[W0 | b0]``.
        With dropout ``masks``, each layer after the first sees ``A * mask`` (a new array); the values keep
        the undropped ``A``, as the model's :meth:`~nn_xp.Network.evaluate` does."""
        values = [(None, A)]
        xp, matmul, block = self.xp, self.matmul, self.block
        Zs, As = (ws.Z, ws.A) if ws is not None else (repeat(None), repeat(None))
        keeps = repeat(None) if masks is None else (None, *masks)  # the dropout mask of each layer's input
        blocks = repeat(None) if self.block_rows is None else self.block_rows
        for (layer, W, b), Z, A_out, keep, rows in zip(self._layer_params(p), Zs, As, keeps, blocks):
            if keep is not None:  # dropout: the kept units, rescaled
                A = A * keep  # what this layer sees: (m, n_in)
            bias = b
            if block:  # the input layer, bias included: [X, 1] @ [W0 | b0].T
                Z = matmul(A, p.block.T, out=Z)  # (m, n_out)
                block, bias = False, None
            else:
                Z = _dot(A, W.T) if Z is None else matmul(A, W.T, out=Z)  # (m, n_out)
            activation = layer.activation
            if rows is not None and activation is not IDENTITY:  # Z + b and g(Z), a block of rows at a time
                A = activate_rows(activation, Z, bias, A_out, rows, xp)
            else:
                if bias is not None:
                    Z += bias
                if activation is IDENTITY:
                    A = Z
                else:  # a user's activation may take no out= (it never gets a workspace)
                    A = activation.forward(Z, xp) if A_out is None else activation.forward(Z, xp, A_out)
            values.append((Z, A))
        return values

    def backward(self, p: FlatParameters, values: list[tuple[Array | None, Array]], Y: Array,
                 ws: Workspace | None, m: int | None = None, w: Array | None = None,
                 masks: list[Array | None] | None = None) -> Array:
        """Back-propagation into the gradient buffers; returns the loss (a device scalar).

        With a workspace, ``values`` are consumed: each layer's spent ``A`` takes its
        derivative and its spent ``Z`` the next ``dA``. ``m``, ``w`` and ``masks`` as for
        :meth:`Trainer.batch`: a hidden layer's ``dA`` is masked in place before its ``dZ``, and each ``dW``
        comes from what its layer saw (``A * mask`` again, a new array)."""
        xp, matmul, layers, grads = self.xp, self.matmul, self.layers, self.grads
        loss, dA = self.loss_fn.value_and_delta_of(*values[-1], Y, xp, m, w)  # dA = (A_L - Y) / m; fused: dZ
        ones = self.engine.ones(Y.shape[0])
        last = len(layers) - 1
        for i in range(last, -1, -1):
            Z, A = values[i + 1]
            activation = layers[i].activation
            if masks is not None and i < last and masks[i] is not None:  # dropout: the next layer saw
                dA *= masks[i]  # A * mask, so this is dA of A (in place: a temporary, or the spent Z)
            if (self.fused and i == last) or activation is IDENTITY:
                dZ = dA
            elif ws is None:
                dZ = activation.backward(dA, Z, A, xp)
            elif self.block_rows is not None:  # as below, a block of rows at a time
                dZ = derive_rows(activation, dA, Z, A, self.block_rows[i], xp)
            else:  # Z and A are spent: the backward may overwrite them
                dZ = activation.backward(dA, Z, A, xp, True)
            if i == 0 and self.block:
                matmul(dZ.T, values[0][1], out=grads.block)  # (n_out, n_in + 1): [dW0 | db0] from [X, 1]
            else:
                seen = values[i][1]  # what this layer saw: A_prev, times its dropout mask where it has one
                if masks is not None and i and masks[i - 1] is not None:
                    seen = seen * masks[i - 1]  # (m, n_in)
                matmul(dZ.T, seen, out=grads[2 * i])  # (n_out, n_in)
                matmul(ones, dZ, out=grads[2 * i + 1])  # (n_out,) column sums
            if i:  # dA of the layer below, into its spent Z (its backward reads only A)
                dA = _dot(dZ, p[2 * i]) if ws is None else matmul(dZ, p[2 * i], out=values[i][0])  # (m, n_in)
        return loss


def _builtin(layers: Sequence[Any]) -> bool:
    """Whether every layer's activation is one of nn_xp's own, whose forward takes ``out=`` (even ``z``)."""
    return all(ACTIVATIONS.get(layer.activation.name) is layer.activation for layer in layers)


def activate_rows(activation: Any, Z: Array, b: Array | None, A: Array, rows: int, xp: Any) -> Array:
    """``Z += b`` (where ``b`` is not None) and ``A = g(Z)`` into the buffer ``A``, ``rows`` rows at a time:
    each block stays in cache through all the passes, and the values are those of whole-array passes, bit for
    bit (every pass is elementwise, or row by row as softmax's)."""
    for lo in range(0, Z.shape[0], rows):
        z, a = Z[lo:lo + rows, ...], A[lo:lo + rows, ...]
        if b is not None:
            z += b
        out = activation.forward(z, xp, a)
        if out is not a:  # an activation that returned a new array: its values into the buffer
            a[...] = out
    return A


def derive_rows(activation: Any, dA: Array, Z: Array, A: Array, rows: int, xp: Any) -> Array:
    """``dZ = dA * g'(Z)`` written over ``dA``, ``rows`` rows at a time, the spent ``Z`` and ``A`` the
    backward's to overwrite (as :func:`activate_rows`: in cache, bit for bit the whole-array values)."""
    for lo in range(0, dA.shape[0], rows):
        d = dA[lo:lo + rows, ...]
        out = activation.backward(d, Z[lo:lo + rows, ...], A[lo:lo + rows, ...], xp, True)
        if out is not d:  # a new array (relu's where): its values over dA
            d[...] = out
    return dA


def _dot(a: Array, b: Array) -> Array:
    """``a @ b``; an outer product (inner size 1, as in the blog's 1-20-1 network) as a broadcast multiply,
    bit-identical and faster than the BLAS call. (Formed transposed, ``(b.T * a.T).T``, the broadcast alone
    is a fifth faster on NumPy, but its column-major result then meets row-major arrays in the elementwise
    passes, which costs more than that.)"""
    return a * b if a.shape[-1] == 1 else a @ b


class Workspace:
    """Per layer: ``Z`` (which back-propagation reuses for that layer's ``dA``) and ``A`` (none for the
    identity, whose ``A`` is its ``Z``) for ``m`` rows; ``rows(k)`` gives views for a shorter (last) batch."""

    def __init__(self, Z: list[Array], A: list[Array | None],
                 views: dict[int, Workspace] | None = None) -> None:
        self.Z, self.A, self.m = Z, A, Z[0].shape[0]
        self.views = {self.m: self} if views is None else views  # one set of buffers, viewed per batch size

    @classmethod
    def allocate(cls, layers: Sequence[Any], m: int, xp: Any, dtype: Any, device: Any) -> Workspace:
        def empty(layer: Any) -> Array:
            return xp.empty((m, layer.n_out), dtype=dtype, device=device)

        return cls([empty(layer) for layer in layers],
                   [None if layer.activation is IDENTITY else empty(layer) for layer in layers])

    def rows(self, m: int) -> Workspace:
        view = self.views.get(m)
        if view is None:
            view = self.views[m] = Workspace([z[:m, ...] for z in self.Z],
                                             [None if a is None else a[:m, ...] for a in self.A], self.views)
        return view
