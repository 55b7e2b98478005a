"""Which communicator ``fit(comm=...)`` trains with: the one given, or the launcher's (``comm="auto"``).

The launcher is read from the environment by :func:`nn_xp.backends.launch` (the one module that reads
it): MPICH's or Intel MPI's ``PMI_RANK``/``PMI_SIZE``, Open MPI's ``OMPI_COMM_WORLD_RANK``/``_SIZE``,
torchrun's ``RANK``/``WORLD_SIZE``. Under none of them ``"auto"`` means one process, and nothing of MPI
or torch.distributed is imported. The transport follows the network's arrays: CuPy over NCCL where
this CuPy has it, else MPI; torch's GPU tensors under torchrun over NCCL, the rest over gloo.
"""
from __future__ import annotations

import sys
from typing import Any

from array_api_compat import is_cupy_namespace, is_torch_namespace

from ..backends import launch
from .communicator import Communicator
from .mpi import MPICommunicator, is_mpi_communicator, mpi_module
from .nccl import NCCLCommunicator, nccl_available
from .torch_dist import TorchCommunicator

__all__ = ["communicator"]

#: the communicators ``"auto"`` and wrapped mpi4py or torch groups made, one per (group, device): making
#: one can be collective and slow (NCCL's set-up), and a job's group is the same for every fit
_MADE: dict[tuple, tuple[Any, Communicator]] = {}


def communicator(comm: Any, xp: Any = None, device: Any = None) -> Communicator | None:
    """The :class:`Communicator` for ``fit(comm=comm)`` of a network on ``xp``'s ``device`` (None: one
    process).

    ``comm``: None, ``"auto"``, an nn_xp :class:`Communicator`, an mpi4py intracommunicator or a
    torch.distributed process group.
    """
    if comm is None or isinstance(comm, Communicator):
        return comm
    gpu = xp is not None and (is_cupy_namespace(xp) or (is_torch_namespace(xp)
                                                         and getattr(device, "type", None) == "cuda"))
    if isinstance(comm, str):
        if comm != "auto":
            raise ValueError(f"comm must be None, 'auto', an mpi4py communicator or an "
                             f"nn_xp.distributed.Communicator, got {comm!r}")
        started = launch()
        if started is None:
            return None  # a plain `python script.py`: one process
        if started.launcher == "torchrun":
            return _made(("torchrun",), None,
                         lambda: TorchCommunicator(backend="nccl" if gpu else "gloo"))
        comm = mpi_module().COMM_WORLD
    if is_mpi_communicator(comm):
        if xp is not None and is_cupy_namespace(xp) and nccl_available():
            return _made(("nccl", id(comm), str(device)), comm, lambda: NCCLCommunicator(comm))
        return _made(("mpi", id(comm)), comm, lambda: MPICommunicator(comm))
    if _is_process_group(comm):
        return _made(("torch", id(comm)), comm, lambda: TorchCommunicator(comm))
    raise TypeError(f"comm must be None, 'auto', an mpi4py communicator, a torch.distributed process group "
                    f"or an nn_xp.distributed.Communicator, got {type(comm).__name__}")


def _made(key: tuple, group: Any, make: Any) -> Communicator:
    """The communicator kept for ``key``, or a new one (kept with ``group``, so that ``id`` stays its)."""
    kept = _MADE.get(key)
    if kept is None:
        kept = _MADE[key] = (group, make())
    return kept[1]


def _is_process_group(comm: Any) -> bool:
    dist = sys.modules.get("torch.distributed")
    return dist is not None and isinstance(comm, getattr(dist, "ProcessGroup", ()))
