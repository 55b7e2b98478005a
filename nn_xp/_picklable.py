"""What a pickled network holds: host copies and plain data, never device arrays or array namespaces.

``pickle``, ``copy.deepcopy``, joblib and multiprocessing all go through
``Network.__getstate__`` / ``__setstate__``. The state is the network's own
attributes, taken generically (so an attribute another part of nn_xp adds, a
dropout rate or a penalty, travels without this module knowing it), except those
rebuilt on unpickling (the backend, the engine and its buffers, the parameters
and the optimizer), with device arrays anywhere in them copied to the host
(:func:`to_host`) and moved back to the backend the network opens on
(:func:`to_device`). Array namespaces and other modules cannot be pickled: an
attribute holding one comes back as None (a cache, rebuilt where it is used).

The optimizer travels as its class, its plain attributes (its hyperparameters;
caches of device buffers come back as None) and :meth:`~nn_xp.Optimizer.state_dict`,
host copies of its state, restored with ``load_state_dict`` onto the new parameters.
"""
from __future__ import annotations

import types
from typing import Any

import numpy as np
from array_api_compat import is_array_api_obj

from .activations import ACTIVATIONS, Activation, get_activation
from .backends import Backend, to_numpy
from .losses import Loss, get_loss, is_builtin

__all__ = ["HostArray", "pack_layers", "pack_loss", "pack_optimizer", "to_device", "to_host", "unpack_layers",
           "unpack_loss", "unpack_optimizer"]


class HostArray:
    """A host copy of a device array in a pickle, moved back to the device by :func:`to_device`."""

    def __init__(self, host: np.ndarray) -> None:
        self.host = host


class _Dropped:
    """Stands for what cannot be pickled (a module): None on unpickling."""


_DROPPED = _Dropped()


def to_host(value: Any) -> Any:
    """``value`` with every non-NumPy array in it (in lists, tuples, dicts) as a :class:`HostArray`; a module,
    or any other object holding modules or device arrays (a parameter list, a buffer cache), as a
    placeholder for None."""
    if is_array_api_obj(value):
        return value if isinstance(value, (np.ndarray, np.generic)) else HostArray(to_numpy(value).copy())
    if type(value) in (list, tuple):
        items = [to_host(v) for v in value]
        return items if type(value) is list else tuple(items)
    if type(value) is dict:
        return {k: to_host(v) for k, v in value.items()}
    return _DROPPED if _device_bound(value) else value


def _device_bound(value: Any, depth: int = 3) -> bool:
    """Whether ``value`` is, or holds (in containers, or attributes), a module or a non-NumPy array."""
    if isinstance(value, types.ModuleType):
        return True
    if is_array_api_obj(value):
        return not isinstance(value, (np.ndarray, np.generic))
    if depth == 0 or isinstance(value, (str, bytes, int, float, type)):
        return False
    items = value.values() if isinstance(value, dict) else value if isinstance(value, (list, tuple, set)) \
        else ()
    attributes = getattr(value, "__dict__", None)  # an object's, or a list subclass's own (a Parameters' xp)
    attributes = attributes.values() if isinstance(attributes, dict) else ()
    return any(_device_bound(v, depth - 1) for v in (*items, *attributes))


def to_device(value: Any, backend: Backend) -> Any:
    """The inverse of :func:`to_host`, on ``backend``'s device."""
    if isinstance(value, HostArray):
        return backend.asarray(value.host)
    if isinstance(value, _Dropped):
        return None
    if type(value) in (list, tuple):
        items = [to_device(v, backend) for v in value]
        return items if type(value) is list else tuple(items)
    if type(value) is dict:
        return {k: to_device(v, backend) for k, v in value.items()}
    return value


def pack_optimizer(opt: Any) -> tuple[type, dict[str, Any], dict[str, Any]] | None:
    """An optimizer as ``(class, plain attributes, state_dict())``: its state as host arrays."""
    if opt is None:
        return None
    # the state goes as state_dict(); anything else holding device arrays is a cache of them
    attributes = {k: _DROPPED if _device_bound(v) or is_array_api_obj(v) else v
                  for k, v in vars(opt).items() if k != "state"}
    return type(opt), attributes, opt.state_dict()


def unpack_optimizer(packed: tuple[type, dict[str, Any], dict[str, Any]] | None, params: dict[str, Any],
                     backend: Backend) -> Any:
    """The optimizer :func:`pack_optimizer` packed, its state on the devices of ``params``."""
    if packed is None:
        return None
    cls, attributes, state = packed
    opt = cls.__new__(cls)
    vars(opt).update({k: to_device(v, backend) for k, v in attributes.items()})
    opt.state = {}
    with backend.context():
        opt.load_state_dict(state, params)
    return opt


def pack_layers(layers: Any) -> list[tuple[int, int, str | Activation]]:
    """``(n_in, n_out, activation)`` per layer, nn_xp's own activations by name: unpickled, they are the
    same objects again, which the engines recognise by identity."""
    return [(layer.n_in, layer.n_out, layer.activation.name
             if ACTIVATIONS.get(layer.activation.name) is layer.activation else layer.activation)
            for layer in layers]


def unpack_layers(packed: list[tuple[int, int, str | Activation]]) -> list[tuple[int, int, Activation]]:
    return [(n_in, n_out, get_activation(activation)) for n_in, n_out, activation in packed]


def pack_loss(loss: Loss) -> tuple[str, dict[str, Any]] | Loss:
    """A built-in loss as its name and config (rebuilt as the same object), any other as itself."""
    return (loss.name, dict(loss.config)) if is_builtin(loss) else loss


def unpack_loss(packed: tuple[str, dict[str, Any]] | Loss) -> Loss:
    return packed if isinstance(packed, Loss) else get_loss(*packed)
