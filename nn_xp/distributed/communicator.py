"""The communicator protocol: what data-parallel ``fit`` asks of a transport, every collective watched.

As ChainerMN's ``communicators/`` and mpi4py's buffer methods have it: ``allreduce`` sums one contiguous
buffer over the ranks in place (the gradients' one flat buffer, once a step), ``bcast`` copies rank
``root``'s buffer into everyone's, ``bcast_obj`` and ``allgather_obj`` carry small Python objects (the
start-up checks), and ``abort`` ends every rank's work at once. A subclass writes the transport's
operations (``_allreduce``, ``_bcast``, ``_bcast_obj``, ``_allgather_obj``, ``abort``); the public
methods here time them, and while :meth:`Communicator.watchdog` is on (all of a data-parallel ``fit``), a
collective still waiting after ``timeout`` seconds (``NN_XP_COMM_TIMEOUT``) aborts the job with a message
naming the rank and what it waited for.
"""
from __future__ import annotations

import contextlib
import pickle
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
from array_api_compat import array_namespace, is_numpy_array
from array_api_compat import device as array_device

from .. import _kernels as K
from .._typing import Array
from ..backends import comm_timeout, to_numpy

__all__ = ["Communicator", "CommunicatorAborted", "LocalCommunicator", "host_copy", "seconds", "write_back"]


class CommunicatorAborted(RuntimeError):
    """A collective could not complete: the job was aborted (by a failing rank, or a stuck collective)."""


