"""Reading nn_xp model files: the safetensors header is parsed and checked before any tensor is read.

The header (an 8-byte little-endian length N, then N bytes of UTF-8 JSON) is
bounded, decoded and checked field by field: the ``nn_xp`` metadata, every
tensor's dtype (F32/F64), shape against the layer sizes, byte count and
offsets inside the file. Only then does safetensors read the tensors, so a
damaged or hostile file fails fast, without allocating what it declares.
"""
from __future__ import annotations

import json
import math
import os
import re
import stat
import struct
from typing import Any

import numpy as np

from ._validation import short
from .activations import ACTIVATIONS
from .dropout import rates
from .losses import LOSSES, get_loss

_Path = Any  # str or os.PathLike

FORMAT = "nn_xp"
FORMAT_VERSION = 1
_MAX_HEADER = 100_000_000  # bytes; safetensors' own limit
CODES = {"float32": "F32", "float64": "F64"}
_ITEMSIZE = {"F32": 4, "F64": 8}


class ModelFileError(ValueError):
    """A model or checkpoint file that cannot be loaded: missing, damaged, not nn_xp's, not this network's."""


class ModelFileWriteError(ModelFileError, OSError):
    """A model or checkpoint file that could not be written (a full disk, a missing folder): also an
    ``OSError``, as the failure underneath it is."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else super().__str__()  # the message, not OSError's format


_WRITE_ERRORS: dict[type, type] = {OSError: ModelFileWriteError}


def write_error(path: _Path, exc: OSError, problem: str | None = None) -> ModelFileWriteError:
    """A :class:`ModelFileWriteError` naming ``path`` that is also ``exc``'s own kind (``FileNotFoundError``,
    ``PermissionError``, ...), so code catching that keeps working."""
    kind = type(exc)
    cls = _WRITE_ERRORS.get(kind)
    if cls is None:
        cls = _WRITE_ERRORS[kind] = type(f"ModelFile{kind.__name__}", (ModelFileWriteError, kind), {})
    reason = problem or f"cannot be written ({exc.strerror or exc}); any previous file there is unchanged"
    err = cls(f"{os.fspath(path)}: {reason}")
    err.errno, err.strerror, err.filename = exc.errno, exc.strerror, os.fspath(path)
    return err


def error(path: _Path, problem: str) -> ModelFileError:
    return ModelFileError(f"{os.fspath(path)}: {problem}")


#: the fewest header bytes per JSON object or list a real nn_xp file has: its smallest tensor entry,
#: ``"b0":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},``, is one object and two lists in 54 bytes
_BYTES_PER_CONTAINER = 12
#: the most digits an integer in a header may have (a 128-bit generator state has 39)
_MAX_DIGITS = 64


class DuplicateKey(ValueError):
    """A JSON object in a file names the same key twice."""


def _object(pairs: list[tuple[str, Any]]) -> dict:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        raise DuplicateKey(next(k for k, _ in pairs if k in seen or seen.add(k)))
    return obj


def _json(text: str) -> Any:
    """Parse a header's JSON with bounded cost: memory within a small multiple of its size, time linear.

    Objects and lists are what make JSON expensive (about 100 bytes each in Python): a text denser in
    them than any nn_xp header is refused before anything is built. Numbers parse at C speed, and an
    integer of more than :data:`_MAX_DIGITS` digits is refused by a scan, not by building it.
    """
    containers = text.count("{") + text.count("[")
    if containers > 8 + len(text) // _BYTES_PER_CONTAINER:
        raise ValueError(f"{containers} objects and lists in {len(text)} bytes, denser than any nn_xp "
                         "header (a JSON bomb?)")
    long = _LONG_NUMBER.search(text)
    if long:
        raise ValueError(f"an integer of {long.end() - long.start()} digits (at most {_MAX_DIGITS})")
    return json.loads(text, object_pairs_hook=_object)


_LONG_NUMBER = re.compile(rf"\d{{{_MAX_DIGITS + 1},}}")


def safetensors_module() -> Any:
    try:
        import safetensors.numpy
    except ImportError:
        raise ImportError("nn_xp model files need safetensors: pip install safetensors") from None
    return safetensors


def is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def read(path: _Path) -> tuple[dict, dict[str, np.ndarray]]:
    """The checked metadata and the tensors (writeable host copies) of a model file.

    The file is opened once and read once, so a writer replacing it meanwhile cannot mix two files'
    parts; anything but a regular file (a FIFO, a device) is refused before a byte is read.
    """
    raw = _read_file(path)
    header, data_len = _read_header(path, raw)
    meta = _check_metadata(path, header)
    expected = _check_entries(path, header, data_len, meta)
    try:  # only now, with every size known to fit, does safetensors parse the same bytes
        tensors = {name: np.array(t) for name, t in safetensors_module().numpy.load(raw).items()}
    except Exception as exc:  # safetensors' own errors
        raise error(path, f"safetensors could not read the tensors ({type(exc).__name__}: {exc})") from None
    for name, (dtype, shape) in expected.items():
        t = tensors[name]
        if t.dtype != np.dtype(dtype) or t.shape != shape:
            raise error(path, f"tensor {name} read as {t.dtype}{t.shape}, the header said {dtype}{shape}")
        if not np.all(np.isfinite(t)):
            raise error(path, f"tensor {name} holds NaN or infinity")
    return meta, tensors


def _read_file(path: _Path) -> bytes:
    """The whole file, from one descriptor; a non-regular file is an error (opening a FIFO never blocks)."""
    try:
        fd = os.open(os.fspath(path), os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except FileNotFoundError:
        raise error(path, "no such model file") from None
    except (OSError, TypeError, ValueError) as exc:
        raise error(path, f"cannot be read ({exc})") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise error(path, "cannot be read: it is not a regular file (a folder, FIFO, socket or device)")
        if info.st_size < 8:
            raise error(path, f"is {info.st_size} bytes long, too short for a safetensors file (truncated?)")
        with open(fd, "rb", closefd=False) as f:
            raw = f.read(info.st_size + 1)
    except OSError as exc:
        raise error(path, f"cannot be read ({exc})") from None
    finally:
        os.close(fd)
    if len(raw) != info.st_size:
        raise error(path, "changed size while being read (another process writing it?)")
    return raw


def _read_header(path: _Path, raw: bytes) -> tuple[dict, int]:
    """The safetensors header as a dict: an 8-byte little-endian length N, then N bytes of UTF-8 JSON."""
    size = len(raw)
    (n,) = struct.unpack("<Q", raw[:8])
    if n > size - 8:
        raise error(path, f"is truncated or not a safetensors file: its header claims {n} bytes, "
                          f"only {size - 8} follow")
    if n > _MAX_HEADER:
        raise error(path, f"has a {n}-byte header, over the {_MAX_HEADER}-byte limit")
    try:
        header = _json(raw[8:8 + n].decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise error(path, f"has a header that is not UTF-8 ({exc.reason} at byte {8 + exc.start})") from None
    except DuplicateKey as exc:
        twice = short(exc.args[0])
        raise error(path, f"has a header that names {twice} twice (safetensors forbids it)") from None
    except (ValueError, RecursionError) as exc:
        raise error(path, f"has a header that is not valid JSON ({exc})") from None
    if not isinstance(header, dict):
        raise error(path, f"has a header that is a JSON {type(header).__name__}, not an object")
    return header, size - 8 - n


def _check_metadata(path: _Path, header: dict) -> dict:
    """The ``nn_xp`` JSON metadata, every field checked for type and range."""
    raw = header.get("__metadata__")
    if raw is not None and not (isinstance(raw, dict) and all(isinstance(v, str) for v in raw.values())):
        raise error(path, "has safetensors metadata that is not a map of strings to strings")
    if raw is None or FORMAT not in raw:
        raise error(path, "is not an nn_xp model: its safetensors metadata has no 'nn_xp' entry")
    try:
        meta = _json(raw[FORMAT])
    except (ValueError, RecursionError) as exc:
        raise error(path, f"has 'nn_xp' metadata that is not valid JSON ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise error(path, "is not an nn_xp model: its metadata does not say format 'nn_xp'")
    version = meta.get("format_version")
    if not is_int(version) or version < 1:
        raise error(path, f"has an invalid format_version {short(version)}")
    if version > FORMAT_VERSION:
        written_by = str(meta.get('nn_xp_version'))[:40]
        raise error(path, f"was written by nn_xp {written_by} in format version {version}; "
                           f"this nn_xp reads up to version {FORMAT_VERSION}: upgrade nn_xp to load it")
    sizes, acts, loss, dtype = (meta.get(k) for k in ("layer_sizes", "activations", "loss", "dtype"))
    layers = sum(1 for name in header if name.startswith("W"))  # a count first, no pass over a bomb
    if isinstance(sizes, list) and len(sizes) > 2 * layers + 16:
        raise error(path, f"has layer_sizes of {len(sizes)} entries, far more than its {layers} weight "
                          "tensors describe")
    if not (isinstance(sizes, list) and len(sizes) >= 2 and all(is_int(n) and n >= 1 for n in sizes)):
        raise error(path, f"has invalid layer_sizes {short(sizes)}")
    if not (isinstance(acts, list) and len(acts) == len(sizes) - 1
            and all(isinstance(a, str) and a in ACTIVATIONS for a in acts)):
        raise error(path, f"has invalid activations {short(acts)} for {len(sizes) - 1} layers")
    if not (isinstance(loss, str) and loss in LOSSES):
        raise error(path, f"has an unknown loss {short(loss)}")
    _check_loss_and_penalty(path, meta)
    _check_dropout(path, meta.get("dropout"), len(sizes) - 2)
    if not isinstance(dtype, str) or dtype not in CODES:
        raise error(path, f"has dtype {short(dtype)}; nn_xp models are float32 or float64")
    info = meta.get("optimizer")
    if info is not None and not (isinstance(info, dict) and isinstance(info.get("name"), str)
                                 and (info.get("config") is None or isinstance(info["config"], dict))
                                 and is_int(info.get("iterations")) and info["iterations"] >= 0):
        raise error(path, f"has invalid optimizer metadata {short(info)}")
    return meta


def _check_loss_and_penalty(path: _Path, meta: dict) -> None:
    """The optional keys ``loss_config`` (a parametrised loss's parameters) and ``l1``, ``l2`` (penalties)."""
    config = meta.get("loss_config")
    if config is not None:
        if not (isinstance(config, dict) and all(is_number(v) for v in config.values())):
            raise error(path, f"has invalid loss_config {short(config)}")
        try:
            get_loss(meta["loss"], config)
        except ValueError as exc:
            raise error(path, f"has invalid loss_config {short(config)}: {exc}") from None
    for key in ("l1", "l2"):
        value = meta.get(key, 0.0)
        if not (is_number(value) and 0 <= value < math.inf):
            raise error(path, f"has {key} {short(value)}; a penalty is a non-negative, finite number")


def _check_dropout(path: _Path, dropout: Any, n_hidden: int) -> None:
    """The optional key ``dropout``: one rate in [0, 1) per hidden layer (a file without it has none)."""
    if dropout is None:
        return
    try:
        if not isinstance(dropout, list):
            raise ValueError("it must be a list")
        rates(dropout, n_hidden)
    except ValueError as exc:
        raise error(path, f"has invalid dropout {short(dropout)}: {exc}") from None


def _check_entries(path: _Path, header: dict, data_len: int, meta: dict) -> dict[str, tuple[str, tuple]]:
    """Check every tensor entry against the metadata and the file size; ``{name: (numpy dtype, shape)}``."""
    sizes, code = meta["layer_sizes"], CODES[meta["dtype"]]
    shapes = {}
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        shapes[f"W{i}"], shapes[f"b{i}"] = (n_out, n_in), (n_out,)
    entries, spans = {}, []
    for name, e in header.items():
        if name == "__metadata__":
            continue
        want, label = shapes.get(name), short(name)
        if want is None and name.startswith("optimizer/") and meta.get("optimizer") is not None:
            _, param, slot = (name.split("/", 2) + ["", ""])[:3]  # optimizer/W0/m
            want = shapes.get(param) if slot else None
        if want is None:
            raise error(path, f"holds a tensor {label} that the metadata does not describe")
        if not (isinstance(e, dict) and isinstance(e.get("dtype"), str) and _int_list(e.get("shape"))
                and _int_list(e.get("data_offsets")) and len(e["data_offsets"]) == 2):
            raise error(path, f"has a malformed header entry for tensor {label}: {short(e)}")
        shape, (begin, end) = tuple(e["shape"]), e["data_offsets"]
        if e["dtype"] != code:
            raise error(path, f"tensor {label} is {short(e['dtype'])}, "
                               f"the metadata says {meta['dtype']} ({code})")
        if shape != want:
            raise error(path, f"tensor {label} has shape {short(shape)}; "
                               f"layer_sizes {short(sizes)} make it {short(want)}")
        if not 0 <= begin <= end <= data_len:
            raise error(path, f"tensor {label} has data offsets {short([begin, end])} outside the file's "
                               f"{data_len}-byte data section (truncated?)")
        nbytes = math.prod(shape) * _ITEMSIZE[code]
        if end - begin != nbytes:
            raise error(path, f"tensor {label} ({code}{short(shape)}) needs {nbytes} bytes, "
                               f"its data offsets [{begin}, {end}] hold {end - begin}")
        entries[name] = (meta["dtype"], shape)
        spans.append((begin, end))
    missing = [n for n in shapes if n not in entries]
    if missing:
        raise error(path, f"lacks the tensors {short(missing)} that layer_sizes {short(sizes)} call for")
    position = 0
    for begin, end in sorted(spans):
        if begin != position:
            raise error(path, "has tensor data that overlap or leave gaps")
        position = end
    if position != data_len:
        raise error(path, f"has {data_len - position} bytes after its last tensor")
    return entries


def _int_list(v: Any) -> bool:
    return isinstance(v, list) and all(is_int(x) and x >= 0 for x in v)
