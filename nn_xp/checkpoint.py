"""Training checkpoints: what ``fit(..., resume_from=path)`` needs to continue exactly.

A checkpoint is a model file (:func:`nn_xp.load` opens it) plus the optimizer
state, the epoch, the shuffle generator's state and the history.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ._host import rng_state, set_rng_state
from ._modelfile import error, is_int, is_number, read
from ._payload import (
    add_optimizer,
    check_net_and_path,
    check_writable,
    jsonable,
    optimizer_state,
    payload,
    saved_optimizer,
    weights,
    write,
)
from ._validation import short
from .history import History
from .optimizers import OPTIMIZERS, Optimizer

__all__ = ["check_checkpoint_path", "load_checkpoint", "save_checkpoint"]

# generators whose state a checkpoint may name: rebuilt from this list, never looked up by a file's string
_BIT_GENERATORS = {name: getattr(np.random, name)
                   for name in ("PCG64", "PCG64DXSM", "MT19937", "Philox", "SFC64")}
_Path = Any  # str or os.PathLike


def save_checkpoint(net: Any, path: _Path, optimizer: Optimizer | None, epoch: int, history: History) -> None:
    """Write what ``fit(..., resume_from=path)`` needs to continue exactly: model, optimizer, RNG, history.

    ``epoch`` is the number of epochs completed. The file is also a model file for :func:`nn_xp.load`.
    The network comes first, as in :func:`nn_xp.save`.
    """
    check_net_and_path(net, path, "save_checkpoint")
    tensors, meta = payload(net)
    if optimizer is not None:
        add_optimizer(tensors, meta, optimizer, net.dtype_name)
    meta["checkpoint"] = {"epoch": int(epoch), "rng": jsonable(rng_state(net.rng)),
                          "history": jsonable(history.history), "history_epoch": jsonable(history.epoch)}
    if any(net.dropout):  # what every step's dropout masks are drawn from, with its count
        meta["checkpoint"]["dropout_seed"] = net.dropout_seed
    write(path, tensors, meta)


def check_checkpoint_path(path: _Path) -> None:
    """A clear error now, naming ``path``, where a checkpoint could not be written there later."""
    check_writable(path)


def load_checkpoint(path: _Path, net: Any, optimizer: Optimizer | None) -> tuple[int, History]:
    """Restore a :func:`save_checkpoint` file into ``net`` and ``optimizer``: ``(epochs_done, history)``.

    The checkpoint must come from a network with the same layer sizes,
    activations, loss and dtype, and an optimizer of the same class. All or
    nothing: every check passes before anything changes, and a failure (or
    Ctrl-C) while the weights, the optimizer state and the generator of the
    shuffles (``net.rng``) are set puts back what they were. With
    ``optimizer=None`` the checkpoint's own optimizer is rebuilt into
    ``net.optimizer`` (when it was a built-in one with a JSON config).
    """
    meta, tensors = read(path)
    epoch, history, rng = _checked_checkpoint(path, meta, net)
    dropout_seed = _checked_dropout(path, meta, net)
    optimizer, state, rebuilt = _checkpoint_optimizer(path, meta, tensors, net, optimizer)
    before = (net.get_weights(), net.optimizer, rng_state(net.rng), net.rng)
    seed_before = net.dropout_seed
    before_state = optimizer.state_dict() if optimizer is not None else None
    try:
        net.set_weights(weights(meta, tensors))
        if state is not None:
            try:
                optimizer.load_state_dict(state, net.params)
            except ValueError as exc:
                raise error(path, f"has optimizer state that does not fit: {exc}") from None
            if rebuilt:
                net.optimizer = optimizer
        if type(net.rng.bit_generator) is type(rng.bit_generator):
            set_rng_state(net.rng, rng_state(rng))  # keep the caller's generator object
        else:
            net.rng = rng
        if dropout_seed is not None:
            net.dropout_seed = dropout_seed
    except BaseException:  # Ctrl-C too: the network, its optimizer and its generator as they were
        old_weights, net.optimizer, old_rng, net.rng = before
        net.dropout_seed = seed_before
        net.set_weights(old_weights)
        set_rng_state(net.rng, old_rng)
        if before_state is not None:
            optimizer.load_state_dict(before_state, net.params)
        raise
    return epoch, history


def _checked_checkpoint(path: _Path, meta: dict, net: Any) -> tuple[int, History, np.random.Generator]:
    """The checkpoint's epoch, history and generator, checked against the file and the network."""
    ck = meta.get("checkpoint")
    if not isinstance(ck, dict):
        raise error(path, "is a model file, not a training checkpoint (save_checkpoint writes those)")
    saved, this = _describe(meta), _describe({"layer_sizes": net.layer_sizes, "activations": net.activations,
                                              "loss": net.loss_fn.name, "dtype": net.dtype_name,
                                              "loss_config": dict(net.loss_fn.config)})
    if saved != this:
        raise error(path, f"is a checkpoint of a {saved} network; this network is {this}")
    for name in ("l1", "l2"):  # the penalties are the training's as much as the loss is (_modelfile checked)
        if float(meta.get(name, 0.0)) != getattr(net, name):
            saved_value, ours = meta.get(name, 0.0), getattr(net, name)
            raise error(path, f"is a checkpoint of a network with {name}={saved_value!r}; this network has "
                              f"{name}={ours!r} (give Network(..., {name}=) as when it was saved)")
    epoch, history, epochs = ck.get("epoch"), ck.get("history"), ck.get("history_epoch")
    if not is_int(epoch) or epoch < 0:
        raise error(path, f"checkpoint epoch must be a non-negative integer, got {short(epoch)}")
    if not (isinstance(history, dict) and all(isinstance(v, list) and all(is_number(x) for x in v)
                                              for v in history.values())):
        raise error(path, "checkpoint history must map metric names to lists of numbers")
    if not (isinstance(epochs, list) and all(is_int(e) for e in epochs)):
        raise error(path, "checkpoint history_epoch must be a list of integers")
    return epoch, History(history, epochs), _generator(path, ck.get("rng"))


