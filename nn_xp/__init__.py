"""nn_xp: feed-forward neural networks written once over the array API.

The same evaluate / back-propagation / descent code runs on NumPy, CuPy,
PyTorch and any array-API library.
"""
from __future__ import annotations

from ._version import __version__
from .activations import ACTIVATIONS, Activation
from .backends import (
                       BACKENDS,
                       Backend,
                       BackendUnavailableError,
                       available_backends,
                       resolve_backend,
                       to_numpy,
)
from .callbacks import Callback, EarlyStopping, LambdaCallback, ReduceLROnPlateau, StopTraining
from .checkpoint import load_checkpoint, save_checkpoint
from .engine import ENGINES
from .export import export_onnx
from .history import History
from .io import ModelFileError, load, save
from .losses import LOSSES, Loss
from .network import Layer, Network
from .optimizers import SGD, Adam, AdamW, Optimizer, RMSprop
from .schedules import CosineDecay, ExponentialDecay, StepDecay, Warmup

__all__ = [
    "ACTIVATIONS", "BACKENDS", "ENGINES", "LOSSES", "__version__",
    "Activation", "Adam", "AdamW", "Backend", "BackendUnavailableError", "Callback", "CosineDecay",
    "EarlyStopping", "ExponentialDecay", "History", "LambdaCallback", "Layer", "Loss", "Network",
    "ModelFileError", "Optimizer", "RMSprop", "ReduceLROnPlateau", "SGD", "StepDecay", "StopTraining",
    "Warmup",
    "available_backends", "export_onnx", "load", "load_checkpoint", "resolve_backend", "save",
    "save_checkpoint", "to_numpy",
]
