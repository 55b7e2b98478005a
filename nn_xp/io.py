"""Model files and training checkpoints in safetensors: no pickle, checked before anything is read.

A file holds each layer's ``W{i}`` ``(n_out, n_in)`` and ``b{i}`` ``(n_out,)``,
optionally the optimizer state (``optimizer/W0/m``, ...), and, as JSON under
the safetensors metadata key ``"nn_xp"``, what rebuilds the network exactly.
Loading parses the header itself (bounded, UTF-8, JSON, F32/F64 only, shapes
against the metadata, byte counts, offsets) before safetensors reads a single
tensor, so a damaged or hostile file fails fast with a :class:`ModelFileError`
naming the file. Writing goes to a temporary file in the target folder, is
flushed to disk, then renamed into place: a crash leaves the old file intact.
"""
from __future__ import annotations

import json
import os
import secrets
import stat
from typing import Any

import numpy as np

from . import backends
from ._host import rng_state, set_rng_state
from .activations import ACTIVATIONS
from .losses import LOSSES
from .network import Network
from .optimizers import OPTIMIZERS, Optimizer
from .training import History
from ._modelfile import (FORMAT, FORMAT_VERSION, ModelFileError, error, is_int, is_number, read,
                         safetensors_module, short)

__all__ = ["ModelFileError", "load", "load_checkpoint", "save", "save_checkpoint"]

# generators whose state a checkpoint may name: rebuilt from this list, never looked up by a file's string
_BIT_GENERATORS = {name: getattr(np.random, name) for name in ("PCG64", "PCG64DXSM", "MT19937", "Philox", "SFC64")}
_Path = Any  # str or os.PathLike

# ------------------------------------------------------------------ writing
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
    tensors, meta = _payload(net)
    if include_optimizer and net.optimizer is not None:
        _add_optimizer(tensors, meta, net.optimizer, net.dtype_name)
    _write(path, tensors, meta)


def save_checkpoint(path: _Path, net: Network, optimizer: Optimizer | None, epoch: int, history: History) -> None:
    """Write what ``fit(..., resume_from=path)`` needs to continue exactly: model, optimizer, shuffle RNG, history.

    ``epoch`` is the number of epochs completed. The file is also a model file for :func:`load`.
    """
    tensors, meta = _payload(net)
    if optimizer is not None:
        _add_optimizer(tensors, meta, optimizer, net.dtype_name)
    meta["checkpoint"] = {"epoch": int(epoch), "rng": _jsonable(rng_state(net.rng)),
                          "history": _jsonable(history.history), "history_epoch": _jsonable(history.epoch)}
    _write(path, tensors, meta)


def _payload(net: Network) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    from . import __version__  # lazily: nn_xp/__init__ imports this module

    for layer in net.layers:
        if ACTIVATIONS.get(layer.activation.name) is not layer.activation:
            raise ValueError(f"cannot save the custom activation {layer.activation.name!r}: "
                             "model files name built-in activations only")
    if LOSSES.get(net.loss_fn.name) is not net.loss_fn:
        raise ValueError(f"cannot save the custom loss {net.loss_fn.name!r}: model files name built-in losses only")
    flat = [a for pair in net.get_weights() for a in pair]
    tensors = {n: np.ascontiguousarray(a, dtype=net.dtype_name) for n, a in zip(net.param_names, flat)}
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "nn_xp_version": __version__,
            "layer_sizes": net.layer_sizes, "activations": net.activations, "loss": net.loss_fn.name,
            "dtype": net.dtype_name}
    return tensors, meta


def _add_optimizer(tensors: dict, meta: dict, optimizer: Optimizer, dtype: str) -> None:
    state = optimizer.state_dict()
    try:  # a learning-rate schedule (a callable) has no JSON form: the config is then left out
        config = optimizer.config()
        json.dumps(config, allow_nan=False)
    except (NotImplementedError, TypeError, ValueError):
        config = None
    meta["optimizer"] = {"name": type(optimizer).__name__.lower(), "config": config,
                         "iterations": int(state["iterations"])}
    for name, slots in state["state"].items():
        for slot, host in slots.items():
            tensors[f"optimizer/{name}/{slot}"] = np.ascontiguousarray(host, dtype=dtype)


