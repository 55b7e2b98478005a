"""What a model file holds, both ways: a network's tensors and metadata, and the atomic write of them.

Shared by :mod:`nn_xp.io` (models) and :mod:`nn_xp.checkpoint` (training
checkpoints); the reading and checking of files is :mod:`nn_xp._modelfile`'s.
Writing goes to a temporary file in the target folder, is flushed to disk,
then renamed into place: a crash leaves the old file intact.
"""
from __future__ import annotations

import json
import os
import secrets
import stat
from typing import Any

import numpy as np

from ._modelfile import FORMAT, FORMAT_VERSION, error, safetensors_module, short
from ._version import __version__
from .activations import ACTIVATIONS
from .losses import LOSSES
from .optimizers import OPTIMIZERS, Optimizer

__all__ = ["add_optimizer", "jsonable", "optimizer_state", "payload", "saved_optimizer", "weights", "write"]

_Path = Any  # str or os.PathLike


def payload(net: Any) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    for layer in net.layers:
        if ACTIVATIONS.get(layer.activation.name) is not layer.activation:
            raise ValueError(f"cannot save the custom activation {layer.activation.name!r}: "
                             "model files name built-in activations only")
    if LOSSES.get(net.loss_fn.name) is not net.loss_fn:
        raise ValueError(f"cannot save the custom loss {net.loss_fn.name!r}: "
                         "model files name built-in losses only")
    flat = [a for pair in net.get_weights() for a in pair]
    tensors = {n: np.ascontiguousarray(a, dtype=net.dtype_name) for n, a in zip(net.param_names, flat)}
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "nn_xp_version": __version__,
            "layer_sizes": net.layer_sizes, "activations": net.activations, "loss": net.loss_fn.name,
            "dtype": net.dtype_name}
    return tensors, meta


def add_optimizer(tensors: dict, meta: dict, optimizer: Optimizer, dtype: str) -> None:
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


def jsonable(obj: Any) -> Any:
    """NumPy arrays and scalars (in generator states) as plain JSON values."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, (np.ndarray, np.generic)):
        return obj.tolist()
    return obj


def write(path: _Path, tensors: dict[str, np.ndarray], meta: dict) -> None:
    """Serialise, write a temporary file beside the target, fsync, then rename over it."""
    header = json.dumps(meta, separators=(",", ":"))
    data = safetensors_module().numpy.save(tensors, metadata={FORMAT: header})
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


def saved_optimizer(path: _Path, meta: dict) -> Optimizer | None:
    """A new built-in optimizer from the file's config, or None (none saved, or a schedule)."""
    info = meta.get("optimizer")
    cls = OPTIMIZERS.get(info["name"]) if info is not None else None
    if cls is None or not isinstance(info.get("config"), dict):
        return None
    try:
        return cls(**info["config"])
    except (TypeError, ValueError, OverflowError) as exc:
        raise error(path, f"the {info['name']} optimizer's config {short(info['config'])} "
                           f"is not valid: {exc}") from None


def weights(meta: dict, tensors: dict[str, np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(tensors[f"W{i}"], tensors[f"b{i}"]) for i in range(len(meta["layer_sizes"]) - 1)]


def optimizer_state(meta: dict, tensors: dict[str, np.ndarray]) -> dict[str, Any]:
    state: dict[str, dict[str, np.ndarray]] = {}
    for key, host in tensors.items():
        if key.startswith("optimizer/"):
            _, name, slot = key.split("/", 2)
            state.setdefault(name, {})[slot] = host
    return {"iterations": meta["optimizer"]["iterations"], "state": state}
