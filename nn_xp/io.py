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
import math
import os
import secrets
import stat
import struct
from typing import Any

import numpy as np

from . import backends
from ._host import rng_state, set_rng_state
from .activations import ACTIVATIONS
from .losses import LOSSES
from .network import Network
from .optimizers import OPTIMIZERS, Optimizer
from .training import History

__all__ = ["ModelFileError", "load", "load_checkpoint", "save", "save_checkpoint"]

FORMAT = "nn_xp"
FORMAT_VERSION = 1
_MAX_HEADER = 100_000_000  # bytes; safetensors' own limit
_CODES = {"float32": "F32", "float64": "F64"}
_ITEMSIZE = {"F32": 4, "F64": 8}
# generators whose state a checkpoint may name: rebuilt from this list, never looked up by a file's string
_BIT_GENERATORS = {name: getattr(np.random, name) for name in ("PCG64", "PCG64DXSM", "MT19937", "Philox", "SFC64")}
_Path = Any  # str or os.PathLike


class ModelFileError(ValueError):
    """A model or checkpoint file that cannot be loaded: missing, damaged, not nn_xp's, or not this network's."""


def _error(path: _Path, problem: str) -> ModelFileError:
    return ModelFileError(f"{os.fspath(path)}: {problem}")


def _parse_int(digits: str) -> int:
    """JSON integers from a file: a 128-bit generator state at most, never a megabyte of digits."""
    if len(digits) > 64:
        raise ValueError(f"an integer of {len(digits)} digits")
    return int(digits)


def _json(text: str) -> Any:
    return json.loads(text, parse_int=_parse_int)


