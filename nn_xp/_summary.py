"""``Network.summary()``: the layers and their parameters, where the network lives, and what ``fit`` holds.

The memory of ``fit``'s buffers comes from the engine (``engine.fit_memory``), which
knows what it allocates; the optimizer's state from its slots (one array per
parameter each); the loop's undo points from :data:`UNDO_POINTS`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np  # the host is the point: sizes of dtypes, for a report

__all__ = ["Summary", "UNDO_POINTS", "summarize"]

#: the loop keeps the weights and optimizer state at the start of its last two calls (training._UndoPoints)
UNDO_POINTS = 2

_PARTS = {"activations": "per-layer Z and A", "gradients": "gradients dW, db", "ones": "ones (bias sums)",
          "optimizer": "optimizer state", "undo": "undo points", "dropout": "dropout masks, masked A"}


@dataclass(frozen=True)
class Summary:
    """What :meth:`nn_xp.Network.summary` reports; ``str()`` (and the REPL) show it as a table.

    Attributes
    ----------
    layers : tuple of dict
        Per layer: ``units_in``, ``units_out``, ``activation``, ``parameters``.
    parameters : int
        Trainable values in all (weights and biases).
    parameter_bytes : int
    dtype, backend, device, engine : str
    batch_size : int or None
        The rows per step the ``fit`` figures are for (None: no figures).
    optimizer : str or None
        The optimizer whose state is counted.
    fit_bytes : dict of str to int, or None
        What ``fit`` holds besides the parameters and the data, by part: the
        engine's (``activations``, ``gradients``, ...), ``optimizer`` (its
        state) and ``undo`` (the loop's undo points: weights and optimizer state).
    """

    title: str
    layers: tuple[dict[str, Any], ...]
    parameters: int
    parameter_bytes: int
    dtype: str
    backend: str
    device: str
    engine: str
    batch_size: int | None = None
    optimizer: str | None = None
    fit_bytes: dict[str, int] | None = field(default=None)
    #: what fit adds to the blog's math: dropout rates, penalties ("" when none)
    regularization: str = ""

    @property
    def fit_total(self) -> int | None:
        """Bytes of every part of :attr:`fit_bytes` together (None without a batch size)."""
        return None if self.fit_bytes is None else sum(self.fit_bytes.values())

    def __str__(self) -> str:
        rows = [("layer", "units in", "units out", "activation", "parameters")]
        rows += [(str(i), str(r["units_in"]), str(r["units_out"]), r["activation"], f"{r['parameters']:,}")
                 for i, r in enumerate(self.layers)]
        rows.append(("total", "", "", "", f"{self.parameters:,}"))
        widths = [max(len(row[i]) for row in rows) for i in range(5)]
        lines = [self.title]
        for row in rows:
            cells = [row[0].ljust(widths[0]), row[1].rjust(widths[1]), row[2].rjust(widths[2]),
                     row[3].ljust(widths[3]), row[4].rjust(widths[4])]
            lines.append("  ".join(cells).rstrip())
        lines.append(f"dtype {self.dtype}, backend {self.backend}, fit's engine {self.engine}")
        lines.append(f"device {self.device}")
        if self.regularization:
            lines.append(f"in fit: {self.regularization}")
        lines.append(f"parameters: {format_bytes(self.parameter_bytes)}")
        if self.fit_bytes is not None:
            lines.append(f"fit at batch_size={self.batch_size} ({self.optimizer}): "
                         f"{format_bytes(self.fit_total)} besides the parameters and the data")
            width = max(len(_PARTS.get(k, k)) for k in self.fit_bytes)
            lines += [f"  {_PARTS.get(k, k).ljust(width)}  {format_bytes(v).rjust(10)}"
                      for k, v in self.fit_bytes.items()]
        return "\n".join(lines)

    __repr__ = __str__


def format_bytes(n: int) -> str:
    """``n`` bytes in binary units: ``"512 B"``, ``"1.5 KiB"``, ``"3.0 MiB"``."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def summarize(net: Any, batch_size: int | None, optimizer: Any) -> Summary:
    """The :class:`Summary` of ``net``; ``optimizer`` (an Optimizer, checked by the caller) is counted."""
    size = np.dtype(net.dtype_name).itemsize
    layers = tuple({"units_in": layer.n_in, "units_out": layer.n_out, "activation": layer.activation.name,
                    "parameters": layer.n_out * (layer.n_in + 1)} for layer in net.layers)
    count = sum(r["parameters"] for r in layers)
    fit_bytes = None
    if batch_size is not None:
        fit_bytes = dict(net.engine.fit_memory(net.layers, batch_size))
        fit_bytes["optimizer"] = len(optimizer.slots) * count * size
        fit_bytes["undo"] = UNDO_POINTS * (count * size + fit_bytes["optimizer"])
        dropped = sum(layer.n_out for layer, rate in zip(net.layers, net.dropout) if rate)
        if dropped:  # per step: each dropped layer's mask and the masked A the next layer sees
            fit_bytes["dropout"] = 2 * batch_size * dropped * size
    regularization = ", ".join(
        [f"dropout {', '.join(f'{r:g}' for r in net.dropout)}"] * any(net.dropout)
        + [f"{name} {value:g} on the weights" for name, value in (("l1", net.l1), ("l2", net.l2)) if value])
    sizes = "-".join(map(str, net.layer_sizes))
    return Summary(f"Network {sizes}, loss {net.loss_fn.name}", layers, count, count * size, net.dtype_name,
                   net.backend.name, str(net.device), net.engine.name, batch_size,
                   None if optimizer is None else type(optimizer).__name__, fit_bytes, regularization)
