"""The start of a data-parallel ``fit``: what every rank must agree on, and rank 0's state for the others.

Every rank describes its network, data and options (:func:`describe`: shapes, dtypes and a digest of a
sample of rows, cheap on any size and any device); the descriptions are gathered and compared the same
way everywhere, so a mismatch is the same error on every rank (:func:`differences`). Then rank 0's
optimizer and shuffle generator travel to the others (:func:`root_state`, :func:`adopt`), its weights
as buffers.
"""
from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np
from array_api_compat import array_namespace
from array_api_compat import device as array_device

from .._host import rng_state, set_rng_state
from .._typing import Array
from ..backends import to_numpy
from ..history import History
from ..optimizers import OPTIMIZERS, Optimizer

__all__ = ["DIGEST_ROWS", "adopt", "describe", "differences", "digest", "recipe", "root_state"]

#: rows of an array that its digest hashes, evenly spaced, first and last included: enough to tell two data
#: sets apart (another seed, order, scaling or split), few enough to cost nothing on any size or device
DIGEST_ROWS = 1024


def digest(a: Array) -> str:
    """``a``'s shape, dtype and a hash of up to :data:`DIGEST_ROWS` of its rows."""
    m = a.shape[0]
    rows = np.unique(np.linspace(0, m - 1, min(m, DIGEST_ROWS)).round().astype(np.int64))
    xp = array_namespace(a)
    sample = np.ascontiguousarray(to_numpy(xp.take(a, xp.asarray(rows, device=array_device(a)), axis=0)))
    h = hashlib.blake2b(sample.tobytes(), digest_size=8).hexdigest()
    return f"{tuple(int(n) for n in a.shape)} {sample.dtype}, sampled rows {h}"


def recipe(optimizer: Any) -> tuple[str, dict | None] | str | None:
    """An optimizer (object or name) as its class and JSON config (None where that is a schedule)."""
    if not isinstance(optimizer, Optimizer):
        return optimizer
    try:
        config = optimizer.config()
        json.dumps(config, allow_nan=False)
    except (NotImplementedError, TypeError, ValueError):
        config = None
    return type(optimizer).__name__.lower(), config


def _setting(value: Any) -> str:
    if isinstance(value, Optimizer):
        return repr(recipe(value))
    if callable(value):  # a learning-rate schedule, compared by its kind
        return f"a {type(value).__name__}"
    if hasattr(value, "shape") and hasattr(value, "dtype"):  # sample weights: compared as the data are
        return digest(value)
    return repr(value)


def describe(net: Any, X: Array, Y: Array, validation: tuple[Array, Array] | None,
             settings: dict[str, Any]) -> dict[str, str]:
    """What must be the same on every rank, as text: the network, the data, the options of ``fit``."""
    sizes = "-".join(map(str, net.layer_sizes))
    mine = {"network": f"{sizes} ({', '.join(net.activations)}; loss {net.loss_fn.name}; {net.dtype_name}; "
                       f"{net.engine.name} engine)",
            "loss parameters and penalty": f"{dict(net.loss_fn.config)}, l1={net.l1}, l2={net.l2}",
            "dropout": f"{list(net.dropout)}",
            "X": digest(X), "Y": digest(Y)}
    if validation is None:
        mine["validation data"] = "none"
    else:
        mine["validation X"], mine["validation Y"] = digest(validation[0]), digest(validation[1])
    mine.update((name, _setting(value)) for name, value in settings.items())
    return mine


def differences(every: list[dict[str, str]]) -> str | None:
    """Where the ranks' descriptions differ from rank 0's, as one message (the same on every rank)."""
    lines = []
    for key, first in every[0].items():
        other = {r: d.get(key) for r, d in enumerate(every) if d.get(key) != first}
        if other:
            theirs = "; ".join(f"rank {r} has {v}" for r, v in other.items())
            lines.append(f"{key}: rank 0 has {first}; {theirs}")
    if not lines:
        return None
    return ("fit(comm=...) needs the same network, data and options on every rank (give every rank all of X "
            "and Y: each batch is cut into the ranks' shards by fit itself), and they differ. "
            + " | ".join(lines))


def root_state(net: Any, optimizer: Optimizer, start: int, history: History) -> dict[str, Any]:
    """What rank 0 sends the others (host data; the weights go as buffers)."""
    return {"optimizer": recipe(optimizer), "state": optimizer.state_dict(), "rng": net.rng, "start": start,
            "history": (history.history, history.epoch), "dropout_seed": net.dropout_seed}


def adopt(net: Any, optimizer: Optimizer, root: dict[str, Any]) -> tuple[Optimizer, int, History]:
    """Rank 0's optimizer (rebuilt from its config where this rank's differs: a resumed checkpoint's), its
    state and shuffle generator into this rank's; ``(optimizer, start epoch, history)``."""
    name, config = root["optimizer"]
    if recipe(optimizer) != (name, config):
        cls = OPTIMIZERS.get(name)
        if cls is None or config is None:
            raise ValueError(f"rank 0 trains with a {name} optimizer ({config or 'a schedule'}), this rank "
                             f"with {optimizer!r}: give fit the same optimizer on every rank")
        optimizer = cls(**config)
    optimizer.load_state_dict(root["state"], net.params)
    rng = root["rng"]
    if type(net.rng.bit_generator) is type(rng.bit_generator):
        set_rng_state(net.rng, rng_state(rng))  # keep the caller's generator object
    else:
        net.rng = rng
    net.dropout_seed = root["dropout_seed"]  # the same masks as rank 0's (the rates were checked the same)
    return optimizer, root["start"], History(*root["history"])
