"""Data-parallel training: ``fit(..., comm=...)`` on MPI, NCCL or torch.distributed.

Start the same script on every rank (``mpiexec -n 4 python train.py``, ``torchrun --nproc-per-node 4
train.py``) and pass ``comm="auto"``: every rank gives ``fit`` all of ``X, Y``, each global batch is cut
into per-rank shards, and the result is the one-process result (see :mod:`.parallel` and the README's
"Scaling out"). A communicator (:class:`Communicator`) sums one flat buffer in place per step:

- :class:`MPICommunicator`: mpi4py, NumPy arrays and CPU torch tensors in place, others through the host;
- :class:`NCCLCommunicator`: CuPy arrays over NCCL, host data over MPI;
- :class:`TorchCommunicator`: torch.distributed, gloo on CPU and NCCL on CUDA;
- :class:`LocalCommunicator`: threads in one process, for trying and testing.

``NN_XP_COMM_TIMEOUT`` (seconds, default 300) bounds how long a collective may wait for the other ranks
before the job is aborted with a message naming the rank.
"""
from __future__ import annotations

from ..backends import DEFAULT_COMM_TIMEOUT, Launch, launch
from .communicator import Communicator, CommunicatorAborted, LocalCommunicator
from .mpi import MPICommunicator
from .nccl import NCCLCommunicator, nccl_available
from .parallel import DataParallel, RankFailedError
from .resolve import communicator
from .torch_dist import TorchCommunicator

__all__ = ["DEFAULT_COMM_TIMEOUT", "Communicator", "CommunicatorAborted", "DataParallel", "Launch",
           "LocalCommunicator", "MPICommunicator", "NCCLCommunicator", "RankFailedError", "TorchCommunicator",
           "communicator", "launch", "nccl_available"]