def _checked_dropout(path: _Path, meta: dict, net: Any) -> int | None:
    """The checkpoint's dropout seed (None where it has no dropout), its rates checked against the network's:
    resuming continues the same training, so the rates are the network's as much as its layers are."""
    saved = tuple(meta.get("dropout") or (0.0,) * len(net.dropout))  # _modelfile checked its rates
    if saved != net.dropout:
        def said(rates: tuple) -> str:
            return f"dropout {list(rates)}" if any(rates) else "no dropout"

        raise error(path, f"is a checkpoint of a network with {said(saved)}; this network has "
                          f"{said(net.dropout)} (give Network(..., dropout=) as when it was saved)")
    seed = meta["checkpoint"].get("dropout_seed")
    if not any(saved):
        return None
    if not is_int(seed) or not 0 <= seed < 2**64:
        raise error(path, f"checkpoint dropout_seed must be an integer in [0, 2**64), got {short(seed)}")
    return seed


def _checkpoint_optimizer(path: _Path, meta: dict, tensors: dict, net: Any, optimizer: Optimizer | None):
    """The optimizer that continues (given, or the file's own), its saved state (None without one), and
    whether it was rebuilt from the file (then it becomes ``net.optimizer``)."""
    rebuilt = optimizer is None and meta.get("optimizer") is not None
    if rebuilt:
        optimizer = saved_optimizer(path, meta)  # assigned to net only once every check has passed
        name = meta["optimizer"]["name"]
        if optimizer is None:  # not rebuildable: only the network's own one of that class continues
            if net.optimizer is None or type(net.optimizer).__name__.lower() != name:
                if name not in OPTIMIZERS:
                    raise error(path, f"holds the state of a {short(name)} optimizer, which is not one of "
                                      f"nn_xp's ({', '.join(OPTIMIZERS)}); pass fit(optimizer=...) an "
                                      "instance of that class")
                raise error(path, f"holds the state of a {short(name)} optimizer whose learning-rate "
                                  "schedule a file cannot hold; pass fit(optimizer=...) configured as when "
                                  "it was saved")
            optimizer = net.optimizer
    if optimizer is None:
        return None, None, False
    info, name = meta.get("optimizer"), type(optimizer).__name__.lower()
    if info is None:
        raise error(path, f"holds no optimizer state, but training uses {name!r}")
    if info["name"] != name:
        raise error(path, f"holds {short(info['name'])} optimizer state, but training uses {name!r}")
    state = optimizer_state(meta, tensors)
    for param, slots in state["state"].items():
        if set(slots) != set(optimizer.slots):
            raise error(path, f"holds optimizer state {short(sorted(slots))} for {short(param)}, "
                              f"but this {name!r} keeps {list(optimizer.slots)}; configure it as "
                              "when the checkpoint was saved")
    return optimizer, state, rebuilt


def _describe(meta: dict) -> str:
    sizes = "-".join(map(str, meta["layer_sizes"]))
    config = "".join(f", {k}={v!r}" for k, v in (meta.get("loss_config") or {}).items())  # huber's delta
    return f"{sizes} ({', '.join(meta['activations'])}; loss {meta['loss']}{config}; {meta['dtype']})"


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