class Communicator:
    """One process's (or thread's) end of a group of ``size`` ranks, this one ``rank``.

    ``timeout``: seconds a collective may wait inside :meth:`watchdog` (None: ``NN_XP_COMM_TIMEOUT``, else
    300). Buffers are arrays of the network's library; where the transport cannot take them directly
    they go through the host (:func:`host_copy`, :func:`write_back`).
    """

    def __init__(self, rank: int, size: int, timeout: float | None = None) -> None:
        if not (isinstance(size, int) and size >= 1 and isinstance(rank, int) and 0 <= rank < size):
            raise ValueError(f"a communicator needs 0 <= rank < size, got rank={rank!r}, size={size!r}")
        self.rank, self.size = rank, size
        self.timeout = seconds(timeout)
        self.reason: str | None = None  # why the job is being aborted, once it is
        self._waiting: tuple[float, str] | None = None  # (since, what) while in a collective
        self._watching = False

    def __repr__(self) -> str:
        return f"{type(self).__name__}(rank={self.rank}, size={self.size})"

    # ------------------------------------------------------------ the protocol
    def allreduce(self, buf: Array) -> None:
        """Sum ``buf`` (one contiguous array) over the ranks, in place: every rank gets the same values."""
        self._timed("an allreduce", self._allreduce, buf)

    def bcast(self, buf: Array, root: int = 0) -> None:
        """Copy rank ``root``'s ``buf`` into every rank's, in place."""
        self._timed("a broadcast", self._bcast, buf, root)

    def bcast_obj(self, obj: Any, root: int = 0) -> Any:
        """Rank ``root``'s (picklable) ``obj``, on every rank."""
        return self._timed("a broadcast of an object", self._bcast_obj, obj, root)

    def allgather_obj(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order, on every rank."""
        return self._timed("an allgather of objects", self._allgather_obj, obj)

    def abort(self, code: int = 1) -> None:
        """End every rank's work now: the job's processes (MPI, torch), or every thread's collectives."""
        raise NotImplementedError

    def _allreduce(self, buf: Array) -> None:
        raise NotImplementedError

    def _bcast(self, buf: Array, root: int) -> None:
        raise NotImplementedError

    def _bcast_obj(self, obj: Any, root: int) -> Any:
        raise NotImplementedError

    def _allgather_obj(self, obj: Any) -> list[Any]:
        raise NotImplementedError

    # --------------------------------------------------------------- faults
    def _timed(self, what: str, operation: Callable, *args: Any) -> Any:
        self._waiting = (time.monotonic(), what)
        try:
            return operation(*args)
        finally:
            self._waiting = None

    @contextlib.contextmanager
    def watch(self, what: str) -> Iterator[None]:
        """Time a wait for the other ranks that is not one of the collectives (reading a device's results
        that wait on a collective queued on it) as the watchdog times a collective."""
        self._waiting = (time.monotonic(), what)
        try:
            yield
        finally:
            self._waiting = None

    @contextlib.contextmanager
    def watchdog(self) -> Iterator[None]:
        """While inside: a thread aborts the job when a collective has waited ``timeout`` seconds."""
        if self.size == 1 or self._watching:
            yield
            return
        stop = threading.Event()
        dog = threading.Thread(target=self._watch, args=(stop,), daemon=True,
                               name=f"nn_xp watchdog, rank {self.rank} of {self.size}")
        self._watching = True
        dog.start()
        try:
            yield
        finally:
            stop.set()
            dog.join()
            self._watching = False

    def _watch(self, stop: threading.Event) -> None:
        poll = min(1.0, self.timeout / 4)
        while not stop.wait(poll):
            waiting = self._waiting
            if waiting is not None and time.monotonic() - waiting[0] > self.timeout:
                self.reason = (f"rank {self.rank} of {self.size}: {waiting[1]} did not complete within "
                               f"NN_XP_COMM_TIMEOUT={self.timeout:g} s (another rank failed, stopped or is "
                               "stuck); aborting the job")
                print(f"nn_xp: {self.reason}", file=sys.stderr, flush=True)
                self.abort(1)
                return

    def fail(self, exc: BaseException) -> None:
        """This rank failed with ``exc`` while the others may wait in a collective: say so, and abort.

        Does not return where :meth:`abort` ends the process (MPI, torch)."""
        if not isinstance(exc, CommunicatorAborted):
            self.reason = f"rank {self.rank} of {self.size} failed: {type(exc).__name__}: {exc}"
            text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
            print(f"{text}nn_xp: {self.reason}; aborting the job ({self.size} ranks)", file=sys.stderr,
                  flush=True)
        self.abort(1)


def seconds(timeout: float | None) -> float:
    """A collective's timeout: ``timeout`` checked, or where None ``NN_XP_COMM_TIMEOUT`` (else 300 s)."""
    if timeout is None:
        return comm_timeout()
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout < float("inf"):
        raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
    return float(timeout)


def host_copy(buf: Array) -> np.ndarray:
    """A contiguous host copy of ``buf`` (a transport that takes only host memory gets this)."""
    return np.array(to_numpy(buf), copy=True, order="C")


def write_back(buf: Array, host: np.ndarray) -> None:
    """``buf[...] = host``, on ``buf``'s device."""
    if is_numpy_array(buf):
        buf[...] = host
        return
    xp = array_namespace(buf)
    K.copy_into(buf, xp.asarray(host, dtype=buf.dtype, device=array_device(buf)), xp)


class _Hub:
    """What the threads of one :class:`LocalCommunicator` group share."""

    def __init__(self, size: int) -> None:
        self.barrier = threading.Barrier(size)
        self.values: list[Any] = [None] * size
        self.reason: str | None = None


class LocalCommunicator(Communicator):
    """``size`` ranks in one process, a thread each: try or test a data-parallel script without MPI.

    Everything goes through the host; sums are taken in rank order, so every rank gets the same bits.
    :meth:`abort` makes every rank's pending and later collectives raise :class:`CommunicatorAborted`.

    Examples
    --------
    >>> import numpy as np, threading
    >>> comms, out = LocalCommunicator.group(2), [np.ones(3), np.ones(3)]
    >>> threads = [threading.Thread(target=c.allreduce, args=(b,)) for c, b in zip(comms, out)]
    >>> for t in threads: t.start()
    >>> for t in threads: t.join()
    >>> out[0].tolist()
    [2.0, 2.0, 2.0]
    """

    def __init__(self, hub: _Hub, rank: int, timeout: float | None = None) -> None:
        super().__init__(rank, len(hub.values), timeout)
        self.hub = hub

    @classmethod
    def group(cls, size: int, timeout: float | None = None) -> list[LocalCommunicator]:
        """The ``size`` communicators of one group, rank by rank (give each to its own thread)."""
        hub = _Hub(size)
        return [cls(hub, rank, timeout) for rank in range(size)]

    def _exchange(self, value: Any) -> list[Any]:
        """Every rank's ``value``, once all have given theirs."""
        hub = self.hub
        hub.values[self.rank] = value
        self._wait()
        values = list(hub.values)
        self._wait()  # nobody overwrites a value before every rank has read them all
        return values

    def _wait(self) -> None:
        try:
            self.hub.barrier.wait()
        except threading.BrokenBarrierError:
            raise CommunicatorAborted(f"rank {self.rank} of {self.size}: the job was aborted "
                                      f"({self.hub.reason or 'by another rank'})") from None

    def _allreduce(self, buf: Array) -> None:
        values = self._exchange(host_copy(buf))
        total = values[0]
        for v in values[1:]:
            total = total + v
        write_back(buf, total)

    def _bcast(self, buf: Array, root: int) -> None:
        values = self._exchange(host_copy(buf) if self.rank == root else None)
        if self.rank != root:
            write_back(buf, values[root])

    def _bcast_obj(self, obj: Any, root: int) -> Any:
        values = self._exchange(pickle.dumps(obj) if self.rank == root else None)
        return pickle.loads(values[root])  # a copy, as a real transport gives

    def _allgather_obj(self, obj: Any) -> list[Any]:
        return [pickle.loads(v) for v in self._exchange(pickle.dumps(obj))]

    def abort(self, code: int = 1) -> None:
        if self.hub.reason is None:
            self.hub.reason = self.reason or f"rank {self.rank} aborted"
        self.hub.barrier.abort()