def _short(value: Any) -> str:
    """A repr of something read from a file, cut short: a hostile header can be 100 MB."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _safetensors() -> Any:
    try:
        import safetensors.numpy
    except ImportError:
        raise ImportError("nn_xp model files need safetensors: pip install 'nn_xp[io]'") from None
    return safetensors


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
    data = _safetensors().numpy.save(tensors, metadata={FORMAT: json.dumps(meta, separators=(",", ":"))})
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
    meta, tensors = _read(path)
    try:  # the metadata names only built-in activations and a loss; their pairing is Network's to check
        net = Network(meta["layer_sizes"], meta["activations"], meta["loss"], backend=target.name,
                      device=target.device, dtype=meta["dtype"])
    except ValueError as exc:
        raise _error(path, f"describes a network nn_xp cannot build: {exc}") from None
    net.set_weights(_weights(meta, tensors))
    optimizer = _saved_optimizer(path, meta)
    if optimizer is not None:
        optimizer.load_state_dict(_optimizer_state(meta, tensors), net.params)
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
        raise _error(path, f"the {info['name']} optimizer's config {_short(info['config'])} "
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
    meta, tensors = _read(path)
    ck = meta.get("checkpoint")
    if not isinstance(ck, dict):
        raise _error(path, "is a model file, not a training checkpoint (save_checkpoint writes those)")
    saved, this = _describe(meta), _describe({"layer_sizes": net.layer_sizes, "activations": net.activations,
                                              "loss": net.loss_fn.name, "dtype": net.dtype_name})
    if saved != this:
        raise _error(path, f"is a checkpoint of a {saved} network; this network is {this}")
    epoch, history, epochs = ck.get("epoch"), ck.get("history"), ck.get("history_epoch")
    if not _is_int(epoch) or epoch < 0:
        raise _error(path, f"checkpoint epoch must be a non-negative integer, got {_short(epoch)}")
    if not (isinstance(history, dict) and all(isinstance(v, list) and all(_is_number(x) for x in v)
                                              for v in history.values())):
        raise _error(path, "checkpoint history must map metric names to lists of numbers")
    if not (isinstance(epochs, list) and all(_is_int(e) for e in epochs)):
        raise _error(path, "checkpoint history_epoch must be a list of integers")
    rng = _generator(path, ck.get("rng"))
    state = None
    if optimizer is None and meta.get("optimizer") is not None:
        optimizer = _saved_optimizer(path, meta)
        if optimizer is not None:
            net.optimizer = optimizer
    if optimizer is not None:
        info, name = meta.get("optimizer"), type(optimizer).__name__.lower()
        if info is None:
            raise _error(path, f"holds no optimizer state, but training uses {name!r}")
        if info["name"] != name:
            raise _error(path, f"holds {_short(info['name'])} optimizer state, but training uses {name!r}")
        state = _optimizer_state(meta, tensors)
        unknown = {s for slots in state["state"].values() for s in slots} - set(optimizer.slots)
        if unknown:
            raise _error(path, f"holds optimizer state {_short(sorted(unknown))} that this {name!r} does not use "
                               f"(its slots: {list(optimizer.slots)}); configure it as when the checkpoint was saved")
    net.set_weights(_weights(meta, tensors))
    if state is not None:
        optimizer.load_state_dict(state, net.params)
    if type(net.rng.bit_generator) is type(rng.bit_generator):
        set_rng_state(net.rng, rng_state(rng))  # keep the caller's generator object
    else:
        net.rng = rng
    return epoch, History(history, epochs)


def _describe(meta: dict) -> str:
    sizes = "-".join(map(str, meta["layer_sizes"]))
    return f"{sizes} ({', '.join(meta['activations'])}; loss {meta['loss']}; {meta['dtype']})"


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _generator(path: _Path, state: Any) -> np.random.Generator:
    """A new generator in the saved state, of a bit generator from the fixed list."""
    name = state.get("bit_generator") if isinstance(state, dict) else None
    if not isinstance(name, str) or name not in _BIT_GENERATORS:
        raise _error(path, f"checkpoint rng state names bit generator {_short(name)}; "
                           f"known: {', '.join(_BIT_GENERATORS)}")
    rng = np.random.Generator(_BIT_GENERATORS[name]())
    try:
        set_rng_state(rng, state)
    except Exception as exc:  # NumPy's own checks of the state's fields, whatever they raise
        raise _error(path, f"checkpoint rng state is not a valid {name} state: {_short(str(exc))}") from None
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


def _read(path: _Path) -> tuple[dict, dict[str, np.ndarray]]:
    """The checked metadata and the tensors (writeable host copies) of a model file."""
    safetensors = _safetensors()
    try:
        with open(os.fspath(path), "rb") as f:
            size = os.fstat(f.fileno()).st_size
            header, data_len = _read_header(path, f, size)
    except FileNotFoundError:
        raise _error(path, "no such model file") from None
    except OSError as exc:
        raise _error(path, f"cannot be read ({exc})") from None
    meta = _check_metadata(path, header)
    expected = _check_entries(path, header, data_len, meta)
    try:  # only now, with every size known to fit the file, does safetensors read anything
        with safetensors.safe_open(os.fspath(path), framework="numpy") as f:
            tensors = {name: np.array(f.get_tensor(name)) for name in expected}
    except Exception as exc:  # safetensors' own errors, or the file changed since its header was read
        raise _error(path, f"safetensors could not read the tensors ({type(exc).__name__}: {exc})") from None
    for name, (dtype, shape) in expected.items():
        t = tensors[name]
        if t.dtype != np.dtype(dtype) or t.shape != shape:
            raise _error(path, f"tensor {name} read as {t.dtype}{t.shape}, the header said {dtype}{shape}")
        if not np.all(np.isfinite(t)):
            raise _error(path, f"tensor {name} holds NaN or infinity")
    return meta, tensors


def _read_header(path: _Path, f: Any, size: int) -> tuple[dict, int]:
    """The safetensors header as a dict: an 8-byte little-endian length N, then N bytes of UTF-8 JSON."""
    if size < 8:
        raise _error(path, f"is {size} bytes long, too short for a safetensors file (truncated?)")
    (n,) = struct.unpack("<Q", f.read(8))
    if n > size - 8:
        raise _error(path, f"is truncated or not a safetensors file: its header claims {n} bytes, "
                           f"only {size - 8} follow")
    if n > _MAX_HEADER:
        raise _error(path, f"has a {n}-byte header, over the {_MAX_HEADER}-byte limit")
    raw = f.read(n)
    if len(raw) != n:
        raise _error(path, "changed or shrank while being read")
    try:
        header = _json(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise _error(path, f"has a header that is not UTF-8 ({exc.reason} at byte {8 + exc.start})") from None
    except (ValueError, RecursionError) as exc:
        raise _error(path, f"has a header that is not valid JSON ({exc})") from None
    if not isinstance(header, dict):
        raise _error(path, f"has a header that is a JSON {type(header).__name__}, not an object")
    return header, size - 8 - n


def _check_metadata(path: _Path, header: dict) -> dict:
    """The ``nn_xp`` JSON metadata, every field checked for type and range."""
    raw = header.get("__metadata__")
    if raw is not None and not (isinstance(raw, dict) and all(isinstance(v, str) for v in raw.values())):
        raise _error(path, "has safetensors metadata that is not a map of strings to strings")
    if raw is None or FORMAT not in raw:
        raise _error(path, "is not an nn_xp model: its safetensors metadata has no 'nn_xp' entry")
    try:
        meta = _json(raw[FORMAT])
    except (ValueError, RecursionError) as exc:
        raise _error(path, f"has 'nn_xp' metadata that is not valid JSON ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise _error(path, "is not an nn_xp model: its metadata does not say format 'nn_xp'")
    version = meta.get("format_version")
    if not _is_int(version) or version < 1:
        raise _error(path, f"has an invalid format_version {_short(version)}")
    if version > FORMAT_VERSION:
        raise _error(path, f"was written by nn_xp {str(meta.get('nn_xp_version'))[:40]} in format version {version}; "
                           f"this nn_xp reads up to version {FORMAT_VERSION}: upgrade nn_xp to load it")
    sizes, acts, loss, dtype = (meta.get(k) for k in ("layer_sizes", "activations", "loss", "dtype"))
    if not (isinstance(sizes, list) and len(sizes) >= 2 and all(_is_int(n) and n >= 1 for n in sizes)):
        raise _error(path, f"has invalid layer_sizes {_short(sizes)}")
    if not (isinstance(acts, list) and len(acts) == len(sizes) - 1
            and all(isinstance(a, str) and a in ACTIVATIONS for a in acts)):
        raise _error(path, f"has invalid activations {_short(acts)} for {len(sizes) - 1} layers")
    if not (isinstance(loss, str) and loss in LOSSES):
        raise _error(path, f"has an unknown loss {_short(loss)}")
    if not isinstance(dtype, str) or dtype not in _CODES:
        raise _error(path, f"has dtype {_short(dtype)}; nn_xp models are float32 or float64")
    info = meta.get("optimizer")
    if info is not None and not (isinstance(info, dict) and isinstance(info.get("name"), str)
                                 and (info.get("config") is None or isinstance(info["config"], dict))
                                 and _is_int(info.get("iterations")) and info["iterations"] >= 0):
        raise _error(path, f"has invalid optimizer metadata {_short(info)}")
    return meta


def _check_entries(path: _Path, header: dict, data_len: int, meta: dict) -> dict[str, tuple[str, tuple]]:
    """Check every tensor entry against the metadata and the file size; ``{name: (numpy dtype, shape)}``."""
    sizes, code = meta["layer_sizes"], _CODES[meta["dtype"]]
    shapes = {}
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        shapes[f"W{i}"], shapes[f"b{i}"] = (n_out, n_in), (n_out,)
    entries, spans = {}, []
    for name, e in header.items():
        if name == "__metadata__":
            continue
        want, label = shapes.get(name), _short(name)
        if want is None and name.startswith("optimizer/") and meta.get("optimizer") is not None:
            _, param, slot = (name.split("/", 2) + ["", ""])[:3]  # optimizer/W0/m
            want = shapes.get(param) if slot else None
        if want is None:
            raise _error(path, f"holds a tensor {label} that the metadata does not describe")
        if not (isinstance(e, dict) and isinstance(e.get("dtype"), str) and _int_list(e.get("shape"))
                and _int_list(e.get("data_offsets")) and len(e["data_offsets"]) == 2):
            raise _error(path, f"has a malformed header entry for tensor {label}: {_short(e)}")
        shape, (begin, end) = tuple(e["shape"]), e["data_offsets"]
        if e["dtype"] != code:
            raise _error(path, f"tensor {label} is {_short(e['dtype'])}, "
                               f"the metadata says {meta['dtype']} ({code})")
        if shape != want:
            raise _error(path, f"tensor {label} has shape {_short(shape)}; "
                               f"layer_sizes {_short(sizes)} make it {_short(want)}")
        if not 0 <= begin <= end <= data_len:
            raise _error(path, f"tensor {label} has data offsets {_short([begin, end])} outside the file's "
                               f"{data_len}-byte data section (truncated?)")
        nbytes = math.prod(shape) * _ITEMSIZE[code]
        if end - begin != nbytes:
            raise _error(path, f"tensor {label} ({code}{_short(shape)}) needs {nbytes} bytes, "
                               f"its data offsets [{begin}, {end}] hold {end - begin}")
        entries[name] = (meta["dtype"], shape)
        spans.append((begin, end))
    missing = [n for n in shapes if n not in entries]
    if missing:
        raise _error(path, f"lacks the tensors {_short(missing)} that layer_sizes {_short(sizes)} call for")
    position = 0
    for begin, end in sorted(spans):
        if begin != position:
            raise _error(path, "has tensor data that overlap or leave gaps")
        position = end
    if position != data_len:
        raise _error(path, f"has {data_len - position} bytes after its last tensor")
    return entries


def _int_list(v: Any) -> bool:
    return isinstance(v, list) and all(_is_int(x) and x >= 0 for x in v)
