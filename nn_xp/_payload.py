"""What a model file holds, both ways: a network's tensors and metadata, and the atomic write of them.

Shared by :mod:`nn_xp.io` (models) and :mod:`nn_xp.checkpoint` (training
checkpoints); the reading and checking of files is :mod:`nn_xp._modelfile`'s.
Writing goes to a temporary file in the target folder, is flushed to disk,
then renamed into place: a crash leaves the old file intact.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import secrets
import socket
import stat
from typing import Any

import numpy as np

from ._modelfile import FORMAT, FORMAT_VERSION, error, safetensors_module, write_error
from ._validation import short
from ._version import __version__
from .activations import ACTIVATIONS
from .losses import is_builtin
from .optimizers import OPTIMIZERS, Optimizer

__all__ = ["add_optimizer", "check_net_and_path", "check_writable", "jsonable", "optimizer_state", "payload",
           "saved_optimizer", "weights", "write"]

_Path = Any  # str or os.PathLike


def check_net_and_path(net: Any, path: Any, function: str) -> None:
    """``function(net, path, ...)`` was called with a network and a file path, in that order."""
    def is_path(p: Any) -> bool:
        return isinstance(p, (str, bytes, os.PathLike))

    def is_net(n: Any) -> bool:
        return all(hasattr(n, a) for a in ("get_weights", "layer_sizes", "param_names"))

    if is_path(net) and is_net(path):
        raise TypeError(f"{function}(net, path, ...): the network comes first, then the path; "
                        f"got the path {net!r} first")
    if not is_net(net):
        raise TypeError(f"{function}: net must be an nn_xp.Network, got {type(net).__name__}")
    if not is_path(path):
        raise TypeError(f"{function}: path must be a file path (str or os.PathLike), "
                        f"got {type(path).__name__}")


def payload(net: Any) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    for layer in net.layers:
        if ACTIVATIONS.get(layer.activation.name) is not layer.activation:
            raise ValueError(f"cannot save the custom activation {layer.activation.name!r}: "
                             "model files name built-in activations only")
    if not is_builtin(net.loss_fn):
        raise ValueError(f"cannot save the custom loss {net.loss_fn.name!r}: "
                         "model files name built-in losses only")
    flat = [a for pair in net.get_weights() for a in pair]
    tensors = {n: np.ascontiguousarray(a, dtype=net.dtype_name) for n, a in zip(net.param_names, flat)}
    _check_finite(tensors, "the network's weights")
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "nn_xp_version": __version__,
            "layer_sizes": net.layer_sizes, "activations": net.activations, "loss": net.loss_fn.name,
            "dtype": net.dtype_name}
    if net.loss_fn.config:  # optional keys: a file without them loads as before (no parameters, no penalty)
        meta["loss_config"] = dict(net.loss_fn.config)
    if net.penalty is not None:
        meta["l1"], meta["l2"] = net.l1, net.l2
    if any(net.dropout):  # one rate per hidden layer; a file without it has none
        meta["dropout"] = list(net.dropout)
    return tensors, meta


def _check_finite(tensors: dict[str, np.ndarray], what: str) -> None:
    """A file that load would refuse is never written (and never replaces a good one)."""
    bad = [name for name, a in tensors.items() if not np.all(np.isfinite(a))]
    if bad:
        raise ValueError(f"{what} hold NaN or infinity ({', '.join(bad)}): not saved, and any file already "
                         "at the path is unchanged")


def add_optimizer(tensors: dict, meta: dict, optimizer: Optimizer, dtype: str) -> None:
    state = optimizer.state_dict()
    try:  # a learning-rate schedule (a callable) has no JSON form: the config is then left out
        config = optimizer.config()
        json.dumps(config, allow_nan=False)
    except (NotImplementedError, TypeError, ValueError):
        config = None
    meta["optimizer"] = {"name": type(optimizer).__name__.lower(), "config": config,
                         "iterations": int(state["iterations"])}
    moments = {f"optimizer/{name}/{slot}": np.ascontiguousarray(host, dtype=dtype)
               for name, slots in state["state"].items() for slot, host in slots.items()}
    _check_finite(moments, "the optimizer's state")
    tensors.update(moments)


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
    """Serialise, write a temporary file beside the target, fsync, then rename over it.

    Anything that fails (a full disk, Ctrl-C, a kill) leaves the old file as it was; temporary files that a
    killed writer on this machine left behind are removed by the next save of the same file.
    """
    header = json.dumps(meta, separators=(",", ":"))
    write_bytes(path, safetensors_module().numpy.save(tensors, metadata={FORMAT: header}))


def write_bytes(path: _Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically, as :func:`write` does (any file format)."""
    try:
        target = os.fsdecode(os.path.realpath(os.fspath(path)))  # through a symlink, so the link survives
    except (TypeError, ValueError) as exc:  # not a path, or a NUL byte in it
        raise ValueError(f"cannot save to {path!r}: {exc}") from None
    folder, name = os.path.split(target)
    prefix = _temp_prefix(name)
    try:
        _write_atomically(target, folder, prefix, data)
    except OSError as exc:
        raise write_error(path, exc) from exc
    _remove_stale_temporaries(folder, prefix)
    _sync_folder(folder)