def _jsonable(obj: Any) -> Any:
    """NumPy arrays and scalars (in generator states) as plain JSON values."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.ndarray, np.generic)):
        return obj.tolist()
    return obj


def _write(path: _Path, tensors: dict[str, np.ndarray], meta: dict) -> None:
    """Serialise, write a temporary file beside the target, fsync, then rename over it."""
    data = safetensors_module().numpy.save(tensors, metadata={FORMAT: json.dumps(meta, separators=(",", ":"))})
    target = os.path.realpath(os.fspath(path))  # through a symlink, so the link survives
    folder, name = os.path.split(target)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    while True:
        tmp = os.path.join(folder, f".{name}.{secrets.token_hex(6)}.tmp")
        try:
            fd = os.open(tmp, flags, 0o666)  # 0o666 less the umask, as a plain open() would give
            break
        except FileExistsError:
            continue
    try:
        with open(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if os.path.exists(target):
            os.chmod(tmp, stat.S_IMODE(os.stat(target).st_mode))  # replacing must not loosen permissions
        os.replace(tmp, target)
    except BaseException:  # KeyboardInterrupt too: never leave a stray temporary file
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    if os.name == "posix":  # make the rename itself durable
        try:
            dir_fd = os.open(folder, os.O_RDONLY)
        except OSError:
            return
        try:
            os.fsync(dir_fd)
        except OSError:
            pass
        finally:
            os.close(dir_fd)


# ------------------------------------------------------------------ reading
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
        net = Network(meta["layer_sizes"], meta["activations"], meta["loss"], backend=target.name,
                      device=target.device, dtype=meta["dtype"])
    except ValueError as exc:
        raise error(path, f"describes a network nn_xp cannot build: {exc}") from None
    net.set_weights(_weights(meta, tensors))
    optimizer = _saved_optimizer(path, meta)
    if optimizer is not None:
        try:
            optimizer.load_state_dict(_optimizer_state(meta, tensors), net.params)
        except ValueError as exc:
            raise error(path, f"has optimizer state that does not fit: {exc}") from None
        net.optimizer = optimizer
    return net


def _saved_optimizer(path: _Path, meta: dict) -> Optimizer | None:
    """A fresh built-in optimizer from the file's config, or None (none saved, or a schedule that JSON cannot hold)."""
    info = meta.get("optimizer")
    cls = OPTIMIZERS.get(info["name"]) if info is not None else None
    if cls is None or not isinstance(info.get("config"), dict):
        return None
    try:
        return cls(**info["config"])
    except (TypeError, ValueError, OverflowError) as exc:
        raise error(path, f"the {info['name']} optimizer's config {short(info['config'])} "
                           f"is not valid: {exc}") from None


