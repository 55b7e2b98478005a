"""Model files in safetensors: no pickle, checked before anything is read.

A file holds each layer's ``W{i}`` ``(n_out, n_in)`` and ``b{i}`` ``(n_out,)``,
optionally the optimizer state (``optimizer/W0/m``, ...), and, as JSON under
the safetensors metadata key ``"nn_xp"``, what rebuilds the network exactly.
Loading parses the header itself (bounded, UTF-8, JSON, F32/F64 only, shapes
against the metadata, byte counts, offsets) before safetensors reads a single
tensor, so a damaged or hostile file fails fast with a :class:`ModelFileError`
naming the file. Saving is atomic (see :mod:`nn_xp._payload`). Training
checkpoints are :mod:`nn_xp.checkpoint`'s.
"""
from __future__ import annotations

from typing import Any

from . import backends
from ._modelfile import ModelFileError, error, read
from ._payload import (
    add_optimizer,
    check_net_and_path,
    optimizer_state,
    payload,
    saved_optimizer,
    weights,
    write,
)

# their home is nn_xp.checkpoint; here too for code written against nn_xp 0.1
from .checkpoint import load_checkpoint, save_checkpoint
from .losses import get_loss
from .network import Network

__all__ = ["ModelFileError", "load", "load_checkpoint", "save", "save_checkpoint"]

_Path = Any  # str or os.PathLike


def save(net: Network, path: _Path, *, include_optimizer: bool = True) -> None:
    """Write ``net`` to a safetensors file that :func:`load` rebuilds on any backend.

    Parameters
    ----------
    net : Network
    path : str or os.PathLike
        Conventionally ``*.safetensors``; an existing file is replaced atomically.
    include_optimizer : bool
        Also store ``net.optimizer``'s state (so ``fit`` continues where it stopped).

    Examples
    --------
    >>> nn_xp.save(net, "sine.safetensors")  # doctest: +SKIP
    >>> net = nn_xp.load("sine.safetensors", backend="torch")  # doctest: +SKIP
    """
    check_net_and_path(net, path, "save")
    tensors, meta = payload(net)
    if include_optimizer and net.optimizer is not None:
        add_optimizer(tensors, meta, net.optimizer, net.dtype_name)
    write(path, tensors, meta)


def load(path: _Path, backend: str | None = None, device: Any = None) -> Network:
    """Rebuild a network saved by :func:`save` (or :func:`save_checkpoint`), on any backend.

    Parameters
    ----------
    path : str or os.PathLike
    backend, device : optional
        As for :class:`~nn_xp.Network`: argument, else ``NN_XP_BACKEND`` /
        ``NN_XP_DEVICE``, else auto. The saving backend does not matter.

    Returns
    -------
    Network
        With the saved weights, and ``net.optimizer`` restored when the file
        holds the state of a built-in optimizer with a JSON config.

    Raises
    ------
    ModelFileError
        When the file is missing, damaged, not an nn_xp model, or from a newer format.

    Examples
    --------
    >>> net = nn_xp.load("sine.safetensors", backend="numpy")  # doctest: +SKIP
    """
    target = backends.resolve_backend(backend, device)
    meta, tensors = read(path)
    try:  # the metadata names only built-in activations and a loss; their pairing is Network's to check
        loss = get_loss(meta["loss"], meta.get("loss_config"))  # huber's delta too
        net = Network(meta["layer_sizes"], meta["activations"], loss, backend=target.name,
                      device=target.device, dtype=meta["dtype"], l1=meta.get("l1", 0.0),
                      l2=meta.get("l2", 0.0), dropout=meta.get("dropout", 0.0))
    except ValueError as exc:
        raise error(path, f"describes a network nn_xp cannot build: {exc}") from None
    net.set_weights(weights(meta, tensors))
    optimizer = saved_optimizer(path, meta)
    if optimizer is not None:
        try:
            optimizer.load_state_dict(optimizer_state(meta, tensors), net.params)
        except ValueError as exc:
            raise error(path, f"has optimizer state that does not fit: {exc}") from None
        net.optimizer = optimizer
    return net
