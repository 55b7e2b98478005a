"""torch.distributed: gloo on CPU, NCCL on CUDA, for torch tensors and any array torch can view.

A torch tensor is summed in place by ``dist.all_reduce``; a NumPy array through ``torch.from_numpy`` and a
CuPy array through DLPack, both views of the same memory, so in place too. A CPU buffer meets an NCCL
group on the group's GPU and comes back. The process group is torch's: made by the caller, or here from
torchrun's environment (``init_method="env://"``, which torch reads), with the watchdog's timeout.
"""
from __future__ import annotations

import atexit
import datetime
import os
import signal
import sys
from typing import Any

from array_api_compat import is_numpy_array, is_torch_array

from .._typing import Array
from .communicator import Communicator, host_copy, seconds, write_back

__all__ = ["TorchCommunicator"]


class TorchCommunicator(Communicator):
    """A ``torch.distributed`` process group as an nn_xp communicator.

    Parameters
    ----------
    group : torch.distributed.ProcessGroup, optional
        Default: the default group, initialised here (``backend``) when it is not yet.
    backend : {"gloo", "nccl"}, optional
        For a group made here: ``"nccl"`` when torch sees a GPU, else ``"gloo"``.
    timeout : float, optional
        See :class:`~nn_xp.distributed.Communicator`; also the group's own timeout when made here.
    """

    def __init__(self, group: Any = None, *, backend: str | None = None,
                 timeout: float | None = None) -> None:
        import torch
        import torch.distributed as dist

        self.torch, self.dist, self.group = torch, dist, group
        timeout = seconds(timeout)
        if not dist.is_initialized():
            backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
            dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout))
            # the group made here is ended here: left to the interpreter's exit, gloo's threads may abort the
            # process ("terminate called without an active exception", exit -6) after a finished job
            atexit.register(_destroy, dist)
        super().__init__(dist.get_rank(group), dist.get_world_size(group), timeout)
        nccl = dist.get_backend(group) == "nccl"
        self.device = torch.device("cuda", torch.cuda.current_device()) if nccl else torch.device("cpu")

    def _tensor(self, buf: Array) -> Any | None:
        """A tensor over ``buf``'s memory, or None where torch cannot view it."""
        if is_torch_array(buf):
            return buf
        if is_numpy_array(buf):
            return self.torch.from_numpy(buf) if buf.flags.writeable else None
        try:
            return self.torch.from_dlpack(buf)
        except Exception:  # a library or device torch cannot view: through the host
            return None

    def _collective(self, buf: Array, operation: Any) -> None:
        tensor = self._tensor(buf)
        if tensor is None:
            host = host_copy(buf)
            self._collective(host, operation)
            write_back(buf, host)
        elif tensor.device.type != self.device.type:  # a CPU buffer and an NCCL group
            there = tensor.to(self.device)
            operation(there)
            tensor.copy_(there)
        else:
            operation(tensor)

    def _root(self, root: int) -> int:
        """The global rank of the group's rank ``root`` (torch names sources by global rank)."""
        return root if self.group is None else self.dist.get_global_rank(self.group, root)

    def _allreduce(self, buf: Array) -> None:
        self._collective(buf, lambda t: self.dist.all_reduce(t, op=self.dist.ReduceOp.SUM, group=self.group))

    def _bcast(self, buf: Array, root: int) -> None:
        self._collective(buf, lambda t: self.dist.broadcast(t, src=self._root(root), group=self.group))

    def _bcast_obj(self, obj: Any, root: int) -> Any:
        box = [obj]
        self.dist.broadcast_object_list(box, src=self._root(root), group=self.group)
        return box[0]

    def _allgather_obj(self, obj: Any) -> list[Any]:
        out: list[Any] = [None] * self.size
        self.dist.all_gather_object(out, obj, group=self.group)
        return out

    def abort(self, code: int = 1) -> None:
        """End this process at once: its peers' collectives then fail (gloo: "connection closed") and, under
        torchrun, the agent stops the others. A plain exit could hang in the group's teardown."""
        sys.stdout.flush()
        sys.stderr.flush()
        os.kill(os.getpid(), getattr(signal, "SIGKILL", signal.SIGTERM))


def _destroy(dist: Any) -> None:
    """End the default group made by :class:`TorchCommunicator` (at exit), unless someone already did."""
    if dist.is_initialized():
        dist.destroy_process_group()
