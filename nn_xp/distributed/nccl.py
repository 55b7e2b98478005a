"""CuPy arrays over NCCL (``cupy.cuda.nccl``), the unique id broadcast over MPI, as ChainerMN and cupyx do.

A CuPy buffer is summed in place by ``ncclAllReduce`` on the current stream, queued behind the kernels
that computed it and ahead of those that read it: no host synchronisation. Host buffers (the epoch's
metrics) and objects go over MPI, whose communicator this one is built from. Each process drives one
GPU, the one current when the communicator is made (``cupy.cuda.Device(local_rank).use()``, or the
network's device: ``fit(comm="auto")`` makes it inside the network's device context).
"""
from __future__ import annotations

from typing import Any

import numpy as np
from array_api_compat import is_cupy_array

from .._typing import Array
from .mpi import MPICommunicator

__all__ = ["NCCLCommunicator", "nccl_available"]


def nccl_available() -> bool:
    """Whether this CuPy has NCCL (its wheels load ``libnccl`` where installed: ``nvidia-nccl-cu12``)."""
    try:
        from cupy.cuda import nccl
    except Exception:  # no CuPy, or no NCCL library: CuPy raises more than ImportError here
        return False
    return bool(getattr(nccl, "available", False))


class NCCLCommunicator(MPICommunicator):
    """NCCL for CuPy buffers, MPI (``comm``, default ``MPI.COMM_WORLD``) for host buffers and objects.

    Making one is collective: every rank of ``comm`` must make its own at the same time.

    Parameters
    ----------
    comm : mpi4py.MPI.Intracomm, optional
    timeout : float, optional
        See :class:`~nn_xp.distributed.Communicator`.
    nccl : module, optional
        ``cupy.cuda.nccl`` (tests give a stand-in).
    """

    def __init__(self, comm: Any = None, *, timeout: float | None = None, nccl: Any = None) -> None:
        super().__init__(comm, timeout=timeout)
        if nccl is None:
            from cupy.cuda import nccl
        self.nccl = nccl
        self.types = {np.dtype(np.float16): nccl.NCCL_FLOAT16, np.dtype(np.float32): nccl.NCCL_FLOAT32,
                      np.dtype(np.float64): nccl.NCCL_FLOAT64, np.dtype(np.int32): nccl.NCCL_INT32,
                      np.dtype(np.int64): nccl.NCCL_INT64}
        unique_id = nccl.get_unique_id() if self.rank == 0 else None
        unique_id = self._timed("the NCCL set-up", self.mpi_comm.bcast, unique_id, 0)
        self.nccl_comm = self._timed("the NCCL set-up", nccl.NcclCommunicator, self.size, unique_id,
                                     self.rank)

    def _nccl_args(self, buf: Array) -> tuple[int, int, int, int]:
        """``(pointer, count, NCCL datatype, stream)`` of a CuPy buffer, checked."""
        import cupy

        if not buf.flags.c_contiguous:
            raise ValueError("NCCL sums one contiguous buffer; got a strided view")
        try:
            datatype = self.types[np.dtype(buf.dtype)]
        except KeyError:
            raise TypeError(f"NCCL carries {', '.join(map(str, self.types))} here, not {buf.dtype}") from None
        return buf.data.ptr, buf.size, datatype, cupy.cuda.get_current_stream().ptr

    def _allreduce(self, buf: Array) -> None:
        if not is_cupy_array(buf):
            self.mpi_allreduce(buf)
            return
        ptr, count, datatype, stream = self._nccl_args(buf)
        self.nccl_comm.allReduce(ptr, ptr, count, datatype, self.nccl.NCCL_SUM, stream)  # in place

    def _bcast(self, buf: Array, root: int) -> None:
        if not is_cupy_array(buf):
            self.mpi_bcast(buf, root)
            return
        ptr, count, datatype, stream = self._nccl_args(buf)
        self.nccl_comm.bcast(ptr, count, datatype, root, stream)

    def abort(self, code: int = 1) -> None:
        try:
            self.nccl_comm.abort()  # frees NCCL's kernels stuck waiting for a dead peer
        except Exception:  # NCCL older than 2.4, or already aborted: MPI ends the processes anyway
            pass
        super().abort(code)
