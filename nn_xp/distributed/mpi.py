"""MPI through mpi4py: NumPy arrays and CPU torch tensors summed in place, others through the host.

``Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)`` takes a NumPy array as it is and a CPU torch tensor through
DLPack (mpi4py 4), with no copy; a GPU array goes to a CUDA-aware MPI as it is with ``cuda_aware=True``,
and otherwise to the host and back (CuPy networks have :class:`~nn_xp.distributed.NCCLCommunicator`).
mpi4py is imported when a communicator is made, never before.
"""
from __future__ import annotations

import sys
from typing import Any

from array_api_compat import is_cupy_array, is_numpy_array, is_torch_array

from .._typing import Array
from .communicator import Communicator, host_copy, write_back

__all__ = ["MPICommunicator", "is_mpi_communicator", "mpi_module"]


def mpi_module() -> Any:
    """``mpi4py.MPI`` (importing it starts MPI), or an ImportError that says what to install."""
    try:
        from mpi4py import MPI
    except ImportError as exc:
        raise ImportError(f"fit(comm=...) over MPI needs mpi4py ({exc}): pip install 'nn_xp[mpich]' "
                          "(mpi4py and an MPICH wheel), or 'nn_xp[mpi]' for the system's MPI") from None
    return MPI


def is_mpi_communicator(comm: Any) -> bool:
    """Whether ``comm`` is an mpi4py intracommunicator (``MPI.COMM_WORLD``, a split of it)."""
    mpi = sys.modules.get("mpi4py.MPI")
    return mpi is not None and isinstance(comm, mpi.Intracomm)


class MPICommunicator(Communicator):
    """An mpi4py communicator (default ``MPI.COMM_WORLD``) as an nn_xp one.

    Parameters
    ----------
    comm : mpi4py.MPI.Intracomm, optional
    cuda_aware : bool
        The MPI library takes GPU buffers (``__cuda_array_interface__``) itself; otherwise they are staged
        through the host. MPI has no standard way to ask.
    timeout : float, optional
        See :class:`~nn_xp.distributed.Communicator`.
    """

    def __init__(self, comm: Any = None, *, cuda_aware: bool = False, timeout: float | None = None) -> None:
        self.MPI = MPI = mpi_module()
        self.mpi_comm = MPI.COMM_WORLD if comm is None else comm
        if not isinstance(self.mpi_comm, MPI.Intracomm):
            raise TypeError(f"comm must be an mpi4py intracommunicator, got {type(comm).__name__}")
        self.cuda_aware = bool(cuda_aware)
        super().__init__(self.mpi_comm.Get_rank(), self.mpi_comm.Get_size(), timeout)

    def _direct(self, buf: Array) -> bool:
        """Whether MPI may read and write ``buf``'s memory itself."""
        if is_numpy_array(buf):
            return bool(buf.flags.c_contiguous)
        if is_torch_array(buf):
            return buf.is_contiguous() and (buf.device.type == "cpu" or (self.cuda_aware and buf.is_cuda))
        return self.cuda_aware and hasattr(buf, "__cuda_array_interface__")

    def _allreduce(self, buf: Array) -> None:
        self.mpi_allreduce(buf)

    def _bcast(self, buf: Array, root: int) -> None:
        self.mpi_bcast(buf, root)

    def mpi_allreduce(self, buf: Array) -> None:
        """:meth:`allreduce` over MPI, untimed (what a subclass's own transport leaves to MPI)."""
        MPI = self.MPI
        if self._direct(buf):
            _finish_queued_work(buf)
            self.mpi_comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
            return
        host = host_copy(buf)
        self.mpi_comm.Allreduce(MPI.IN_PLACE, host, op=MPI.SUM)
        write_back(buf, host)

    def mpi_bcast(self, buf: Array, root: int) -> None:
        """:meth:`bcast` over MPI, untimed."""
        if self._direct(buf):
            _finish_queued_work(buf)
            self.mpi_comm.Bcast(buf, root=root)
            return
        host = host_copy(buf)
        self.mpi_comm.Bcast(host, root=root)
        if self.rank != root:
            write_back(buf, host)

    def _bcast_obj(self, obj: Any, root: int) -> Any:
        return self.mpi_comm.bcast(obj, root=root)

    def _allgather_obj(self, obj: Any) -> list[Any]:
        return self.mpi_comm.allgather(obj)

    def abort(self, code: int = 1) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        self.mpi_comm.Abort(code)  # MPI ends every process of the job (mpiexec reports the code)


def _finish_queued_work(buf: Array) -> None:
    """Wait for the kernels queued on a GPU buffer's current stream: MPI reads device memory at once, outside
    any stream (mpi4py's advice for CUDA-aware MPI). Host buffers have nothing queued."""
    if is_cupy_array(buf):
        import cupy

        cupy.cuda.get_current_stream().synchronize()
    elif is_torch_array(buf) and buf.is_cuda:
        import torch

        torch.cuda.current_stream(buf.device).synchronize()
