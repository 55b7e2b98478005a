"""How the parameters are stored: one array each, or views of one flat buffer.

A network's parameters ``[W0, b0, W1, b1, ...]`` are a :class:`Parameters` list
made by its engine. Where the library writes into buffers (NumPy, CuPy) they are
views of one flat buffer (:class:`FlatParameters`), so a copy of all of them, an
undo point or an optimizer step over all of them is one call whatever the
number of layers. Snapshots are device copies in the same layout.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from array_api_compat import is_writeable_array

from .. import _kernels as K
from .._typing import Array, Namespace

__all__ = ["FlatParameters", "Parameters", "Snapshot"]


class Snapshot:
    """Device copies of a network's parameters: ``arrays``, and with ``flat`` (the layout of
    :class:`FlatParameters`, ``layout``), views of that one buffer."""

    def __init__(self, arrays: list[Array], xp: Namespace, flat: Array | None = None,
                 layout: FlatParameters | None = None) -> None:
        self.arrays, self.xp, self.flat, self.layout = arrays, xp, flat, layout
        # whether a later snapshot may reuse its buffers
        self.writeable = all(map(is_writeable_array, arrays))

    def all_finite(self) -> Array:
        """A device boolean: no value is NaN or infinite."""
        xp = self.xp
        if self.flat is not None:
            return xp.all(xp.isfinite(self.flat))
        return xp.all(xp.stack([xp.all(xp.isfinite(a)) for a in self.arrays]))

    def copy(self) -> Snapshot:
        """An independent copy, on the same device."""
        if self.flat is None:
            return Snapshot([self.xp.asarray(a, copy=True) for a in self.arrays], self.xp)
        flat = self.xp.asarray(self.flat, copy=True)
        return Snapshot(list(self.layout.like(flat)), self.xp, flat, self.layout)


class Parameters(list):
    """``[W0, b0, W1, b1, ...]``, one array each, in namespace ``xp``.

    Items are replaced (not written into) where the library's arrays are
    immutable (JAX), so code holding this list sees the new arrays.
    """

    flat: Array | None = None
    block: Array | None = None

    def __init__(self, arrays: Sequence[Array], xp: Namespace) -> None:
        super().__init__(arrays)
        self.xp = xp

    def snapshot(self, into: Snapshot | None = None) -> Snapshot:
        """Device copies of the parameters, into ``into``'s buffers where it has them and they take writes."""
        if into is not None and into.writeable and len(into.arrays) == len(self):
            for s, p in zip(into.arrays, self):
                K.copy_into(s, p, self.xp)
            return into
        return Snapshot([self.xp.asarray(p, copy=True) for p in self], self.xp)

    def restore(self, snapshot: Snapshot) -> None:
        """Set the parameters to a snapshot's values, in place where the arrays take writes."""
        self._check(snapshot)
        for i, s in enumerate(snapshot.arrays):
            if is_writeable_array(self[i]):
                K.copy_into(self[i], s, self.xp)
            else:
                self[i] = self.xp.asarray(s, copy=True)

    def _check(self, snapshot: Snapshot) -> None:
        shapes, theirs = [tuple(p.shape) for p in self], [tuple(a.shape) for a in snapshot.arrays]
        if shapes != theirs:
            raise ValueError(f"the snapshot holds parameters of shapes {theirs}, this network's are "
                             f"{shapes}: a snapshot of another network?")

    def all_finite(self) -> Array:
        """A device boolean: no parameter holds NaN or infinity."""
        xp = self.xp
        return xp.all(xp.stack([xp.all(xp.isfinite(p)) for p in self]))


class FlatParameters(Parameters):
    """``[W0, b0, W1, b1, ...]`` as views of the 1-D buffer ``flat``, copied or updated in one call.

    ``block`` is the input layer's ``(n_out, n_in + 1)`` block ``[W0 | b0]`` when the
    layout has one (``W0`` and ``b0`` are then its strided views), else None.
    """

    def __init__(self, flat: Array, shapes: Sequence[tuple[int, int]], block: bool, xp: Namespace) -> None:
        views, self.block = _views(flat, shapes, block, xp)
        super().__init__(views, xp)
        self.flat, self.shapes = flat, tuple(shapes)

    def like(self, flat: Array) -> FlatParameters:
        """The same layout over another flat buffer of the same size (gradients, optimizer slots)."""
        return FlatParameters(flat, self.shapes, self.block is not None, self.xp)

    def snapshot(self, into: Snapshot | None = None) -> Snapshot:
        if into is not None and into.flat is not None and into.flat.shape == self.flat.shape:
            K.copy_into(into.flat, self.flat, self.xp)
            return into
        flat = self.xp.asarray(self.flat, copy=True)
        return Snapshot(list(self.like(flat)), self.xp, flat, self)

    def restore(self, snapshot: Snapshot) -> None:
        self._check(snapshot)
        if snapshot.flat is not None and snapshot.flat.shape == self.flat.shape:
            K.copy_into(self.flat, snapshot.flat, self.xp)
        else:
            for p, s in zip(self, snapshot.arrays):
                K.copy_into(p, s, self.xp)

    def all_finite(self) -> Array:
        return self.xp.all(self.xp.isfinite(self.flat))


def _views(flat: Array, shapes: Sequence[tuple[int, int]], block: bool, xp: Namespace) -> tuple[list, Any]:
    """Views of the 1-D ``flat``, layer after layer (NumPy and CuPy reshape a contiguous slice as a view)."""
    views, start, first = [], 0, None
    for i, (n_out, n_in) in enumerate(shapes):
        size = n_out * (n_in + 1)
        if i == 0 and block:
            first = xp.reshape(flat[:size], (n_out, n_in + 1))
            views += [first[:, :n_in], first[:, n_in]]
        else:
            views += [xp.reshape(flat[start:start + n_out * n_in], (n_out, n_in)),
                      flat[start + n_out * n_in:start + size]]
        start += size
    return views, first