def check_writable(path: _Path) -> None:
    """Fail now, naming ``path``, where a later :func:`write` to it could not work (a folder that is
    missing or not writable, not a path): ``fit`` checks its ``checkpoint`` before the first epoch."""
    try:
        target = os.path.realpath(os.fspath(path))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"checkpoint must be a file path, got {path!r} ({exc})") from None
    folder = os.path.dirname(target)
    if os.path.isdir(target):
        raise error(path, "is a folder; a checkpoint needs a file name")
    if not os.path.isdir(folder):
        missing = FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT))
        raise write_error(path, missing, f"cannot be written: the folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        denied = PermissionError(errno.EACCES, os.strerror(errno.EACCES))
        raise write_error(path, denied, f"cannot be written: no permission to create files in {folder}")


#: names on this machine's file systems are at most this many bytes (NAME_MAX on Linux and macOS)
_NAME_MAX = 255
#: this machine, in the names of temporary files, so that no writer on another machine is taken for dead
_HOST = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:6]


def _temp_prefix(name: str) -> str:
    """``.NAME.<hash>.``, the name cut so that ``PREFIX<writer>.<random>.tmp`` fits in :data:`_NAME_MAX`."""
    encoded = os.fsencode(name)
    digest = hashlib.sha256(encoded).hexdigest()[:8]
    room = _NAME_MAX - len(f"..{digest}.") - len("ffffff-4194304.ffffffff.tmp")
    return f".{os.fsdecode(encoded[:room])}.{digest}."


def _write_atomically(target: str, folder: str, prefix: str, data: bytes) -> None:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    fd = tmp = None
    try:  # everything inside: a Ctrl-C at any line leaves no temporary file and no open descriptor
        while fd is None:
            tmp = os.path.join(folder, f"{prefix}{_HOST}-{os.getpid()}.{secrets.token_hex(4)}.tmp")
            try:
                fd = os.open(tmp, flags, 0o666)  # 0o666 less the umask, as a plain open() would give
            except FileExistsError:
                tmp = None
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
        os.close(fd)
        fd = None
        if os.path.exists(target):
            os.chmod(tmp, stat.S_IMODE(os.stat(target).st_mode))  # replacing must not loosen permissions
        os.replace(tmp, target)
        tmp = None
    finally:
        if fd is not None:
            os.close(fd)
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass


def _remove_stale_temporaries(folder: str, prefix: str) -> None:
    """Delete the temporary files of earlier writes of this file whose writer, on this machine, is dead."""
    if os.name != "posix":
        return
    try:
        names = [n for n in os.listdir(folder) if n.startswith(prefix) and n.endswith(".tmp")]
    except OSError:
        return
    for n in names:
        writer = n[len(prefix):].split(".", 1)[0]
        who, _, pid = writer.partition("-")
        if who != _HOST or not pid.isdigit() or int(pid) == os.getpid() or _alive(int(pid)):
            continue  # another machine's, or a live writer's (this process's own may be another thread's)
        try:
            os.unlink(os.path.join(folder, n))
        except OSError:
            pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True  # someone else's live process, or not a pid at all: leave its file alone
    return True


def _sync_folder(folder: str) -> None:
    """Make the rename itself durable (POSIX)."""
    if os.name != "posix":
        return
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