def load_checkpoint(path: _Path, net: Network, optimizer: Optimizer | None) -> tuple[int, History]:
    """Restore a :func:`save_checkpoint` file into ``net`` and ``optimizer``; return ``(epochs_done, history)``.

    The checkpoint must come from a network with the same layer sizes,
    activations, loss and dtype, and an optimizer of the same class; nothing
    is changed unless every check passes. The weights, the optimizer state and
    the generator of the shuffles (``net.rng``) are restored. With
    ``optimizer=None`` the checkpoint's own optimizer is rebuilt into
    ``net.optimizer`` (when it was a built-in one with a JSON config).
    """
    meta, tensors = read(path)
    ck = meta.get("checkpoint")
    if not isinstance(ck, dict):
        raise error(path, "is a model file, not a training checkpoint (save_checkpoint writes those)")
    saved, this = _describe(meta), _describe({"layer_sizes": net.layer_sizes, "activations": net.activations,
                                              "loss": net.loss_fn.name, "dtype": net.dtype_name})
    if saved != this:
        raise error(path, f"is a checkpoint of a {saved} network; this network is {this}")
    epoch, history, epochs = ck.get("epoch"), ck.get("history"), ck.get("history_epoch")
    if not is_int(epoch) or epoch < 0:
        raise error(path, f"checkpoint epoch must be a non-negative integer, got {short(epoch)}")
    if not (isinstance(history, dict) and all(isinstance(v, list) and all(is_number(x) for x in v)
                                              for v in history.values())):
        raise error(path, "checkpoint history must map metric names to lists of numbers")
    if not (isinstance(epochs, list) and all(is_int(e) for e in epochs)):
        raise error(path, "checkpoint history_epoch must be a list of integers")
    rng = _generator(path, ck.get("rng"))
    state = None
    rebuilt = optimizer is None and meta.get("optimizer") is not None
    if rebuilt:
        optimizer = _saved_optimizer(path, meta)  # assigned to net only once every check has passed
        if optimizer is None:  # a learning-rate schedule: JSON could not hold it
            name = meta["optimizer"]["name"]
            if net.optimizer is None or type(net.optimizer).__name__.lower() != name:
                raise error(path, f"holds the state of a {short(name)} optimizer whose learning-rate schedule "
                                  "a file cannot hold; pass fit(optimizer=...) configured as when it was saved")
            optimizer = net.optimizer
    if optimizer is not None:
        info, name = meta.get("optimizer"), type(optimizer).__name__.lower()
        if info is None:
            raise error(path, f"holds no optimizer state, but training uses {name!r}")
        if info["name"] != name:
            raise error(path, f"holds {short(info['name'])} optimizer state, but training uses {name!r}")
        state = _optimizer_state(meta, tensors)
        for param, slots in state["state"].items():
            if set(slots) != set(optimizer.slots):
                raise error(path, f"holds optimizer state {short(sorted(slots))} for {short(param)}, but this "
                                  f"{name!r} keeps {list(optimizer.slots)}; configure it as when the checkpoint "
                                  "was saved")
    net.set_weights(_weights(meta, tensors))
    if state is not None:
        optimizer.load_state_dict(state, net.params)
        if rebuilt:
            net.optimizer = optimizer
    if type(net.rng.bit_generator) is type(rng.bit_generator):
        set_rng_state(net.rng, rng_state(rng))  # keep the caller's generator object
    else:
        net.rng = rng
    return epoch, History(history, epochs)


def _describe(meta: dict) -> str:
    sizes = "-".join(map(str, meta["layer_sizes"]))
    return f"{sizes} ({', '.join(meta['activations'])}; loss {meta['loss']}; {meta['dtype']})"


def _generator(path: _Path, state: Any) -> np.random.Generator:
    """A new generator in the saved state, of a bit generator from the fixed list."""
    name = state.get("bit_generator") if isinstance(state, dict) else None
    if not isinstance(name, str) or name not in _BIT_GENERATORS:
        raise error(path, f"checkpoint rng state names bit generator {short(name)}; "
                           f"known: {', '.join(_BIT_GENERATORS)}")
    rng = np.random.Generator(_BIT_GENERATORS[name]())
    try:
        set_rng_state(rng, state)
    except Exception as exc:  # NumPy's own checks of the state's fields, whatever they raise
        raise error(path, f"checkpoint rng state is not a valid {name} state: {short(str(exc))}") from None
    return rng


def _weights(meta: dict, tensors: dict[str, np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(tensors[f"W{i}"], tensors[f"b{i}"]) for i in range(len(meta["layer_sizes"]) - 1)]


def _optimizer_state(meta: dict, tensors: dict[str, np.ndarray]) -> dict[str, Any]:
    state: dict[str, dict[str, np.ndarray]] = {}
    for key, host in tensors.items():
        if key.startswith("optimizer/"):
            _, name, slot = key.split("/", 2)
            state.setdefault(name, {})[slot] = host
    return {"iterations": meta["optimizer"]["iterations"], "state": state}
